"""Predictions in the full segment refresh, as segment metrics, in ``customer show`` and on
the customer's page (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.db import make_engine
from lifecycle.models import CustomerPrediction, PredictionFit, SegmentMembership
from lifecycle.segments.compute import refresh_all, refresh_customer
from lifecycle.segments.definitions import load_definitions, parse
from lifecycle.segments.service import definitions
from lifecycle.yamlfile import loads
from tests.factories import WEB_T0, account, add_customer, add_order, logged_in
from tests.prediction_factories import simulated_buyers

SHIPPED = Path(__file__).parents[1] / "flows" / "segments.yaml"
AS_OF = WEB_T0
DAY = timedelta(days=1)


def _members(conn: Connection, segment: str) -> set[int]:
    return set(conn.execute(select(SegmentMembership.customer_id).where(
        SegmentMembership.segment == segment, SegmentMembership.exited_at.is_(None))).scalars())


def _p_alive(conn: Connection) -> dict[int, float]:
    return dict(conn.execute(select(CustomerPrediction.customer_id,
                                    CustomerPrediction.p_alive)).all())


def test_the_full_refresh_refits_and_likely_to_lapse_holds_the_buyers_under_even_odds(
        conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF)
    report = refresh_all(conn, load_definitions(SHIPPED), AS_OF, AS_OF)
    assert report.predictions.fitted and report.predictions.scored == 400
    fits = conn.execute(select(PredictionFit.as_of, PredictionFit.status)).all()
    assert fits == [(AS_OF, "fitted")]
    alive = _p_alive(conn)
    lapsing = {cid for cid, p in alive.items() if p < 0.5}
    assert lapsing and len(lapsing) < len(alive)
    assert _members(conn, "likely_to_lapse") == lapsing
    # Not the rule-based at_risk: the model weighs each buyer's own rhythm and history.
    assert _members(conn, "likely_to_lapse") != _members(conn, "at_risk")


def test_a_refresh_that_skips_predictions_leaves_them_as_they_were(conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF)
    report = refresh_all(conn, load_definitions(SHIPPED), AS_OF, AS_OF, predict=False)
    assert report.predictions is None
    assert conn.execute(select(PredictionFit.id)).first() is None


def test_every_prediction_metric_is_a_segment_condition(conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF)
    text = SHIPPED.read_text() + """
  worth_keeping:
    all:
      - metric: {name: predicted_clv, op: ">=", value: 100}
      - metric: {name: expected_orders, op: ">", value: 0.5}
      - metric: {name: expected_order_value, op: ">", value: 1}
"""
    defs = parse(loads(text, "segments.yaml"))
    refresh_all(conn, defs, AS_OF, AS_OF)
    rows = conn.execute(select(CustomerPrediction)).all()
    wanted = {r.customer_id for r in rows if r.predicted_clv >= 100 and r.expected_orders > 0.5
              and r.expected_order_value > 1}
    assert wanted and _members(conn, "worth_keeping") == wanted


def test_an_order_after_the_fit_voids_the_customers_prediction_until_the_next(
        conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF)
    defs = load_definitions(SHIPPED)
    refresh_all(conn, defs, AS_OF, AS_OF)
    lapsing = sorted(_members(conn, "likely_to_lapse"))
    back = lapsing[0]
    add_order(conn, back, AS_OF + DAY, "25.00")
    entered, exited = refresh_customer(conn, defs, back, AS_OF + DAY, AS_OF + DAY)
    assert "likely_to_lapse" in exited
    from lifecycle.predictions.service import for_customer

    assert for_customer(conn, back) is None
    assert for_customer(conn, lapsing[1])["p_alive"] < 0.5


def _cli_env_shop(cli_env: dict[str, str]) -> int:
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            ids = simulated_buyers(conn, 400, AS_OF)
            keen = add_customer(conn, "keen", AS_OF - 200 * DAY)
            for days in (200, 150, 100, 50, 5):
                add_order(conn, keen, AS_OF - days * DAY, "30.00")
            refresh_all(conn, load_definitions(SHIPPED), AS_OF, AS_OF)
    finally:
        engine.dispose()
    return ids[0]


def test_customer_show_gives_the_predictions_as_json_and_in_words(cli_env) -> None:
    _cli_env_shop(cli_env)
    result = CliRunner().invoke(cli, ["customer", "show", "keen", "--json",
                                      "--as-of", AS_OF.isoformat()], env=cli_env)
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["predictions"]
    assert set(prediction) == {"p_alive", "expected_orders", "expected_order_value",
                               "predicted_clv", "currency", "expected_next_order_at",
                               "horizon_days", "as_of"}
    assert prediction["horizon_days"] == 90 and prediction["currency"] == "USD"
    assert 0.8 < prediction["p_alive"] <= 1 and prediction["expected_orders"] > 0
    assert re.fullmatch(r"\d+\.\d\d", prediction["expected_order_value"])
    assert prediction["expected_next_order_at"] > AS_OF.isoformat()
    text = CliRunner().invoke(cli, ["customer", "show", "keen", "--as-of", AS_OF.isoformat()],
                              env=cli_env).stdout
    assert f"{round(prediction['p_alive'] * 100)}% likely still a customer" in text
    assert f"next order more likely than not by {prediction['expected_next_order_at'][:10]}" in text


def test_the_horizon_setting_sets_the_days_of_the_expected_orders(cli_env) -> None:
    _cli_env_shop(cli_env)
    env = {**cli_env, "LIFECYCLE_PREDICTION_HORIZON_DAYS": "30"}
    result = CliRunner().invoke(cli, ["predict", "fit", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["horizon_days"] == 30
    shown = CliRunner().invoke(cli, ["customer", "show", "keen", "--json"], env=env)
    short = json.loads(shown.stdout)["predictions"]
    assert short["horizon_days"] == 30
    long = CliRunner().invoke(cli, ["predict", "fit", "--json"], env=cli_env)
    assert long.exit_code == 0
    shown = CliRunner().invoke(cli, ["customer", "show", "keen", "--json"], env=cli_env)
    assert json.loads(shown.stdout)["predictions"]["expected_orders"] > short["expected_orders"]


def test_the_customer_page_says_the_predictions_in_words(app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        simulated_buyers(conn, 400, AS_OF)
        keen = add_customer(conn, "keen", AS_OF - 200 * DAY)
        for days in (200, 150, 100, 50, 5):
            add_order(conn, keen, AS_OF - days * DAY, "30.00")
        loner = add_customer(conn, "loner", AS_OF - 20 * DAY)
        refresh_all(conn, definitions(app), AS_OF, AS_OF)
    account(app, "sue@shop.example", "support")
    client = logged_in(web, "sue@shop.example")
    text = client.get(f"/customers/{keen}").text
    assert '<h3 id="predictions">What the purchase model expects</h3>' in text
    section = text.split('id="predictions"')[1].split("<h2")[0]
    assert re.search(r"Still a customer</th><td>\d+% likely", section)
    assert "Orders in the next 90 days</th><td>about " in section
    assert "Next order</th><td>more likely than not by 20" in section
    assert re.search(r"Value in the next 12 months</th><td>\$[\d,]+\.\d\d predicted", section)
    none = client.get(f"/customers/{loner}").text.split('id="predictions"')[1]
    assert "No prediction: they have no completed order" in none


def test_a_customers_export_holds_their_prediction(conn: Connection) -> None:
    from lifecycle.models import Customer
    from lifecycle.privacy import export

    ids = simulated_buyers(conn, 400, AS_OF)
    refresh_all(conn, load_definitions(SHIPPED), AS_OF, AS_OF)
    row = conn.execute(select(Customer.__table__).where(Customer.id == ids[0])).one()
    held = export(conn, row)["predictions"]
    assert len(held) == 1 and held[0]["customer_id"] == ids[0]
    assert 0 <= held[0]["p_alive"] <= 1
