"""Bulk upsert of validated rows: stage, then merge in set-based SQL.

Rows stream into a temporary staging table (COPY on PostgreSQL, batched
executemany on SQLite).  Then, in the caller's transaction:

1. duplicates inside the file are reported and the last occurrence kept;
2. (orders) customers named but not known are created with what the file says;
3. (orders) the customers whose completed orders change are noted (for the
   segment refresh) and status changes of orders on the timeline recorded;
4. one ``UPDATE … FROM staging`` changes only rows whose values differ;
5. one ``INSERT … SELECT`` adds rows not there yet;
6. (orders) one ``INSERT … SELECT`` puts each newly completed order on the
   timeline (``order_placed``, once per order).

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
        # currency, status and items: None when the row does not give them (see
        # fill_known_orders, which runs before anything reads them)
        Column("currency", String(3)),
        Column("default_currency", String(3)),
        Column("status", String(16)),
        Column("items", JSONType),
        Column("email", String(320)),
        Column("first_name", String(200)),
        Column("last_name", String(200)),
        Column("timezone", String(64)),
        Column("discount_codes", JSONType, nullable=False),
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
                    write([row.get(n) for n in plain] + [dumps_json(row[n]) for n in documents])
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


#: Advisory lock key (PostgreSQL) of live order posts, taken per bucket of order ids.
ORDER_LOCK_KEY = 7_414_002
#: Buckets of order ids a live post locks (at most this many locks per transaction: PostgreSQL's
#: lock table is shared, 64 per connection by default).
ORDER_LOCK_BUCKETS = 256


def lock_orders(conn: Connection, table: Table) -> None:
    """(PostgreSQL) Lock the staged orders' ids, by bucket and in bucket order, until the
    transaction ends: two live posts of the same order (say, placed and then refunded a moment
    later) run one after the other, so the second sees the first's order and updates it,
    instead of its insert being skipped as a conflict and its values lost.  Imports of
    history do not lock (they would hold live orders up for their whole length)."""
    if conn.dialect.name != "postgresql":
        return  # SQLite: one writer at a time already
    conn.execute(text(f"""
        SELECT COUNT(pg_advisory_xact_lock(:key, bucket)) FROM (
            SELECT DISTINCT hashtext(external_id) & {ORDER_LOCK_BUCKETS - 1} AS bucket
            FROM {table.name} ORDER BY bucket) AS ordered"""), {"key": ORDER_LOCK_KEY})


def create_missing_customers(conn: Connection, table: Table, now: datetime) -> int:
    """Create customers that staged orders name but the database does not know yet.

    In id order, skipping any that a concurrent transaction creates first: two requests
    with the first orders of the same new customers wait for each other instead of one
    failing (or deadlocking) on the unique id.
    """
    return conn.execute(_now(f"""
        INSERT INTO customers (external_id, email, first_name, last_name, timezone,
                               attributes, marketing_consent, created_at, updated_at)
        SELECT s.customer_external_id, MAX(s.email), MAX(s.first_name), MAX(s.last_name),
               MAX(s.timezone), '{{}}', TRUE, MIN(s.ordered_at), :now
        FROM {table.name} AS s
        WHERE NOT EXISTS (SELECT 1 FROM customers AS c
                          WHERE c.external_id = s.customer_external_id)
        GROUP BY s.customer_external_id ORDER BY s.customer_external_id
        ON CONFLICT (external_id) DO NOTHING"""), {"now": now}).rowcount


def unknown_without_email(conn: Connection, table: Table) -> int:
    """How many customers the staged orders name that the database does not know and whose
    orders give no email: :func:`create_missing_customers` creates them (their orders count
    for segments and results) but no mail can reach them until an email is given."""
    return int(conn.execute(text(f"""
        SELECT COUNT(*) FROM (
            SELECT s.customer_external_id FROM {table.name} AS s
            WHERE NOT EXISTS (SELECT 1 FROM customers AS c
                              WHERE c.external_id = s.customer_external_id)
            GROUP BY s.customer_external_id HAVING MAX(s.email) IS NULL) AS n""")).scalar_one())


def fill_known_orders(conn: Connection, table: Table) -> None:
    """Complete the staged orders whose row left out currency, status or items (a blank cell
    or no column): with what is known of the order, else the import's default currency,
    ``completed`` and no lines.  A blank cell never erases what is known."""
    s = table.name
    no_items = "items IS NULL OR CAST(items AS TEXT) = 'null'"  # (a JSON null when staged)
    conn.execute(text(f"""
        UPDATE {s} SET
          currency = COALESCE(currency, (SELECT o.currency FROM orders AS o
                                         WHERE o.external_id = {s}.external_id),
                              default_currency),
          status = COALESCE(status, (SELECT o.status FROM orders AS o
                                     WHERE o.external_id = {s}.external_id), 'completed'),
          items = CASE WHEN {no_items} THEN COALESCE(
                    (SELECT o.items FROM orders AS o WHERE o.external_id = {s}.external_id),
                    :no_lines) ELSE items END
        WHERE currency IS NULL OR status IS NULL OR {no_items}""").bindparams(
        bindparam("no_lines", [], type_=table.c["items"].type)))


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
        WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.external_id = s.external_id)
        ORDER BY s.external_id
        ON CONFLICT (external_id) DO NOTHING"""),
        {"now": now}).rowcount
    return inserted, updated


#: Temporary table of the customers whose completed orders the last orders import changed.
CHANGED_TABLE = "lc_import_changed"


def note_changed_customers(conn: Connection, table: Table) -> int:
    """Keep in :data:`CHANGED_TABLE` the customers whose completed orders the staged orders
    change (run before :func:`merge_orders`): a new completed order, a completed order whose
    time, total, items, status or customer changes, an order that becomes completed.  How many.
    """
    s = table.name
    changed = " OR ".join(_differs(conn, f"o.{col}", f"s.{col}") for col in (
        "ordered_at", "total", "status", "items"))
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {CHANGED_TABLE}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {CHANGED_TABLE} "
                         "(customer_id BIGINT NOT NULL PRIMARY KEY)")
    count = conn.execute(text(f"""
        INSERT INTO {CHANGED_TABLE} (customer_id)
        SELECT c.id FROM {s} AS s JOIN customers AS c ON c.external_id = s.customer_external_id
        LEFT JOIN orders AS o ON o.external_id = s.external_id
        WHERE (o.id IS NULL AND s.status = 'completed')
           OR (o.id IS NOT NULL AND (o.status = 'completed' OR s.status = 'completed')
               AND (o.customer_id <> c.id OR {changed}))
        UNION
        SELECT o.customer_id FROM {s} AS s
        JOIN customers AS c ON c.external_id = s.customer_external_id
        JOIN orders AS o ON o.external_id = s.external_id
        WHERE o.customer_id <> c.id AND o.status = 'completed'""")).rowcount
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {CHANGED_TABLE}")
    return count


def _order_data(conn: Connection, n: str) -> str:
    """SQL for the ``order_placed`` data of the order row aliased ``n`` (with its ``nth``):
    order id, number among the customer's completed orders, total with its cents and currency, and the
    sorted distinct categories and SKUs of its line items — the same document on both
    backends (keys in :func:`dumps_json`'s order)."""
    if conn.dialect.name == "postgresql":
        def values(key: str) -> str:
            return (f"COALESCE((SELECT jsonb_agg(v ORDER BY v COLLATE \"C\") FROM ("
                    f"SELECT DISTINCT e ->> '{key}' AS v FROM jsonb_array_elements({n}.items) AS e"
                    f" WHERE COALESCE(e ->> '{key}', '') <> '') AS x), '[]'::jsonb)")
        return (f"jsonb_build_object('categories', {values('category')}, 'currency', {n}.currency, "
                f"'nth', {n}.nth, "
                f"'order_id', {n}.external_id, 'skus', {values('sku')}, "
                f"'total', CAST({n}.total AS TEXT))")

    def items(key: str) -> str:
        return (f"json((SELECT json_group_array(v) FROM ("
                f"SELECT DISTINCT json_extract(e.value, '$.{key}') AS v "
                f"FROM json_each({n}.items) AS e WHERE COALESCE(v, '') <> '' ORDER BY v)))")
    return (f"json_object('categories', {items('category')}, 'currency', {n}.currency, "
            f"'nth', {n}.nth, "
            f"'order_id', {n}.external_id, 'skus', {items('sku')}, "
            f"'total', printf('%.2f', {n}.total))")


def _order_key(column: str) -> str:
    return f"SUBSTR('order_placed:' || {column}, 1, 255)"


def coded_orders(conn: Connection, table: Table) -> list[Any]:
    """The staged orders that carry discount codes, with their customers' row ids: ``(order
    id, customer id, ordered at, status, codes)`` (few: most orders carry none)."""
    length = "jsonb_array_length" if conn.dialect.name == "postgresql" else "json_array_length"
    return list(conn.execute(text(f"""
        SELECT s.external_id, c.id AS customer_id, s.ordered_at, s.status, s.discount_codes
        FROM {table.name} AS s JOIN customers AS c ON c.external_id = s.customer_external_id
        WHERE {length}(s.discount_codes) > 0 ORDER BY s.external_id""").columns(
        ordered_at=UTCDateTime(), discount_codes=JSONType)))


def undoing_orders(conn: Connection, table: Table) -> list[str]:
    """The staged orders that are cancelled or refunded and redeemed an offer: their ids
    (their redemptions are taken back, :func:`lifecycle.offers.service.undo`)."""
    return list(conn.execute(text(f"""
        SELECT DISTINCT o.redeemed_order_id FROM offers AS o
        JOIN {table.name} AS s ON s.external_id = o.redeemed_order_id
        WHERE o.redeemed_at IS NOT NULL AND s.status IN ('cancelled', 'refunded')
        ORDER BY o.redeemed_order_id""")).scalars())


def announce_orders(conn: Connection, table: Table, now: datetime, channel: str) -> int:
    """An ``order_placed`` touchpoint (source key ``order_placed:<order id>``) for each staged
    order that is completed and has none yet, in one ``INSERT … SELECT``; how many.

    ``channel`` is ``shop`` for orders arriving live (they fire order triggers) and
    ``import`` for history (:mod:`lifecycle.flows.triggers` skips those).  (The ``WITH``
    goes inside the ``INSERT``: sqlite3 counts no rows of a statement that starts with it.)
    """
    s = table.name
    return conn.execute(_now(f"""
        INSERT INTO touchpoints (customer_id, kind, channel, occurred_at, recorded_at,
                                 source_key, data)
        WITH fresh AS MATERIALIZED (
            SELECT o.id, o.customer_id FROM orders AS o JOIN {s} AS s
              ON s.external_id = o.external_id
            WHERE o.status = 'completed' AND NOT EXISTS (
                SELECT 1 FROM touchpoints AS t WHERE t.source_key = {_order_key('o.external_id')})
        ), numbered AS (
            SELECT o.id, o.customer_id, o.external_id, o.ordered_at, o.total, o.currency,
                   o.items, ROW_NUMBER() OVER (PARTITION BY o.customer_id
                                      ORDER BY o.ordered_at, o.id) AS nth
            FROM orders AS o
            WHERE o.status = 'completed'
              AND o.customer_id IN (SELECT customer_id FROM fresh)
        )
        SELECT n.customer_id, 'order_placed', :channel, n.ordered_at, :now,
               {_order_key('n.external_id')}, {_order_data(conn, 'n')}
        FROM numbered AS n WHERE n.id IN (SELECT id FROM fresh)
        ON CONFLICT (source_key) DO NOTHING"""), {"now": now, "channel": channel}).rowcount


def record_status_changes(conn: Connection, table: Table, now: datetime, channel: str) -> int:
    """An ``order_status_changed`` touchpoint at ``now`` for each order on the timeline (one
    that is or was completed) whose staged status differs (run before :func:`merge_orders`):
    a refund, a cancellation, or completed again; how many."""
    s = table.name
    data = ("jsonb_build_object('currency', s.currency, 'order_id', o.external_id, "
            "'status', s.status, 'total', CAST(s.total AS TEXT), 'was', o.status)"
            if conn.dialect.name == "postgresql" else
            "json_object('currency', s.currency, 'order_id', o.external_id, 'status', s.status, "
            "'total', printf('%.2f', s.total), 'was', o.status)")
    return conn.execute(_now(f"""
        INSERT INTO touchpoints (customer_id, kind, channel, occurred_at, recorded_at, data)
        SELECT o.customer_id, 'order_status_changed', :channel, :now, :now, {data}
        FROM orders AS o JOIN {s} AS s ON s.external_id = o.external_id
        WHERE o.status <> s.status AND (o.status = 'completed' OR EXISTS (
            SELECT 1 FROM touchpoints AS t WHERE t.source_key = {_order_key('o.external_id')}))"""),
        {"now": now, "channel": channel}).rowcount


def take_unknown_without_email(conn: Connection, table: Table) -> list[tuple[int, str]]:
    """The staged customers without an email that the database does not know: ``(line,
    external id)`` in line order, taken out of ``table`` (an email is needed to create a
    customer, not to update one)."""
    found = conn.execute(text(f"""
        SELECT s.line, s.external_id FROM {table.name} AS s
        WHERE s.email IS NULL AND NOT EXISTS (
            SELECT 1 FROM customers AS c WHERE c.external_id = s.external_id)
        ORDER BY s.line""")).all()
    if found:
        conn.execute(text(f"""
            DELETE FROM {table.name} WHERE email IS NULL AND NOT EXISTS (
                SELECT 1 FROM customers AS c WHERE c.external_id = {table.name}.external_id)"""))
    return [(row.line, row.external_id) for row in found]
