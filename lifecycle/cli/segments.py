"""``lifecycle segments``: validate, refresh and list segments, list or export members."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
    Failure,
    cli,
    customer_by_id,
    load_app,
    parse_as_of,
    ready_app,
    segment_definitions,
    stderr,
)


@cli.group()
def segments() -> None:
    """Segments from purchase history (defined in LIFECYCLE_FLOWS_DIR/segments.yaml)."""


@segments.command("validate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def segments_validate(path: Path | None) -> None:
    """Check segments.yaml; print each problem as FILE:LINE:COLUMN: message."""
    app = load_app()
    defs = segment_definitions(app, path or app.settings.segments_file)  # the file itself
    click.echo(f"{defs.file}: {len(defs.all_names())} segments, no problems.")


@segments.command("refresh")
@click.option("--as-of", "as_of", help="Compute as of this date (ISO 8601); default now.")
@click.option("--customer", "customer_id", help="Refresh only this customer (their customer_id).")
def segments_refresh(as_of: str | None, customer_id: str | None) -> None:
    """Recompute segments: all customers (recalibrating RFM), or one."""
    from lifecycle.segments.compute import refresh_all, refresh_customer

    app = ready_app()
    defs = segment_definitions(app)
    moment = parse_as_of(app, as_of)
    console = Console()
    if customer_id is not None:
        with app.engine.begin() as conn:
            customer = customer_by_id(conn, customer_id)
            entered, exited = refresh_customer(conn, defs, customer.id, moment, app.clock.now())
        console.print(f"Customer {customer_id}: entered {', '.join(entered) or 'nothing'}; "
                      f"left {', '.join(exited) or 'nothing'}.")
        return
    err = stderr()
    with err.status("Refreshing segments", spinner="dots") as status:
        def progress(step: str) -> None:
            status.update(f"{step}…")
            if not err.is_terminal:
                err.print(f"{step}…", highlight=False)

        with app.engine.begin() as conn:
            report = refresh_all(conn, defs, moment, app.clock.now(), progress=progress)
    table = Table(title=f"Segments as of {moment:%Y-%m-%d %H:%M} UTC ({report.customers} customers)")
    table.add_column("family")
    table.add_column("segment")
    for column in ("customers", "entered", "left"):
        table.add_column(column, justify="right")
    for name in defs.all_names() + sorted(set(report.exited) - set(defs.all_names())):
        table.add_row(defs.family(name), name, str(report.sizes.get(name, 0)),
                      str(report.entered.get(name, 0)), str(report.exited.get(name, 0)))
    console.print(table)
    if report.written:
        console.print(f"Recommendations: {report.products} products, {report.pairs} pairs "
                      "bought by the same customers.")
    if report.predictions is not None:
        fit = report.predictions
        console.print(f"Predictions: stored for {fit.scored} buyers." if fit.fitted
                      else f"Predictions: none; {fit.reason}", highlight=False)
    if report.note:
        console.print(report.note)


@segments.command("list")
def segments_list() -> None:
    """List every segment with its definition and current size."""
    from sqlalchemy import func, select

    from lifecycle.models import SegmentMembership
    from lifecycle.segments.members import describe

    app = ready_app()
    defs = segment_definitions(app)
    with app.sessions() as session:
        sizes = dict(session.execute(
            select(SegmentMembership.segment, func.count())
            .where(SegmentMembership.exited_at.is_(None))
            .group_by(SegmentMembership.segment)).all())
    table = Table(title=f"Segments of {defs.file}")
    for column in ("family", "segment", "customers", "definition"):
        table.add_column(column, justify="right" if column == "customers" else "left")
    for name in defs.all_names():
        table.add_row(defs.family(name), name, str(sizes.get(name, 0)), describe(defs, name))
    Console().print(table)


@segments.command("members")
@click.argument("name")
@click.option("--csv", "as_csv", is_flag=True,
              help="CSV with a header line (customer_id, external_id, email, name, joined_at).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many members.")
def segments_members(name: str, as_csv: bool, limit: int | None) -> None:
    """The customers in segment NAME now, by row id: a table, or CSV for a spreadsheet.

    A CSV cell starting with = + - @, a tab or a carriage return gets a ' in front, so a
    spreadsheet does not run it as a formula."""
    import csv
    import sys

    from lifecycle.segments.definitions import segment_words
    from lifecycle.segments.members import COLUMNS, all_members, member_count

    app = ready_app()
    defs = segment_definitions(app)
    if name not in defs.all_names():
        from lifecycle.flows.definitions import did_you_mean

        raise Failure(f"no segment {name!r}{did_you_mean(name, set(defs.all_names()))} in "
                      f"{defs.file}; `lifecycle segments list` names them all.")
    with app.engine.connect() as conn:
        if as_csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(COLUMNS)
            for member in all_members(conn, name, limit):
                writer.writerow(member.row())
            return
        total = member_count(conn, name)
        members = list(all_members(conn, name, limit))
    table = Table(title=f"{segment_words(name)} ({name}): {total} customers"
                  + (f", the first {len(members)}" if len(members) < total else ""))
    for column in ("customer_id", "external_id", "email", "name", "joined (UTC)"):
        table.add_column(column, overflow="fold")  # an address cut short is no use
    for m in members:
        table.add_row(str(m.id), m.external_id, m.email or "", m.name or "",
                      f"{m.joined_at:%Y-%m-%d %H:%M}")
    Console(highlight=False).print(table)
