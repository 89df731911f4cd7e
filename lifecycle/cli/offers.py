"""``lifecycle offers``: the offer codes mails handed out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lifecycle.cli.base import Failure, cli, ready_app

#: Offers read per query while exporting.
EXPORT_PAGE = 5000
#: A CSV cell starting with one of these is a formula to a spreadsheet: it is written with a
#: ``'`` in front (OWASP's advice against CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as the CSV export writes it: None empty, a would-be formula prefixed with '."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@cli.group()
def offers() -> None:
    """The discount codes mails handed out: export them for the shop."""


@offers.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON Lines (one offer per line) instead of CSV.")
@click.option("--redeemed/--not-redeemed", default=None,
              help="Only redeemed codes, or only codes not redeemed (default: all).")
@click.option("--flow", help="Only codes of this flow.")
@click.option("--since", help="Only codes made at or after this moment (ISO 8601; a time "
                              "without offset is in LIFECYCLE_TIMEZONE).")
def offers_export(out: Path | None, as_json: bool, redeemed: bool | None, flow: str | None,
                  since: str | None) -> None:
    """Every stored offer code, oldest first, as CSV (a header line, then one code a line)
    or JSON Lines: code, kind, value, currency, customer, flow, step, mail, expiry,
    redemption (the columns of GET /api/v1/offers).  A CSV cell starting with = + - @, a tab
    or a carriage return gets a ' in front, so a spreadsheet does not run it as a formula."""
    import csv
    import json

    from lifecycle.offers.service import FIELDS, Filters, listing
    from lifecycle.timeutil import parse_instant

    app = ready_app()
    try:
        moment = parse_instant(since, app.settings.timezone) if since else None
    except ValueError as exc:
        raise Failure(f"--since {since!r}: {exc}") from None
    filters = Filters(redeemed, flow, moment)
    stream = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    written = 0
    try:
        writer = None if as_json else csv.DictWriter(stream, fieldnames=FIELDS,
                                                     lineterminator="\n")
        if writer is not None:
            writer.writeheader()
        after = 0
        with app.engine.connect() as conn:
            while True:
                page = listing(conn, filters, after=after, limit=EXPORT_PAGE)
                for record in page:
                    if writer is None:
                        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                    else:
                        writer.writerow({k: csv_cell(v) for k, v in record.items()})
                written += len(page)
                if len(page) < EXPORT_PAGE:
                    break
                after = page[-1]["id"]
    finally:
        if out:
            stream.close()
    if out:
        click.echo(f"{written} offers written to {out}.", err=True)
