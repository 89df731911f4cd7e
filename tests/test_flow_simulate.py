"""`flows simulate`: stored history replayed through one flow on a simulated clock."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Connection, select

from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.flows.definitions import Context, load_folder
from lifecycle.flows.engine import Policies
from lifecycle.flows.simulate import _replay, copy_for_replay, segments_read, simulate
from lifecycle.models import Suppression, Touchpoint, email_hash
from lifecycle.orders import place_orders
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC
from tests.conftest import count
from tests.factories import add_customer, add_order, add_touchpoint

ROOT = Path(__file__).resolve().parent.parent
DEFS = load_definitions(ROOT / "flows" / "segments.yaml")
FLOWS = load_folder(ROOT / "flows", Context.from_folders(ROOT / "templates" / "email",
                                                         set(DEFS.all_names()))).flows
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)


def run(conn: Connection, flow: str, start: datetime = START, end: datetime = END):  # type: ignore[no-untyped-def]
    return simulate(conn, FLOWS[flow], DEFS, start, end, policies=Policies(), default_tz="UTC")


def test_the_thank_you_simulation_mails_each_order_in_the_window_once_in_daytime(
        conn: Connection) -> None:
    ann = add_customer(conn, "ann", START - timedelta(days=400), timezone="Europe/Berlin")
    bob = add_customer(conn, "bob", START - timedelta(days=400), timezone="America/New_York")
    add_order(conn, ann, START - timedelta(days=3), "20.00")  # before the window: no mail
    add_order(conn, ann, datetime(2026, 2, 10, 9, 30, tzinfo=UTC), "35.00")  # 10:30 Berlin
    add_order(conn, bob, datetime(2026, 3, 4, 2, 15, tzinfo=UTC), "18.00")  # 21:15 New York
    add_order(conn, bob, datetime(2026, 3, 20, 12, tzinfo=UTC), "9.00", status="refunded")
    add_order(conn, bob, END + timedelta(hours=1), "60.00")  # after the window: no mail
    result = run(conn, "thank_you")
    by_customer = {customer: due for due, customer, *_ in result.mails}
    assert result.enrolled == 2 and len(result.mails) == 2
    # Two hours later on an hourly clock: ann's at 12:00 UTC; bob's falls in his quiet
    # hours (23:15 in New York) and moves to 08:00 there.
    assert by_customer["ann"] == datetime(2026, 2, 10, 12, tzinfo=UTC)
    assert by_customer["bob"] == datetime(2026, 3, 4, 13, tzinfo=UTC)
    assert result.per_step == {"thanks": 2}
    assert result.outcomes == {"completed": 2}


def test_a_simulation_writes_nothing_to_the_real_database(conn: Connection) -> None:
    cid = add_customer(conn, "cy", START - timedelta(days=400))
    for day in (10, 40, 70):
        add_order(conn, cid, START + timedelta(days=day), "25.00")
    tables = ("touchpoints", "messages", "flow_enrollments", "segment_memberships",
              "segment_calibrations", "flow_trigger_cursors", "customers", "orders")
    before = {table: count(conn, table) for table in tables}
    result = run(conn, "feedback_request")
    assert result.enrolled == 1  # once per 90 days: the second and third order enrol nobody
    assert {table: count(conn, table) for table in tables} == before


def test_the_win_back_simulation_follows_lapsing_and_stops_when_they_order(
        conn: Connection) -> None:
    created = START - timedelta(days=600)
    gone = add_customer(conn, "gone", created, timezone="UTC")
    back = add_customer(conn, "back", created, timezone="UTC")
    for cid in (gone, back):
        add_order(conn, cid, START - timedelta(days=200), "40.00")
        add_order(conn, cid, START - timedelta(days=170), "40.00")  # lapsed on day 11
    add_order(conn, back, START + timedelta(days=14), "55.00")  # after the first mail
    result = run(conn, "win_back")
    mails = sorted((customer, step, due) for due, customer, _e, step, *_ in result.mails)
    lapsed_on = START + timedelta(days=11)  # more than 180 days since the last order
    assert [(c, s) for c, s, _d in mails] == [
        ("back", "miss-you"), ("gone", "last-chance"), ("gone", "miss-you"),
        ("gone", "ten-percent")]
    first = {c: d for c, s, d in mails if s == "miss-you"}
    # Seen by that day's refresh (midnight UTC), written at 10:00 their time.
    assert first == {"gone": lapsed_on + timedelta(hours=10),
                     "back": lapsed_on + timedelta(hours=10)}
    assert result.outcomes == {"completed": 1, "exited: goal: ordered": 1}
    assert result.refreshes == (END - START).days - 1


def test_a_customer_without_consent_or_with_a_suppression_gets_no_marketing_in_a_simulation(
        conn: Connection) -> None:
    created = START - timedelta(days=600)
    quiet = add_customer(conn, "quiet", created, marketing_consent=False)
    add_order(conn, quiet, START - timedelta(days=175), "40.00")
    bounced = add_customer(conn, "bounced", created)
    add_order(conn, bounced, START - timedelta(days=175), "40.00")
    conn.execute(Suppression.__table__.insert().values(
        email_hash=email_hash("bounced@example.com"), scope="all", reason="hard_bounce",
        source="test", created_at=START))
    assert run(conn, "win_back").mails == []


def test_the_segments_a_flow_reads_are_its_trigger_goals_and_branches() -> None:
    assert segments_read(FLOWS["win_back"]) == {"lapsed"}
    assert segments_read(FLOWS["loyalty_offer"]) == {"vip", "loyal"}
    assert segments_read(FLOWS["thank_you"]) == frozenset()


def test_the_simulate_command_prints_mails_and_counts(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["sample-data", "--customers", "60", "--until", "2026-07-01"],
                         env=cli_env).exit_code == 0
    result = runner.invoke(cli, ["flows", "simulate", "thank_you", "--from", "2026-01-01",
                                 "--to", "2026-07-01", "--show", "3"], env=cli_env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Simulated thank_you from 2026-01-01 to 2026-07-01" in out
    assert "Nothing was sent or changed." in out and "First 3 of" in out
    assert "Mails per step" in out and "thanks" in out
    bad = runner.invoke(cli, ["flows", "simulate", "thank_you", "--from", "2026-07-01",
                              "--to", "2026-01-01"], env=cli_env)
    assert bad.exit_code == 2 and "--to must be after --from" in bad.stderr


def test_a_simulated_feedback_answer_in_history_feeds_the_advocacy_segments(
        conn: Connection) -> None:
    fan = add_customer(conn, "fan", START - timedelta(days=100), timezone="UTC")
    add_order(conn, fan, START - timedelta(days=20), "30.00")
    add_touchpoint(conn, fan, "feedback", START + timedelta(days=5, hours=3), score=10)
    result = run(conn, "advocacy_ask")
    assert [customer for _due, customer, *_ in result.mails] == ["fan"]
    assert result.mails[0][0] > START + timedelta(days=5)


def test_a_replay_of_orders_announced_before_counts_each_order_once(conn: Connection) -> None:
    """Orders already on the timeline (as every imported or posted one is) are announced
    again by the replay at their time: the copied entries of the window are not kept too."""
    place_orders(conn, [{"order_id": f"O{n}", "customer_id": "ann", "email": "ann@example.com",
                         "ordered_at": (START + timedelta(days=10 * n)).isoformat(),
                         "total": "20.00"} for n in range(-1, 3)], ManualClock(START),
                 refresh=False)
    memory = copy_for_replay(conn, END)
    try:
        with memory.begin() as copy:
            result = _replay(copy, FLOWS["thank_you"], DEFS, START, END, policies=Policies(),
                             default_tz="UTC", resolution=timedelta(hours=1),
                             segment_every=timedelta(days=1))
            announced = copy.execute(select(Touchpoint.data).where(
                Touchpoint.kind == "order_placed")).scalars().all()
    finally:
        memory.dispose()
    assert sorted(data["order_id"] for data in announced) == ["O-1", "O0", "O1", "O2"]
    assert result.enrolled == 3  # the three orders of the window, each once


COFFEE = {"sku": "COF-ETH", "name": "Ethiopia beans", "category": "coffee", "quantity": 1,
          "price": "12.90"}
TEA = {"sku": "TEA-SEN", "name": "Sencha", "category": "tea", "quantity": 1, "price": "8.90"}


def test_the_replenishment_simulation_mails_each_coffee_cycle_once_and_not_after_a_restock(
        conn: Connection) -> None:
    created = START - timedelta(days=30)
    regular, restocks, tea = (add_customer(conn, name, created, timezone="UTC")
                              for name in ("regular", "restocks", "tea"))
    for cid, items in ((regular, [COFFEE]), (restocks, [COFFEE]), (tea, [TEA])):
        for day in (10, 30):  # a cadence of 20 days: due on day 50 at noon
            add_order(conn, cid, START + timedelta(days=day, hours=12), "12.90", items=items)
    # restocks buys coffee on day 51 before the mail of ten o'clock: the goal ends the flow,
    # and their next cycle (51 - 10) / 2 = 20.5 days later, due on day 72 (21 whole days)
    add_order(conn, restocks, START + timedelta(days=51, hours=8), "12.90", items=[COFFEE])
    # regular buys on day 60: a cadence of 25 days, due again on day 85
    add_order(conn, regular, START + timedelta(days=60, hours=12), "12.90", items=[COFFEE])
    result = run(conn, "replenishment")
    mails = [(customer, step, due) for due, customer, _e, step, *_ in result.mails]
    # Seen by the refresh at midnight UTC after they became due, sent at ten their time.
    assert sorted(mails) == [("regular", "refill", START + timedelta(days=51, hours=10)),
                             ("regular", "refill", START + timedelta(days=86, hours=10)),
                             ("restocks", "refill", START + timedelta(days=73, hours=10))]
    assert result.outcomes == {"completed": 3, "exited: goal: ordered": 1}
    assert result.enrolled == 4


def test_the_replenishment_starter_simulates_on_the_sample_data(
        cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["sample-data", "--customers", "200", "--until", "2026-07-01"],
                         env=cli_env).exit_code == 0
    result = runner.invoke(cli, ["flows", "simulate", "replenishment", "--from", "2026-04-01",
                                 "--to", "2026-07-01"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "Simulated replenishment from 2026-04-01 to 2026-07-01" in result.stdout
    found = re.search(r"(\d+) enrolled, (\d+)\s+mails", result.stdout)
    assert found is not None and int(found.group(2)) > 0, result.stdout
    assert "refill" in result.stdout  # the step of the mails
