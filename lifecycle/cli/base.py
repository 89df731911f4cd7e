"""What every command module shares: the ``cli`` group, errors, and loading the app."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from lifecycle.app import App
from lifecycle.config import ConfigError, load_settings
from lifecycle.timeutil import parse_instant

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

#: ``--host`` and ``--port`` of the commands that serve the web app.
host_option = click.option("--host", default=DEFAULT_HOST, show_default=True)
port_option = click.option("--port", default=DEFAULT_PORT, show_default=True,
                           type=click.IntRange(1, 65535))


class Failure(click.ClickException):
    """An error the user can fix: one line on stderr, exit status 2."""

    exit_code = 2


def load_app() -> App:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    logging.getLogger("dramatiq").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    return App(settings)


def ready_app() -> App:
    """An app whose database schema is at the newest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import SQLAlchemyError

    app = load_app()
    head = ScriptDirectory.from_config(app.alembic_config()).get_current_head()
    try:
        with app.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise Failure(f"cannot reach the database ({app.database_label()}): "
                      f"{str(exc.orig or exc).strip().splitlines()[0]}") from None
    if current != head:
        raise Failure(f"the database schema is at {current or 'nothing'}, not {head}: "
                      "run `lifecycle db upgrade` first.")
    app.keys  # noqa: B018 - the secret key (environment or database), once, before any work
    _warn_of_demo_clock(app)
    return app


def _warn_of_demo_clock(app: App) -> None:
    """Say on stderr when the database is one ``lifecycle demo`` made: its times are on the
    demo's fast clock, ahead of the real clock this command reads."""
    from lifecycle.demo.stage import is_demo_database, resume_point

    with app.engine.connect() as conn:
        if not is_demo_database(conn):
            return
        ahead = resume_point(conn, app.clock.now()) - app.clock.now()
    stderr().print(
        f"Note: {app.database_label()} was made by `lifecycle demo` and runs on the demo's "
        f"fast clock ({ahead.total_seconds() / 86400:.0f} days ahead of real time): this "
        "command reads it on the real clock, so its answers may contradict the demo's "
        "(explore it through the demo's own pages while it runs).", markup=False,
        soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)



@click.group()
@click.version_option(package_name="lifecycle")
def cli() -> None:
    """Lifecycle: retention and advocacy mail from your shop's purchase history.

    Configuration comes from environment variables only; `lifecycle config`
    shows what this process sees.
    """

def exit_with_problems(exc: Any) -> NoReturn:
    """Print an InvalidFile's problems, one FILE:LINE:COLUMN line each, and exit with 1."""
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    raise SystemExit(1) from None


def segment_definitions(app: App, path: Path | None = None) -> Any:
    from lifecycle.segments.definitions import load_definitions
    from lifecycle.yamlfile import InvalidFile

    if path is None:  # the configured file: what is in force, its last valid version too
        from lifecycle.segments.service import in_force

        try:
            found = in_force(app)
        except InvalidFile as exc:  # broken, and no valid version was ever saved
            exit_with_problems(exc)
        for problem in found.problems:
            click.echo(f"{problem}", err=True)
        if found.problems:
            click.echo(f"{app.settings.segments_file} has problems: its last valid version, "
                       f"saved {found.saved_at:%Y-%m-%d %H:%M} UTC, is used, as the scheduler "
                       "does.", err=True)
        return found.definitions.for_shop(app.settings)
    try:
        return load_definitions(path).for_shop(app.settings)
    except InvalidFile as exc:
        exit_with_problems(exc)


def parse_as_of(app: App, value: str | None) -> datetime:
    if value is None:
        return app.clock.now()
    try:
        return parse_instant(value, app.settings.timezone)
    except ValueError as exc:
        raise Failure(f"--as-of: {exc}") from None


def customer_by_id(conn: Any, external_id: str) -> Any:
    from sqlalchemy import select

    from lifecycle.models import Customer

    customer = conn.execute(select(Customer.__table__)
                            .where(Customer.external_id == external_id)).first()
    if customer is None:
        raise Failure(f"no customer with customer_id {external_id!r}.")
    return customer


def known_customer(conn: Any, key: str) -> Any:
    """The customer whose customer_id, row id or email is ``key`` (Failure if none)."""
    from lifecycle.privacy import find_customer

    found = find_customer(conn, key)
    if found is None:
        raise Failure(f"no customer with customer_id or email {key!r}.")
    return found
