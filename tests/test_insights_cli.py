"""``lifecycle insights …`` on the hand-worked shop of tests/insights_data.py: JSON with the
page's figures, tables for people, and every figure as of the date asked."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import create_engine

from lifecycle.cli import cli
from tests.insights_data import shop


def seeded(env: dict[str, str]) -> dict[str, str]:
    engine = create_engine(env["LIFECYCLE_DATABASE_URL"])
    with engine.begin() as conn:
        shop(conn)
    engine.dispose()
    return env


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, ["insights", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_repurchase_command_prints_json_as_of_the_date(cli_env: dict[str, str]) -> None:
    data = json.loads(run(seeded(cli_env), "repurchase", "--as-of", "2026-06-01", "--json"))
    assert data["as_of"] == "2026-06-01T00:00:00+00:00"
    assert (data["buyers"], data["repeat_buyers"], data["rate"]) == (5, 3, "0.6000")
    assert data["within"][0] == {"days": 30, "eligible": 3, "repeated": 1, "rate": "0.3333"}
    assert data["time_to_second_order"]["median_days"] == "10.00"
    earlier = json.loads(run(cli_env, "repurchase", "--as-of", "2026-01-21", "--json"))
    assert (earlier["buyers"], earlier["repeat_buyers"]) == (2, 1)


def test_every_table_is_in_the_json_of_all(cli_env: dict[str, str]) -> None:
    data = json.loads(run(seeded(cli_env), "all", "--as-of", "2026-06-01", "--months", "6",
                          "--json"))
    assert set(data) == {"as_of", "currency", "repurchase", "cohorts", "clv", "nps", "stages",
                         "attribution"}
    assert set(data["repurchase"]) == {"as_of", "buyers", "repeat_buyers", "rate", "within",
                                       "time_to_second_order"}
    assert set(data["cohorts"]) >= {"cohorts", "left_out"} and set(data["clv"]) >= {
        "overall", "cohorts"}
    assert set(data["nps"]["months"][0]) == {"month", "answers", "promoters", "passives",
                                             "detractors", "nps", "comments"}
    assert set(data["stages"]) >= {"stages", "revenue", "left_out"}
    assert set(data["stages"]["stages"][0]) == {"stage", "customers", "buyers", "orders",
                                                "customers_buying_in_currency",
                                                "revenue", "revenue_per_customer",
                                                "share_of_revenue"}
    assert set(data["attribution"]) >= {"totals", "by_source", "window_days", "left_out"}
    january = data["cohorts"]["cohorts"][0]
    assert (january["cohort"], january["customers"],
            january["customers_buying_in_currency"]) == ("2026-01", 2, 2)
    assert january["months"][2] == {"months_since": 2, "active": 1, "share_active": "0.5000",
                                    "revenue": "30.00", "revenue_per_customer": "15.00"}
    assert data["cohorts"]["left_out"] == [{"currency": "EUR", "orders": 1, "total": "70.00"}]
    assert data["clv"]["overall"][2] == {"months_since": 2, "customers_buying_in_currency": 2,
                                         "revenue_per_customer": "77.50"}
    april = data["nps"]["months"][3]
    assert (april["month"], april["answers"], april["nps"]) == ("2026-04", 4, "25.0")
    assert april["comments"][0]["comment"] == "Late parcel"
    assert {s["stage"]: s["revenue"] for s in data["stages"]["stages"]}["at_risk"] == "180.00"
    assert [(t["kind"], t["revenue"], t["share_of_revenue"])
            for t in data["attribution"]["totals"]] == [
        ("flow", "150.00", "0.4412"), ("campaign", "60.00", "0.1765"),
        ("rest", "130.00", "0.3824")]
    stages = json.loads(run(cli_env, "stages", "--as-of", "2026-06-01", "--days", "30",
                            "--json"))
    assert stages["revenue"] == "120.00"  # from May 2: Bob's 60, Dee's 45, Gus's 15


def test_the_tables_are_printed_for_people_with_money_in_the_reporting_currency(
        cli_env: dict[str, str]) -> None:
    out = run(seeded(cli_env), "attribution", "--as-of", "2026-06-01")
    assert "money in USD, the reporting currency" in out
    assert "welcome" in out and "$150.00" in out and "44.1%" in out
    assert "Left out of the money: 1 order in EUR (€70.00)." in out


def test_a_date_that_is_not_one_is_refused_in_words(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["insights", "nps", "--as-of", "June"], env=cli_env)
    assert result.exit_code == 2
    assert "--as-of: 'June' is not an ISO 8601 date or date-time" in result.output


def test_a_date_before_1900_is_refused_in_words(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["insights", "all", "--as-of", "0001-01-01", "--json"],
                                env=seeded(cli_env))
    assert result.exit_code == 2
    assert "--as-of: 0001-01-01 is before 1900-01-01, the earliest date the insights go " \
           "back to" in result.output
