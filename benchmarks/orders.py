"""Benchmark: orders arriving through the ingest API, each request refreshing its customers'
segments (PostgreSQL, 1M customers).

Run:  uv run python -m benchmarks.orders [--customers 1000000] [--requests 300]
      [--batches 10] [--reuse]

It loads a sample shop of ``--customers`` customers with three years of orders
through the importer (or reuses the database of an earlier run with ``--reuse``)
and runs one full segment refresh, so that the RFM calibration and every
customer's stays exist as in production.  Then two web servers run, each in a
process of its own, on the same database:

* ``lifecycle web`` (the real command): ``POST /api/v1/orders`` stores the
  orders, announces them and refreshes the segments of their customers in
  the same transaction;
* the reference: the same web app, whose ``place_orders`` is called with
  ``refresh=False`` (the same request, validation, upsert and announcement,
  no segment refresh).

Measured in the same run, the two servers taking turns request by request:
one order per request (a customer's second order, so they move from ``new``
to ``repeat``), p50 and p95 over ``--requests`` requests each; and batches of
1,000 orders (1,000 different customers) per request, orders per second over
``--batches`` batches each.  Every order is new to a customer nobody posted
for before in the run.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, text

from benchmarks.common import BENCH_SECRET, database_url, fresh_database
from lifecycle.apikeys import create_key
from lifecycle.config import PROJECT_ROOT
from lifecycle.db import make_engine
from lifecycle.imports import import_rows
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC
from tests.ports import free_port

NAME = "orders"
BATCH = 1_000


def _loaded(url: str, customers: int) -> bool:
    try:
        engine = make_engine(url)
        with engine.connect() as conn:
            found = conn.execute(text("SELECT count(*) FROM customers")).scalar_one()
            calibrated = conn.execute(text("SELECT count(*) FROM segment_calibrations")).scalar_one()
        engine.dispose()
        return found >= customers and calibrated > 0
    except Exception:  # no such database, or no schema yet
        return False


def load(url: str, customers: int, now: datetime) -> None:
    """The sample shop through the importer, then a full segment refresh."""
    upgrade(url)
    engine = make_engine(url)
    shop = SampleShop(ShopShape(customers=customers), until=now - timedelta(days=1), seed=7)
    started = time.perf_counter()
    with engine.begin() as conn:
        import_rows(conn, "customers", shop.customers())
        orders = import_rows(conn, "orders", shop.orders())
    print(f"loaded {customers:,} customers and {orders.inserted:,} orders in "
          f"{time.perf_counter() - started:.0f} s")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    started = time.perf_counter()
    with engine.begin() as conn:
        refresh_all(conn, load_definitions(PROJECT_ROOT / "flows" / "segments.yaml"), now, now)
    print(f"full segment refresh: {time.perf_counter() - started:.0f} s")
    engine.dispose()


def upgrade(url: str) -> None:
    subprocess.run([sys.executable, "-m", "lifecycle", "db", "upgrade"], check=True,
                   env={**os.environ, "LIFECYCLE_DATABASE_URL": url}, capture_output=True)


def one_order_customers(url: str, n: int, seed: int) -> list[str]:
    """``n`` customers with exactly one completed order (their next one makes them repeat)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text(
            "SELECT c.external_id FROM customers AS c JOIN orders AS o ON o.customer_id = c.id "
            "WHERE o.status = 'completed' GROUP BY c.external_id HAVING count(*) = 1"))]
    engine.dispose()
    random.Random(seed).shuffle(ids)
    if len(ids) < n:
        raise SystemExit(f"only {len(ids):,} customers with one order; ask for fewer requests")
    return ids[:n]


def an_order(customer: str, n: int, at: datetime) -> dict[str, Any]:
    return {"order_id": f"bench-{customer}-{n}", "customer_id": customer,
            "ordered_at": at.isoformat(), "total": "34.50", "currency": "USD",
            "items": [{"sku": "TEA-SEN", "name": "Sencha green tea 100 g", "category": "tea",
                       "quantity": 1, "price": "34.50"}]}


def serve(port: int, refresh: bool) -> None:
    """The web app of ``lifecycle web`` in this process; ``refresh=False`` for the reference."""
    from lifecycle.app import App
    from lifecycle.processes import run_web
    from lifecycle.web import api

    if not refresh:
        api.place_orders = functools.partial(api.place_orders, refresh=False)  # type: ignore[assignment]
    run_web(App(), "127.0.0.1", port)


def start(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"the web server on port {port} did not start")


def post(client: httpx.Client, orders: list[dict[str, Any]]) -> float:
    """Seconds one post of ``orders`` took."""
    started = time.perf_counter()
    answer = client.post("/api/v1/orders", json=orders)
    seconds = time.perf_counter() - started
    answer.raise_for_status()
    assert answer.json()["inserted"] == len(orders), answer.text
    return seconds


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--reuse", action="store_true",
                        help="keep a database an earlier run loaded (loading takes minutes)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-refresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, not args.no_refresh)
        return

    now = datetime.now(UTC)
    url = database_url(NAME)
    if not (args.reuse and _loaded(url, args.customers)):
        url = fresh_database("postgresql", Path("."), NAME)
        load(url, args.customers, now)
    else:
        upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        key = create_key(conn, "benchmark", ["orders:write"], now)
        customers = conn.execute(text("SELECT count(*) FROM customers")).scalar_one()
        orders = conn.execute(text("SELECT count(*) FROM orders")).scalar_one()
    warm = 20
    single = one_order_customers(url, 2 * (args.requests + warm) + 2 * args.batches * BATCH,
                                 seed=int(now.timestamp()))
    batched = single[2 * (args.requests + warm):]

    env = {**os.environ, "LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_SECRET_KEY": BENCH_SECRET,
           "LIFECYCLE_LOG_LEVEL": "WARNING"}
    ports = free_port(), free_port()
    servers = [start([sys.executable, "-m", "lifecycle", "web", "--port", str(ports[0])],
                     env, ports[0]),
               start([sys.executable, "-m", "benchmarks.orders", "--serve", str(ports[1]),
                      "--no-refresh"], env, ports[1])]
    headers = {"Authorization": f"Bearer {key}"}
    at = now - timedelta(minutes=1)
    measured_from = datetime.now(UTC)  # (the load's full refresh entered everyone before)
    times: dict[str, list[float]] = {"refresh": [], "reference": []}
    batch_times: dict[str, list[float]] = {"refresh": [], "reference": []}
    try:
        clients = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                      timeout=120)
                   for name, port in zip(times, ports, strict=True)}
        people = iter(single)
        for n in range(args.requests + warm):
            for name, client in clients.items():
                seconds = post(client, [an_order(next(people), 2, at)])
                if n >= warm:
                    times[name].append(seconds * 1000)
        groups = iter(batched[i:i + BATCH] for i in range(0, len(batched), BATCH))
        for _ in range(args.batches):
            for name, client in clients.items():
                batch_times[name].append(post(client, [an_order(c, 2, at) for c in next(groups)]))
        for client in clients.values():
            client.close()
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    with engine.connect() as conn:  # customers who moved while their request ran
        refreshed = conn.execute(text(
            "SELECT count(DISTINCT m.customer_id) FROM segment_memberships AS m "
            "JOIN customers AS c ON c.id = m.customer_id WHERE m.entered_at >= :at "
            "AND c.external_id IN :ids").bindparams(bindparam("ids", expanding=True)),
            {"ids": single[warm * 2:warm * 2 + 2 * args.requests],
             "at": measured_from}).scalar_one()
    engine.dispose()
    print(f"\nPostgreSQL, {customers:,} customers, {orders:,} orders; `lifecycle web` in its own "
          f"process, the reference server beside it; both measured in this run, taking turns")
    print(f"customers whose one-order request moved their segments: {refreshed} of "
          f"{2 * args.requests} ({args.requests} went to the reference, which does not refresh)")
    for name, label in (("reference", "reference: one order per request, no refresh"),
                        ("refresh", "one order per request, segments refreshed")):
        samples = times[name]
        print(f"{label:<52} p50 {statistics.median(samples):7.1f} ms   "
              f"p95 {percentile(samples, 0.95):7.1f} ms")
    for name, label in (("reference", "reference: batches of 1,000 orders, no refresh"),
                        ("refresh", "batches of 1,000 orders, segments refreshed")):
        seconds = batch_times[name]
        print(f"{label:<52} {BATCH * len(seconds) / sum(seconds):9,.0f} orders/s   "
              f"(median batch {statistics.median(seconds):.2f} s)")


if __name__ == "__main__":
    main()
