"""Alembic environment: the URL comes from Lifecycle's configuration.

``lifecycle db upgrade`` passes an open connection (``config.attributes``);
the plain ``alembic`` command reads LIFECYCLE_DATABASE_URL.
"""

from __future__ import annotations

from alembic import context
from lifecycle.config import load_settings
from lifecycle.db import make_engine
from lifecycle.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(load_settings().database_url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Lifecycle's migrations run online only: use `lifecycle db upgrade`.")
run_online()
