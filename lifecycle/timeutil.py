"""Time helpers: aware UTC everywhere, IANA zones for customers.

Storage is always UTC.  A value read from a file without an offset is taken
in an explicit zone (the shop's, by default), never in the server's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = UTC


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``; raise ValueError for an unknown name."""
    if not name or name != name.strip():
        raise ValueError(f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}") from None


def is_timezone(name: str) -> bool:
    try:
        zone(name)
    except ValueError:
        return False
    return True


def as_utc(value: datetime | str) -> datetime:
    """Convert an aware datetime to UTC; a naive one is taken to be UTC already.

    Text is parsed first: SQLite hands timestamps from raw SQL and aggregates
    (``MIN``, ``MAX``) back as UTC text.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def wall_clock(moment: datetime, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``moment`` written as wall-clock time in the zone ``tz``; a moment that zone's date
    cannot hold (hours from year 1 or 9999) is written in UTC, marked so, not a crash."""
    moment = as_utc(moment)
    try:
        return moment.astimezone(zone(tz)).strftime(fmt)
    except OverflowError:
        return moment.strftime(fmt) + " UTC"


def parse_instant(text: str, default_zone: str = "UTC") -> datetime:
    """Parse an ISO 8601 date or date-time into an aware UTC datetime.

    A date alone means local midnight; a value without an offset is read in
    ``default_zone``.  Raises ValueError with a short reason.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty date")
    try:
        if len(raw) == 10 and raw[4] == "-":
            parsed = datetime.combine(date.fromisoformat(raw), time())
        else:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(default_zone))
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00: before the first UTC instant
        raise ValueError(f"{raw!r} is outside the range of dates") from None
