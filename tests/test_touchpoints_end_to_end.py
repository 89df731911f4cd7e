"""A mail through the SendGrid stand-in, then every webhook twice: each step once on the timeline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.links import inbound_key
from lifecycle.mail.rate import SendRate
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.models import Touchpoint
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from tests.factories import add_campaign, webhook_headers, webhook_key
from tests.fake_sendgrid import FakeSendGrid

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
KEY = "SG.test"  # the stand-in's default key
SECRET = "e" * 40
PRIVATE, PUBLIC = webhook_key()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(log_bodies=True).start()
    yield server
    server.stop()


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path, fake: FakeSendGrid) -> Iterator[App]:
    fake.state.reset()
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       outbox_dir=tmp_path / "outbox", secret_key=SECRET,
                       mail_transport="sendgrid", sendgrid_api_key=KEY,
                       sendgrid_api_host=fake.url, sendgrid_webhook_public_key=PUBLIC,
                       webhook_max_age=0)
    app = App(settings, clock=ManualClock(T0))
    yield app
    app.close()


def test_delivered_opened_clicked_replied_and_unsubscribed_each_land_once(
        app: App, fake: FakeSendGrid) -> None:
    with app.engine.begin() as conn:
        add_campaign(conn, 1, T0)
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, rate=SendRate(0))["sent"] == 1
    [accepted] = fake.state.accepted
    payload = accepted["payload"]
    processed = fake.state.events[0]
    web = TestClient(create_app(app))

    def event(name: str, **more: Any) -> dict[str, Any]:
        return {**processed, "event": name, "sg_event_id": f"{processed['sg_event_id']}-{name}",
                **more}

    body = json.dumps([processed, event("delivered"), event("open"),
                       event("click", url="https://shop.example/tea")]).encode()
    reply_to = payload["reply_to"]["email"]
    unsubscribe = re.match(r"<([^>]+)>", payload["headers"]["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
    for _ in range(2):  # every webhook posted twice
        assert web.post("/webhooks/sendgrid/events", content=body,
                        headers=webhook_headers(PRIVATE, body, int(T0.timestamp()))
                        ).status_code == 200
        assert web.post(f"/webhooks/sendgrid/inbound?key={inbound_key(SECRET)}", files={
            "from": (None, "b0@example.com"), "to": (None, reply_to),
            "subject": (None, "Re: " + payload["subject"]),
            "headers": (None, "Message-ID: <reply-1@mail.example>\n"),
            "text": (None, "Lovely, thanks!\n\nOn Wed, the shop wrote:\n> Thank you")},
        ).json()["matched"] is True
        assert web.post(unsubscribe.removeprefix(app.settings.base_url),
                        content=b"List-Unsubscribe=One-Click", headers={
                            "Content-Type": "application/x-www-form-urlencoded"}
                        ).status_code == 200
    altered = body.replace(b"delivered", b"Delivered")
    assert web.post("/webhooks/sendgrid/events", content=altered,
                    headers=webhook_headers(PRIVATE, body, int(T0.timestamp()))
                    ).status_code == 403
    with app.engine.connect() as conn:
        kinds = list(conn.execute(select(Touchpoint.kind).order_by(Touchpoint.id)).scalars())
    assert kinds == ["email_sent", "email_processed", "email_delivered", "email_opened",
                     "email_clicked", "replied", "unsubscribed"]
