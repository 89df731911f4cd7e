"""Date triggers: first-order anniversaries and birthdays, on the customer's own calendar."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from lifecycle.flows.dates import fire
from lifecycle.flows.definitions import Context, Flow, load_flow
from lifecycle.flows.engine import Policies
from lifecycle.flows.simulate import simulate
from lifecycle.models import FlowEnrollment
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order

ROOT = Path(__file__).resolve().parent.parent
DEFS = load_definitions(ROOT / "flows" / "segments.yaml")
CONTEXT = Context.from_folders(ROOT / "templates" / "email", set(DEFS.all_names()))


def date_flow(tmp_path: Path, trigger: str, name: str = "dates") -> Flow:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"trigger:\n  date: {trigger}\nreentry: every_time\n"
                    "steps:\n  - id: hello\n    send: loyalty_offer\n", encoding="utf-8")
    return load_flow(path, CONTEXT)


def enrollments(conn: Connection, flow: str = "dates") -> list[tuple[int, datetime, dict]]:  # type: ignore[type-arg]
    return [(e.customer_id, e.next_run_at, e.context) for e in conn.execute(
        select(FlowEnrollment).where(FlowEnrollment.flow == flow).order_by(FlowEnrollment.id))]


def test_the_first_order_anniversary_fires_on_the_customers_own_date_at_ten(
        conn: Connection, tmp_path: Path) -> None:
    flow = date_flow(tmp_path, "{anniversary_of: first_order}")
    flows = {flow.name: flow}
    tokyo = add_customer(conn, "tokyo", datetime(2024, 1, 1, tzinfo=UTC), timezone="Asia/Tokyo")
    # 20:00 UTC on 9 March is already 10 March in Tokyo: that is the date to remember.
    add_order(conn, tokyo, datetime(2025, 3, 9, 20, tzinfo=UTC), "30.00")
    add_order(conn, tokyo, datetime(2025, 8, 1, tzinfo=UTC), "30.00")  # not the first
    fire(conn, flows, datetime(2026, 3, 1, tzinfo=UTC), "UTC")  # places the cursor
    assert fire(conn, flows, datetime(2026, 3, 9, 14, tzinfo=UTC), "UTC") == 0  # 23:00 Tokyo
    assert fire(conn, flows, datetime(2026, 3, 9, 15, 5, tzinfo=UTC), "UTC") == 1  # 00:05 Tokyo
    assert enrollments(conn) == [(tokyo, datetime(2026, 3, 10, 1, tzinfo=UTC),
                                  {"date": "2026-03-10", "years": 1})]
    # Another scheduler, a later tick, the same day: nothing more.
    assert fire(conn, flows, datetime(2026, 3, 10, 3, tzinfo=UTC), "UTC") == 0
    assert len(enrollments(conn)) == 1


def test_the_day_of_the_first_order_itself_is_no_anniversary(conn: Connection,
                                                               tmp_path: Path) -> None:
    flow = date_flow(tmp_path, "{anniversary_of: first_order}")
    cid = add_customer(conn, "new", datetime(2026, 1, 1, tzinfo=UTC), timezone="UTC")
    add_order(conn, cid, datetime(2026, 4, 2, 8, tzinfo=UTC), "30.00")
    fire(conn, {flow.name: flow}, datetime(2026, 4, 1, 23, tzinfo=UTC), "UTC")
    assert fire(conn, {flow.name: flow}, datetime(2026, 4, 2, 9, tzinfo=UTC), "UTC") == 0


def test_birthdays_fire_yearly_and_leap_day_birthdays_on_28_february(
        conn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = date_flow(tmp_path, "{attribute: birthday, at: '09:30'}")
    flows = {flow.name: flow}
    created = datetime(2020, 1, 1, tzinfo=UTC)
    leap = add_customer(conn, "leap", created, timezone="UTC",
                        attributes={"birthday": "1992-02-29"})
    plain = add_customer(conn, "plain", created, timezone="Europe/Berlin",
                         attributes={"birthday": "02-28"})
    add_customer(conn, "typo", created, attributes={"birthday": "19xx-02-28"})
    add_customer(conn, "none", created)
    caplog.set_level(logging.WARNING, logger="lifecycle.flows.dates")
    fire(conn, flows, datetime(2027, 2, 27, 12, tzinfo=UTC), "UTC")
    assert fire(conn, flows, datetime(2027, 2, 28, 0, 30, tzinfo=UTC), "UTC") == 2
    assert sorted(enrollments(conn)) == sorted([
        (leap, datetime(2027, 2, 28, 9, 30, tzinfo=UTC), {"date": "2027-02-28", "years": 35}),
        (plain, datetime(2027, 2, 28, 8, 30, tzinfo=UTC), {"date": "2027-02-28", "years": None}),
    ])
    assert "birthday='19xx-02-28', which is not a date" in caplog.text


def test_a_scheduler_that_was_down_catches_up_the_dates_it_missed(conn: Connection,
                                                                    tmp_path: Path) -> None:
    flow = date_flow(tmp_path, "{attribute: birthday}")
    created = datetime(2020, 1, 1, tzinfo=UTC)
    missed = add_customer(conn, "missed", created, timezone="UTC",
                          attributes={"birthday": "1980-06-02"})
    today = add_customer(conn, "today", created, timezone="UTC",
                         attributes={"birthday": "1985-06-03"})
    fire(conn, {flow.name: flow}, datetime(2026, 6, 1, 12, tzinfo=UTC), "UTC")
    # Down from 1 June noon until 3 June 07:00.
    assert fire(conn, {flow.name: flow}, datetime(2026, 6, 3, 7, tzinfo=UTC), "UTC") == 2
    runs = {cid: at for cid, at, _context in enrollments(conn)}
    now = datetime(2026, 6, 3, 7, tzinfo=UTC)
    assert runs == {missed: now, today: datetime(2026, 6, 3, 10, tzinfo=UTC)}


def test_the_first_run_does_not_replay_past_birthdays(conn: Connection, tmp_path: Path) -> None:
    flow = date_flow(tmp_path, "{attribute: birthday}")
    add_customer(conn, "past", datetime(2020, 1, 1, tzinfo=UTC), attributes={"birthday": "05-01"})
    assert fire(conn, {flow.name: flow}, datetime(2026, 5, 1, 12, tzinfo=UTC), "UTC") == 0
    assert enrollments(conn) == []


def test_a_simulated_year_of_birthdays_mails_each_customer_once_on_the_day(
        conn: Connection, tmp_path: Path) -> None:
    flow = date_flow(tmp_path, "{attribute: birthday}", name="birthday")
    created = datetime(2020, 1, 1, tzinfo=UTC)
    ids = {}
    for name, born, tz in (("ana", "1990-01-15", "America/Los_Angeles"),
                           ("ben", "1979-12-31", "Pacific/Auckland"),
                           ("cat", "11-05", "UTC")):
        ids[name] = add_customer(conn, name, created, timezone=tz, attributes={"birthday": born})
    result = simulate(conn, flow, DEFS, datetime(2026, 1, 1, tzinfo=UTC),
                      datetime(2027, 1, 1, tzinfo=UTC), policies=Policies(), default_tz="UTC")
    got = sorted((customer, due) for due, customer, *_ in result.mails)
    assert got == [
        ("ana", datetime(2026, 1, 15, 18, tzinfo=UTC)),  # 10:00 in Los Angeles
        ("ben", datetime(2026, 12, 30, 21, tzinfo=UTC)),  # 10:00 on 31 Dec in Auckland
        ("cat", datetime(2026, 11, 5, 10, tzinfo=UTC)),
    ]
    assert result.enrolled == 3
