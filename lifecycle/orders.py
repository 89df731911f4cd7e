"""Orders as they happen: stored, and on the timeline as the ``order_placed`` touchpoint
that fires order triggers.

:func:`place_orders` is the one way an order arrives live (the ingest API, the
demo's shop): the orders are upserted like imported ones, and each new
completed order is announced.

An order reaches the flows through its ``order_placed`` touchpoint (see
:mod:`lifecycle.flows.triggers`): the order id, its number among the
customer's completed orders (``nth``), total, categories and SKUs.  The
source key ``order_placed:<order id>`` makes it once per order, however
often the order is posted again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from lifecycle.clock import Clock
from lifecycle.db import insert_new
from lifecycle.imports import ImportIssue, ImportResult, import_records
from lifecycle.imports.source import Record
from lifecycle.models import Order, Touchpoint
from lifecycle.timeutil import as_utc


def order_data(order: Any) -> dict[str, Any]:
    """The ``order_placed`` data of an order row that carries its ``nth``."""
    items = json.loads(order.items) if isinstance(order.items, str) else (order.items or [])
    return {"order_id": order.external_id, "nth": int(order.nth), "total": str(order.total),
            "currency": order.currency,
            "categories": sorted({i.get("category") for i in items if i.get("category")}),
            "skus": sorted({i.get("sku") for i in items if i.get("sku")})}


def announce_orders(conn: Connection, external_ids: Iterable[str], now: datetime) -> int:
    """An ``order_placed`` touchpoint for each completed order of ``external_ids`` that has
    none yet; how many were added."""
    wanted = sorted(set(external_ids))
    if not wanted:
        return 0
    orders = Order.__table__
    theirs = select(orders.c.customer_id).where(orders.c.external_id.in_(wanted))
    numbered = select(
        orders.c.customer_id, orders.c.external_id, orders.c.ordered_at, orders.c.total,
        orders.c.currency, orders.c["items"], func.row_number().over(
            partition_by=orders.c.customer_id,
            order_by=(orders.c.ordered_at, orders.c.id)).label("nth"),
    ).where(orders.c.status == "completed", orders.c.customer_id.in_(theirs)).subquery()
    rows = [{"customer_id": o.customer_id, "kind": "order_placed", "channel": "shop",
             "occurred_at": as_utc(o.ordered_at), "recorded_at": now,
             "source_key": f"order_placed:{o.external_id}"[:255], "data": order_data(o)}
            for o in conn.execute(select(numbered).where(numbered.c.external_id.in_(wanted)))]
    return len(insert_new(conn, Touchpoint.__table__, rows, ("source_key",), "id"))


class OrdersRefused(Exception):
    """Some of the orders were not valid: nothing of them may be kept (roll back)."""

    def __init__(self, issues: list[ImportIssue]) -> None:
        super().__init__(f"{len(issues)} invalid orders")
        self.issues = issues


@dataclass(frozen=True)
class Placed:
    result: ImportResult
    announced: int  # new completed orders that fire order triggers now


def place_orders(conn: Connection, orders: Sequence[dict[str, Any]], clock: Clock, *,
                 source_name: str = "body") -> Placed:
    """Upsert ``orders`` (fields as in the import format) in ``conn``'s transaction and
    announce each new completed one; :class:`OrdersRefused` if any is invalid (the caller
    rolls back, so nothing of them is kept)."""
    result = import_records(conn, "orders", [Record(n, dict(o)) for n, o in enumerate(orders)],
                            source_name=source_name, clock=clock)
    if result.issues:
        raise OrdersRefused(result.issues)
    announced = announce_orders(conn, [str(o["order_id"]) for o in orders], clock.now())
    return Placed(result, announced)
