"""Benchmark: segment refresh on a shop of 1M customers and 10M orders (PostgreSQL).

Run:  uv run python -m benchmarks.segments [--customers 1000000] [--keep]

It loads a sample shop (or reuses the database named by --database if it is
already loaded), then measures in the same run:

* reference: one plain ``SELECT customer_id, COUNT(*), SUM(total), MAX(ordered_at)
  FROM orders GROUP BY customer_id`` over the whole orders table;
* the first full refresh (every membership is new: it writes them all and one
  ``segment_entered`` touchpoint each);
* a full refresh one day later (the steady state: few moves);
* customer refreshes of randomly picked customers, each in its own transaction.

Each timing is the best of ``--repeat`` runs where the run leaves the data as
it found it (the reference and the customer refreshes); the full refreshes
change state, so each is run once.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks.common import group_by_seconds, seconds, shop_ready, without_segments
from lifecycle.app import App
from lifecycle.config import PROJECT_ROOT, load_settings
from lifecycle.db import make_engine
from lifecycle.imports import import_rows
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.segments.compute import refresh_all, refresh_customer
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC

POSTGRES_ADMIN_URL = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
UNTIL = datetime(2026, 11, 1, tzinfo=UTC)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders-per-customer", type=float, default=18.0,
                        help="shape parameter; 18 over 5 years gives about 10 orders each")
    parser.add_argument("--database", default="lifecycle_bench_segments")
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=200, help="customers refreshed one by one")
    args = parser.parse_args()

    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = make_url(POSTGRES_ADMIN_URL).set(database=args.database)
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": args.database}).scalar()
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{args.database}"')
    app = App(replace(load_settings({}), database_url=url))
    app.upgrade_database()
    engine = app.engine
    with engine.connect() as conn:
        customers = conn.execute(text("SELECT COUNT(*) FROM customers")).scalar_one()
    if customers != args.customers:
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE customers, orders, segment_memberships, touchpoints, "
                                 "segment_calibrations, messages, flow_enrollments CASCADE")
        shop = SampleShop(ShopShape(customers=args.customers,
                                    orders_per_customer=args.orders_per_customer, years=5),
                          until=UNTIL, seed=3)
        load = seconds(lambda: _load(engine, shop))
        print(f"loaded the sample shop in {load:.0f} s")
    else:
        without_segments(engine, "segment_memberships", "segment_calibrations")
    customers, orders = shop_ready(engine)
    ref = group_by_seconds(engine, args.repeat)
    defs = load_definitions(PROJECT_ROOT / "flows" / "segments.yaml")
    as_of = UNTIL + timedelta(hours=12)
    report = None

    def full(moment: datetime) -> None:
        nonlocal report
        with engine.begin() as conn:
            report = refresh_all(conn, defs, moment, moment)

    first = seconds(lambda: full(as_of))
    first_moves = sum(report.entered.values()) if report else 0
    steady = seconds(lambda: full(as_of + timedelta(days=1)))
    steady_moves = (sum(report.entered.values()) + sum(report.exited.values())) if report else 0

    rng = random.Random(5)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM customers"))]
    picked = rng.sample(ids, min(args.sample, len(ids)))
    moment = as_of + timedelta(days=1, hours=1)
    timings = []
    for cid in picked:
        def one(cid: int = cid) -> None:
            with engine.begin() as conn:
                refresh_customer(conn, defs, cid, moment, moment)
        timings.append(seconds(one) * 1000)
    timings.sort()

    print(f"\nPostgreSQL, {customers:,} customers, {orders:,} orders; reference measured in this run")
    print(f"{'reference: plain GROUP BY customer over orders':<58} {ref:8.2f} s   1.0x")
    print(f"{'full refresh, first (writes ' + format(first_moves, ',') + ' memberships)':<58} "
          f"{first:8.2f} s {first / ref:5.1f}x")
    print(f"{'full refresh, a day later (' + format(steady_moves, ',') + ' moves)':<58} "
          f"{steady:8.2f} s {steady / ref:5.1f}x")
    print(f"{'customer refresh, median of ' + str(len(timings)):<58} "
          f"{statistics.median(timings):8.1f} ms")
    print(f"{'customer refresh, 95th percentile':<58} "
          f"{timings[int(len(timings) * 0.95) - 1]:8.1f} ms")
    app.close()
    if not args.keep:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{args.database}" WITH (FORCE)')
    admin.dispose()


def _load(engine, shop: SampleShop) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        import_rows(conn, "customers", shop.customers())
        import_rows(conn, "orders", shop.orders())


if __name__ == "__main__":
    main()
