"""Clocks: the one source of "now" for every component.

Production uses :class:`SystemClock`.  Tests and simulations use
:class:`ManualClock`, which only moves when told to.
"""

from __future__ import annotations

import threading
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


system_clock = SystemClock()
