"""``lifecycle demo``: the embedded default with a sample shop."""

from __future__ import annotations

import click

from lifecycle.app import App
from lifecycle.cli.base import (
    cli,
    host_option,
    load_app,
    port_option,
)
from lifecycle.cli.sample import load_sample


@cli.command("demo")
@host_option
@port_option
@click.option("--customers", default=2_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seconds", type=click.FloatRange(min=0), help="Stop after this long.")
def demo(host: str, port: int, customers: int, seconds: float | None) -> None:
    """Set up the embedded default with a sample shop and run everything."""
    from lifecycle.processes import run_all

    app = load_app()
    app.upgrade_database()
    from sqlalchemy import func, select

    from lifecycle.models import Customer

    with app.sessions() as session:
        known = session.scalar(select(func.count()).select_from(Customer)) or 0
    if known == 0:
        load_sample(app, customers, 2.5, 3.0, 42, app.clock.now(), None)
    else:
        click.echo(f"The database already holds {known} customers; no sample data added.")
    login = _demo_login(app)
    settings = app.settings
    click.echo(f"Database:  {app.database_label()}")
    if settings.mail_transport == "file":
        settings.outbox_dir.mkdir(parents=True, exist_ok=True)
        click.echo(f"Mail:      .eml files in {settings.outbox_dir.resolve()}")
    click.echo(f"Web app:   http://{host}:{port}/  (health: http://{host}:{port}/healthz)")
    if login:
        click.echo(f"Staff:     http://{host}:{port}/login as {login[0]}, password {login[1]} "
                   "(an admin account made for this demo database)")
    click.echo("Press Ctrl-C to stop." if seconds is None else f"Running for {seconds:g} s.")
    run_all(app, host, port, seconds=seconds)
    click.echo("Lifecycle stopped.")


def _demo_login(app: App) -> tuple[str, str] | None:
    """An admin account with a fresh random password when the database has no staff yet."""
    import secrets

    from sqlalchemy import func, select

    from lifecycle.models import StaffUser
    from lifecycle.staff import add_staff

    with app.engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(StaffUser)).scalar_one():
            return None
        password = secrets.token_urlsafe(12)
        add_staff(conn, DEMO_STAFF, "admin", password, app.clock.now(), name="Demo admin")
    return DEMO_STAFF, password


#: The account ``lifecycle demo`` makes in a database without staff.
DEMO_STAFF = "admin@demo.invalid"
