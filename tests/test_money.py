"""Money: Babel's formats per reader, one reporting currency, other currencies kept apart."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.config import ConfigError, load_settings
from lifecycle.mail.context import build_context
from lifecycle.models import Customer, Order
from lifecycle.money import money, reader_locale
from lifecycle.results import flow_results
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.segments.explain import explain
from tests.factories import WEB_SECRET, account, add_customer, add_order, logged_in, write_csv
from tests.factories import WEB_T0 as T0
from tests.test_flow_results import mail

ROOT = Path(__file__).resolve().parent.parent
DEFS = load_definitions(ROOT / "flows" / "segments.yaml")
NBSP = "\xa0"


def test_amounts_are_written_with_their_currency_as_the_reader_s_locale_writes_them() -> None:
    assert money("1234.5", "USD", "en_US") == "$1,234.50"
    assert money("1234.5", "EUR", "de_DE") == f"1.234,50{NBSP}€"
    assert money("1234.5", "USD", "de_DE") == f"1.234,50{NBSP}$"


def test_the_reader_s_locale_is_negotiated_from_accept_language() -> None:
    assert str(reader_locale("de-DE,de;q=0.9,en;q=0.8")) == "de_DE"
    assert str(reader_locale("en;q=0.5, fr-CH")) == "fr_CH"  # by weight, not by position
    assert str(reader_locale("xx-YY, *")) == "en_US"  # nothing Babel knows: the fallback
    assert str(reader_locale(None)) == "en_US"


def test_the_reporting_currency_is_a_setting_checked_against_iso_4217() -> None:
    assert load_settings({}).currency == "USD"
    assert load_settings({"LIFECYCLE_CURRENCY": "eur"}).currency == "EUR"
    with pytest.raises(ConfigError, match="LIFECYCLE_CURRENCY='EURO' is not an ISO 4217"):
        load_settings({"LIFECYCLE_CURRENCY": "EURO"})


def a_customer_paying_in_two_currencies(conn: Connection) -> int:
    cid = add_customer(conn, "C1", T0 - timedelta(days=100))
    add_order(conn, cid, T0 - timedelta(days=40), "100.00")
    add_order(conn, cid, T0 - timedelta(days=20), "60.00")
    add_order(conn, cid, T0 - timedelta(days=10), "900.00", currency="EUR")
    return int(cid)


def test_spend_metrics_count_only_orders_in_the_reporting_currency(conn: Connection) -> None:
    cid = a_customer_paying_in_two_currencies(conn)
    row = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
    in_usd = explain(conn, DEFS, row, T0)["metrics"]
    assert in_usd["order_count"] == 3  # every completed order is an order
    assert in_usd["total_spend"] == 160 and in_usd["avg_spend"] == 80
    assert in_usd["currency"] == "USD"
    assert in_usd["other_currencies"] == [{"currency": "EUR", "orders": 1, "total": "900.00"}]
    in_eur = explain(conn, replace(DEFS, currency="EUR"), row, T0)["metrics"]
    assert in_eur["total_spend"] == 900 and in_eur["avg_spend"] == 900
    assert in_eur["other_currencies"] == [{"currency": "USD", "orders": 2, "total": "160.00"}]


def test_a_custom_segment_on_spend_never_adds_two_currencies(conn: Connection,
                                                             tmp_path: Path) -> None:
    a_customer_paying_in_two_currencies(conn)
    path = tmp_path / "segments.yaml"
    path.write_text((ROOT / "flows" / "segments.yaml").read_text(encoding="utf-8")
                    + "  spent_500:\n    metric: {name: total_spend, op: \">=\", value: 500}\n",
                    encoding="utf-8")
    defs = load_definitions(path)
    assert refresh_all(conn, defs, T0, T0).sizes["spent_500"] == 0  # 160 USD + 900 EUR: no
    eur = replace(defs, currency="EUR")
    assert refresh_all(conn, eur, T0 + timedelta(hours=1), T0 + timedelta(hours=1)) \
        .sizes["spent_500"] == 1


def test_flow_revenue_counts_the_reporting_currency_and_keeps_others_apart(
        conn: Connection) -> None:
    a, b = (add_customer(conn, name, T0 - 400 * timedelta(days=1)) for name in ("a", "b"))
    mail(conn, a, "win_back", "one", None, T0 - timedelta(days=5))
    mail(conn, b, "win_back", "one", None, T0 - timedelta(days=5))
    add_order(conn, a, T0 - timedelta(days=4), "30.00")
    add_order(conn, b, T0 - timedelta(days=4), "70.00", currency="EUR")
    r = flow_results(conn, "win_back", T0 - timedelta(days=30), T0, timedelta(days=7),
                     currency="USD")
    assert r.total.counts["conversions"] == 2  # both orders are conversions
    assert r.total.revenue == 30  # but only USD is revenue
    assert list(r.total.other_revenue) == [("EUR", 70)]
    assert sum(d.revenue for d in r.daily) == 30


def test_a_mail_s_metrics_sum_only_the_reporting_currency(conn: Connection) -> None:
    cid = a_customer_paying_in_two_currencies(conn)
    row = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
    context = build_context(conn, replace(load_settings({}), secret_key=WEB_SECRET), row, as_of=T0)
    assert context["metrics"] == {"order_count": 3, "total_spend": "$160.00",
                                  "total_spend_amount": "160.00", "currency": "USD"}


def test_the_customer_page_writes_spend_for_the_reader_and_shows_other_currencies_apart(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        cid = a_customer_paying_in_two_currencies(conn)
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example")
    english = web.get(f"/customers/{cid}", headers={"Accept-Language": "en-US"}).text
    assert "3 · spent $160.00 in all, $80.00 on average" in english
    assert "also €900.00 in 1 order paid in EUR, kept apart" in english
    german = web.get(f"/customers/{cid}", headers={"Accept-Language": "de-DE,de;q=0.9"}).text
    assert f"spent 160,00{NBSP}$ in all, 80,00{NBSP}$ on average" in german
    assert f"also 900,00{NBSP}€ in 1 order paid in EUR" in german


def test_customer_show_prints_amounts_with_their_currency_for_the_terminal_s_locale(
        app: App, cli_env: dict[str, str]) -> None:
    with app.engine.begin() as conn:
        a_customer_paying_in_two_currencies(conn)
    result = CliRunner().invoke(cli, ["customer", "show", "C1", "--as-of",
                                      T0.isoformat()], env={**cli_env, "LC_ALL": "de_DE.UTF-8"})
    assert result.exit_code == 0, result.output
    assert f"spent 160,00{NBSP}$ (average 80,00{NBSP}$)" in result.stdout
    assert f"also 900,00{NBSP}€ in 1 order(s) paid in EUR, kept apart" in result.stdout


def test_imported_and_sample_orders_without_a_currency_are_in_the_reporting_currency(
        app: App, cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "LIFECYCLE_CURRENCY": "EUR"}
    path = write_csv(tmp_path / "orders.csv", ["order_id", "customer_id", "ordered_at", "total"],
                     [["O1", "C9", "2026-05-01T10:00:00Z", "12.00"]])
    result = CliRunner().invoke(cli, ["import", "orders", str(path)], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["sample-data", "--customers", "20", "--until",
                                      "2026-06-01"], env=env)
    assert result.exit_code == 0, result.output
    with app.engine.connect() as conn:
        assert set(conn.execute(select(Order.currency).distinct()).scalars()) == {"EUR"}


def test_the_readme_states_metrics_in_the_units_the_commands_print(
        app: App, cli_env: dict[str, str]) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C2", T0 - timedelta(days=10))
        add_order(conn, cid, T0 - timedelta(days=5), "12.50")
    result = CliRunner().invoke(cli, ["customer", "show", "C2", "--json", "--as-of",
                                      T0.isoformat()], env=cli_env)
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["total_spend"] == 12.5 and metrics["currency"] == "USD"  # not 1250 cents
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(cents)" not in readme
    assert "decimal amounts in the reporting currency" in readme
