"""Provider events in: stored once each, matched to our mail through ``custom_args``.

This is the part of SendGrid's Event Webhook that delivery needs (settling a
mail whose send outcome we missed, see :mod:`lifecycle.mail.outbox`): events
are kept as received, deduplicated on ``sg_event_id``.  The webhook endpoint
(signature check) and the touchpoints of opens, clicks and bounces build on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.mail.compose import ARG_PREFIX
from lifecycle.models import Message, ProviderEvent

MESSAGE_ARG = ARG_PREFIX + "message_id"


def _our_id(event: dict[str, Any]) -> int | None:
    raw = event.get(MESSAGE_ARG)
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def record_events(conn: Connection, events: Iterable[dict[str, Any]], now: datetime,
                  provider: str = "sendgrid") -> int:
    """Store new events (a duplicate ``sg_event_id`` is skipped); how many were new."""
    batch = [e for e in events if isinstance(e, dict) and e.get("sg_event_id")]
    if not batch:
        return 0
    ids = {i for i in map(_our_id, batch) if i is not None}
    known = set(conn.execute(select(Message.id).where(Message.id.in_(ids))).scalars()) \
        if ids else set()
    rows = []
    for event in batch:
        ours = _our_id(event)
        try:
            occurred = datetime.fromtimestamp(int(event.get("timestamp", 0)), UTC)
        except (TypeError, ValueError, OverflowError):
            occurred = now
        rows.append({
            "provider": provider, "event_id": str(event["sg_event_id"])[:100],
            "event": str(event.get("event", ""))[:40],
            "message_id": ours if ours in known else None,
            "provider_message_id": (str(event["sg_message_id"])[:200]
                                    if event.get("sg_message_id") else None),
            "email": str(event.get("email", ""))[:320] or None,
            "occurred_at": occurred, "recorded_at": now, "data": event})
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = conn.execute(insert(ProviderEvent).values(rows).on_conflict_do_nothing(
        index_elements=["event_id"]).returning(ProviderEvent.id))
    return len(result.all())
