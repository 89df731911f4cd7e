"""``lifecycle sample-data``: a believable sample shop."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from lifecycle.app import App
from lifecycle.cli.base import (
    Failure,
    cli,
    load_app,
    ready_app,
    stderr,
)
from lifecycle.timeutil import parse_instant


def load_sample(app: App, customers: int, orders_per_customer: float, years: float, seed: int,
                 until: datetime, out: Path | None, **shape: Any) -> None:
    """Load (or, with ``out``, write) a sample shop; ``shape`` sets more of its
    :class:`~lifecycle.sample.ShopShape` (the demo's ``zones`` and ``basket``)."""
    from lifecycle.imports import import_rows
    from lifecycle.sample import SampleShop, ShopShape, write_files

    shop = SampleShop(ShopShape(customers=customers, orders_per_customer=orders_per_customer,
                                years=years, currency=app.settings.currency, **shape),
                      until=until, seed=seed)  # by default in the reporting currency
    if out is not None:
        paths = write_files(shop, out)
        click.echo(f"Wrote {paths[0]} and {paths[1]}; load them with `lifecycle import`.")
        return
    err = stderr()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, disable=not err.is_terminal,
                        transient=True)

    def counted(rows: Any, task: Any) -> Any:
        for row in rows:
            progress.advance(task)
            yield row

    with progress:
        with app.engine.begin() as conn:
            task = progress.add_task("Generating customers", total=customers)
            people = import_rows(conn, "customers", counted(shop.customers(), task),
                                 clock=app.clock)
            task = progress.add_task("Generating orders", total=None)
            orders = import_rows(conn, "orders", counted(shop.orders(), task), clock=app.clock)
    click.echo(f"Sample shop (seed {seed}, history until {until:%Y-%m-%d}): "
               f"{people.inserted} customers and {orders.inserted} orders added, "
               f"{people.updated + orders.updated} updated, "
               f"{people.unchanged + orders.unchanged} already there.")


@cli.command("sample-data")
@click.option("--customers", default=2_000, show_default=True, type=click.IntRange(min=1))
@click.option("--orders-per-customer", default=2.5, show_default=True,
              type=click.FloatRange(min=1.0), help="Mean orders of a customer who orders.")
@click.option("--years", default=3.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Length of the order history.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--until", help="End of the history, ISO date (default: now).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write customers.csv and orders.csv here instead of loading them.")
def sample_data(customers: int, orders_per_customer: float, years: float, seed: int,
                until: str | None, out: Path | None) -> None:
    """Generate a believable sample shop (the same seed gives the same shop)."""
    app = load_app() if out is not None else ready_app()
    try:
        end = parse_instant(until, app.settings.timezone) if until else app.clock.now()
    except ValueError as exc:
        raise Failure(f"--until: {exc}") from None
    load_sample(app, customers, orders_per_customer, years, seed, end, out)
