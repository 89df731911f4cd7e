"""What to suggest to the customers of a batch of mails: one query for the whole batch.

For each customer, the products most often bought by the same customers as
what they bought, as the last full refresh ranked them (``customer_suggestions``,
:mod:`.compute`: scored by the sum of those counts over what they owned, ties by
SKU in byte order), leaving out what they own by the mail's moment (a SKU in any
of their completed or pending orders: also those bought since the refresh).

**Cold start:** when that gives fewer than :data:`SUGGESTIONS` (a first-time buyer
of a product nobody else bought, a customer without orders or new since the
refresh), the rest are the best sellers (most distinct buyers, then SKU) among the
:data:`POPULAR` first that they do not own: a safe suggestion beats an empty block.
Before the first full refresh there are no products and so no suggestions.

The query reads a few indexed rows per customer: the scoring is done once per
refresh, not once per mail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale
from sqlalchemy import Connection, TextClause, bindparam, text

from lifecycle.models.base import UTCDateTime
from lifecycle.money import money
from lifecycle.recommendations.urls import safe_url

#: Products suggested per customer at most.
SUGGESTIONS = 3
#: Best sellers considered for the cold start (a customer owning nearly all of them gets
#: fewer suggestions).
POPULAR = 10
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

    def context(self, locale: Locale | str, currency: str | None = None) -> dict[str, str | None]:
        """The template's view: price formatted for ``locale``, shown only in ``currency`` (the
        customer's own: a product last sold in euros is shown to a customer paying in
        kroner without a price, never in another customer's currency); None: any."""
        price = (_price(str(self.price), self.currency, str(locale))
                 if self.price is not None and self.currency
                 and (currency is None or self.currency == currency) else None)
        return {"name": self.name, "sku": self.sku, "price": price, "url": self.url,
                "image_url": self.image_url}


@lru_cache(maxsize=4096)
def _price(amount: str, currency: str, locale: str) -> str:
    """A product's price as the locale writes it (the same few prices, mail after mail)."""
    return money(amount, currency, locale)


def _decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value is not None else None
    except InvalidOperation:
        return None


def _owns(pg: bool, customer: str, sku: str) -> str:
    """SQL: the customer has ``sku`` in an order that counts as owning it (no set-returning
    function on PostgreSQL: JSON containment of the orders of one customer)."""
    statuses = ", ".join(f"'{s}'" for s in OWNING)
    if pg:
        has = f"o.items @> jsonb_build_array(jsonb_build_object('sku', {sku}))"
    else:
        has = (f"EXISTS (SELECT 1 FROM json_each(o.items) AS e "
               f"WHERE json_extract(e.value, '$.sku') = {sku})")
    # (o.customer_id IN the batch as well: the planner then reads the batch's orders by
    # their index rather than hashing every order)
    return (f"EXISTS (SELECT 1 FROM orders AS o WHERE o.customer_id = {customer} "
            f"AND o.customer_id {_in_ids(pg)} "
            f"AND o.status IN ({statuses}) AND o.ordered_at <= :as_of AND {has})")


def _in_ids(pg: bool) -> str:
    """SQL: among the batch's customers, ``:ids`` (on PostgreSQL one array parameter, so the
    statement's text is the same for any batch and the driver parses it once)."""
    return "= ANY(CAST(:ids AS bigint[]))" if pg else "IN :ids"


def _query(pg: bool) -> str:
    collate = ' COLLATE "C"' if pg else ""
    return f"""
        WITH popular AS MATERIALIZED (
            SELECT sku, buyers FROM products WHERE best_seller <= {POPULAR}),
        candidates AS (
            SELECT s.customer_id, s.sku, 0 AS tier, s.score FROM customer_suggestions AS s
            WHERE s.customer_id {_in_ids(pg)}
            UNION ALL
            SELECT c.id, p.sku, 1, p.buyers FROM customers AS c CROSS JOIN popular AS p
            WHERE c.id {_in_ids(pg)}),
        kept AS (
            SELECT customer_id, sku, tier, score, ROW_NUMBER() OVER (
                PARTITION BY customer_id, sku ORDER BY tier) AS seen
            FROM candidates AS k WHERE NOT {_owns(pg, "k.customer_id", "k.sku")}),
        ranked AS (
            SELECT customer_id, sku, ROW_NUMBER() OVER (
                PARTITION BY customer_id ORDER BY tier, score DESC, sku{collate}) AS rn
            FROM kept WHERE seen = 1)
        SELECT r.customer_id, r.rn, p.sku, COALESCE(p.name, p.sku) AS name, p.price,
               p.currency, p.url, p.image_url
        FROM ranked AS r JOIN products AS p ON p.sku = r.sku
        WHERE r.rn <= {SUGGESTIONS}
        ORDER BY r.customer_id, r.rn"""


@lru_cache(maxsize=2)
def _statement(pg: bool) -> TextClause:
    return text(_query(pg)).bindparams(bindparam("ids", expanding=not pg),
                                       bindparam("as_of", type_=UTCDateTime()))


def load_suggestions(conn: Connection, customer_ids: Iterable[int],
                     as_of: datetime) -> dict[int, list[Suggestion]]:
    """Up to :data:`SUGGESTIONS` products for each of ``customer_ids``, best first, in one
    query (customers with none are left out)."""
    ids = sorted(set(customer_ids))
    found: dict[int, list[Suggestion]] = {}
    if not ids:
        return found
    pg = conn.dialect.name == "postgresql"
    statement = _statement(pg)
    for row in conn.execute(statement, {"ids": ids, "as_of": as_of}):
        price = _decimal(row.price)
        found.setdefault(row.customer_id, []).append(Suggestion(
            sku=row.sku, name=row.name, price=price,
            currency=row.currency if price is not None else None,
            url=safe_url(row.url), image_url=safe_url(row.image_url)))
    return found
