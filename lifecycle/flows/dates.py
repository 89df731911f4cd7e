"""Date triggers: the anniversary of a customer's first order, or a date attribute (a birthday).

A customer's day is their own: the trigger fires for the calendar date in the
customer's timezone, and the enrollment's first turn is at the trigger's
``at`` time (10:00 unless told) on that local date.  Anniversaries are whole
years after the first completed order (the first one a year later); a date
attribute (``YYYY-MM-DD`` or ``MM-DD``) fires every year on its day.  Someone
born on 29 February is remembered on 28 February in other years (python-dateutil
``relativedelta`` arithmetic).

Each date flow keeps a cursor (``flow_trigger_cursors`` row ``date:<flow>``,
its ``updated_at`` being the moment up to which dates are done).  A run handles
every local date that began after the cursor and by now, so a scheduler that
was down for a day catches up.  A flow that starts — its first run, or while it
is draft or paused — puts its cursor ``at`` before now (:func:`_start_of`): the
dates whose send time is still ahead fire, past ones are not backfilled.  The
trigger key is the local date, so a date fires at most once per customer and year
whatever the re-entry policy and however many schedulers run.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import Connection, bindparam, select, text, update

from lifecycle.durations import parse_clock
from lifecycle.flows.definitions import Flow
from lifecycle.flows.engine import enroll
from lifecycle.models import TriggerCursor
from lifecycle.segments.sql import Dialect
from lifecycle.timeutil import UTC, as_utc, zone

log = logging.getLogger(__name__)

#: Longest catch-up after a pause, in days: older dates are not fired late.
MAX_CATCH_UP_DAYS = 7
#: A leap-year year for dates given without one ("MM-DD").
LEAP_BASE_YEAR = 2000


def fire(conn: Connection, flows: dict[str, Flow], now: datetime, default_tz: str,
         until: datetime | None = None, held: frozenset[str] = frozenset()) -> int:
    """Enrol everyone whose date began since the last run, for every date flow; the count.

    ``until`` (default: now) lets a simulation take a day's dates at once: local
    dates beginning by then are enrolled now, their first turn still at ``at``.
    The flows named in ``held`` (draft or paused: :mod:`lifecycle.flows.states`) enrol
    nobody; their cursor moves on all the same, so their dates are not caught up later.
    """
    enrolled = 0
    for flow in sorted(flows.values(), key=lambda f: (-f.priority, f.name)):
        if flow.trigger.kind != "date":
            continue
        if flow.name in held:
            conn.execute(update(TriggerCursor).where(TriggerCursor.name == f"date:{flow.name}")
                         .values(updated_at=_start_of(flow, until or now)))
            continue
        enrolled += _fire_flow(conn, flow, now, until or now, default_tz)
    return enrolled


def _fire_flow(conn: Connection, flow: Flow, now: datetime, until: datetime,
               default_tz: str) -> int:
    name = f"date:{flow.name}"
    read = select(TriggerCursor.updated_at).where(TriggerCursor.name == name)
    if conn.dialect.name == "postgresql":
        read = read.with_for_update()
    last = conn.execute(read).scalar()
    if last is None:
        conn.execute(TriggerCursor.__table__.insert().values(
            name=name, last_id=0, updated_at=_start_of(flow, until)))
        return 0
    if _quarter(until) <= _quarter(last):
        return 0  # local days begin on quarter hours (UTC offsets are multiples of 15 min)
    last = max(last, until - timedelta(days=MAX_CATCH_UP_DAYS))
    # Every month-day a local date in the window can have, with a day's margin for
    # the base dates, which are compared on the UTC calendar.
    days = {(last - timedelta(days=2)).date() + timedelta(days=i)
            for i in range((until.date() - last.date()).days + 5)}
    month_days = {f"{d.month:02d}-{d.day:02d}" for d in days}
    if "02-28" in month_days or "03-01" in month_days:
        month_days.add("02-29")
    options = flow.trigger.options
    hour, minute = parse_clock(options.get("at", "10:00"))
    enrolled = 0
    for customer_id, tz_name, base in _candidates(conn, options, sorted(month_days)):
        tz = zone(tz_name or default_tz)
        first = last.astimezone(tz).date() + timedelta(days=1)
        for offset in range((until.astimezone(tz).date() - first).days + 1):
            day = first + timedelta(days=offset)
            returns, years = _returns_on(base, day, tz, anniversary="anniversary_of" in options)
            if not returns:
                continue
            starts = datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(UTC)
            if enroll(conn, flow, customer_id, f"date:{day.isoformat()}", now,
                      context={"date": day.isoformat(), "years": years},
                      start_at=max(starts, now)):
                enrolled += 1
    conn.execute(update(TriggerCursor).where(TriggerCursor.name == name)
                 .values(updated_at=until))
    if enrolled:
        log.info("Date flow %s enrolled %d customers.", flow.name, enrolled)
    return enrolled


def _start_of(flow: Flow, moment: datetime) -> datetime:
    """Where a date flow's cursor starts when it starts at ``moment`` (its first run, or while
    it is not live): ``at`` before it, so the dates whose send time (``at``, local) is still
    ahead at ``moment`` fire — a birthday flow made live at 03:00 UTC sends that day's
    birthdays at 10:00 in Berlin — and those whose send time has passed do not (no backfill)."""
    hour, minute = parse_clock(flow.trigger.options.get("at", "10:00"))
    return moment - timedelta(hours=hour, minutes=minute)


def _quarter(moment: datetime) -> int:
    return int(moment.timestamp() // 900)


def _returns_on(base: Any, day: date, tz: Any, anniversary: bool) -> tuple[bool, int | None]:
    """Whether ``day`` is the yearly return of ``base``, and after how many years (if known)."""
    if isinstance(base, datetime):  # the first order: its date where the customer lives
        origin, known = base.astimezone(tz).date(), True
    else:
        origin, known = base
    years = day.year - origin.year
    if years < (1 if anniversary else 0) or origin + relativedelta(years=years) != day:
        return False, None
    return True, years if known else None


def _candidates(conn: Connection, options: dict[str, Any],
                month_days: list[str]) -> list[tuple[int, str | None, Any]]:
    """Customers whose base date falls on one of ``month_days`` (UTC calendar)."""
    d = Dialect(conn.dialect.name)
    if "anniversary_of" in options:
        month_day = ("to_char(f.first_at AT TIME ZONE 'UTC', 'MM-DD')" if d.pg
                     else "strftime('%m-%d', f.first_at)")
        rows = conn.execute(text(f"""
            SELECT c.id, c.timezone, f.first_at FROM (
                SELECT customer_id, MIN(ordered_at) AS first_at FROM orders
                WHERE status = 'completed' GROUP BY customer_id) AS f
            JOIN customers AS c ON c.id = f.customer_id
            WHERE {month_day} IN :days""").bindparams(bindparam("days", expanding=True)),
            {"days": month_days}).all()
        return [(row.id, row.timezone, as_utc(row.first_at)) for row in rows]
    value = d.attribute_text("attributes", ":attribute")
    right = f"RIGHT({value}, 5)" if d.pg else f"substr({value}, -5)"
    rows = conn.execute(text(f"""
        SELECT id, timezone, {value} AS value FROM customers
        WHERE {right} IN :days""").bindparams(bindparam("days", expanding=True)),
        {"days": month_days, "attribute": options["attribute"]}).all()
    found = []
    for row in rows:
        parsed = _parse_date(row.value)
        if parsed is None:
            log.warning("Customer %s has %s=%r, which is not a date (YYYY-MM-DD or MM-DD); "
                        "skipped.", row.id, options["attribute"], row.value)
            continue
        found.append((row.id, row.timezone, parsed))
    return found


def bad_dates(conn: Connection, attribute: str) -> tuple[int, list[tuple[str, str]]]:
    """Customers whose ``attribute`` is set but is not a date this trigger can read
    (YYYY-MM-DD or MM-DD): how many, and the first :data:`BAD_SHOWN` as (the shop's
    customer id, the value).  Such a customer is never enrolled (a value not ending in
    MM-DD is not even looked at), so ``flows validate`` warns about them."""
    value = Dialect(conn.dialect.name).attribute_text("attributes", ":attribute")
    rows = conn.execute(text(f"SELECT external_id, {value} AS value FROM customers "
                             f"WHERE {value} IS NOT NULL ORDER BY id"),
                        {"attribute": attribute})
    count, shown = 0, []
    for row in rows:
        if _parse_date(row.value) is None:
            count += 1
            if len(shown) < BAD_SHOWN:
                shown.append((row.external_id, row.value))
    return count, shown


#: Customers with a bad date a warning names (the rest are counted).
BAD_SHOWN = 3


def _parse_date(value: str) -> tuple[date, bool] | None:
    """``(date, year known)``; a date without a year is placed in a leap year."""
    value = str(value).strip()
    try:
        if len(value) == 5 and value[2] == "-":  # MM-DD
            return date(LEAP_BASE_YEAR, int(value[:2]), int(value[3:])), False
        return date.fromisoformat(value[:10]), True
    except ValueError:
        return None
