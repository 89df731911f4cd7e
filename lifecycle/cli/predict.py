"""``lifecycle predict``: fit the BG/NBD and Gamma-Gamma models, and backtest them."""

from __future__ import annotations

import json
from datetime import date

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import Failure, cli, parse_as_of, ready_app
from lifecycle.timeutil import zone


@cli.group()
def predict() -> None:
    """Predictions per buyer: chance of still being a customer, orders, value, CLV."""


@predict.command("fit")
@click.option("--as-of", "as_of", help="Fit on the orders up to this moment (ISO 8601); "
              "default now. With it the fit is only printed; without, it is stored with "
              "every buyer's predictions, as the full segment refresh does.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def predict_fit(as_of: str | None, as_json: bool) -> None:
    """Fit the models and print their parameters, time unit, log-likelihood and buyers."""
    from lifecycle.predictions import service

    app = ready_app()
    moment = parse_as_of(app, as_of)
    if moment > app.clock.now():
        raise Failure(f"--as-of: {as_of} is in the future; a fit can only see the orders "
                      "up to now.")
    options = service.Options.of(app.settings)
    with app.engine.begin() as conn:
        if as_of is None:
            result = service.refresh(conn, moment, app.clock.now(), options)
        else:
            result = service.fit(conn, moment, options)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        click.echo(service.describe(result))
        if result.fit_id is not None and result.fitted:
            click.echo(f"Stored with the predictions of {result.scored} buyers.")
    if not result.fitted:
        raise SystemExit(1)


def _day(label: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Failure(f"{label}: {value!r} is not a date (YYYY-MM-DD).") from None


@predict.command("backtest")
@click.option("--calibration-end", required=True,
              help="Last day of the calibration period (YYYY-MM-DD, shop time, inclusive).")
@click.option("--holdout-end", required=True,
              help="Last day of the holdout period (YYYY-MM-DD, shop time, inclusive).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def predict_backtest(calibration_end: str, holdout_end: str, as_json: bool) -> None:
    """Fit on the calibration period; print predicted vs actual repeat purchases in the
    holdout, in total and by the buyers' repeat purchases in the calibration period."""
    from lifecycle.predictions import service

    app = ready_app()
    cal = _day("--calibration-end", calibration_end)
    end = _day("--holdout-end", holdout_end)
    if end <= cal:
        raise Failure("--holdout-end must be after --calibration-end.")
    today = app.clock.now().astimezone(zone(app.settings.timezone)).date()
    if end >= today:
        raise Failure(f"--holdout-end: {end:%Y-%m-%d} is not over yet (today is "
                      f"{today:%Y-%m-%d} in the shop's time zone); the holdout's actual "
                      "purchases would be counted before they happen.")
    with app.engine.connect() as conn, conn.begin():
        report = service.backtest(conn, cal, end, service.Options.of(app.settings))
        conn.rollback()  # it only reads (its temporary tables go with the transaction)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        if not report.fit.fitted:
            raise SystemExit(1)
        return
    if not report.fit.fitted:
        click.echo(service.describe(report.fit))
        raise SystemExit(1)
    console = Console()
    console.print(service.describe(report.fit), highlight=False)
    table = Table(title=f"Repeat purchases (purchase days) in the {report.holdout_days} days "
                        f"after {cal:%Y-%m-%d}")
    table.add_column("calibration repeat purchases")
    for column in ("buyers", "actual", "predicted", "actual per buyer", "predicted per buyer"):
        table.add_column(column, justify="right")
    for label, n, actual, predicted in report.rows:
        table.add_row(label, str(n), str(actual), f"{predicted:.1f}", f"{actual / n:.3f}",
                      f"{predicted / n:.3f}")
    buyers = sum(row[1] for row in report.rows)
    table.add_row("total", str(buyers), str(report.actual), f"{report.predicted:.1f}",
                  f"{report.actual / buyers:.3f}", f"{report.predicted / buyers:.3f}")
    console.print(table)
