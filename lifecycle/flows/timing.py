"""When a wait ends and when a mail may go out, in the customer's own time.

All arithmetic happens on the customer's local wall clock (so "1 month" after
31 January is 28/29 February and "at 10:00" stays 10:00 across a DST change),
then converts back to UTC for storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from lifecycle.flows.definitions import Wait
from lifecycle.timeutil import UTC, zone


def _local(instant: datetime, tz: str) -> datetime:
    return instant.astimezone(zone(tz))


def _utc(local: datetime) -> datetime:
    # A wall time skipped by a DST jump resolves forward, one that repeats to its first occurrence.
    return local.replace(tzinfo=local.tzinfo).astimezone(UTC)


def _at(local: datetime, hour: int, minute: int) -> datetime:
    moved = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return moved if moved >= local else moved + timedelta(days=1)


def _whole_days(wait: Wait) -> bool:
    """Whether the wait counts in days (or longer), so that ``at`` names a time on its last day."""
    if wait.duration is not None:
        d = wait.duration
        return not (d.hours or d.minutes or d.seconds or d.microseconds)
    return wait.business_days is not None or wait.until_weekday is not None


def wait_until(wait: Wait, now: datetime, tz: str) -> datetime:
    """The moment a wait that starts at ``now`` ends, for a customer in zone ``tz``.

    ``{for: 7 days, at: "10:00"}`` ends at 10:00 on the seventh day, whatever the
    time of day it started (a turn that ran at 10:00:40 must not slip a day); with
    a duration in hours or minutes, or no duration, ``at`` is the first such time
    at or after the duration.
    """
    start = local = _local(now, tz)
    if wait.duration is not None:
        local = local + wait.duration  # relativedelta on the wall clock: calendar months
    elif wait.business_days is not None:
        days = wait.business_days
        while days:
            local += timedelta(days=1)
            if local.weekday() < 5:
                days -= 1
    elif wait.until_weekday is not None:
        ahead = (wait.until_weekday - local.weekday()) % 7 or 7
        local = (local + timedelta(days=ahead)).replace(hour=0, minute=0, second=0, microsecond=0)
    if wait.at is not None:
        if _whole_days(wait):
            on_day = local.replace(hour=wait.at[0], minute=wait.at[1], second=0, microsecond=0)
            local = on_day if on_day > start else _at(local, *wait.at)
        else:
            local = _at(local, *wait.at)
    return _utc(local.replace(tzinfo=zone(tz)))


@dataclass(frozen=True)
class QuietHours:
    start: time = time(21, 0)
    end: time = time(8, 0)

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # spans midnight

    def next_allowed(self, instant: datetime, tz: str) -> datetime:
        """``instant`` itself, or the end of the quiet hours it falls in (customer's time)."""
        local = _local(instant, tz)
        if not self.contains(local.time()):
            return instant
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return _utc(end)
