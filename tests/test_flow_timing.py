"""Waits and quiet hours in the customer's local time: DST, month ends, midnight."""

from __future__ import annotations

from datetime import datetime, time

import pytest
from dateutil.relativedelta import relativedelta

from lifecycle.flows.definitions import Wait
from lifecycle.flows.timing import QuietHours, wait_until
from lifecycle.timeutil import UTC, zone


def local(text: str, tz: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone(tz)).astimezone(UTC)


def test_one_month_after_the_31st_of_january_is_the_end_of_february() -> None:
    start = local("2026-01-31T09:00", "Europe/Berlin")
    assert wait_until(Wait(duration=relativedelta(months=1)), start, "Europe/Berlin") \
        == local("2026-02-28T09:00", "Europe/Berlin")
    leap = local("2028-01-31T09:00", "Europe/Berlin")
    assert wait_until(Wait(duration=relativedelta(months=1)), leap, "Europe/Berlin") \
        == local("2028-02-29T09:00", "Europe/Berlin")


def test_at_ten_stays_ten_local_across_the_spring_dst_change() -> None:
    start = local("2026-03-27T10:00", "Europe/Berlin")  # Friday, CET (UTC+1)
    end = wait_until(Wait(duration=relativedelta(days=3), at=(10, 0)), start, "Europe/Berlin")
    assert end == local("2026-03-30T10:00", "Europe/Berlin")  # Monday, CEST (UTC+2)
    assert end.hour == 8  # 10:00 local is 08:00 UTC after the change, 09:00 before


def test_the_same_wait_ends_at_each_customers_own_ten_oclock() -> None:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    wait = Wait(duration=relativedelta(days=1), at=(10, 0))
    ends = {tz: wait_until(wait, start, tz) for tz in ("Asia/Tokyo", "Europe/London",
                                                       "America/Los_Angeles")}
    # 21:00, 13:00 and 05:00 on 1 June locally: "1 day at 10:00" is 10:00 the next day for all.
    assert {tz: e.astimezone(zone(tz)).strftime("%d %H:%M") for tz, e in ends.items()} == {
        "Asia/Tokyo": "02 10:00", "Europe/London": "02 10:00", "America/Los_Angeles": "02 10:00"}
    assert len(set(ends.values())) == 3  # three different instants


def test_a_wait_in_days_ends_at_the_time_on_its_last_day_even_if_it_started_later_in_the_day(
        ) -> None:
    week = Wait(duration=relativedelta(days=7), at=(10, 0))
    late_start = datetime(2026, 3, 13, 10, 0, 40, tzinfo=UTC)  # 11:00:40 in Berlin
    assert wait_until(week, late_start, "Europe/Berlin") == datetime(2026, 3, 20, 9, tzinfo=UTC)


def test_a_wait_in_hours_ends_at_the_first_such_time_after_it() -> None:
    hours = Wait(duration=relativedelta(hours=2), at=(10, 0))
    assert wait_until(hours, datetime(2026, 3, 13, 9, 30, tzinfo=UTC), "UTC") == \
        datetime(2026, 3, 14, 10, tzinfo=UTC)
    assert wait_until(hours, datetime(2026, 3, 13, 7, 30, tzinfo=UTC), "UTC") == \
        datetime(2026, 3, 13, 10, tzinfo=UTC)


@pytest.mark.parametrize(("start", "days", "end"), [
    ("2026-06-05T15:00", 1, "2026-06-08T15:00"),  # Friday + 1 business day = Monday
    ("2026-06-06T15:00", 1, "2026-06-08T15:00"),  # Saturday + 1 = Monday
    ("2026-06-01T15:00", 5, "2026-06-08T15:00"),  # Monday + 5 = next Monday
])
def test_business_days_skip_weekends(start: str, days: int, end: str) -> None:
    assert wait_until(Wait(business_days=days), local(start, "UTC"), "UTC") == local(end, "UTC")


def test_until_a_weekday_goes_to_the_next_one_at_the_given_time() -> None:
    start = local("2026-06-02T18:00", "Europe/Paris")  # a Tuesday
    assert wait_until(Wait(until_weekday=1, at=(9, 0)), start, "Europe/Paris") \
        == local("2026-06-09T09:00", "Europe/Paris")  # the next Tuesday, not today


@pytest.mark.parametrize(("at", "allowed"), [
    ("2026-06-02T20:59", "2026-06-02T20:59"),
    ("2026-06-02T21:00", "2026-06-03T08:00"),
    ("2026-06-02T23:30", "2026-06-03T08:00"),
    ("2026-06-03T03:00", "2026-06-03T08:00"),  # after midnight: the same morning
    ("2026-06-03T08:00", "2026-06-03T08:00"),
])
def test_quiet_hours_across_midnight_move_a_send_to_the_morning(at: str, allowed: str) -> None:
    quiet = QuietHours(time(21, 0), time(8, 0))
    tz = "America/New_York"
    assert quiet.next_allowed(local(at, tz), tz) == local(allowed, tz)


def test_quiet_hours_within_one_day_are_also_understood() -> None:
    lunch = QuietHours(time(12, 0), time(13, 0))
    assert lunch.next_allowed(local("2026-06-02T12:30", "UTC"), "UTC") \
        == local("2026-06-02T13:00", "UTC")
