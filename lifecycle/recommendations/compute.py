"""Products, co-purchase counts and each customer's suggestions from order items, set-based,
with the full segment refresh.

:func:`refresh_products` runs inside the full refresh's transaction (see
:func:`lifecycle.segments.compute.refresh_all`) and replaces the three tables'
contents there, so a reader sees either the old or the new results, never a mix:

1. every line with a SKU of every completed order up to ``as_of`` is read out of
   the orders' JSON items into a temporary table, in one ``INSERT … SELECT``
   (``jsonb_array_elements`` on PostgreSQL, ``json_each`` on SQLite);
2. ``products``: per SKU, the name and unit price (with its order's currency) of
   its latest line (by ``ordered_at``, then order, then line), the ``url`` and
   ``image_url`` of the latest line that has each (a newer line without one keeps
   it), its number of distinct buyers and its rank by them (``best_seller``, ties
   by SKU);
3. ``co_purchases``: for each two SKUs, how many distinct customers bought both,
   in any of their orders; per SKU only its :data:`PARTNERS_KEPT` strongest partners;
4. ``customer_suggestions``: per customer, the SKUs they do not own ranked by the sum
   of their counts with those they own (each owned SKU's :data:`PARTNERS_SCORED`
   strongest partners; ties by SKU, in byte order), the first
   :data:`SUGGESTIONS_KEPT`.  A mail reads these (:mod:`.load`): a few indexed rows per
   customer instead of scoring at send time.

**Same customer, not same order.**  Most shop orders hold one or two lines, so
pairs within an order are few and mostly accessories bought at once; a lifecycle
mail goes out between orders, and what it should suggest is what people who
bought the same things went on to buy later.  Counting distinct customers (not
orders) keeps one frequent buyer from weighing more than anyone else.  A customer
with more than :data:`MAX_SKUS_PER_CUSTOMER` distinct SKUs (a reseller, a test
account) contributes no pairs: their pairs grow with the square of their SKUs and
say little about what goes together; they are suggested best sellers (:mod:`.load`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, text

from lifecycle.models.base import UTCDateTime

LINES_TABLE = "lc_rec_lines"
OWNED_TABLE = "lc_rec_owned"
PAIRS_TABLE = "lc_rec_pairs"
#: A customer with more distinct SKUs than this adds nothing to the co-purchase counts.
MAX_SKUS_PER_CUSTOMER = 100
#: Partners kept per SKU, strongest first (ties by SKU): enough for three suggestions to
#: a customer who owns many of them, and the lookup of a batch of mails stays small.
PARTNERS_KEPT = 20
#: Partners of each owned SKU that score a customer's suggestions (the strongest).
PARTNERS_SCORED = 10
#: Suggestions kept per customer: three to show and some to spare for what they buy before
#: the next full refresh (the mail leaves out what they own by then).
SUGGESTIONS_KEPT = 6
#: Longest url or image_url taken from an order line (longer ones were never accepted).
MAX_URL = 2000


def lines_sql(pg: bool, orders_where: str) -> str:
    """SELECT of the lines with a SKU of the orders ``orders_where`` (over ``o``) picks:
    customer_id, order_id, line, ordered_at, currency, sku, name, price, url, image_url."""
    if pg:
        def field(key: str) -> str:
            return f"(e.item ->> '{key}')"
        # LIMIT the array's own length: all its elements, but the planner, which guesses
        # 100 for any set-returning function, then guesses a tenth of that (a shop's
        # order has one to three lines); its plans for a batch of mails depend on it.
        source = ("orders AS o CROSS JOIN LATERAL (SELECT item, line FROM "
                  "jsonb_array_elements(o.items) WITH ORDINALITY AS a(item, line) "
                  "LIMIT jsonb_array_length(o.items)) AS e")
        line = "e.line"
        price_ok = f"{field('price')} ~ '^[0-9]{{1,12}}([.][0-9]{{1,2}})?$'"
    else:
        def field(key: str) -> str:
            return f"CAST(json_extract(e.value, '$.{key}') AS TEXT)"
        source = "orders AS o, json_each(o.items) AS e"
        line = "CAST(e.key AS INTEGER)"
        price_ok = (f"{field('price')} GLOB '[0-9]*' "
                    f"AND {field('price')} NOT GLOB '*[^0-9.]*' AND length({field('price')}) <= 15")
    urls = {key: (f"CASE WHEN length({field(key)}) <= {MAX_URL} "
                  f"AND ({field(key)} LIKE 'http://%' OR {field(key)} LIKE 'https://%') "
                  f"THEN {field(key)} END") for key in ("url", "image_url")}
    return f"""
        SELECT o.customer_id, o.id AS order_id, {line} AS line, o.ordered_at, o.currency,
               {field('sku')} AS sku, {field('name')} AS name,
               CASE WHEN {price_ok} THEN {field('price')} END AS price,
               {urls['url']} AS url, {urls['image_url']} AS image_url
        FROM {source}
        WHERE {orders_where} AND COALESCE({field('sku')}, '') <> ''"""


def _drop(conn: Connection, *tables: str) -> None:
    for table in tables:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def refresh_products(conn: Connection, as_of: datetime) -> tuple[int, int]:
    """Replace ``products`` and ``co_purchases`` with what the completed orders up to
    ``as_of`` say, in ``conn``'s transaction; (products, pairs) written."""
    pg = conn.dialect.name == "postgresql"
    collate = ' COLLATE "C"' if pg else ""
    stamp = "TIMESTAMPTZ" if pg else "TIMESTAMP"
    # SKUs compare byte by byte: the same order on both backends, and PostgreSQL's sorts of
    # every line and pair skip the locale's (much slower) comparison.
    sku = f"TEXT{collate} NOT NULL"
    _drop(conn, LINES_TABLE, OWNED_TABLE, PAIRS_TABLE)
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {LINES_TABLE} (customer_id BIGINT NOT NULL, "
        f"order_id BIGINT NOT NULL, line INTEGER NOT NULL, ordered_at {stamp} NOT NULL, "
        f"currency VARCHAR(3), sku {sku}, name TEXT, price VARCHAR(32), url TEXT, "
        f"image_url TEXT)")
    conn.execute(text(
        f"INSERT INTO {LINES_TABLE} "
        + lines_sql(pg, "o.status = 'completed' AND o.ordered_at <= :as_of"))
        .bindparams(bindparam("as_of", type_=UTCDateTime())), {"as_of": as_of})

    conn.exec_driver_sql("DELETE FROM customer_suggestions")
    conn.exec_driver_sql("DELETE FROM co_purchases")
    conn.exec_driver_sql("DELETE FROM products")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {OWNED_TABLE} (customer_id BIGINT NOT NULL, "
                         f"sku {sku}, skus INTEGER NOT NULL)")
    conn.exec_driver_sql(f"""
        INSERT INTO {OWNED_TABLE} (customer_id, sku, skus)
        SELECT customer_id, sku, COUNT(*) OVER (PARTITION BY customer_id)
        FROM {LINES_TABLE} GROUP BY customer_id, sku""")
    # One sort of the lines, newest first per SKU: the latest line (rn = 1) gives the name
    # and price; a running count of the lines with a link marks the latest that has one
    # (the line whose count is 1 and has a link), for url and image_url each.  One pass
    # over the sorted lines, then one row per SKU; buyers by hashing.
    order = "PARTITION BY sku ORDER BY ordered_at DESC, order_id DESC, line DESC"
    running = f"({order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    conn.exec_driver_sql(f"""
        INSERT INTO products (sku, name, price, currency, url, image_url, buyers,
                              best_seller, last_ordered_at)
        SELECT l.sku, l.name, l.price, CASE WHEN l.price IS NOT NULL THEN l.currency END,
               l.url, l.image_url, b.buyers,
               ROW_NUMBER() OVER (ORDER BY b.buyers DESC, l.sku), l.ordered_at
        FROM (SELECT sku, MAX(CASE WHEN rn = 1 THEN name END) AS name,
                     MAX(CASE WHEN rn = 1 THEN price END) AS price,
                     MAX(CASE WHEN rn = 1 THEN currency END) AS currency,
                     MAX(CASE WHEN rn = 1 THEN ordered_at END) AS ordered_at,
                     MAX(CASE WHEN urls = 1 THEN url END) AS url,
                     MAX(CASE WHEN images = 1 THEN image_url END) AS image_url
              FROM (SELECT sku, name, price, currency, ordered_at, url, image_url,
                           ROW_NUMBER() OVER {running} AS rn,
                           COUNT(url) OVER {running} AS urls,
                           COUNT(image_url) OVER {running} AS images
                    FROM {LINES_TABLE}) AS w
              GROUP BY sku) AS l
        JOIN (SELECT sku, COUNT(*) AS buyers FROM {OWNED_TABLE} GROUP BY sku) AS b
          ON b.sku = l.sku""")
    _drop(conn, LINES_TABLE)
    if pg:
        conn.exec_driver_sql(f"ANALYZE {OWNED_TABLE}")
    else:
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX {OWNED_TABLE}_ix ON {OWNED_TABLE} "
                             "(customer_id, sku)")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {PAIRS_TABLE} (sku {sku}, other_sku {sku}, "
                         "customers INTEGER NOT NULL, rn INTEGER NOT NULL)")
    conn.exec_driver_sql(f"""
        INSERT INTO {PAIRS_TABLE} (sku, other_sku, customers, rn)
        SELECT sku, other_sku, customers, rn FROM (
            SELECT a.sku, b.sku AS other_sku, COUNT(*) AS customers,
                   ROW_NUMBER() OVER (PARTITION BY a.sku ORDER BY COUNT(*) DESC, b.sku) AS rn
            FROM {OWNED_TABLE} AS a JOIN {OWNED_TABLE} AS b
              ON b.customer_id = a.customer_id AND b.sku <> a.sku
            WHERE a.skus BETWEEN 2 AND {MAX_SKUS_PER_CUSTOMER}
            GROUP BY a.sku, b.sku) AS ranked
        WHERE rn <= {PARTNERS_KEPT}""")
    conn.exec_driver_sql(f"INSERT INTO co_purchases (sku, other_sku, customers) "
                         f"SELECT sku, other_sku, customers FROM {PAIRS_TABLE}")
    if pg:
        conn.exec_driver_sql(f"ANALYZE {PAIRS_TABLE}")
    else:
        conn.exec_driver_sql(f"CREATE INDEX {PAIRS_TABLE}_ix ON {PAIRS_TABLE} (sku)")
    conn.exec_driver_sql(f"""
        INSERT INTO customer_suggestions (customer_id, rank, sku, score)
        SELECT customer_id, rn, sku, score FROM (
            SELECT g.customer_id, g.sku, g.score,
                   ROW_NUMBER() OVER (PARTITION BY g.customer_id
                                      ORDER BY g.score DESC, g.sku) AS rn
            FROM (SELECT ow.customer_id, cp.other_sku AS sku, SUM(cp.customers) AS score
                  FROM {OWNED_TABLE} AS ow JOIN {PAIRS_TABLE} AS cp
                    ON cp.sku = ow.sku AND cp.rn <= {PARTNERS_SCORED}
                  WHERE ow.skus <= {MAX_SKUS_PER_CUSTOMER}
                  GROUP BY ow.customer_id, cp.other_sku) AS g
            WHERE NOT EXISTS (SELECT 1 FROM {OWNED_TABLE} AS x
                              WHERE x.customer_id = g.customer_id AND x.sku = g.sku)
        ) AS ranked
        WHERE rn <= {SUGGESTIONS_KEPT}""")
    counts = conn.exec_driver_sql(
        f"SELECT (SELECT COUNT(*) FROM products), (SELECT COUNT(*) FROM {PAIRS_TABLE})").one()
    _drop(conn, OWNED_TABLE, PAIRS_TABLE)
    if pg:  # every row is new: without statistics a mail batch's lookup plans a scan of all
        conn.exec_driver_sql("ANALYZE products, customer_suggestions")
    return int(counts[0]), int(counts[1])
