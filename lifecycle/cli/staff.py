"""``lifecycle staff``: accounts for the web pages."""

from __future__ import annotations

import sys

import click

from lifecycle.cli.base import (
    Failure,
    cli,
    ready_app,
)


@cli.group("staff")
def staff() -> None:
    """Staff accounts for the web pages."""


@staff.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["support", "manager", "admin"]), required=True,
              help="support: customers and timelines; manager: also flows; admin: everything.")
@click.option("--name", help="Shown on the pages.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
              "instead of asking for it.")
def staff_add(email: str, role: str, name: str | None, password_stdin: bool) -> None:
    """Create a staff account (the password is asked for, twice: at least 12 characters, not
    easy to guess — a refused one is explained)."""
    from lifecycle.staff import add_staff

    password = (sys.stdin.readline().rstrip("\n") if password_stdin else
                click.prompt("Password", hide_input=True, confirmation_prompt=True))
    app = ready_app()
    try:
        with app.engine.begin() as conn:
            add_staff(conn, email, role, password, app.clock.now(), name=name)
    except ValueError as exc:
        raise Failure(f"{exc}.") from None
    click.echo(f"{email.strip().lower()} can log in as {role}.")


@staff.command("password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
              "instead of asking for it.")
@click.option("--generate", is_flag=True, help="Make a random password and print it.")
def staff_password(email: str, password_stdin: bool, generate: bool) -> None:
    """Set a new password for a staff account (a forgotten one, or the demo's admin); ends the
    account's sessions and lifts a login block of its name."""
    import secrets

    from lifecycle.staff import set_password

    if generate:
        password = secrets.token_urlsafe(12)
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    app = ready_app()
    try:
        with app.engine.begin() as conn:
            found = set_password(conn, email, password)
    except ValueError as exc:
        raise Failure(f"{exc}.") from None
    if not found:
        raise Failure(f"no staff account for {email.strip().lower()!r}.")
    click.echo(f"{email.strip().lower()} has a new password"
               + (f": {password}" if generate else "."))
