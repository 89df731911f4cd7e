"""The flow engine: enrol customers, advance their enrollments, write the outbox.

Everything an enrollment does in one turn happens in one transaction: goals
are checked, steps run until a wait (or the end), and a send step writes its
outbox row (unique idempotency key ``flow:<flow>:<enrollment>:<step>``) in the
same transaction that moves the enrollment past it.  Enrolment is unique per
re-entry policy (``entry_key``), so a trigger seen twice, or by two schedulers,
enrols once.  Due enrollments are claimed with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (SQLite serialises writers with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.flows.definitions import Branch, Exit, Flow, Offer, Send, SetValue, Wait
from lifecycle.flows.timing import QuietHours, wait_until
from lifecycle.models import (
    Customer,
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    MessageStatus,
    Order,
    SegmentMembership,
    Suppression,
    Touchpoint,
    email_hash,
)
from lifecycle.offers.service import fresh_code, issue, issued_context, spec_context
from lifecycle.timeutil import as_utc, zone

log = logging.getLogger(__name__)

#: A guard against a step graph that runs away within one turn (the checker forbids it).
MAX_STEPS_PER_TURN = 100
LIVE_MAIL = (MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value,
             MessageStatus.SENDING.value, MessageStatus.SENT.value)


@dataclass(frozen=True)
class Policies:
    """Rules across flows (``flows/policies.yaml``): cap, quiet hours, one flow a day."""

    cap: int = 3  # marketing mails per customer …
    cap_window: timedelta | relativedelta = timedelta(days=7)  # … in this rolling window
    quiet: QuietHours = field(default_factory=QuietHours)
    #: Two capped marketing flows never mail one customer on the same local day: the
    #: higher priority (then the earlier) keeps the day, the other moves to the next.
    one_per_day: bool = True


@dataclass
class Watch:
    """What a simulation learns from the engine that the tables do not keep.

    Set :data:`WATCH` to one while the engine runs (the simulation does): enrolments
    refused for consent or a suppression, and which way each branch went.
    """

    #: why -> the customers refused enrolment for it ("no marketing consent", "suppressed",
    #: "no email address")
    refused: dict[str, set[int]] = field(default_factory=dict)
    #: (flow, branch step, whether its condition held) -> how many times
    branches: Counter[tuple[str, str, bool]] = field(default_factory=Counter)


WATCH: ContextVar[Watch | None] = ContextVar("lifecycle_flow_watch", default=None)


def _refused(customer_id: int, why: str) -> None:
    watch = WATCH.get()
    if watch is not None:
        watch.refused.setdefault(why, set()).add(customer_id)


@dataclass
class TurnReport:
    advanced: int = 0
    mails: int = 0
    capped: int = 0
    finished: Counter[str] = field(default_factory=Counter)


class _Sql:
    """The statements every enrollment runs, built once per dialect.

    Building a statement and its cache key costs more than SQLite takes to run
    it, and a simulation runs tens of thousands of them; the values travel as
    bound parameters.
    """

    def __init__(self, dialect: str) -> None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        enrollments, messages = FlowEnrollment.__table__, Message.__table__
        customers = Customer.__table__
        self.customer = select(customers).where(customers.c.id == bindparam("customer_id"))
        self.customers = select(customers).where(
            customers.c.id.in_(bindparam("ids", expanding=True)))
        self.suppression = {
            marketing: select(Suppression.reason).where(
                Suppression.email_hash == bindparam("hash"),
                Suppression.scope.in_(["all", "marketing"] if marketing else ["all"])).limit(1)
            for marketing in (True, False)}
        mine = ((enrollments.c.flow == bindparam("flow"))
                & (enrollments.c.customer_id == bindparam("customer_id")))
        self.history = select(
            func.count().filter(enrollments.c.status == EnrollmentStatus.ACTIVE.value),
            func.max(enrollments.c.enrolled_at)).where(mine)
        self.enroll = insert(enrollments).values(
            customer_id=bindparam("customer_id"), flow=bindparam("flow"),
            entry_key=bindparam("entry_key"), status=EnrollmentStatus.ACTIVE.value,
            current_step=bindparam("step"), next_run_at=bindparam("start"),
            enrolled_at=bindparam("now"), context=bindparam("context"),
        ).on_conflict_do_nothing(index_elements=["entry_key"]).returning(enrollments.c.id)
        self.move = update(enrollments).where(enrollments.c.id == bindparam("e_id")).values(
            current_step=bindparam("step"), context=bindparam("context"),
            next_run_at=bindparam("next_run_at"))
        self.finish = update(enrollments).where(enrollments.c.id == bindparam("e_id")).values(
            status=bindparam("status"), finished_at=bindparam("now"), next_run_at=None,
            current_step=bindparam("step"),
            exit_reason=bindparam("reason"), last_error=bindparam("error"))
        self.mail = insert(messages).values(
            {column: bindparam(column, type_=messages.c[column].type) for column in (
                "idempotency_key", "customer_id", "enrollment_id", "flow", "step", "template",
                "variant", "to_email", "due_at", "attempts", "status", "last_error", "context",
                "created_at", "updated_at")}
        ).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(messages.c.id)
        due = (select(enrollments)
               .where(enrollments.c.status == EnrollmentStatus.ACTIVE.value,
                      enrollments.c.next_run_at <= bindparam("now"))
               .order_by(enrollments.c.next_run_at, enrollments.c.id).limit(bindparam("batch")))
        self.due = due.with_for_update(skip_locked=True) if dialect == "postgresql" else due
        # the same, leaving out the enrollments of flows that are not live (they wait)
        held = due.where(enrollments.c.flow.not_in(bindparam("held", expanding=True)))
        self.due_held = held.with_for_update(skip_locked=True) if dialect == "postgresql" \
            else held
        orders = Order.__table__
        self.ordered = select(orders.c.id).where(
            orders.c.customer_id == bindparam("customer_id"),
            orders.c.ordered_at > bindparam("since"), orders.c.ordered_at <= bindparam("now"),
            orders.c.status.in_(("completed", "pending"))).limit(1)
        self.same_day = select(messages.c.id, messages.c.flow).where(
            messages.c.customer_id == bindparam("customer_id"),
            messages.c.flow.in_(bindparam("flows", expanding=True)),
            messages.c.status.in_(LIVE_MAIL), messages.c.due_at >= bindparam("begins"),
            messages.c.due_at < bindparam("ends"))
        self.push = update(messages).where(
            messages.c.id == bindparam("m_id"),
            messages.c.status == MessageStatus.SCHEDULED.value).values(
            due_at=bindparam("due"), updated_at=bindparam("now"))
        touchpoints, stays = Touchpoint.__table__, SegmentMembership.__table__
        self.touched = {}  # (any step?) -> did a mail of this enrollment get that touchpoint
        for any_step in (True, False):
            mails = select(messages.c.id).where(messages.c.enrollment_id == bindparam("e_id"))
            if not any_step:
                mails = mails.where(messages.c.step == bindparam("step"))
            self.touched[any_step] = select(touchpoints.c.id).where(
                touchpoints.c.message_id.in_(mails), touchpoints.c.kind == bindparam("kind"),
                touchpoints.c.occurred_at <= bindparam("now")).limit(1)
        self.staying = {}  # (entered since enrolment?) -> an open stay in the segment
        for entered in (False, True):
            open_stay = select(stays.c.id).where(
                stays.c.customer_id == bindparam("customer_id"),
                stays.c.segment == bindparam("segment"), stays.c.exited_at.is_(None))
            if entered:
                open_stay = open_stay.where(stays.c.entered_at > bindparam("since"))
            self.staying[entered] = open_stay.limit(1)
        self.recent_mails = select(func.count()).select_from(messages).where(
            messages.c.customer_id == bindparam("customer_id"),
            messages.c.flow.in_(bindparam("flows", expanding=True)),
            messages.c.status.in_(LIVE_MAIL), messages.c.due_at > bindparam("since"))


@functools.cache
def _sql_for(dialect: str) -> _Sql:
    return _Sql(dialect)


def _sql(conn: Connection) -> _Sql:
    return _sql_for(conn.dialect.name)


def _suppressed(conn: Connection, email: str | None, marketing: bool) -> str | None:
    if not email:
        return "no email address"
    return conn.execute(_sql(conn).suppression[marketing], {"hash": email_hash(email)}).scalar()


def enroll(conn: Connection, flow: Flow, customer_id: int, trigger_key: str, now: datetime,
           context: dict[str, Any] | None = None,
           start_at: datetime | None = None) -> int | None:
    """Enrol a customer; None when the re-entry policy, consent or a suppression says no.

    The first turn is at ``start_at`` (default: now).
    """
    sql = _sql(conn)
    customer = conn.execute(sql.customer, {"customer_id": customer_id}).one_or_none()
    if customer is None:
        return None
    marketing = flow.kind == "marketing"
    if marketing and not customer.marketing_consent:
        _refused(customer_id, "no marketing consent")
        return None
    why = _suppressed(conn, customer.email, marketing)
    if why:
        _refused(customer_id, "no email address" if not customer.email else "suppressed")
        return None
    if flow.reentry != "every_time":
        active, last = conn.execute(sql.history, {"flow": flow.name,
                                                  "customer_id": customer_id}).one()
        if active:
            return None
        if (flow.reentry == "once_per" and flow.reentry_period is not None
                and last is not None and as_utc(last) > now - flow.reentry_period):
            return None
    key = (f"{flow.name}:{customer_id}" if flow.reentry == "once"
           else f"{flow.name}:{customer_id}:{trigger_key}")
    return conn.execute(sql.enroll, {
        "customer_id": customer_id, "flow": flow.name, "entry_key": key,
        "step": flow.steps[0].id, "now": now, "start": start_at or now,
        "context": dict(context or {})}).scalar()


class _Turn:
    """One enrollment's turn: conditions are evaluated against the database as of ``now``."""

    def __init__(self, conn: Connection, flow: Flow, enrollment: Any, customer: Any,
                 now: datetime, tz: str) -> None:
        self.conn = conn
        self.flow = flow
        self.e = enrollment
        self.customer = customer
        self.now = now
        self.tz = tz
        self.notify_offers = False

    def holds(self, condition: dict[str, Any]) -> bool:
        kind, body = next(iter(condition.items()))
        if kind == "all":
            return all(self.holds(c) for c in body)
        if kind == "any":
            return any(self.holds(c) for c in body)
        if kind == "not":
            return not self.holds(body)
        if kind == "ordered":
            return self.conn.execute(_sql(self.conn).ordered, {
                "customer_id": self.customer.id, "since": self.e.enrolled_at,
                "now": self.now}).first() is not None
        if kind in ("opened", "clicked", "replied"):
            touch = {"opened": "email_opened", "clicked": "email_clicked",
                     "replied": "replied"}[kind]
            return self.conn.execute(_sql(self.conn).touched[body is True], {
                "e_id": self.e.id, "step": body, "kind": touch, "now": self.now,
            }).first() is not None
        if kind in ("in_segment", "entered_segment"):
            return self.conn.execute(_sql(self.conn).staying[kind == "entered_segment"], {
                "customer_id": self.customer.id, "segment": body, "since": self.e.enrolled_at,
            }).first() is not None
        if kind == "attribute":
            return _compare((self.customer.attributes or {}).get(body["name"]), body["op"],
                            body.get("value"))
        raise ValueError(f"unknown condition {kind!r}")

    def goal_reached(self) -> str | None:
        if self.flow.kind == "marketing":
            reason = _suppressed(self.conn, self.customer.email, True)
            if reason is not None:
                return f"suppressed: {reason}"
            if not self.customer.marketing_consent:
                return "no marketing consent"
        for goal in self.flow.goals:
            if self.holds(goal):
                return "goal: " + ", ".join(f"{k}" for k in goal)
        return None


def _compare(value: Any, op: str, expected: Any) -> bool:
    if op == "exists":
        return value is not None
    if op == "missing":
        return value is None
    if value is None:
        return False
    if op in ("=", "!="):
        same = str(value) == str(expected)
        return same if op == "=" else not same
    try:
        left, right = float(value), float(expected)
    except (TypeError, ValueError):
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _variant(send: Send, enrollment_id: int, step_id: str) -> str:
    """A stable weighted choice: the same enrollment always gets the same variant."""
    total = sum(v.weight for v in send.variants)
    digest = hashlib.sha256(f"{enrollment_id}:{step_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in send.variants:
        if point < variant.weight:
            return variant.template
        point -= variant.weight
    return send.variants[-1].template


def _marketing_mails(conn: Connection, customer_id: int, since: datetime,
                     marketing_flows: dict[str, int]) -> int:
    if not marketing_flows:
        return 0
    return conn.execute(_sql(conn).recent_mails, {
        "customer_id": customer_id, "flows": sorted(marketing_flows), "since": since}).scalar_one()


def advance(conn: Connection, flows: dict[str, Flow], now: datetime, *, policies: Policies,
            default_tz: str, batch: int = 500, notify_offers: bool = False,
            held: frozenset[str] = frozenset()) -> TurnReport:
    """Give every due active enrollment (at most ``batch``) its turn, in ``conn``'s transaction.

    The enrollments of the flows named in ``held`` (draft or paused:
    :mod:`lifecycle.flows.states`) are left as they are, however due.
    A send step with an offer stores its code with the outbox row (:mod:`lifecycle.offers`);
    ``notify_offers`` also writes the webhook that tells the shop of it."""
    report = TurnReport()
    marketing = {name: f.priority for name, f in flows.items() if f.kind == "marketing"
                 and not f.exempt_from_cap}
    sql = _sql(conn)
    enrollments = (conn.execute(sql.due_held, {"now": now, "batch": batch,
                                               "held": sorted(held)}) if held
                   else conn.execute(sql.due, {"now": now, "batch": batch})).all()
    ids = sorted({e.customer_id for e in enrollments})
    customers = {c.id: c for chunk in range(0, len(ids), 500)  # SQLite caps bound values
                 for c in conn.execute(_sql(conn).customers, {"ids": ids[chunk:chunk + 500]})}
    for e in enrollments:
        report.advanced += 1
        flow = flows.get(e.flow)
        if flow is None:
            _finish(conn, e.id, EnrollmentStatus.FAILED, now, e.current_step,
                    error=f"the flow {e.flow!r} is not valid or no longer exists")
            report.finished["failed"] += 1
            continue
        customer = customers[e.customer_id]
        turn = _Turn(conn, flow, e, customer, now, customer.timezone or default_tz)
        turn.notify_offers = notify_offers
        _turn(conn, turn, policies, marketing, report)
    return report


def _turn(conn: Connection, t: _Turn, policies: Policies, marketing: dict[str, int],
          report: TurnReport) -> None:
    """Run steps until a wait or the end; the enrollment row is written once, at the end."""
    e, flow, now = t.e, t.flow, t.now
    context = dict(e.context or {})
    index = next((i for i, s in enumerate(flow.steps) if s.id == e.current_step), None)
    if index is None:  # the flow's file changed: its step is gone (README: How flows run)
        reason = removed_step_reason(e.current_step)
        _finish(conn, e.id, EnrollmentStatus.EXITED, now, e.current_step, reason=reason)
        report.finished[reason] += 1
        return
    for _ in range(MAX_STEPS_PER_TURN):
        step_id = flow.steps[index].id if index < len(flow.steps) else None
        if step_id is None:
            _finish(conn, e.id, EnrollmentStatus.COMPLETED, now, step_id, reason="completed")
            report.finished["completed"] += 1
            return
        reached = t.goal_reached()
        if reached is not None:
            _finish(conn, e.id, EnrollmentStatus.EXITED, now, step_id, reason=reached)
            report.finished[reached] += 1
            return
        action = flow.steps[index].action
        if isinstance(action, Wait):
            if context.get("waiting") != step_id:
                context["waiting"] = step_id
                conn.execute(_sql(conn).move, {"e_id": e.id, "step": step_id,
                                               "context": context,
                                               "next_run_at": wait_until(action, now, t.tz)})
                return
            context.pop("waiting")
            index += 1
        elif isinstance(action, Send):
            sent = _send(conn, t, step_id, action, policies, marketing)
            report.mails += sent
            report.capped += 1 - sent
            index += 1
        elif isinstance(action, Branch):
            held = t.holds(action.condition)
            watch = WATCH.get()
            if watch is not None:
                watch.branches[(flow.name, step_id, held)] += 1
            target = action.then if held else action.otherwise
            if target == "exit":
                _finish(conn, e.id, EnrollmentStatus.COMPLETED, now, step_id,
                        reason=f"branch {step_id}")
                report.finished["completed"] += 1
                return
            index = index + 1 if target == "next" else flow.step_index(target)
        elif isinstance(action, SetValue):
            attributes = dict(t.customer.attributes or {})
            attributes[action.attribute] = action.value
            conn.execute(update(Customer).where(Customer.id == t.customer.id)
                         .values(attributes=attributes, updated_at=now))
            index += 1
        elif isinstance(action, Exit):
            _finish(conn, e.id, EnrollmentStatus.COMPLETED, now, step_id, reason=action.reason)
            report.finished["completed"] += 1
            return
    _finish(conn, e.id, EnrollmentStatus.FAILED, now, e.current_step,
            error="too many steps in one turn")


def removed_step_reason(step_id: str | None) -> str:
    """Why an enrollment exits whose step a changed flow file no longer has."""
    return f"the step {step_id} was removed from the flow"


def exit_removed_steps(conn: Connection, flow: Flow, now: datetime) -> int:
    """End the active enrollments of ``flow`` that stand on a step it no longer has (its file
    changed): ``exited`` with :func:`removed_step_reason`.  Those on a step that is still
    there keep it.  How many ended."""
    e = FlowEnrollment.__table__
    ids = [s.id for s in flow.steps]
    gone = conn.execute(select(e.c.current_step).distinct().where(
        e.c.flow == flow.name, e.c.status == EnrollmentStatus.ACTIVE.value,
        e.c.current_step.not_in(ids))).scalars().all()
    ended = 0
    for step in gone:
        reason = removed_step_reason(step)
        ended += conn.execute(update(e).where(
            e.c.flow == flow.name, e.c.status == EnrollmentStatus.ACTIVE.value,
            e.c.current_step == step).values(
            status=EnrollmentStatus.EXITED.value, finished_at=now, next_run_at=None,
            exit_reason=reason)).rowcount
        log.warning("The flow %s no longer has the step %s: its enrollments there exited.",
                    flow.name, step)
    return ended


def _send(conn: Connection, t: _Turn, step_id: str, action: Send, policies: Policies,
          marketing: dict[str, int]) -> int:
    """Write the outbox row for a send step; 1 if a mail is scheduled, 0 if capped."""
    capped = (t.flow.name in marketing and _marketing_mails(
        conn, t.customer.id, t.now - policies.cap_window, marketing) >= policies.cap)
    due = policies.quiet.next_allowed(t.now, t.tz)
    if not capped and policies.one_per_day and t.flow.name in marketing:
        due = _claim_day(conn, t, due, policies, marketing)
    context = _mail_context(t, action)
    offer, code = action.offer, None
    if offer is not None and not capped:
        # The code is made once, here, and kept with the mail (the sender renders it).
        code = fresh_code(conn, offer.prefix)
        context["offer"] = issued_context(offer, code, due + offer.valid)
    values = {
        "idempotency_key": f"flow:{t.flow.name}:{t.e.id}:{step_id}",
        "customer_id": t.customer.id, "enrollment_id": t.e.id, "flow": t.flow.name,
        "step": step_id, "template": _variant(action, t.e.id, step_id),
        "variant": None if len(action.variants) == 1 else _variant(action, t.e.id, step_id),
        "to_email": t.customer.email, "due_at": due, "attempts": 0,
        "status": MessageStatus.SUPPRESSED.value if capped else MessageStatus.SCHEDULED.value,
        "last_error": "frequency cap reached" if capped else None,
        "context": context,
        "created_at": t.now, "updated_at": t.now,
    }
    message_id = conn.execute(_sql(conn).mail, values).scalar()
    if offer is not None and code is not None and message_id is not None:
        # Only with a new outbox row: the same decision replayed makes no second code.
        issue(conn, offer, code, customer=t.customer, flow=t.flow.name, step=step_id,
              message_id=message_id, expires_at=due + offer.valid, now=t.now,
              notify=t.notify_offers)
    return 0 if capped else 1


def offer_context(offer: Offer) -> dict[str, Any]:
    """A step's offer as a mail's context keeps it before a code exists (a manager's test
    send, a capped mail): the sender renders a sample code for it."""
    return spec_context(offer)


def _mail_context(t: _Turn, action: Send) -> dict[str, Any]:
    """What the sender needs later, fixed at decision time (the offer's code: :func:`_send`)."""
    marketing = t.flow.kind == "marketing"
    context: dict[str, Any] = {"order_id": (t.e.context or {}).get("order_id"),
                               "marketing": marketing,
                               # counts towards the frequency cap (re-checked at send time)
                               "capped": marketing and not t.flow.exempt_from_cap}
    if action.offer is not None:
        context["offer"] = offer_context(action.offer)
    if t.flow.utm is not None:  # the flow file's UTM choice (lifecycle.mail.utm)
        context["utm"] = t.flow.utm
    return context


#: How many days a mail can be pushed on by higher-priority flows before it goes anyway.
MAX_DAYS_PUSHED = 7


def _claim_day(conn: Connection, t: _Turn, due: datetime, policies: Policies,
               marketing: dict[str, int]) -> datetime:
    """The first local day from ``due`` on which no equal or higher priority flow mails.

    Scheduled mails of lower-priority flows on the day taken move to the next
    day (a conditional update: a mail already being sent stays where it is).
    """
    tz = zone(t.tz)
    own = marketing[t.flow.name]
    others = sorted(name for name in marketing if name != t.flow.name)
    if not others:
        return due
    sql = _sql(conn)
    for _ in range(MAX_DAYS_PUSHED):
        day = due.astimezone(tz).date()
        begins = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
        ends = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
        taken = conn.execute(sql.same_day, {"customer_id": t.customer.id, "flows": others,
                                            "begins": begins, "ends": ends}).all()
        next_morning = policies.quiet.next_allowed(ends, t.tz)
        if any(marketing[m.flow] >= own for m in taken):
            due = next_morning
            continue
        for mail in taken:
            conn.execute(sql.push, {"m_id": mail.id, "due": next_morning, "now": t.now})
        return due
    return due


def _finish(conn: Connection, enrollment_id: int, status: EnrollmentStatus, now: datetime,
            step: str | None, reason: str | None = None, error: str | None = None) -> None:
    """End an enrollment at ``step`` (the one it ended on; None past the last step)."""
    conn.execute(_sql(conn).finish, {"e_id": enrollment_id, "status": status.value, "now": now,
                                     "step": step, "reason": reason, "error": error})
