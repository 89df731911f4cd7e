"""``lifecycle apikey``: keys for the ingest API."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from lifecycle.apikeys import SCOPES
from lifecycle.cli.base import (
    Failure,
    cli,
    ready_app,
    stderr,
)


@cli.group("apikey")
def apikey() -> None:
    """Keys for the ingest API (/api/v1)."""


@apikey.command("add")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(sorted(SCOPES)),
              help="What the key may do; repeat for several.")
def apikey_add(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key; it is shown once and stored only as a hash."""
    from lifecycle.apikeys import create_key

    app = ready_app()
    with app.engine.begin() as conn:
        key = create_key(conn, name, list(scopes), app.clock.now())
    click.echo(key)
    stderr().print(f"Key {name!r} with {', '.join(sorted(scopes))}. Keep it now: it is not "
                    "shown again.", highlight=False)


@apikey.command("list")
def apikey_list() -> None:
    """Every key: prefix, name, scopes, last use, revoked."""
    from sqlalchemy import select

    from lifecycle.models import ApiKey

    app = ready_app()
    table = Table("prefix", "name", "scopes", "created", "last used", "revoked")
    with app.engine.connect() as conn:
        for row in conn.execute(select(ApiKey.__table__).order_by(ApiKey.id)):
            table.add_row(row.prefix, row.name, ", ".join(row.scopes or []),
                          f"{row.created_at:%Y-%m-%d}",
                          f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never",
                          f"{row.revoked_at:%Y-%m-%d}" if row.revoked_at else "")
    Console().print(table)


@apikey.command("revoke")
@click.argument("prefix")
def apikey_revoke(prefix: str) -> None:
    """Revoke the key with this prefix (the 8 characters after ``lc_``)."""
    from lifecycle.apikeys import revoke

    app = ready_app()
    with app.engine.begin() as conn:
        if not revoke(conn, prefix, app.clock.now()):
            raise Failure(f"no active key has the prefix {prefix!r}.")
    click.echo(f"Key {prefix} is revoked.")
