"""Process heartbeats: each scheduler and worker says it is alive.

The scheduler records its own heartbeat on every tick and sends
``system.heartbeat`` through the broker; the worker that runs it records its
heartbeat with the message's delay, which is the broker round trip.  The
health endpoint reads both.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.clock import real_seconds
from lifecycle.models import ProcessHeartbeat
from lifecycle.runtime import get_app
from lifecycle.tasks import actor

_started_at: dict[str, datetime] = {}
_lock = threading.Lock()


def process_name(kind: str) -> str:
    return f"{kind}@{socket.gethostname()}:{os.getpid()}"


def record(conn: Connection, kind: str, now: datetime, info: dict[str, Any]) -> None:
    """Upsert the heartbeat of this process as a ``kind`` (scheduler or worker)."""
    name = process_name(kind)
    with _lock:
        started = _started_at.setdefault(name, now)
    values = {"name": name, "kind": kind, "host": socket.gethostname(), "pid": os.getpid(),
              "started_at": started, "last_seen_at": now, "info": info}
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(ProcessHeartbeat).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={"last_seen_at": statement.excluded.last_seen_at, "info": statement.excluded.info,
              "started_at": statement.excluded.started_at},
    )
    conn.execute(statement)


@actor("system.heartbeat", max_retries=0, time_limit=30_000)
def heartbeat(sent_at: str) -> None:
    """Record that a worker is alive; ``sent_at`` is the scheduler's ISO time of sending."""
    app = get_app()
    now = app.clock.now()
    delay = real_seconds(app.clock, now - datetime.fromisoformat(sent_at))
    with app.engine.begin() as conn:
        record(conn, "worker", now, {"broker_delay_seconds": round(max(delay, 0.0), 3)})
