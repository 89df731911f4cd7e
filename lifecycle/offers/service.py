"""Offer codes: made once at the engine's decision, stored, listed, redeemed by orders.

**Codes.** :func:`new_code` draws 8 characters from :data:`ALPHABET` (no ``0 O 1 I L U``:
nothing a customer can misread or mistype) with :mod:`secrets`, in two groups after the
step's prefix: ``BACK10-7KQ2-M9XD`` (29^8, about 5 * 10^11 codes per prefix).  A code is
random and stored, not derived from a key: rotating ``LIFECYCLE_SECRET_KEY`` changes none.

**Issuing.** :func:`issue` writes the ``offers`` row (and, when the shop is to be told, its
``offer_webhooks`` row) in the transaction of the engine that writes the mail's outbox row,
and only when that row was new: the same decision replayed (the outbox's idempotency key)
writes nothing, so it cannot make a second code.  A mail withheld at decision time (the
frequency cap) gets no code.  Test sends and previews render a sample code and store none.

**Redeeming.** :func:`redeem` takes the orders that arrived (API or import) with their
``discount_codes``: each code that matches an offer of the ordering customer not yet redeemed
is marked redeemed by that order (the first order wins; the same order posted again changes
nothing), and an ``offer_redeemed`` touchpoint goes on the customer's timeline (once per
redemption).  A code used after its expiry is still recorded, with ``late`` in the touchpoint:
the shop accepted it, so it was redeemed; whether late use is allowed is the shop's decision,
and the figure shows how often it happens.  Unknown codes (the shop's own, typos) are ignored,
counted and logged; so is a code a second order uses, and a code another customer's order
uses (``not_theirs``: a code passed on, say on a coupon site, credits no mail and does not use
up the owner's code).  Only completed and pending orders redeem.  :func:`undo` takes back the
redemptions of orders that arrive cancelled or refunded (a pending order later cancelled used
nothing): the offer is open again and an ``offer_redemption_undone`` touchpoint goes on the
timeline.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from lifecycle.flows.definitions import Offer
from lifecycle.models import Customer, Message, Touchpoint
from lifecycle.offers.model import OfferCode, OfferWebhook, WebhookStatus
from lifecycle.timeutil import as_utc

log = logging.getLogger(__name__)

#: The characters of a code: capitals and digits a person cannot confuse (no 0/O, 1/I/L, U/V).
ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
GROUPS, GROUP_LENGTH = 2, 4
#: What an offer webhook announces.
CREATED = "offer.created"
#: The kind of the timeline entry of a redeemed code.
REDEEMED_KIND = "offer_redeemed"
#: The kind of the timeline entry of a redemption taken back (its order cancelled or refunded).
UNDONE_KIND = "offer_redemption_undone"
#: Order statuses that take back the order's redemptions.
UNDOING_STATUSES = ("cancelled", "refunded")
#: Order statuses whose codes count as used.
REDEEMING_STATUSES = ("completed", "pending")
#: Most codes one order may carry.
MAX_CODES_PER_ORDER = 20
MAX_CODE_LENGTH = 40

_offers = OfferCode.__table__
_hooks = OfferWebhook.__table__


def new_code(prefix: str) -> str:
    """A random, readable code with ``prefix``: ``BACK10-7KQ2-M9XD``."""
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH))
              for _ in range(GROUPS))
    return "-".join((prefix, *groups))


def fresh_code(conn: Connection, prefix: str) -> str:
    """:func:`new_code`, drawn again in the (astronomically rare) case it is already stored."""
    while True:
        code = new_code(prefix)
        if conn.execute(select(_offers.c.id).where(_offers.c.code == code)).first() is None:
            return code


def sample_code(prefix: str) -> str:
    """The code a test send or a preview shows: plainly not a real one, never stored."""
    return f"{prefix}-TEST-CODE"


def normalise_code(raw: str) -> str:
    """A code as typed at a checkout, as stored: trimmed, in capitals."""
    return raw.strip().upper()


def _value(offer: Offer) -> Decimal | None:
    if offer.kind == "percent":
        return Decimal(offer.percent or 0)
    if offer.kind == "fixed":
        return offer.amount
    return None


def spec_context(offer: Offer) -> dict[str, Any]:
    """A step's offer as a mail's context keeps it before a code exists (a test send)."""
    valid = offer.valid
    return {"kind": offer.kind, "value": offer.value, "currency": offer.currency,
            "percent": offer.percent, "prefix": offer.prefix,
            "valid": {"years": valid.years, "months": valid.months, "days": valid.days}}


def issued_context(offer: Offer, code: str, expires_at: datetime) -> dict[str, Any]:
    """What a mail's outbox context keeps of its stored offer (the sender renders from it)."""
    return {"code": code, "kind": offer.kind, "value": offer.value, "currency": offer.currency,
            "percent": offer.percent, "prefix": offer.prefix,
            "expires_at": as_utc(expires_at).isoformat()}


@dataclass(frozen=True)
class Issued:
    offer_id: int
    code: str


def issue(conn: Connection, offer: Offer, code: str, *, customer: Any, flow: str | None,
          step: str | None, message_id: int, expires_at: datetime, now: datetime,
          notify: bool) -> Issued:
    """Store ``code`` for the mail ``message_id`` (just written in ``conn``'s transaction) and,
    with ``notify``, the webhook that tells the shop."""
    offer_id = conn.execute(insert(_offers).values(
        code=code, customer_id=customer.id, flow=flow, step=step, message_id=message_id,
        kind=offer.kind, value=_value(offer), currency=offer.currency, expires_at=expires_at,
        created_at=now).returning(_offers.c.id)).scalar_one()
    if notify:
        conn.execute(insert(_hooks).values(**_created_hook(
            offer_id, offer, code, expires_at, now, {"flow": flow, "step": step},
            customer.external_id, customer.email)))
    return Issued(offer_id, code)


def _created_hook(offer_id: int, offer: Offer, code: str, expires_at: datetime, now: datetime,
                  source: dict[str, Any], customer_id: str, email: str | None
                  ) -> dict[str, Any]:
    """The ``offer_webhooks`` row that tells the shop of a new code (``source``: where it
    came from — its flow and step, or its campaign)."""
    from lifecycle.offers.webhooks import payload

    return {"offer_id": offer_id, "event": CREATED, "webhook_id": webhook_id(offer_id),
            "payload": payload(CREATED, now, {
                "code": code, "kind": offer.kind, "value": offer.value,
                "currency": offer.currency, "expires_at": as_utc(expires_at).isoformat(),
                "created_at": as_utc(now).isoformat(), **source,
                "customer": {"id": customer_id, "email": email}}),
            "status": WebhookStatus.PENDING.value, "attempts": 0, "next_attempt_at": now,
            "created_at": now}


def issue_many(conn: Connection, offer: Offer, mails: Sequence[Any], *, campaign: str,
               now: datetime, notify: bool) -> int:
    """Codes for many mails of a campaign at once (``mails``: rows with ``id``,
    ``customer_id``, ``due_at``, ``context``, ``external_id``, ``email``), as :func:`issue`
    does for one: each stored (a code drawn again if taken), put into its mail's context,
    and with ``notify`` announced to the shop.  A few statements per thousand mails; how
    many were issued."""
    from lifecycle.db import insert_new

    issued = 0
    for start in range(0, len(mails), 1000):
        pending = {m.id: m for m in mails[start:start + 1000]}
        stored: dict[int, str] = {}  # mail id -> its code
        while pending:  # a code another offer holds (hardly ever) is drawn again
            rows = [{"code": new_code(offer.prefix), "customer_id": m.customer_id, "flow": None,
                     "step": None, "message_id": m.id, "kind": offer.kind,
                     "value": _value(offer), "currency": offer.currency,
                     "expires_at": as_utc(m.due_at) + offer.valid, "created_at": now}
                    for m in pending.values()]
            taken = {r["code"]: r for r in rows}
            for code in insert_new(conn, _offers, rows, ("code",), returning="code"):
                row = taken[code]
                stored[row["message_id"]] = code
                pending.pop(row["message_id"])
        ids = dict(conn.execute(select(_offers.c.message_id, _offers.c.id).where(
            _offers.c.message_id.in_(list(stored)))).all())
        update_context = update(Message).where(
            Message.id == bindparam("m_id")).values(context=bindparam("context"))
        by_id = {m.id: m for m in mails[start:start + 1000]}
        conn.execute(update_context, [
            {"m_id": mid, "context": {**(by_id[mid].context or {}), "offer": issued_context(
                offer, code, as_utc(by_id[mid].due_at) + offer.valid)}}
            for mid, code in stored.items()])
        if notify:
            insert_new(conn, _hooks, [_created_hook(
                ids[mid], offer, code, as_utc(by_id[mid].due_at) + offer.valid, now,
                {"flow": None, "step": None, "campaign": campaign}, by_id[mid].external_id,
                by_id[mid].email) for mid, code in stored.items()], ("webhook_id",))
        issued += len(stored)
    return issued


def webhook_id(offer_id: int) -> str:
    """The ``webhook-id`` of an offer's ``offer.created`` post: the same on every attempt."""
    return "msg_" + base64.b32encode(f"offer.created:{offer_id}".encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- redeeming


@dataclass
class Redemptions:
    """What the discount codes of some orders did."""

    redeemed: int = 0
    #: Of ``redeemed``: used after the offer expired (recorded all the same).
    late: int = 0
    #: Codes we never handed out (the shop's own, typos): ignored.
    unknown: int = 0
    #: Codes another order had redeemed first: ignored.
    taken: int = 0
    #: Codes handed to another customer than the one ordering: ignored (nothing credited).
    not_theirs: int = 0
    #: Redemptions taken back because their order arrived cancelled or refunded.
    undone: int = 0
    unknown_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CodedOrder:
    order_id: str  # the shop's order id
    customer_id: int  # our customer row
    ordered_at: datetime
    status: str
    codes: Sequence[str]


def redeem(conn: Connection, orders: Iterable[CodedOrder], now: datetime,
           channel: str) -> Redemptions:
    """Mark the codes of ``orders`` redeemed (module doc), in ``conn``'s transaction."""
    report = Redemptions()
    # One order for every caller: two transactions redeeming the same codes lock them in turn.
    wanted = sorted(((normalise_code(code), o) for o in orders
                     if o.status in REDEEMING_STATUSES for code in o.codes if code.strip()),
                    key=lambda pair: (pair[0], as_utc(pair[1].ordered_at), pair[1].order_id))
    seen: set[str] = set()
    for code, order in wanted:
        if code in seen:
            continue
        seen.add(code)
        at = as_utc(order.ordered_at)
        row = conn.execute(update(_offers).where(
            _offers.c.code == code, _offers.c.customer_id == order.customer_id,
            _offers.c.redeemed_at.is_(None), _offers.c.created_at <= at).values(
            redeemed_at=at, redeemed_order_id=order.order_id).returning(
            _offers.c.id, _offers.c.flow, _offers.c.step, _offers.c.message_id,
            _offers.c.kind, _offers.c.value, _offers.c.currency, _offers.c.expires_at)).first()
        if row is None:
            holder = conn.execute(select(_offers.c.redeemed_order_id, _offers.c.customer_id)
                                  .where(_offers.c.code == code)).first()
            if holder is None:
                report.unknown += 1
                report.unknown_codes.append(code)
            elif holder.customer_id != order.customer_id:
                report.not_theirs += 1
                log.warning("Order %s used the code %s, which a mail handed to another "
                            "customer; it redeems nothing.", order.order_id, code)
            elif holder.redeemed_order_id is None:  # the order is older than the code
                report.unknown += 1
                report.unknown_codes.append(code)
                log.warning("Order %s, placed %s, used the code %s before a mail handed it out; "
                            "it redeems nothing.", order.order_id, at.isoformat(), code)
            elif holder.redeemed_order_id != order.order_id:
                report.taken += 1
                log.info("Order %s used the code %s, which order %s redeemed first; the first "
                         "order keeps it.", order.order_id, code, holder.redeemed_order_id)
            continue
        late = at > as_utc(row.expires_at)
        report.redeemed += 1
        report.late += late
        conn.execute(insert(Touchpoint.__table__).values(
            customer_id=order.customer_id, kind=REDEEMED_KIND, channel=channel, occurred_at=at,
            recorded_at=now, message_id=row.message_id, source_key=_redeemed_key(code),
            data={"code": code, "order_id": order.order_id, "flow": row.flow, "step": row.step,
                  "kind": row.kind, "value": _text(row.value, row.kind),
                  "currency": row.currency, "late": late}))
    if report.unknown:
        log.warning("%d discount code(s) of incoming orders are not offers Lifecycle handed "
                    "out and were ignored: %s", report.unknown,
                    ", ".join(report.unknown_codes[:10])
                    + (" …" if len(report.unknown_codes) > 10 else ""))
    return report


def _redeemed_key(code: str) -> str:
    """The source key of a code's current ``offer_redeemed`` entry (:func:`undo` renames it,
    so a later order may redeem the code again)."""
    return f"{REDEEMED_KIND}:{code}"


def undo(conn: Connection, order_ids: Iterable[str], now: datetime, channel: str) -> int:
    """Take back the redemptions of the orders ``order_ids`` (they arrived cancelled or
    refunded): each offer is open again, and its owner's timeline gets an
    ``offer_redemption_undone`` entry; how many."""
    wanted = sorted(set(order_ids))
    undone = 0
    for start in range(0, len(wanted), 500):
        rows = conn.execute(update(_offers).where(
            _offers.c.redeemed_order_id.in_(wanted[start:start + 500])).values(
            redeemed_at=None, redeemed_order_id=None).returning(
            _offers.c.code, _offers.c.customer_id, _offers.c.message_id, _offers.c.flow,
            _offers.c.step, _offers.c.kind, _offers.c.value, _offers.c.currency)).all()
        # the returning clause names no old values: the order id is read off the entry
        tps = Touchpoint.__table__
        for row in sorted(rows, key=lambda r: r.code):
            entry = conn.execute(select(tps.c.id, tps.c.data).where(
                tps.c.source_key == _redeemed_key(row.code))).first()
            order_id = entry.data.get("order_id") if entry is not None else None
            if entry is not None:
                conn.execute(update(tps).where(tps.c.id == entry.id).values(
                    source_key=f"{REDEEMED_KIND}:{row.code}:undone:{entry.id}"))
            conn.execute(insert(tps).values(
                customer_id=row.customer_id, kind=UNDONE_KIND, channel=channel,
                occurred_at=now, recorded_at=now, message_id=row.message_id,
                source_key=f"{UNDONE_KIND}:{row.code}:{entry.id if entry else now.isoformat()}",
                data={"code": row.code, "order_id": order_id, "flow": row.flow,
                      "step": row.step, "kind": row.kind, "value": _text(row.value, row.kind),
                      "currency": row.currency}))
            undone += 1
    if undone:
        log.info("%d offer redemption(s) taken back: their orders were cancelled or refunded.",
                 undone)
    return undone


def _text(value: Any, kind: str) -> str | None:
    """A stored value as the API writes it: ``15`` (percent), ``5.00`` (fixed), None."""
    if value is None:
        return None
    amount = Decimal(str(value))
    return str(int(amount)) if kind == "percent" else f"{amount:.2f}"


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Filters:
    redeemed: bool | None = None
    flow: str | None = None
    since: datetime | None = None  # created at or after


def listing(conn: Connection, filters: Filters, *, after: int = 0,
            limit: int = 100) -> list[dict[str, Any]]:
    """Up to ``limit`` offers with ids above ``after`` (keyset pages in the order they were
    made), as the API and the export write them."""
    c, m = Customer.__table__, Message.__table__
    query = (select(_offers, c.c.external_id.label("customer"), c.c.email, m.c.status)
             .join(c, c.c.id == _offers.c.customer_id)
             .outerjoin(m, m.c.id == _offers.c.message_id)
             .where(_offers.c.id > after).order_by(_offers.c.id).limit(limit))
    if filters.redeemed is not None:
        query = query.where(_offers.c.redeemed_at.is_not(None) if filters.redeemed
                            else _offers.c.redeemed_at.is_(None))
    if filters.flow:
        query = query.where(_offers.c.flow == filters.flow)
    if filters.since is not None:
        query = query.where(_offers.c.created_at >= filters.since)
    return [as_record(row) for row in conn.execute(query)]


#: The fields of an offer in the API and the export, in this order.
FIELDS = ("id", "code", "kind", "value", "currency", "customer_id", "email", "flow", "step",
          "message_id", "mail_status", "expires_at", "created_at", "redeemed_at",
          "redeemed_order_id")


def as_record(row: Any) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return as_utc(value).isoformat() if value is not None else None

    return {"id": row.id, "code": row.code, "kind": row.kind,
            "value": _text(row.value, row.kind), "currency": row.currency,
            "customer_id": row.customer, "email": row.email, "flow": row.flow,
            "step": row.step, "message_id": row.message_id, "mail_status": row.status,
            "expires_at": moment(row.expires_at), "created_at": moment(row.created_at),
            "redeemed_at": moment(row.redeemed_at), "redeemed_order_id": row.redeemed_order_id}

