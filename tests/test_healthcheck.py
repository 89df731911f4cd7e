"""`lifecycle healthcheck --kind worker|scheduler`: a container's health check, from the heartbeats."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, update
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.config import load_settings
from lifecycle.models import ProcessHeartbeat
from lifecycle.tasks.heartbeat import MISSED_BEATS, alive, record


def check(env: dict[str, str], kind: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["healthcheck", "--kind", kind], env=env)
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize("kind", ["worker", "scheduler"])
def test_the_health_check_passes_on_a_fresh_heartbeat_of_this_host_and_fails_otherwise(
        cli_env: dict[str, str], kind: str) -> None:
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": cli_env["LIFECYCLE_DATABASE_URL"]}))
    try:
        code, said = check(cli_env, kind)
        assert code == 1 and f"no {kind} on {socket.gethostname()} has recorded" in said

        now = app.clock.now()
        with app.engine.begin() as conn:  # another host's process says nothing about this one
            record(conn, kind, now, {})
            conn.execute(update(ProcessHeartbeat).values(host="elsewhere"))
        assert check(cli_env, kind)[0] == 1

        with app.engine.begin() as conn:
            conn.execute(delete(ProcessHeartbeat))
            record(conn, kind, now, {"heartbeat_seconds": 30})
        code, said = check(cli_env, kind)
        assert code == 0 and said.startswith(f"Healthy: a {kind} on {socket.gethostname()}")

        with app.engine.begin() as conn:
            conn.execute(update(ProcessHeartbeat).values(
                last_seen_at=now - timedelta(seconds=MISSED_BEATS * 30 + 30)))
        code, said = check(cli_env, kind)
        assert code == 1 and f"old (more than {MISSED_BEATS * 30} s)" in said
    finally:
        app.close()


def test_the_health_check_fails_with_one_line_when_the_database_cannot_be_read(
        cli_env: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**cli_env, "LIFECYCLE_DATABASE_URL": str(make_url(
        f"sqlite:///{tmp_path / 'no-schema.db'}"))}
    code, said = check(env, "worker")
    assert code == 1 and said.startswith("Unhealthy: the database cannot be read")
    assert len(said.splitlines()) == 1


@pytest.mark.parametrize("every", [2.0, 30.0])
def test_the_health_check_calls_a_process_dead_exactly_when_healthz_does(
        cli_env: dict[str, str], every: float) -> None:
    """Both judge a row by the process's own heartbeat interval (four missed beats)."""
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": cli_env["LIFECYCLE_DATABASE_URL"]}))
    try:
        now = app.clock.now()
        for missed in (MISSED_BEATS - 0.5, MISSED_BEATS + 0.5):
            seen = now - timedelta(seconds=missed * every)
            with app.engine.begin() as conn:
                conn.execute(delete(ProcessHeartbeat))
                record(conn, "worker", seen, {"heartbeat_seconds": every})
            healthy = check(cli_env, "worker")[0] == 0
            assert healthy == alive(app.clock, app.clock.now(), seen,
                                    {"heartbeat_seconds": every}, 30.0)
            assert healthy == (missed < MISSED_BEATS)
    finally:
        app.close()
