"""The last valid text of each configuration file, kept in the database.

``segments.yaml``, ``policies.yaml`` and every flow file are written by people
and can break.  While one is invalid, the last valid version of it stays in
force: the scheduler's tick saves the text of every valid file here (kind
``segments``, ``policies`` or ``flow``, with the flow's name), and whoever finds
the file invalid — the scheduler, a worker, the web app, on any host, after any
restart — parses the saved text instead.  Nothing is saved when the text did not
change (compared by its SHA-256).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from lifecycle.db import READ_ONLY, insert_new
from lifecycle.models import ConfigSnapshot

SEGMENTS, POLICIES, FLOW = "segments", "policies", "flow"


def digest(text: str) -> str:
    """Hex SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def remember(conn: Connection, kind: str, name: str, text: str, now: datetime) -> bool:
    """Keep ``text`` as the last valid version of the file; True if it was new."""
    table = ConfigSnapshot.__table__
    sha = digest(text)
    kept = conn.execute(select(table.c.sha256).where(table.c.kind == kind,
                                                     table.c.name == name)).scalar()
    if kept == sha:
        return False
    if kept is None:
        insert_new(conn, table, [{"kind": kind, "name": name, "text": text, "sha256": sha,
                                  "saved_at": now}], ("kind", "name"))
    else:
        conn.execute(update(table).where(table.c.kind == kind, table.c.name == name)
                     .values(text=text, sha256=sha, saved_at=now))
    return True


def recall(conn: Connection, kind: str, name: str) -> tuple[str, datetime] | None:
    """The last valid text of the file and when it was saved, if any was."""
    table = ConfigSnapshot.__table__
    row = conn.execute(select(table.c.text, table.c.saved_at).where(
        table.c.kind == kind, table.c.name == name)).first()
    return None if row is None else (row.text, row.saved_at)


def recall_apart(engine: Engine, kind: str, name: str) -> tuple[str, datetime] | None:
    """:func:`recall` on a connection of its own that only reads: callable while this thread
    holds a write transaction (SQLite would otherwise wait for it)."""
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        return recall(conn, kind, name)
