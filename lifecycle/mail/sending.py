"""Dispatch due mails to workers, and send a batch: claim, re-check, render, hand over, record.

A worker handles the ids of one broker message (at most :data:`SEND_BATCH`)
in three short transactions: claim and send-time checks; render; then the
outcomes.  The transport calls happen between the second and the third,
outside any transaction, while the rows are ``sending`` under a lease (the
crash windows are in :mod:`lifecycle.mail.outbox`); no call starts later than
``LIFECYCLE_SEND_TIMEOUT`` before that lease ends, and a mail the worker fails
before posting (Redis, the database) goes back untried rather than staying
``sending``; the commits of that bookkeeping are tried again after a database
error while the lease holds.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dramatiq
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from lifecycle.app import App
from lifecycle.clock import real_seconds
from lifecycle.db import among
from lifecycle.mail.compose import Outgoing, compose
from lifecycle.mail.context import build_context, load_facts
from lifecycle.mail.outbox import Outbox, is_test
from lifecycle.mail.rate import SendRate, send_rate_for
from lifecycle.mail.templates import Renderer, TemplateError
from lifecycle.mail.transports import SendError, Transport, transport_for
from lifecycle.models import (
    Customer,
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    MessageStatus,
    Suppression,
    email_hash,
)
from lifecycle.subscriptions import MARKETING, flow_scope
from lifecycle.timeutil import as_utc, zone

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Mails handed to the broker per dispatch.
DISPATCH_BATCH = 5000
#: Mail ids per broker message: one worker sends them in one go.
SEND_BATCH = 100
#: Why a mail of a batch was put back untried: its claim would end before an answer could come.
LEASE_ENDING = "not tried: the worker's claim on it was ending"
#: Why a claimed mail was put back untried: the worker failed before its transport call started
#: (the send rate's store, the pause after a 429, the database while rendering).
NOT_TRIED = "not tried: the worker failed before posting it"
#: Attempts before a mail the transport keeps refusing is failed for good.
MAX_ATTEMPTS = 8  # with the default base: waits of 1, 2, 4 … 64 minutes, about 2 hours in all


def dispatch(app: App, enqueue: Callable[[list[int]], Any],
             transport: Transport | None = None, *, hand_out: bool = True,
             every_queued: bool = False) -> int:
    """Settle abandoned mails, mark due mails queued, then enqueue their ids; the count.

    Ids go to the broker only after the commit: a worker never sees a row that
    is not yet queued.  Ids the broker refuses are released at once (their
    lease ends now), so the first dispatch that reaches the broker again hands
    them out, instead of their waiting out the lease.  ``hand_out`` False only
    settles (the broker is known to be down: due mails stay ``scheduled``);
    ``every_queued`` hands out every ``queued`` mail again, its lease running
    or not (the broker restarted or was unreachable, so it may have lost their
    ids; a worker that gets an id twice finds the row no longer queued).
    Whatever else is lost on the way is handed out again when its lease runs out.
    """
    now = app.clock.now()
    transport = transport or transport_for(app.settings)
    with app.engine.begin() as conn:
        outbox = Outbox(conn)
        settled = outbox.settle(now, transport, timedelta(seconds=app.settings.settle_seconds))
        ids = outbox.due(now, DISPATCH_BATCH, timedelta(seconds=app.settings.send_lease_seconds),
                         every_queued=every_queued) if hand_out else []
    if any(settled.values()):
        log.warning("Mails abandoned while sending were settled: %d queued again, %d found sent, "
                    "%d failed as unknown.", settled["requeued"], settled["sent"],
                    settled["failed"])
    for start in range(0, len(ids), SEND_BATCH):
        try:
            enqueue(ids[start:start + SEND_BATCH])
        except Exception as exc:  # noqa: BLE001 - the rows are safe in the database
            with app.engine.begin() as conn:
                Outbox(conn).release(ids[start:], now)
            log.warning("The broker did not take %d mails (%s: %s); they are handed out again "
                        "as soon as it does.", len(ids) - start, type(exc).__name__, exc)
            break
    return len(ids)


@dataclass
class _Ready:
    row: Any
    mail: Outgoing


def send_batch(app: App, message_ids: list[int], transport: Transport | None = None,
               renderer: Renderer | None = None, rate: SendRate | None = None) -> Counter[str]:
    """Send the mails ``message_ids`` that are still queued; how many ended how."""
    from lifecycle.flows.service import policies_of

    outcomes: Counter[str] = Counter()
    transport = transport or transport_for(app.settings)
    renderer = renderer or _renderer(app.settings.templates_dir, app.settings.locale)
    now = app.clock.now()
    lease = timedelta(seconds=app.settings.send_lease_seconds)
    policies = policies_of(app)
    with app.engine.begin() as conn:
        outbox = Outbox(conn)
        rows = outbox.claim(message_ids, now, lease)
        outcomes["skipped"] = len(message_ids) - len(rows)  # another worker has (or had) them
        if not rows:
            return outcomes
        customer_ids = sorted({r.customer_id for r in rows})
        customers = {c.id: c for c in conn.execute(select(Customer.__table__).where(
            among(conn, Customer.id, customer_ids)))}
        hashes = {r.id: email_hash(r.to_email) for r in rows}
        suppressed: dict[str, list[tuple[str, str]]] = {}  # hash -> (scope, reason), sorted
        for h, scope, reason in conn.execute(select(
                Suppression.email_hash, Suppression.scope, Suppression.reason)
                .where(among(conn, Suppression.email_hash, sorted(set(hashes.values()))))
                .order_by(Suppression.scope, Suppression.reason)):
            suppressed.setdefault(h, []).append((scope, reason))
        ended = dict(conn.execute(select(FlowEnrollment.id, FlowEnrollment.exit_reason).where(
            among(conn, FlowEnrollment.id, sorted({r.enrollment_id for r in rows
                                                   if r.enrollment_id})),
            FlowEnrollment.status.in_((EnrollmentStatus.EXITED.value,
                                       EnrollmentStatus.FAILED.value)))).all())
        since = now - policies.cap_window
        capped_sent = Counter(
            customer_id for customer_id, context in conn.execute(
                select(Message.customer_id, Message.context).where(
                    among(conn, Message.customer_id, customer_ids),
                    Message.status == MessageStatus.SENT.value, Message.sent_at > since))
            if (context or {}).get("capped"))
        keep = []
        for row in rows:
            context = row.context or {}
            customer = customers[row.customer_id]
            marketing = bool(context.get("marketing"))
            stops = ("all", MARKETING, flow_scope(row.flow)) if marketing else ("all",)
            why = next((reason for scope, reason in suppressed.get(hashes[row.id], ())
                        if scope in stops), None)
            if why is None and marketing and not customer.marketing_consent:
                why = "no marketing consent"
            if why is None and context.get("capped") and capped_sent[row.customer_id] >= \
                    policies.cap:
                why = f"frequency cap: {policies.cap} marketing mails already sent in the window"
            if why is not None:
                outbox.withheld(row, now, MessageStatus.SUPPRESSED, why)
                outcomes["suppressed"] += 1
                continue
            if row.enrollment_id in ended:
                outbox.withheld(row, now, MessageStatus.CANCELLED,
                                f"the flow ended: {ended[row.enrollment_id] or 'exited'}")
                outcomes["cancelled"] += 1
                continue
            tz = customer.timezone or app.settings.timezone
            # quiet hours are the customer's; a manager's test send goes to the manager now
            allowed = now if is_test(row) else policies.quiet.next_allowed(now, tz)
            if allowed > now:
                outbox.later(row, now, allowed, "quiet hours at send time", refund=True)
                outcomes["later"] += 1
                continue
            if context.get("capped"):
                capped_sent[row.customer_id] += 1
            keep.append(row)
    try:
        ready = _render(app, keep, customers, renderer, now, outcomes)
    except BaseException as exc:  # nothing was posted: the rows go back (not those failed)
        _put_back(app, keep, exc, outcomes)
        if not isinstance(exc, Exception):
            raise  # the worker stopping
        return outcomes
    _hand_over(app, ready, transport, rate, outcomes)
    return outcomes


def _render(app: App, keep: list[Any], customers: dict[int, Any], renderer: Renderer,
            now: datetime, outcomes: Counter[str]) -> list[_Ready]:
    """Render and compose the claimed mails.  A mail whose template fails, or whose own
    rendering or composing raises any other error that is not the database's, is failed for
    good with the reason: retrying cannot mend it, and it must not hold back the rest of its
    batch.  A database error goes up: the batch is put back untried (:func:`_put_back`)."""
    ready: list[_Ready] = []
    broken: list[tuple[Any, str]] = []
    with app.engine.connect() as conn:
        facts = load_facts(conn, [r.customer_id for r in keep],
                           [(r.context or {}).get("order_id") or "" for r in keep], now,
                           app.settings.currency)
        for row in keep:
            customer = customers[row.customer_id]
            tz = customer.timezone or app.settings.timezone
            context = row.context or {}
            try:
                variables = build_context(
                    conn, app.settings, customer, as_of=now, message_id=row.id, flow=row.flow,
                    step=row.step, order_external_id=context.get("order_id"),
                    offer=_offer(context), facts=facts, test=is_test(row),
                    utm=context.get("utm"))
                rendered = renderer.render(row.template, variables)
                ready.append(_Ready(row, compose(  # the link its context signed, not again
                    app.settings, row, rendered, now, now.astimezone(zone(tz)).date().isoformat(),
                    unsubscribe_url=variables["links"]["unsubscribe"])))
            except TemplateError as exc:
                broken.append((row, f"template: {exc}"))
            except SQLAlchemyError:
                raise
            except Exception as exc:  # this mail's own data: failing it frees the batch
                log.exception("Mail %d could not be rendered.", row.id)
                broken.append((row, f"rendering: {type(exc).__name__}: {exc}"))
    if broken:
        with app.engine.begin() as conn:
            outbox = Outbox(conn)
            for row, reason in broken:
                outbox.failed(row, now, reason)
                log.error("Mail %d was not sent: %s", row.id, reason)
        outcomes["failed"] += len(broken)
    return ready


def _put_back(app: App, rows: list[Any], error: BaseException, outcomes: Counter[str]) -> None:
    """Put ``rows``, claimed but not posted, back to ``scheduled``, the attempt not counted,
    because ``error`` stopped the worker before their transport calls started (outbox, crash
    window 6).  After an error of Redis (the send rate's store) they are due at once: while the
    broker is down the scheduler hands nothing out, and once it answers they go out at the next
    tick.  After any other error (the database) they are due after one retry base, jittered,
    so that a lasting fault does not spin.  Rows no longer ``sending`` are left as they are; if
    the database fails here too, it is tried again until their lease ends (:func:`_committed`),
    after which they stay ``sending`` (window 2)."""
    if not rows:
        return
    now = app.clock.now()
    reason = f"{NOT_TRIED}: {type(error).__name__}: {error}"
    due = now if isinstance(error, RedisError) else \
        now + retry_delay(app.settings.retry_base_seconds, 1)

    def put_back_once() -> int:
        with app.engine.begin() as conn:
            outbox = Outbox(conn)
            return sum(outbox.later(row, now, due, reason, refund=True) for row in rows)

    put_back = _committed(app, rows, "put back untried", put_back_once)
    outcomes["later"] += put_back
    log.warning("%d claimed mails were not sent because the worker failed before posting them "
                "(%s: %s); they are scheduled again %s, the attempt not counted.", put_back,
                type(error).__name__, error,
                "for now" if due == now else f"in {(due - now).total_seconds():.0f} seconds")


def _hand_over(app: App, ready: list[_Ready], transport: Transport, rate: SendRate | None,
               outcomes: Counter[str]) -> None:
    """Send each mail and record the outcomes (per mail for SMTP, else per batch).

    An error outside a transport call (the send rate's store in Redis, the
    pause after a 429) records what was sent and puts the mails not yet posted
    back (:func:`_put_back`); one raised by a transport call itself leaves that
    mail to be settled, as its post may have started (outbox, windows 3 and 6).
    """
    if not ready:
        return
    per_mail = not transport.idempotent and not transport.settles_by_events
    results: list[tuple[_Ready, str | SendError, datetime]] = []
    handled: set[int] = set()  # the mails whose post started (or that were put aside)
    posting: _Ready | None = None
    # The last moment a post may start: its answer (or timeout) must come while the claim holds,
    # before the scheduler may settle the rows and another worker send them (outbox, window 5).
    last_start = as_utc(ready[0].row.lease_expires_at) - timedelta(
        seconds=app.settings.send_timeout)
    try:
        if rate is None:
            rate = send_rate_for(app.settings.send_rate, dramatiq.get_broker())
        rate.wait_for_pause()
        for index, item in enumerate(ready):
            rate.take()
            if app.clock.now() > last_start:
                at = app.clock.now()
                results += [(rest, SendError(LEASE_ENDING, retry_after=0.0), at)
                            for rest in ready[index:]]
                handled.update(rest.row.id for rest in ready[index:])
                log.warning("%d mails of a batch were not sent before the worker's claim on them "
                            "neared its end (LIFECYCLE_SEND_LEASE_SECONDS); they are handed out "
                            "again.", len(ready) - index)
                break
            posting = item
            handled.add(item.row.id)
            try:
                result: str | SendError = transport.send(item.mail)
            except SendError as exc:
                result = exc
            posting = None
            results.append((item, result, app.clock.now()))
            if isinstance(result, SendError) and result.retry_after is not None:
                rest = ready[index + 1:]
                handled.update(r.row.id for r in rest)
                results += [(r, SendError("not tried: SendGrid asked us to wait",
                                          retry_after=result.retry_after), app.clock.now())
                            for r in rest]
                rate.pause(result.retry_after)  # everyone waits; the rest of the batch too
                break
            if per_mail:
                _record(app, results, outcomes)
                results = []
    except BaseException as exc:
        if posting is not None:  # raised by the transport call: its post may have started
            results.append((posting, SendError(
                f"the transport failed while sending: {type(exc).__name__}: {exc}",
                ambiguous=True), app.clock.now()))
        _record(app, results, outcomes)
        _put_back(app, [item.row for item in ready if item.row.id not in handled], exc,
                  outcomes)
        if posting is not None or not isinstance(exc, Exception):
            raise  # a fault in a transport, or the worker stopping: let it be seen
        return
    _record(app, results, outcomes)


def _committed(app: App, rows: list[Any], what: str, commit: Callable[[], _T]) -> _T:
    """``commit()``, one transaction of a batch's bookkeeping for ``rows``, run again after an
    error of the database (a restart, a lost connection, a failing statement) until the rows'
    lease ends, waiting 0.2 s, then twice as long each time up to 5 s.  What a worker did or
    did not post must not be lost to a short outage: a SendGrid mail left ``sending`` that was
    never posted waits for an event that cannot come.  Once the lease has ended the error goes
    up and the scheduler settles the rows (outbox, window 2); every transition is conditional,
    so a late commit changes only rows still ``sending``."""
    lease_end = min(as_utc(row.lease_expires_at) for row in rows)
    wait = 0.2
    while True:
        try:
            return commit()
        except DBAPIError as exc:
            left = real_seconds(app.clock, lease_end - app.clock.now())
            if left <= 0:
                raise
            log.warning("%d mails could not be recorded as %s (%s: %s); tried again in %.1f "
                        "seconds, until their lease ends in %.0f seconds.", len(rows), what,
                        type(exc).__name__, str(exc).splitlines()[0], min(wait, left), left)
            time.sleep(min(wait, left))
            wait = min(wait * 2, 5.0)


def _record(app: App, results: list[tuple[_Ready, str | SendError, datetime]],
            outcomes: Counter[str]) -> None:
    """Commit the outcomes of ``results`` (again after a database error while the lease
    holds, :func:`_committed`) and count them in ``outcomes``."""
    if not results:
        return
    counted: Counter[str] = Counter()
    _committed(app, [item.row for item, _result, _at in results], "sent or not",
               lambda: _record_once(app, results, counted))
    outcomes.update(counted)


def _record_once(app: App, results: list[tuple[_Ready, str | SendError, datetime]],
                 outcomes: Counter[str]) -> None:
    outcomes.clear()  # a rolled-back attempt counts nothing
    base = app.settings.retry_base_seconds
    with app.engine.begin() as conn:
        outbox = Outbox(conn)
        done = [(item.row, at, result, item.mail) for item, result, at in results
                if isinstance(result, str)]
        outcomes["sent"] += outbox.sent(done)
        for item, result, at in results:
            row = item.row
            if isinstance(result, str):
                continue
            if result.ambiguous:
                outbox.unanswered(row, at, result.reason)
                outcomes["unanswered"] += 1
                log.warning("Mail %d got no answer (%s); it is settled when its lease ends.",
                            row.id, result.reason)
            elif result.retry_after is not None:
                outbox.later(row, at, at + timedelta(seconds=result.retry_after),
                             result.reason, refund=True)
                outcomes["later"] += 1
            elif result.permanent or row.attempts >= MAX_ATTEMPTS:
                outbox.failed(row, at, result.reason)
                outcomes["failed"] += 1
                log.error("Mail %d failed for good after %d attempts: %s", row.id,
                          row.attempts, result.reason)
            else:
                delay = retry_delay(base, row.attempts)
                outbox.later(row, at, at + delay, result.reason)
                outcomes["later"] += 1
                log.warning("Mail %d was not taken (%s); it is tried again in %s.", row.id,
                            result.reason, delay)


def retry_delay(base_seconds: float, attempt: int) -> timedelta:
    """Exponential backoff with jitter: base x 2^(attempt-1), times 0.5 to 1.5."""
    return timedelta(seconds=base_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


def send_one(app: App, message_id: int, transport: Transport | None = None,
             renderer: Renderer | None = None) -> str:
    """Send one mail; what happened, in one word (a batch of one)."""
    outcomes = send_batch(app, [message_id], transport, renderer)
    return next((k for k, v in outcomes.items() if v), "skipped")


@functools.lru_cache(maxsize=8)
def _renderer(folder: Path, default_locale: str) -> Renderer:
    """One sandbox per templates folder and shop default locale (it reloads a template whose
    file changed)."""
    return Renderer(folder, default_locale)


def _offer(context: dict[str, Any]) -> dict[str, Any] | None:
    """The mail's offer as its outbox row keeps it (the code made at decision time)."""
    return context.get("offer") or None
