"""The few SQL expressions where SQLite and PostgreSQL differ, for the insights' queries.

Instants are compared as whole microseconds since 1970 (exact on both databases: SQLite
stores ``YYYY-MM-DD HH:MM:SS.ffffff`` text, PostgreSQL ``timestamptz``), months as a
month number ``year × 12 + month − 1`` of the shop's calendar (:func:`month_of`: the month
starts come from Python's tz database, as SQLite has none), and money as whole cents (the
``orders.total`` column has two decimals), so no sum is ever a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from lifecycle.models.base import UTCDateTime
from lifecycle.segments.sql import json_typed


@dataclass(frozen=True)
class Flavour:
    """The database's SQL flavour."""

    pg: bool

    @classmethod
    def of(cls, conn: Connection) -> Flavour:
        return cls(conn.dialect.name == "postgresql")

    def micros(self, instant: str) -> str:
        """A stored instant as whole microseconds since 1970-01-01 UTC."""
        if self.pg:
            return f"CAST(EXTRACT(EPOCH FROM {instant}) * 1000000 AS BIGINT)"
        return (f"(CAST(strftime('%s', {instant}) AS INTEGER) * 1000000 "
                f"+ CAST(COALESCE(NULLIF(substr({instant}, 21, 6), ''), '0') AS INTEGER))")

    @staticmethod
    def cents(amount: str) -> str:
        """A two-decimal amount as whole cents (exact on both databases)."""
        return f"CAST(ROUND({amount} * 100) AS BIGINT)"

    def json_number(self, document: str, key: str) -> str:
        """The number under ``key`` (a literal key), or NULL if it is not a number."""
        return json_typed(self.pg, document, key, "number")

    def json_text(self, document: str, key: str) -> str:
        """The text under ``key`` (a literal key), or NULL if it is not a text."""
        return json_typed(self.pg, document, key, "string")


def run(conn: Connection, sql: str, **params: Any) -> list[Any]:
    """The rows of ``sql`` with ``params`` bound; datetimes bound as stored instants."""
    statement = text(sql).bindparams(*(
        bindparam(name, type_=UTCDateTime()) for name, value in params.items()
        if isinstance(value, datetime)))
    return list(conn.execute(statement, params))


def month_number(moment: datetime, zone_name: str = "UTC") -> int:
    """The calendar month of ``moment`` in the zone ``zone_name`` as ``year × 12 + month − 1``."""
    from lifecycle.timeutil import zone

    local = moment.astimezone(zone(zone_name))
    return local.year * 12 + local.month - 1


def month_start(number: int, zone_name: str = "UTC") -> datetime:
    """The first instant of month ``number`` (as :func:`month_number`) in ``zone_name``, UTC."""
    from lifecycle.timeutil import UTC, zone

    return datetime(number // 12, number % 12 + 1, 1, tzinfo=zone(zone_name)).astimezone(UTC)


def month_of(instant: str, first: int, last: int, zone_name: str,
             params: dict[str, Any]) -> str:
    """SQL: the calendar month in ``zone_name`` (numbered as :func:`month_number`) of the
    stored instant ``instant``, for instants from the start of month ``first`` to the end of
    month ``last``; ``first − 1`` for any earlier one.  The month starts are bound into
    ``params`` (computed with the tz database here, so SQLite and PostgreSQL agree)."""
    whens = []
    for number in range(first, last + 1):
        params[f"month_start_{number - first}"] = month_start(number, zone_name)
        whens.append(f"WHEN {instant} < :month_start_{number - first} THEN {number - 1}")
    return f"(CASE {' '.join(whens)} ELSE {last} END)"


def month_label(number: int) -> str:
    """``2026-05`` for a month number."""
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


def micros(moment: datetime) -> int:
    """An aware instant as whole microseconds since 1970 (as :meth:`Flavour.micros`)."""
    from lifecycle.timeutil import UTC

    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
