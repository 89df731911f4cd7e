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

People are simulated too: each mail the replay writes draws one number from a
random generator seeded with ``seed``; below ``open_rate`` the mail is opened,
below ``click_rate`` it is also clicked (a click comes with an open, so the click
rate, a share of all mails, is at most the open rate).  The open and the click
are touchpoints of that mail an hour after it is due (:data:`REACTS_AFTER`), so
``opened``/``clicked`` branches and goals see them from then on.  Both rates are 0
unless given: then nobody opens or clicks, and the report says so.  Nobody replies
in a simulation.  The same history, rates and seed give the same replay.

The report counts the customers left out and why, decided as live: enrolment is
refused without marketing consent or with a suppression (the engine), a mail is
held by the frequency cap (the engine) or withheld at send time by an unsubscribe
from this one flow (the sender).  It warns about every branch or goal whose
condition cannot hold with these rates (an ``opened`` condition when the open rate
is 0, ``clicked`` when the click rate is 0, ``replied`` always) and about every
branch that was tried and went the same way every time (one of its paths was never
exercised).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import BindParameter, Connection, Engine, bindparam, func, select, text
from sqlalchemy.pool import StaticPool

from lifecycle.db import make_engine
from lifecycle.flows.dates import fire as fire_dates
from lifecycle.flows.definitions import Branch, Flow
from lifecycle.flows.engine import WATCH, Policies, Watch, advance
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
    email_hash,
)
from lifecycle.models.base import UTCDateTime
from lifecycle.orders import order_data
from lifecycle.segments.compute import KeptMetrics, refresh_all
from lifecycle.segments.definitions import Definitions
from lifecycle.subscriptions import flow_scope
from lifecycle.timeutil import as_utc
from lifecycle.yamlfile import InvalidFile, Problem, load


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
    open_rate: float = 0.0  # share of mails opened, 0 to 1
    click_rate: float = 0.0  # share of mails clicked (each also opened), 0 to open_rate
    seed: int = 1
    opened: int = 0  # mails opened in the replay
    clicked: int = 0  # mails clicked in the replay
    #: why -> how many customers were left out for it (a customer counts once per reason)
    left_out: Counter[str] = field(default_factory=Counter)
    #: branch step -> (times its condition held, times it did not)
    branches: dict[str, tuple[int, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


#: When a simulated customer opens (and clicks) a mail: this long after it is due.
REACTS_AFTER = timedelta(hours=1)
#: The seed of the draws unless one is given: the same replay every run.
DEFAULT_SEED = 1
#: Why a mail the engine wrote is not sent (its ``last_error`` in the replay).
CAPPED = "frequency cap reached"
WITHHELD = "unsubscribed from this flow"


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
             segment_every: timedelta = timedelta(days=1), open_rate: float = 0.0,
             click_rate: float = 0.0, seed: int = DEFAULT_SEED) -> Simulation:
    """Replay ``[start, end)`` of the history ``source`` holds; ``source`` is only read.

    ``open_rate`` and ``click_rate`` are shares of the mails (0 to 1; the click rate at
    most the open rate), drawn with a generator seeded with ``seed``."""
    if not 0 <= click_rate <= open_rate <= 1:
        raise ValueError("the rates must satisfy 0 <= click rate <= open rate <= 1: "
                         "a click comes with an open")
    memory = copy_for_replay(source, end)
    try:
        with memory.begin() as conn:
            return _replay(conn, flow, defs, start, end, policies=policies, default_tz=default_tz,
                           resolution=resolution, segment_every=segment_every,
                           open_rate=open_rate, click_rate=click_rate, seed=seed)
    finally:
        memory.dispose()


class _People:
    """The simulated readers: each new mail of the flow is opened and clicked, or not."""

    def __init__(self, conn: Connection, flow: Flow, result: Simulation) -> None:
        self.conn, self.flow, self.result = conn, flow, result
        self.rng = random.Random(result.seed)
        self.last_id = 0
        # The sender withholds a marketing mail from whoever unsubscribed from this flow.
        self.withheld = {h: reason for h, reason in conn.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                Suppression.scope == flow_scope(flow.name)))} \
            if flow.kind == "marketing" else {}

    def react(self) -> None:
        """Draw for every mail written since the last call, in the order they were written."""
        mails = self.conn.execute(
            select(Message.id, Message.customer_id, Message.due_at, Message.to_email,
                   Message.step, Message.status)
            .where(Message.flow == self.flow.name, Message.id > self.last_id)
            .order_by(Message.id)).all()
        if not mails:
            return
        self.last_id = mails[-1].id
        touches, withheld = [], []
        for mail in mails:
            if mail.status == "suppressed":
                continue  # held by the frequency cap: never sent
            if self.withheld and email_hash(mail.to_email or "") in self.withheld:
                withheld.append(mail.id)
                continue
            draw = self.rng.random()
            seen = as_utc(mail.due_at) + REACTS_AFTER
            for kind, rate in (("email_opened", self.result.open_rate),
                               ("email_clicked", self.result.click_rate)):
                if draw < rate:
                    touches.append({
                        "customer_id": mail.customer_id, "kind": kind, "channel": "email",
                        "occurred_at": seen, "recorded_at": seen, "message_id": mail.id,
                        "data": {"flow": self.flow.name, "step": mail.step, "simulated": True}})
            self.result.opened += draw < self.result.open_rate
            self.result.clicked += draw < self.result.click_rate
        if touches:
            self.conn.execute(Touchpoint.__table__.insert(), touches)
        if withheld:
            self.conn.execute(Message.__table__.update().where(Message.id.in_(withheld))
                              .values(status="suppressed", last_error=WITHHELD))


def _replay(conn: Connection, flow: Flow, defs: Definitions, start: datetime, end: datetime, *,
            policies: Policies, default_tz: str, resolution: timedelta,
            segment_every: timedelta, open_rate: float = 0.0, click_rate: float = 0.0,
            seed: int = DEFAULT_SEED) -> Simulation:
    watch = Watch()
    token = WATCH.set(watch)
    try:
        result = Simulation(flow.name, start, end, open_rate=open_rate, click_rate=click_rate,
                            seed=seed)
        _run(conn, flow, defs, result, policies=policies, default_tz=default_tz,
             resolution=resolution, segment_every=segment_every)
    finally:
        WATCH.reset(token)
    _account(conn, flow, result, watch, default_tz)
    return result


def _run(conn: Connection, flow: Flow, defs: Definitions, result: Simulation, *,
         policies: Policies, default_tz: str, resolution: timedelta,
         segment_every: timedelta) -> None:
    start, end = result.start, result.end
    people = _People(conn, flow, result)
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
            people.react()
            if report.advanced < batch:
                break


def _account(conn: Connection, flow: Flow, result: Simulation, watch: Watch,
             default_tz: str) -> None:
    """The mails, outcomes, who was left out, and the warnings, once the replay is over."""
    for mail in conn.execute(select(Message.due_at, Customer.external_id, Message.to_email,
                                    Message.step, Message.template, Message.status,
                                    Customer.timezone)
                             .join(Customer, Customer.id == Message.customer_id)
                             .where(Message.flow == flow.name).order_by(Message.due_at)):
        if mail.status == "suppressed":
            continue  # held by the cap or withheld at send time
        result.mails.append((mail.due_at, mail.external_id, mail.to_email, mail.step,
                             mail.template, mail.timezone or default_tz))
        result.per_step[mail.step] += 1
    for status, reason, count in conn.execute(
            select(FlowEnrollment.status, FlowEnrollment.exit_reason, func.count())
            .where(FlowEnrollment.flow == flow.name)
            .group_by(FlowEnrollment.status, FlowEnrollment.exit_reason)):
        result.outcomes[f"{status}: {reason}" if reason and reason != "completed" else status] += count
    left_out = {why: set(customers) for why, customers in watch.refused.items()}
    for customer_id, why, reason in conn.execute(
            select(FlowEnrollment.customer_id, Message.last_error, FlowEnrollment.exit_reason)
            .select_from(FlowEnrollment)
            .outerjoin(Message, (Message.enrollment_id == FlowEnrollment.id)
                       & (Message.status == "suppressed"))
            .where(FlowEnrollment.flow == flow.name)):
        if why == CAPPED:
            left_out.setdefault("frequency cap", set()).add(customer_id)
        elif why == WITHHELD:
            left_out.setdefault("suppressed", set()).add(customer_id)
        if reason == "no marketing consent" or (reason or "").startswith("suppressed:"):
            # consent withdrawn or a suppression added while enrolled: the engine's exit
            left_out.setdefault(reason.split(":")[0], set()).add(customer_id)
    result.left_out = Counter({why: len(customers) for why, customers in left_out.items()})
    for step in flow.steps:
        if isinstance(step.action, Branch):
            result.branches[step.id] = (watch.branches[(flow.name, step.id, True)],
                                        watch.branches[(flow.name, step.id, False)])
    result.warnings = warnings(flow, result)


def dump_condition(condition: dict[str, Any]) -> str:
    """A condition as one line of YAML, as a flow file writes it: ``{clicked: ten-percent}``."""
    return str(yaml.safe_dump(condition, default_flow_style=True, sort_keys=False,
                              allow_unicode=True, width=10_000)).strip()


def _known(result: Simulation) -> dict[str, str]:
    """Condition kinds that cannot hold in this simulation, with the reason why."""
    known = {"replied": "nobody replies in a simulation"}
    if result.open_rate == 0:
        known["opened"] = "the open rate is 0"
    if result.click_rate == 0:
        known["clicked"] = "the click rate is 0"
    return known


def _value(condition: dict[str, Any], known: dict[str, str], why: set[str]) -> bool | None:
    """A condition's value when the simulation settles it (False/True), else None.

    Three-valued: ``all``/``any``/``not`` over conditions that are false, true or unknown;
    the reasons of the known parts used are added to ``why``."""
    kind, body = next(iter(condition.items()))
    if kind in known:
        why.add(known[kind])
        return False
    if kind == "not":
        inner = _value(body, known, why)
        return None if inner is None else not inner
    if kind in ("all", "any"):
        values = [_value(item, known, why) for item in body]
        decisive = kind == "any"  # a true part settles any, a false part settles all
        if decisive in values:
            return decisive
        return not decisive if all(v is not None for v in values) else None
    return None


def warnings(flow: Flow, result: Simulation) -> list[str]:
    """Branches and goals that cannot hold (or always hold) with these rates, and branches
    that went the same way every time they were tried."""
    known = _known(result)
    found = []
    for goal in flow.goals:
        why: set[str] = set()
        if _value(goal, known, why) is False:
            found.append(f"The goal {dump_condition(goal)} can never be reached in this "
                         f"simulation: {', '.join(sorted(why))}.")
    for step in flow.steps:
        action = step.action
        if not isinstance(action, Branch):
            continue
        why = set()
        value = _value(action.condition, known, why)
        text = f"The branch {step.id} ({dump_condition(action.condition)})"
        if value is False:
            found.append(f"{text} can never hold in this simulation: {', '.join(sorted(why))}; "
                         f"every enrollment takes its else path ({action.otherwise}).")
            continue
        if value is True:
            found.append(f"{text} always holds in this simulation: {', '.join(sorted(why))}; "
                         f"no enrollment takes its else path ({action.otherwise}).")
            continue
        held, not_held = result.branches.get(step.id, (0, 0))
        if held == 0 and not_held:
            found.append(f"{text} never held in the {not_held} times it was tried: its then "
                         f"path ({action.then}) was never taken.")
        elif not_held == 0 and held:
            found.append(f"{text} held all {held} times it was tried: its else path "
                         f"({action.otherwise}) was never taken.")
    return found


def data_warnings_of(conn: Connection, flow: Flow, segments_file: Path) -> list[Problem]:
    """The warnings ``flows validate`` gives about what ``flow`` names that no data has:
    the categories, SKUs, attributes and events of its own file and of the custom segments
    of ``segments_file`` it reads (a simulation of a flow waiting for a category nobody
    buys is empty for that reason, and should say so).  A file that does not parse adds
    nothing: its problems are reported where it is read."""
    from lifecycle.flows.checks import (
        data_warnings,
        flow_references,
        known_values,
        segment_references,
        set_attributes,
    )

    references = []
    try:
        references += flow_references(load(Path(flow.file)))
    except (InvalidFile, OSError):
        pass
    read = segments_read(flow)
    if read and segments_file.is_file():
        try:
            located = load(segments_file)
        except InvalidFile:
            located = None
        custom = located.data.get("custom") if located and isinstance(located.data, dict) \
            else None
        if located is not None and isinstance(custom, dict):
            mine = {name: body for name, body in custom.items() if name in read}
            references += segment_references(replace(located, data={"custom": mine}))
    if not references:
        return []
    return data_warnings(known_values(conn), references, set_attributes([flow]))


def _typed(*names: str) -> list[BindParameter[datetime]]:
    return [bindparam(name, type_=UTCDateTime()) for name in names]
