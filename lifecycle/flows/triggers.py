"""Triggers: touchpoints that enrol customers into flows.

The engine reads the touchpoints table in id order from a stored cursor
(``flow_trigger_cursors``), matches each against every valid flow's trigger
and enrols (see :func:`lifecycle.flows.engine.enroll`; the trigger key is the
touchpoint, so reading an event twice enrols once).  The first time it runs
the cursor starts at the newest touchpoint: history recorded before the
engine was switched on — an initial import, the first segment refresh —
triggers nothing.  Touchpoints an import writes (channel ``import``: the
``order_placed`` of imported orders) are history whenever they are written:
the cursor passes over them and they trigger nothing, however many there are
(up to :data:`SKIP_BATCHES` batches of them are passed in one call).

========================  ==================================================
trigger                   touchpoint kind (and data)
========================  ==================================================
order_placed, first_order ``order_placed`` (order_id, nth, total, categories, skus)
segment_entered / exited  ``segment_entered`` / ``segment_exited`` (segment)
feedback_received         ``feedback`` (score)
email_replied             ``replied`` (flow)
email_clicked             ``email_clicked`` (flow)
event                     ``event`` (name)
========================  ==================================================
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Update, bindparam, case, func, select, update

from lifecycle.flows.definitions import Flow
from lifecycle.flows.engine import enroll
from lifecycle.imports import HISTORY
from lifecycle.models import Touchpoint, TriggerCursor

CURSOR = "touchpoints"
#: Batches of nothing but imported history one call passes over before it stops.
SKIP_BATCHES = 100
KIND_OF_TRIGGER = {
    "order_placed": "order_placed", "segment_entered": "segment_entered",
    "segment_exited": "segment_exited", "feedback_received": "feedback",
    "email_replied": "replied", "email_clicked": "email_clicked", "event": "event",
}


def matches(flow: Flow, kind: str, data: dict[str, Any]) -> bool:
    trigger = flow.trigger
    if KIND_OF_TRIGGER.get(trigger.kind) != kind:
        return False
    options = trigger.options
    if trigger.kind == "order_placed":
        if "nth" in options and data.get("nth") != options["nth"]:
            return False
        if "min_total" in options and float(data.get("total") or 0) < float(options["min_total"]):
            return False
        if "category" in options and options["category"] not in (data.get("categories") or []):
            return False
        return "sku" not in options or options["sku"] in (data.get("skus") or [])
    if trigger.kind in ("segment_entered", "segment_exited"):
        return data.get("segment") in options["segments"]
    if trigger.kind == "feedback_received":
        score = data.get("score")
        if not isinstance(score, int):
            return False
        return options.get("min_score", 0) <= score <= options.get("max_score", 10)
    if trigger.kind in ("email_replied", "email_clicked"):
        return "flow" not in options or data.get("flow") == options["flow"]
    if trigger.kind == "event":
        return data.get("name") == options["name"]
    return False


@functools.cache
def _statements(dialect: str) -> tuple[Select[Any], Select[Any], Update]:
    """Built once: the cursor read (locked on PostgreSQL), the event read, the cursor move."""
    cursors, touchpoints = TriggerCursor.__table__, Touchpoint.__table__
    read = select(cursors.c.last_id).where(cursors.c.name == CURSOR)
    if dialect == "postgresql":
        read = read.with_for_update()
    events = (select(touchpoints.c.id, touchpoints.c.customer_id, touchpoints.c.kind,
                     touchpoints.c.channel,
                     case((touchpoints.c.channel == HISTORY, None), else_=touchpoints.c.data)
                     .label("data"))
              .where(touchpoints.c.id > bindparam("last")).order_by(touchpoints.c.id)
              .limit(bindparam("batch")))
    move = (update(cursors).where(cursors.c.name == CURSOR)
            .values(last_id=bindparam("last"), updated_at=bindparam("now")))
    return read, events, move


def dispatch(conn: Connection, flows: dict[str, Flow], now: datetime, batch: int = 1000) -> int:
    """Read up to ``batch`` new touchpoints and enrol; return how many enrolments were made."""
    read, select_events, move = _statements(conn.dialect.name)
    last = conn.execute(read).scalar()
    if last is None:
        newest = conn.execute(select(func.coalesce(func.max(Touchpoint.id), 0))).scalar_one()
        conn.execute(TriggerCursor.__table__.insert().values(name=CURSOR, last_id=newest,
                                                             updated_at=now))
        return 0
    events = conn.execute(select_events, {"last": last, "batch": batch}).all()
    skipped = 0
    while (len(events) == batch and skipped < SKIP_BATCHES
           and all(event.channel == HISTORY for event in events)):
        skipped += 1  # a batch of imported history only: pass over it to what follows
        last = events[-1].id
        events = conn.execute(select_events, {"last": last, "batch": batch}).all()
    if not events:
        if skipped:
            conn.execute(move, {"last": last, "now": now})
        return 0
    ordered = sorted(flows.values(), key=lambda f: (-f.priority, f.name))
    enrolled = 0
    for event in events:
        if event.channel == HISTORY:
            continue
        data = event.data or {}
        for flow in ordered:
            if matches(flow, event.kind, data):
                context = {"touchpoint_id": event.id}
                if "order_id" in data:
                    context["order_id"] = data["order_id"]
                if enroll(conn, flow, event.customer_id, f"tp:{event.id}", now, context):
                    enrolled += 1
    conn.execute(move, {"last": events[-1].id, "now": now})
    return enrolled
