"""``lifecycle insights``: the retention measures of the insights page, as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import Failure, cli, parse_as_of, ready_app
from lifecycle.insights import DAYS, MAX_DAYS, MAX_MONTHS, MONTHS

#: Each command's title and the CSV tables (:meth:`lifecycle.insights.Report.table`) it prints.
TITLES = {
    "repurchase": ("Repurchase rate", ("repurchase", "time-to-second-order")),
    "cohorts": ("Cohorts by month of first order", ("cohorts",)),
    "clv": ("Historic CLV: cumulative revenue per customer by cohort age", ("clv",)),
    "nps": ("NPS per month", ("nps", "nps-comments")),
    "stages": ("Revenue by retention stage", ("stages",)),
    "attribution": ("Flows' and campaigns' share of revenue (last touch)", ("attribution",)),
}


@cli.group()
def insights() -> None:
    """Retention measures: repurchase rate, cohorts, historic CLV, NPS, revenue by stage and
    by flows and campaigns — each as of any date (the page /insights shows them all)."""


def _options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON (keys: see the README).")(command)
    command = click.option("--as-of", "as_of",
                           help="As of this date (ISO 8601, the shop's zone); default now.")(
        command)
    command = click.option("--months", default=MONTHS, show_default=True,
                           type=click.IntRange(1, MAX_MONTHS),
                           help="Months of cohorts and NPS, the as-of month included.")(command)
    return click.option("--days", default=DAYS, show_default=True,
                        type=click.IntRange(1, MAX_DAYS),
                        help="Days of revenue by stage and by source.")(command)


def _show(name: str, as_of: str | None, as_json: bool, months: int, days: int) -> None:
    from lifecycle.insights import check_as_of, report

    app = ready_app()
    moment = parse_as_of(app, as_of)
    try:
        check_as_of(moment)
    except ValueError as exc:
        raise Failure(f"--as-of: {exc}") from None
    with app.engine.connect() as conn:
        found = report(conn, moment, app.settings.currency,
                       timedelta(days=app.settings.attribution_days), months, days,
                       app.settings.timezone)
    if as_json:
        data = found.to_json() if name == "all" else getattr(found, name).to_json()
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    console = Console(highlight=False)
    console.print(f"As of {moment:%Y-%m-%d %H:%M} UTC; months are calendar months in "
                  f"{app.settings.timezone}; money in {found.currency}, the "
                  "reporting currency (orders in other currencies are left out of it and "
                  "counted apart).", soft_wrap=True)
    for key in (TITLES if name == "all" else (name,)):
        title, tables = TITLES[key]
        for table in tables:
            _print(console, f"{title}: {table}" if len(tables) > 1 else title,
                   *found.table(table), found.currency)
        left = getattr(getattr(found, key), "left_out", None)
        if left:
            console.print("Left out of the money: " + ", ".join(
                f"{x.orders} order{'s' if x.orders != 1 else ''} in {x.currency} "
                f"({_money(x.total, x.currency)})" for x in left) + ".", soft_wrap=True)


def _money(amount: Decimal, currency: str) -> str:
    from lifecycle.money import money, terminal_locale

    return money(amount, currency, terminal_locale())


def _print(console: Console, title: str, header: list[str], rows: list[list[Any]],
           currency: str) -> None:
    from lifecycle.money import percent, terminal_locale

    table = Table(title=title, title_justify="left")
    for column in header:
        table.add_column(column, justify="left" if column in (
            "measure", "cohort", "month", "stage", "kind", "name", "comment",
            "customer_id", "answered_at") else "right")
    for row in rows:
        cells = []
        for column, value in zip(header, row, strict=True):
            if value is None or value == "":
                cells.append("—" if value is None else "")
            elif column.endswith(f"_{currency}"):
                cells.append(_money(Decimal(str(value)), currency))
            elif column.startswith("share") or column == "rate":
                cells.append(percent(value, terminal_locale()))
            else:
                cells.append(str(value))
        table.add_row(*cells, end_section=False)
    console.print(table)


def _command(name: str, doc: str) -> None:
    def run(as_json: bool, as_of: str | None, months: int, days: int) -> None:
        _show(name, as_of, as_json, months, days)

    run.__doc__ = doc
    insights.command(name)(_options(run))


_command("repurchase", "Share of buyers with a second completed order, overall and within "
         "30/90/180/365 days of their first; time to second order.")
_command("cohorts", "Cohorts by month of first order × months since: share still buying and "
         "revenue per customer.")
_command("clv", "Historic CLV: cumulative revenue per customer by cohort age.")
_command("nps", "NPS per month with the number of answers, and the comments.")
_command("stages", "Revenue of the last --days days by retention stage as of the date.")
_command("attribution", "Flows' and campaigns' share of the revenue of the last --days days "
         "(last touch), next to the rest.")
_command("all", "Every table of the commands above, one after another (one JSON object).")
