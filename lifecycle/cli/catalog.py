"""``lifecycle catalog``: the categories, SKUs, attribute names and event names in the data."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lifecycle.cli.base import cli, ready_app

#: Entries shown per list unless told (``--limit``).
DEFAULT_LIMIT = 100
TITLES = {"categories": "Categories (order lines)", "skus": "SKUs (order lines)",
          "attributes": "Customer attributes", "events": "Custom events"}


@cli.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: see the README).")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=click.IntRange(min=1),
              help="Most entries per list (the most frequent).")
def catalog_command(as_json: bool, limit: int) -> None:
    """List the categories and SKUs of the orders, the customers' attribute names and the custom
    event names in the data, with their counts: the names flows and segments can use."""
    import json

    from lifecycle.catalog.service import COUNTS, LISTS, read_catalog

    app = ready_app()
    with app.engine.connect() as conn:
        found = read_catalog(conn, limit)
    if as_json:
        click.echo(json.dumps(found.as_json(), indent=2, ensure_ascii=False))
        return
    console = Console()
    for name in LISTS:
        entries = getattr(found, name)
        shown = len(entries)
        more = found.distinct[name] - shown
        title = (f"{TITLES[name]}: {found.distinct[name]}"
                 + (f" (the {shown} most frequent shown)" if more else ""))
        table = Table()
        table.add_column("name")
        table.add_column(COUNTS[name], justify="right")
        if COUNTS[name] != "customers":
            table.add_column("customers", justify="right")
        for entry in entries:
            shown = Text(entry.shown)
            if entry.alike:
                shown.append(" looks like " + ", ".join(map(repr, entry.alike)), style="red")
            table.add_row(shown, str(entry.count),
                          *([str(entry.customers)] if COUNTS[name] != "customers" else []))
        if entries:
            console.print(title, style="bold", markup=False, highlight=False)
            console.print(table)
        else:
            console.print(f"{TITLES[name]}: none in the data.", markup=False, highlight=False)
