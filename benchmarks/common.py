"""What several benchmarks share: a fresh database to load."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from lifecycle.db import make_engine

POSTGRES_ADMIN_URL = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def database_url(name: str) -> str:
    """URL of the PostgreSQL database of benchmark ``name`` (whether or not it exists)."""
    return str(make_url(POSTGRES_ADMIN_URL).set(database=f"lifecycle_bench_{name}")
               .render_as_string(hide_password=False))


def fresh_database(backend: str, folder: Path, name: str) -> str:
    """URL of an empty database ``name``: a SQLite file in ``folder``, or PostgreSQL (recreated)."""
    if backend == "sqlite":
        return f"sqlite:///{folder / (name + '.db')}"
    url = database_url(name)
    database = make_url(url).database
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    admin.dispose()
    return url

#: LIFECYCLE_SECRET_KEY of the processes a benchmark starts (the same for all of them; random
#: enough that the settings accept it).
BENCH_SECRET = "Bm4kQ9zX2vN7wR3tY8uL1cD6hJ0pS5eA"


def seconds(fn) -> float:  # type: ignore[no-untyped-def]
    """Wall-clock seconds ``fn()`` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def without_segments(engine, *tables: str) -> None:  # type: ignore[no-untyped-def]
    """Empty ``tables`` (the segments' and what a benchmark adds) and the segment moves of the
    timelines: a refresh starts from no segments at all."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)}")
        conn.exec_driver_sql("DELETE FROM touchpoints WHERE kind IN "
                             "('segment_entered', 'segment_exited')")


def shop_ready(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Planner statistics taken (as autovacuum keeps them), the shop's size printed; its
    customers and orders."""
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    with engine.connect() as conn:
        customers = conn.execute(text("SELECT COUNT(*) FROM customers")).scalar_one()
        orders = conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()
    print(f"shop: {customers:,} customers, {orders:,} orders")
    return customers, orders


def group_by_seconds(engine, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """The reference of the segment benchmarks: the fastest of ``repeat`` plain ``GROUP BY
    customer_id`` passes over the orders (count, sum, latest), in seconds."""
    def reference() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT customer_id, COUNT(*), SUM(total), MAX(ordered_at) "
                              "FROM orders GROUP BY customer_id")).all()

    return min(seconds(reference) for _ in range(repeat))
