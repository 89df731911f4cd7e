"""Dispatch due mails to workers, and send one mail: claim, re-check, render, hand over, record."""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import select

from lifecycle.app import App
from lifecycle.flows.definitions import Offer
from lifecycle.flows.engine import _suppressed
from lifecycle.mail.compose import compose
from lifecycle.mail.context import build_context
from lifecycle.mail.outbox import Outbox
from lifecycle.mail.templates import Renderer, TemplateError
from lifecycle.mail.transports import Transport, transport_for
from lifecycle.models import Customer, EnrollmentStatus, FlowEnrollment, Message, MessageStatus
from lifecycle.timeutil import zone

log = logging.getLogger(__name__)

#: Mails handed to the broker per dispatch.
DISPATCH_BATCH = 1000
#: Attempts before a mail the transport keeps refusing is failed for good.
MAX_ATTEMPTS = 5
#: The first retry waits this long; each next one twice as long.
RETRY_BASE = timedelta(minutes=1)


def dispatch(app: App, enqueue: Any, transport: Transport | None = None) -> int:
    """Mark due mails queued (one transaction), then enqueue their ids; the count.

    Ids go to the broker only after the commit: a worker never sees a row that
    is not yet queued.  Whatever is lost on the way is handed out again when
    its lease runs out.
    """
    now = app.clock.now()
    transport = transport or transport_for(app.settings)
    with app.engine.begin() as conn:
        outbox = Outbox(conn)
        recovered = outbox.recover(now, transport.idempotent)
        ids = outbox.due(now, DISPATCH_BATCH)
    if recovered:
        log.warning("%d mails were abandoned while sending and are queued again.", recovered)
    for message_id in ids:
        enqueue(message_id)
    return len(ids)


def send_one(app: App, message_id: int, transport: Transport | None = None,
             renderer: Renderer | None = None) -> str:
    """Send mail ``message_id`` if it is still queued; what happened, in one word."""
    from lifecycle.flows.service import policies_of

    now = app.clock.now()
    with app.engine.begin() as conn:
        if not Outbox(conn).claim(message_id, now):
            return "skipped"  # another worker has it, or it is done
    with app.engine.begin() as conn:
        outbox = Outbox(conn)
        message = conn.execute(select(Message.__table__).where(Message.id == message_id)).one()
        customer = conn.execute(select(Customer.__table__)
                                .where(Customer.id == message.customer_id)).one()
        context = dict(message.context or {})
        marketing = bool(context.get("marketing"))
        reason = _suppressed(conn, message.to_email, marketing)
        if reason is None and marketing and not customer.marketing_consent:
            reason = "no marketing consent"
        if reason is not None:
            outbox.withheld(message_id, now, MessageStatus.SUPPRESSED, reason)
            return "suppressed"
        if message.enrollment_id is not None:
            status, exit_reason = conn.execute(select(
                FlowEnrollment.status, FlowEnrollment.exit_reason)
                .where(FlowEnrollment.id == message.enrollment_id)).one()
            if status in (EnrollmentStatus.EXITED.value, EnrollmentStatus.FAILED.value):
                outbox.withheld(message_id, now, MessageStatus.CANCELLED,
                                f"the flow ended: {exit_reason or status}")
                return "cancelled"
        tz = customer.timezone or app.settings.timezone
        allowed = policies_of(app).quiet.next_allowed(now, tz)
        if allowed > now:
            outbox.later(message_id, now, allowed, "quiet hours at send time")
            return "later"
        try:
            rendered = (renderer or _renderer(app.settings.templates_dir)).render(
                message.template, build_context(
                    conn, app.settings, customer, as_of=now, message_id=message.id,
                    flow=message.flow, step=message.step,
                    order_external_id=context.get("order_id"), offer=_offer(context)))
        except TemplateError as exc:
            outbox.failed(message_id, now, f"template: {exc}")
            outbox.touch(message, "email_failed", now, reason=f"template: {exc}")
            log.error("Mail %d was not sent: %s", message_id, exc)
            return "failed"
        mail = compose(app.settings, message, rendered, now,
                       now.astimezone(zone(tz)).date().isoformat())
    # The transport call is outside any transaction: the row is ours while it is
    # `sending` (lease), and a crash here is the window the outbox documents.
    try:
        provider_id = (transport or transport_for(app.settings)).send(message_id, mail)
    except Exception as exc:  # the transport says it did not take the mail
        with app.engine.begin() as conn:
            outbox = Outbox(conn)
            why = f"{type(exc).__name__}: {exc}"
            if message.attempts >= MAX_ATTEMPTS:  # the claim counted this attempt
                outbox.failed(message_id, now, why)
                outbox.touch(message, "email_failed", now, reason=why)
                log.error("Mail %d failed for good after %d attempts: %s", message_id,
                          message.attempts, why)
                return "failed"
            delay = RETRY_BASE * 2 ** (message.attempts - 1)
            outbox.later(message_id, now, now + delay, why)
            log.warning("Mail %d was not taken (%s); it is tried again in %s.", message_id, why,
                        delay)
            return "later"
    with app.engine.begin() as conn:
        outbox = Outbox(conn)
        if outbox.sent(message_id, now, provider_id):
            outbox.touch(message, "email_sent", now, provider_message_id=provider_id,
                         subject=rendered.subject)
    return "sent"


@functools.lru_cache(maxsize=8)
def _renderer(folder: Path) -> Renderer:
    """One sandbox per templates folder (Jinja reloads a template whose file changed)."""
    return Renderer(folder)


def _offer(context: dict[str, Any]) -> Offer | None:
    offer = context.get("offer")
    if not offer:
        return None
    return Offer(int(offer["percent"]), relativedelta(**offer["valid"]), str(offer["prefix"]))
