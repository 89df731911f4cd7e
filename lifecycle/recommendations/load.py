"""What to suggest to the customers of a batch of mails: one query for the whole batch.

For each customer, the products most often bought by the same customers as
what they bought (:mod:`.compute`), scored by the sum of those counts over what
they own, excluding what they own (a SKU in any of their completed or pending
orders up to the mail's moment: also those bought since the last full refresh).
Ties go to the SKU first in byte order.  **Cold start:** when that gives fewer than
:data:`SUGGESTIONS` (a first-time buyer of a product nobody else bought, a
customer without orders, or a shop before its first full refresh with pairs),
the rest are the best sellers (most distinct buyers) they do not own, among the
:data:`POPULAR` best sellers: a safe suggestion beats an empty block.  Before any
full refresh there are no products and so no suggestions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from babel import Locale
from sqlalchemy import Connection, bindparam, text

from lifecycle.models.base import UTCDateTime
from lifecycle.money import money
from lifecycle.recommendations.compute import lines_sql
from lifecycle.recommendations.urls import safe_url

#: Products suggested per customer at most.
SUGGESTIONS = 3
#: Best sellers considered for the cold start (a customer owning nearly all of them gets
#: fewer suggestions).
POPULAR = 30
#: Orders whose products a customer already has (pending: paid for or about to be).
OWNING = ("completed", "pending")


@dataclass(frozen=True)
class Suggestion:
    sku: str
    name: str
    price: Decimal | None
    currency: str | None
    url: str | None
    image_url: str | None

    def context(self, locale: Locale | str) -> dict[str, str | None]:
        """The template's view: price formatted for ``locale`` in the product's currency."""
        price = (money(self.price, self.currency, locale)
                 if self.price is not None and self.currency else None)
        return {"name": self.name, "sku": self.sku, "price": price, "url": self.url,
                "image_url": self.image_url}


def _decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value is not None else None
    except InvalidOperation:
        return None


def _query(pg: bool) -> str:
    collate = ' COLLATE "C"' if pg else ""
    statuses = ", ".join(f"'{s}'" for s in OWNING)
    owned = lines_sql(pg, f"o.customer_id IN :ids AND o.status IN ({statuses}) "
                          "AND o.ordered_at <= :as_of")
    return f"""
        WITH owned AS (SELECT DISTINCT customer_id, sku FROM ({owned}) AS l),
        bought_with AS (
            SELECT ow.customer_id, cp.other_sku AS sku, SUM(cp.customers) AS score
            FROM owned AS ow JOIN co_purchases AS cp ON cp.sku = ow.sku
            WHERE NOT EXISTS (SELECT 1 FROM owned AS x
                              WHERE x.customer_id = ow.customer_id AND x.sku = cp.other_sku)
            GROUP BY ow.customer_id, cp.other_sku),
        popular AS (SELECT sku, buyers FROM products
                    ORDER BY buyers DESC, sku{collate} LIMIT {POPULAR}),
        candidates AS (
            SELECT customer_id, sku, 0 AS tier, score FROM bought_with
            UNION ALL
            SELECT c.id, p.sku, 1, p.buyers FROM customers AS c CROSS JOIN popular AS p
            WHERE c.id IN :ids
            AND NOT EXISTS (SELECT 1 FROM owned AS x WHERE x.customer_id = c.id AND x.sku = p.sku)
            AND NOT EXISTS (SELECT 1 FROM bought_with AS w
                            WHERE w.customer_id = c.id AND w.sku = p.sku)),
        ranked AS (
            SELECT customer_id, sku, ROW_NUMBER() OVER (
                PARTITION BY customer_id ORDER BY tier, score DESC, sku{collate}) AS rn
            FROM candidates)
        SELECT r.customer_id, r.rn, p.sku, COALESCE(p.name, p.sku) AS name, p.price,
               p.currency, p.url, p.image_url
        FROM ranked AS r JOIN products AS p ON p.sku = r.sku
        WHERE r.rn <= {SUGGESTIONS}
        ORDER BY r.customer_id, r.rn"""


def load_suggestions(conn: Connection, customer_ids: Iterable[int],
                     as_of: datetime) -> dict[int, list[Suggestion]]:
    """Up to :data:`SUGGESTIONS` products for each of ``customer_ids``, best first, in one
    query (customers with none are left out)."""
    ids = sorted(set(customer_ids))
    found: dict[int, list[Suggestion]] = {}
    if not ids:
        return found
    statement = text(_query(conn.dialect.name == "postgresql")).bindparams(
        bindparam("ids", expanding=True), bindparam("as_of", type_=UTCDateTime()))
    for row in conn.execute(statement, {"ids": ids, "as_of": as_of}):
        price = _decimal(row.price)
        found.setdefault(row.customer_id, []).append(Suggestion(
            sku=row.sku, name=row.name, price=price,
            currency=row.currency if price is not None else None,
            url=safe_url(row.url), image_url=safe_url(row.image_url)))
    return found
