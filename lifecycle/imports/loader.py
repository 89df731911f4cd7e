"""Bulk upsert of validated rows: stage, then merge in set-based SQL.

Rows stream into a temporary staging table (COPY on PostgreSQL, batched
executemany on SQLite).  Then, in the caller's transaction:

1. duplicates inside the file are reported and the last occurrence kept;
2. (orders) customers named but not known are created with what the file says;
3. one ``UPDATE … FROM staging`` changes only rows whose values differ;
4. one ``INSERT … SELECT`` adds rows not there yet.

So a second import of the same file updates nothing, and the counts say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    text,
)

from lifecycle.db import dumps_json
from lifecycle.models.base import JSONType, UTCDateTime

SQLITE_BATCH = 5_000


def _staging_table(name: str, *columns: Column[Any]) -> Table:
    return Table(name, MetaData(), Column("line", Integer, nullable=False), *columns,
                 prefixes=["TEMPORARY"])


def customer_staging() -> Table:
    return _staging_table(
        "lc_import_customers",
        Column("external_id", String(255), nullable=False),
        Column("email", String(320)),
        Column("first_name", String(200)),
        Column("last_name", String(200)),
        Column("timezone", String(64)),
        Column("locale", String(35)),
        Column("created_at", UTCDateTime()),
        Column("marketing_consent", Boolean()),
        Column("attributes", JSONType, nullable=False),
    )


def order_staging() -> Table:
    return _staging_table(
        "lc_import_orders",
        Column("external_id", String(255), nullable=False),
        Column("customer_external_id", String(255), nullable=False),
        Column("ordered_at", UTCDateTime(), nullable=False),
        Column("total", Numeric(14, 2), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("status", String(16), nullable=False),
        Column("items", JSONType, nullable=False),
        Column("email", String(320)),
        Column("first_name", String(200)),
        Column("last_name", String(200)),
        Column("timezone", String(64)),
    )


def create_staging(conn: Connection, table: Table) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")
    table.create(conn)


def drop_staging(conn: Connection, table: Table) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")


def load_staging(conn: Connection, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    """Stream ``rows`` into ``table``; return how many were written."""
    names = [c.name for c in table.columns]
    count = 0
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        plain = [n for n in names if not isinstance(table.c[n].type, JSON)]
        documents = [n for n in names if isinstance(table.c[n].type, JSON)]
        with driver.cursor() as cursor:
            columns = ", ".join(plain + documents)
            with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                write = copy.write_row
                for row in rows:
                    write([row[n] for n in plain] + [dumps_json(row[n]) for n in documents])
                    count += 1
        conn.exec_driver_sql(f"ANALYZE {table.name}")
        return count
    batch: list[dict[str, Any]] = []
    insert = table.insert()
    for row in rows:
        batch.append(row)
        if len(batch) >= SQLITE_BATCH:
            conn.execute(insert, batch)
            count += len(batch)
            batch = []
    if batch:
        conn.execute(insert, batch)
        count += len(batch)
    return count


def take_duplicates(conn: Connection, table: Table) -> Iterator[tuple[int, str, int]]:
    """Yield ``(line, external_id, kept_line)`` for earlier copies of a row, and drop them."""
    found = conn.execute(text(f"""
        SELECT line, external_id, kept FROM (
            SELECT line, external_id, MAX(line) OVER (PARTITION BY external_id) AS kept
            FROM {table.name}) AS t
        WHERE line <> kept ORDER BY line""")).all()
    lines = [row.line for row in found]
    for start in range(0, len(lines), 500):
        conn.execute(text(f"DELETE FROM {table.name} WHERE line IN :lines")
                     .bindparams(bindparam("lines", expanding=True)),
                     {"lines": lines[start:start + 500]})
    for row in found:
        yield row.line, row.external_id, row.kept


def _differs(conn: Connection, left: str, right: str) -> str:
    op = "IS DISTINCT FROM" if conn.dialect.name == "postgresql" else "IS NOT"
    return f"({left}) {op} ({right})"


def _merged_attributes(conn: Connection, old: str, new: str) -> str:
    """SQL for a shallow merge of two JSON objects: keys of ``new`` win."""
    if conn.dialect.name == "postgresql":
        return f"({old} || {new})"
    # SQLite: rebuild the object in key order (the canonical form of dumps_json),
    # keeping JSON types (json_each gives true/false as 1/0 and nested values as text).
    return f"""(SELECT json_group_object(key, CASE type
                    WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')
                    WHEN 'null' THEN json('null')
                    WHEN 'object' THEN json(value) WHEN 'array' THEN json(value)
                    ELSE value END)
                FROM (SELECT key, type, value FROM (
                        SELECT key, type, value FROM json_each({old})
                        WHERE key NOT IN (SELECT key FROM json_each({new}))
                        UNION ALL SELECT key, type, value FROM json_each({new})) AS u
                      ORDER BY key) AS m)"""


def _now(statement: str) -> Any:
    return text(statement).bindparams(bindparam("now", type_=UTCDateTime()))


def merge_customers(conn: Connection, table: Table, now: datetime) -> tuple[int, int]:
    """Upsert staged customers; return ``(inserted, updated)``."""
    s = table.name
    merged = _merged_attributes(conn, "c.attributes", "s.attributes")
    optional = ("email", "first_name", "last_name", "timezone", "locale", "created_at",
                "marketing_consent")
    sets = ",\n".join(f"{col} = COALESCE(s.{col}, c.{col})" for col in optional)
    changed = " OR ".join(
        [f"(s.{col} IS NOT NULL AND {_differs(conn, f's.{col}', f'c.{col}')})" for col in optional]
        + [_differs(conn, merged, "c.attributes")])
    updated = conn.execute(_now(f"""
        UPDATE customers AS c SET {sets}, attributes = {merged}, updated_at = :now
        FROM {s} AS s
        WHERE c.external_id = s.external_id AND ({changed})"""), {"now": now}).rowcount
    inserted = conn.execute(_now(f"""
        INSERT INTO customers (external_id, email, first_name, last_name, timezone, locale,
                               attributes, marketing_consent, created_at, updated_at)
        SELECT s.external_id, s.email, s.first_name, s.last_name, s.timezone, s.locale,
               s.attributes, COALESCE(s.marketing_consent, TRUE), COALESCE(s.created_at, :now), :now
        FROM {s} AS s
        WHERE NOT EXISTS (SELECT 1 FROM customers AS c WHERE c.external_id = s.external_id)"""),
        {"now": now}).rowcount
    return inserted, updated


def create_missing_customers(conn: Connection, table: Table, now: datetime) -> int:
    """Create customers that staged orders name but the database does not know yet."""
    return conn.execute(_now(f"""
        INSERT INTO customers (external_id, email, first_name, last_name, timezone,
                               attributes, marketing_consent, created_at, updated_at)
        SELECT s.customer_external_id, MAX(s.email), MAX(s.first_name), MAX(s.last_name),
               MAX(s.timezone), '{{}}', TRUE, MIN(s.ordered_at), :now
        FROM {table.name} AS s
        WHERE NOT EXISTS (SELECT 1 FROM customers AS c
                          WHERE c.external_id = s.customer_external_id)
        GROUP BY s.customer_external_id"""), {"now": now}).rowcount


def merge_orders(conn: Connection, table: Table, now: datetime) -> tuple[int, int]:
    """Upsert staged orders (their customers must exist); return ``(inserted, updated)``."""
    s = table.name
    changed = " OR ".join(_differs(conn, f"o.{col}", f"{src}.{col}") for col, src in (
        ("ordered_at", "s"), ("total", "s"), ("currency", "s"), ("status", "s"),
        ("items", "s")))
    updated = conn.execute(_now(f"""
        UPDATE orders AS o SET customer_id = c.id, ordered_at = s.ordered_at, total = s.total,
               currency = s.currency, status = s.status, items = s.items, updated_at = :now
        FROM {s} AS s JOIN customers AS c ON c.external_id = s.customer_external_id
        WHERE o.external_id = s.external_id AND (o.customer_id <> c.id OR {changed})"""),
        {"now": now}).rowcount
    inserted = conn.execute(_now(f"""
        INSERT INTO orders (external_id, customer_id, ordered_at, total, currency, status, items,
                            created_at, updated_at)
        SELECT s.external_id, c.id, s.ordered_at, s.total, s.currency, s.status, s.items, :now, :now
        FROM {s} AS s JOIN customers AS c ON c.external_id = s.customer_external_id
        WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.external_id = s.external_id)"""),
        {"now": now}).rowcount
    return inserted, updated
