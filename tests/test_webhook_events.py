"""SendGrid's signed Event Webhook: verify, dedupe, then apply to timelines and suppressions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Message, ProviderEvent, Suppression, Touchpoint, email_hash
from lifecycle.timeutil import UTC
from lifecycle.web import limits
from lifecycle.web.app import create_app
from tests.conftest import raw_post
from tests.factories import add_campaign, webhook_headers, webhook_key

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
URL = "/webhooks/sendgrid/events"
PRIVATE, PUBLIC = webhook_key()


def signed(body: bytes, at: datetime = T0, key: ec.EllipticCurvePrivateKey = PRIVATE
           ) -> dict[str, str]:
    return webhook_headers(key, body, int(at.timestamp()))


def make_app(url: str, tmp_path: Path, **changes: Any) -> App:
    values: dict[str, Any] = {"sendgrid_webhook_public_key": PUBLIC, "webhook_max_age": 600,
                              **changes}
    settings = replace(load_settings({}), database_url=make_url(url), secret_key="k" * 40,
                       outbox_dir=tmp_path / "outbox", **values)
    return App(settings, clock=ManualClock(T0))


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path) -> Iterator[App]:
    app = make_app(fresh_database_url, tmp_path)
    yield app
    app.close()


@pytest.fixture
def web(app: App) -> TestClient:
    return TestClient(create_app(app))


def a_sent_mail(app: App) -> int:
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    return mid


def event(mid: int | None, name: str, n: int, **fields: Any) -> dict[str, Any]:
    found = {"event": name, "sg_event_id": f"ev-{name}-{n}", "sg_message_id": "sg1.filter",
             "email": "b0@example.com", "timestamp": int(T0.timestamp()) + n, **fields}
    if mid is not None:
        found["lifecycle_message_id"] = str(mid)
    return found


def post(web: TestClient, events: Any, at: datetime = T0) -> Any:
    body = json.dumps(events).encode()
    return web.post(URL, content=body, headers=signed(body, at))


def timeline(app: App) -> list[tuple[str, dict[str, Any]]]:
    with app.engine.connect() as conn:
        return [(kind, data) for kind, data in conn.execute(
            select(Touchpoint.kind, Touchpoint.data).order_by(Touchpoint.occurred_at,
                                                              Touchpoint.id))]


def stored(app: App) -> int:
    with app.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ProviderEvent)).scalar_one())


def suppressions(app: App) -> set[tuple[str, str, str]]:
    with app.engine.connect() as conn:
        return {(r.email, r.scope, r.reason) for r in conn.execute(select(Suppression.__table__))}


def test_a_mail_is_delivered_opened_and_clicked_once_even_when_each_post_comes_twice(
        app: App, web: TestClient) -> None:
    mid = a_sent_mail(app)
    posts = [[event(mid, "processed", 1), event(mid, "delivered", 2)],
             [event(mid, "open", 3, useragent="Mozilla/5.0", ip="192.0.2.1")],
             [event(mid, "click", 4, url="https://shop.example/tea")]]
    for events in posts:
        first = post(web, events)
        assert first.status_code == 200 and first.json()["stored"] == len(events)
        again = post(web, events)  # SendGrid retries a batch
        assert again.json()["duplicates"] == len(events) and again.json()["stored"] == 0
    kinds = [kind for kind, _ in timeline(app)]
    assert kinds == ["email_sent", "email_processed", "email_delivered", "email_opened",
                     "email_clicked"]
    click = timeline(app)[-1][1]
    assert (click["url"], click["flow"], click["step"]) == ("https://shop.example/tea",
                                                          "thank_you", "thanks")
    assert stored(app) == 4


def test_a_single_changed_byte_is_refused_and_nothing_is_stored(app: App,
                                                                 web: TestClient) -> None:
    mid = a_sent_mail(app)
    body = json.dumps([event(mid, "delivered", 1)]).encode()
    headers = signed(body)
    altered = body.replace(b"delivered", b"delivereD")
    answer = web.post(URL, content=altered, headers=headers)
    assert answer.status_code == 403 and "does not match" in answer.json()["error"]
    assert stored(app) == 0 and [k for k, _ in timeline(app)] == ["email_sent"]
    assert web.post(URL, content=body, headers=headers).status_code == 200  # the original is fine


def test_a_post_signed_by_another_key_or_not_signed_is_refused(app: App, web: TestClient) -> None:
    body = json.dumps([event(None, "delivered", 1)]).encode()
    other = ec.generate_private_key(ec.SECP256R1())
    assert web.post(URL, content=body, headers=signed(body, key=other)).status_code == 403
    answer = web.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 403 and "headers are required" in answer.json()["error"]
    assert stored(app) == 0


def test_an_old_post_is_refused_as_a_replay_unless_the_age_check_is_off(
        fresh_database_url: str, tmp_path: Path) -> None:
    body = json.dumps([event(None, "delivered", 1)]).encode()
    old = signed(body, at=T0 - timedelta(hours=1))
    strict = make_app(fresh_database_url, tmp_path)
    answer = TestClient(create_app(strict)).post(URL, content=body, headers=old)
    assert answer.status_code == 403 and "LIFECYCLE_WEBHOOK_MAX_AGE" in answer.json()["error"]
    strict.close()
    relaxed = make_app(fresh_database_url, tmp_path, webhook_max_age=0)
    assert TestClient(create_app(relaxed)).post(URL, content=body, headers=old).status_code == 200
    relaxed.close()


def test_without_a_public_key_every_post_is_refused(fresh_database_url: str,
                                                    tmp_path: Path) -> None:
    app = make_app(fresh_database_url, tmp_path, sendgrid_webhook_public_key=None)
    body = json.dumps([event(None, "delivered", 1)]).encode()
    answer = TestClient(create_app(app)).post(URL, content=body, headers=signed(body))
    assert answer.status_code == 403 and "SENDGRID_WEBHOOK_PUBLIC_KEY" in answer.json()["error"]
    assert stored(app) == 0
    app.close()


@pytest.mark.parametrize(("body", "problem"), [
    (b"[{\"event\": ", "not JSON"),
    (b"\xff\xfe[]", "not JSON"),
    (b"{\"event\": \"delivered\"}", "JSON array"),
])
def test_a_signed_body_that_is_not_a_json_array_gets_400_and_nothing_is_stored(
        app: App, web: TestClient, body: bytes, problem: str) -> None:
    answer = web.post(URL, content=body, headers=signed(body))
    assert answer.status_code == 400 and problem in answer.json()["error"]
    assert stored(app) == 0


def test_apple_machine_opens_are_kept_apart_from_human_opens(app: App, web: TestClient) -> None:
    mid = a_sent_mail(app)
    post(web, [event(mid, "open", 1, sg_machine_open=True), event(mid, "open", 2)])
    opens = [(kind, data["machine"]) for kind, data in timeline(app) if "open" in kind]
    assert opens == [("email_machine_opened", True), ("email_opened", False)]


def test_hard_bounce_spam_report_and_unsubscribe_suppress_at_once_but_blocked_does_not(
        app: App, web: TestClient) -> None:
    mid = a_sent_mail(app)
    receipt = post(web, [
        event(mid, "bounce", 1, type="blocked", reason="try later", email="soft@example.com"),
        event(mid, "bounce", 2, type="bounce", reason="550 no such user",
              email="gone@example.com"),
        event(mid, "spamreport", 3, email="angry@example.com"),
        event(mid, "unsubscribe", 4, email="done@example.com"),
        event(None, "dropped", 5, reason="Bounced Address", email="dead@example.com"),
    ]).json()
    assert receipt["suppressed"] == 4 and receipt["unmatched"] == 1
    assert suppressions(app) == {("gone@example.com", "all", "hard_bounce"),
                                 ("angry@example.com", "all", "spam_report"),
                                 ("done@example.com", "marketing", "unsubscribe"),
                                 ("dead@example.com", "all", "hard_bounce")}
    bounced = [data for kind, data in timeline(app) if kind == "email_bounced"]
    assert [(b["type"], b["reason"]) for b in bounced] == [("blocked", "try later"),
                                                           ("bounce", "550 no such user")]


def test_a_bounce_stops_the_next_mail_to_that_address_at_send_time(app: App,
                                                                   web: TestClient) -> None:
    mid = a_sent_mail(app)
    post(web, [event(mid, "bounce", 1, type="bounce", reason="550")])
    with app.engine.begin() as conn:
        conn.execute(Message.__table__.insert().values(
            idempotency_key="next", customer_id=select(Message.customer_id).where(
                Message.id == mid).scalar_subquery(), flow="thank_you", step="thanks",
            template="thank_you", to_email="b0@example.com", status="scheduled", due_at=T0,
            attempts=0, context={"order_id": "o0"}, created_at=T0, updated_at=T0))
    ids: list[int] = []
    dispatch(app, ids.extend)
    outcome = send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))
    assert outcome["suppressed"] == 1 and not outcome["sent"]


def test_events_for_mail_we_do_not_know_are_kept_without_a_timeline_entry(
        app: App, web: TestClient) -> None:
    receipt = post(web, [event(None, "delivered", 1), event(999999, "open", 2),
                         {"event": "delivered"}, "not an event"]).json()
    assert (receipt["stored"], receipt["unmatched"], receipt["ignored"]) == (2, 2, 2)
    assert stored(app) == 2 and timeline(app) == []


def test_a_group_resubscribe_lifts_the_group_unsubscribe_in_either_order_of_arrival(
        app: App, web: TestClient) -> None:
    a_sent_mail(app)
    unsubscribed = event(None, "group_unsubscribe", 1, asm_group_id=7)
    resubscribed = event(None, "group_resubscribe", 2, asm_group_id=7)
    post(web, [unsubscribed])
    assert suppressions(app) == {("b0@example.com", "marketing", "unsubscribe")}
    assert post(web, [resubscribed]).json()["lifted"] == 1
    assert suppressions(app) == set()
    # Out of order: a newer resubscribe first, then an older unsubscribe: stays subscribed.
    later_resubscribe = event(None, "group_resubscribe", 20, asm_group_id=7)
    older_unsubscribe = event(None, "group_unsubscribe", 10, asm_group_id=7)
    post(web, [later_resubscribe])
    assert post(web, [older_unsubscribe]).json()["suppressed"] == 0
    assert suppressions(app) == set()
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Suppression).where(
            Suppression.email_hash == email_hash("B0@example.com"))).scalar_one() == 0


def test_a_nul_character_in_an_event_is_dropped_not_fatal(app: App, web: TestClient) -> None:
    mid = a_sent_mail(app)
    answer = post(web, [event(mid, "click", 1, url="https://shop.example/\x00tea")])
    assert answer.status_code == 200 and answer.json()["touchpoints"] == 1
    assert timeline(app)[-1][1]["url"] == "https://shop.example/tea"


def test_a_post_declared_larger_than_any_event_batch_is_refused_before_it_is_read(
        app: App, served: int) -> None:
    """SendGrid posts batches of up to 768 KB; anyone may post here before the signature is
    checked, so the body is bounded before it is read."""
    status, _ = raw_post(served, URL, {"Content-Type": "application/json",
                                       "Content-Length": str(10**9), **signed(b"[]")}, b"[")
    assert status == 413  # answered with a gigabyte still unsent
    assert stored(app) == 0


def test_a_post_sent_too_slowly_is_refused_in_bounded_time(
        app: App, served: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(limits.LIMITS, URL, limits.Limit(limits.LIMITS[URL].size, 0.5))
    status, seconds = raw_post(served, URL, {"Content-Type": "application/json",
                                             "Content-Length": "100", **signed(b"[]")}, b"[")
    assert status == 408 and seconds < 10
    assert stored(app) == 0
