"""Benchmark: the predictions' fit and scoring beside the full segment refresh (PostgreSQL).

Run:  uv run python -m benchmarks.predictions [--customers 1000000] [--orders 10000000] [--keep]

It generates a shop in set-based SQL (``generate_series``; ``--reuse`` keeps a loaded one):
every customer's first order at their sign-up in the five years before the end, then a
number of orders (1 + exponential, mean ``--orders / --customers``) spread between the first
and a last active moment drawn per customer (so some stay and some drop away), 96% of them
completed, values scaled per customer.  Then, in the same run:

* reference: one plain ``SELECT customer_id, COUNT(*), SUM(total), MAX(ordered_at)
  FROM orders GROUP BY customer_id`` over the whole orders table;
* a first full segment refresh without predictions (it writes every first stay: set-up,
  timed but not the comparison);
* the full segment refresh a day later without predictions (the steady state);
* the predictions alone a day later: summary SQL, fit, scoring and its writes;
* the full refresh a day later with predictions (what the scheduler runs).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url

from benchmarks.common import (
    POSTGRES_ADMIN_URL,
    database_url,
    fresh_database,
    group_by_seconds,
    seconds,
    shop_ready,
    without_segments,
)
from lifecycle.app import App
from lifecycle.config import PROJECT_ROOT, load_settings
from lifecycle.db import make_engine
from lifecycle.models.base import UTCDateTime
from lifecycle.predictions import service
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC

UNTIL = datetime(2026, 11, 1, tzinfo=UTC)
NAME = "predictions"
#: Mean dropout probability that gives about ten orders a customer before the end (tuned on
#: 20,000 customers; the orders wanted scale it).
DROP_AT_TEN_ORDERS = 0.065


def generate(conn, customers: int, orders: int) -> None:  # type: ignore[no-untyped-def]
    """The shop in three set-based statements, drawn from the BG/NBD process: each customer
    signs up and buys at once at a moment in the five years before the end, buys again at a
    rate of their own (log-uniform around one order in 45 days) and stops for good after a
    purchase with a probability of their own (uniform, its mean set so that about
    ``orders / customers`` orders each are made before the end); 96% of the orders are
    completed, their values drawn around a level of each customer's."""
    stamp = bindparam("until", type_=UTCDateTime())
    conn.execute(text("""
        INSERT INTO customers (external_id, email, attributes, marketing_consent, created_at,
                               updated_at)
        SELECT 'c' || g, 'c' || g || '@example.com', '{}'::jsonb, TRUE, at, at
        FROM (SELECT g, :until - random() * INTERVAL '1825 days' AS at
              FROM generate_series(1, :n) AS g) AS drawn""").bindparams(stamp),
                 {"until": UNTIL, "n": customers})
    conn.exec_driver_sql("DROP TABLE IF EXISTS bench_plan")
    drop = DROP_AT_TEN_ORDERS * 10 / max(orders / customers, 1.0)
    conn.execute(text("""
        CREATE TEMPORARY TABLE bench_plan AS
        SELECT id, first_at, rate, scale,
               LEAST(1 + FLOOR(LN(1 - random()) / LN(1 - drop)), 1000)::int AS k
        FROM (SELECT id, created_at AS first_at, EXP(random() * 3 - 1.5) / 45 AS rate,
                     LEAST(:drop * 2 * random() + 0.001, 0.999) AS drop,
                     0.4 + random() * 1.2 AS scale
              FROM customers) AS drawn"""), {"drop": drop})
    conn.execute(text("""
        INSERT INTO orders (external_id, customer_id, ordered_at, total, currency, status, items,
                            created_at, updated_at)
        SELECT 'o' || id || '-' || g, id, at,
               ROUND((8 + random() * 70)::numeric * scale::numeric, 2), 'USD',
               CASE WHEN random() < 0.96 THEN 'completed' ELSE 'refunded' END, '[]'::jsonb, at, at
        FROM (SELECT p.id, g, p.scale, p.first_at + SUM(
                         CASE WHEN g = 1 THEN 0 ELSE -LN(1 - random()) / p.rate END
                     ) OVER (PARTITION BY p.id ORDER BY g) * INTERVAL '1 day' AS at
              FROM bench_plan AS p CROSS JOIN LATERAL generate_series(1, p.k) AS g) AS o
        WHERE at <= :until""").bindparams(stamp), {"until": UNTIL})
    conn.exec_driver_sql("DROP TABLE bench_plan")




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--reuse", action="store_true",
                        help="use the loaded database of the last --keep run if it has the shop")
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    url = database_url(NAME)
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": make_url(url).database}).scalar()
    if not (args.reuse and exists):
        url = fresh_database("postgresql", Path(tempfile.gettempdir()), NAME)
    app = App(replace(load_settings({}), database_url=make_url(url)))
    app.upgrade_database()
    engine = app.engine
    with engine.connect() as conn:
        loaded = conn.execute(text("SELECT COUNT(*) FROM customers")).scalar_one()
    if loaded != args.customers:
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE customers, orders, segment_memberships, touchpoints, "
                                 "segment_calibrations, prediction_fits, customer_predictions "
                                 "CASCADE")
        with engine.begin() as conn:
            took = seconds(lambda: generate(conn, args.customers, args.orders))
        print(f"generated the shop in {took:.0f} s")
    else:
        without_segments(engine, "segment_memberships", "segment_calibrations",
                         "customer_predictions", "prediction_fits")
    customers, orders = shop_ready(engine)
    ref = group_by_seconds(engine, args.repeat)
    defs = load_definitions(PROJECT_ROOT / "flows" / "segments.yaml")
    as_of = UNTIL + timedelta(hours=12)

    def full(moment: datetime, predict: bool) -> None:
        with engine.begin() as conn:
            refresh_all(conn, defs, moment, moment, predict=predict)

    first = seconds(lambda: full(as_of, False))
    steady = seconds(lambda: full(as_of + timedelta(days=1), False))
    found: list[service.Fit] = []

    def predictions() -> None:
        moment = as_of + timedelta(days=2)
        with engine.begin() as conn:
            found.append(service.refresh(conn, moment, moment, service.Options()))

    alone = seconds(predictions)
    both = seconds(lambda: full(as_of + timedelta(days=3), True))
    fit = found[0]
    with engine.connect() as conn:
        last = conn.execute(text("SELECT seconds FROM prediction_fits ORDER BY id DESC LIMIT 1")
                            ).scalar_one()

    print(f"\nPostgreSQL, {customers:,} customers, {orders:,} orders; reference measured in this run")
    rows = [
        ("reference: plain GROUP BY customer over orders", ref),
        ("full segment refresh, first, no predictions (set-up)", first),
        ("full segment refresh a day later, no predictions", steady),
        ("predictions alone (summary, fit, scoring)", alone),
        (f"  summary SQL ({fit.customers:,} buyers)", fit.timings.get("summary", 0.0)),
        ("  fit of both models", fit.timings.get("fit", 0.0)),
        ("    reading the distinct (x, t_x, T) rows", fit.timings.get("read", 0.0)),
        ("    BG/NBD", fit.timings.get("bgnbd", 0.0)),
        (f"  scoring and writes ({fit.scored:,} predictions)", fit.timings.get("score", 0.0)),
        ("    delete the last predictions", fit.timings.get("delete", 0.0)),
        ("    compute per distinct row", fit.timings.get("compute", 0.0)),
        (f"    COPY the distinct rows ({len(fit.rows):,})", fit.timings.get("rows", 0.0)),
        ("    INSERT … SELECT every buyer's", fit.timings.get("insert", 0.0)),
        ("full refresh a day later with predictions", both),
        ("  its predictions (a refit from the last fit's parameters)", last),
    ]
    for label, value in rows:
        print(f"{label:<58} {value:8.2f} s {value / ref:5.1f}x")
    print(service.describe(fit))
    print(f"predictions / steady segment refresh: {alone / steady:.2f}")
    app.close()
    if not args.keep:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)')
    admin.dispose()


if __name__ == "__main__":
    main()
