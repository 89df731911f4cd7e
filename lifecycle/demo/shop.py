"""The demo's live shop: new and returning customers place orders as time goes by.

Orders arrive through :func:`lifecycle.orders.place_orders`, the path the
ingest API uses, so each one is stored, announced as ``order_placed`` and
fires the order flows exactly like a real shop's.  A new customer is first
upserted like ``POST /api/v1/customers`` would.

How many orders: on average :data:`NEW_PER_CUSTOMER_DAY` × customers first
orders and :data:`REPEAT_PER_CUSTOMER_DAY` × customers repeat orders per day
of shop time (a lively month for the sample shop), drawn as a Poisson process
(a quarter of the first orders from customers who signed up earlier and never ordered),
and thinned by the customer's local hour (:data:`lifecycle.sample.HOUR_WEIGHTS`),
so orders come in their daytime.  Repeat orders come from customers who
bought within the last :data:`ACTIVE_DAYS`, the frequent buyers more often;
a customer who clicked a mail may also order because of it
(:meth:`LiveShop.plan`), which is what the flows' conversions count.

Who the customers are: :data:`MARKETS` — readers of each of the six languages the
mails are written in (:data:`lifecycle.locales.SHIPPED`: en, de, nb, sv, da, pl) and a
few of other languages, who get the fallback copy — each in their own zone, paying in
their own currency (:data:`PRICES`).  The history the demo loads
(:func:`history_shape`) and the live shop's new customers come from the same markets,
and every order line names its product page and picture on the shop's site
(:func:`demo_basket`), as the mails' product blocks show them.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from lifecycle.app import App
from lifecycle.imports import import_rows
from lifecycle.models import Customer, Order
from lifecycle.orders import place_orders
from lifecycle.sample import CATALOG, DOMAINS, FIRST_NAMES, HOUR_WEIGHTS, LAST_NAMES
from lifecycle.segments.service import definitions
from lifecycle.timeutil import as_utc, zone

log = logging.getLogger(__name__)

#: First orders per customer of the shop and day of shop time (2,000 customers: 5 a day).
NEW_PER_CUSTOMER_DAY = 1 / 400
#: Share of first orders placed by customers who signed up earlier without ordering.
PROSPECTS_SHARE = 0.25
#: Repeat orders per customer and day (2,000 customers: 8 a day).
REPEAT_PER_CUSTOMER_DAY = 1 / 250
#: Customers whose last order is at most this many days old may order again unprompted.
ACTIVE_DAYS = 365
#: Share of hours in which an order placed at random lands (the mean of the weights).
DAYTIME = sum(HOUR_WEIGHTS) / (24 * max(HOUR_WEIGHTS))
#: The prefix of the live shop's order ids (W0000001, …): apart from the history's.
ORDER_PREFIX = "W"
#: Where the demo shop's customers live: (IANA zone, locale, currency, weight).  Every
#: shipped language (en, de, nb, sv, da, pl) has its readers; fr, es and ja customers read
#: the fallback (English) copy, and pay in euros or dollars.
MARKETS: tuple[tuple[str, str, str, int], ...] = (
    ("America/New_York", "en-US", "USD", 11), ("America/Chicago", "en-US", "USD", 4),
    ("America/Los_Angeles", "en-US", "USD", 5), ("Europe/London", "en-GB", "GBP", 10),
    ("Europe/Berlin", "de-DE", "EUR", 15), ("Europe/Vienna", "de-AT", "EUR", 5),
    ("Europe/Oslo", "nb-NO", "NOK", 8), ("Europe/Stockholm", "sv-SE", "SEK", 8),
    ("Europe/Copenhagen", "da-DK", "DKK", 7), ("Europe/Warsaw", "pl-PL", "PLN", 8),
    ("Europe/Paris", "fr-FR", "EUR", 4), ("Europe/Madrid", "es-ES", "EUR", 3),
    ("Asia/Tokyo", "ja-JP", "USD", 2))
#: The currency a customer of each locale pays in.
CURRENCY_OF: dict[str, str] = {locale: currency for _, locale, currency, _ in MARKETS}
#: The shop's currency for a locale it has no market for (the reporting currency's default).
FALLBACK_CURRENCY = "USD"
#: Euros to each currency (roughly), and the step its shelf prices are rounded to.
_RATES = {"EUR": ("1", "0.10"), "USD": ("1.10", "0.10"), "GBP": ("0.86", "0.10"),
          "NOK": ("11.5", "10"), "SEK": ("11.5", "10"), "DKK": ("7.45", "5"),
          "PLN": ("4.3", "1")}


def _shelf_price(euros: str, currency: str) -> str:
    """The catalogue price (in euros) as the shop prices it in ``currency``: 8.90 € is
    $9.80, £7.70, 99 kr (NOK, SEK), 64 kr (DKK), 37.99 zł."""
    rate, step = (Decimal(v) for v in _RATES[currency])
    rounded = ((Decimal(euros) * rate / step).quantize(Decimal(1), ROUND_HALF_UP) * step)
    if step >= 5:  # kroner: 99, 149, 65 — a whole price just under the round one
        return str(max(rounded - 1, step - 1).quantize(Decimal(1)))
    if step == 1:  # złoty: 37.99
        return str(max(rounded, Decimal(1)) - Decimal("0.01"))
    return str(max(rounded, step).quantize(Decimal("0.01")))


#: Each product's shelf price by currency: PRICES[currency][sku] (Decimal strings).
PRICES: dict[str, dict[str, str]] = {
    currency: {sku: _shelf_price(price, currency) for sku, _, _, price in CATALOG}
    for currency in _RATES}


def slug(name: str) -> str:
    """``Sencha green tea 100 g`` -> ``sencha-green-tea-100-g``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def demo_basket(shop_url: str) -> Callable[[random.Random, str], tuple[list[dict[str, Any]],
                                                                       Decimal, str]]:
    """What one order of a customer of a locale holds: (items, total, currency).  A few
    products of :data:`~lifecycle.sample.CATALOG` at the shelf price of the customer's
    currency, each with its page (``{shop_url}/products/<slug>``) and picture
    (``{shop_url}/images/products/<slug>.jpg``) on the shop's site."""
    site = shop_url.rstrip("/")

    def basket(rng: random.Random, locale: str) -> tuple[list[dict[str, Any]], Decimal, str]:
        currency = CURRENCY_OF.get(locale, FALLBACK_CURRENCY)
        prices = PRICES[currency]
        picks = rng.sample(CATALOG, k=min(len(CATALOG), 1 + int(rng.expovariate(1.2))))
        items = []
        total = Decimal("0")
        for sku, name, category, _ in picks:
            quantity = 1 if rng.random() < 0.75 else rng.randint(2, 4)
            path = slug(name)
            items.append({"sku": sku, "name": name, "category": category,
                          "quantity": quantity, "price": prices[sku],
                          "url": f"{site}/products/{path}",
                          "image_url": f"{site}/images/products/{path}.jpg"})
            total += Decimal(prices[sku]) * quantity
        return items, total, currency

    return basket


def history_shape(shop_url: str) -> dict[str, Any]:
    """What the demo's sample history is made of, beyond its size (for
    :func:`lifecycle.cli.sample.load_sample`): its customers from :data:`MARKETS`, their
    orders from :func:`demo_basket`."""
    return {"zones": tuple((tz, locale, weight) for tz, locale, _, weight in MARKETS),
            "basket": demo_basket(shop_url)}


@dataclass
class Buyer:
    external_id: str
    timezone: str
    locale: str
    orders: int
    last_order_at: datetime | None
    gap_days: float  # their usual days between orders


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count with ``mean`` (Knuth's method; small means only)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class LiveShop:
    """Places the shop's orders up to a moment, one transaction per :meth:`step`."""

    def __init__(self, app: App, seed: int = 42) -> None:
        self.app = app
        self.rng = random.Random(seed)
        self.basket = demo_basket(app.settings.shop_url)
        self.buyers: dict[str, Buyer] = {}
        self.customers = 0
        self.next_customer = 1
        self.next_order = 1
        self.placed = 0
        self.new_customers = 0
        self._planned: list[tuple[datetime, int, str]] = []  # (when, tie-break, customer id)
        self._codes: dict[str, list[str]] = {}  # customer id -> codes their next order uses
        self._last: datetime | None = None

    def load(self, conn: Connection) -> None:
        """Read who has bought what so far, and where the id sequences stand."""
        orders = Order.__table__
        stats = (select(orders.c.customer_id, func.count().label("n"),
                        func.min(orders.c.ordered_at).label("first"),
                        func.max(orders.c.ordered_at).label("last"))
                 .where(orders.c.status == "completed").group_by(orders.c.customer_id).subquery())
        customers = Customer.__table__
        rows = conn.execute(select(customers.c.external_id, customers.c.timezone,
                                   customers.c.locale, stats.c.n,
                                   stats.c["first"], stats.c["last"])
                            .outerjoin(stats, stats.c.customer_id == customers.c.id)
                            .where(customers.c.email.is_not(None))
                            .order_by(customers.c.id)).all()
        default_tz = self.app.settings.timezone
        for row in rows:
            n = int(row.n or 0)
            gap = 45.0
            if n > 1:
                gap = max(7.0, (as_utc(row.last) - as_utc(row.first)).total_seconds() / 86400 / (n - 1))
            self.buyers[row.external_id] = Buyer(row.external_id, row.timezone or default_tz,
                                                 row.locale or "", n,
                                                 as_utc(row.last) if row.last else None, gap)
        self.customers = len(rows)
        numbers = [int(e[1:]) for e in self.buyers if e[:1] == "C" and e[1:].isdigit()]
        self.next_customer = max(numbers, default=0) + 1
        self.next_order = 1 + (conn.execute(select(func.count()).select_from(orders).where(
            orders.c.external_id.like(f"{ORDER_PREFIX}%"))).scalar_one())

    def plan(self, customer_external_id: str, at: datetime, code: str | None = None) -> None:
        """Have this customer order at ``at`` (they liked what a mail offered), using the
        mail's offer ``code`` if it had one."""
        heapq.heappush(self._planned, (at, self.rng.random(), customer_external_id))
        if code:
            self._codes.setdefault(customer_external_id, []).append(code)

    def step(self, now: datetime) -> int:
        """Place the orders due between the last step and ``now``; how many."""
        last, self._last = self._last, now
        if last is None or now <= last:
            return 0
        days = (now - last).total_seconds() / 86400
        # (customer, or the zone and locale of a new one; when)
        want: list[tuple[str | tuple[str, str], datetime]] = []
        size = max(self.customers, 1)
        prospects = [b for b in self.buyers.values() if b.orders == 0]
        for _ in range(poisson(self.rng, NEW_PER_CUSTOMER_DAY * size * days / DAYTIME)):
            when = last + (now - last) * self.rng.random()
            if prospects and self.rng.random() < PROSPECTS_SHARE:  # signed up long ago
                want.append((self.rng.choice(prospects).external_id, when))
                continue
            where = self.rng.choices([m[:2] for m in MARKETS], [m[3] for m in MARKETS])[0]
            want.append((where, when))
        active = [b for b in self.buyers.values() if b.last_order_at is not None
                  and (now - b.last_order_at).days <= ACTIVE_DAYS]
        if active:
            weights = [1 / b.gap_days for b in active]
            count = poisson(self.rng, REPEAT_PER_CUSTOMER_DAY * size * days / DAYTIME)
            for buyer in self.rng.choices(active, weights, k=count):
                want.append((buyer.external_id, last + (now - last) * self.rng.random()))
        planned = []
        while self._planned and self._planned[0][0] <= now:
            when, _, who = heapq.heappop(self._planned)
            planned.append((who, max(when, last)))
        chosen = [(who, when) for who, when in want if self._daytime(who, when)] + planned
        if not chosen:
            return 0
        return self._place(sorted(chosen, key=lambda c: c[1]), now)

    def _daytime(self, who: str | tuple[str, str], when: datetime) -> bool:
        if isinstance(who, tuple):
            tz = who[0]
        elif who in self.buyers:
            tz = self.buyers[who].timezone
        else:
            return False
        hour = when.astimezone(zone(tz)).hour
        return self.rng.random() < HOUR_WEIGHTS[hour] / max(HOUR_WEIGHTS)

    def _place(self, chosen: list[tuple[str | tuple[str, str], datetime]], now: datetime) -> int:
        people: list[dict[str, Any]] = []
        orders: list[dict[str, Any]] = []
        for who, when in chosen:
            if isinstance(who, tuple):
                person = self._new_person(who, when, len(people) + 1)
                people.append(person)
                who = person["external_id"]
            elif who not in self.buyers:
                continue  # erased meanwhile, or never a buyer
            items, total, currency = self.basket(self.rng, self.buyers[who].locale)
            orders.append({"order_id": f"{ORDER_PREFIX}{self.next_order:07d}", "customer_id": who,
                           "ordered_at": min(when, now).isoformat(), "total": str(total),
                           "currency": currency, "status": "completed", "items": items,
                           "discount_codes": self._codes.pop(who, [])})
            self.next_order += 1
        with self.app.engine.begin() as conn:
            if people:
                import_rows(conn, "customers", people, clock=self.app.clock)
            placed = place_orders(conn, orders, self.app.clock, source_name="demo shop",
                                  segments=lambda: definitions(self.app))
        for order in orders:
            buyer = self.buyers[order["customer_id"]]
            at = datetime.fromisoformat(order["ordered_at"])
            if buyer.last_order_at is not None and buyer.orders:
                days = (at - buyer.last_order_at).total_seconds() / 86400
                buyer.gap_days = max(7.0, (buyer.gap_days * (buyer.orders - 1) + days) / buyer.orders)
            buyer.orders += 1
            buyer.last_order_at = at
        self.placed += len(orders)
        self.new_customers += len(people)
        log.debug("The demo shop placed %d orders (%d announced), %d of new customers.",
                  len(orders), placed.announced, len(people))
        return len(orders)

    def _new_person(self, where: tuple[str, str], when: datetime, line: int) -> dict[str, Any]:
        """A customer signing up just before their first order at ``when``, like the sample
        shop's (names, consent); ``where`` is their zone and locale."""
        rng = self.rng
        n = self.next_customer
        self.next_customer += 1
        tz, locale = where
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace("ü", "ue")
        external_id = f"C{n:07d}"
        self.buyers[external_id] = Buyer(external_id, tz, locale, 0, None, 45.0)
        self.customers += 1
        return {"line": line, "external_id": external_id,
                "email": f"{local}{n}@{DOMAINS[n % len(DOMAINS)]}", "first_name": first,
                "last_name": last, "timezone": tz, "locale": locale,
                "created_at": when - timedelta(minutes=rng.randint(2, 30)),
                "marketing_consent": rng.random() > 0.1,
                "attributes": {"source": rng.choice(("organic", "ads", "referral", "social"))}}
