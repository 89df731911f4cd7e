"""Buyers for the predictions' tests: drawn from the BG/NBD and Gamma-Gamma processes
themselves (seeded), inserted in batches."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, insert, select

from lifecycle.models import Customer, Order


def simulated_buyers(conn: Connection, n: int, as_of: datetime, *, seed: int = 7,
                     prefix: str = "sim", days: int = 360, currency: str = "USD") -> list[int]:
    """``n`` buyers whose first purchase lies in the ``days`` before ``as_of``: purchase rate
    Gamma(0.8, 40 days), dropout after each purchase Beta(0.8, 2.5), order values
    Gamma(6, ν) with ν ~ Gamma(4, 40); their ids."""
    rng = random.Random(seed)
    customers, orders = [], []
    for i in range(n):
        first = as_of - timedelta(days=rng.uniform(0, days))
        customers.append({"external_id": f"{prefix}{i}", "email": f"{prefix}{i}@example.com",
                          "attributes": {}, "marketing_consent": True, "created_at": first,
                          "updated_at": first})
    conn.execute(insert(Customer), customers)
    ids = dict(conn.execute(select(Customer.external_id, Customer.id)
                            .where(Customer.external_id.like(f"{prefix}%"))).all())
    for i, row in enumerate(customers):
        rate = rng.gammavariate(0.8, 1 / 40)
        drop = rng.betavariate(0.8, 2.5)
        scale = rng.gammavariate(4, 1 / 40)
        when, k = row["created_at"], 0
        while when <= as_of:
            value = Decimal(str(round(rng.gammavariate(6, 1 / scale), 2)))
            orders.append({"external_id": f"{prefix}{i}-{k}", "customer_id": ids[row["external_id"]],
                           "ordered_at": when, "total": value, "currency": currency,
                           "status": "completed", "items": [], "created_at": when,
                           "updated_at": when})
            k += 1
            if rng.random() < drop:
                break
            when += timedelta(days=rng.expovariate(rate))
    conn.execute(insert(Order), orders)
    return [ids[c["external_id"]] for c in customers]
