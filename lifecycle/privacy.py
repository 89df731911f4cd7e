"""A customer's data: everything we hold (export), and erasure.

:func:`export` gathers every row about one customer — profile, orders,
mails, timeline, segment stays, flow enrollments, the provider's events for
their mails and address, the suppressions of their address and their stored
prediction — as plain
JSON-ready data.

:func:`erase` removes the personal data and keeps what the shop's figures
need, anonymised:

* the customer row stays (orders point at it) with its id replaced by
  ``erased:<row id>``, no email, no names, no attributes, no consent;
* orders stay for revenue and segment figures (amounts, dates, products);
* mails keep their flow, step, status and times; the address becomes
  ``erased@invalid`` and scheduled mails are cancelled; the kept copies of
  sent mails (``message_contents``) are deleted; flows are exited;
* timeline entries keep their kind and time; their data is replaced by
  ``{"erased": true}`` (plus an NPS score, which is not personal);
* provider events lose the address and their payload;
* NPS votes still held (seconds old: :mod:`lifecycle.feedback`) are deleted;
* offer codes stay (the shop's redemption figures), with no more than the customer's row id;
  the webhooks about them lose their body, and those not yet delivered are not sent;
* the address itself is kept only as its SHA-256 in ``suppressions`` (scope
  ``all``, reason ``erased``), so the person is never mailed again, even if
  the shop imports them anew.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from lifecycle.mail.events import ERASED_ADDRESS
from lifecycle.models import (
    Customer,
    CustomerPrediction,
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    MessageContent,
    MessageStatus,
    NpsVote,
    OfferCode,
    OfferWebhook,
    Order,
    ProviderEvent,
    SegmentMembership,
    Suppression,
    SuppressionReason,
    Touchpoint,
    email_hash,
)

#: Mails not yet out when the customer is erased: they never go.
#: The customer_id an erased customer keeps (followed by the row id): a shell, not a person.
ERASED_PREFIX = "erased:"
UNSENT = (MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value,
          MessageStatus.PAUSED.value)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [_plain(dict(row._mapping)) for row in conn.execute(query)]


def find_customer(conn: Connection, key: str) -> Any | None:
    """The customer whose shop id (``customer_id``), row id or email is ``key``."""
    table = Customer.__table__
    found = conn.execute(select(table).where(table.c.external_id == key)).first()
    if found is None and key.isdigit():
        found = conn.execute(select(table).where(table.c.id == int(key))).first()
    if found is None and "@" in key:
        found = conn.execute(select(table).where(table.c.email == key.strip().lower())).first()
    return found


def _held(conn: Connection, customer: Any) -> tuple[set[str], list[Any]]:
    """The customer's addresses (profile and every mail's), and the conditions that find the
    provider's events about their mails or addresses (none: nothing to find)."""
    mails = Message.__table__
    message_ids: list[int] = []
    addresses = {customer.email} if customer.email else set()
    for mid, address in conn.execute(select(mails.c.id, mails.c.to_email).where(
            mails.c.customer_id == customer.id)):
        message_ids.append(mid)
        if address and address != ERASED_ADDRESS:
            addresses.add(address)
    events = ProviderEvent.__table__
    about = [events.c.message_id.in_(message_ids)] if message_ids else []
    about += [events.c.email.in_(addresses)] if addresses else []
    return addresses, about


def _mail_ids(cid: int) -> Any:
    return select(Message.id).where(Message.customer_id == cid).scalar_subquery()


def export(conn: Connection, customer: Any) -> dict[str, Any]:
    """Everything held about ``customer`` (a customers row), JSON-ready."""
    cid = customer.id
    mails = Message.__table__
    addresses, about = _held(conn, customer)
    events = ProviderEvent.__table__
    hashes = {email_hash(a) for a in addresses}
    return {
        "customer": _plain(dict(customer._mapping)),
        "orders": _rows(conn, select(Order.__table__).where(Order.customer_id == cid)
                        .order_by(Order.ordered_at)),
        "mails": _rows(conn, select(mails).where(mails.c.customer_id == cid)
                       .order_by(mails.c.id)),
        "mail_contents": _rows(conn, select(MessageContent.__table__).where(
            MessageContent.message_id.in_(_mail_ids(cid))).order_by(MessageContent.message_id)),
        "timeline": _rows(conn, select(Touchpoint.__table__).where(
            Touchpoint.customer_id == cid).order_by(Touchpoint.occurred_at, Touchpoint.id)),
        "nps_votes_held": _rows(conn, select(NpsVote.__table__).where(
            NpsVote.customer_id == cid).order_by(NpsVote.id)),
        "segments": _rows(conn, select(SegmentMembership.__table__).where(
            SegmentMembership.customer_id == cid).order_by(SegmentMembership.entered_at)),
        "flows": _rows(conn, select(FlowEnrollment.__table__).where(
            FlowEnrollment.customer_id == cid).order_by(FlowEnrollment.enrolled_at)),
        "provider_events": _rows(conn, select(events).where(or_(*about)).order_by(
            events.c.occurred_at)) if about else [],
        "suppressions": _rows(conn, select(Suppression.__table__).where(
            Suppression.email_hash.in_(hashes))) if hashes else [],
        "offers": _rows(conn, select(OfferCode.__table__).where(
            OfferCode.customer_id == cid).order_by(OfferCode.id)),
        "predictions": _rows(conn, select(CustomerPrediction.__table__).where(
            CustomerPrediction.customer_id == cid)),
    }


def erase(conn: Connection, customer: Any, now: datetime) -> dict[str, int]:
    """Remove ``customer``'s personal data (see the module doc); counts of what changed."""
    cid = customer.id
    addresses, about = _held(conn, customer)
    counts: dict[str, int] = {}
    for address in sorted(addresses):
        address_hash = email_hash(address)
        conn.execute(update(Suppression).where(Suppression.email_hash == address_hash)
                     .values(email=None))
        conn.execute(delete(Suppression).where(Suppression.email_hash == address_hash,
                                               Suppression.scope == "all"))
        conn.execute(insert(Suppression).values(
            email_hash=address_hash, email=None, scope="all",
            reason=SuppressionReason.ERASED.value, source="erasure", created_at=now))
    counts["addresses"] = len(addresses)
    counts["mails_cancelled"] = conn.execute(update(Message).where(
        Message.customer_id == cid, Message.status.in_(UNSENT)).values(
        status=MessageStatus.CANCELLED.value, last_error="the customer was erased",
        updated_at=now)).rowcount
    counts["mail_contents"] = conn.execute(delete(MessageContent).where(
        MessageContent.message_id.in_(_mail_ids(cid)))).rowcount
    counts["mails"] = conn.execute(update(Message).where(Message.customer_id == cid).values(
        to_email=ERASED_ADDRESS, context={}, updated_at=now)).rowcount
    counts["flows_exited"] = conn.execute(update(FlowEnrollment).where(
        FlowEnrollment.customer_id == cid,
        FlowEnrollment.status == EnrollmentStatus.ACTIVE.value).values(
        status=EnrollmentStatus.EXITED.value, exit_reason="erased", finished_at=now,
        next_run_at=None, context={})).rowcount
    counts["nps_votes_held"] = conn.execute(delete(NpsVote).where(
        NpsVote.customer_id == cid)).rowcount  # a comment and a browser: theirs
    touched = 0
    for tid, kind, data in conn.execute(select(Touchpoint.id, Touchpoint.kind, Touchpoint.data)
                                        .where(Touchpoint.customer_id == cid)).all():
        kept: dict[str, Any] = {"erased": True}
        if kind == "feedback" and isinstance((data or {}).get("score"), int):
            kept["score"] = data["score"]
        if kind in ("segment_entered", "segment_exited") and (data or {}).get("segment"):
            kept["segment"] = data["segment"]
        conn.execute(update(Touchpoint).where(Touchpoint.id == tid).values(data=kept))
        touched += 1
    counts["timeline"] = touched
    events = ProviderEvent.__table__
    counts["provider_events"] = conn.execute(update(events).where(or_(*about)).values(
        email=None, data={"erased": True})).rowcount if about else 0
    hooks, theirs = OfferWebhook.__table__, select(OfferCode.id).where(
        OfferCode.customer_id == cid).scalar_subquery()
    conn.execute(update(hooks).where(hooks.c.offer_id.in_(theirs), hooks.c.status == "pending")
                 .values(status="failed", failed_at=now, last_error="the customer was erased"))
    counts["offer_webhooks"] = conn.execute(update(hooks).where(hooks.c.offer_id.in_(theirs))
                                            .values(payload={"erased": True})).rowcount
    conn.execute(update(Customer).where(Customer.id == cid).values(
        external_id=f"{ERASED_PREFIX}{cid}", email=None, first_name=None, last_name=None,
        attributes={}, marketing_consent=False, locale=None, updated_at=now))
    return counts
