"""An arriving order moves its customer's segments at once, in the request's transaction."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select
from sqlalchemy.engine import make_url

from lifecycle.apikeys import create_key
from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows.service import tick
from lifecycle.imports import import_records
from lifecycle.imports.source import Record
from lifecycle.models import Customer, FlowEnrollment, SegmentMembership, Touchpoint
from lifecycle.orders import place_orders
from lifecycle.segments.compute import refresh_all, refresh_customer, refresh_customers
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeline import page
from tests.factories import WEB_T0 as T0
from tests.factories import add_order, add_touchpoint, write_csv

DEFS = load_definitions(Path(__file__).resolve().parent.parent / "flows" / "segments.yaml")


def an_order(n: int, customer: str = "C1", days_ago: float = 1, total: str = "20.00",
             **changes: Any) -> dict[str, Any]:
    return {"order_id": f"O{n}", "customer_id": customer, "email": f"{customer}@example.com",
            "ordered_at": (T0 - timedelta(days=days_ago)).isoformat(), "total": total,
            "currency": "EUR", **changes}


def a_shop(conn: Connection, buyers: int = 12) -> None:
    """Buyers of one order each (history), calibrated by a full refresh."""
    import_records(conn, "orders", [Record(n, an_order(n, f"B{n}", days_ago=5 + n * 9,
                                                       total="100.00", order_id=f"H{n}"))
                                    for n in range(buyers)], source_name="history.csv",
                   clock=ManualClock(T0))
    refresh_all(conn, DEFS, T0, T0)


def stays(conn: Connection, external_id: str) -> set[str]:
    return set(conn.execute(select(SegmentMembership.segment).join(
        Customer, Customer.id == SegmentMembership.customer_id).where(
        Customer.external_id == external_id, SegmentMembership.exited_at.is_(None))).scalars())


def moves(conn: Connection, external_id: str) -> list[tuple[str, str]]:
    cid = conn.execute(select(Customer.id).where(Customer.external_id == external_id)).scalar_one()
    return [(e.kind, e.data["segment"]) for e in page(conn, cid, kinds=(
        "segment_entered", "segment_exited"), limit=500)]


def headers(app: App) -> dict[str, str]:
    with app.engine.begin() as conn:
        return {"Authorization": f"Bearer {create_key(conn, 'shop', ['orders:write'], T0)}"}


def test_a_second_order_posted_to_the_api_makes_the_customer_repeat_when_it_returns(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        a_shop(conn)
    keyed = headers(app)
    assert web.post("/api/v1/orders", json=[an_order(1, days_ago=20)],
                    headers=keyed).status_code == 200
    with app.engine.connect() as conn:
        assert "new" in stays(conn, "C1")
    assert web.post("/api/v1/orders", json=[an_order(2)], headers=keyed).status_code == 200
    with app.engine.connect() as conn:  # stored and on the timeline when the request returns
        assert "repeat" in stays(conn, "C1") and "new" not in stays(conn, "C1")
        assert ("segment_entered", "repeat") in moves(conn, "C1")
        assert ("segment_exited", "new") in moves(conn, "C1")
    web.post("/api/v1/orders", json=[an_order(2)], headers=keyed)  # again: nothing moves
    with app.engine.connect() as conn:
        assert len([m for m in moves(conn, "C1") if m == ("segment_entered", "repeat")]) == 1


def test_a_batch_refreshes_all_its_customers_and_nobody_else(conn: Connection) -> None:
    a_shop(conn)
    stale = conn.execute(select(Customer.id).where(Customer.external_id == "B0")).scalar_one()
    add_order(conn, stale, T0 - timedelta(hours=3), 10)  # an order that arrived some other way
    place_orders(conn, [an_order(n, f"C{n}", days_ago=30) for n in range(40)],
                 ManualClock(T0), segments=DEFS)
    assert all(stays(conn, f"C{n}") >= {"new"} for n in range(40))
    placed = place_orders(conn, [an_order(100 + n, f"C{n}") for n in range(40)]
                          + [an_order(200, "C0", status="pending")], ManualClock(T0),
                          segments=DEFS)
    assert placed.segments is not None and placed.segments.customers == 40
    assert placed.segments.entered["repeat"] == 40 and placed.segments.exited["new"] == 40
    assert all("repeat" in stays(conn, f"C{n}") for n in range(40))
    assert "new" in stays(conn, "B0")  # not in the batch: left to its own refresh
    refresh_customer(conn, DEFS, stale, T0, T0)
    assert "new" not in stays(conn, "B0")


def test_a_refresh_of_some_customers_equals_refreshing_each_of_them(conn: Connection) -> None:
    a_shop(conn)
    ids = [conn.execute(select(Customer.id).where(Customer.external_id == f"B{n}")).scalar_one()
           for n in range(12)]
    for n, cid in enumerate(ids[:6]):
        add_order(conn, cid, T0 - timedelta(days=n), 40 * n, items=[{"category": "tea"}])
        add_touchpoint(conn, cid, "feedback", T0 - timedelta(hours=n), score=n + 5)
    later = T0 + timedelta(days=3)

    def outcome() -> tuple[set[tuple[int, str]], list[tuple[int, str, str]]]:
        open_stays = {tuple(row) for row in conn.execute(select(
            SegmentMembership.customer_id, SegmentMembership.segment).where(
            SegmentMembership.exited_at.is_(None)))}
        written = sorted(tuple(row) for row in conn.execute(select(
            Touchpoint.customer_id, Touchpoint.kind, Touchpoint.data["segment"].as_string())
            .where(Touchpoint.recorded_at == later)))
        return open_stays, written

    one_by_one = conn.begin_nested()
    for cid in ids[:8]:
        refresh_customer(conn, DEFS, cid, later, later)
    expected = outcome()
    one_by_one.rollback()
    at_once = conn.begin_nested()
    report = refresh_customers(conn, DEFS, ids[:8], later, later)
    assert outcome() == expected and report.customers == 8
    at_once.rollback()
    names = ", ".join(f"'B{n}'" for n in range(8))
    by_query = refresh_customers(conn, DEFS, f"SELECT id FROM customers WHERE external_id IN "
                                 f"({names}) AND id % 1 = 0", later, later)  # (any SQL)
    assert outcome() == expected and by_query.customers == 8
    assert sum(report.entered.values()) > 0


def test_flows_on_segments_entered_by_an_order_enrol_on_the_next_tick(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        a_shop(conn)
    tick(app)  # the engine runs
    keyed = headers(app)
    for n, days in enumerate((40, 30, 20, 10)):  # the fourth order makes them loyal
        web.post("/api/v1/orders", json=[an_order(n, days_ago=days)], headers=keyed)
    with app.engine.connect() as conn:
        assert "loyal" in stays(conn, "C1")
    tick(app)
    with app.engine.connect() as conn:
        flows = set(conn.execute(select(FlowEnrollment.flow).join(
            Customer, Customer.id == FlowEnrollment.customer_id).where(
            Customer.external_id == "C1")).scalars())
    assert "loyalty_offer" in flows


def test_two_requests_for_the_same_customers_at_once_neither_deadlock_nor_duplicate_stays(
        app: App) -> None:
    with app.engine.begin() as conn:
        a_shop(conn)
    failures: list[BaseException] = []
    for round_ in range(4):
        start = threading.Barrier(2)

        def post(orders: list[dict[str, Any]], start: threading.Barrier = start) -> None:
            try:
                start.wait(10)
                with app.engine.begin() as conn:
                    place_orders(conn, orders, ManualClock(T0), segments=DEFS)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        first = [an_order(1000 + 10 * round_ + n, f"C{n}", days_ago=round_ + 1) for n in range(6)]
        second = [an_order(2000 + 10 * round_ + n, f"C{n}", days_ago=round_ + 1.5)
                  for n in reversed(range(6))]
        threads = [threading.Thread(target=post, args=(orders,)) for orders in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "deadlocked"
    assert failures == []
    with app.engine.connect() as conn:
        open_stays = conn.execute(select(SegmentMembership.customer_id, SegmentMembership.segment,
                                         func.count()).where(
            SegmentMembership.exited_at.is_(None)).group_by(
            SegmentMembership.customer_id, SegmentMembership.segment)).all()
        assert all(n == 1 for _cid, _segment, n in open_stays)
        assert all(stays(conn, f"C{n}") & {"loyal", "vip"} for n in range(6))  # 8 orders each
        full = refresh_all(conn, DEFS, T0, T0, recalibrate=False, write=False)
        assert not full.entered and not full.exited  # what is stored is what is so


def test_an_order_is_kept_when_segments_yaml_has_problems(conn: Connection,
                                                          tmp_path: Path) -> None:
    broken = tmp_path / "segments.yaml"
    broken.write_text("retention: [not, a, mapping\n")
    placed = place_orders(conn, [an_order(1)], ManualClock(T0), segments=lambda: load_definitions(broken))
    assert placed.announced == 1 and placed.segments is None
    assert stays(conn, "C1") == set()


def test_the_refresh_can_be_switched_off(conn: Connection) -> None:
    placed = place_orders(conn, [an_order(1)], ManualClock(T0), refresh=False)
    assert placed.announced == 1 and placed.segments is None and stays(conn, "C1") == set()


def test_lifecycle_import_orders_ends_by_refreshing_the_customers_it_changed(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    def import_orders(rows: list[tuple[str, str, int, str]], *options: str) -> str:
        path = write_csv(tmp_path / "orders.csv", ["order_id", "customer_id", "email",
                                                   "ordered_at", "total"],
                         [[order, customer, f"{customer}@example.com",
                           (datetime.now() - timedelta(days=days)).isoformat(), total]
                          for order, customer, days, total in rows])
        done = CliRunner().invoke(cli, ["import", "orders", str(path), *options],
                                  env={**cli_env, "COLUMNS": "300"})
        assert done.exit_code == 0, done.output
        return " ".join(done.stdout.split())

    app = App(replace(load_settings(cli_env), database_url=make_url(
        cli_env["LIFECYCLE_DATABASE_URL"])))
    # The first history: a full refresh makes the first calibration.
    said = import_orders([("O1", "C1", 30, "10"), ("O2", "C1", 2, "10")]
                         + [(f"D{n}", f"D{n}", n, "50") for n in range(19)])
    assert "Segments refreshed for all 20 customers (the first calibration" in said
    with app.engine.connect() as conn:
        assert "repeat" in stays(conn, "C1") and "new" in stays(conn, "D3")
        channels = set(conn.execute(select(Touchpoint.channel).where(
            Touchpoint.kind == "segment_entered")).scalars())
        assert channels == {"import"}  # history: the engine passes over these moves
    # Later, a second order of D3 (1 customer of 20): that customer's segments at once.
    said = import_orders([("O3", "D3", 1, "10")])
    assert "Segments refreshed for the 1 customers whose completed orders changed" in said
    with app.engine.connect() as conn:
        assert "new" not in stays(conn, "D3")  # two orders now
    # Orders of 5 customers of 20: more than a tenth, left to the next full refresh.
    said = import_orders([(f"E{n}", f"D{n + 4}", 1, "10") for n in range(5)])
    assert "are left to the next full refresh" in said and "more than 10%" in said
    said = import_orders([("O4", "D1", 1, "10")], "--no-refresh")
    assert "left to the next full refresh" in said and "(--no-refresh)" in said
    with app.engine.connect() as conn:
        assert "new" in stays(conn, "D4") and "new" in stays(conn, "D1")
    app.close()


def test_the_scheduled_full_refresh_is_written_when_an_order_s_refresh_commits_while_it_waits(
        app: App) -> None:
    from lifecycle.segments.service import refresh_if_due

    with app.engine.begin() as conn:
        a_shop(conn)  # calibrated at T0
    due = T0 + timedelta(days=2)
    app.clock.set(due)  # type: ignore[attr-defined]
    order = app.engine.connect()
    pending = order.begin()  # an order's request, its segment refresh done, not committed yet
    place_orders(order, [an_order(1, days_ago=20), an_order(2, days_ago=1)],
                 ManualClock(due + timedelta(seconds=1)), segments=DEFS)
    reports: list[Any] = []
    job = threading.Thread(target=lambda: reports.append(refresh_if_due(app)))
    job.start()  # the scheduler's full refresh reads the clock, then waits for the request
    time.sleep(0.5)
    app.clock.set(due + timedelta(seconds=2))  # type: ignore[attr-defined]
    pending.commit()
    order.close()
    job.join(60)
    assert reports and reports[0] is not None
    assert reports[0].written, reports[0].note  # not "report only": the nightly moves are kept


def test_an_order_s_refresh_that_waits_for_a_full_refresh_never_ends_a_stay_before_it_began(
        app: App) -> None:
    with app.engine.begin() as conn:
        a_shop(conn)
        place_orders(conn, [an_order(1, days_ago=20)], ManualClock(T0), refresh=False)
    full = app.engine.connect()
    running = full.begin()  # the nightly full refresh, not committed yet: C1 enters "new"
    refresh_all(full, DEFS, T0 + timedelta(seconds=2), T0 + timedelta(seconds=2))
    clock = ManualClock(T0 + timedelta(seconds=1))  # the order's request reads its clock...
    failures: list[BaseException] = []

    def post() -> None:
        try:
            with app.engine.begin() as conn:  # ...and waits for the full refresh
                place_orders(conn, [an_order(2, days_ago=1)], clock, segments=DEFS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    request = threading.Thread(target=post)
    request.start()
    time.sleep(0.5)
    clock.set(T0 + timedelta(seconds=3))
    running.commit()
    full.close()
    request.join(60)
    assert failures == []
    with app.engine.connect() as conn:
        assert "repeat" in stays(conn, "C1")
        backwards = conn.execute(select(SegmentMembership.segment).where(
            SegmentMembership.exited_at < SegmentMembership.entered_at)).scalars().all()
        assert backwards == []


def test_the_same_new_order_posted_twice_at_once_keeps_the_later_post_s_values(
        app: App) -> None:
    from lifecycle.models import Order

    with app.engine.begin() as conn:  # a known customer with one order
        place_orders(conn, [an_order(0, days_ago=30)], ManualClock(T0), segments=DEFS)
    first = app.engine.connect()
    running = first.begin()  # the order's first post, not committed yet
    place_orders(first, [an_order(1, days_ago=2)], ManualClock(T0), segments=DEFS)
    failures: list[BaseException] = []

    def refund() -> None:  # the shop's next post of the same order: refunded
        try:
            with app.engine.begin() as conn:
                place_orders(conn, [an_order(1, days_ago=2, status="refunded")],
                             ManualClock(T0 + timedelta(minutes=1)), segments=DEFS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    second = threading.Thread(target=refund)
    second.start()
    time.sleep(0.5)
    running.commit()
    first.close()
    second.join(60)
    assert failures == []
    with app.engine.connect() as conn:
        assert conn.execute(select(Order.status).where(Order.external_id == "O1")).scalar_one() \
            == "refunded"
        cid = conn.execute(select(Customer.id).where(Customer.external_id == "C1")).scalar_one()
        assert [e.kind for e in page(conn, cid, kinds=("order_placed", "order_status_changed"))] \
            == ["order_status_changed", "order_placed", "order_placed"]
        assert "repeat" not in stays(conn, "C1")  # one completed order: not repeat
