"""A segment's members: who is in it now (an open stay), a page at a time or all of them.

Members are listed by customer row id, and a page after a given id (keyset
paging: a page costs the same however deep, and a customer joining or leaving
while someone pages moves nobody else).  The CSV export and ``lifecycle
segments members --csv`` write :data:`COLUMNS`; a cell that a spreadsheet would
run as a formula gets a ``'`` in front (as the offers export).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import Connection, Engine, func, select

from lifecycle.db import READ_ONLY
from lifecycle.models import Customer, SegmentMembership
from lifecycle.segments.definitions import Definitions
from lifecycle.timeutil import as_utc

#: Members on one page of the segment page.
PAGE = 50
#: Members read per query while exporting.
EXPORT_CHUNK = 1000
#: The CSV header: the row id, the shop's customer id, the address, the name, and when they
#: entered the segment (ISO 8601, UTC).
COLUMNS = ("customer_id", "external_id", "email", "name", "joined_at")
#: A CSV cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Member:
    id: int  # the customer's row id
    external_id: str  # their id at the shop
    email: str | None
    name: str | None
    joined_at: datetime  # when this stay in the segment began (UTC)

    def row(self) -> list[str]:
        """The member as a CSV row of :data:`COLUMNS`, formula-safe."""
        return [csv_cell(v) for v in (self.id, self.external_id, self.email, self.name,
                                      self.joined_at.isoformat())]


def csv_cell(value: object) -> str:
    """A value as an export writes it: None empty, a would-be formula prefixed with '."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _query(segment: str, after: int, limit: int) -> Any:
    c, s = Customer.__table__, SegmentMembership.__table__
    return (select(c.c.id, c.c.external_id, c.c.email, c.c.first_name, c.c.last_name,
                   s.c.entered_at)
            .join(s, s.c.customer_id == c.c.id)
            .where(s.c.segment == segment, s.c.exited_at.is_(None), c.c.id > after)
            .order_by(c.c.id).limit(limit))


def _member(row: Any) -> Member:
    name = " ".join(p for p in (row.first_name, row.last_name) if p) or None
    return Member(row.id, row.external_id, row.email, name, as_utc(row.entered_at))


def members_page(conn: Connection, segment: str, after: int = 0,
                 limit: int = PAGE) -> tuple[list[Member], int | None]:
    """Up to ``limit`` members with a row id above ``after``, and the ``after`` of the next
    page (None on the last page)."""
    rows = conn.execute(_query(segment, after, limit + 1)).all()
    members = [_member(row) for row in rows[:limit]]
    return members, members[-1].id if len(rows) > limit else None


def all_members(source: Connection | Engine, segment: str, limit: int | None = None,
                chunk: int = EXPORT_CHUNK) -> Iterator[Member]:
    """Every member (the first ``limit``), read ``chunk`` at a time, by row id.  Given an
    engine, each chunk is read on a short connection of its own that only reads, so a slow
    reader (a download) holds no connection and, on SQLite, no lock between chunks."""
    after, left = 0, limit
    while left is None or left > 0:
        size = chunk if left is None else min(chunk, left)
        if isinstance(source, Engine):
            with source.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                rows = conn.execute(_query(segment, after, size)).all()
        else:
            rows = source.execute(_query(segment, after, size)).all()
        for row in rows:
            yield _member(row)
        if len(rows) < size:
            return
        after = rows[-1].id
        if left is not None:
            left -= len(rows)


def member_count(conn: Connection, segment: str) -> int:
    s = SegmentMembership.__table__
    return int(conn.execute(select(func.count()).select_from(s).where(
        s.c.segment == segment, s.c.exited_at.is_(None))).scalar_one())


def describe(defs: Definitions, name: str) -> str:
    """A segment's definition in a sentence (built-in segments: with the file's settings)."""
    ret, adv = defs.retention, defs.advocacy
    text = {
        "prospect": "no completed order yet",
        "new": "one completed order",
        "repeat": "two completed orders or more",
        "loyal": f"{ret.loyal_min_orders} completed orders or more",
        "vip": f"top {ret.vip_top_percent:g}% by total spend, {ret.vip_min_orders}+ orders",
        "at_risk": f"days since last order > {ret.at_risk_factor:g} x own median gap",
        "lapsed": f"last order more than {ret.lapsed_days} days ago",
        "churned": f"last order more than {ret.churned_days} days ago",
        "promoter": f"latest NPS 9-10 within {adv.nps_window_days} days",
        "passive": f"latest NPS 7-8 within {adv.nps_window_days} days",
        "detractor": f"latest NPS 0-6 within {adv.nps_window_days} days",
        "reviewer": f"left a review within {adv.review_window_days} days",
        "referrer": f"referred someone within {adv.referral_window_days} days",
    }
    if name in text:
        return text[name]
    if name.startswith("rfm_"):
        cells = [f"R{r[0]}-{r[1]}/FM{fm[0]}-{fm[1]}" for rule in defs.rfm.segments
                 if f"rfm_{rule.name}" == name for r, fm in [(rule.r, rule.fm)]]
        return "RFM " + ", ".join(cells)
    return next((c.description for c in defs.custom if c.name == name), "")


def definition_yaml(defs: Definitions, name: str) -> str | None:
    """The YAML of a segment as ``segments.yaml`` defines it (None: not a segment).

    A custom segment is its entry under ``custom``; a built-in one the settings it is
    computed from (its section, or its RFM rules)."""
    if name not in defs.all_names():
        return None
    custom = next((c for c in defs.custom if c.name == name), None)
    if custom is not None:
        return custom.source
    data: dict[str, Any]
    if name.startswith("rfm_"):
        data = {"rfm": {"segments": [
            {"name": rule.name, "r": list(rule.r), "fm": list(rule.fm)}
            for rule in defs.rfm.segments if f"rfm_{rule.name}" == name]}}
    elif defs.family(name) == "advocacy":
        data = {"advocacy": defs.advocacy.model_dump()}
    else:
        data = {"retention": defs.retention.model_dump()}
    # RFM ranges on one line each ("r: [5, 5]"), settings one a line
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                              default_flow_style=None if "rfm" in data else False))
