"""Process heartbeats: each scheduler and worker process says it is alive.

Every process records its own row (named ``kind@host:pid``, so one per
process) every ``LIFECYCLE_HEARTBEAT_SECONDS``: the scheduler on its
``system.heartbeat`` job, each worker process from a thread of its own
(:func:`beating`), so a worker's liveness never depends on which worker takes
a broker message.  The scheduler also sends ``system.heartbeat`` through the
broker; the worker that runs it adds the message's delay (the broker round
trip) to its row.  Rows of schedulers and workers not seen for
:data:`PRUNE_AFTER` are deleted by the scheduler; until then ``/healthz``
shows them as dead (four missed heartbeats).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.clock import Clock, real_seconds
from lifecycle.models import ProcessHeartbeat
from lifecycle.runtime import get_app
from lifecycle.tasks import actor

log = logging.getLogger(__name__)

#: A process shows as dead after this many heartbeats missed in a row.
MISSED_BEATS = 4
#: Rows of schedulers and workers last seen longer ago than this (real time) are deleted.
PRUNE_AFTER = timedelta(days=1)
#: The kinds the scheduler prunes (a ``demo`` row marks a demo's database: it stays).
PRUNED_KINDS = ("scheduler", "worker")

_started_at: dict[str, datetime] = {}
_info: dict[str, dict[str, Any]] = {}  # this process's latest info per row name
_lock = threading.Lock()


def process_name(kind: str) -> str:
    return f"{kind}@{socket.gethostname()}:{os.getpid()}"


def record(conn: Connection, kind: str, now: datetime, info: dict[str, Any]) -> None:
    """Upsert the heartbeat of this process as a ``kind`` (scheduler or worker); ``info`` is
    added to what this process recorded before under that kind."""
    name = process_name(kind)
    with _lock:
        started = _started_at.setdefault(name, now)
        merged = {**_info.get(name, {}), **info}
        # a stop is said once, by :func:`stopped`: never carried into a later record
        _info[name] = {k: v for k, v in merged.items() if k != "stopped_at"}
    values = {"name": name, "kind": kind, "host": socket.gethostname(), "pid": os.getpid(),
              "started_at": started, "last_seen_at": now, "info": merged}
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(ProcessHeartbeat).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={"last_seen_at": statement.excluded.last_seen_at, "info": statement.excluded.info,
              "started_at": statement.excluded.started_at},
    )
    conn.execute(statement)


def alive(clock: Clock, now: datetime, last_seen_at: datetime, info: dict[str, Any],
          default_every: float) -> bool:
    """Whether a process last seen at ``last_seen_at`` still counts as alive: it missed fewer
    than :data:`MISSED_BEATS` of its heartbeats (every ``heartbeat_seconds`` of its ``info``,
    else ``default_every`` seconds), in real time (under the demo's fast clock too)."""
    if info.get("stopped_at"):
        return False  # it said so as it stopped (:func:`stopped`)
    every = float(info.get("heartbeat_seconds") or default_every)
    return real_seconds(clock, now - last_seen_at) < MISSED_BEATS * every


def stopped(app: Any, kind: str) -> None:
    """Record that this process, as a ``kind``, stopped (a clean stop): /healthz and
    ``lifecycle healthcheck`` show it dead at once rather than after four missed beats.  A
    failure to record it (the database away) is logged; the missed beats then tell."""
    now = app.clock.now()
    try:
        with app.engine.begin() as conn:
            record(conn, kind, now, {"stopped_at": now.isoformat()})
    except Exception as exc:  # noqa: BLE001 - stopping goes on
        log.warning("The %s's stop could not be recorded (%s: %s).", kind,
                    type(exc).__name__, exc)


def prune(conn: Connection, clock: Clock, now: datetime) -> int:
    """Delete the rows of schedulers and workers not seen for :data:`PRUNE_AFTER` of real
    time (dead or stopped long ago); how many."""
    span = PRUNE_AFTER * float(getattr(clock, "speed", 1.0))  # in the clock's time
    return conn.execute(delete(ProcessHeartbeat).where(
        ProcessHeartbeat.kind.in_(PRUNED_KINDS),
        ProcessHeartbeat.last_seen_at < now - span)).rowcount


@contextmanager
def beating(app: Any, kind: str, info: dict[str, Any]) -> Iterator[None]:
    """Record this process's heartbeat as ``kind`` now and every ``LIFECYCLE_HEARTBEAT_SECONDS``
    from a thread of its own while the block runs.  A failed write (the database away) is
    logged once until one succeeds again, and retried at the next beat."""
    every = app.settings.heartbeat_seconds
    stop = threading.Event()

    def beat() -> None:
        failing = False
        while True:
            try:
                with app.engine.begin() as conn:
                    record(conn, kind, app.clock.now(),
                           {**info, "heartbeat_seconds": every, "stopped_at": None})
                if failing:
                    log.info("The %s's heartbeat is recorded again.", kind)
                failing = False
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                if not failing:
                    log.warning("The %s's heartbeat could not be recorded (%s: %s); it is "
                                "tried again every %g seconds.", kind, type(exc).__name__, exc,
                                every)
                failing = True
            if stop.wait(every):
                return

    thread = threading.Thread(target=beat, name=f"{kind}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        stopped(app, kind)


@actor("system.heartbeat", max_retries=0, time_limit=30_000)
def heartbeat(sent_at: str) -> None:
    """Record the broker's round trip on this worker's heartbeat; ``sent_at`` is the
    scheduler's ISO time of sending."""
    app = get_app()
    now = app.clock.now()
    delay = real_seconds(app.clock, now - datetime.fromisoformat(sent_at))
    with app.engine.begin() as conn:
        record(conn, "worker", now, {"broker_delay_seconds": round(max(delay, 0.0), 3),
                                     "heartbeat_seconds": app.settings.heartbeat_seconds})
