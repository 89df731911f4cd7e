"""The secret key kept with the data: made once, shared by every process on the database.

With ``LIFECYCLE_SECRET_KEY`` unset, the first process that needs a key makes
one (``secrets.token_urlsafe(32)``: 256 random bits) and inserts it into
``instance_secrets``; an insert that meets a row already there does nothing
(``ON CONFLICT DO NOTHING``), and every process then reads the one row.  Two
processes starting at once therefore end up with the same key, and the key
outlives every restart.  :attr:`lifecycle.app.App.keys` is the one place
that reads it.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.models import InstanceSecret

#: The row's name in ``instance_secrets``.
SECRET_KEY = "secret_key"


def stored_key(conn: Connection) -> str | None:
    """The key kept in the database, or None when no process has made one yet."""
    return conn.execute(select(InstanceSecret.value)
                        .where(InstanceSecret.name == SECRET_KEY)).scalar_one_or_none()


def shared_key(engine: Engine, now: datetime) -> tuple[str, bool]:
    """The key kept in the database, made first if there is none; and whether this call made
    it.  Safe to call from any number of processes at once: all get the same key."""
    with engine.connect() as conn:
        found = stored_key(conn)
    if found is not None:
        return found, False
    made = secrets.token_urlsafe(32)
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    with engine.begin() as conn:
        # A concurrent insert of the same name makes this one wait for its commit (PostgreSQL)
        # or for the write lock (SQLite), then do nothing; the read below sees the winner's.
        conn.execute(insert(InstanceSecret)
                     .values(name=SECRET_KEY, value=made, created_at=now)
                     .on_conflict_do_nothing(index_elements=["name"]))
        key = stored_key(conn)
    assert key is not None
    return key, key == made
