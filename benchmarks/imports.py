"""Benchmark: importing purchase history (customers, then orders) on PostgreSQL or SQLite.

Run:  uv run python -m benchmarks.imports [--orders 1000000] [--backend postgresql|sqlite]

It writes a sample shop as CSV files, then in one run measures, on the same
machine and database server:

* reference: the same orders.csv loaded by a bare ``COPY`` (PostgreSQL) or a
  bare executemany (SQLite) into an unindexed table of text columns, with no
  parsing, validation or merge: the floor any importer stands on;
* ``lifecycle import customers`` and ``lifecycle import orders`` (the code the
  command runs), first into an empty database, then again (everything
  unchanged), which is the upsert's worst case for reading.  The orders import
  writes each completed order's ``order_placed`` touchpoint; the segment refresh
  the command ends with is timed on its own (the first import: a full refresh,
  which makes the first calibration), beside a full segment refresh of the same
  shop afterwards and a refresh of 10% of its customers (the most an import
  refreshes itself; more are left to the next full refresh).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.config import load_settings
from lifecycle.db import make_engine
from lifecycle.imports import HISTORY, ImportResult, import_records
from lifecycle.imports.source import open_source
from lifecycle.orders import IMPORT_REFRESH_SHARE, refresh_imported
from lifecycle.sample import SampleShop, ShopShape, write_files
from lifecycle.segments.compute import refresh_all, refresh_customers
from lifecycle.segments.definitions import load_definitions
from lifecycle.segments.service import definitions
from lifecycle.timeutil import UTC

ORDERS_PER_CUSTOMER = 2.5
POSTGRES_ADMIN_URL = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    return value, seconds


def run_import(app: App, kind: str, path: Path,
               refreshed: list[tuple[str, float]] | None = None) -> ImportResult:
    """Import ``path``; for orders, then the segment refresh the command ends with (in the
    same transaction): append what it did and its seconds to ``refreshed``."""
    source = open_source(str(path))
    try:
        with app.engine.begin() as conn:
            result = import_records(conn, kind, source.records(), source_name=source.name)
            if refreshed is not None:
                started = time.perf_counter()
                how, _report = refresh_imported(conn, lambda: definitions(app), app.clock,
                                                result)
                refreshed.append((how, time.perf_counter() - started))
            return result
    finally:
        source.close()


def reference_load(url: str, path: Path) -> int:
    """Load orders.csv as raw text rows: no parsing, no validation, no indexes."""
    engine = make_engine(url)
    rows = 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_raw_orders")
        conn.exec_driver_sql("CREATE TABLE bench_raw_orders (order_id text, customer_id text, "
                             "ordered_at text, total text, currency text, status text, items text)")
        if conn.dialect.name == "postgresql":
            driver = conn.connection.driver_connection
            with driver.cursor() as cursor, path.open("rb") as data:
                with cursor.copy("COPY bench_raw_orders FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
                    while block := data.read(1 << 20):
                        copy.write(block)
                rows = cursor.rowcount
        else:
            with path.open(newline="", encoding="utf-8") as data:
                reader = csv.reader(data)
                next(reader)
                batch = []
                for row in reader:
                    batch.append(tuple(row))
                    if len(batch) == 10_000:
                        conn.exec_driver_sql("INSERT INTO bench_raw_orders VALUES (?,?,?,?,?,?,?)",
                                             batch)
                        rows += len(batch)
                        batch = []
                if batch:
                    conn.exec_driver_sql("INSERT INTO bench_raw_orders VALUES (?,?,?,?,?,?,?)",
                                         batch)
                    rows += len(batch)
        conn.exec_driver_sql("DROP TABLE bench_raw_orders")
    engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000, help="about this many orders")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    # About 2 orders per customer survive the history window at this shape.
    customers = max(1, int(args.orders / 1.98))
    shop = SampleShop(ShopShape(customers=customers, orders_per_customer=ORDERS_PER_CUSTOMER),
                      until=datetime(2026, 11, 1, tzinfo=UTC), seed=1)
    (customers_csv, orders_csv), gen_seconds = timed(lambda: write_files(shop, work))
    with orders_csv.open("rb") as f:
        order_rows = sum(1 for _ in f) - 1
    print(f"sample files: {customers} customers, {order_rows} orders "
          f"({orders_csv.stat().st_size / 1e6:.0f} MB), written in {gen_seconds:.1f} s")

    admin = None
    if args.backend == "postgresql":
        name = f"lifecycle_bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{work / 'bench.db'}"
    app = App(replace(load_settings({}), database_url=make_url(url)))
    app.upgrade_database()

    try:
        ref_rows, ref_seconds = timed(lambda: reference_load(url, orders_csv))
        first_c, first_c_s = timed(lambda: run_import(app, "customers", customers_csv))
        refreshed: list[tuple[str, float]] = []
        first_o, first_o_s = timed(lambda: run_import(app, "orders", orders_csv, refreshed))
        again_o, again_o_s = timed(lambda: run_import(app, "orders", orders_csv, refreshed))

        def full_refresh() -> None:
            now = datetime.now(UTC)
            with app.engine.begin() as conn:
                refresh_all(conn, load_definitions(app.settings.segments_file), now, now)

        _, full_s = timed(full_refresh)

        def share_refresh() -> None:  # the most customers an import refreshes itself
            now = datetime.now(UTC)
            with app.engine.connect() as conn, conn.begin() as transaction:
                refresh_customers(conn, load_definitions(app.settings.segments_file),
                                  f"SELECT id FROM customers WHERE id % "
                                  f"{round(1 / IMPORT_REFRESH_SHARE)} = 0", now, now,
                                  channel=HISTORY)
                transaction.rollback()

        _, share_s = timed(share_refresh)
        assert first_o.inserted == order_rows and first_o.skipped == 0, first_o
        assert again_o.unchanged == order_rows and again_o.updated == 0, again_o

        def line(label: str, rows: int, seconds: float) -> str:
            return (f"{label:<44} {rows:>10,} rows {seconds:>8.2f} s {rows / seconds:>12,.0f} rows/s"
                    f"   {seconds / ref_seconds:>5.1f}x reference")

        print(f"\nbackend: {args.backend} ({app.database_label()}), Python {sys.version.split()[0]}")
        print(line("reference: raw load of orders.csv", ref_rows, ref_seconds))
        print(line("lifecycle import customers (empty db)", first_c.read, first_c_s))
        print(line("lifecycle import orders (empty table)", first_o.read,
                   first_o_s - refreshed[0][1]))
        print(line("lifecycle import orders again (unchanged)", again_o.read,
                   again_o_s - refreshed[1][1]))
        for label, result, (how, refresh_s) in (("first", first_o, refreshed[0]),
                                                ("second", again_o, refreshed[1])):
            print(f"{'segment refresh the ' + label + ' import ends with (' + how + ')':<44} "
                  f"{result.customers_changed:>10,} changed {refresh_s:>8.2f} s")
        print(f"{'reference: a full segment refresh afterwards':<44} {'':>18} {full_s:>8.2f} s")
        print(f"{'refresh of every 10th customer':<44} {'':>18} {share_s:>8.2f} s")
    finally:
        app.close()
        if admin is not None and not args.keep:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.dispose()
        for path in work.iterdir():
            if not (args.keep and path.suffix == ".db"):
                path.unlink()


if __name__ == "__main__":
    main()
