"""Flow triggers read every touchpoint once, whatever order transactions commit in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.flows.service import catalogue
from lifecycle.flows.triggers import dispatch
from lifecycle.models import Customer, FlowEnrollment, TriggerCursor
from lifecycle.orders import place_orders
from tests.factories import WEB_T0 as T0
from tests.factories import add_customer, add_touchpoint


def an_order(n: int, customer: str) -> dict[str, str]:
    return {"order_id": f"O{n}", "customer_id": customer, "email": f"{customer}@example.com",
            "ordered_at": (T0 - timedelta(hours=1)).isoformat(), "total": "42.50"}


def enrolled(app: App) -> set[tuple[str, str]]:
    with app.engine.connect() as conn:
        rows = conn.execute(select(Customer.external_id, FlowEnrollment.flow).join(
            FlowEnrollment, FlowEnrollment.customer_id == Customer.id)).all()
    return {(customer, flow) for customer, flow in rows}


def test_an_order_whose_transaction_commits_after_a_later_touchpoint_still_fires_its_flows(
        app: App, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite commits one writer at a time: a later id never commits first")
    flows = catalogue(app).flows
    with app.engine.begin() as conn:
        other = add_customer(conn, "C2", T0 - timedelta(days=30))
        dispatch(conn, flows, T0)  # the engine runs: its cursor stands here
    slow = app.engine.connect()
    slow.begin()  # an order request still refreshing its customer's segments
    place_orders(slow, [an_order(1, "C1")], ManualClock(T0), refresh=False)
    with app.engine.begin() as conn:  # meanwhile a quicker transaction commits a later id
        add_touchpoint(conn, other, "event", T0, name="browsed")
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)  # the order is not visible yet
    slow.commit()
    slow.close()
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)
    assert ("C1", "thank_you") in enrolled(app)


def test_touchpoints_from_before_the_commit_order_are_read_first_by_id(
        app: App, backend: str) -> None:
    """A database upgraded to revision 0008 keeps its id cursor until the rows without a
    transaction id are read, then goes on in commit order."""
    flows = catalogue(app).flows
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)
        conn.execute(text("UPDATE flow_trigger_cursors SET last_txid = NULL, last_id = "
                          "(SELECT COALESCE(MAX(id), 0) FROM touchpoints)"))
        place_orders(conn, [an_order(1, "C1")], ManualClock(T0), refresh=False)
        conn.execute(text("UPDATE touchpoints SET txid = NULL"))  # written before 0008
    with app.engine.begin() as conn:
        place_orders(conn, [an_order(2, "C2")], ManualClock(T0), refresh=False)
    for _ in range(2):
        with app.engine.begin() as conn:
            dispatch(conn, flows, T0)
    assert {("C1", "thank_you"), ("C2", "thank_you")} <= enrolled(app)
    with app.engine.connect() as conn:
        cursor = conn.execute(select(TriggerCursor.last_txid)).scalar_one()
    assert (cursor is None) == (backend == "sqlite")


def test_a_long_transaction_in_another_database_on_the_server_does_not_hold_triggers_back(
        app: App, backend: str) -> None:
    """Transaction ids are numbered across a PostgreSQL server; only this database's running
    transactions can still write touchpoints, so only they hold the trigger cursor."""
    if backend == "sqlite":
        pytest.skip("SQLite has no other databases sharing transaction ids")
    from lifecycle.db import make_engine
    from tests.conftest import POSTGRES_ADMIN_URL

    flows = catalogue(app).flows
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)  # the engine runs: its cursor stands here
    elsewhere = make_engine(POSTGRES_ADMIN_URL)
    try:
        with elsewhere.connect() as other:
            other.begin()  # a report on another database of the server, holding an id
            other.execute(text("SELECT pg_current_xact_id()"))
            with app.engine.begin() as conn:
                place_orders(conn, [an_order(1, "C1")], ManualClock(T0), refresh=False)
            with app.engine.begin() as conn:
                dispatch(conn, flows, T0)
            assert ("C1", "thank_you") in enrolled(app)
            other.rollback()
    finally:
        elsewhere.dispose()


def test_a_transaction_on_this_database_still_running_holds_later_touchpoints_back(
        app: App, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite admits one writer at a time: none runs while the engine reads")
    flows = catalogue(app).flows
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)
    slow = app.engine.connect()
    slow.begin()
    slow.execute(text("SELECT pg_current_xact_id()"))  # started before the order, still open
    with app.engine.begin() as conn:
        place_orders(conn, [an_order(1, "C1")], ManualClock(T0), refresh=False)
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)
    assert ("C1", "thank_you") not in enrolled(app)
    slow.rollback()
    slow.close()
    with app.engine.begin() as conn:
        dispatch(conn, flows, T0)
    assert ("C1", "thank_you") in enrolled(app)
