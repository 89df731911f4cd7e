"""The recommendation and review parts of a mail's template context.

``recommendations``: up to three {name, sku, price, url, image_url} (price
formatted for the customer's locale in the product's own currency, or None);
``recommendation``: the first one's name or None (for older templates).
``reviews``: one {name, url} per product of the mail's order that has a review
link (``LIFECYCLE_REVIEW_URL``), in the order's line order, each SKU once;
each order line carries its own ``url``, ``image_url`` and ``review_url``.
"""

from __future__ import annotations

from typing import Any

from babel import Locale

from lifecycle.config import Settings
from lifecycle.recommendations.load import Suggestion
from lifecycle.recommendations.urls import review_url, safe_url


def line_links(settings: Settings, item: dict[str, Any], order_id: str | None) -> dict[str, Any]:
    """An order line's ``url``, ``image_url`` and ``review_url`` (each None when unknown)."""
    url = safe_url(item.get("url"))
    sku = item.get("sku")
    return {"url": url, "image_url": safe_url(item.get("image_url")),
            "review_url": review_url(settings.review_url, settings.shop_url,
                                     sku=str(sku) if sku else None, url=url, order_id=order_id)}


def reviews(lines: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One {name, url} per product of the order with a review link (each SKU, or each
    nameless link, once)."""
    seen: set[str] = set()
    found: list[dict[str, str]] = []
    for line in lines:
        link = line.get("review_url")
        if not link:
            continue
        key = line.get("sku") or link
        if key in seen:
            continue
        seen.add(key)
        found.append({"name": line.get("name") or line.get("sku") or "", "url": link})
    return found


def product_context(suggestions: list[Suggestion], lines: list[dict[str, Any]],
                    locale: Locale, currency: str | None = None) -> dict[str, Any]:
    """``recommendations``, ``recommendation`` and ``reviews`` of a mail; suggestions priced
    only in ``currency``, the customer's (:meth:`Suggestion.context`)."""
    shown = [s.context(locale, currency) for s in suggestions]
    return {"recommendations": shown,
            "recommendation": shown[0]["name"] if shown else None,
            "reviews": reviews(lines)}
