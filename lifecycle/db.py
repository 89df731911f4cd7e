"""Engines and sessions.

One function builds the engine for either backend.  SQLite is tuned for a
single host with several threads: WAL journal, foreign keys on, and a busy
timeout so a writer waits instead of failing at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def dumps_json(value: Any) -> str:
    """Canonical JSON text: compact, keys sorted, UTF-8 kept.

    Both backends store documents in this form, so two equal documents are
    equal as text too (SQLite compares JSON as text).
    """
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                      default=str)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin,
    # so that BEGIN, SAVEPOINT and DDL behave as on PostgreSQL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_sqlite(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: two writers queue on the busy
    # timeout instead of one failing when it upgrades a read lock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: URL | str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with Lifecycle's per-backend settings."""
    kwargs.setdefault("json_serializer", dumps_json)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session
