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

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, text, tuple_, update

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


class _Stream:
    """The touchpoints after a cursor, a batch at a time, in an order in which no touchpoint
    can still appear behind the cursor.

    SQLite commits one writer at a time, so ids become visible in id order.  PostgreSQL
    takes an id when a row is inserted but shows the row when its transaction commits: a
    long transaction (an order's segment refresh, the nightly full refresh) can commit ids
    below ones already read.  There the stream reads only rows of transactions older than
    every transaction still running on this database (``txid`` below :func:`horizon`: none
    of those can write again), in ``(txid, id)`` order.  Rows written before revision 0008 have no
    txid; a cursor without ``last_txid`` reads them first, by id, as before.
    """

    def __init__(self, conn: Connection, last_id: int, last_txid: int | None) -> None:
        self.conn, self.last_id, self.last_txid = conn, last_id, last_txid
        self.pg = conn.dialect.name == "postgresql"
        self.horizon = horizon(conn) if self.pg else None

    def read(self, batch: int) -> list[Any]:
        """The next ``batch`` touchpoints after the cursor (the cursor does not move)."""
        t = Touchpoint.__table__
        query = select(t.c.id, t.c.txid, t.c.customer_id, t.c.kind, t.c.channel,
                       case((t.c.channel == HISTORY, None), else_=t.c.data).label("data"))
        if not self.pg:
            query = query.where(t.c.id > self.last_id).order_by(t.c.id)
        elif self.last_txid is None:  # rows from before revision 0008 first
            query = query.where(t.c.txid.is_(None), t.c.id > self.last_id).order_by(t.c.id)
        else:
            query = (query.where(tuple_(t.c.txid, t.c.id) > tuple_(self.last_txid, self.last_id),
                                 t.c.txid < self.horizon).order_by(t.c.txid, t.c.id))
        rows = self.conn.execute(query.limit(batch)).all()
        if self.pg and self.last_txid is None and len(rows) < batch:
            self.last_txid = 0  # the rows without a txid are all read after these
        return rows

    def passed(self, row: Any) -> None:
        self.last_id = row.id
        if self.pg and row.txid is not None:
            self.last_txid = row.txid

    def save(self, now: datetime) -> None:
        cursors = TriggerCursor.__table__
        self.conn.execute(update(cursors).where(cursors.c.name == CURSOR).values(
            last_id=self.last_id, last_txid=self.last_txid, updated_at=now))


_XMAX = "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text)::bigint"
#: The transaction ids (32 bits) of the other transactions on this database that have one.
_RUNNING_HERE = ("SELECT (backend_xid::text)::bigint FROM pg_stat_activity "
                 "WHERE datname = current_database() AND backend_xid IS NOT NULL "
                 "AND pid <> pg_backend_pid()")
_XID_SPAN = 2**32


def horizon(conn: Connection) -> int:
    """PostgreSQL: a transaction id below which every transaction that could write to this
    database has ended (the oldest one still running here, else the next id to be given).

    Transaction ids are numbered across the whole server, and the snapshot's own ``xmin``
    is the oldest transaction of any database: a long one elsewhere on a shared server (a
    report, a backup, another application, a parallel test run) would hold every trigger
    back until it ended.  So the horizon is the snapshot's ``xmax`` (ids below it were given
    out before this statement), lowered to the oldest transaction *of this database* still
    running — read from ``pg_stat_activity`` after that snapshot (its cached copy cleared
    first): one given an id below ``xmax`` that is not listed there had ended before, and a
    later statement's snapshot sees it.  ``backend_xid`` has 32 bits: it is widened to the
    64-bit id against ``xmax`` (ids at or after ``xmax`` are ignored: they are newer).
    """
    xmax = int(conn.execute(text(_XMAX)).scalar_one())
    conn.execute(text("SELECT pg_stat_clear_snapshot()"))
    oldest = xmax
    low = xmax % _XID_SPAN
    for short in conn.execute(text(_RUNNING_HERE)).scalars():
        behind = (low - int(short)) % _XID_SPAN
        if 0 < behind < _XID_SPAN // 2:
            oldest = min(oldest, xmax - behind)
    return oldest


def _start(conn: Connection, now: datetime) -> None:
    """The first run: the cursor after every touchpoint there is (history triggers nothing)."""
    newest = conn.execute(select(func.coalesce(func.max(Touchpoint.id), 0))).scalar_one()
    below = horizon(conn) - 1 if conn.dialect.name == "postgresql" else None
    conn.execute(TriggerCursor.__table__.insert().values(
        name=CURSOR, last_id=newest if below is None else 2**62, last_txid=below,
        updated_at=now))


def dispatch(conn: Connection, flows: dict[str, Flow], now: datetime, batch: int = 1000,
             held: frozenset[str] = frozenset()) -> int:
    """Read up to ``batch`` new touchpoints and enrol; return how many enrolments were made.

    The flows named in ``held`` (draft or paused: :mod:`lifecycle.flows.states`) enrol
    nobody; the touchpoints are read past all the same, so they never enrol later."""
    cursors = TriggerCursor.__table__
    read = select(cursors.c.last_id, cursors.c.last_txid).where(cursors.c.name == CURSOR)
    if conn.dialect.name == "postgresql":
        read = read.with_for_update()
    cursor = conn.execute(read).first()
    if cursor is None:
        _start(conn, now)
        return 0
    stream = _Stream(conn, cursor.last_id, cursor.last_txid)
    events = stream.read(batch)
    skipped = 0
    while (len(events) == batch and skipped < SKIP_BATCHES
           and all(event.channel == HISTORY for event in events)):
        skipped += 1  # a batch of imported history only: pass over it to what follows
        stream.passed(events[-1])
        events = stream.read(batch)
    if not events:
        if skipped or stream.last_txid != cursor.last_txid:
            stream.save(now)
        return 0
    ordered = sorted((f for f in flows.values() if f.name not in held),
                     key=lambda f: (-f.priority, f.name))
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
    stream.passed(events[-1])
    stream.save(now)
    return enrolled
