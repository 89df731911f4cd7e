"""Every order is on the timeline: imported ones (history, no triggers) as posted ones (live)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows.service import tick
from lifecycle.flows.triggers import dispatch
from lifecycle.imports import ImportResult, import_records, import_rows
from lifecycle.imports.source import Record
from lifecycle.models import Customer, FlowEnrollment, Order, Touchpoint, TriggerCursor
from lifecycle.orders import place_orders
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.timeline import page
from tests.factories import WEB_T0 as T0
from tests.factories import (
    account,
    add_customer,
    add_order,
    add_touchpoint,
    logged_in,
    write_csv,
)


def an_order(n: int, customer: str = "C1", at: datetime = T0 - timedelta(days=3),
             **changes: Any) -> dict[str, Any]:
    return {"order_id": f"O{n}", "customer_id": customer, "email": f"{customer}@example.com",
            "ordered_at": at.isoformat(), "total": "42.50", "currency": "EUR",
            "items": [{"sku": "TEA-1", "name": "Sencha", "category": "tea", "quantity": 2,
                       "price": "21.25"}, {"sku": "POT-1", "category": "accessories"}],
            **changes}


def imported(conn: Connection, *orders: dict[str, Any]) -> ImportResult:
    """Orders through the file importer (what `lifecycle import orders` runs)."""
    result = import_records(conn, "orders", [Record(n + 2, dict(o)) for n, o in enumerate(orders)],
                            source_name="orders.csv", clock=ManualClock(T0))
    assert not result.issues, result.issues
    return result


def placed(conn: Connection, *orders: dict[str, Any]) -> int:
    """Orders as the API takes them; how many were announced."""
    return place_orders(conn, list(orders), ManualClock(T0), refresh=False).announced


def customer_id(conn: Connection, external_id: str) -> int:
    return conn.execute(select(Customer.id).where(Customer.external_id == external_id)).scalar_one()


def entries(conn: Connection, external_id: str, *kinds: str) -> list[Any]:
    return page(conn, customer_id(conn, external_id), kinds=kinds, limit=500)


def test_an_imported_order_is_on_the_timeline_in_the_words_of_a_posted_one(
        conn: Connection) -> None:
    imported(conn, an_order(1, "C1"), an_order(3, "C1", at=T0 - timedelta(days=9)))
    placed(conn, an_order(2, "C2"))
    [newer, older] = entries(conn, "C1")
    [live] = entries(conn, "C2")
    assert (newer.kind, older.kind, live.kind) == ("order_placed",) * 3
    assert newer.data == {**live.data, "order_id": "O1", "nth": 2}  # O3 came first
    assert older.data["nth"] == 1
    assert live.data == {"order_id": "O2", "nth": 1, "total": "42.50", "currency": "EUR",
                         "categories": ["accessories", "tea"], "skus": ["POT-1", "TEA-1"]}
    assert newer.summary == "Order O1: €42.50 (order no. 2)"
    assert live.summary == "Order O2: €42.50 (order no. 1)"
    assert newer.occurred_at == T0 - timedelta(days=3) == live.occurred_at
    assert (newer.channel, live.channel) == ("import", "shop")


def test_an_order_is_on_the_timeline_once_however_it_arrives_again(conn: Connection) -> None:
    assert imported(conn, an_order(1)).announced == 1
    assert imported(conn, an_order(1)).announced == 0
    assert placed(conn, an_order(1)) == 0  # imported first: the API does not announce it again
    assert placed(conn, an_order(2)) == 1
    assert imported(conn, an_order(2)).announced == 0
    assert [e.data["order_id"] for e in entries(conn, "C1", "order_placed")] == ["O2", "O1"]


def test_only_completed_orders_are_on_the_timeline_as_many_as_the_orders_metric_counts(
        conn: Connection) -> None:
    imported(conn, an_order(1), an_order(2, status="pending"), an_order(3, status="refunded"),
             an_order(4, status="cancelled"), an_order(5, at=T0 - timedelta(days=1)))
    shown = [e.data["order_id"] for e in entries(conn, "C1", "order_placed")]
    completed = conn.execute(select(func.count()).select_from(Order).where(
        Order.status == "completed")).scalar_one()
    assert shown == ["O5", "O1"] and completed == 2


def test_a_status_change_adds_an_entry_and_keeps_the_order(conn: Connection) -> None:
    imported(conn, an_order(1, status="pending"))
    assert entries(conn, "C1") == []
    imported(conn, an_order(1, status="completed"))  # paid later: on the timeline when ordered
    [order] = entries(conn, "C1")
    assert order.occurred_at == T0 - timedelta(days=3)
    placed(conn, an_order(1, status="refunded"))
    refund, order_again = entries(conn, "C1")
    assert order_again == order
    assert refund.kind == "order_status_changed" and refund.occurred_at == T0
    assert refund.summary == "Order O1 is now refunded (was completed): €42.50"
    imported(conn, an_order(1, status="refunded"))  # the same again changes nothing
    assert len(entries(conn, "C1")) == 2
    imported(conn, an_order(2, status="cancelled"))  # never completed: never on the timeline
    assert len(entries(conn, "C1")) == 2


def test_keyset_pages_walk_hundreds_of_orders_and_events_without_a_repeat_or_a_gap(
        conn: Connection) -> None:
    # 300 orders, three at each instant, and 300 other entries at the very same instants.
    imported(conn, *(an_order(n, at=T0 - timedelta(hours=n // 3)) for n in range(300)))
    cid = customer_id(conn, "C1")
    for n in range(300):
        add_touchpoint(conn, cid, ("email_opened", "email_sent", "note")[n % 3],
                       T0 - timedelta(hours=n // 3), by="sue", text="hello")
    everything = conn.execute(select(Touchpoint.id, Touchpoint.kind).where(
        Touchpoint.customer_id == cid).order_by(Touchpoint.occurred_at.desc(),
                                                Touchpoint.id.desc())).all()
    for kinds, size in (((), 7), (("order_placed",), 11), (("order_placed", "note"), 50)):
        walked, before = [], None
        while True:
            got = page(conn, cid, kinds=kinds, before=before, limit=size)
            walked += [e.id for e in got]
            if len(got) < size:
                break
            before = got[-1].cursor
        assert walked == [row.id for row in everything if not kinds or row.kind in kinds]
    assert len(everything) == 600


def test_an_import_while_the_engine_runs_enrols_nobody(app: App) -> None:
    tick(app)  # the engine runs: its trigger cursor stands here
    with app.engine.begin() as conn:  # first orders of 40 customers, among 2,500 orders
        imported(conn, *(an_order(n, f"C{n % 40}", at=T0 - timedelta(days=n % 30))
                         for n in range(2_500)))
    with app.engine.begin() as conn:
        placed(conn, an_order(9_999, "live"))  # then an order arrives through the API
    tick(app)  # one tick passes the 2,500 imported orders and reaches the live one
    tick(app)
    with app.engine.connect() as conn:
        enrolled = set(conn.execute(select(Customer.external_id).join(
            FlowEnrollment, FlowEnrollment.customer_id == Customer.id)).scalars())
        newest = conn.execute(select(func.max(Touchpoint.id))).scalar_one()
    assert enrolled == {"live"}
    with app.engine.begin() as conn:
        assert dispatch(conn, {}, T0) == 0
        assert conn.execute(select(TriggerCursor.last_id)).scalar_one() == newest


def test_sample_data_puts_every_completed_order_on_the_timeline(conn: Connection) -> None:
    shop = SampleShop(ShopShape(customers=150), until=T0, seed=4)
    import_rows(conn, "customers", shop.customers())
    import_rows(conn, "orders", shop.orders())
    completed = conn.execute(select(Order.customer_id, func.count()).where(
        Order.status == "completed").group_by(Order.customer_id)).all()
    on_timeline = conn.execute(select(Touchpoint.customer_id, func.count()).where(
        Touchpoint.kind == "order_placed", Touchpoint.channel == "import")
        .group_by(Touchpoint.customer_id)).all()
    assert sorted(completed) == sorted(on_timeline) and len(completed) > 100


def test_lifecycle_import_orders_shows_them_in_lifecycle_timeline_table_and_json(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "orders.csv", ["order_id", "customer_id", "email", "ordered_at",
                                               "total", "status"], [
        ["O1", "C1", "c1@example.com", "2026-05-01T10:00:00+00:00", "12.50", "completed"],
        ["O2", "C1", "", "2026-05-20T10:00:00+00:00", "30", "completed"],
        ["O3", "C1", "", "2026-05-21T10:00:00+00:00", "5", "refunded"]])
    runner = CliRunner()
    done = runner.invoke(cli, ["import", "orders", str(path)], env=cli_env)
    assert done.exit_code == 0, done.output
    assert "2 completed orders added to their customers' timelines" in done.stdout
    table = runner.invoke(cli, ["timeline", "C1", "--kind", "order_placed"],
                          env={**cli_env, "COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert table.stdout.index("Order O2: $30.00 (order no. 2)") < table.stdout.index(
        "Order O1: $12.50 (order no. 1)")
    answer = json.loads(runner.invoke(cli, ["timeline", "C1", "--json"], env=cli_env).stdout)
    assert [(e["kind"], e["summary"], e["channel"]) for e in answer["entries"]
            if e["kind"] == "order_placed"] == [
        ("order_placed", "Order O2: $30.00 (order no. 2)", "import"),
        ("order_placed", "Order O1: $12.50 (order no. 1)", "import")]


def test_the_customer_page_counts_as_many_orders_as_its_timeline_shows(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        imported(conn, an_order(1), an_order(2, at=T0 - timedelta(days=20)),
                 an_order(3, status="refunded"), an_order(4, total="10.00", status="pending"))
        cid = customer_id(conn, "C1")
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example")
    text = web.get(f"/customers/{cid}", params={"kind": "order_placed"}).text
    shown = re.findall(r"Order (O\d): ", text)
    assert shown == ["O1", "O2"]
    assert re.search(r"<th scope=\"row\">Orders</th><td>2 ", text)


def app_before_0007(url: str) -> App:
    """An App on the database at ``url``, taken back to revision 0006 (before imported orders
    were on the timeline)."""
    from alembic import command

    app = App(replace(load_settings({}), database_url=make_url(url)))
    config = app.alembic_config()
    with app.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
    return app


def test_upgrading_a_database_puts_the_orders_imported_before_on_the_timeline(
        fresh_database_url: str) -> None:
    app = app_before_0007(fresh_database_url)
    with app.engine.begin() as conn:  # what an import stored before revision 0007
        cid = add_customer(conn, "C1", T0 - timedelta(days=90))
        add_order(conn, cid, T0 - timedelta(days=20), "12.5", items=[{"category": "tea"}])
        add_order(conn, cid, T0 - timedelta(days=10), 30)
        add_order(conn, cid, T0 - timedelta(days=5), 30, status="refunded")
    app.upgrade_database()
    app.upgrade_database()  # (nothing twice)
    with app.engine.connect() as conn:
        got = [(e.summary, e.data["categories"], e.channel)
               for e in page(conn, cid, kinds=["order_placed"])]
    app.close()
    assert [(summary.split(": ")[1], categories, channel)
            for summary, categories, channel in got] == [
        ("$30.00 (order no. 2)", [], "import"), ("$12.50 (order no. 1)", ["tea"], "import")]


def test_upgrading_a_database_whose_long_order_ids_share_a_source_key_does_not_fail(
        fresh_database_url: str) -> None:
    from sqlalchemy import insert

    from lifecycle.models import Order

    app = app_before_0007(fresh_database_url)
    with app.engine.begin() as conn:  # ids of 251 characters: "order_placed:" + id is cut at 255
        cid = add_customer(conn, "C1", T0 - timedelta(days=90))
        conn.execute(insert(Order), [
            {"external_id": "x" * 250 + str(n), "customer_id": cid,
             "ordered_at": T0 - timedelta(days=n), "total": 10, "currency": "USD",
             "status": "completed", "items": [], "created_at": T0, "updated_at": T0}
            for n in (1, 2)])
    app.upgrade_database()
    with app.engine.connect() as conn:
        placed = page(conn, cid, kinds=["order_placed"])
    app.close()
    assert len(placed) == 1  # one entry for the key they share, as an import writes it
