"""The variables an email template sees, built from what we know of the customer.

=================  ==========================================================
``customer``       first_name, last_name, email, locale, timezone, attributes
``order``          the order that triggered the flow, else the latest completed
                   one: id, total, currency, ordered_at, date, lines
``last_order``     the latest completed order: id, date (in the customer's zone)
``metrics``        order_count, total_spend
``offer``          code, percent, expires (a date in the customer's zone), or None
``recommendation`` a product name to suggest, or None
``shop``           name, url, address, signature
``links``          unsubscribe, preferences, shop, review, referral, nps[0..10]
=================  ==========================================================
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from lifecycle.config import Settings
from lifecycle.flows.definitions import Offer
from lifecycle.links import offer_code, sign
from lifecycle.models import Order
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


def links(settings: Settings, customer_id: int, message_id: int | None,
          referral_code: str | None = None) -> dict[str, Any]:
    data = {"c": customer_id, "m": message_id or 0}
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


def build_context(conn: Connection, settings: Settings, customer: Any, *, as_of: datetime,
                  message_id: int | None = None, flow: str | None = None,
                  step: str | None = None, order_external_id: str | None = None,
                  offer: Offer | None = None) -> dict[str, Any]:
    """Everything a template may use for ``customer`` (a customers row) at ``as_of``."""
    tz = customer.timezone or settings.timezone
    completed = select(Order).where(Order.customer_id == customer.id, Order.status == "completed",
                                    Order.ordered_at <= as_of)
    latest = conn.execute(completed.order_by(Order.ordered_at.desc()).limit(1)).first()
    trigger = None
    if order_external_id is not None:
        trigger = conn.execute(select(Order).where(Order.external_id == order_external_id)).first()
    count, spend = conn.execute(
        select(func.count(), func.coalesce(func.sum(Order.total), 0))
        .where(Order.customer_id == customer.id, Order.status == "completed",
               Order.ordered_at <= as_of)).one()
    offer_vars = None
    code = None
    if offer is not None:
        code = offer_code(settings.secret_key, offer.prefix, flow, customer.id, step)
        offer_vars = {"code": code, "percent": offer.percent,
                      "expires": _local_date(as_of + offer.valid, tz)}
    order_row = trigger or latest
    return {
        "customer": {"first_name": customer.first_name, "last_name": customer.last_name,
                     "email": customer.email, "locale": customer.locale or "en", "timezone": tz,
                     "attributes": dict(customer.attributes or {})},
        "order": _order(order_row, tz) if order_row is not None else None,
        "last_order": ({"id": latest.external_id, "date": _local_date(latest.ordered_at, tz)}
                       if latest is not None else None),
        "metrics": {"order_count": int(count), "total_spend": f"{Decimal(spend):.2f}"},
        "offer": offer_vars,
        "recommendation": None,
        "shop": {"name": settings.shop_name, "url": settings.shop_url,
                 "address": settings.shop_address, "signature": f"The {settings.shop_name} team"},
        "links": links(settings, customer.id, message_id, code),
    }
