"""The variables an email template sees, built from what we know of the customer.

=================  ==========================================================
``customer``       first_name, last_name, email, locale, timezone, attributes
``order``          the order that triggered the flow, else the latest completed
                   one: id, total, currency, ordered_at, date, lines
``last_order``     the latest completed order: id, date (in the customer's zone)
``metrics``        order_count, total_spend (in ``currency``, the reporting currency), currency
``offer``          code, kind, percent, amount, value, currency, expires, url, or None
                   (:mod:`lifecycle.offers.context`)
``recommendation`` a product name to suggest, or None
``shop``           name, url, address, signature
``links``          unsubscribe, preferences, shop, review, referral, nps[0..10]
=================  ==========================================================

The links of a manager's test send or a preview (``test``) carry ``"t": 1`` in
their signed token: the pages behind them say "this was a test mail" and change
nothing for the customer the mail was rendered for (the flag is signed, so a
test link cannot be made into a real one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, case, func, select

from lifecycle.config import Settings
from lifecycle.flows.definitions import Offer
from lifecycle.links import offer_code, sign
from lifecycle.models import Order
from lifecycle.offers.context import offer_vars as offer_variables
from lifecycle.timeutil import zone


def _local_date(instant: datetime, tz: str) -> str:
    local = instant.astimezone(zone(tz))
    return f"{local.day} {local:%B %Y}"


def _order(row: Any, tz: str) -> dict[str, Any]:
    return {"id": row.external_id, "total": f"{Decimal(row.total):.2f}", "currency": row.currency,
            "ordered_at": row.ordered_at.isoformat(), "date": _local_date(row.ordered_at, tz),
            "lines": [{"name": item.get("name") or item.get("sku") or "item",
                       "quantity": item.get("quantity", 1), "price": item.get("price"),
                       "category": item.get("category"), "sku": item.get("sku")}
                      for item in row.items or []]}


def token_data(customer_id: int, message_id: int | None, test: bool = False) -> dict[str, Any]:
    """What a mail's signed tokens name: the customer, the mail, and ``t`` for a test mail."""
    data: dict[str, Any] = {"c": customer_id, "m": message_id or 0}
    if test:
        data["t"] = 1
    return data


def links(settings: Settings, customer_id: int, message_id: int | None,
          referral_code: str | None = None, test: bool = False) -> dict[str, Any]:
    data = token_data(customer_id, message_id, test)
    base = settings.base_url
    feedback = sign(settings.secret_key, "feedback", data)
    return {
        "unsubscribe": f"{base}/u/{sign(settings.secret_key, 'unsubscribe', data)}",
        "preferences": f"{base}/p/{sign(settings.secret_key, 'preferences', data)}",
        "shop": settings.shop_url,
        "review": f"{settings.shop_url}/reviews",
        "referral": f"{settings.shop_url}/?ref={referral_code or feedback[:10]}",
        "nps": [f"{base}/f/{feedback}?score={score}" for score in range(11)],
    }


@dataclass
class Facts:
    """What templates read from the orders of some customers, loaded in one or two queries."""

    latest: dict[int, Any] = field(default_factory=dict)  # customer id -> latest completed order
    #: count of completed orders, spend in the reporting currency (others never added in)
    totals: dict[int, tuple[int, Decimal]] = field(default_factory=dict)
    orders: dict[str, Any] = field(default_factory=dict)  # external id -> order


_orders = Order.__table__


def load_facts(conn: Connection, customer_ids: Iterable[int], order_ids: Iterable[str],
               as_of: datetime, currency: str = "USD") -> Facts:
    """The facts for every mail of a batch at once (completed orders up to ``as_of``).

    One query gives each customer's latest completed order with the count of all of them
    and the sum of those in ``currency``, the shop's reporting currency (window functions);
    a second reads the trigger orders that are not among those (often none: the trigger is
    the latest order).
    """
    ids = sorted(set(customer_ids))
    facts = Facts()
    if not ids:
        return facts
    by_customer = {"partition_by": _orders.c.customer_id}
    ranked = select(
        _orders,
        func.row_number().over(**by_customer, order_by=(_orders.c.ordered_at.desc(),
                                                        _orders.c.id.desc())).label("rn"),
        func.count().over(**by_customer).label("n"),
        func.sum(case((_orders.c.currency == currency, _orders.c.total), else_=0))
        .over(**by_customer).label("spend"),
    ).where(_orders.c.customer_id.in_(ids), _orders.c.status == "completed",
            _orders.c.ordered_at <= as_of).subquery()
    for row in conn.execute(select(ranked).where(ranked.c.rn == 1)):
        facts.latest[row.customer_id] = row
        facts.totals[row.customer_id] = (int(row.n), Decimal(row.spend or 0))
        facts.orders[row.external_id] = row
    wanted = sorted({o for o in order_ids if o} - facts.orders.keys())
    if wanted:
        for row in conn.execute(select(_orders).where(_orders.c.external_id.in_(wanted))):
            facts.orders[row.external_id] = row
    return facts


def build_context(conn: Connection | None, settings: Settings, customer: Any, *, as_of: datetime,
                  message_id: int | None = None, flow: str | None = None,
                  step: str | None = None, order_external_id: str | None = None,
                  offer: Offer | Mapping[str, Any] | None = None, facts: Facts | None = None,
                  test: bool = False) -> dict[str, Any]:
    """Everything a template may use for ``customer`` (a customers row) at ``as_of``.

    ``test``: a test send or a preview, whose links change nothing (module doc).

    ``offer``: the mail's stored offer (its outbox context's ``offer``, with the code made at
    decision time) or, for a preview, the step's :class:`Offer` (a sample code).

    ``facts`` preloaded by :func:`load_facts` (a batch of mails); else they are
    read through ``conn`` for this customer alone.
    """
    if facts is None:
        assert conn is not None
        facts = load_facts(conn, [customer.id], [order_external_id or ""], as_of,
                           settings.currency)
    tz = customer.timezone or settings.timezone
    latest = facts.latest.get(customer.id)
    trigger = facts.orders.get(order_external_id) if order_external_id else None
    count, spend = facts.totals.get(customer.id, (0, Decimal(0)))
    offer_vars = None
    code = None
    if offer is not None:
        if isinstance(offer, Mapping) and not offer.get("code") and not test:
            # A mail decided before codes were stored: its code, derived as it was then.
            offer = {**offer, "code": offer_code(settings.secret_key, str(offer.get("prefix")),
                                                 flow, customer.id, step)}
        offer_vars = offer_variables(offer, shop_url=settings.shop_url,
                                     url_pattern=settings.offer_url, locale=customer.locale,
                                     tz=tz, as_of=as_of)
        code = offer_vars["code"]
    order_row = trigger or latest
    return {
        "customer": {"first_name": customer.first_name, "last_name": customer.last_name,
                     "email": customer.email, "locale": customer.locale or "en", "timezone": tz,
                     "attributes": dict(customer.attributes or {})},
        "order": _order(order_row, tz) if order_row is not None else None,
        "last_order": ({"id": latest.external_id, "date": _local_date(latest.ordered_at, tz)}
                       if latest is not None else None),
        "metrics": {"order_count": int(count), "total_spend": f"{Decimal(spend):.2f}",
                    "currency": settings.currency},
        "offer": offer_vars,
        "recommendation": None,
        "shop": {"name": settings.shop_name, "url": settings.shop_url,
                 "address": settings.shop_address, "signature": f"The {settings.shop_name} team"},
        "links": links(settings, customer.id, message_id, code, test),
    }
