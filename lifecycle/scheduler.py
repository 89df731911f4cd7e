"""The scheduler: a loop that runs periodic jobs against the database.

Each job runs in its own transaction and must be safe when two schedulers
run it at once (unique keys, conditional updates, ``SKIP LOCKED``); a failing
job is logged and retried on its next turn, never stopping the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lifecycle.app import App
from lifecycle.tasks import heartbeat

log = logging.getLogger(__name__)


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
    def __init__(self, app: App, jobs: list[Job] | None = None) -> None:
        self.app = app
        self.jobs = default_jobs() if jobs is None else jobs

    def tick(self) -> int:
        """Run every job that is due; return how many ran."""
        ran = 0
        for job in self.jobs:
            started = time.monotonic()
            if started < job.next_at:
                continue
            job.next_at = started + job.every_seconds
            try:
                job.run(self.app)
            except Exception:
                log.exception("The job %s failed; it runs again in %.0f seconds.",
                              job.name, job.every_seconds)
            ran += 1
        return ran

    def run(self, stop: threading.Event) -> None:
        """Tick every ``LIFECYCLE_TICK_SECONDS`` until ``stop`` is set."""
        log.info("The scheduler started with %d jobs, ticking every %.1f seconds.",
                 len(self.jobs), self.app.settings.tick_seconds)
        while not stop.is_set():
            self.tick()
            stop.wait(self.app.settings.tick_seconds)
        log.info("The scheduler stopped.")
