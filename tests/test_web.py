"""The web app's front page and health endpoint."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.imports import import_rows
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.staff import add_staff
from lifecycle.tasks import heartbeat
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from tests.factories import csrf_of

NOW = datetime(2026, 5, 1, 9, tzinfo=UTC)


def make_app(url: str) -> tuple[App, ManualClock]:
    clock = ManualClock(NOW)
    return App(replace(load_settings({}), database_url=make_url(url)), clock=clock), clock


def test_the_front_page_counts_what_the_database_holds_for_staff_only(fresh_database_url: str) -> None:
    app, _ = make_app(fresh_database_url)
    shop = SampleShop(ShopShape(customers=50), until=NOW)
    with app.engine.begin() as conn:
        import_rows(conn, "customers", shop.customers())
        orders = import_rows(conn, "orders", shop.orders())
    client = TestClient(create_app(app))
    public = client.get("/")
    assert public.status_code == 200 and "/login" in public.text
    assert "Customers" not in public.text and app.database_label() not in public.text
    assert str(app.settings.outbox_dir.resolve()) not in public.text
    with app.engine.begin() as conn:
        add_staff(conn, "sue@shop.example", "support", "correct horse battery", NOW)
    login = client.get("/login")
    assert client.post("/login", data={"email": "sue@shop.example",
                                       "password": "correct horse battery",
                                       "csrf": csrf_of(login.text)}).status_code == 200
    page = client.get("/")
    assert '<th scope="row">Customers</th><td>50</td>' in page.text
    assert f'<th scope="row">Orders</th><td>{orders.inserted}</td>' in page.text
    app.close()


def test_health_marks_processes_not_seen_lately_as_gone(fresh_database_url: str) -> None:
    app, clock = make_app(fresh_database_url)
    with app.engine.begin() as conn:
        heartbeat.record(conn, "scheduler", clock.now(), {})
    client = TestClient(create_app(app))
    [process] = client.get("/healthz").json()["processes"]
    assert process["kind"] == "scheduler" and process["alive"] is True
    clock.advance(timedelta(minutes=3))
    [process] = client.get("/healthz").json()["processes"]
    assert process["alive"] is False
    app.close()


def test_the_database_named_on_the_front_page_shows_no_password() -> None:
    """The front page needs no login; libpq also reads passwords from the URL's query."""
    url = ("postgresql://app:user-pw-81@db.internal/lc?password=query-pw-82"
           "&sslpassword=ssl-pw-83&sslmode=require")
    app = App(replace(load_settings({}), database_url=make_url(url)))
    label = app.database_label()
    for secret in ("user-pw-81", "query-pw-82", "ssl-pw-83"):
        assert secret not in label
    assert label == ("PostgreSQL postgresql://app:***@db.internal/lc?password=***"
                     "&sslmode=require&sslpassword=***")
