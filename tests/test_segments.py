"""Segments: hand-computed fixtures on both backends, refresh history, incremental = full."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from lifecycle.models import SegmentMembership, Touchpoint
from lifecycle.segments.compute import (
    KeptMetrics,
    assignments_for,
    latest_calibration,
    refresh_all,
    refresh_customer,
)
from lifecycle.segments.definitions import load_definitions
from lifecycle.segments.explain import explain
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order, add_touchpoint

ROOT = Path(__file__).resolve().parent.parent
DEFS = load_definitions(ROOT / "flows" / "segments.yaml")
AS_OF = datetime(2026, 6, 30, 12, tzinfo=UTC)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def days_ago(days: float, hours: float = 1) -> datetime:
    """An instant ``days`` whole days (plus ``hours``) before AS_OF."""
    return AS_OF - timedelta(days=days, hours=hours)


def customer_row(conn: Connection, customer_id: int):  # type: ignore[no-untyped-def]
    from lifecycle.models import Customer

    return conn.execute(select(Customer.__table__).where(Customer.id == customer_id)).one()


def segments_of(conn: Connection, customer_id: int, as_of: datetime = AS_OF) -> set[str]:
    return set(assignments_for(conn, DEFS, customer_id, as_of, latest_calibration(conn)))


def open_stays(conn: Connection) -> set[tuple[int, str]]:
    return {(row[0], row[1]) for row in conn.execute(
        select(SegmentMembership.customer_id, SegmentMembership.segment)
        .where(SegmentMembership.exited_at.is_(None)))}


# Ten buyers whose R, F and M scores were worked out by hand (see the table below).
#              orders: (days before AS_OF, total)
BUYERS = {
    "b1": [(100, 10)],
    "b2": [(90, 20)],
    "b3": [(80, 30)],
    "b4": [(70, 40)],
    "b5": [(60, 50)],
    "b6": [(50, 60)],
    "b7": [(45, 70), (40, 70)],
    "b8": [(35, 80), (30, 80)],
    "b9": [(26, 30), (24, 30), (20, 30)],
    "b10": [(50, 100), (40, 100), (30, 100), (20, 100), (10, 100)],
}
# Cut points (ranks 2, 4, 6, 8 of 10): recency -90 -70 -50 -30; frequency 1 1 1 2;
# monetary 20 40 60 140; VIP above 160 (rank 9). A value equal to a cut point scores low.
EXPECTED = {  # customer: (R, F, M, RFM segment, retention stage)
    "b1": (1, 1, 1, "lost", "new"),
    "b2": (1, 1, 1, "lost", "new"),  # -90 and 20 sit on cut points: the lower quintile
    "b3": (2, 1, 2, "hibernating", "new"),
    "b4": (2, 1, 2, "hibernating", "new"),
    "b5": (3, 1, 3, "need_attention", "new"),
    "b6": (3, 1, 3, "need_attention", "new"),
    "b7": (4, 4, 4, "loyal", "at_risk"),  # 40 days > 2 x 7 (gap 5 raised to min_gap_days)
    "b8": (4, 4, 5, "champions", "at_risk"),
    "b9": (5, 5, 4, "champions", "at_risk"),  # median gap 3 -> 7; 20 > 14
    "b10": (5, 5, 5, "champions", "vip"),  # 500 > 160 with 5 orders; 10 days < 2 x 10
}


@pytest.fixture
def buyers(conn: Connection) -> dict[str, int]:
    ids = {}
    for name, orders in BUYERS.items():
        ids[name] = add_customer(conn, name, LONG_AGO)
        for days, total in orders:
            add_order(conn, ids[name], days_ago(days), total)
    return ids


def test_rfm_scores_segments_and_stages_match_the_hand_computed_table(
        conn: Connection, buyers: dict[str, int]) -> None:
    report = refresh_all(conn, DEFS, AS_OF, AS_OF)
    assert report.cutoffs is not None
    assert report.cutoffs.recency == (-90, -70, -50, -30)
    assert report.cutoffs.frequency == (1, 1, 1, 2)
    assert report.cutoffs.monetary == (20, 40, 60, 140)
    assert report.cutoffs.vip_spend == 160
    for name, (r, f, m, rfm, stage) in EXPECTED.items():
        shown = explain(conn, DEFS, customer_row(conn, buyers[name]), AS_OF)
        assert (shown["rfm"]["r"], shown["rfm"]["f"], shown["rfm"]["m"]) == (r, f, m), name
        assert shown["rfm"]["segment"] == rfm, name
        assert shown["retention_stage"] == stage, name
    assert report.sizes["rfm_champions"] == 3 and report.sizes["vip"] == 1
    medians = {name: explain(conn, DEFS, customer_row(conn, buyers[name]), AS_OF)["metrics"]
               ["median_gap_days"] for name in ("b1", "b7", "b9", "b10")}
    assert medians == {"b1": None, "b7": 5, "b9": 3, "b10": 10}  # b9: gaps 2 and 4


def test_only_completed_orders_count(conn: Connection) -> None:
    cid = add_customer(conn, "refunder", LONG_AGO)
    add_order(conn, cid, days_ago(15), 25)
    add_order(conn, cid, days_ago(5), 999, status="refunded")
    add_order(conn, cid, days_ago(3), 400, status="cancelled")
    add_order(conn, cid, days_ago(2), 50, status="pending")
    metrics = explain(conn, DEFS, customer_row(conn, cid), AS_OF)["metrics"]
    assert (metrics["order_count"], metrics["total_spend"], metrics["days_since_last_order"]) \
        == (1, 25, 15)
    assert metrics["median_gap_days"] is None


def test_same_day_orders_have_a_tiny_gap_and_the_minimum_gap_guards_at_risk(
        conn: Connection) -> None:
    cid = add_customer(conn, "twice", LONG_AGO)
    day = datetime(2026, 6, 20, tzinfo=UTC)
    add_order(conn, cid, day.replace(hour=9), 30)
    add_order(conn, cid, day.replace(hour=18), 20)
    shown = explain(conn, DEFS, customer_row(conn, cid), AS_OF)
    assert shown["metrics"]["median_gap_days"] == 0.375
    assert shown["metrics"]["days_since_last_order"] == 9  # 9 days 18 hours
    assert shown["retention_stage"] == "repeat"  # 9 <= 2 x 7 (min_gap_days)
    later = AS_OF + timedelta(days=6)  # 15 days since: overdue against the 7-day floor
    assert "at_risk" in segments_of(conn, cid, later)


def test_a_customer_with_no_orders_is_a_prospect_without_rfm(conn: Connection) -> None:
    cid = add_customer(conn, "window-shopper", LONG_AGO)
    shown = explain(conn, DEFS, customer_row(conn, cid), AS_OF)
    assert shown["retention_stage"] == "prospect"
    assert shown["rfm"] is None
    assert shown["metrics"]["order_count"] == 0 and shown["metrics"]["last_order_at"] is None


def test_orders_near_midnight_count_the_same_in_every_timezone(conn: Connection) -> None:
    instant = datetime(2026, 6, 29, 11, 59, 59, tzinfo=UTC)  # 23:59:59 in Auckland
    people = {tz: add_customer(conn, tz, LONG_AGO, timezone=tz)
              for tz in ("Pacific/Auckland", "America/Los_Angeles", "UTC")}
    for cid in people.values():
        add_order(conn, cid, instant, 10)
        add_order(conn, cid, instant + timedelta(seconds=2), 10)  # 00:00:01 the next day there
    as_of = AS_OF + timedelta(hours=1)  # 1 day and 59 minutes after the last order
    shown = [explain(conn, DEFS, customer_row(conn, cid), as_of)["metrics"]
             for cid in people.values()]
    assert all(m == shown[0] for m in shown)
    assert shown[0]["days_since_last_order"] == 1
    assert shown[0]["median_gap_days"] == 0.0  # 2 seconds, rounded to 4 places of a day


def test_lapsed_and_churned_follow_the_thresholds(conn: Connection) -> None:
    stages = {}
    for days in (179, 181, 364, 366):
        cid = add_customer(conn, f"d{days}", LONG_AGO)
        add_order(conn, cid, days_ago(days, hours=0.5), 10)
        stages[days] = explain(conn, DEFS, customer_row(conn, cid), AS_OF)["retention_stage"]
    assert stages == {179: "at_risk", 181: "lapsed", 364: "lapsed", 366: "churned"}


def test_advocacy_takes_the_latest_nps_answer_within_its_window(conn: Connection) -> None:
    fan = add_customer(conn, "fan", LONG_AGO)
    add_touchpoint(conn, fan, "feedback", days_ago(40), score=3)
    add_touchpoint(conn, fan, "feedback", days_ago(10), score=10)
    add_touchpoint(conn, fan, "review", days_ago(5), rating=5)
    old = add_customer(conn, "old-fan", LONG_AGO)
    add_touchpoint(conn, old, "feedback", days_ago(400), score=10)
    add_touchpoint(conn, old, "referral", days_ago(2))
    meh = add_customer(conn, "meh", LONG_AGO)
    add_touchpoint(conn, meh, "feedback", days_ago(3), score=7)
    assert segments_of(conn, fan) >= {"promoter", "reviewer"}
    assert "detractor" not in segments_of(conn, fan)
    assert segments_of(conn, old) & {"promoter", "passive", "detractor"} == set()
    assert "referrer" in segments_of(conn, old)
    assert "passive" in segments_of(conn, meh)
    shown = explain(conn, DEFS, customer_row(conn, fan), AS_OF)["advocacy"]
    assert shown == {"nps": "promoter", "nps_score": 10, "reviewer": True, "referrer": False}


def test_custom_segments_combine_metrics_attributes_touchpoints_and_products(
        conn: Connection, tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    text = (ROOT / "flows" / "segments.yaml").read_text(encoding="utf-8")
    path.write_text(text.split("\ncustom:")[0] + """
custom:
  berlin_tea:
    all:
      - attribute: {name: city, op: "=", value: Berlin}
      - bought: {category: tea, within: 90 days}
  silent_big:
    all:
      - metric: {name: total_spend, op: ">", value: 100}
      - not: {touchpoint: {kind: email_opened, within: 30 days}}
  tall:
    attribute: {name: height, op: ">=", value: 180}
""", encoding="utf-8")
    defs = load_definitions(path)
    tea = [{"sku": "T", "category": "tea", "quantity": 1, "price": "9.00"}]
    a = add_customer(conn, "a", LONG_AGO, attributes={"city": "Berlin", "height": "185"})
    add_order(conn, a, days_ago(30), 120, items=tea)
    b = add_customer(conn, "b", LONG_AGO, attributes={"city": "Berlin", "height": 170})
    add_order(conn, b, days_ago(200), 120, items=tea)
    add_touchpoint(conn, b, "email_opened", days_ago(3))
    c = add_customer(conn, "c", LONG_AGO, attributes={"city": "Hamburg", "height": "tall"})
    add_order(conn, c, days_ago(10), 9, items=tea)

    def custom(cid: int) -> set[str]:
        return set(assignments_for(conn, defs, cid, AS_OF, None)) & {"berlin_tea", "silent_big",
                                                                     "tall"}

    assert custom(a) == {"berlin_tea", "silent_big", "tall"}
    assert custom(b) == set()  # tea too long ago, opened a mail lately, 170 < 180
    assert custom(c) == set()  # a height that is not a number never compares


def test_a_refresh_records_each_move_once_with_an_event(conn: Connection,
                                                        buyers: dict[str, int]) -> None:
    first = refresh_all(conn, DEFS, AS_OF, AS_OF)
    assert sum(first.entered.values()) == len(open_stays(conn)) and not first.exited
    again = refresh_all(conn, DEFS, AS_OF + timedelta(hours=1), AS_OF)
    assert not again.entered and not again.exited
    b1 = buyers["b1"]
    later = AS_OF + timedelta(days=1)
    add_order(conn, b1, later - timedelta(hours=2), 10)
    moved = refresh_all(conn, DEFS, later, later, recalibrate=False)
    assert moved.entered["repeat"] == 1 and moved.exited["new"] == 1
    history = conn.execute(select(SegmentMembership.entered_at, SegmentMembership.exited_at)
                           .where(SegmentMembership.customer_id == b1,
                                  SegmentMembership.segment == "new")).one()
    assert history == (AS_OF, later)
    events = conn.execute(select(Touchpoint.kind, Touchpoint.data, Touchpoint.occurred_at)
                          .where(Touchpoint.customer_id == b1, Touchpoint.occurred_at == later)).all()
    assert ("segment_exited", {"segment": "new"}, later) in events
    assert ("segment_entered", {"segment": "repeat"}, later) in events


def test_a_refresh_as_of_the_past_reports_the_segments_then_without_rewriting(
        conn: Connection, buyers: dict[str, int]) -> None:
    refresh_all(conn, DEFS, AS_OF, AS_OF)
    before = open_stays(conn)
    past = AS_OF - timedelta(days=35)  # before b7's second order, b8's and b9's orders
    report = refresh_all(conn, DEFS, past, AS_OF, recalibrate=False)
    assert not report.written and "history is not rewritten" in report.note
    assert open_stays(conn) == before
    assert report.sizes["new"] + report.sizes["at_risk"] + report.sizes["repeat"] \
        + report.sizes["loyal"] + report.sizes["vip"] + report.sizes["lapsed"] \
        + report.sizes["churned"] + report.sizes["prospect"] == 10
    assert "b9" in EXPECTED and segments_of(conn, buyers["b9"], past) >= {"prospect"}
    assert "prospect" not in segments_of(conn, buyers["b9"], AS_OF)


def test_a_customer_refresh_scores_against_the_last_calibration(
        conn: Connection, buyers: dict[str, int]) -> None:
    refresh_all(conn, DEFS, AS_OF, AS_OF)
    cutoffs = latest_calibration(conn)
    newcomer = add_customer(conn, "newcomer", LONG_AGO)
    add_order(conn, newcomer, days_ago(1), 1000)
    entered, exited = refresh_customer(conn, DEFS, newcomer, AS_OF, AS_OF)
    # R5 (1 day), F1 (one order), M5 (1000 > 140): FM (1 + 5 + 1) // 2 = 3.
    assert set(entered) == {"new", "rfm_potential_loyalist"} and exited == []
    assert latest_calibration(conn) == cutoffs  # nobody else's score moved


# ------------------------------------------------------- incremental == full

event = st.tuples(st.integers(0, 3),  # customer
                  st.integers(0, 40),  # days after the start
                  st.sampled_from(["completed", "completed", "completed", "refunded", "feedback"]),
                  st.integers(0, 300))  # total, or NPS score modulo 11


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=st.lists(event, min_size=4, max_size=12), later=st.lists(event, max_size=10))
def test_customer_refreshes_after_random_orders_equal_a_full_refresh(
        conn: Connection, history: list[tuple[int, int, str, int]],
        later: list[tuple[int, int, str, int]]) -> None:
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    savepoint = conn.begin_nested()
    try:
        ids = [add_customer(conn, f"p{i}", start - timedelta(days=400)) for i in range(4)]

        def apply(who: int, day: int, kind: str, amount: int, base: datetime) -> datetime:
            at = base + timedelta(days=day, minutes=amount)
            if kind == "feedback":
                add_touchpoint(conn, ids[who], "feedback", at, score=amount % 11)
            else:
                add_order(conn, ids[who], at, amount, status=kind)
            return at

        for item in history:
            apply(*item, base=start - timedelta(days=60))
        refresh_all(conn, DEFS, start, start)
        moment = start
        for who, day, kind, amount in later:
            at = apply(who, day % 5, kind, amount, base=moment)
            moment = max(moment, at) + timedelta(hours=1)
            refresh_customer(conn, DEFS, ids[who], moment, moment)
        end = moment + timedelta(days=1)
        for cid in ids:  # time passes for everyone: bring each up to the same moment
            refresh_customer(conn, DEFS, cid, end, end)
        full = refresh_all(conn, DEFS, end, end, recalibrate=False, write=False)
        assert not full.entered and not full.exited, (full.entered, full.exited)
        stored = {}
        for _cid, segment in open_stays(conn):
            stored.setdefault(segment, 0)
            stored[segment] += 1
        assert stored == {k: v for k, v in full.sizes.items() if v}
    finally:
        savepoint.rollback()


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=st.lists(event, min_size=2, max_size=8), days=st.lists(
    st.lists(event, max_size=4), min_size=1, max_size=6))
def test_daily_refreshes_with_kept_metrics_equal_refreshes_from_scratch(
        conn: Connection, history: list[tuple[int, int, str, int]],
        days: list[list[tuple[int, int, str, int]]]) -> None:
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    savepoint = conn.begin_nested()
    try:
        ids = [add_customer(conn, f"k{i}", start - timedelta(days=400)) for i in range(4)]
        for who, day, kind, amount in history:
            if kind != "feedback":
                add_order(conn, ids[who], start - timedelta(days=200 - 4 * day, minutes=amount),
                          amount, status=kind)
        kept = KeptMetrics()
        refresh_all(conn, DEFS, start, start, kept=kept)
        moment = start
        for n, orders in enumerate(days, start=1):
            for who, day, kind, amount in orders:  # orders of the day, after the last refresh
                if kind != "feedback":
                    add_order(conn, ids[who], moment + timedelta(hours=1 + day % 20,
                                                                 minutes=amount % 60),
                              amount, status=kind)
            moment = start + timedelta(days=7 * n)  # a week on: recency moves for everyone
            refresh_all(conn, DEFS, moment, moment, recalibrate=False, kept=kept)
            fresh = refresh_all(conn, DEFS, moment, moment, recalibrate=False, write=False)
            assert not fresh.entered and not fresh.exited, (n, fresh.entered, fresh.exited)
    finally:
        savepoint.rollback()
