"""``lifecycle import``: purchase history from CSV or JSON Lines.

Exit status: 0 when every row went in whole, :data:`INCOMPLETE` (3) when rows were skipped or
values left out (the summary counts them by reason), 1 when ``--strict`` stopped at a bad row,
2 when the file cannot be read at all.
"""

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
from rich.text import Text

from lifecycle.cli.base import (
    Failure,
    cli,
    ready_app,
    stderr,
)

#: Exit status of an import that skipped rows or left values out (the rest went in).
INCOMPLETE = 3


def _reasons_table(title: str, reasons: Any) -> Table:
    table = Table(title=title)
    table.add_column("reason")
    table.add_column("rows", justify="right")
    for reason, rows in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(Text(reason), str(rows))
    return table


def _import(kind: str, file: str, fmt: str | None, strict: bool, timezone: str | None,
            currency: str | None, refresh: bool = False, as_json: bool = False) -> None:
    import json
    import time

    from lifecycle.flows.service import catalogue
    from lifecycle.imports import (
        ImportAborted,
        ImportIssue,
        date_trigger_attributes,
        import_records,
    )
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
    dates = date_trigger_attributes(catalogue(app).flows.values()) if kind == "customers" else ()

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
                    strict=strict, clock=app.clock, on_issue=on_issue, date_attributes=dates)
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
    if as_json:
        summary: dict[str, Any] = {
            "kind": kind, "file": source.name,
            **{c: getattr(result, c) for c in ("read", "inserted", "updated", "unchanged",
                                               "skipped")},
            "skipped_by_reason": dict(result.skipped_reasons.most_common()),
            "left_out": result.left_out,
            "left_out_by_reason": dict(result.left_out_reasons.most_common()),
            "exit_status": 0 if result.complete else INCOMPLETE}
        if kind == "orders":
            summary.update(customers_created=result.customers_created,
                           customers_without_email=result.customers_without_email,
                           announced=result.announced, status_changes=result.status_changes)
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        if not result.complete:
            raise SystemExit(INCOMPLETE)
        return
    table = Table(title=f"Imported {kind} from {source.name}")
    for column in ("read", "inserted", "updated", "unchanged", "skipped"):
        table.add_column(column, justify="right")
    table.add_row(*(str(getattr(result, c)) for c in ("read", "inserted", "updated", "unchanged",
                                                        "skipped")))
    console = Console()
    console.print(table)
    if result.skipped_reasons:
        console.print(_reasons_table(f"Skipped rows ({result.skipped}) by reason",
                                     result.skipped_reasons))
    if result.left_out_reasons:
        console.print(_reasons_table(f"Rows imported with a value left out ({result.left_out}) "
                                     "by reason", result.left_out_reasons))
    if kind == "orders" and result.customers_created:
        console.print(f"{result.customers_created} customers named in the file were not known "
                      "and were created with what the file says.", markup=False)
        if result.customers_without_email:
            console.print(f"{result.customers_without_email} of them have no email in the file: "
                          "their orders count for segments and results, but no mail reaches "
                          "them until a customers import (or the API) gives them one.",
                          markup=False)
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
    if not result.complete:
        err.print(f"Not everything went in (exit status {INCOMPLETE}): the lines above name the "
                  "rows; fix them and import the file again (what went in stays unchanged).",
                  markup=False, soft_wrap=True)
        raise SystemExit(INCOMPLETE)


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
    click.option("--json", "as_json", is_flag=True,
                 help="Print the summary as JSON (keys: see the README)."),
]


def _with_import_options(fn: Any) -> Any:
    for option in reversed(_import_options):
        fn = option(fn)
    return fn


@import_group.command("customers")
@_with_import_options
def import_customers(file: str, fmt: str | None, strict: bool, timezone: str | None,
                     currency: str | None, as_json: bool) -> None:
    """Upsert customers by customer_id (columns: see the README); a row without an email
    updates a known customer only.  Exit status 3 when rows were skipped or values left out."""
    _import("customers", file, fmt, strict, timezone, currency, as_json=as_json)


@import_group.command("orders")
@_with_import_options
@click.option("--no-refresh", "refresh", is_flag=True, default=True, flag_value=False,
              help="Leave the segments of the customers to the next full refresh.")
def import_orders(file: str, fmt: str | None, strict: bool, timezone: str | None,
                  currency: str | None, as_json: bool, refresh: bool) -> None:
    """Upsert orders by order_id; unknown customers are created; then the segments of the
    customers whose completed orders changed are refreshed (unless --no-refresh).  Exit
    status 3 when rows were skipped."""
    _import("orders", file, fmt, strict, timezone, currency, refresh, as_json)
