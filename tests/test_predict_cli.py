"""``lifecycle predict fit`` and ``lifecycle predict backtest`` on a fresh database."""

from __future__ import annotations

import json
from datetime import datetime

from click.testing import CliRunner
from sqlalchemy import select

from lifecycle.cli import cli
from lifecycle.db import make_engine
from lifecycle.models import CustomerPrediction, PredictionFit
from lifecycle.timeutil import UTC
from tests.prediction_factories import simulated_buyers

AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


def _invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env)


def _shop(env: dict[str, str], n: int = 500) -> None:
    engine = make_engine(env["LIFECYCLE_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            simulated_buyers(conn, n, AS_OF, days=540)
    finally:
        engine.dispose()


def _stored(env: dict[str, str]) -> tuple[list, int]:
    engine = make_engine(env["LIFECYCLE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            fits = conn.execute(select(PredictionFit.status, PredictionFit.as_of)).all()
            predictions = len(conn.execute(select(CustomerPrediction.customer_id)).all())
    finally:
        engine.dispose()
    return fits, predictions


def test_fit_as_of_a_date_prints_the_parameters_as_json_and_stores_nothing(cli_env) -> None:
    _shop(cli_env)
    result = _invoke(cli_env, "predict", "fit", "--as-of", "2026-06-30T12:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    fit = json.loads(result.stdout)
    assert fit["status"] == "fitted" and fit["customers"] == 500 and fit["time_unit"] == "day"
    for name in ("r", "alpha", "a", "b", "p", "q", "gamma"):
        assert fit[name] > 0, name
    assert fit["log_likelihood"] < 0 and fit["value_log_likelihood"] < 0
    assert fit["value_customers"] > 0 and -1 <= fit["correlation"] <= 1
    assert (fit["reason"], fit["horizon_days"], fit["currency"]) == (None, 90, "USD")
    assert _stored(cli_env) == ([], 0)


def test_fit_without_a_date_stores_the_fit_and_every_buyers_prediction(cli_env) -> None:
    _shop(cli_env)
    result = _invoke(cli_env, "predict", "fit")
    assert result.exit_code == 0, result.output
    assert "on 500 buyers (time unit: day)" in result.stdout
    assert "BG/NBD: r = " in result.stdout and "Gamma-Gamma (" in result.stdout
    assert "Stored with the predictions of 500 buyers." in result.stdout
    fits, predictions = _stored(cli_env)
    assert [status for status, _ in fits] == ["fitted"] and predictions == 500


def test_fit_on_too_few_buyers_says_so_and_fails(cli_env) -> None:
    _shop(cli_env, 120)
    result = _invoke(cli_env, "predict", "fit", "--as-of", "2026-06-30T12:00:00Z")
    assert result.exit_code == 1
    assert "No predictions as of 2026-06-30 12:00 UTC: Only 120 buyers; predictions need at " \
           "least 300." in result.stdout


def test_backtest_compares_predicted_and_actual_holdout_purchases_by_calibration_purchases(
        cli_env) -> None:
    _shop(cli_env)
    result = _invoke(cli_env, "predict", "backtest", "--calibration-end", "2026-03-31",
                     "--holdout-end", "2026-06-30", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["by_calibration_purchases"]
    assert report["holdout_days"] == 91
    assert [row["repeat_purchases"] for row in rows][0] == "0"
    assert sum(row["actual"] for row in rows) == report["actual"] > 0
    assert sum(row["customers"] for row in rows) == report["fit"]["customers"]
    # The buyers come from the model's own process: the forecast is close in total.
    assert abs(report["predicted"] - report["actual"]) < 0.25 * report["actual"]
    table = _invoke(cli_env, "predict", "backtest", "--calibration-end", "2026-03-31",
                    "--holdout-end", "2026-06-30")
    assert table.exit_code == 0, table.output
    assert "Repeat purchases (purchase days) in the 91 days after 2026-03-31" in table.stdout
    assert "total" in table.stdout and "7+" in table.stdout


def test_backtest_refuses_a_holdout_that_ends_before_the_calibration(cli_env) -> None:
    result = _invoke(cli_env, "predict", "backtest", "--calibration-end", "2026-03-31",
                     "--holdout-end", "2026-03-01")
    assert result.exit_code == 2
    assert "--holdout-end must be after --calibration-end." in result.stderr


def test_the_segment_refresh_says_whether_it_predicted(cli_env) -> None:
    few = _invoke(cli_env, "segments", "refresh", "--as-of", "2026-06-30T12:00:00Z")
    assert few.exit_code == 0, few.output
    assert "Predictions: none; Only 0 buyers; predictions need at least 300." in few.stdout
    _shop(cli_env)
    enough = _invoke(cli_env, "segments", "refresh", "--as-of", "2026-06-30T13:00:00Z")
    assert enough.exit_code == 0, enough.output
    assert "Predictions: stored for 500 buyers." in enough.stdout


def test_backtest_refuses_a_holdout_that_is_not_over_yet_without_a_traceback(cli_env) -> None:
    _shop(cli_env)
    for calibration_end, holdout_end in (("2026-03-31", "2999-01-01"),
                                         ("9999-12-30", "9999-12-31")):
        result = _invoke(cli_env, "predict", "backtest", "--calibration-end", calibration_end,
                         "--holdout-end", holdout_end)
        assert result.exit_code != 0 and not isinstance(result.exception, OverflowError)
        assert f"--holdout-end: {holdout_end} is not over yet" in result.stderr


def test_fit_refuses_a_moment_in_the_future(cli_env) -> None:
    _shop(cli_env)
    for moment in ("2999-01-01", "9999-12-31T23:00:00Z"):
        result = _invoke(cli_env, "predict", "fit", "--as-of", moment, "--json")
        assert result.exit_code != 0 and result.stdout == ""
        assert f"--as-of: {moment} is in the future" in result.stderr
