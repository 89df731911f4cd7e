"""Benchmark: `flows simulate` of every shipped flow over a year of a 10k-customer sample shop.

Run:  uv run python -m benchmarks.simulate [--customers 10000] [--backend sqlite|postgresql]

It loads a seeded sample shop (three years of history) into a fresh database,
then measures in the same run:

* reference: copying what a replay reads into the in-memory database plus one
  full segment refresh there (a daily-refreshing replay of a year does the
  refresh 365 times, so this is the unit of its cost);
* each shipped flow simulated over the last year of the history, as
  ``lifecycle flows simulate`` runs it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks.common import fresh_database
from lifecycle.app import App
from lifecycle.config import PROJECT_ROOT, load_settings
from lifecycle.flows.definitions import Context, load_folder
from lifecycle.flows.policies import load_policies
from lifecycle.flows.simulate import copy_for_replay, simulate
from lifecycle.imports import import_rows
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC

UNTIL = datetime(2026, 11, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = fresh_database(args.backend, Path(folder), "simulate")
        app = App(replace(load_settings({}), database_url=make_url(url)))
        app.upgrade_database()
        engine = app.engine
        shop = SampleShop(ShopShape(customers=args.customers, years=3), until=UNTIL, seed=42)
        with engine.begin() as conn:
            import_rows(conn, "customers", shop.customers())
            import_rows(conn, "orders", shop.orders())
        with engine.connect() as conn:
            orders = conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()
        defs = load_definitions(PROJECT_ROOT / "flows" / "segments.yaml")
        flows = load_folder(PROJECT_ROOT / "flows", Context.from_folders(
            PROJECT_ROOT / "templates" / "email", set(defs.all_names()))).flows
        policies = load_policies(PROJECT_ROOT / "flows")
        start, end = UNTIL - timedelta(days=365), UNTIL

        started = time.perf_counter()
        with engine.connect() as conn, conn.begin():
            memory = copy_for_replay(conn, end)
        copied = time.perf_counter() - started
        with memory.begin() as conn:
            started = time.perf_counter()
            refresh_all(conn, defs, start, start)
            refreshed = time.perf_counter() - started
        memory.dispose()
        reference = copied + refreshed
        print(f"\n{args.backend}, {args.customers:,} customers, {orders:,} orders; "
              f"a year ({start:%Y-%m-%d} to {end:%Y-%m-%d}); reference measured in this run")
        print(f"{'reference: copy for replay ' + format(copied, '.2f') + ' s + one refresh':<52}"
              f"{reference:7.2f} s   1.0x")
        for name, flow in sorted(flows.items()):
            started = time.perf_counter()
            with engine.connect() as conn, conn.begin():
                result = simulate(conn, flow, defs, start, end, policies=policies,
                                  default_tz="UTC")
            took = time.perf_counter() - started
            label = (f"simulate {name} ({result.enrolled:,} enrolled, {len(result.mails):,} "
                     f"mails)")
            print(f"{label:<52}{took:7.2f} s {took / reference:5.1f}x")
        app.close()


if __name__ == "__main__":
    main()
