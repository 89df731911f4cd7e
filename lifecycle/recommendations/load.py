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

A batch's queries read a few indexed rows per customer (and the lines of its
customers' orders, for what they own): the scoring is done once per refresh, the
ranking of a few candidates per customer here, not in SQL.
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


def _in_ids(pg: bool, name: str = "ids") -> str:
    """SQL: among ``:name`` (on PostgreSQL one array parameter, so the statement's text is the
    same for any batch and the driver parses it once)."""
    return f"= ANY(CAST(:{name} AS {'bigint' if name == 'ids' else 'text'}[]))" if pg \
        else f"IN :{name}"


def _owned_sql(pg: bool) -> str:
    """SQL: the pairs (customer, SKU) among ``:ids`` × ``:skus`` where the customer has the SKU in
    an order that counts as owning it up to ``:as_of`` (read out of the orders' JSON items)."""
    statuses = ", ".join(f"'{s}'" for s in OWNING)
    if pg:
        sku = "(e.item ->> 'sku')"
        source = ("orders AS o CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN "
                  "jsonb_typeof(o.items) = 'array' THEN o.items ELSE '[]'::jsonb END) AS e(item)")
    else:
        sku = "CAST(json_extract(e.value, '$.sku') AS TEXT)"
        source = "orders AS o, json_each(CASE WHEN json_type(o.items) = 'array' THEN o.items " \
                 "ELSE '[]' END) AS e"
    return (f"SELECT DISTINCT o.customer_id, {sku} AS sku FROM {source} "
            f"WHERE o.customer_id {_in_ids(pg)} AND o.status IN ({statuses}) "
            f"AND o.ordered_at <= :as_of AND {sku} {_in_ids(pg, 'skus')}")


@dataclass(frozen=True)
class _Statements:
    suggested: TextClause
    popular: TextClause
    owned: TextClause
    products: TextClause


@lru_cache(maxsize=2)
def _statements(pg: bool) -> _Statements:
    def among(sql: str, *names: str) -> TextClause:
        return text(sql).bindparams(*(bindparam(n, expanding=not pg) for n in names))

    return _Statements(
        suggested=among("SELECT customer_id, sku, score FROM customer_suggestions "
                        f"WHERE customer_id {_in_ids(pg)}", "ids"),
        popular=text(f"SELECT sku, buyers FROM products WHERE best_seller <= {POPULAR}"),
        owned=among(_owned_sql(pg), "ids", "skus").bindparams(
            bindparam("as_of", type_=UTCDateTime())),
        products=among("SELECT sku, COALESCE(name, sku) AS name, price, currency, url, "
                       f"image_url FROM products WHERE sku {_in_ids(pg, 'skus')}", "skus"))


def load_suggestions(conn: Connection, customer_ids: Iterable[int],
                     as_of: datetime) -> dict[int, list[Suggestion]]:
    """Up to :data:`SUGGESTIONS` products for each of ``customer_ids``, best first (customers
    with none are left out), in four short queries for the whole batch, whatever its size:
    their ranked suggestions and the best sellers (indexed rows), which of those SKUs each
    already owns, and the products chosen; the ranking is done here (module doc)."""
    ids = sorted(set(customer_ids))
    found: dict[int, list[Suggestion]] = {}
    if not ids:
        return found
    sql = _statements(conn.dialect.name == "postgresql")
    suggested: dict[int, list[tuple[int, str]]] = {}
    for row in conn.execute(sql.suggested, {"ids": ids}):
        suggested.setdefault(row.customer_id, []).append((-int(row.score), row.sku))
    # Best sellers: most buyers, then the SKU's bytes (str order is code point order, which is
    # UTF-8's byte order, as the refresh ranks ties).
    popular = sorted((-int(row.buyers), row.sku) for row in conn.execute(sql.popular))
    if not popular and not suggested:
        return found  # before the first full refresh
    candidates = {sku for rows in suggested.values() for _score, sku in rows}
    candidates.update(sku for _buyers, sku in popular)
    owned = set(conn.execute(sql.owned, {"ids": ids, "skus": sorted(candidates),
                                         "as_of": as_of}).tuples())
    chosen: dict[int, list[str]] = {}
    for customer_id in ids:
        picked: list[str] = []
        for _rank, sku in (*sorted(suggested.get(customer_id, ())), *popular):
            if sku not in picked and (customer_id, sku) not in owned:
                picked.append(sku)
                if len(picked) == SUGGESTIONS:
                    break
        if picked:
            chosen[customer_id] = picked
    wanted = sorted({sku for skus in chosen.values() for sku in skus})
    products = {row.sku: row for row in conn.execute(sql.products, {"skus": wanted})} \
        if wanted else {}
    for customer_id, skus in chosen.items():
        for sku in skus:
            row = products.get(sku)
            if row is None:
                continue  # (suggestions and products are replaced together: not expected)
            price = _decimal(row.price)
            found.setdefault(customer_id, []).append(Suggestion(
                sku=row.sku, name=row.name, price=price,
                currency=row.currency if price is not None else None,
                url=safe_url(row.url), image_url=safe_url(row.image_url)))
    return found
