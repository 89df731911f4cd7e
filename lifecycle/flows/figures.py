"""A flow's figures, step by step: who waits where now, and what became of each step's mails.

:func:`step_figures` counts, for one flow, with a few grouped queries (the same on SQLite and
PostgreSQL):

- **waiting**: enrollments ``active`` now whose current step is the step (an enrollment waits
  at a wait step, or at its first step until its first turn);
- for the mails the flow decided (``messages.created_at``) in ``[start, end)``, per step:
  **sent**, **failed** (given up; the most common reasons from ``messages.last_error``),
  **skipped** — ``suppressed`` (unsubscribed, bounced, the frequency cap) plus ``cancelled``
  (withdrawn by staff, the flow ended, the customer erased) — with why, and **pending**
  (scheduled, queued, sending or paused: not settled yet);
- how the enrollments that began in the period ended (``exit_reason``: ``completed``,
  ``goal: ordered``, ``branch clicked-before`` …).

:func:`flow_overview` gives the flows list its figures for every flow at once, and
:func:`recent_failures` the failures behind a flow page's red notice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, select

from lifecycle.models import EnrollmentStatus, FlowEnrollment, Message, MessageStatus
from lifecycle.results import SKIPPED

#: Reasons kept per step and kind of outcome (the most common first).
TOP_REASONS = 3
#: A reason is compared (and shown) by its first characters: errors that differ only in a
#: long tail (a stack, an address) count as one.
REASON_CHARS = 200
PENDING = (MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value,
           MessageStatus.SENDING.value, MessageStatus.PAUSED.value)


@dataclass
class StepFigures:
    """One step's figures (see the module doc); reasons are ``(reason, mails)``, most first."""

    waiting: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0
    failed_reasons: list[tuple[str, int]] = field(default_factory=list)
    #: Why mails were skipped: ``("suppressed: frequency cap reached", 2)``.
    skipped_reasons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.waiting or self.sent or self.failed or self.skipped or self.pending)


@dataclass
class FlowFigures:
    flow: str
    start: datetime
    end: datetime
    steps: dict[str, StepFigures]
    #: Enrollments active now (customers in the flow).
    active: int
    #: How the enrollments begun in the period that have ended, ended: reason -> count.
    endings: dict[str, int]

    def step(self, step_id: str) -> StepFigures:
        return self.steps.get(step_id) or StepFigures()


def step_figures(conn: Connection, flow: str, start: datetime, end: datetime) -> FlowFigures:
    """The figures of ``flow``: waiting now, and its mails decided in ``[start, end)``."""
    e, m = FlowEnrollment.__table__, Message.__table__
    steps: dict[str, StepFigures] = defaultdict(StepFigures)
    active = 0
    for step, n in conn.execute(
            select(e.c.current_step, func.count()).where(
                e.c.flow == flow, e.c.status == EnrollmentStatus.ACTIVE.value)
            .group_by(e.c.current_step)):
        steps[step or ""].waiting = int(n)
        active += int(n)
    cohort = (m.c.flow == flow, m.c.created_at >= start, m.c.created_at < end)
    for step, status, n in conn.execute(
            select(m.c.step, m.c.status, func.count()).where(*cohort)
            .group_by(m.c.step, m.c.status)):
        figures = steps[step or ""]
        if status == MessageStatus.SENT.value:
            figures.sent += int(n)
        elif status == MessageStatus.FAILED.value:
            figures.failed += int(n)
        elif status in SKIPPED:
            figures.skipped += int(n)
        else:
            figures.pending += int(n)
    reason = func.coalesce(func.substr(m.c.last_error, 1, REASON_CHARS), "")
    for step, status, why, n in conn.execute(
            select(m.c.step, m.c.status, reason, func.count()).where(
                *cohort, m.c.status.in_((MessageStatus.FAILED.value, *SKIPPED)))
            .group_by(m.c.step, m.c.status, reason)
            .order_by(func.count().desc(), m.c.step, m.c.status, reason)):
        figures = steps[step or ""]
        if status == MessageStatus.FAILED.value:
            if len(figures.failed_reasons) < TOP_REASONS:
                figures.failed_reasons.append((why or "no reason recorded", int(n)))
        elif len(figures.skipped_reasons) < TOP_REASONS:
            figures.skipped_reasons.append((f"{status}: {why}" if why else status, int(n)))
    endings = {str(why or status): int(n) for status, why, n in conn.execute(
        select(e.c.status, e.c.exit_reason, func.count()).where(
            e.c.flow == flow, e.c.status != EnrollmentStatus.ACTIVE.value,
            e.c.enrolled_at >= start, e.c.enrolled_at < end)
        .group_by(e.c.status, e.c.exit_reason))}
    return FlowFigures(flow, start, end, dict(steps), active, endings)


@dataclass
class Overview:
    """The flows list's figures of one flow."""

    active: int = 0
    sent: int = 0
    failed: int = 0


def flow_overview(conn: Connection, now: datetime,
                  days: int = 7) -> dict[str, Overview]:
    """Per flow: customers in it now, and mails sent and failed in the ``days`` before
    ``now`` (a mail counts by when it was sent, or — failed — when it was given up, its
    ``updated_at``)."""
    e, m = FlowEnrollment.__table__, Message.__table__
    since = now - timedelta(days=days)
    found: dict[str, Overview] = defaultdict(Overview)
    for flow, n in conn.execute(
            select(e.c.flow, func.count()).where(e.c.status == EnrollmentStatus.ACTIVE.value)
            .group_by(e.c.flow)):
        found[flow].active = int(n)
    sent = (m.c.status == MessageStatus.SENT.value) & (m.c.sent_at >= since) \
        & (m.c.sent_at <= now)
    failed = (m.c.status == MessageStatus.FAILED.value) & (m.c.updated_at >= since) \
        & (m.c.updated_at <= now)
    for flow, n_sent, n_failed in conn.execute(
            select(m.c.flow, func.sum(case((sent, 1), else_=0)),
                   func.sum(case((failed, 1), else_=0)))
            .where(m.c.flow.is_not(None), sent | failed).group_by(m.c.flow)):
        found[flow].sent, found[flow].failed = int(n_sent or 0), int(n_failed or 0)
    return dict(found)


@dataclass
class Failures:
    """A flow's mails given up on lately: how many, and the reasons, most common first."""

    count: int
    reasons: list[tuple[str, int]]


def recent_failures(conn: Connection, flow: str, now: datetime,
                    hours: int = 24) -> Failures:
    """The mails of ``flow`` that failed (were given up, ``updated_at``) in the ``hours``
    before ``now``."""
    m = Message.__table__
    reason = func.coalesce(func.substr(m.c.last_error, 1, REASON_CHARS), "")
    rows = conn.execute(
        select(reason, func.count()).where(
            m.c.flow == flow, m.c.status == MessageStatus.FAILED.value,
            m.c.updated_at >= now - timedelta(hours=hours), m.c.updated_at <= now)
        .group_by(reason).order_by(func.count().desc(), reason)).all()
    return Failures(sum(int(n) for _, n in rows),
                    [(why or "no reason recorded", int(n)) for why, n in rows[:TOP_REASONS]])


def last_days(now: datetime, days: int) -> tuple[datetime, datetime]:
    """The last ``days`` whole UTC days up to ``now``, today included: ``[start, end)``."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=max(1, days) - 1), today + timedelta(days=1)
