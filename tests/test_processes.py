"""Processes: worker, scheduler and web start on real brokers and stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import make_url

from lifecycle import runtime
from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.config import load_settings
from lifecycle.models import ProcessHeartbeat
from lifecycle.processes import prepare, running_worker
from lifecycle.scheduler import Job, Scheduler, heartbeat_job
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service
from tests.ports import free_port


def wait_for(check: Callable[[], object], seconds: float = 20.0) -> object:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {seconds} s")
        time.sleep(0.1)


def heartbeats(app: App) -> dict[str, ProcessHeartbeat]:
    with app.sessions() as session:
        return {b.kind + ":" + str(b.pid): b for b in session.scalars(select(ProcessHeartbeat))}


def test_a_scheduler_tick_reaches_a_worker_through_the_broker(
        fresh_database_url: str, broker_url: str | None) -> None:
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       broker_url=broker_url, worker_threads=2)
    app = App(settings)
    broker = prepare(app)
    try:
        with running_worker(app, broker):
            assert Scheduler(app, [Job("system.heartbeat", 30, heartbeat_job)]).tick() == 1
            beats = wait_for(lambda: {b.split(":")[0] for b in heartbeats(app)} >= {"scheduler",
                                                                                    "worker"})
            assert beats
        worker_beat = next(b for k, b in heartbeats(app).items() if k.startswith("worker"))
        assert worker_beat.pid == os.getpid() and worker_beat.info["broker_delay_seconds"] >= 0
    finally:
        runtime.set_app(None)
        app.close()


def test_the_heartbeat_also_travels_through_rabbitmq(fresh_database_url: str) -> None:
    require_service("RabbitMQ", RABBITMQ_URL, 5672)
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       broker_url=RABBITMQ_URL, worker_threads=1)
    app = App(settings)
    broker = prepare(app)
    try:
        broker.flush_all()
        with running_worker(app, broker):
            Scheduler(app).tick()
            wait_for(lambda: any(k.startswith("worker") for k in heartbeats(app)))
    finally:
        runtime.set_app(None)
        app.close()


def test_a_worker_process_freezes_what_it_imported_so_collections_skip_it() -> None:
    # in a process of its own: freezing the test process would keep pytest's objects for good
    code = ("import gc, sys; from lifecycle.processes import freeze_imports; "
            "assert gc.get_freeze_count() == 0; freeze_imports(); "
            "assert 'lifecycle.mail.sending' in sys.modules; "
            "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count(); "
            "assert len(gc.get_objects()) < 1_000, len(gc.get_objects())")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent,
                   timeout=120)


def test_worker_and_scheduler_refuse_the_in_process_broker(cli_env: dict[str, str]) -> None:
    for command in ("worker", "scheduler"):
        result = CliRunner().invoke(cli, [command], env=cli_env)
        assert result.exit_code == 2
        assert "LIFECYCLE_BROKER_URL" in result.stderr and "lifecycle run" in result.stderr


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lifecycle", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_the_web_app_and_stops_cleanly_on_a_signal(
        cli_env: dict[str, str], tmp_path: Path, sig: int) -> None:
    port = free_port()
    process = start(["run", "--port", str(port)], {**cli_env, "LIFECYCLE_TICK_SECONDS": "0.2",
                                                   "LIFECYCLE_LOG_LEVEL": "INFO"},
                    tmp_path)
    try:
        health = wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), 60)
        assert isinstance(health, dict) and health["ok"] is True
        kinds = wait_for(lambda: {p["kind"] for p in _get(f"http://127.0.0.1:{port}/healthz")
                                  ["processes"]} >= {"scheduler", "worker"})
        assert kinds
    finally:
        code, err = stop(process, sig)
    assert code == 0, err
    assert "Traceback" not in err
    assert "The worker stopped." in err and "The scheduler stopped." in err


def _get(url: str) -> dict | None:  # type: ignore[type-arg]
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_worker_and_scheduler_processes_share_work_through_redis(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    require_service("Redis", REDIS_URL, 6379)
    env = {**cli_env, "LIFECYCLE_BROKER_URL": REDIS_URL, "LIFECYCLE_TICK_SECONDS": "0.2",
           "LIFECYCLE_LOG_LEVEL": "INFO"}
    worker = start(["worker"], env, tmp_path)
    scheduler = start(["scheduler"], env, tmp_path)
    app = App(replace(load_settings({}), database_url=make_url(cli_env["LIFECYCLE_DATABASE_URL"])))
    try:
        wait_for(lambda: {f"worker:{worker.pid}", f"scheduler:{scheduler.pid}"}
                 <= set(heartbeats(app)), 60)
    finally:
        results = [stop(scheduler, signal.SIGTERM), stop(worker, signal.SIGTERM)]
        app.close()
    for code, err in results:
        assert code == 0, err
        assert "Traceback" not in err
