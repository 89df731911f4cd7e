"""``lifecycle import``: purchase history from CSV or JSON Lines."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lifecycle.cli.base import (
    Failure,
    cli,
    ready_app,
    stderr,
)


def _import(kind: str, file: str, fmt: str | None, strict: bool, timezone: str | None,
            currency: str | None, refresh: bool = False) -> None:
    import time

    from lifecycle.imports import ImportAborted, ImportIssue, import_records
    from lifecycle.imports.rows import Defaults
    from lifecycle.imports.source import SourceError, open_source
    from lifecycle.orders import IMPORT_REFRESH_SHARE, refresh_imported
    from lifecycle.segments.service import definitions
    from lifecycle.timeutil import is_timezone

    app = ready_app()
    zone_name = timezone or app.settings.timezone
    if not is_timezone(zone_name):
        raise Failure(f"--timezone {zone_name!r} is not an IANA timezone such as Europe/Berlin.")
    try:
        source = open_source(file, fmt)
    except SourceError as exc:
        raise Failure(str(exc)) from None
    err = stderr()
    show_progress = err.is_terminal

    def on_issue(issue: ImportIssue) -> None:
        err.print(str(issue), markup=False, soft_wrap=True)

    progress = Progress(SpinnerColumn(), TextColumn(f"Importing {kind} from {source.name}"),
                        BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=err,
                        disable=not show_progress, transient=True)
    try:
        with progress:
            task = progress.add_task("import", total=source.size)
            with app.engine.begin() as conn:
                result = import_records(
                    conn, kind, source.records(lambda n: progress.advance(task, n)),
                    source_name=source.name,
                    defaults=Defaults(zone_name, (currency or app.settings.currency).upper()),
                    strict=strict, clock=app.clock, on_issue=on_issue)
                how, report, started = "off", None, time.perf_counter()
                if refresh and kind == "orders":
                    how, report = refresh_imported(conn, lambda: definitions(app), app.clock,
                                                   result)
                refresh_seconds = time.perf_counter() - started
    except ImportAborted:
        err.print("Aborted at the first bad row (--strict): nothing was imported.", markup=False,
                  soft_wrap=True)
        raise SystemExit(1) from None
    except SourceError as exc:
        raise Failure(str(exc)) from None
    finally:
        source.close()
    table = Table(title=f"Imported {kind} from {source.name}")
    for column in ("read", "inserted", "updated", "unchanged", "skipped"):
        table.add_column(column, justify="right")
    table.add_row(*(str(getattr(result, c)) for c in ("read", "inserted", "updated", "unchanged",
                                                        "skipped")))
    console = Console()
    console.print(table)
    if kind == "orders" and result.customers_created:
        console.print(f"{result.customers_created} customers named in the file were not known "
                      "and were created with what the file says.")
    if kind == "orders":
        console.print(f"{result.announced} completed orders added to their customers' timelines"
                      + (f", {result.status_changes} status changes (refunds, cancellations)"
                         if result.status_changes else "") + " (history: no flow triggers).")
        codes = result.redemptions
        if codes is not None and (codes.redeemed or codes.unknown or codes.taken
                                  or codes.not_theirs or codes.undone):
            console.print(f"Offer codes: {codes.redeemed} redeemed"
                          + (f" ({codes.late} after they had expired)" if codes.late else "")
                          + f", {codes.unknown} unknown (ignored), {codes.taken} already "
                          f"redeemed by another order (ignored), {codes.not_theirs} handed to "
                          f"another customer (ignored), {codes.undone} taken back (their "
                          "orders cancelled or refunded).")
        changed = result.customers_changed
        moved = ("" if report is None else f" in {refresh_seconds:.1f} s: "
                 f"{sum(report.entered.values())} entries, {sum(report.exited.values())} exits "
                 "(history too: they start no flows)")
        later = ("left to the next full refresh (the scheduler's every "
                 "LIFECYCLE_SEGMENT_REFRESH_HOURS, or `lifecycle segments refresh` now)")
        said = {
            "partial": f"Segments refreshed for the {changed} customers whose completed orders "
                       f"changed{moved}.",
            "full": f"Segments refreshed for all {report.customers if report else 0} customers "
                    f"(the first calibration of RFM scores){moved}.",
            "deferred": f"Segments of the {changed} customers whose completed orders changed are "
                        f"{later}: they are more than {IMPORT_REFRESH_SHARE:.0%} of all "
                        "customers, and refreshing that many costs about what a full refresh does.",
            "invalid": f"Segments of the {changed} customers whose completed orders changed are "
                       f"{later}: segments.yaml has problems (see the log).",
            "off": f"Segments of the {changed} customers whose completed orders changed are "
                   f"{later} (--no-refresh).",
        }
        if changed and how in said:
            console.print(said[how], style="yellow" if how == "invalid" else None)


@cli.group("import")
def import_group() -> None:
    """Import purchase history from CSV (with a header) or JSON Lines; `-` reads stdin."""


_import_options = [
    click.argument("file"),
    click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
                 help="File format (default: from the file name; stdin: sniffed)."),
    click.option("--strict", is_flag=True,
                 help="Stop at the first bad row and import nothing."),
    click.option("--timezone", help="Zone of times without an offset (default LIFECYCLE_TIMEZONE)."),
    click.option("--currency", help="Currency of orders whose row names none (default "
                 "LIFECYCLE_CURRENCY, the shop's reporting currency)."),
]


def _with_import_options(fn: Any) -> Any:
    for option in reversed(_import_options):
        fn = option(fn)
    return fn


@import_group.command("customers")
@_with_import_options
def import_customers(file: str, fmt: str | None, strict: bool, timezone: str | None,
                     currency: str | None) -> None:
    """Upsert customers by customer_id (columns: see the README)."""
    _import("customers", file, fmt, strict, timezone, currency)


@import_group.command("orders")
@_with_import_options
@click.option("--no-refresh", "refresh", is_flag=True, default=True, flag_value=False,
              help="Leave the segments of the customers to the next full refresh.")
def import_orders(file: str, fmt: str | None, strict: bool, timezone: str | None,
                  currency: str | None, refresh: bool) -> None:
    """Upsert orders by order_id; unknown customers are created; then the segments of the
    customers whose completed orders changed are refreshed (unless --no-refresh)."""
    _import("orders", file, fmt, strict, timezone, currency, refresh)
