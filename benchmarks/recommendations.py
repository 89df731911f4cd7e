"""Benchmark: the recommendations' share of the full segment refresh, and a mail batch's lookup.

Run:  uv run python -m benchmarks.recommendations [--customers 200000] [--catalog 2000]
      [--backend postgresql|sqlite]

It loads a shop of ``--customers`` customers with about ``--orders`` completed
orders each (1 to 4 lines; products drawn from a ``--catalog`` of SKUs with
Zipf-like popularity, as in a real shop's long tail; lines carry url and
image_url), then measures in the same run:

* reference: one plain ``SELECT customer_id, COUNT(*), SUM(total), MAX(ordered_at)
  FROM orders GROUP BY customer_id`` over the whole orders table (as
  ``benchmarks.segments`` does);
* the first full refresh, split by its progress steps into the segment part and the
  recommendations part (products and co-purchase counts from the JSON items);
* a full refresh a day later (steady state), split the same way;
* the suggestions of a batch of 100 mails (random customers): one query, median and
  95th percentile.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from benchmarks.common import fresh_database
from lifecycle.app import App
from lifecycle.config import PROJECT_ROOT, load_settings
from lifecycle.models import Customer, Order
from lifecycle.recommendations.load import load_suggestions
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC

UNTIL = datetime(2026, 11, 1, tzinfo=UTC)
STEP = "Counting products bought together"


def seconds(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def load(app: App, customers: int, orders: float, catalog: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(catalog)]  # Zipf, s = 1
    skus = [f"SKU-{n:05d}" for n in range(catalog)]
    prices = [f"{rng.randint(300, 9000) / 100:.2f}" for _ in range(catalog)]
    chunk = 5000
    for start in range(0, customers, chunk):
        with app.engine.begin() as conn:
            ids = conn.execute(insert(Customer).returning(Customer.id), [
                {"external_id": f"c{n}", "email": f"c{n}@example.com", "attributes": {},
                 "marketing_consent": True, "created_at": UNTIL - timedelta(days=1500),
                 "updated_at": UNTIL} for n in range(start, min(customers, start + chunk))]
            ).scalars().all()
            rows = []
            for cid in ids:
                for k in range(max(1, int(rng.expovariate(1 / orders) + 0.5))):
                    picks = {skus[i] for i in rng.choices(range(catalog), weights,
                                                         k=1 + int(rng.expovariate(1.2)))}
                    items = [{"sku": s, "name": f"Product {s}", "quantity": 1,
                              "price": prices[int(s[4:])], "url": f"https://shop.example/p/{s}",
                              "image_url": f"https://cdn.shop.example/{s}.jpg"} for s in picks]
                    total = sum(Decimal(i["price"]) for i in items)
                    when = UNTIL - timedelta(days=rng.uniform(0, 1400))
                    rows.append({"external_id": f"o{cid}-{k}", "customer_id": cid,
                                 "ordered_at": when, "total": total, "currency": "EUR",
                                 "status": "completed", "items": items, "created_at": when,
                                 "updated_at": when})
            conn.execute(insert(Order), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--orders", type=float, default=4.0, help="mean orders per customer")
    parser.add_argument("--catalog", type=int, default=2000, help="SKUs in the shop")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--name", default="recommendations", help="benchmark database's name")
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = fresh_database(args.backend, Path(folder), args.name)
        app = App(replace(load_settings({}), database_url=make_url(url)))
        app.upgrade_database()
        took = seconds(lambda: load(app, args.customers, args.orders, args.catalog))
        with app.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
            orders = conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()
            lines = conn.execute(text(
                "SELECT SUM(jsonb_array_length(items)) FROM orders" if args.backend == "postgresql"
                else "SELECT SUM(json_array_length(items)) FROM orders")).scalar_one()
        print(f"loaded {args.customers:,} customers, {orders:,} orders, {lines:,} lines "
              f"in {took:.0f} s")

        def reference() -> None:
            with app.engine.connect() as conn:
                conn.execute(text("SELECT customer_id, COUNT(*), SUM(total), MAX(ordered_at) "
                                  "FROM orders GROUP BY customer_id")).all()

        ref = min(seconds(reference) for _ in range(3))
        defs = load_definitions(PROJECT_ROOT / "flows" / "segments.yaml")

        def full(moment: datetime) -> tuple[float, float, int, int]:
            marks: dict[str, float] = {}
            started = time.perf_counter()
            with app.engine.begin() as conn:
                report = refresh_all(conn, defs, moment, moment, progress=lambda step: marks.
                                     setdefault(step, time.perf_counter()))
            ended = time.perf_counter()
            return marks[STEP] - started, ended - marks[STEP], report.products, report.pairs

        as_of = UNTIL + timedelta(hours=12)
        first = full(as_of)
        steady = full(as_of + timedelta(days=1))

        rng = random.Random(5)
        with app.engine.connect() as conn:
            ids = list(conn.execute(text("SELECT id FROM customers")).scalars())
        timings = []
        for _ in range(args.batches):
            batch = rng.sample(ids, 100)
            with app.engine.connect() as conn:
                timings.append(seconds(lambda b=batch, c=conn: load_suggestions(
                    c, b, as_of + timedelta(days=1))) * 1000)
        timings.sort()
        app.close()

    print(f"\n{args.backend}, {args.customers:,} customers, {orders:,} orders, {lines:,} lines, "
          f"{args.catalog:,} SKUs; reference measured in this run")
    print(f"{'reference: plain GROUP BY customer over orders':<58} {ref:8.2f} s   1.0x")
    for label, (segments, recs, products, pairs) in (("first", first), ("a day later", steady)):
        print(f"{'full refresh ' + label + ': segments':<58} {segments:8.2f} s {segments / ref:5.1f}x")
        print(f"{'full refresh ' + label + ': recommendations':<58} {recs:8.2f} s {recs / ref:5.1f}x"
              f"   ({products:,} products, {pairs:,} pairs)")
    print(f"{'suggestions of a batch of 100 mails, median of ' + str(len(timings)):<58} "
          f"{statistics.median(timings):8.1f} ms")
    print(f"{'suggestions of a batch of 100 mails, 95th percentile':<58} "
          f"{timings[int(len(timings) * 0.95) - 1]:8.1f} ms")


if __name__ == "__main__":
    main()
