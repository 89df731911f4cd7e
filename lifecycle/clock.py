"""Clocks: the one source of "now" for every component.

Production uses :class:`SystemClock`.  Tests and simulations use
:class:`ManualClock`, which only moves when told to; ``lifecycle demo`` uses
:class:`FastClock`, which runs a fixed number of times faster than real time,
so that waits of days pass in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from lifecycle.timeutil import UTC, as_utc


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until :meth:`advance` or :meth:`set` moves it."""

    def __init__(self, start: datetime) -> None:
        self._now = as_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = as_utc(instant)

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += delta
            return self._now


class FastClock:
    """A clock that starts at ``start`` and runs ``speed`` times faster than real time.

    ``monotonic`` (seconds, default :func:`time.monotonic`) is the real time it
    scales; it never goes backwards, so neither does this clock.
    """

    def __init__(self, start: datetime, speed: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("a clock's speed must be greater than zero")
        self.start = as_utc(start)
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self._monotonic() - self._origin) * self.speed)


def real_seconds(clock: Clock, span: timedelta) -> float:
    """How many real seconds ``span`` of ``clock``'s time lasts (a fast clock's span is
    shorter in real time); for liveness checks, which are about real time."""
    return span.total_seconds() / float(getattr(clock, "speed", 1.0))


system_clock = SystemClock()
