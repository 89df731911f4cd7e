"""What several benchmarks share: a fresh database to load."""

from __future__ import annotations

import os
from pathlib import Path

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
