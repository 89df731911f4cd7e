"""Orders as they happen: stored, on the timeline as the ``order_placed`` touchpoint that
fires order triggers, and in the customer's segments at once.

:func:`place_orders` is the one way an order arrives live (the ingest API, the
demo's shop): the orders are upserted like imported ones, each new completed
order is announced, and the segments of the customers whose completed orders
changed are refreshed, all in the caller's transaction.

An order reaches the flows through its ``order_placed`` touchpoint (see
:mod:`lifecycle.flows.triggers`): the order id, its number among the
customer's completed orders (``nth``), total, categories and SKUs.  The
source key ``order_placed:<order id>`` makes it once per order, however
often the order is posted again — and whether it came by the API (channel
``shop``) or was imported first (channel ``import``, history that fires
nothing; see :func:`lifecycle.imports.loader.announce_orders`).  An order on
the timeline whose status changes later (refunded, cancelled, completed
again) adds an ``order_status_changed`` entry at the time the change arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from lifecycle.clock import Clock
from lifecycle.imports import HISTORY, ImportIssue, ImportResult, import_records, loader
from lifecycle.imports.source import Record
from lifecycle.models import Customer
from lifecycle.segments.compute import (
    RefreshReport,
    latest_calibration,
    refresh_all,
    refresh_customers,
)
from lifecycle.segments.definitions import Definitions
from lifecycle.yamlfile import InvalidFile

log = logging.getLogger(__name__)
#: The channel of ``order_placed`` touchpoints of orders arriving live: they fire order triggers.
LIVE = "shop"
#: Segment definitions, or what loads them (InvalidFile if ``segments.yaml`` has problems).
Segments = Definitions | Callable[[], Definitions]


def order_data(order: Any) -> dict[str, Any]:
    """The ``order_placed`` data of an order row that carries its ``nth`` (what
    :func:`lifecycle.imports.loader.announce_orders` writes in SQL; the flow replay builds
    its orders' touchpoints with this)."""
    items = json.loads(order.items) if isinstance(order.items, str) else (order.items or [])
    return {"order_id": order.external_id, "nth": int(order.nth), "total": f"{order.total:.2f}",
            "currency": order.currency,
            "categories": sorted({i.get("category") for i in items if i.get("category")}),
            "skus": sorted({i.get("sku") for i in items if i.get("sku")})}


class OrdersRefused(Exception):
    """Some of the orders were not valid: nothing of them may be kept (roll back)."""

    def __init__(self, issues: list[ImportIssue]) -> None:
        super().__init__(f"{len(issues)} invalid orders")
        self.issues = issues


@dataclass(frozen=True)
class Placed:
    result: ImportResult
    announced: int  # new completed orders that fire order triggers now
    segments: RefreshReport | None = None  # the refresh of their customers (None: not run)


def place_orders(conn: Connection, orders: Sequence[dict[str, Any]], clock: Clock, *,
                 source_name: str = "body", refresh: bool = True,
                 segments: Segments | None = None) -> Placed:
    """Upsert ``orders`` (fields as in the import format) in ``conn``'s transaction, announce
    each new completed one and refresh the segments of the customers whose completed orders
    changed (set-based, one pass for the whole batch: :func:`refresh_customers`), writing
    ``segment_entered`` / ``segment_exited``; :class:`OrdersRefused` if any order is invalid
    (the caller rolls back, so nothing of them is kept).

    ``segments`` are the definitions to refresh with, or what loads them (e.g.
    ``lambda: segments.service.definitions(app)``, which carries the reporting currency);
    ``refresh=False`` leaves the segments to the next full refresh (the benchmark's
    reference) and needs none.
    A ``segments.yaml`` with problems never refuses an order: the refresh is skipped and
    the problem logged.
    """
    result = import_records(conn, "orders", [Record(n, dict(o)) for n, o in enumerate(orders)],
                            source_name=source_name, clock=clock, channel=LIVE)
    if result.issues:
        raise OrdersRefused(result.issues)
    report = None
    if refresh and result.customers_changed:
        report = refresh_changed(conn, segments, clock)
    return Placed(result, result.announced, report)


def refresh_changed(conn: Connection, segments: Segments | None, clock: Clock, *,
                    channel: str = "system") -> RefreshReport | None:
    """Refresh the segments of the customers whose completed orders the last orders import
    on ``conn`` changed (:data:`lifecycle.imports.loader.CHANGED_TABLE`), as of now; None
    if the segment definitions have problems (logged).  ``channel`` is that of the segment
    moves' touchpoints (``import`` for history: they fire no flow triggers)."""
    if not isinstance(segments, Definitions):
        try:
            segments = _definitions(segments)
        except InvalidFile as exc:
            log.error("Segments of customers with new orders are not refreshed: "
                      "segments.yaml has problems:\n%s", exc)
            return None
    now = clock.now()  # read again once the refresh holds its locks
    return refresh_customers(conn, segments, f"SELECT customer_id FROM {loader.CHANGED_TABLE}",
                             now, now, channel=channel, clock=clock)


#: An import refreshes the customers it changed when they are at most this share of all
#: customers; more are left to the next full refresh, which costs no more than theirs.
IMPORT_REFRESH_SHARE = 0.1


def refresh_imported(conn: Connection, segments: Segments, clock: Clock,
                     result: ImportResult) -> tuple[str, RefreshReport | None]:
    """The segment refresh an orders import ends with, in its transaction; what was done and
    its report.  Its moves are history (channel ``import``): they start no flows.

    ``full``: no calibration yet (the shop's first history): a full refresh, which makes
    one.  ``partial``: the customers whose completed orders changed, if they are at most
    :data:`IMPORT_REFRESH_SHARE` of all customers.  ``deferred``: more than that; the next
    full refresh takes them in (a refresh of a tenth of a shop costs 0.3-0.4 of a full one,
    measured by ``benchmarks.imports``: much more than that is no cheaper than the full
    refresh, which the scheduler runs anyway).  ``unchanged``: nobody to refresh.
    ``invalid``: ``segments.yaml`` has problems (logged).
    """
    if not result.customers_changed:
        return "unchanged", None
    try:
        defs = _definitions(segments)
    except InvalidFile as exc:
        log.error("Segments are not refreshed after the import: segments.yaml has problems:\n%s",
                  exc)
        return "invalid", None
    now = clock.now()
    if latest_calibration(conn) is None:
        return "full", refresh_all(conn, defs, now, now, channel=HISTORY)
    everybody = conn.execute(select(func.count()).select_from(Customer)).scalar_one()
    if result.customers_changed > IMPORT_REFRESH_SHARE * everybody:
        return "deferred", None
    return "partial", refresh_customers(
        conn, defs, f"SELECT customer_id FROM {loader.CHANGED_TABLE}", now, now, channel=HISTORY)


def _definitions(segments: Segments | None) -> Definitions:
    if segments is None:
        raise ValueError("refreshing segments needs their definitions (segments=…)")
    return segments if isinstance(segments, Definitions) else segments()
