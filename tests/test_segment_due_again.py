"""``due_again``: customers due to buy a category or SKU again by their own cadence for it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from lifecycle.clock import ManualClock
from lifecycle.models import Customer, SegmentMembership
from lifecycle.orders import place_orders
from lifecycle.segments.compute import (
    assignments_for,
    latest_calibration,
    refresh_all,
)
from lifecycle.segments.definitions import Definitions, DueAgainCondition, load_definitions
from lifecycle.segments.explain import explain
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order
from tests.test_segment_definitions import RFM_ONLY, at, problems

ROOT = Path(__file__).resolve().parent.parent
AS_OF = datetime(2026, 6, 30, 12, tzinfo=UTC)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
COFFEE = {"sku": "COF-ETH", "name": "Ethiopia beans", "category": "coffee", "quantity": 1,
          "price": "12.90"}
TEA = {"sku": "TEA-SEN", "name": "Sencha", "category": "tea", "quantity": 1, "price": "8.90"}


def defs_with(tmp_path: Path, custom: str) -> Definitions:
    path = tmp_path / "segments.yaml"
    path.write_text(RFM_ONLY + "custom:\n" + custom, encoding="utf-8")
    return load_definitions(path)


def buys(conn: Connection, cid: int, days_ago: float, *items: dict[str, object],
         status: str = "completed") -> None:
    """An order ``days_ago`` days before AS_OF (at noon UTC, as AS_OF)."""
    add_order(conn, cid, AS_OF - timedelta(days=days_ago), "20.00", status=status,
              items=items or [COFFEE])


def holds(conn: Connection, defs: Definitions, cid: int, segment: str,
          as_of: datetime = AS_OF) -> bool:
    return segment in assignments_for(conn, defs, cid, as_of, latest_calibration(conn))


def open_in(conn: Connection, cid: int, segment: str) -> bool:
    return conn.execute(select(SegmentMembership.id).where(
        SegmentMembership.customer_id == cid, SegmentMembership.segment == segment,
        SegmentMembership.exited_at.is_(None))).first() is not None


def test_the_cadence_is_the_mean_gap_between_distinct_purchase_days(
        conn: Connection, tmp_path: Path) -> None:
    # Distinct days 70, 50 and 30 days ago: a cadence of 20 days, due until 2 x 20 = 40 days.
    # Counting the second order of day 70 as a purchase of its own would make it 40 / 3 days,
    # and the window would close at 26.7 days, before today's 30.
    defs = defs_with(tmp_path, "  refill:\n    due_again: {category: coffee, give_up: 2}\n")
    cid = add_customer(conn, "ann", LONG_AGO)
    buys(conn, cid, 70)
    add_order(conn, cid, AS_OF - timedelta(days=70, hours=-3), "9.00", items=[COFFEE])
    buys(conn, cid, 50, TEA, COFFEE)
    buys(conn, cid, 30)
    buys(conn, cid, 2, TEA)  # another category leaves coffee's timing alone
    assert holds(conn, defs, cid, "refill")
    row = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
    shown = explain(conn, defs, row, AS_OF)  # `customer show` lists it
    assert "refill" in [s["segment"] for s in shown["segments"]]


def test_the_due_window_opens_at_the_cadence_times_factor_and_closes_at_give_up(
        conn: Connection, tmp_path: Path) -> None:
    defs = defs_with(tmp_path, "  due:\n    due_again: {category: coffee}\n"
                               "  late:\n    due_again: {category: coffee, factor: 1.5}\n")
    cid = add_customer(conn, "bo", LONG_AGO)
    for days in (60, 40, 20):  # a cadence of 20 days; the last 20 days before AS_OF
        buys(conn, cid, days)

    def due(days_after: float, segment: str = "due") -> bool:
        return holds(conn, defs, cid, segment, AS_OF + timedelta(days=days_after))

    before_last = -timedelta(hours=1).total_seconds() / 86400
    assert not due(before_last)  # 19 whole days since the last purchase
    assert due(0) and due(39.9)  # 20 to 59 days: due (give_up 3 x 20 = 60)
    assert not due(40)  # 60 days: lapsed, win-back's job
    assert not due(9.9, "late") and due(10, "late")  # factor 1.5: from 30 days on


def test_a_one_day_buyer_is_due_only_with_a_first_cycle(
        conn: Connection, tmp_path: Path) -> None:
    defs = defs_with(tmp_path, "  plain:\n    due_again: {category: coffee}\n"
                               "  first:\n    due_again: {category: coffee, "
                               "first_cycle: 4 weeks}\n")
    once = add_customer(conn, "once", LONG_AGO)
    buys(conn, once, 30)
    add_order(conn, once, AS_OF - timedelta(days=30, hours=2), "5.00", items=[COFFEE])  # same day
    fresh = add_customer(conn, "fresh", LONG_AGO)
    buys(conn, fresh, 27)
    assert not holds(conn, defs, once, "plain")  # one day of coffee: no cadence of their own
    assert holds(conn, defs, once, "first")  # 30 days >= the first cycle of 28
    assert not holds(conn, defs, fresh, "first")  # 27 days: not yet
    assert not holds(conn, defs, fresh, "plain")


def test_purchase_days_are_utc_dates_so_orders_either_side_of_midnight_are_two_days(
        conn: Connection, tmp_path: Path) -> None:
    defs = defs_with(tmp_path, "  due:\n    due_again: {category: coffee}\n")
    cid = add_customer(conn, "night", LONG_AGO)
    late = datetime(2026, 6, 27, 23, 30, tzinfo=UTC)
    for when in (late, late + timedelta(hours=1)):  # 23:30 and 00:30 UTC: two dates
        add_order(conn, cid, when, "9.00", items=[COFFEE])
    # a cadence of 1 day: due 1 and 2 whole days after 00:30, not 3 (give_up 3 x 1)
    after = late + timedelta(hours=1)
    assert holds(conn, defs, cid, "due", after + timedelta(days=1))
    assert holds(conn, defs, cid, "due", after + timedelta(days=2, hours=23))
    assert not holds(conn, defs, cid, "due", after + timedelta(days=3))


def test_two_categories_are_timed_independently(conn: Connection, tmp_path: Path) -> None:
    defs = defs_with(tmp_path, "  coffee_due:\n    due_again: {category: coffee}\n"
                               "  tea_due:\n    due_again: {category: tea}\n"
                               "  sencha_due:\n    due_again: {sku: TEA-SEN}\n")
    cid = add_customer(conn, "cy", LONG_AGO)
    for days in (42, 32, 22, 12):  # coffee every 10 days: due since day 10
        buys(conn, cid, days)
    for days in (92, 12):  # tea and its sencha every 80 days: not for a while
        buys(conn, cid, days, TEA)
    assert holds(conn, defs, cid, "coffee_due")
    assert not holds(conn, defs, cid, "tea_due") and not holds(conn, defs, cid, "sencha_due")
    later = AS_OF + timedelta(days=70)  # coffee lapsed (82 >= 30), tea due (82 >= 80)
    assert not holds(conn, defs, cid, "coffee_due", later)
    assert holds(conn, defs, cid, "tea_due", later) and holds(conn, defs, cid, "sencha_due", later)


def test_cancelled_and_refunded_orders_do_not_count(conn: Connection, tmp_path: Path) -> None:
    defs = defs_with(tmp_path, "  due:\n    due_again: {category: coffee}\n")
    cid = add_customer(conn, "di", LONG_AGO)
    buys(conn, cid, 60)
    buys(conn, cid, 40)  # a cadence of 20 days, due for 40 days now
    buys(conn, cid, 5, status="refunded")
    buys(conn, cid, 3, status="cancelled")
    assert holds(conn, defs, cid, "due")
    never = add_customer(conn, "eve", LONG_AGO)
    buys(conn, never, 60, status="cancelled")
    buys(conn, never, 40, status="refunded")
    assert not holds(conn, defs, never, "due")


def test_a_new_order_ends_due_on_every_kind_of_refresh_and_time_starts_it_again(
        conn: Connection, tmp_path: Path) -> None:
    defs = defs_with(tmp_path, "  due:\n    due_again: {category: coffee}\n")
    people = {}
    for name in ("solo", "pair1", "pair2", "full"):
        people[name] = add_customer(conn, name, LONG_AGO)
        buys(conn, people[name], 50)
        buys(conn, people[name], 30)  # a cadence of 20 days: due
    refresh_all(conn, defs, AS_OF, AS_OF)
    assert all(open_in(conn, cid, "due") for cid in people.values())
    then = AS_OF + timedelta(hours=2)

    def order(n: int, name: str) -> dict[str, object]:
        return {"order_id": f"R{n}", "customer_id": name, "email": f"{name}@example.com",
                "ordered_at": (AS_OF + timedelta(hours=1)).isoformat(), "total": "12.90",
                "currency": "USD", "items": [COFFEE]}

    place_orders(conn, [order(1, "solo")], ManualClock(then), segments=defs)  # an order
    place_orders(conn, [order(2, "pair1"), order(3, "pair2")], ManualClock(then),
                 segments=defs)  # a batch: one set-based pass
    add_order(conn, people["full"], AS_OF + timedelta(hours=1), "12.90", items=[COFFEE])
    assert not any(open_in(conn, people[n], "due") for n in ("solo", "pair1", "pair2"))
    assert open_in(conn, people["full"], "due")  # not refreshed yet
    refresh_all(conn, defs, then, then)
    assert not any(open_in(conn, cid, "due") for cid in people.values())
    # Cadence now (50 - 0) / 2 = 25 days from the order 1 hour after AS_OF.
    refresh_all(conn, defs, AS_OF + timedelta(days=25), AS_OF + timedelta(days=25))
    assert not any(open_in(conn, cid, "due") for cid in people.values())
    refresh_all(conn, defs, AS_OF + timedelta(days=25, hours=2),
                AS_OF + timedelta(days=25, hours=2))
    assert all(open_in(conn, cid, "due") for cid in people.values())


def test_bad_due_again_settings_are_each_reported_with_their_line(tmp_path: Path) -> None:
    extra = """custom:
  a:
    due_again: {category: coffee, factor: soon}
  b:
    due_again: {category: coffee, sku: COF-ETH}
  c:
    due_again: {category: coffee, every: 2}
  d:
    due_again: {sku: COF-ETH, factor: 2, give_up: 1.5}
  e:
    due_again: {category: coffee, first_cycle: 1 month}
  f:
    due_again: {category: coffee, first_cycle: often}
  g:
    due_again: {category: coffee, give_up: 0}
"""
    assert problems(tmp_path, RFM_ONLY + extra) == [
        f"{at(extra, 3, 'soon')}: factor must be a number above 0 and at most 100 (a "
        "multiple of the customer's cadence), such as 1.5",
        f"{at(extra, 5, '{category')}: due_again needs exactly one of category or sku",
        f"{at(extra, 7, '2}')}: unknown setting 'every'; expected category, factor, "
        "first_cycle, give_up",
        f"{at(extra, 9, '1.5')}: give_up (1.5) must be more than factor (2): it ends the "
        "window that factor opens",
        f"{at(extra, 11, '1 month')}: '1 month' must be counted in days or weeks (such as "
        "'30 days'), as a cadence is",
        f"{at(extra, 13, 'often')}: 'often' is not a duration such as '30 days' or '2 weeks'",
        f"{at(extra, 15, '0}')}: give_up must be a number above 0 and at most 100 (a "
        "multiple of the customer's cadence), such as 1.5",
    ]


@pytest.mark.parametrize("setting, words", [
    ("factor: 1.0e+308, give_up: 1.7e+308", "factor must be a number above 0 and at most 100"),
    ("factor: .nan", "factor must be a number above 0 and at most 100"),
    ("give_up: .inf", "give_up must be a number above 0 and at most 100"),
    ("first_cycle: 9999999 days", "'9999999 days' is too long: a duration has at most 9999"),
    ("first_cycle: 5000 days", "'5000 days' must be from 1 day to 3650 days"),
])
def test_settings_that_would_overflow_or_mean_nothing_are_refused(
        tmp_path: Path, setting: str, words: str) -> None:
    """A factor of 1e308 passed the checks and then overflowed PostgreSQL's arithmetic in every
    refresh (and the import that ends with one); NaN made the segment silently empty."""
    extra = f"custom:\n  a:\n    due_again: {{category: coffee, {setting}}}\n"
    [found] = problems(tmp_path, RFM_ONLY + extra)
    assert words in found, found


@pytest.mark.parametrize("kind", ["bought", "due_again"])
@pytest.mark.parametrize("value", ["[tea, coffee]", "null", "{a: 1}", "''"])
def test_a_category_that_is_not_one_text_is_refused_not_turned_into_one(
        tmp_path: Path, kind: str, value: str) -> None:
    """[tea, coffee] used to become the category "['tea', 'coffee']" (and null "None"),
    emptying the segment without a word."""
    extra = f"custom:\n  a:\n    {kind}: {{category: {value}}}\n"
    [found] = problems(tmp_path, RFM_ONLY + extra)
    assert "category must be one category as text, such as coffee" in found, found


def test_the_shipped_replenishment_segment_is_due_again_for_coffee() -> None:
    defs = load_definitions(ROOT / "flows" / "segments.yaml")
    [segment] = [c for c in defs.custom if c.name == "coffee_due_again"]
    assert segment.condition == DueAgainCondition("category", "coffee", 1.0, 3.0, 30.0)


@pytest.mark.parametrize("written", ["1.0", "1"])
def test_factor_may_be_written_as_a_whole_number(tmp_path: Path, written: str) -> None:
    defs = defs_with(tmp_path, f"  due:\n    due_again: {{category: coffee, factor: {written}}}\n")
    assert defs.custom[0].condition == DueAgainCondition("category", "coffee")
