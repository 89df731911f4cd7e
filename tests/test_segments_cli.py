"""The segments and customer commands, end to end on a fresh database."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lifecycle.cli import cli
from lifecycle.segments.definitions import segment_words

README_KEYS = {"customer_id", "email", "name", "timezone", "attributes", "as_of", "metrics",
               "rfm", "retention_stage", "advocacy", "segments", "stored_but_no_longer_true",
               "advocacy_segments", "predictions"}


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_refresh_then_show_explains_a_customer(cli_env: dict[str, str]) -> None:
    run(cli_env, "sample-data", "--customers", "400", "--until", "2026-06-01")
    table = run(cli_env, "segments", "refresh", "--as-of", "2026-06-01T12:00:00Z")
    assert "Segments as of 2026-06-01 12:00 UTC (400 customers)" in table
    assert "rfm_champions" in table and "prospect" in table
    listing = run(cli_env, "segments", "list")
    assert "top 5% by total spend" in listing
    shown = json.loads(run(cli_env, "customer", "show", "C0000002", "--json",
                           "--as-of", "2026-06-01T12:00:00Z"))
    assert set(shown) == README_KEYS
    assert shown["customer_id"] == "C0000002"
    stage = shown["retention_stage"]
    stored = {s["segment"]: s for s in shown["segments"]}
    assert stored[stage]["since"] == "2026-06-01T12:00:00+00:00" and stored[stage]["stored"]
    if shown["metrics"]["order_count"]:
        assert shown["rfm"]["segment"] and 1 <= shown["rfm"]["r"] <= 5
    text = run(cli_env, "customer", "show", "C0000002", "--as-of", "2026-06-01T12:00:00Z")
    assert f"Retention stage: {segment_words(stage)}" in text


def test_refreshing_one_customer_reports_their_moves(cli_env: dict[str, str]) -> None:
    run(cli_env, "sample-data", "--customers", "50", "--until", "2026-06-01")
    out = run(cli_env, "segments", "refresh", "--customer", "C0000003",
              "--as-of", "2026-06-01T12:00:00Z")
    assert out.startswith("Customer C0000003: entered ")
    again = run(cli_env, "segments", "refresh", "--customer", "C0000003",
                "--as-of", "2026-06-01T13:00:00Z")
    assert again.strip() == "Customer C0000003: entered nothing; left nothing."


def test_an_unknown_customer_is_one_clear_error(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["customer", "show", "nobody"], env=cli_env)
    assert result.exit_code == 2 and "no customer with customer_id or email 'nobody'" in result.stderr


def test_the_scheduler_refreshes_segments_when_the_last_refresh_is_old(
        fresh_database_url: str) -> None:
    from dataclasses import replace
    from datetime import datetime, timedelta

    from sqlalchemy.engine import make_url

    from lifecycle.app import App
    from lifecycle.clock import ManualClock
    from lifecycle.config import load_settings
    from lifecycle.imports import import_rows
    from lifecycle.sample import SampleShop, ShopShape
    from lifecycle.segments.service import refresh_if_due
    from lifecycle.timeutil import UTC

    clock = ManualClock(datetime(2026, 3, 1, 6, tzinfo=UTC))
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      segment_refresh_hours=24), clock=clock)
    shop = SampleShop(ShopShape(customers=60), until=clock.now())
    with app.engine.begin() as conn:
        import_rows(conn, "customers", shop.customers())
        import_rows(conn, "orders", shop.orders())
    first = refresh_if_due(app)
    assert first is not None and first.written and sum(first.entered.values()) > 60
    clock.advance(timedelta(hours=23))
    assert refresh_if_due(app) is None
    clock.advance(timedelta(hours=2))
    later = refresh_if_due(app)
    assert later is not None and later.as_of == clock.now()
    app.close()
