"""See before switching on: replay stored history through one flow on a simulated clock.

The replay runs on a private in-memory SQLite copy of what the flow can look
at (customers, orders up to the end of the window, touchpoints other than
segment moves, suppressions): nothing is sent, the real database is only read
(one short read transaction, no locks held while the replay runs), and the
speed is the same whichever backend holds the shop.  Stored orders in the window become
``order_placed`` events at their own time; for a segment-triggered flow the
segments are refreshed as of each simulated step (``segment_every``, a day by
default), starting from the state at ``start``, and the moves become the
events.  The engine itself (enrol, goals, waits, quiet hours, the cap) is the
production code; the clock ticks every ``resolution`` (an hour) like a scheduler
whose tick is that long, skipping ticks where nothing happens, so a simulated
enrolment or send can be up to that much later than it would be live.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Connection, Engine, bindparam, func, select, text
from sqlalchemy.pool import StaticPool

from lifecycle.db import make_engine
from lifecycle.flows.dates import fire as fire_dates
from lifecycle.flows.definitions import Branch, Flow
from lifecycle.flows.engine import Policies, advance
from lifecycle.flows.triggers import dispatch
from lifecycle.models import (
    Base,
    Customer,
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    Order,
    Suppression,
    Touchpoint,
)
from lifecycle.models.base import UTCDateTime
from lifecycle.orders import order_data
from lifecycle.segments.compute import KeptMetrics, refresh_all
from lifecycle.segments.definitions import Definitions
from lifecycle.timeutil import as_utc


@dataclass
class Simulation:
    flow: str
    start: datetime
    end: datetime
    enrolled: int = 0
    #: (due, customer external id, email, step, template, customer's timezone)
    mails: list[tuple[datetime, str, str, str, str, str]] = field(default_factory=list)
    per_step: Counter[str] = field(default_factory=Counter)
    capped: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    turns: int = 0  # enrollment turns taken
    ticks: int = 0  # clock ticks where something happened
    refreshes: int = 0  # segment refreshes run


#: Touchpoints a replay does not copy: segment moves are recomputed in the replay.
NOT_COPIED = ("segment_entered", "segment_exited")
COPY_CHUNK = 10_000


def copy_for_replay(source: Connection, end: datetime) -> Engine:
    """An in-memory database holding what a replay up to ``end`` can read from ``source``."""
    memory = make_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(memory)
    customers, orders = Customer.__table__, Order.__table__
    touchpoints, suppressions = Touchpoint.__table__, Suppression.__table__
    reads = [
        (customers, select(customers)),
        (orders, select(orders).where(orders.c.ordered_at < end)),
        (touchpoints, select(*[c for c in touchpoints.c if c.name != "message_id"])
         .where(touchpoints.c.kind.not_in(NOT_COPIED), touchpoints.c.occurred_at < end)),
        (suppressions, select(suppressions)),
    ]
    streaming = source.execution_options(yield_per=COPY_CHUNK)
    with memory.begin() as target:
        for table, query in reads:
            for chunk in streaming.execute(query).mappings().partitions(COPY_CHUNK):
                target.execute(table.insert(), [dict(row) for row in chunk])
        # Each daily refresh asks which customers ordered since the day before.
        target.exec_driver_sql("CREATE INDEX replay_orders_ordered_at ON orders (ordered_at)")
    return memory


def segments_read(flow: Flow) -> frozenset[str]:
    """The segments a flow's trigger, goals and branches look at."""
    found: set[str] = set()

    def walk(condition: Any) -> None:
        if isinstance(condition, dict):
            for kind, body in condition.items():
                if kind in ("in_segment", "entered_segment"):
                    found.add(body)
                else:
                    walk(body)
        elif isinstance(condition, list | tuple):
            for item in condition:
                walk(item)

    if flow.trigger.kind in ("segment_entered", "segment_exited"):
        found.update(flow.trigger.options["segments"])
    walk(list(flow.goals))
    walk([step.action.condition for step in flow.steps if isinstance(step.action, Branch)])
    return frozenset(found)


DAY = timedelta(days=1)


def simulate(source: Connection, flow: Flow, defs: Definitions, start: datetime, end: datetime, *,
             policies: Policies, default_tz: str, resolution: timedelta = timedelta(hours=1),
             segment_every: timedelta = timedelta(days=1)) -> Simulation:
    """Replay ``[start, end)`` of the history ``source`` holds; ``source`` is only read."""
    memory = copy_for_replay(source, end)
    try:
        with memory.begin() as conn:
            return _replay(conn, flow, defs, start, end, policies=policies, default_tz=default_tz,
                           resolution=resolution, segment_every=segment_every)
    finally:
        memory.dispose()


def _replay(conn: Connection, flow: Flow, defs: Definitions, start: datetime, end: datetime, *,
            policies: Policies, default_tz: str, resolution: timedelta,
            segment_every: timedelta) -> Simulation:
    result = Simulation(flow.name, start, end)
    flows = {flow.name: flow}
    wanted = segments_read(flow)
    segment_flow = bool(wanted)
    date_flow = flow.trigger.kind == "date"
    # The copy holds no enrollment, mail or segment stay: the flow has never run.
    kept = KeptMetrics()  # orders only arrive, in time order: metrics carry over
    if flow.trigger.kind == "order_placed":  # the replay announces the window's orders itself,
        # each at its time: the copied entries of those orders would count them twice
        touchpoints = Touchpoint.__table__
        conn.execute(touchpoints.delete().where(touchpoints.c.kind == "order_placed",
                                                touchpoints.c.occurred_at >= start))
    if segment_flow:
        refresh_all(conn, defs, start, start, only=wanted, kept=kept)
    dispatch(conn, flows, start)  # the first run places the cursor after the copied history
    if date_flow:  # places the date cursor, then takes the first day's dates
        fire_dates(conn, flows, start, default_tz)
        result.enrolled += fire_dates(conn, flows, start, default_tz, until=start + DAY)
    # Orders of the window, each with its number among the customer's completed orders.
    orders = conn.execute(text("""
        SELECT customer_id, external_id, ordered_at, total, currency, items, nth FROM (
            SELECT customer_id, external_id, ordered_at, total, currency, items,
                   ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ordered_at, id) AS nth
            FROM orders WHERE status = 'completed') AS o
        WHERE ordered_at >= :start AND ordered_at < :end ORDER BY ordered_at""")
        .bindparams(*_typed("start", "end")), {"start": start, "end": end}).all() \
        if flow.trigger.kind == "order_placed" else []
    pending = iter(orders)
    upcoming = next(pending, None)
    next_refresh = start + segment_every if segment_flow else None
    next_day = start + DAY if date_flow else None
    active = ((FlowEnrollment.flow == flow.name)
              & (FlowEnrollment.status == EnrollmentStatus.ACTIVE.value))
    batch = 5_000
    while True:
        # The clock ticks every ``resolution``, like a scheduler; ticks where nothing
        # happens (no order, no due enrollment, no refresh) are skipped.
        due = conn.execute(select(func.min(FlowEnrollment.next_run_at)).where(active)).scalar()
        moments = [m for m in (as_utc(upcoming.ordered_at) if upcoming else None, due,
                               next_refresh, next_day) if m is not None]
        if not moments or min(moments) >= end:
            break
        ticks = -((start - min(moments)) // resolution)  # round up to the next tick
        now = min(start + ticks * resolution, end)
        refreshed = next_refresh is not None and next_refresh <= now
        if refreshed:
            refresh_all(conn, defs, now, now, recalibrate=False, only=wanted, kept=kept)
            result.refreshes += 1
            while next_refresh <= now:
                next_refresh += segment_every
        if next_day is not None and next_day <= now:
            result.enrolled += fire_dates(conn, flows, now, default_tz, until=now + DAY)
            while next_day <= now:
                next_day += DAY
        events = []
        while upcoming is not None and as_utc(upcoming.ordered_at) <= now:
            events.append(upcoming)
            upcoming = next(pending, None)
        if events:
            conn.execute(Touchpoint.__table__.insert(), [
                {"customer_id": o.customer_id, "kind": "order_placed", "channel": "shop",
                 "occurred_at": as_utc(o.ordered_at), "recorded_at": as_utc(o.ordered_at),
                 "data": order_data(o)} for o in events])
        if events or refreshed:  # only these add touchpoints
            result.enrolled += dispatch(conn, flows, now, batch=1_000_000)
        result.ticks += 1
        while True:
            report = advance(conn, flows, now, policies=policies, default_tz=default_tz,
                             batch=batch)
            result.capped += report.capped
            result.turns += report.advanced
            if report.advanced < batch:
                break
    for mail in conn.execute(select(Message.due_at, Customer.external_id, Message.to_email,
                                    Message.step, Message.template, Message.status,
                                    Customer.timezone)
                             .join(Customer, Customer.id == Message.customer_id)
                             .where(Message.flow == flow.name).order_by(Message.due_at)):
        if mail.status == "suppressed":
            continue
        result.mails.append((mail.due_at, mail.external_id, mail.to_email, mail.step,
                             mail.template, mail.timezone or default_tz))
        result.per_step[mail.step] += 1
    for status, reason, count in conn.execute(
            select(FlowEnrollment.status, FlowEnrollment.exit_reason, func.count())
            .where(FlowEnrollment.flow == flow.name)
            .group_by(FlowEnrollment.status, FlowEnrollment.exit_reason)):
        result.outcomes[f"{status}: {reason}" if reason and reason != "completed" else status] += count
    return result


def _typed(*names: str) -> list[BindParameter[datetime]]:
    return [bindparam(name, type_=UTCDateTime()) for name in names]
