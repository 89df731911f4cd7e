"""segments.yaml is checked like a flow file: every problem with its line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lifecycle.cli import cli
from lifecycle.segments.definitions import load_definitions
from lifecycle.yamlfile import InvalidFile

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = (ROOT / "flows" / "segments.yaml").read_text(encoding="utf-8")
RFM_ONLY = SHIPPED.split("\nretention:")[0] + "\n"
BASE = len(RFM_ONLY.splitlines())  # text appended to RFM_ONLY starts on line BASE + 1


def at(text: str, line: int, token: str) -> str:
    """``F:LINE:COLUMN`` of ``token`` on ``line`` (1-based, counted from BASE) of ``text``."""
    column = text.splitlines()[line - 1].index(token) + 1
    return f"F:{BASE + line}:{column}"


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "segments.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidFile) as caught:
        load_definitions(path)
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


def test_the_shipped_file_is_valid_and_names_every_segment() -> None:
    defs = load_definitions(ROOT / "flows" / "segments.yaml")
    names = defs.all_names()
    for expected in ("prospect", "new", "repeat", "loyal", "vip", "at_risk", "lapsed", "churned",
                     "rfm_champions", "rfm_loyal", "rfm_potential_loyalist", "rfm_new",
                     "rfm_promising", "rfm_need_attention", "rfm_about_to_sleep", "rfm_at_risk",
                     "rfm_cant_lose_them", "rfm_hibernating", "rfm_lost", "promoter", "passive",
                     "detractor", "reviewer", "referrer"):
        assert expected in names
    assert len(names) == len(set(names))


def test_a_grid_cell_no_rule_covers_is_named(tmp_path: Path) -> None:
    text = RFM_ONLY.replace("    - {name: lost,               r: [1, 1], fm: [1, 2]}\n", "")
    assert problems(tmp_path, text) == ["F:14:3: rfm: no rule covers R1/FM1, R1/FM2"]


def test_bad_settings_point_at_their_line(tmp_path: Path) -> None:
    extra = "retention:\n  lapsed_days: soon\n  churned_days: 100\n  colour: red\n"
    found = problems(tmp_path, RFM_ONLY + extra)
    assert found == [
        f"{at(extra, 2, 'soon')}: retention.lapsed_days: Input should be a valid integer, "
        "unable to parse string as an integer",
        f"{at(extra, 4, 'red')}: retention.colour: Extra inputs are not permitted"]


def test_bad_custom_conditions_are_each_reported(tmp_path: Path) -> None:
    extra = """custom:
  a:
    metric: {name: happiness, op: ">", value: 3}
  b:
    touchpoint: {kind: email_opened, within: soon}
  c:
    all:
      - attribute: {name: city, op: like, value: B}
      - bought: {category: tea, sku: T1}
  vip:
    metric: {name: order_count, op: ">", value: 1}
  d:
    whenever: {x: 1}
"""
    found = problems(tmp_path, RFM_ONLY + extra)
    assert found == [
        f"{at(extra, 3, 'happiness')}: unknown metric 'happiness'; known: order_count, "
        "total_spend, avg_spend, days_since_last_order, median_gap_days, days_since_first_order, "
        "p_alive, expected_orders, expected_order_value, predicted_clv",
        f"{at(extra, 5, 'soon')}: 'soon' is not a duration such as '30 days' or '2 weeks'",
        f"{at(extra, 8, 'like')}: op must be one of = != < <= > >= in exists missing",
        f"{at(extra, 9, '{category')}: bought needs exactly one of category or sku",
        f"{at(extra, 11, 'metric')}: 'vip' is already a built-in segment",
        f"{at(extra, 13, 'whenever')}: a condition is one of 'all:', 'any:', 'not:', 'metric:', "
        "'attribute:', 'touchpoint:', 'bought:', 'due_again:'",
    ]


def test_broken_yaml_is_reported_with_its_position(tmp_path: Path) -> None:
    assert problems(tmp_path, "rfm:\n  segments: [\n") == [
        "F:3:1: the file ends too early: a [ or { is not closed, or a value is missing (not "
        "valid YAML: expected the node content, but found '<stream end>')"]


def test_the_validate_command_prints_problems_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(RFM_ONLY + "custom:\n  x:\n    metric: {name: nope, op: '>', value: 1}\n",
                    encoding="utf-8")
    result = CliRunner().invoke(cli, ["segments", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:{BASE + 3}:20:")
    assert "unknown metric 'nope'" in result.stderr
    ok = CliRunner().invoke(cli, ["segments", "validate", str(ROOT / "flows" / "segments.yaml")])
    assert ok.exit_code == 0 and "no problems" in ok.stdout
