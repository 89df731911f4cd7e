"""Flow results: what each flow's mails did, step by step and variant by variant.

The cohort of a report is every mail a flow decided (``messages.created_at``)
in ``[start, end)``.  For each step and A/B variant :func:`flow_results`
counts the mails decided, sent, failed (given up, the reason in ``last_error``), skipped
(``suppressed`` — unsubscribed, bounced, capped — plus ``cancelled`` — by staff, or the flow
ended; a mail decided but not settled yet is in none of sent, failed or skipped), sent
twice (``duplicates``: SendGrid took two attempts of the mail, found when a late event came
after it was sent again,
:meth:`lifecycle.mail.outbox.Outbox.duplicates`), and — once each per mail, however often it
happened — delivered, opened by a person (privacy-proxy opens are kept
apart, see :mod:`lifecycle.mail.events`), clicked, replied to, unsubscribed
from, bounced and reported as spam.

**Conversions** are last-touch: a completed order is credited to the
customer's latest mail — of any flow or campaign — sent or clicked at most
``window`` before the order.  An order counts once in all of Lifecycle, so
the revenue of two flows (or of a flow and a campaign) adds up to no more than
the shop took; a mail credited with an order is a conversion of its flow, step
and variant, and the order's total is its revenue (``converted`` counts the
mails credited with one or more orders).  Revenue is counted in the shop's reporting
currency (``LIFECYCLE_CURRENCY``); a converting order in another currency
is a conversion all the same, and its total is kept apart, per currency
(:attr:`Row.other_revenue`), never added to the revenue.

**Redeemed** counts the offer codes of the cohort's mails (:mod:`lifecycle.offers`) that an
order used, whenever that order came: a code is its mail's own, so no window applies.

Every send step of the flow (each A/B variant) has its row from the start,
zeros before any mail went out.

The counting is :func:`tally`'s, for any cohort of mails: a flow's here, a
campaign's in :mod:`lifecycle.campaigns.results`.

Over time, :attr:`FlowResults.daily` holds mails sent and conversions per
UTC day; :func:`segment_sizes` gives each segment's size at the end of every
day, from the stays in ``segment_memberships``.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, or_, select

from lifecycle.models import (
    FlowEnrollment,
    Message,
    MessageStatus,
    OfferCode,
    Order,
    OrderStatus,
    SegmentMembership,
    Touchpoint,
)
from lifecycle.money import Amounts
from lifecycle.timeutil import as_utc

#: Timeline kinds counted per mail, by the column they count in.
EVENT_COLUMNS = {
    "email_delivered": "delivered",
    "email_opened": "opened",
    "email_clicked": "clicked",
    "replied": "replied",
    "email_unsubscribed": "unsubscribed",
    "email_group_unsubscribed": "unsubscribed",
    "unsubscribed": "unsubscribed",
    "email_bounced": "bounced",
    "email_spam_report": "spam_reports",
}
#: The statuses counted as skipped: not sent, and not an error.
SKIPPED = (MessageStatus.SUPPRESSED.value, MessageStatus.CANCELLED.value)
COLUMNS = ("decided", "sent", "failed", "skipped", "duplicates", "delivered", "opened", "clicked",
           "replied", "unsubscribed", "bounced", "spam_reports", "conversions", "converted",
           "redeemed")


@dataclass
class Row:
    """One step (and variant) of a flow, or the flow's total."""

    step: str
    variant: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    #: Revenue in the reporting currency.
    revenue: Decimal = Decimal("0")
    #: Revenue of converting orders in other currencies, each currency on its own.
    other_revenue: Amounts = field(default_factory=Amounts)

    def rate(self, column: str) -> float | None:
        """``column`` per mail sent (0–1); None before anything was sent."""
        sent = self.counts["sent"]
        return self.counts[column] / sent if sent else None


@dataclass
class Day:
    day: date
    sent: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal("0")  # in the reporting currency


@dataclass
class FlowResults:
    flow: str
    start: datetime
    end: datetime
    window: timedelta
    #: Enrollments begun in the period, by their status now.
    enrollments: dict[str, int]
    rows: list[Row]
    total: Row
    daily: list[Day]
    #: The reporting currency of every ``revenue``.
    currency: str = "USD"

    @property
    def has_variants(self) -> bool:
        return any(r.variant for r in self.rows)


def flow_results(conn: Connection, flow: str, start: datetime, end: datetime,
                 window: timedelta, step_order: list[str] | None = None, *,
                 sends: Sequence[tuple[str, Sequence[str | None]]] = (),
                 currency: str = "USD") -> FlowResults:
    """The results of ``flow`` for mails decided in ``[start, end)`` (see the module doc);
    ``step_order`` lists the flow's step ids in the order of its file, ``sends`` its send
    steps with their A/B variants (None for a step of one template): each gets its row
    even before a mail went out.  Revenue is in ``currency``; other currencies apart."""
    m = Message.__table__
    cohort = and_(m.c.flow == flow, m.c.created_at >= start, m.c.created_at < end)
    rows: dict[tuple[str, str | None], Row] = {}

    def row(step: str | None, variant: str | None) -> Row:
        key = (step or "", variant)
        if key not in rows:
            rows[key] = Row(step or "", variant)
        return rows[key]

    for step, variants in sends:
        for variant in variants:
            row(step, variant)
    found = tally(conn, cohort, (m.c.step, m.c.variant), row, start, end, window, currency)
    daily = [found.get(d, Day(d)) for d in _days(start, end)]

    e = FlowEnrollment.__table__
    enrollments = {status: int(n) for status, n in conn.execute(
        select(e.c.status, func.count()).where(
            e.c.flow == flow, e.c.enrolled_at >= start, e.c.enrolled_at < end)
        .group_by(e.c.status))}
    order = {s: i for i, s in enumerate(step_order or [])}
    ordered = sorted(rows.values(), key=lambda r: (order.get(r.step, len(order)), r.step,
                                                   r.variant or ""))
    return FlowResults(flow, start, end, window, enrollments, ordered,
                       total_of(ordered, "all steps"), daily, currency)


def tally(conn: Connection, cohort: ColumnElement[bool], group: Sequence[Any],
          row: Callable[..., Row], start: datetime, end: datetime, window: timedelta,
          currency: str) -> dict[date, Day]:
    """Count the mails of a cohort — the ``messages`` rows ``cohort`` selects (a flow's
    decided in a period, a campaign's) — into the :class:`Row` that ``row(*values)`` gives
    for their values of the ``group`` columns of ``messages``; orders from ``start`` to
    ``end`` + ``window`` are credited by last touch (see the module doc), revenue in
    ``currency``.  The cohort's mails sent, conversions and revenue per UTC day, each day
    that has any."""
    m, t = Message.__table__, Touchpoint.__table__
    sent_expr = func.sum(case((m.c.status == MessageStatus.SENT.value, 1), else_=0))
    failed_expr = func.sum(case((m.c.status == MessageStatus.FAILED.value, 1), else_=0))
    skipped_expr = func.sum(case((m.c.status.in_(SKIPPED), 1), else_=0))
    twice_expr = func.sum(case((m.c.duplicate_at.is_not(None), 1), else_=0))
    width = len(group)
    for found in conn.execute(select(*group, func.count(), sent_expr, failed_expr, skipped_expr,
                                     twice_expr).where(cohort).group_by(*group)):
        r = row(*found[:width])
        decided, sent, failed, skipped, twice = found[width:]
        r.counts["decided"], r.counts["sent"] = int(decided), int(sent or 0)
        r.counts["failed"], r.counts["skipped"] = int(failed or 0), int(skipped or 0)
        r.counts["duplicates"] = int(twice or 0)
    for found in conn.execute(
            select(*group, t.c.kind, func.count(func.distinct(t.c.message_id)))
            .select_from(t.join(m, m.c.id == t.c.message_id))
            .where(cohort, t.c.kind.in_(list(EVENT_COLUMNS)))
            .group_by(*group, t.c.kind)):
        kind, mails = found[width:]
        row(*found[:width]).counts[EVENT_COLUMNS[kind]] += int(mails)
    o = OfferCode.__table__
    for found in conn.execute(
            select(*group, func.count())
            .select_from(o.join(m, m.c.id == o.c.message_id))
            .where(cohort, o.c.redeemed_at.is_not(None)).group_by(*group)):
        row(*found[:width]).counts["redeemed"] += int(found[width])

    daily: dict[date, Day] = {}

    def on(day: date) -> Day:
        if day not in daily:
            daily[day] = Day(day)
        return daily[day]

    sent_mails = and_(cohort, m.c.status == MessageStatus.SENT.value)
    key_of: dict[int, tuple[Any, ...]] = {}
    for found in conn.execute(select(m.c.id, m.c.sent_at, *group).where(sent_mails)):
        key_of[found[0]] = tuple(found[2:])
        on(as_utc(found[1]).date()).sent += 1
    converted: set[int] = set()
    for message_id, ordered_at, total, paid_in in _conversions(conn, sent_mails, set(key_of),
                                                               start, end, window):
        r = row(*key_of[message_id])
        r.counts["conversions"] += 1
        if message_id not in converted:
            converted.add(message_id)
            r.counts["converted"] += 1
        day = on(as_utc(ordered_at).date())
        day.conversions += 1
        if paid_in != currency:
            r.other_revenue.add(paid_in, total)
            continue
        r.revenue += total
        day.revenue += total
    return daily


def total_of(rows: Sequence[Row], label: str) -> Row:
    """The rows added up, as a row named ``label``."""
    total = Row(label)
    for r in rows:
        for column in COLUMNS:
            total.counts[column] += r.counts[column]
        total.revenue += r.revenue
        for paid_in, amount in r.other_revenue:
            total.other_revenue.add(paid_in, amount)
    return total


def _days(start: datetime, end: datetime) -> list[date]:
    return days_from(as_utc(start).date(), as_utc(end - timedelta(microseconds=1)).date())


def days_from(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _conversions(conn: Connection, sent_mails: Any, cohort_sent: set[int], start: datetime,
                 end: datetime, window: timedelta) -> list[tuple[int, datetime, Decimal, str]]:
    """``(mail id, order time, order total, its currency)`` for each order credited to a mail
    of the cohort (``sent_mails`` selects its sent mails, ``cohort_sent`` holds their ids).
    The touches compared are every mail of the customer — of any flow or campaign."""
    m, t, o = Message.__table__, Touchpoint.__table__, Order.__table__
    customers = select(m.c.customer_id).where(sent_mails).distinct().scalar_subquery()
    # Every touch of those customers (any mail sent or clicked), by customer, in time.
    touches: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    mails: set[int] = set()
    for mail in conn.execute(select(m.c.id, m.c.customer_id, m.c.sent_at).where(
            m.c.customer_id.in_(customers), m.c.status == MessageStatus.SENT.value,
            m.c.sent_at >= start - window, m.c.sent_at < end + window)):
        mails.add(mail.id)
        touches[mail.customer_id].append((as_utc(mail.sent_at), mail.id))
    for customer_id, message_id, at in conn.execute(select(
            t.c.customer_id, t.c.message_id, t.c.occurred_at).where(
            t.c.customer_id.in_(customers), t.c.kind == "email_clicked",
            t.c.occurred_at >= start - window, t.c.occurred_at < end + window)):
        if message_id in mails:
            touches[customer_id].append((as_utc(at), message_id))
    for seq in touches.values():
        seq.sort()
    credited = []
    for customer_id, ordered_at, total, currency in conn.execute(select(
            o.c.customer_id, o.c.ordered_at, o.c.total, o.c.currency).where(
            o.c.customer_id.in_(customers), o.c.status == OrderStatus.COMPLETED.value,
            o.c.ordered_at >= start, o.c.ordered_at < end + window)):
        seq, at = touches.get(customer_id), as_utc(ordered_at)
        if not seq:
            continue
        i = bisect.bisect_right(seq, (at, float("inf"))) - 1
        if i < 0 or seq[i][0] <= at - window:
            continue
        if seq[i][1] in cohort_sent:
            credited.append((seq[i][1], at, Decimal(str(total)), currency))
    return credited


@dataclass
class SegmentSeries:
    segment: str
    sizes: list[int]


def segment_sizes(conn: Connection, start: datetime, end: datetime,
                  segments: list[str] | None = None) -> tuple[list[date], list[SegmentSeries]]:
    """Each segment's size at the end of every UTC day from ``start`` to ``end``."""
    s = SegmentMembership.__table__
    days = _days(start, end)
    wanted = [s.c.segment.in_(segments)] if segments else []
    base: dict[str, int] = defaultdict(int)
    for segment, n in conn.execute(select(s.c.segment, func.count()).where(
            s.c.entered_at < start, or_(s.c.exited_at.is_(None), s.c.exited_at >= start),
            *wanted).group_by(s.c.segment)):
        base[segment] = int(n)
    change: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for column, sign in ((s.c.entered_at, 1), (s.c.exited_at, -1)):
        for segment, at in conn.execute(select(s.c.segment, column).where(
                column >= start, column < end, *wanted)):
            change[segment][as_utc(at).date()] += sign
    series = []
    for segment in sorted(set(base) | set(change)):
        size, sizes = base[segment], []
        for d in days:
            size += change[segment].get(d, 0)
            sizes.append(size)
        series.append(SegmentSeries(segment, sizes))
    return days, series
