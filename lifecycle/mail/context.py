"""The variables an email template sees, built from what we know of the customer.

=================  ==========================================================
``lang``           the language of the copy (the renderer sets it to the locale
                   folder it used; here: the shop default's)
``customer``       first_name, last_name, email, locale (Babel's identifier,
                   ``de_AT``; the shop default when the customer's is missing or
                   unknown), timezone, attributes
``order``          the order that triggered the flow, else the latest completed
                   one: id, total (formatted, ``1.234,50 €``), amount (``1234.50``),
                   currency, ordered_at (ISO), date (long date), lines: name, sku,
                   quantity, price and line_total (formatted, or None), url,
                   image_url, review_url, category
``last_order``     the latest completed order: id, date
``metrics``        order_count, total_spend (formatted, in the reporting currency),
                   total_spend_amount (``160.00``), currency
``offer``          code, kind, percent, amount, value, currency, expires, url, or None
                   (:mod:`lifecycle.offers.context`)
``recommendations`` up to three {name, sku, price, url, image_url} bought with what the
                   customer bought (:mod:`lifecycle.recommendations`)
``recommendation`` the first one's name, or None
``reviews``        {name, url} per product of ``order`` with a review link
``shop``           name, team (the name, for a signature the template words), url,
                   address, signature (English, for old templates), logo_url,
                   brand_color, support_email
``links``          unsubscribe, preferences, shop, review, referral, nps[0..10]
=================  ==========================================================

"Formatted" is Babel's writing for the customer's locale (:mod:`lifecycle.locales`:
``de-AT`` writes as ``de_AT``, a missing or unknown locale as ``LIFECYCLE_LOCALE``)
in the order's own currency; dates are the customer's day in their timezone.

The shop's links (``shop.url``, ``links.shop``, ``links.review``, ``links.referral``) carry the
mail's UTM parameters (:mod:`lifecycle.mail.utm`: the flow and step, or what the flow file says);
our own signed links carry none.

The links of a manager's test send or a preview (``test``) carry ``"t": 1`` in
their signed token: the pages behind them say "this was a test mail" and change
nothing for the customer the mail was rendered for (the flag is signed, so a
test link cannot be made into a real one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import Locale
from sqlalchemy import Connection, case, func, select

from lifecycle import locales
from lifecycle.config import Settings
from lifecycle.db import among
from lifecycle.flows.definitions import Offer
from lifecycle.links import offer_code, sign, sign_each
from lifecycle.mail.utm import Override, tag, tag_value, utm_for
from lifecycle.models import Order
from lifecycle.offers.context import offer_vars as offer_variables
from lifecycle.recommendations.load import Suggestion, load_suggestions
from lifecycle.recommendations.mail import line_links, product_context


def _amount(value: Any) -> Decimal | None:
    """An item's price as a Decimal (prices are stored as decimal strings; a number another
    path stored is read through its text, never computed as a float), or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def _money(amount: Decimal | None, currency: str, loc: Locale) -> str | None:
    """``amount`` as the locale writes it, or None when there is none or Babel cannot write
    it (a price times a huge quantity another path stored): the line is shown without it
    and the mail never fails over it."""
    if amount is None:
        return None
    try:
        return locales.money(amount, currency, loc)
    except (ArithmeticError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _times(price: Decimal | None, quantity: int) -> Decimal | None:
    """``price × quantity``, or None when there is no price or the product is no number."""
    if price is None:
        return None
    try:
        return price * quantity
    except ArithmeticError:
        return None


def _line(item: Any, currency: str, loc: Locale, settings: Settings, order_id: str,
          utm: dict[str, str] | None) -> dict[str, Any]:
    item = item if isinstance(item, dict) else {}
    quantity = item.get("quantity", 1)
    quantity = quantity if type(quantity) is int else 1
    price = _amount(item.get("price"))
    known = line_links(settings, item, order_id)
    return {"name": item.get("name") or item.get("sku") or "item", "sku": item.get("sku"),
            "quantity": quantity, "category": item.get("category"),
            "price": _money(price, currency, loc),
            "line_total": _money(_times(price, quantity), currency, loc),
            "url": tag(known["url"], utm) if known["url"] else None,
            "image_url": known["image_url"],
            "review_url": tag(known["review_url"], utm) if known["review_url"] else None}


def _order(row: Any, tz: str, loc: Locale, settings: Settings,
           utm: dict[str, str] | None) -> dict[str, Any]:
    amount = Decimal(row.total)
    return {"id": row.external_id, "total": locales.money(amount, row.currency, loc),
            "amount": str(amount), "currency": row.currency,
            "ordered_at": row.ordered_at.isoformat(),
            "date": locales.long_date(row.ordered_at, loc, tz),
            "lines": [_line(item, row.currency, loc, settings, row.external_id, utm)
                      for item in row.items or []]}


def token_data(customer_id: int, message_id: int | None, test: bool = False) -> dict[str, Any]:
    """What a mail's signed tokens name: the customer, the mail, and ``t`` for a test mail."""
    data: dict[str, Any] = {"c": customer_id, "m": message_id or 0}
    if test:
        data["t"] = 1
    return data


def referral_id(secret: Any, customer_id: int) -> str:
    """The customer's id in a referral link (``?ref=``): a token signed for the purpose
    ``referral`` naming the customer (``lifecycle.links.verify(key, "referral", ref)["c"]``),
    the same in every mail; never an offer code, and unique per customer."""
    return sign(secret, "referral", {"c": customer_id})


def unsubscribe_link(settings: Settings, customer_id: int, message_id: int | None,
                     test: bool = False) -> str:
    """The one-click unsubscribe link of a mail (``links.unsubscribe``, List-Unsubscribe)."""
    token = sign(settings.secret_key, "unsubscribe", token_data(customer_id, message_id, test))
    return f"{settings.base_url}/u/{token}"


def links(settings: Settings, customer_id: int, message_id: int | None,
          test: bool = False, utm: dict[str, str] | None = None) -> dict[str, Any]:
    """Our signed links (no UTM) and the shop's (with ``utm``, :func:`lifecycle.mail.utm.tag`)."""
    data = token_data(customer_id, message_id, test)
    base = settings.base_url
    unsubscribe, preferences, feedback = sign_each(
        settings.secret_key, ("unsubscribe", "preferences", "feedback"), data)
    ref = referral_id(settings.secret_key, customer_id)
    return {
        "unsubscribe": f"{base}/u/{unsubscribe}",
        "preferences": f"{base}/p/{preferences}",
        "shop": tag(settings.shop_url, utm),
        "review": tag(f"{settings.shop_url}/reviews", utm),
        "referral": tag_value(f"{settings.shop_url}/?ref=", ref, utm),
        "nps": [f"{base}/f/{feedback}?score={score}" for score in range(11)],
    }


@dataclass
class Facts:
    """What templates read from the orders of some customers, loaded in one or two queries."""

    latest: dict[int, Any] = field(default_factory=dict)  # customer id -> latest completed order
    #: count of completed orders, spend in the reporting currency (others never added in)
    totals: dict[int, tuple[int, Decimal]] = field(default_factory=dict)
    orders: dict[str, Any] = field(default_factory=dict)  # external id -> order
    #: customer id -> products to suggest (:func:`lifecycle.recommendations.load`)
    suggestions: dict[int, list[Suggestion]] = field(default_factory=dict)


_orders = Order.__table__


def load_facts(conn: Connection, customer_ids: Iterable[int], order_ids: Iterable[str],
               as_of: datetime, currency: str = "USD") -> Facts:
    """The facts for every mail of a batch at once (completed orders up to ``as_of``).

    One query gives each customer's latest completed order with the count of all of them
    and the sum of those in ``currency``, the shop's reporting currency (window functions);
    a second reads the trigger orders that are not among those (often none: the trigger is
    the latest order); one more the products to suggest to each of them.
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
    ).where(among(conn, _orders.c.customer_id, ids), _orders.c.status == "completed",
            _orders.c.ordered_at <= as_of).subquery()
    for row in conn.execute(select(ranked).where(ranked.c.rn == 1)):
        facts.latest[row.customer_id] = row
        facts.totals[row.customer_id] = (int(row.n), Decimal(row.spend or 0))
        facts.orders[row.external_id] = row
    wanted = sorted({o for o in order_ids if o} - facts.orders.keys())
    if wanted:
        for row in conn.execute(select(_orders).where(among(conn, _orders.c.external_id,
                                                           wanted))):
            facts.orders[row.external_id] = row
    facts.suggestions = load_suggestions(conn, ids, as_of)
    return facts


def build_context(conn: Connection | None, settings: Settings, customer: Any, *, as_of: datetime,
                  message_id: int | None = None, flow: str | None = None,
                  step: str | None = None, order_external_id: str | None = None,
                  offer: Offer | Mapping[str, Any] | None = None, facts: Facts | None = None,
                  test: bool = False, utm: Override = None) -> dict[str, Any]:
    """Everything a template may use for ``customer`` (a customers row) at ``as_of``.

    ``test``: a test send or a preview, whose links change nothing (module doc).
    ``utm``: the flow file's UTM choice (:mod:`lifecycle.mail.utm`; None: the defaults), put
    on every shop link.

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
    locale = locales.parse_locale(customer.locale) or settings.locale
    loc = locales.copy_formatting_locale(locale, locales.written_locales(settings.templates_dir),
                                         settings.locale)
    latest = facts.latest.get(customer.id)
    trigger = facts.orders.get(order_external_id) if order_external_id else None
    count, spend = facts.totals.get(customer.id, (0, Decimal(0)))
    offer_vars = None
    if offer is not None:
        if isinstance(offer, Mapping) and not offer.get("code") and not test:
            # A mail decided before codes were stored: its code, derived as it was then.
            offer = {**offer, "code": offer_code(settings.secret_key, str(offer.get("prefix")),
                                                 flow, customer.id, step)}
        offer_vars = offer_variables(offer, shop_url=settings.shop_url,
                                     url_pattern=settings.offer_url, locale=str(loc),
                                     tz=tz, as_of=as_of)
        if offer_vars.get("url"):
            offer_vars["url"] = tag(offer_vars["url"], utm_for(flow, step, utm))
    order_row = trigger or latest
    utm_params = utm_for(flow, step, utm)
    order = _order(order_row, tz, loc, settings, utm_params) if order_row is not None else None
    products = product_context(facts.suggestions.get(customer.id, []),
                               order["lines"] if order else [], loc,
                               order["currency"] if order else settings.currency)
    for product in products["recommendations"]:
        if product.get("url"):
            product["url"] = tag(product["url"], utm_params)
    mail_links = links(settings, customer.id, message_id, test, utm_params)
    if products["reviews"]:
        mail_links["review"] = products["reviews"][0]["url"]
    return {
        "lang": locales.html_lang(settings.locale),
        "customer": {"first_name": customer.first_name, "last_name": customer.last_name,
                     "email": customer.email, "locale": locale, "timezone": tz,
                     "attributes": dict(customer.attributes or {})},
        "order": order,
        "last_order": ({"id": latest.external_id,
                        "date": locales.long_date(latest.ordered_at, loc, tz)}
                       if latest is not None else None),
        "metrics": {"order_count": int(count),
                    "total_spend": locales.money(Decimal(spend), settings.currency, loc),
                    "total_spend_amount": f"{Decimal(spend):.2f}",
                    "currency": settings.currency},
        "offer": offer_vars,
        **products,
        "shop": {"name": settings.shop_name, "team": settings.shop_name,
                 "url": tag(settings.shop_url, utm_params), "address": settings.shop_address,
                 "signature": f"The {settings.shop_name} team",
                 "logo_url": settings.shop_logo_url, "brand_color": settings.brand_color,
                 "support_email": settings.support_address},
        "links": mail_links,
    }
