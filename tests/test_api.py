"""The ingest API: keys and scopes, upserts, order triggers, support and events, 422s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lifecycle.apikeys import create_key, revoke
from lifecycle.app import App
from lifecycle.flows.service import tick
from lifecycle.models import Customer, FlowEnrollment, Order, Touchpoint
from lifecycle.web import limits
from tests.conftest import raw_post
from tests.factories import WEB_T0 as T0

ALL = ["customers:write", "orders:write", "support:write", "events:write"]


def key(app: App, *scopes: str) -> dict[str, str]:
    with app.engine.begin() as conn:
        return {"Authorization": f"Bearer {create_key(conn, 'test', list(scopes), T0)}"}


def ann(n: int = 1, **changes: Any) -> dict[str, Any]:
    return {"customer_id": f"C{n}", "email": f"ann{n}@example.com", "first_name": "Ann",
            "timezone": "Europe/Berlin", "marketing_consent": True, **changes}


def order(n: int = 1, customer: int = 1, **changes: Any) -> dict[str, Any]:
    return {"order_id": f"O{n}", "customer_id": f"C{customer}",
            "ordered_at": "2026-06-03T11:00:00+02:00", "total": "42.50", "currency": "EUR",
            "items": [{"sku": "TEA-1", "name": "Sencha", "category": "tea", "quantity": 2,
                       "price": "21.25"}], **changes}


def count(app: App, model: Any, *where: Any) -> int:
    with app.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where))
                   .scalar_one())


def test_a_request_without_a_valid_key_or_scope_is_refused(app: App, web: TestClient) -> None:
    assert web.post("/api/v1/customers", json=[ann()]).status_code == 401
    assert web.post("/api/v1/customers", json=[ann()],
                    headers={"Authorization": "Bearer lc_00000000_nope"}).status_code == 401
    orders_only = key(app, "orders:write")
    answer = web.post("/api/v1/customers", json=[ann()], headers=orders_only)
    assert answer.status_code == 403 and "customers:write" in answer.json()["detail"]
    revoked = key(app, "customers:write")
    with app.engine.begin() as conn:
        assert revoke(conn, revoked["Authorization"].split("_")[1], T0)
    assert web.post("/api/v1/customers", json=[ann()], headers=revoked).status_code == 401
    assert count(app, Customer) == 0


def test_customers_are_upserted_by_their_id(app: App, web: TestClient) -> None:
    headers = key(app, *ALL)
    first = web.post("/api/v1/customers", json=[ann(1), ann(2)], headers=headers).json()
    assert (first["inserted"], first["updated"]) == (2, 0)
    again = web.post("/api/v1/customers", json=[ann(1), ann(2, first_name="Anna")],
                     headers=headers).json()
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 1, 1)


def test_a_new_completed_order_fires_order_triggers_once(app: App, web: TestClient) -> None:
    headers = key(app, *ALL)
    web.post("/api/v1/customers", json=[ann()], headers=headers)
    tick(app)  # the trigger cursor starts here: history before it fires nothing
    stored = web.post("/api/v1/orders", json=[order()], headers=headers).json()
    assert (stored["inserted"], stored["announced"]) == (1, 1)
    assert web.post("/api/v1/orders", json=[order()], headers=headers).json()["announced"] == 0
    with app.engine.connect() as conn:
        data = conn.execute(select(Touchpoint.data).where(
            Touchpoint.kind == "order_placed")).scalar_one()
    assert data == {"order_id": "O1", "nth": 1, "total": "42.50", "currency": "EUR",
                    "categories": ["tea"], "skus": ["TEA-1"]}
    tick(app)
    assert count(app, FlowEnrollment, FlowEnrollment.flow == "thank_you") == 1


def test_a_pending_order_fires_nothing_until_it_is_completed(app: App, web: TestClient) -> None:
    headers = key(app, *ALL)
    web.post("/api/v1/customers", json=[ann()], headers=headers)
    assert web.post("/api/v1/orders", json=[order(status="pending")],
                    headers=headers).json()["announced"] == 0
    assert web.post("/api/v1/orders", json=[order(status="completed")],
                    headers=headers).json()["announced"] == 1


@pytest.mark.parametrize(("path", "items", "loc"), [
    ("/api/v1/customers", [ann(1), ann(2, email="not-an-address")], ["body", 1, "email"]),
    ("/api/v1/customers", [ann(1), ann(2, shoe_size=42)], ["body", 1, "shoe_size"]),
    ("/api/v1/orders", [order(1), order(2, ordered_at="2026-06-03T11:00:00")],
     ["body", 1, "ordered_at"]),
    ("/api/v1/orders", [order(1), order(2, total="-3")], ["body", 1, "total"]),
    ("/api/v1/orders", [order(1), order(2, currency="EURO")], ["body", 1, "currency"]),
    ("/api/v1/support", [{"customer_id": "C1", "type": "fax", "summary": "x",
                          "occurred_at": "2026-06-03T10:00:00Z"}], ["body", 0, "type"]),
    ("/api/v1/events", [{"customer_id": "C404", "name": "viewed",
                         "occurred_at": "2026-06-03T10:00:00Z"}], ["body", 0, "customer_id"]),
])
def test_an_invalid_item_gets_422_naming_item_and_field_and_nothing_is_stored(
        app: App, web: TestClient, path: str, items: list[Any], loc: list[Any]) -> None:
    headers = key(app, *ALL)
    if "customers" not in path:
        web.post("/api/v1/customers", json=[ann()], headers=headers)
    before = (count(app, Customer), count(app, Order), count(app, Touchpoint))
    answer = web.post(path, json=items, headers=headers)
    assert answer.status_code == 422
    assert loc in [error["loc"][:3] for error in answer.json()["detail"]]
    assert (count(app, Customer), count(app, Order), count(app, Touchpoint)) == before


def test_support_contacts_and_events_land_on_the_timeline_once_per_id(
        app: App, web: TestClient) -> None:
    headers = key(app, *ALL)
    web.post("/api/v1/customers", json=[ann()], headers=headers)
    call = {"id": "T-7", "customer_id": "C1", "type": "call", "agent": "Bo",
            "summary": "Asked why the win-back mail came twice.",
            "occurred_at": "2026-06-03T10:00:00Z"}
    event = {"id": "E-1", "customer_id": "C1", "name": "wishlist.added",
             "occurred_at": "2026-06-03T10:05:00Z", "properties": {"sku": "TEA-9"}}
    for _ in range(2):
        web.post("/api/v1/support", json=[call], headers=headers)
        web.post("/api/v1/events", json=[event], headers=headers)
    with app.engine.connect() as conn:
        rows = conn.execute(select(Touchpoint.kind, Touchpoint.channel, Touchpoint.data).where(
            Touchpoint.kind.in_(("support", "event"))).order_by(Touchpoint.occurred_at)).all()
    assert [(r.kind, r.channel) for r in rows] == [("support", "support"), ("event", "api")]
    assert rows[0].data["summary"].startswith("Asked why") and rows[0].data["type"] == "call"
    assert rows[1].data == {"name": "wishlist.added", "id": "E-1",
                            "properties": {"sku": "TEA-9"}}


def test_the_openapi_document_describes_every_endpoint_and_the_key(app: App,
                                                                  web: TestClient) -> None:
    spec = web.get("/openapi.json", headers=key(app, "events:write")).json()
    assert {"/api/v1/customers", "/api/v1/orders", "/api/v1/support",
            "/api/v1/events", "/api/v1/reviews", "/api/v1/referrals"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_time_with_an_offset_postgresql_refuses_is_stored_in_utc_and_one_out_of_range_is_422(
        app: App, web: TestClient) -> None:
    """Schemathesis found +16:00 (Python allows offsets up to 24 hours, PostgreSQL to 15:59)."""
    headers = key(app, *ALL)
    web.post("/api/v1/customers", json=[ann()], headers=headers)
    call = {"customer_id": "C1", "type": "call", "summary": "Hi",
            "occurred_at": "2000-01-01T00:00:00+16:00"}
    assert web.post("/api/v1/support", json=[call], headers=headers).status_code == 200
    with app.engine.connect() as conn:
        stored = conn.execute(select(Touchpoint.occurred_at).where(Touchpoint.kind == "support")
                              ).scalar_one()
    assert stored.replace(tzinfo=None) == datetime(1999, 12, 31, 8)
    early = dict(call, occurred_at="0001-01-01T00:00:00+16:00")
    answer = web.post("/api/v1/support", json=[early], headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == [
        "body", 0, "occurred_at"]


def test_a_body_declared_larger_than_the_limit_is_refused_before_it_is_read_or_a_key_checked(
        app: App, served: int) -> None:
    """FastAPI reads a JSON body before the key is checked: without a bound anyone could post
    gigabytes here."""
    status, _ = raw_post(served, "/api/v1/reviews", {"Content-Type": "application/json",
                                                     "Content-Length": str(10**10)}, b"[")
    assert status == 413  # answered with 10 GB still unsent


def test_a_chunked_body_past_the_limit_is_refused_and_stores_nothing(
        app: App, served: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(limits.LIMITS, "/api/", limits.Limit(64 * 1024, 60.0))
    headers = {**key(app, "customers:write"), "Content-Type": "application/json"}

    def body() -> Iterator[bytes]:  # no Content-Length: refused as it passes the limit
        yield b"["
        for n in range(1000):
            yield (b"," if n else b"") + json.dumps(ann(n)).encode()
        yield b"]"

    answer = httpx.post(f"http://127.0.0.1:{served}/api/v1/customers", headers=headers,
                        content=body(), timeout=30)
    assert answer.status_code == 413
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Customer)).scalar_one() == 0


def test_a_body_sent_too_slowly_is_refused_in_bounded_time(
        app: App, served: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(limits.LIMITS, "/api/", limits.Limit(limits.LIMITS["/api/"].size, 0.5))
    status, seconds = raw_post(served, "/api/v1/reviews", {"Content-Type": "application/json",
                                                           "Content-Length": "100",
                                                           **key(app, "reviews:write")}, b"[")
    assert status == 408 and seconds < 10


def test_an_order_time_before_year_one_in_utc_is_422_not_a_server_error(
        app: App, web: TestClient) -> None:
    """0001-01-01T00:00+01:00 is a valid ISO time whose UTC moment Python cannot hold."""
    headers = key(app, *ALL)
    web.post("/api/v1/customers", json=[ann()], headers=headers)
    early = order(ordered_at="0001-01-01T00:00:00+01:00")
    answer = web.post("/api/v1/orders", json=[order(2), early], headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:2] == ["body", 1]
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Order)).scalar_one() == 0
