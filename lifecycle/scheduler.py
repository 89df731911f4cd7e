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
from lifecycle.tasks.broker import broker_epoch

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
    """Record the scheduler's heartbeat, delete the rows of processes long gone, and send a
    worker the broker's round trip to measure (each worker records its own liveness)."""
    now = app.clock.now()
    with app.engine.begin() as conn:
        heartbeat.record(conn, "scheduler", now, {
            "tick_seconds": app.settings.tick_seconds,
            "heartbeat_seconds": app.settings.heartbeat_seconds, "stopped_at": None})
        heartbeat.prune(conn, app.clock, now)
    heartbeat.heartbeat.send(now.isoformat())


def segments_job(app: App) -> None:
    from lifecycle.segments.service import refresh_if_due

    refresh_if_due(app)


def flows_job(app: App) -> None:
    from lifecycle.flows.service import tick

    tick(app)


def campaigns_job(app: App) -> None:
    """Start the campaigns that are due, mark finished ones sent (:mod:`lifecycle.campaigns`)."""
    from lifecycle.campaigns.jobs import tick as campaigns_tick

    campaigns_tick(app)


def feedback_job(app: App) -> None:
    """Count or void the NPS votes whose hold has passed (see :mod:`lifecycle.feedback`)."""
    from lifecycle.feedback import settle_held

    settle_held(app)


class MailJob:
    """The ``mail.dispatch`` job of one scheduler, which watches the broker.

    Before handing mails out it asks the broker which life of its server this
    is (:func:`~lifecycle.tasks.broker.broker_epoch`).  While the broker does
    not answer it only settles: due mails stay ``scheduled`` and take no
    lease.  When the broker answers again after an outage this scheduler saw
    (or one its enqueue met), or as a new server (restarted between two ticks,
    its messages gone), it hands out every ``queued`` mail again at once: their
    ids may be lost, and a duplicate id costs a worker nothing.  So mail goes
    out within a tick of the broker's return instead of after its lease.
    """

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.down = False

    def __call__(self, app: App) -> None:
        from lifecycle.mail.sending import dispatch
        from lifecycle.tasks.mail import send

        try:
            epoch = broker_epoch(send.broker)
        except Exception as exc:  # noqa: BLE001 - the broker's client errors, whatever they are
            if not self.down:
                log.warning("The broker does not answer (%s: %s); due mails wait in the "
                            "database and go out as soon as it answers again.",
                            type(exc).__name__, exc)
            self.down = True
            dispatch(app, send.send, hand_out=False)
            return
        again = self.down or (self.epoch is not None and epoch != self.epoch)
        refused: list[Exception] = []

        def enqueue(ids: list[int]) -> None:
            try:
                send.send(ids)
            except Exception as exc:
                refused.append(exc)
                raise

        handed = dispatch(app, enqueue, every_queued=again)
        if refused:  # it went away after answering: every id of this tick may be lost
            self.down = True
            return
        if again:
            restarted = self.epoch is not None and epoch != self.epoch
            log.warning("The broker answers again%s; %d mails, every queued one among them, "
                        "were handed out at once.",
                        " as a new server (restarted)" if restarted else "", handed)
        self.down, self.epoch = False, epoch


def mail_job(app: App) -> None:
    """One dispatch without watching the broker (see :class:`MailJob`)."""
    from lifecycle.mail.sending import dispatch
    from lifecycle.tasks.mail import send

    dispatch(app, send.send)


def offers_job(app: App) -> None:
    """Hand due offer webhooks to the workers (nothing while no webhook URL is set)."""
    from lifecycle.offers.tasks import notify
    from lifecycle.offers.webhooks import dispatch

    dispatch(app, notify.send)


def default_jobs(heartbeat_seconds: float = 30.0) -> list[Job]:
    return [Job("system.heartbeat", heartbeat_seconds, heartbeat_job),
            Job("segments.refresh", 300.0, segments_job),
            Job("feedback.settle", 0.0, feedback_job),
            Job("flows.tick", 0.0, flows_job),
            Job("campaigns.tick", 0.0, campaigns_job),
            Job("mail.dispatch", 0.0, MailJob()),
            Job("offers.webhooks", 0.0, offers_job)]


class Scheduler:
    def __init__(self, app: App, jobs: list[Job] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.jobs = default_jobs(app.settings.heartbeat_seconds) if jobs is None else jobs
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
