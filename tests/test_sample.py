"""The sample shop is deterministic and shaped like a real one."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, select

from lifecycle.imports import import_rows
from lifecycle.models import Customer, Order
from lifecycle.sample import SampleShop, ShopShape, write_files
from lifecycle.timeutil import UTC
from tests.conftest import count

UNTIL = datetime(2026, 6, 30, 12, tzinfo=UTC)


def shop(customers: int = 3_000, seed: int = 7) -> SampleShop:
    return SampleShop(ShopShape(customers=customers), until=UNTIL, seed=seed)


def test_the_same_seed_gives_the_same_shop_and_another_seed_another() -> None:
    first, second, other = shop(500), shop(500), shop(500, seed=8)
    rows = (list(first.customers()), list(first.orders()))
    assert rows == (list(second.customers()), list(second.orders()))
    assert rows[1] != list(other.orders())


def test_the_shop_is_shaped_like_a_real_one() -> None:
    sample = shop()
    customers = list(sample.customers())
    orders = list(sample.orders())
    per_customer = Counter(o["customer_external_id"] for o in orders)
    counts = list(per_customer.values())
    # Most buyers order once or twice; a long tail orders many times.
    assert 0.35 < sum(1 for c in counts if c == 1) / len(counts) < 0.7
    assert max(counts) >= 15
    # Some customers never ordered (prospects).
    assert 0.02 < 1 - len(per_customer) / len(customers) < 0.2
    # Several years of history, all of it before the end date.
    times = [o["ordered_at"] for o in orders]
    assert max(times) <= UNTIL and UNTIL - min(times) > timedelta(days=2 * 365)
    statuses = Counter(o["status"] for o in orders)
    assert statuses["refunded"] > 0 and statuses["cancelled"] > 0
    assert statuses["completed"] / len(orders) > 0.9
    assert len({c["timezone"] for c in customers}) >= 8
    # Orders happen in the customer's daytime more than at night.
    zones = {c["external_id"]: c["timezone"] for c in customers}
    from lifecycle.timeutil import zone

    local_hours = [o["ordered_at"].astimezone(zone(zones[o["customer_external_id"]])).hour
                   for o in orders]
    assert sum(1 for h in local_hours if 8 <= h <= 22) / len(local_hours) > 0.85
    # Every customer signed up before their first order; totals match the items.
    created = {c["external_id"]: c["created_at"] for c in customers}
    assert all(created[o["customer_external_id"]] <= o["ordered_at"] for o in orders)
    assert all(o["total"] == sum(int(i["quantity"]) * __import__("decimal").Decimal(i["price"])
                                 for i in o["items"]) for o in orders)
    # Each repeat buyer has their own cadence: the median gaps differ widely.
    gaps = []
    for external_id, n in per_customer.items():
        if n >= 4:
            mine = sorted(o["ordered_at"] for o in orders if o["customer_external_id"] == external_id)
            gaps.append(statistics.median((b - a).days for a, b in zip(mine, mine[1:])))
    assert max(gaps) > 3 * max(1, min(gaps))


def test_loading_the_sample_twice_adds_nothing_the_second_time(conn: Connection) -> None:
    sample = shop(300)
    people = import_rows(conn, "customers", sample.customers())
    orders = import_rows(conn, "orders", sample.orders())
    assert people.inserted == 300 and orders.inserted == count(conn, "orders") > 300
    again = import_rows(conn, "orders", shop(300).orders())
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, orders.inserted)
    assert orders.customers_created == 0


def test_sample_files_import_to_the_same_shop(conn: Connection, tmp_path: Path) -> None:
    from lifecycle.imports import import_records
    from lifecycle.imports.source import open_source

    customers_path, orders_path = write_files(shop(200), tmp_path)
    for kind, path in (("customers", customers_path), ("orders", orders_path)):
        source = open_source(str(path))
        result = import_records(conn, kind, source.records(), source_name=source.name)
        source.close()
        assert result.skipped == 0 and result.inserted > 0
    direct = shop(200)
    expected = {o["external_id"]: (o["total"], o["ordered_at"], o["status"])
                for o in direct.orders()}
    stored = {row.external_id: (row.total, row.ordered_at, row.status)
              for row in conn.execute(select(Order.external_id, Order.total, Order.ordered_at,
                                             Order.status))}
    assert stored == expected
    assert count(conn, "customers") == 200
    emails = set(conn.execute(select(Customer.email)).scalars())
    assert emails == {c["email"] for c in direct.customers()}
