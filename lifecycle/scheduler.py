"""The scheduler: a loop that runs periodic jobs against the database.

Each job runs in its own transaction and must be safe when two schedulers
run it at once (unique keys, conditional updates, ``SKIP LOCKED``); a failing
job is logged and retried on its next turn, never stopping the loop.  While the
database cannot be reached, every job fails on every tick: that is logged
once per :data:`OUTAGE_LOG_SECONDS` with a one-line reason (no traceback), and
once more when the database answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lifecycle.app import App
from lifecycle.tasks import heartbeat

log = logging.getLogger(__name__)

#: Seconds between two reports of one database outage.
OUTAGE_LOG_SECONDS = 60.0


def outage_reason(exc: BaseException) -> str | None:
    """The one-line reason if ``exc`` says the database cannot be reached (refused or dropped
    connection, a missing or unreadable database); None for any other failure."""
    if not isinstance(exc, OperationalError | InterfaceError) and not (
            isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return None
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {detail[0][:300] if detail else 'no detail'}"


@dataclass
class Job:
    name: str
    every_seconds: float
    run: Callable[[App], None]
    next_at: float = 0.0  # monotonic seconds


def heartbeat_job(app: App) -> None:
    """Record the scheduler's heartbeat and ask a worker to record one too."""
    now = app.clock.now()
    with app.engine.begin() as conn:
        heartbeat.record(conn, "scheduler", now, {"tick_seconds": app.settings.tick_seconds})
    heartbeat.heartbeat.send(now.isoformat())


def segments_job(app: App) -> None:
    from lifecycle.segments.service import refresh_if_due

    refresh_if_due(app)


def flows_job(app: App) -> None:
    from lifecycle.flows.service import tick

    tick(app)


def mail_job(app: App) -> None:
    from lifecycle.mail.sending import dispatch
    from lifecycle.tasks.mail import send

    dispatch(app, send.send)


def default_jobs() -> list[Job]:
    return [Job("system.heartbeat", 30.0, heartbeat_job),
            Job("segments.refresh", 300.0, segments_job),
            Job("flows.tick", 0.0, flows_job),
            Job("mail.dispatch", 0.0, mail_job)]


class Scheduler:
    def __init__(self, app: App, jobs: list[Job] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.jobs = default_jobs() if jobs is None else jobs
        self.monotonic = monotonic  # real seconds (the demo's fast clock does not hurry logs)
        self.outage_since: float | None = None  # when the database stopped answering
        self.outage_reported: float = 0.0
        self.outage_failures = 0  # job runs failed by the outage since the last report

    def tick(self) -> int:
        """Run every job that is due; return how many ran."""
        ran = 0
        for job in self.jobs:
            started = self.monotonic()
            if started < job.next_at:
                continue
            job.next_at = started + job.every_seconds
            try:
                job.run(self.app)
            except Exception as exc:
                reason = outage_reason(exc)
                if reason is None:
                    log.exception("The job %s failed; it runs again in %.0f seconds.",
                                  job.name, job.every_seconds)
                else:
                    self._outage(reason)
            else:
                self._answered()
            ran += 1
        return ran

    def _outage(self, reason: str) -> None:
        """A job failed because the database cannot be reached: one line a minute."""
        now = self.monotonic()
        self.outage_failures += 1
        if self.outage_since is None:
            self.outage_since = now
        elif now - self.outage_reported < OUTAGE_LOG_SECONDS:
            return
        log.error("The database cannot be reached (%s); the scheduler's jobs wait for it "
                  "(%d failed run(s) in %.0f seconds of outage; next report in %.0f seconds).",
                  reason, self.outage_failures, now - self.outage_since, OUTAGE_LOG_SECONDS)
        self.outage_reported, self.outage_failures = now, 0

    def _answered(self) -> None:
        if self.outage_since is not None:
            log.warning("The database answers again after %.0f seconds; the scheduler's jobs "
                        "run as before.", self.monotonic() - self.outage_since)
            self.outage_since, self.outage_failures = None, 0

    def run(self, stop: threading.Event) -> None:
        """Tick every ``LIFECYCLE_TICK_SECONDS`` until ``stop`` is set."""
        log.info("The scheduler started with %d jobs, ticking every %.1f seconds.",
                 len(self.jobs), self.app.settings.tick_seconds)
        while not stop.is_set():
            self.tick()
            stop.wait(self.app.settings.tick_seconds)
        log.info("The scheduler stopped.")
