"""Retention insights for managers: repurchase rate, cohorts, NPS, historic CLV, revenue by
retention stage and by flows and campaigns — every figure as of any moment.

The measures are in :mod:`lifecycle.insights.measures` (set-based SQL, SQLite and
PostgreSQL alike); :func:`report` computes them all for the page (``/insights``), its CSV
files and ``lifecycle insights … --json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from lifecycle.insights.measures import (
    Attribution,
    Clv,
    Cohorts,
    Nps,
    Repurchase,
    Stages,
    attribution,
    clv,
    cohorts,
    nps,
    repurchase,
    stages,
)
from lifecycle.timeutil import UTC

#: The tables, by the name their CSV file and command carry.
TABLES = ("repurchase", "time-to-second-order", "cohorts", "clv", "nps", "nps-comments",
          "stages", "attribution")
#: Months of cohorts and of NPS shown by default, and the most allowed.
MONTHS, MAX_MONTHS = 12, 60
#: Days of revenue by stage and by source shown by default, and the most allowed.
DAYS, MAX_DAYS = 365, 3650
#: The earliest moment the measures can be asked for: their windows (up to
#: :data:`MAX_MONTHS` months, :data:`MAX_DAYS` days and the attribution window before it)
#: must stay within the calendar, and no shop has orders older than this.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


def check_as_of(moment: datetime) -> datetime:
    """``moment`` if the measures can be computed as of it; else ValueError saying why."""
    if moment < EARLIEST:
        raise ValueError(f"{moment.date().isoformat()} is before {EARLIEST.date().isoformat()}, "
                         "the earliest date "
                         "the insights go back to")
    return moment


@dataclass
class Report:
    as_of: datetime
    currency: str
    months: int
    days: int
    repurchase: Repurchase
    cohorts: Cohorts
    clv: Clv
    nps: Nps
    stages: Stages
    attribution: Attribution

    def table(self, name: str) -> tuple[list[str], list[list[Any]]]:
        """The CSV header and rows of the table ``name`` (one of :data:`TABLES`)."""
        if name == "time-to-second-order":
            return (["from_days", "to_days", "buyers"],
                    [[b.low, b.high, b.buyers] for b in self.repurchase.distribution])
        if name == "nps-comments":
            return self.nps.comments_csv()
        return getattr(self, name).csv()  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "currency": self.currency,
                "repurchase": self.repurchase.to_json(), "cohorts": self.cohorts.to_json(),
                "clv": self.clv.to_json(), "nps": self.nps.to_json(),
                "stages": self.stages.to_json(), "attribution": self.attribution.to_json()}


def table(conn: Connection, name: str, as_of: datetime, currency: str, window: timedelta,
          months: int = MONTHS, days: int = DAYS, zone: str = "UTC"
          ) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and rows of the one table ``name`` (one of :data:`TABLES`) as of
    ``as_of``, computing only the measure it needs (as :func:`report` would)."""
    check_as_of(as_of)
    months = max(1, min(months, MAX_MONTHS))
    days = max(1, min(days, MAX_DAYS))
    if name in ("repurchase", "time-to-second-order"):
        found: Any = repurchase(conn, as_of)
        if name == "time-to-second-order":
            return (["from_days", "to_days", "buyers"],
                    [[b.low, b.high, b.buyers] for b in found.distribution])
        return found.csv()  # type: ignore[no-any-return]
    if name in ("cohorts", "clv"):
        found = cohorts(conn, as_of, currency, months, zone)
        return (found if name == "cohorts" else clv(found)).csv()  # type: ignore[no-any-return]
    if name in ("nps", "nps-comments"):
        found = nps(conn, as_of, months, zone)
        return found.csv() if name == "nps" else found.comments_csv()  # type: ignore[no-any-return]
    if name == "stages":
        return stages(conn, as_of, currency, days).csv()
    if name == "attribution":
        return attribution(conn, as_of, currency, window, days).csv()
    raise ValueError(f"No such table: {name}; the tables are {', '.join(TABLES)}.")


def report(conn: Connection, as_of: datetime, currency: str, window: timedelta,
           months: int = MONTHS, days: int = DAYS, zone: str = "UTC") -> Report:
    """Every measure as of ``as_of``: cohorts and NPS of the last ``months`` calendar months
    in ``zone`` (the shop's), revenue
    by stage and by source of the last ``days`` days (last touch within ``window``),
    money in ``currency``."""
    check_as_of(as_of)
    months = max(1, min(months, MAX_MONTHS))
    days = max(1, min(days, MAX_DAYS))
    found = cohorts(conn, as_of, currency, months, zone)
    return Report(as_of, currency, months, days, repurchase(conn, as_of), found, clv(found),
                  nps(conn, as_of, months, zone), stages(conn, as_of, currency, days),
                  attribution(conn, as_of, currency, window, days))
