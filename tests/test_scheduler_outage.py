"""A database outage is reported by the scheduler once a minute in one line, not as a traceback
per tick, and its end is reported once."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.scheduler import Job, Scheduler, flows_job, segments_job
from tests.conftest import Databases
from tests.factories import WEB_SECRET, WEB_T0


def take_away(url: str, databases: Databases) -> None:
    """The database at ``url`` stops answering: dropped (PostgreSQL), or its file replaced by a
    folder no database opens (SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        with databases.pg_admin().connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{parsed.database}" WITH (FORCE)')
        return
    path = Path(str(parsed.database))
    os.replace(path, path.with_suffix(".away"))
    path.mkdir()


def bring_back(url: str, databases: Databases) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        with databases.pg_admin().connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}" '
                                 f'TEMPLATE "{databases._template}"')
        return
    path = Path(str(parsed.database))
    shutil.rmtree(path)
    os.replace(path.with_suffix(".away"), path)


def test_a_database_outage_is_logged_once_a_minute_in_one_line_and_its_end_once(
        fresh_database_url: str, databases: Databases, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key=WEB_SECRET, outbox_dir=tmp_path / "outbox"),
              clock=ManualClock(WEB_T0))
    seconds = [0.0]
    scheduler = Scheduler(app, [Job("segments.refresh", 0, segments_job),
                                Job("flows.tick", 0, flows_job)],
                          monotonic=lambda: seconds[0])
    try:
        with caplog.at_level(logging.INFO):
            scheduler.tick()
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
            take_away(fresh_database_url, databases)
            app.engine.dispose()  # the pool's open connections would still reach a moved file
            for _ in range(30):  # 150 seconds of ticks, two failing jobs each
                scheduler.tick()
                seconds[0] += 5
            reports = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert [r.levelno for r in reports] == [logging.ERROR] * 3  # at 0, 60 and 120 s
            for record in reports:
                message = record.getMessage()
                assert record.exc_info is None and "\n" not in message, message
                assert message.startswith("The database cannot be reached (OperationalError: ")
            assert "(1 failed run(s) in 0 seconds" in reports[0].getMessage()
            assert "(24 failed run(s) in 60 seconds" in reports[1].getMessage()
            caplog.clear()
            bring_back(fresh_database_url, databases)
            scheduler.tick()
            scheduler.tick()
            [back] = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert back.getMessage() == ("The database answers again after 150 seconds; the "
                                         "scheduler's jobs run as before.")
    finally:
        app.close()
