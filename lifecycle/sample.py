"""A believable sample shop: customers and a few years of orders, from a seed.

The same seed and end date give the same shop, row for row.  Shapes follow
real shops: about half the customers buy once, a few buy very often
(log-normal order counts); each customer keeps their own cadence between
orders; some are active, others lapsed long ago; orders happen in the
customer's local daytime; a few are refunded or cancelled.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from lifecycle.db import dumps_json
from lifecycle.timeutil import UTC, zone

FIRST_NAMES = ("Ada", "Ben", "Chloe", "David", "Elif", "Farah", "Greta", "Hugo", "Ines", "Jonas",
               "Kira", "Liam", "Mara", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara",
               "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe", "Amelie", "Bruno", "Clara", "Dev")
LAST_NAMES = ("Andersen", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoffmann",
              "Ito", "Jensen", "Kowalski", "Lopez", "Müller", "Nakamura", "Okafor", "Petrov",
              "Quist", "Rossi", "Schmidt", "Tanaka", "Usman", "Varga", "Weber", "Xu", "Yilmaz",
              "Zhang", "Martin", "Silva", "Novak", "Brown")
DOMAINS = ("example.com", "example.org", "example.net")
#: (IANA zone, locale, weight)
ZONES = (("Europe/Berlin", "de-DE", 22), ("Europe/London", "en-GB", 14),
         ("Europe/Paris", "fr-FR", 10), ("Europe/Madrid", "es-ES", 6),
         ("America/New_York", "en-US", 16), ("America/Chicago", "en-US", 7),
         ("America/Los_Angeles", "en-US", 9), ("America/Sao_Paulo", "pt-BR", 4),
         ("Asia/Tokyo", "ja-JP", 4), ("Asia/Kolkata", "en-IN", 3),
         ("Australia/Sydney", "en-AU", 4), ("Pacific/Auckland", "en-NZ", 1))
#: (sku, name, category, price)
CATALOG = (
    ("TEA-SEN", "Sencha green tea 100 g", "tea", "8.90"),
    ("TEA-EGR", "Earl Grey 100 g", "tea", "7.50"),
    ("TEA-ROO", "Rooibos vanilla 100 g", "tea", "6.90"),
    ("TEA-MAT", "Ceremonial matcha 30 g", "tea", "24.00"),
    ("TEA-CHA", "Masala chai 150 g", "tea", "9.50"),
    ("COF-ETH", "Ethiopia Yirgacheffe beans 250 g", "coffee", "12.90"),
    ("COF-COL", "Colombia Huila beans 250 g", "coffee", "11.50"),
    ("COF-ESP", "House espresso 1 kg", "coffee", "29.00"),
    ("COF-DEC", "Swiss water decaf 250 g", "coffee", "12.00"),
    ("ACC-POT", "Glass teapot 1 l", "accessories", "34.00"),
    ("ACC-GRN", "Hand grinder", "accessories", "59.00"),
    ("ACC-CUP", "Stoneware cup, set of 2", "accessories", "22.00"),
    ("ACC-FIL", "Paper filters, 100", "accessories", "4.50"),
    ("ACC-KET", "Gooseneck kettle", "accessories", "79.00"),
    ("GFT-BOX", "Tasting gift box", "gifts", "39.00"),
    ("GFT-CRD", "Gift card", "gifts", "50.00"),
    ("SUB-TEA", "Tea of the month", "subscription", "19.00"),
    ("SUB-COF", "Coffee of the month", "subscription", "21.00"),
)
# Local hour of an order, weighted towards lunch and evenings.
HOURS = tuple(range(24))
HOUR_WEIGHTS = (1, 1, 0, 0, 0, 0, 1, 2, 4, 5, 5, 6, 7, 6, 5, 5, 5, 6, 8, 10, 11, 10, 7, 3)


def basket(rng: random.Random) -> tuple[list[dict[str, Any]], Decimal]:
    """What one order holds: a few products of :data:`CATALOG` (line items), and the total."""
    picks = rng.sample(CATALOG, k=min(len(CATALOG), 1 + int(rng.expovariate(1.2))))
    items = []
    total = Decimal("0")
    for sku, name, category, price in picks:
        quantity = 1 if rng.random() < 0.75 else rng.randint(2, 4)
        items.append({"sku": sku, "name": name, "category": category,
                      "quantity": quantity, "price": price})
        total += Decimal(price) * quantity
    return items, total


@dataclass(frozen=True)
class ShopShape:
    customers: int = 2_000
    orders_per_customer: float = 2.5  # mean over customers who order
    prospects: float = 0.08  # share who signed up but never ordered
    years: float = 3.0
    refund_rate: float = 0.03
    cancel_rate: float = 0.02
    currency: str = "USD"
    #: Where the customers live: (IANA zone, locale, weight).
    zones: tuple[tuple[str, str, int], ...] = ZONES
    #: What one order of a customer with this locale holds: (items, total, currency);
    #: by default :func:`basket` in :attr:`currency`.
    basket: Callable[[random.Random, str], tuple[list[dict[str, Any]], Decimal, str]] | None = None


@dataclass(frozen=True)
class _Profile:
    external_id: str
    tz: str
    locale: str
    created_at: datetime
    orders: int
    cadence_days: float
    last_order_age_days: float


class SampleShop:
    """Generates the customers and orders of one sample shop."""

    def __init__(self, shape: ShopShape, until: datetime, seed: int = 42) -> None:
        self.shape = shape
        self.until = until.astimezone(UTC)
        self.seed = seed
        self.start = self.until - timedelta(days=365.25 * shape.years)
        self._profiles: list[_Profile] = []

    def customers(self) -> Iterator[dict[str, Any]]:
        """Yield clean customer rows (also planning each one's orders)."""
        rng = random.Random(self.seed)
        shape = self.shape
        zones = [z[:2] for z in shape.zones]
        weights = [z[2] for z in shape.zones]
        span_days = (self.until - self.start).total_seconds() / 86400
        sigma = 1.0
        mu = math.log(max(shape.orders_per_customer, 1.0)) - sigma * sigma / 2
        self._profiles = []
        for n in range(1, shape.customers + 1):
            tz, locale = rng.choices(zones, weights)[0]
            first = rng.choice(FIRST_NAMES)
            last = rng.choice(LAST_NAMES)
            is_prospect = rng.random() < shape.prospects
            count = 0 if is_prospect else max(1, round(rng.lognormvariate(mu, sigma)))
            cadence = rng.lognormvariate(math.log(45), 0.6)
            if rng.random() < 0.5:  # still buying: last order within about one cadence
                age = rng.expovariate(1 / cadence)
            else:  # drifted away at some point in the shop's history
                age = rng.uniform(0, span_days)
            age = min(age, span_days)
            first_order_age = min(span_days, age + cadence * max(count - 1, 0))
            signup_age = min(span_days, first_order_age + 1 + rng.expovariate(1 / 20))
            created = self.until - timedelta(days=signup_age)
            external_id = f"C{n:07d}"
            self._profiles.append(_Profile(external_id, tz, locale, created, count, cadence, age))
            local = f"{first}.{last}".lower().replace("ü", "ue")
            yield {
                "line": n,
                "external_id": external_id,
                "email": f"{local}{n}@{DOMAINS[n % len(DOMAINS)]}",
                "first_name": first,
                "last_name": last,
                "timezone": tz,
                "locale": locale,
                "created_at": created,
                "marketing_consent": rng.random() > 0.1,
                "attributes": {"source": rng.choice(("organic", "ads", "referral", "social"))},
            }

    def orders(self) -> Iterator[dict[str, Any]]:
        """Yield clean order rows; :meth:`customers` must have run first."""
        if not self._profiles and self.shape.customers:
            for _ in self.customers():
                pass
        rng = random.Random(self.seed + 1)
        shape = self.shape
        line = 0
        recent = self.until - timedelta(days=2)
        for profile in self._profiles:
            if profile.orders == 0:
                continue
            local_zone = zone(profile.tz)
            # Walk back from the last order with jittered gaps around the cadence.
            when = self.until - timedelta(days=profile.last_order_age_days)
            times = [when]
            earliest = max(self.start, profile.created_at + timedelta(days=1))
            for _ in range(profile.orders - 1):
                when -= timedelta(days=max(0.5, profile.cadence_days * rng.lognormvariate(0, 0.5)))
                if when < earliest:
                    break
                times.append(when)
            for number, instant in enumerate(reversed(times), start=1):
                local = instant.astimezone(local_zone)
                hour = rng.choices(HOURS, HOUR_WEIGHTS)[0]
                local = local.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60),
                                      microsecond=0)
                # The hour moves the order within its local day; never before sign-up.
                ordered_at = min(max(local.astimezone(UTC), profile.created_at + timedelta(minutes=5)),
                                 self.until)
                if shape.basket is None:
                    items, total = basket(rng)
                    currency = shape.currency
                else:
                    items, total, currency = shape.basket(rng, profile.locale)
                roll = rng.random()
                if ordered_at > recent and roll < 0.3:
                    status = "pending"
                elif roll < shape.refund_rate:
                    status = "refunded"
                elif roll < shape.refund_rate + shape.cancel_rate:
                    status = "cancelled"
                else:
                    status = "completed"
                line += 1
                yield {
                    "line": line,
                    "external_id": f"{profile.external_id}-{number:04d}",
                    "customer_external_id": profile.external_id,
                    "ordered_at": ordered_at,
                    "total": total,
                    "currency": currency,
                    "status": status,
                    "items": items,
                    "email": None, "first_name": None, "last_name": None, "timezone": None,
                }


def write_files(shop: SampleShop, folder: Path) -> tuple[Path, Path]:
    """Write the shop as ``customers.csv`` and ``orders.csv`` in the import format."""
    folder.mkdir(parents=True, exist_ok=True)
    customers_path = folder / "customers.csv"
    orders_path = folder / "orders.csv"
    with customers_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["customer_id", "email", "first_name", "last_name", "timezone", "locale",
                         "created_at", "marketing_consent", "source"])
        for c in shop.customers():
            writer.writerow([c["external_id"], c["email"], c["first_name"], c["last_name"],
                             c["timezone"], c["locale"], c["created_at"].isoformat(),
                             str(c["marketing_consent"]).lower(), c["attributes"]["source"]])
    with orders_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["order_id", "customer_id", "ordered_at", "total", "currency", "status",
                         "items"])
        for o in shop.orders():
            writer.writerow([o["external_id"], o["customer_external_id"],
                             o["ordered_at"].isoformat(), str(o["total"]), o["currency"],
                             o["status"], dumps_json(o["items"])])
    return customers_path, orders_path
