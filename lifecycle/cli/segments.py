"""``lifecycle segments``: validate, refresh and list segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
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
    defs = segment_definitions(app, path)
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
    if report.note:
        console.print(report.note)


@segments.command("list")
def segments_list() -> None:
    """List every segment with its definition and current size."""
    from sqlalchemy import func, select

    from lifecycle.models import SegmentMembership

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
        table.add_row(defs.family(name), name, str(sizes.get(name, 0)), _describe(defs, name))
    Console().print(table)


def _describe(defs: Any, name: str) -> str:
    ret, adv = defs.retention, defs.advocacy
    text = {
        "prospect": "no completed order yet",
        "new": "one completed order",
        "repeat": "two completed orders or more",
        "loyal": f"{ret.loyal_min_orders} completed orders or more",
        "vip": f"top {ret.vip_top_percent:g}% by total spend, {ret.vip_min_orders}+ orders",
        "at_risk": f"days since last order > {ret.at_risk_factor:g} x own median gap",
        "lapsed": f"last order more than {ret.lapsed_days} days ago",
        "churned": f"last order more than {ret.churned_days} days ago",
        "promoter": f"latest NPS 9-10 within {adv.nps_window_days} days",
        "passive": f"latest NPS 7-8 within {adv.nps_window_days} days",
        "detractor": f"latest NPS 0-6 within {adv.nps_window_days} days",
        "reviewer": f"left a review within {adv.review_window_days} days",
        "referrer": f"referred someone within {adv.referral_window_days} days",
    }
    if name in text:
        return text[name]
    if name.startswith("rfm_"):
        cells = [f"R{r[0]}-{r[1]}/FM{fm[0]}-{fm[1]}" for rule in defs.rfm.segments
                 if f"rfm_{rule.name}" == name for r, fm in [(rule.r, rule.fm)]]
        return "RFM " + ", ".join(cells)
    return next((c.description for c in defs.custom if c.name == name), "")
