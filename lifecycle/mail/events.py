"""Provider events in: stored once each, matched to our mail, applied to the timeline.

SendGrid's Event Webhook posts batches of events and retries a batch for a
day, so duplicates are normal: every event is stored once in
``provider_events``, deduplicated on ``sg_event_id``, and only events stored
*now* are applied — a duplicate changes nothing.  An event is matched to our
mail through the ``lifecycle_message_id`` of the ``custom_args`` we sent
(SendGrid returns them at the top level of each event); events for mail we do
not know are kept, unmatched, and reach no timeline.

Applying an event:

* a touchpoint on the mail's customer's timeline (:data:`KINDS`); an open
  that Apple Mail Privacy Protection made (``sg_machine_open``) is kept apart
  from human opens as ``email_machine_opened``.  A manager's test send gets
  none: it is not the customer's mail (its events are stored all the same,
  and settle it);
* a suppression, at once, for a hard bounce, a spam report or an
  unsubscribe, and for a mail SendGrid dropped because the address is on one
  of those lists of its own (:func:`_suppression_of`) — whether or not the
  mail is ours: an address that bounced does not come back to life;
* a group resubscribe lifts the suppression its group unsubscribe made — only
  if that unsubscribe is older: events arrive out of order, so a late
  unsubscribe that is older than a resubscribe already seen is not applied.

Stored events also settle mails whose send outcome we missed
(:mod:`lifecycle.mail.outbox`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from lifecycle.db import insert_new
from lifecycle.mail.compose import ARG_PREFIX
from lifecycle.mail.outbox import is_test
from lifecycle.models import (
    Message,
    ProviderEvent,
    Suppression,
    SuppressionReason,
    Touchpoint,
    email_hash,
)
from lifecycle.timeline import MAX_ROW_ID

MESSAGE_ARG = ARG_PREFIX + "message_id"
#: Which post of the mail (``messages.attempts`` when it was claimed) the event is about.
ATTEMPT_ARG = ARG_PREFIX + "attempt"
#: The largest attempt number kept (an INTEGER column); a larger one is not ours.
MAX_ATTEMPT = 2**31 - 1
#: The address of every mail of an erased customer: their events reach no timeline.
ERASED_ADDRESS = "erased@invalid"

#: SendGrid event -> touchpoint kind (``bounce`` covers ``type`` bounce and blocked).
KINDS = {
    "processed": "email_processed",
    "delivered": "email_delivered",
    "deferred": "email_deferred",
    "dropped": "email_dropped",
    "bounce": "email_bounced",
    "open": "email_opened",
    "click": "email_clicked",
    "spamreport": "email_spam_report",
    "unsubscribe": "email_unsubscribed",
    "group_unsubscribe": "email_group_unsubscribed",
    "group_resubscribe": "email_group_resubscribed",
}
MACHINE_OPEN = "email_machine_opened"
#: Event fields worth keeping on the timeline entry (the whole event stays in provider_events).
KEPT_FIELDS = ("sg_message_id", "type", "reason", "status", "response", "attempt", "url",
               "useragent", "ip", "asm_group_id", "bounce_classification")
#: What SendGrid says when it drops a mail to an address on one of its own lists.
DROPPED_BECAUSE = {
    "bounced address": ("all", SuppressionReason.HARD_BOUNCE),
    "spam reporting address": ("all", SuppressionReason.SPAM_REPORT),
    "unsubscribed address": ("marketing", SuppressionReason.UNSUBSCRIBE),
}


@dataclass
class Receipt:
    """What one post of events did."""

    received: int = 0  # items in the post
    stored: int = 0  # new events, stored now
    duplicates: int = 0  # events stored before (SendGrid retried)
    ignored: int = 0  # items that are not events (not an object, no sg_event_id)
    unmatched: int = 0  # new events for mail we do not know
    touchpoints: int = 0
    suppressed: int = 0  # suppressions added
    lifted: int = 0  # suppressions a resubscribe removed

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


#: Half a surrogate pair: JSON's ``\\ud800`` escapes make one; UTF-8 has no bytes for it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters taken out of every string (PostgreSQL stores none), and
    each half of a surrogate pair replaced by U+FFFD (no UTF-8 text holds one)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value.replace("\x00", ""))
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def _our_id(event: dict[str, Any]) -> int | None:
    """The mail id an event names (our custom arg), if it is one a BIGINT holds."""
    raw = event.get(MESSAGE_ARG)
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19:
        number = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    else:
        return None  # a float, a list, "¹", 5,000 digits: no mail of ours
    return number if 0 < number <= MAX_ROW_ID else None


def _attempt(event: dict[str, Any]) -> int | None:
    raw = event.get(ATTEMPT_ARG)
    try:
        number = int(str(raw)[:12]) if raw is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 < number <= MAX_ATTEMPT else None


def _occurred(event: dict[str, Any], now: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(event.get("timestamp", 0)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return now


def _store(conn: Connection, events: list[dict[str, Any]], now: datetime,
           provider: str) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """Store the events not seen before; those, and our mails by id (customer, flow, step)."""
    ids = {i for i in map(_our_id, events) if i is not None}
    ours = {row.id: row for row in conn.execute(select(
        Message.id, Message.customer_id, Message.flow, Message.step, Message.context).where(
        Message.id.in_(ids), Message.to_email != ERASED_ADDRESS))} if ids else {}
    rows = [{
        "provider": provider, "event_id": str(event["sg_event_id"])[:100],
        "event": str(event.get("event", ""))[:40],
        "message_id": _our_id(event) if _our_id(event) in ours else None,
        "provider_message_id": (str(event["sg_message_id"])[:200]
                                if event.get("sg_message_id") else None),
        "email": str(event.get("email", ""))[:320] or None,
        "occurred_at": _occurred(event, now), "recorded_at": now, "data": event,
        "attempt": _attempt(event)}
        for event in events]
    new = set(insert_new(conn, ProviderEvent.__table__, rows, ("event_id",), "event_id"))
    return [e for e in events if str(e["sg_event_id"])[:100] in new], ours


def _events_of(items: Iterable[Any]) -> tuple[list[dict[str, Any]], int]:
    """The events among ``items`` (each ``sg_event_id`` once); how many items were not."""
    seen: dict[str, dict[str, Any]] = {}
    ignored = 0
    for item in items:
        if isinstance(item, dict) and item.get("sg_event_id") not in (None, ""):
            seen.setdefault(str(item["sg_event_id"]), item)
        else:
            ignored += 1
    return list(seen.values()), ignored


def record_events(conn: Connection, events: Iterable[Any], now: datetime,
                  provider: str = "sendgrid") -> int:
    """Store new events without applying them; how many were new (duplicates are skipped)."""
    batch, _ignored = _events_of(events)
    return len(_store(conn, batch, now, provider)[0]) if batch else 0


def receive_events(conn: Connection, items: list[Any], now: datetime,
                   provider: str = "sendgrid") -> Receipt:
    """Store and apply one post of events, in ``conn``'s transaction."""
    receipt = Receipt(received=len(items))
    events, receipt.ignored = _events_of(items)
    if not events:
        return receipt
    new, ours = _store(conn, events, now, provider)
    receipt.stored = len(new)
    receipt.duplicates = len(events) - len(new)
    touches = []
    for event in new:
        mine = _our_id(event)
        if mine not in ours:
            receipt.unmatched += 1
            continue
        kind = KINDS.get(str(event.get("event")))
        if kind is None or is_test(ours[mine]):
            continue
        machine = kind == "email_opened" and bool(event.get("sg_machine_open"))
        mail = ours[mine]
        touches.append({
            "customer_id": mail.customer_id, "kind": MACHINE_OPEN if machine else kind,
            "channel": "email", "occurred_at": _occurred(event, now), "recorded_at": now,
            "message_id": mine, "source_key": f"{provider}:{event['sg_event_id']}"[:255],
            "data": {"event": event.get("event"), "email": event.get("email"),
                     "machine": machine, "flow": mail.flow, "step": mail.step,
                     **{k: event[k] for k in KEPT_FIELDS if event.get(k) not in (None, "")}}})
    if touches:
        receipt.touchpoints = len(insert_new(conn, Touchpoint.__table__, touches,
                                             ("source_key",), "id"))
    _suppress(conn, new, now, provider, receipt)
    return receipt


def _suppression_of(event: dict[str, Any]) -> tuple[str, SuppressionReason] | None:
    """(scope, reason) of the suppression ``event`` calls for, if any."""
    name = event.get("event")
    if name == "bounce" and str(event.get("type", "bounce")).lower() != "blocked":
        return "all", SuppressionReason.HARD_BOUNCE  # "blocked" is a passing refusal
    if name == "spamreport":
        return "all", SuppressionReason.SPAM_REPORT
    if name in ("unsubscribe", "group_unsubscribe"):
        return "marketing", SuppressionReason.UNSUBSCRIBE
    if name == "dropped":
        return DROPPED_BECAUSE.get(str(event.get("reason", "")).strip().lower())
    return None


def _group_source(provider: str, event: dict[str, Any]) -> str:
    return f"{provider}:group:{event.get('asm_group_id', '')}"


def _suppress(conn: Connection, new: list[dict[str, Any]], now: datetime, provider: str,
              receipt: Receipt) -> None:
    wanted = []
    for occurred, event in sorted(((_occurred(e, now), e) for e in new), key=lambda p: p[0]):
        address = str(event.get("email") or "").strip()
        if "@" not in address:
            continue
        if event.get("event") == "group_resubscribe":
            receipt.lifted += conn.execute(delete(Suppression).where(
                Suppression.email_hash == email_hash(address),
                Suppression.scope == "marketing",
                Suppression.source == _group_source(provider, event),
                Suppression.created_at <= occurred)).rowcount
            continue
        found = _suppression_of(event)
        if found is None:
            continue
        source = provider
        if event.get("event") == "group_unsubscribe":
            source = _group_source(provider, event)
            if _resubscribed_since(conn, address, event, occurred, provider):
                continue  # a later resubscribe came first
        scope, reason = found
        wanted.append({"email_hash": email_hash(address), "email": address, "scope": scope,
                       "reason": reason.value, "source": source, "created_at": occurred})
    receipt.suppressed = len(insert_new(conn, Suppression.__table__, wanted,
                                        ("email_hash", "scope"), "id"))


def _resubscribed_since(conn: Connection, address: str, event: dict[str, Any],
                        occurred: datetime, provider: str) -> bool:
    """Whether a resubscribe to the same group, newer than ``occurred``, is stored already."""
    for data in conn.execute(select(ProviderEvent.data).where(
            ProviderEvent.provider == provider, ProviderEvent.email == address,
            ProviderEvent.event == "group_resubscribe",
            ProviderEvent.occurred_at > occurred)).scalars():
        if str(data.get("asm_group_id", "")) == str(event.get("asm_group_id", "")):
            return True
    return False
