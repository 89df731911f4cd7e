"""Policies across flows: flows/policies.yaml and flow priority on one customer's day."""

from __future__ import annotations

import shutil
from datetime import datetime, time, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Connection, select

from lifecycle.cli import cli
from lifecycle.flows.definitions import Context, load_flow
from lifecycle.flows.engine import Policies, advance, enroll
from lifecycle.flows.policies import load_policies
from lifecycle.flows.timing import QuietHours
from lifecycle.models import Message
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC
from lifecycle.yamlfile import InvalidFile
from tests.factories import add_customer

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = Context.from_folders(ROOT / "templates" / "email",
                               set(load_definitions(ROOT / "flows" / "segments.yaml").all_names()))
T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)  # 14:00 in Berlin
POLICIES = Policies(cap=10, quiet=QuietHours(time(21, 0), time(8, 0)))


def two_flows(tmp_path: Path):  # type: ignore[no-untyped-def]
    for name, priority in (("high", 80), ("low", 20)):
        (tmp_path / f"{name}.yaml").write_text(
            f"priority: {priority}\ntrigger: {{event: {name}}}\nsteps:\n  - send: winback_1\n",
            encoding="utf-8")
    return {p.stem: load_flow(p, CONTEXT) for p in tmp_path.glob("*.yaml")}


def due_by_flow(conn: Connection, customer_id: int) -> dict[str, datetime]:
    return {m.flow: m.due_at for m in conn.execute(
        select(Message).where(Message.customer_id == customer_id))}


def test_a_lower_priority_flow_moves_to_the_next_morning_when_a_higher_one_mails_that_day(
        conn: Connection, tmp_path: Path) -> None:
    flows = two_flows(tmp_path)
    cid = add_customer(conn, "uma", T0, timezone="Europe/Berlin")
    enroll(conn, flows["high"], cid, "x", T0)
    advance(conn, flows, T0, policies=POLICIES, default_tz="UTC")
    enroll(conn, flows["low"], cid, "x", T0 + timedelta(hours=3))
    advance(conn, flows, T0 + timedelta(hours=3), policies=POLICIES, default_tz="UTC")
    assert due_by_flow(conn, cid) == {"high": T0,
                                      "low": datetime(2026, 6, 4, 6, tzinfo=UTC)}  # 08:00 Berlin


def test_a_higher_priority_flow_takes_the_day_and_pushes_the_scheduled_lower_one(
        conn: Connection, tmp_path: Path) -> None:
    flows = two_flows(tmp_path)
    cid = add_customer(conn, "vic", T0, timezone="Europe/Berlin")
    enroll(conn, flows["low"], cid, "x", T0)
    advance(conn, flows, T0, policies=POLICIES, default_tz="UTC")
    later = T0 + timedelta(hours=1)
    enroll(conn, flows["high"], cid, "x", later)
    advance(conn, flows, later, policies=POLICIES, default_tz="UTC")
    assert due_by_flow(conn, cid) == {"high": later, "low": datetime(2026, 6, 4, 6, tzinfo=UTC)}


def test_the_customers_local_day_decides_what_counts_as_the_same_day(
        conn: Connection, tmp_path: Path) -> None:
    flows = two_flows(tmp_path)
    cid = add_customer(conn, "wes", T0, timezone="America/Los_Angeles")
    first = datetime(2026, 6, 3, 16, tzinfo=UTC)  # 09:00 in Los Angeles, 3 June
    second = datetime(2026, 6, 4, 2, tzinfo=UTC)  # 19:00 in Los Angeles, still 3 June
    enroll(conn, flows["high"], cid, "x", first)
    advance(conn, flows, first, policies=POLICIES, default_tz="UTC")
    enroll(conn, flows["low"], cid, "x", second)
    advance(conn, flows, second, policies=POLICIES, default_tz="UTC")
    assert due_by_flow(conn, cid)["low"] == datetime(2026, 6, 4, 15, tzinfo=UTC)  # 08:00, 4 June


def test_same_day_allow_lets_both_flows_mail_the_same_day(conn: Connection,
                                                          tmp_path: Path) -> None:
    flows = two_flows(tmp_path)
    cid = add_customer(conn, "xia", T0, timezone="UTC")
    both = Policies(cap=10, quiet=QuietHours(time(21, 0), time(8, 0)), one_per_day=False)
    for name in ("high", "low"):
        enroll(conn, flows[name], cid, "x", T0)
    advance(conn, flows, T0, policies=both, default_tz="UTC")
    assert due_by_flow(conn, cid) == {"high": T0, "low": T0}


def test_the_shipped_policies_file_holds_the_documented_defaults() -> None:
    assert load_policies(ROOT / "flows") == Policies()
    assert load_policies(ROOT / "tests") == Policies()  # no file: the defaults


def test_a_broken_policies_file_names_every_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "policies.yaml").write_text(
        "frequency_cap:\n  max: 0\n  per: soonish\nquiet_hours:\n  from: '25:00'\n"
        "same_day: maybe\nnoise: 1\n", encoding="utf-8")
    try:
        load_policies(tmp_path)
    except InvalidFile as exc:
        found = [str(p) for p in exc.problems]
    else:
        raise AssertionError("a broken policies file was accepted")
    file = tmp_path / "policies.yaml"
    assert any(p.startswith(f"{file}:2:8: frequency_cap.max") for p in found), found
    assert any(p.startswith(f"{file}:3:8: frequency_cap.per") and "soonish" in p
               for p in found), found
    assert any(p.startswith(f"{file}:5:9: quiet_hours.from") for p in found), found
    assert any(p.startswith(f"{file}:6:11: same_day") for p in found), found
    assert any(p.startswith(f"{file}:7:") and "noise" in p for p in found), found


def test_flows_validate_reports_a_broken_policies_file(tmp_path: Path,
                                                       cli_env: dict[str, str]) -> None:
    folder = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", folder)
    (folder / "policies.yaml").write_text("frequency_cap: {max: many}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["flows", "validate", str(folder)], env=cli_env)
    assert result.exit_code == 1
    assert f"{folder / 'policies.yaml'}:1:22: frequency_cap.max" in result.stderr
