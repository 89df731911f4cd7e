"""``lifecycle timeline``: one customer's touchpoints, newest first."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
    Failure,
    cli,
    known_customer,
    ready_app,
)


@cli.command("timeline")
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the entries and the next "
              "page's cursor.")
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeat for several), "
              "e.g. email_sent, replied, order_placed.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", help="Continue after this cursor (printed at the end of a page).")
def timeline_command(customer_id: str, as_json: bool, kinds: tuple[str, ...], limit: int,
                     before: str | None) -> None:
    """CUSTOMER_ID's timeline (their id at the shop, or email), newest first."""
    import json

    from lifecycle.money import terminal_locale
    from lifecycle.timeline import next_cursor, page
    from lifecycle.timeutil import wall_clock

    app = ready_app()
    with app.engine.connect() as conn:
        found = known_customer(conn, customer_id)
        try:
            entries = page(conn, found.id, kinds=kinds, before=before, limit=limit)
        except ValueError as exc:
            raise Failure(f"--before: {exc}.") from None
    more = next_cursor(entries, limit)
    if as_json:
        click.echo(json.dumps({"customer_id": found.external_id,
                               "entries": [e.as_json() for e in entries], "next": more},
                              indent=2, ensure_ascii=False))
        return
    tz = found.timezone or app.settings.timezone
    table = Table(f"when ({tz})", "what", "kind", title=f"Timeline of {found.external_id}"
                  f" ({found.email or 'no address'})")
    locale = terminal_locale()
    for entry in entries:
        table.add_row(wall_clock(entry.occurred_at, tz),
                      entry.said(locale), entry.kind)
    console = Console()
    console.print(table)
    if more:
        console.print(f"More: lifecycle timeline {customer_id} --before '{more}'",
                      highlight=False)
    elif not entries:
        console.print("Nothing on the timeline yet.")
