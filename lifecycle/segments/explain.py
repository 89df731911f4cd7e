"""Why a customer is in each segment: ``lifecycle customer show``.

:func:`explain` gathers, for one customer and one moment, the purchase
metrics, the R/F/M scores with the calibration they came from, the RFM
segment, the retention stage, the advocacy status, and every segment with
the time the customer entered it.  The keys of the returned dictionary are
the JSON keys documented in the README.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from lifecycle.models import Order, OrderStatus, SegmentCalibration, SegmentMembership
from lifecycle.money import Amounts
from lifecycle.predictions.service import for_customer
from lifecycle.segments.compute import _run, assignments_for, latest_calibration
from lifecycle.segments.definitions import ADVOCACY, NPS_SEGMENTS, RFM_PREFIX, STAGES, Definitions
from lifecycle.segments.sql import Dialect, metrics_sql
from lifecycle.timeutil import as_utc


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else round(number, 4)


class NotACustomerYet(ValueError):
    """The moment asked about is before the customer's record begins: segments count a customer
    from their ``created_at`` on, so there is no standing to explain."""


def explain(conn: Connection, defs: Definitions, customer: Any, as_of: datetime) -> dict[str, Any]:
    """``customer`` is a row (or object) with the customers table's columns.

    Raises :class:`NotACustomerYet` when ``as_of`` is before the customer's ``created_at``."""
    if customer.created_at is not None and as_utc(customer.created_at) > as_utc(as_of):
        raise NotACustomerYet(
            f"{customer.external_id} was not a customer yet at {_iso(as_of)}: their record begins "
            f"at {_iso(customer.created_at)}, and segments count a customer from then on.")
    d = Dialect.of(conn, defs)
    row = _run(conn, metrics_sql(d, ":cid"), {"as_of": as_of, "cid": customer.id}).mappings().first()
    metrics: dict[str, Any] = {
        "order_count": 0, "total_spend": 0, "avg_spend": None, "first_order_at": None,
        "last_order_at": None, "days_since_last_order": None, "days_since_first_order": None,
        "median_gap_days": None, "currency": defs.currency, "other_currencies": []}
    if row is not None:
        metrics.update({
            "order_count": int(row["order_count"]),
            "total_spend": _number(row["total_spend"]),
            "avg_spend": _number(row["avg_spend"]),
            "first_order_at": _iso(row["first_order_at"]),
            "last_order_at": _iso(row["last_order_at"]),
            "days_since_last_order": _number(row["days_since_last"]),
            "days_since_first_order": _number(row["days_since_first"]),
            "median_gap_days": _number(row["median_gap_days"]),
        })
    # Orders in other currencies are kept apart, each currency summed on its own.
    o = Order.__table__
    others, counts = Amounts(), Counter[str]()
    for currency, total in conn.execute(select(o.c.currency, o.c.total).where(
            o.c.customer_id == customer.id, o.c.status == OrderStatus.COMPLETED.value,
            o.c.ordered_at <= as_of, o.c.currency != defs.currency)):
        others.add(currency, total)
        counts[currency] += 1
    metrics["other_currencies"] = [{"currency": c, "orders": counts[c], "total": f"{a:.2f}"}
                                   for c, a in others]
    cutoffs = latest_calibration(conn)
    calibrated = conn.execute(select(SegmentCalibration.as_of)
                              .order_by(SegmentCalibration.id.desc()).limit(1)).scalar()
    live = assignments_for(conn, defs, customer.id, as_of, cutoffs)
    stays = conn.execute(
        select(SegmentMembership.segment, SegmentMembership.entered_at)
        .where(SegmentMembership.customer_id == customer.id,
               SegmentMembership.entered_at <= as_of,
               (SegmentMembership.exited_at.is_(None)) | (SegmentMembership.exited_at > as_of))
    ).all()
    since = {segment: entered for segment, entered in stays}
    rfm_segment = next((s for s in live if s.startswith(RFM_PREFIX)), None)
    rfm = None
    if rfm_segment is not None and cutoffs is not None:
        scores = live[rfm_segment]
        rfm = {"r": scores["r"], "f": scores["f"], "m": scores["m"],
               "fm": (scores["f"] + scores["m"] + 1) // 2,
               "segment": rfm_segment[len(RFM_PREFIX):],
               "calibrated_as_of": _iso(calibrated),
               "cutoffs": cutoffs.to_json()}
    nps = next((s for s in live if s in NPS_SEGMENTS), None)
    stage = next(s for s in live if s in STAGES)
    names = defs.all_names()
    segments = [{"segment": s, "family": defs.family(s), "since": _iso(since.get(s)),
                 "stored": s in since, "reason": live[s]}
                for s in sorted(live, key=lambda s: names.index(s) if s in names else len(names))]
    stale = sorted(set(since) - set(live))
    return {
        "customer_id": customer.external_id,
        "email": customer.email,
        "name": " ".join(p for p in (customer.first_name, customer.last_name) if p) or None,
        "timezone": customer.timezone,
        "attributes": dict(sorted((customer.attributes or {}).items())),
        "as_of": _iso(as_of),
        "metrics": metrics,
        "rfm": rfm,
        "retention_stage": stage,
        "advocacy": {"nps": nps, "nps_score": live[nps]["score"] if nps else None,
                     "reviewer": "reviewer" in live, "referrer": "referrer" in live},
        "segments": segments,
        "stored_but_no_longer_true": stale,
        "advocacy_segments": [s for s in live if s in ADVOCACY],
        "predictions": for_customer(conn, customer.id),
    }


def _iso(value: datetime | str | None) -> str | None:
    """ISO text of an instant; SQLite hands raw SQL timestamps back as UTC text."""
    if value is None:
        return None
    return as_utc(value).isoformat()
