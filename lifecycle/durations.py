"""Durations written by people: ``30 days``, ``2 weeks``, ``1 month``, ``1 year``.

Months and years are calendar-correct (``relativedelta``): one month after
31 January is the last day of February.
"""

from __future__ import annotations

import re

from dateutil.relativedelta import relativedelta

_DURATION = re.compile(r"^\s*(\d{1,4})\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE | re.ASCII)
#: The same with more digits: said to be too long, not "not a duration".
_TOO_LONG = re.compile(r"^\s*\d{5,}\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE | re.ASCII)


def parse_duration(text: object) -> relativedelta:
    """Parse ``N unit``; raise ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration such as '30 days' or '2 weeks'")
    match = _DURATION.match(text)
    if not match:
        if _TOO_LONG.match(text):
            raise ValueError(f"{text!r} is too long: a duration has at most 9999 of its unit "
                             "(write it in a larger unit: 30 years, not 10950 days)")
        raise ValueError(f"{text!r} is not a duration such as '30 days' or '2 weeks'")
    amount = int(match.group(1))
    unit = match.group(2).lower()
    if amount == 0:
        raise ValueError(f"{text!r} is zero; a duration must be positive")
    return relativedelta(**{unit + "s": amount})


_BUSINESS = re.compile(r"^\s*(\d{1,3})\s*business\s+days?\s*$", re.IGNORECASE | re.ASCII)
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$", re.ASCII)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_business_days(text: object) -> int | None:
    """``2 business days`` → 2; None if ``text`` is not of that form."""
    if not isinstance(text, str):
        return None
    match = _BUSINESS.match(text)
    return int(match.group(1)) if match else None


def parse_clock(text: object, key: str = "at") -> tuple[int, int]:
    """``09:30`` → (9, 30); ValueError otherwise.

    An unquoted ``at: 10:00`` reaches here as the number 600: YAML 1.1 reads digits
    separated by colons as a number in base 60 (minutes).  The error then says to quote
    the time, naming ``key`` (the setting it was written under).
    """
    if isinstance(text, int) and not isinstance(text, bool) and 60 <= text < 24 * 60:
        written = f"{text // 60}:{text % 60:02d}"
        raise ValueError(f"{key}: {written} was read as the number {text} (YAML reads an "
                         f"unquoted time as minutes); write the time in quotes: "
                         f"{key}: \"{written}\"")
    match = _CLOCK.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a time of day such as '09:30'")
    return int(match.group(1)), int(match.group(2))
