"""Exactly once when SendGrid's events come late: never resent while they lag, and a duplicate
that a late event reveals is recorded and shown (timeline, flow results, /healthz).

One process, a stopped clock, the SendGrid stand-in for the posts and the
signed Event Webhook (the web app's own route) for the events, whose times the
tests set: an event "occurred" when its ``timestamp`` says.  The fault tests
with real processes are in ``tests/test_faults_late_events.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.mail.rate import SendRate
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.models import Message, Touchpoint
from lifecycle.results import flow_results
from lifecycle.timeline import summary
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from tests.factories import add_campaign, webhook_headers, webhook_key
from tests.fake_sendgrid import FakeSendGrid

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
KEY = "SG.late"
URL = "/webhooks/sendgrid/events"
SETTLE = timedelta(seconds=600)
PRIVATE, PUBLIC = webhook_key()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(log_bodies=False).start()
    server.state.api_key = KEY
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeSendGrid) -> None:
    fake.state.reset()
    fake.state.hang_seconds = 2.0


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path, fake: FakeSendGrid) -> Iterator[App]:
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       outbox_dir=tmp_path / "outbox", secret_key="k" * 40,
                       mail_transport="sendgrid", sendgrid_api_key=KEY,
                       sendgrid_api_host=fake.url, send_timeout=0.5,
                       settle_seconds=SETTLE.total_seconds(),
                       sendgrid_webhook_public_key=PUBLIC, webhook_max_age=600)
    app = App(settings, clock=ManualClock(T0))
    yield app
    app.close()


@pytest.fixture
def web(app: App) -> TestClient:
    return TestClient(create_app(app))


def advance(app: App, seconds: float) -> None:
    app.clock.advance(timedelta(seconds=seconds))  # type: ignore[attr-defined]


def tick(app: App) -> list[int]:
    """One scheduler tick: settle, record duplicates, hand out; the ids handed out."""
    batches: list[list[int]] = []
    dispatch(app, batches.append)
    return [i for batch in batches for i in batch]


def events_of(fake: FakeSendGrid, mid: int, attempt: int | None = None) -> list[dict[str, Any]]:
    return [e for e in fake.state.events if e["lifecycle_message_id"] == str(mid)
            and (attempt is None or e["lifecycle_attempt"] == str(attempt))]


def at(event: dict[str, Any], when: datetime, name: str | None = None) -> dict[str, Any]:
    """``event`` as having happened at ``when`` (another event of the same mail if ``name``)."""
    changed = {**event, "timestamp": int(when.timestamp())}
    if name is not None:
        changed.update(event=name, sg_event_id=f"{event['sg_event_id']}-{name}")
    return changed


def post(web: TestClient, app: App, events: list[dict[str, Any]]) -> dict[str, int]:
    body = json.dumps(events).encode()
    answer = web.post(URL, content=body, headers=webhook_headers(
        PRIVATE, body, int(app.clock.now().timestamp())))
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def row(app: App, mid: int) -> Any:
    with app.engine.connect() as conn:
        return conn.execute(select(Message.__table__).where(Message.id == mid)).one()


def accepted(fake: FakeSendGrid) -> Counter[int]:
    return Counter(int(r["custom_args"]["lifecycle_message_id"]) for r in fake.state.accepted)


def unknown_outcome(app: App, fake: FakeSendGrid, mid: int) -> None:
    """SendGrid takes ``mid`` but its answer never comes: the worker records "no answer"."""
    fake.state.mode = "accept_hang"
    try:
        assert send_batch(app, [mid], rate=SendRate(0))["unanswered"] == 1
    finally:
        fake.state.mode = "ok"
    assert accepted(fake)[mid] == 1 and row(app, mid).status == "sending"


def test_each_post_names_its_attempt_so_that_every_event_says_which_post_it_is_about(
        app: App, fake: FakeSendGrid) -> None:
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
    tick(app)
    unknown_outcome(app, fake, mid)
    assert [e["lifecycle_attempt"] for e in events_of(fake, mid)] == ["1"]
    assert row(app, mid).attempts == 1


def test_an_unknown_outcome_is_not_sent_again_while_sendgrids_events_lag_behind_it(
        app: App, web: TestClient, fake: FakeSendGrid) -> None:
    with app.engine.begin() as conn:
        other, mid = add_campaign(conn, 2, T0)
    tick(app)
    assert send_batch(app, [other], rate=SendRate(0))["sent"] == 1  # at T0
    advance(app, 5)
    unknown_outcome(app, fake, mid)  # its lease ends now, T0 + 5 s
    ended = T0 + timedelta(seconds=5)
    # Twice the settle window later the webhook is still delivering events from before that
    # lease ended (it lags): the mail's own event may still be on its way.
    advance(app, 2 * SETTLE.total_seconds())
    post(web, app, [at(e, T0) for e in events_of(fake, other)])
    assert tick(app) == [] and row(app, mid).status == "sending"
    assert accepted(fake)[mid] == 1
    # Once an event from after the lease's end has come and the mail's has not, it went
    # nowhere that we will hear of: it is sent again.
    [processed] = events_of(fake, other)
    post(web, app, [at(processed, ended + timedelta(seconds=1), "delivered")])
    assert tick(app) == [mid]
    assert row(app, mid).resent_at == app.clock.now()


def test_a_late_event_of_the_first_attempt_records_the_mail_as_sent_twice_and_shows_it(
        app: App, web: TestClient, fake: FakeSendGrid) -> None:
    with app.engine.begin() as conn:
        other, mid = add_campaign(conn, 2, T0)
    tick(app)
    unknown_outcome(app, fake, mid)  # attempt 1: SendGrid has it, we do not know
    late = events_of(fake, mid, attempt=1)  # its event is held up on SendGrid's side
    advance(app, SETTLE.total_seconds() + 1)
    send_batch(app, [other], rate=SendRate(0))  # the webhook flows past the lease's end
    post(web, app, [at(e, app.clock.now()) for e in events_of(fake, other)])
    assert tick(app) == [mid]
    assert send_batch(app, [mid], rate=SendRate(0))["sent"] == 1  # attempt 2
    post(web, app, [at(e, app.clock.now()) for e in events_of(fake, mid, attempt=2)])
    assert tick(app) == [] and row(app, mid).duplicate_at is None  # its own event: no news
    assert accepted(fake)[mid] == 2  # the stand-in took it twice: the database must say so

    advance(app, 60)
    answer = post(web, app, late)  # attempt 1's event, late
    assert answer["stored"] == 1
    tick(app)
    found = row(app, mid)
    assert found.status == "sent" and found.sent_attempt == 2
    assert found.duplicate_at == app.clock.now()
    assert found.attempt_log[-1]["outcome"] == "sent twice"
    assert post(web, app, late)["duplicates"] == 1  # SendGrid retries the batch
    tick(app)
    with app.engine.connect() as conn:
        twice = conn.execute(select(Touchpoint.kind, Touchpoint.data).where(
            Touchpoint.message_id == mid, Touchpoint.kind == "email_sent_twice")).all()
        results = flow_results(conn, "thank_you", T0 - timedelta(days=1),
                               T0 + timedelta(days=1), timedelta(days=7))
    assert len(twice) == 1  # recorded once, however often the event comes
    assert summary(*twice[0]).startswith("Mail sent twice: SendGrid took attempts 1 and 2")
    assert results.total.counts["duplicates"] == 1 and results.total.counts["sent"] == 2
    assert {r.step: r.counts["duplicates"] for r in results.rows} == {"thanks": 1}
    assert web.get("/healthz").json()["mails_sent_twice"] == 1
    assert accepted(fake)[other] == 1


def test_a_mail_settled_by_its_event_is_not_a_duplicate_when_more_events_of_that_post_come(
        app: App, web: TestClient, fake: FakeSendGrid) -> None:
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
    tick(app)
    unknown_outcome(app, fake, mid)
    [processed] = events_of(fake, mid)
    post(web, app, [processed])  # on time
    advance(app, 1)
    assert tick(app) == []
    found = row(app, mid)
    assert found.status == "sent" and found.sent_attempt == 1 and found.resent_at is None
    post(web, app, [at(processed, app.clock.now(), "delivered")])
    tick(app)
    assert row(app, mid).duplicate_at is None
    assert web.get("/healthz").json()["mails_sent_twice"] == 0
    assert accepted(fake)[mid] == 1


def test_an_event_stamped_ahead_of_our_clock_counts_from_when_it_reached_us(
        app: App, web: TestClient, fake: FakeSendGrid) -> None:
    with app.engine.begin() as conn:
        other, first, mid = add_campaign(conn, 3, T0)
    tick(app)
    send_batch(app, [other], rate=SendRate(0))
    unknown_outcome(app, fake, first)  # its lease ends at T0
    # The other mail's event reaches us at T0 + 2 s stamped an hour ahead (a clock running
    # fast); a third mail, whose outcome is unknown too, ends its lease at T0 + 5 s.
    advance(app, 2)
    post(web, app, [at(e, T0 + timedelta(hours=1)) for e in events_of(fake, other)])
    advance(app, 3)
    unknown_outcome(app, fake, mid)
    advance(app, 2 * SETTLE.total_seconds())
    # The event came after the first lease ended, but before the second: only the first
    # mail's own event would have come by now.
    assert tick(app) == [first]
    assert row(app, mid).status == "sending" and accepted(fake)[mid] == 1
