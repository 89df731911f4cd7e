"""Engines and sessions.

One function builds the engine for either backend.  SQLite is tuned for a
single host with several threads: WAL journal, foreign keys on, and a busy
timeout so a writer waits instead of failing at once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, ColumnElement, Connection, Engine, Table, any_, bindparam, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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


def _email_hash_or_none(email: str | None) -> str | None:
    from lifecycle.models import email_hash

    return email_hash(email) if email else None


def _local_day(instant: str | None, tz: str) -> int | None:
    """The day number (days since 2000-01-01) of a stored UTC instant in the zone ``tz``
    (PostgreSQL: ``CAST((instant AT TIME ZONE tz) AS DATE) - DATE '2000-01-01'``)."""
    if instant is None:
        return None
    from datetime import UTC, date, datetime

    from lifecycle.timeutil import zone

    moment = datetime.fromisoformat(instant).replace(tzinfo=UTC).astimezone(zone(tz))
    return moment.date().toordinal() - date(2000, 1, 1).toordinal()


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin,
    # so that BEGIN, SAVEPOINT and DDL behave as on PostgreSQL.
    dbapi_connection.isolation_level = None
    # lifecycle.models.email_hash in SQL (PostgreSQL writes it with sha256()): campaigns
    # match their audience against the suppressions in one statement
    dbapi_connection.create_function("lifecycle_email_hash", 1, _email_hash_or_none,
                                     deterministic=True)
    # A stored instant's day in a time zone (lifecycle.predictions counts purchase days)
    dbapi_connection.create_function("lifecycle_local_day", 2, _local_day, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: An execution option: this connection only reads (SQLite: a deferred BEGIN, which in WAL
#: mode never waits for a writer, not even for one this thread has open).
READ_ONLY = "lifecycle_read_only"


def _begin_sqlite(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: two writers queue on the busy
    # timeout instead of one failing when it upgrades a read lock.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
        return
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


def among(conn: Connection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)``, written for ``conn``'s database: on PostgreSQL
    ``column = ANY(:array)``, one parameter however many values, so the statement is the same
    text each time (the driver parses a statement of over 50 parameters again on every call,
    and a batch's ``IN`` list has a hundred); on SQLite an ``IN`` list."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]],
               unique: tuple[str, ...], returning: str | None = None) -> list[Any]:
    """Insert ``rows``, skipping each whose ``unique`` columns are taken already (by an earlier
    row or one of these); the ``returning`` column of the rows inserted.

    One short statement on PostgreSQL (:func:`pg_unnest_insert`); on SQLite one
    ``INSERT … ON CONFLICT DO NOTHING`` per row, in one call.
    """
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return pg_unnest_insert(conn, table, rows, skip_conflicts_on=unique, returning=returning)
    statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=list(unique))
    if returning is None:
        conn.execute(statement, rows)
        return []
    return list(conn.execute(statement.returning(table.c[returning]), rows).scalars())


def pg_unnest_insert(conn: Connection, table: Table, rows: list[dict[str, Any]], *,
                     skip_conflicts_on: tuple[str, ...] = (),
                     returning: str | None = None) -> list[Any]:
    """Insert ``rows`` into ``table`` on PostgreSQL in one short statement; the ``returning``
    column of the rows inserted.

    ``INSERT … SELECT FROM unnest(<one typed array per column>)``: the
    statement text is the same for any number of rows, so it is parsed and
    planned once, where a multi-row ``VALUES`` of thousands of parameters is
    re-parsed by the driver on every call (psycopg caches only short queries).
    The arrays go in PostgreSQL's binary format (:func:`pg_array`), the JSON
    columns as one JSON text each (:func:`pg_json_array`).
    ``skip_conflicts_on`` names the unique columns of ``ON CONFLICT … DO NOTHING``.
    """
    if not rows:
        return []
    names = tuple(rows[0])
    statement = _unnest_statement(table, names, skip_conflicts_on, returning)
    params = {}
    for name in names:
        values = [row[name] for row in rows]
        params[name] = Jsonb(values, dumps=dumps_json) if _is_json(table, name) else values
    result = conn.exec_driver_sql(statement, params)
    return list(result.scalars()) if returning else []


@functools.lru_cache(maxsize=64)
def _unnest_statement(table: Table, names: tuple[str, ...], conflict: tuple[str, ...],
                      returning: str | None) -> str:
    """The driver-level SQL (psycopg placeholders) of :func:`pg_unnest_insert`."""
    dialect = postgresql.dialect()
    arrays = ", ".join(
        pg_json_array(name, driver=True) if _is_json(table, name)
        else pg_array(name, table.c[name].type.compile(dialect=dialect)) for name in names)
    return (f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
            + (f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING" if conflict else "")
            + (f" RETURNING {returning}" if returning else ""))


def pg_array(name: str, sql_type: str) -> str:
    """Driver-level SQL (``exec_driver_sql``) for a ``sql_type[]`` from the list parameter
    ``name``, sent in PostgreSQL's binary format: each item goes as its length and bytes,
    where the text format escapes every quote and backslash of every item (a rendered HTML
    body has hundreds), which costs more than the insert itself."""
    return f"CAST(%({name})b AS {sql_type}[])"


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type.dialect_impl(postgresql.dialect()), JSON)


def pg_json_array(name: str, driver: bool = False) -> str:
    """SQL for a ``jsonb[]`` from parameter ``name``, one JSON array of the documents
    (``driver``: with a psycopg placeholder, for ``exec_driver_sql``; else SQLAlchemy's).

    One JSON text for all the rows: an array parameter of documents would be
    quoted element by element by the driver, which costs more than the insert.
    """
    placeholder = f"%({name})s" if driver else f":{name}"
    return (f"ARRAY(SELECT d FROM jsonb_array_elements(CAST({placeholder} AS jsonb)) "
            f"WITH ORDINALITY AS e(d, n) ORDER BY n)")
