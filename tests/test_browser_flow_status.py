"""A manager pauses a flow and switches it back on, in a real browser (see tests/test_browser.py
for the fixtures); the enrolled customers exit with the reason the page promised."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.app import App
from lifecycle.flows.engine import enroll
from lifecycle.flows.service import catalogue
from lifecycle.models import FlowEnrollment, FlowStatusChange
from tests.factories import WEB_T0 as T0
from tests.factories import account, add_customer
from tests.test_browser import log_in, page, site  # noqa: F401  (fixtures)

pytest.importorskip("playwright.sync_api")


def test_a_manager_pauses_a_flow_letting_its_customers_exit_then_makes_it_live(
        app: App, page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with app.engine.begin() as conn:
        cid = add_customer(conn, "ann", T0 - timedelta(days=9), timezone="UTC")
        enroll(conn, catalogue(app).flows["thank_you"], cid, "tp:1", T0)
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")
    page.goto("/flows/thank_you")
    status = page.get_by_role("region", name="Status: live")
    assert "As the file says" in status.inner_text()
    group = page.get_by_role("group", name="Pause: what becomes of the 1 enrolled customers?")
    group.get_by_label("They exit the flow now").check()
    page.shots("before-pause")
    page.get_by_role("button", name="Pause").click()
    page.wait_for_url("**/flows/thank_you#status")
    status = page.get_by_role("region", name="Status: paused")
    text = status.inner_text()
    assert "Set on this page by max@shop.example" in text and "enrolled customers exited" in text
    page.shots("paused")
    page.get_by_role("button", name="Make live").click()
    page.wait_for_url("**/flows/thank_you#status")
    assert page.get_by_role("region", name="Status: live").is_visible()
    page.shots("live-again")
    with app.engine.connect() as conn:
        ended = conn.execute(select(FlowEnrollment.status, FlowEnrollment.exit_reason)).one()
        switches = conn.execute(select(FlowStatusChange.status, FlowStatusChange.on_pause,
                                       FlowStatusChange.changed_by)
                                .order_by(FlowStatusChange.id)).all()
    assert tuple(ended) == ("exited", "the flow was paused")
    assert [tuple(s) for s in switches] == [("paused", "exit", "max@shop.example"),
                                           ("live", None, "max@shop.example")]
