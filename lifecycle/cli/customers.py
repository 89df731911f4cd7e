"""``lifecycle customer``: show, export and erase one customer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
    Failure,
    cli,
    known_customer,
    parse_as_of,
    ready_app,
    segment_definitions,
    stderr,
)


@cli.group()
def customer() -> None:
    """One customer: what we know and why they are in each segment."""


@customer.command("show")
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: see the README).")
@click.option("--as-of", "as_of", help="As of this date (ISO 8601); default now.")
def customer_show(customer_id: str, as_json: bool, as_of: str | None) -> None:
    """Metrics, R/F/M scores, retention stage, advocacy and segments of CUSTOMER_ID (their id
    at the shop, or email)."""
    import json

    from lifecycle.segments.explain import NotACustomerYet, explain

    app = ready_app()
    defs = segment_definitions(app)
    moment = parse_as_of(app, as_of)
    with app.engine.connect() as conn:
        try:
            data = explain(conn, defs, known_customer(conn, customer_id), moment)
        except NotACustomerYet as exc:
            raise Failure(str(exc)) from None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_customer(data)


@customer.command("export")
@click.argument("customer_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON here instead of standard output.")
def customer_export(customer_id: str, out: Path | None) -> None:
    """Everything held about CUSTOMER_ID (their id at the shop, or email), as JSON."""
    import json

    from lifecycle.privacy import export

    app = ready_app()
    with app.engine.connect() as conn:
        found = known_customer(conn, customer_id)
        data = export(conn, found)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        stderr().print(f"Wrote everything held about {customer_id} to {out}.", highlight=False)


@customer.command("erase")
@click.argument("customer_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def customer_erase(customer_id: str, yes: bool) -> None:
    """Erase CUSTOMER_ID's personal data; the address stays only as a hash, never mailed."""
    from lifecycle.privacy import erase

    app = ready_app()
    if not yes:
        click.confirm(f"Erase the personal data of {customer_id}? This cannot be undone.",
                      abort=True)
    with app.engine.begin() as conn:
        found = known_customer(conn, customer_id)
        counts = erase(conn, found, app.clock.now())
    click.echo(f"Erased customer {customer_id} (now erased:{found.id}): "
               + ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in counts.items()) + ".")


def attribute_text(value: Any) -> str:
    """An attribute's value for people: text as it is, anything else as JSON."""
    import json

    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def days_ago(days: float | int) -> str:
    """``days`` whole days elapsed, in words: "today", "1 day ago", "12 days ago"."""
    whole = int(round(days))
    return "today" if whole == 0 else f"{whole} day{'s' if whole != 1 else ''} ago"


def _print_customer(data: dict[str, Any]) -> None:
    from lifecycle.money import money, terminal_locale
    from lifecycle.segments.definitions import RFM_PREFIX, segment_words

    console = Console(highlight=False)
    locale = terminal_locale()
    m = data["metrics"]
    cur = m["currency"]
    title = f"{data['customer_id']}  {data['email'] or ''}  {data['name'] or ''}".strip()
    console.print(f"[bold]{title}[/bold]  (timezone {data['timezone'] or 'of the shop'})")
    console.print(f"As of {data['as_of']}")
    if data["attributes"]:
        console.print("Attributes:")
        for name, value in data["attributes"].items():  # sorted by name
            console.print(f"  {name}: {attribute_text(value)}", markup=False)
    else:
        console.print("Attributes: none")
    if m["order_count"]:
        console.print(
            f"Orders {m['order_count']}, spent {money(m['total_spend'], cur, locale)} "
            + (f"(average {money(m['avg_spend'], cur, locale)}); "
               if m["avg_spend"] is not None else f"(none in {cur}); ")
            + f"first {m['first_order_at'][:10]}, last {m['last_order_at'][:10]} "
            f"({days_ago(m['days_since_last_order'])}); typical gap "
            + (f"{m['median_gap_days']:.1f} days" if m["median_gap_days"] is not None else "unknown "
               "(one order)"))
        for other in m["other_currencies"]:
            console.print(f"  also {money(other['total'], other['currency'], locale)} in "
                          f"{other['orders']} order(s) paid in {other['currency']}, kept apart: "
                          f"spend counts only orders in {cur}, the reporting currency")
    else:
        console.print("No completed orders.")
    rfm = data["rfm"]
    if rfm:
        console.print(f"RFM: R{rfm['r']} F{rfm['f']} M{rfm['m']} (FM {rfm['fm']}) → "
                      f"{segment_words(RFM_PREFIX + rfm['segment'])}"
                      f"   [dim]cut points of the refresh as of {rfm['calibrated_as_of']}[/dim]")
    adv = data["advocacy"]
    nps = f"{adv['nps']} (NPS {adv['nps_score']})" if adv["nps"] else "no recent NPS answer"
    extras = [label for label in ("reviewer", "referrer") if adv[label]]
    console.print(f"Retention stage: [bold]{segment_words(data['retention_stage'])}[/bold]"
                  f"   Advocacy: {nps}"
                  + (f", {', '.join(extras)}" if extras else ""))
    table = Table("family", "segment", "since", "why")
    for item in data["segments"]:
        since = item["since"][:16].replace("T", " ") if item["since"] else "not stored yet"
        why = ", ".join(f"{k} {v}" for k, v in item["reason"].items() if v is not None)
        table.add_row(item["family"], segment_words(item["segment"]), since, why)
    console.print(table)
    for line in prediction_lines(data["predictions"], locale):
        console.print(line)
    if data["stored_but_no_longer_true"]:
        console.print("Stored but no longer true (the next refresh closes them): "
                      + ", ".join(map(segment_words, data["stored_but_no_longer_true"])))


def prediction_lines(prediction: dict[str, Any] | None, locale: Any) -> list[str]:
    """A customer's stored prediction in words (``customer show``), money for ``locale``."""
    from lifecycle.money import money

    if prediction is None:
        return ["Predictions: none (no completed order, too few buyers for the models, or an "
                "order since the last fit)."]
    cur = prediction["currency"]
    nxt = prediction["expected_next_order_at"]
    return [
        f"Predictions (fitted as of {prediction['as_of'][:10]}): "
        f"{round(prediction['p_alive'] * 100)}% likely still a customer; about "
        f"{prediction['expected_orders']:.1f} orders in the next {prediction['horizon_days']} "
        f"days; " + (f"next order more likely than not by {nxt[:10]}" if nxt else
                     "no next order expected (more likely gone than still buying)") + ".",
        f"  An order is worth {money(prediction['expected_order_value'], cur, locale)}; the next "
        f"12 months {money(prediction['predicted_clv'], cur, locale)}.",
    ]

