"""The outbox and one mail's sending: claims, leases, re-checks at send time, failures."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.mail.compose import Outgoing
from lifecycle.mail.outbox import QUEUE_LEASE, Outbox
from lifecycle.mail.sending import MAX_ATTEMPTS, dispatch, send_one
from lifecycle.mail.transports import FileTransport, SendError
from lifecycle.models import (
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    Suppression,
    Touchpoint,
    email_hash,
)
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)


@dataclass
class Refusing:
    """A transport that refuses every mail (a provider outage)."""

    idempotent: bool = False
    settles_by_events: bool = False
    calls: list[int] = field(default_factory=list)

    def send(self, mail: Outgoing) -> str:
        self.calls.append(mail.message_id)
        raise SendError("connection refused")


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      outbox_dir=tmp_path / "outbox", secret_key="k" * 40),
              clock=ManualClock(T0))
    yield app
    app.close()


def a_mail(app: App, template: str = "thank_you", tz: str = "UTC", **values: object) -> int:
    with app.engine.begin() as conn:
        cid = add_customer(conn, f"c{template}{tz}", T0 - timedelta(days=30), timezone=tz)
        add_order(conn, cid, T0 - timedelta(days=1), "20.00")
        row = {"idempotency_key": f"k:{cid}", "customer_id": cid, "flow": "thank_you",
               "step": "thanks", "template": template, "to_email": f"c{template}{tz}@example.com",
               "status": "scheduled", "due_at": T0, "attempts": 0, "context": {},
               "created_at": T0, "updated_at": T0, **values}
        return conn.execute(insert(Message).values(**row).returning(Message.id)).scalar_one()


def row(app: App, message_id: int):  # type: ignore[no-untyped-def]
    with app.engine.connect() as conn:
        return conn.execute(select(Message).where(Message.id == message_id)).one()


def timeline(app: App, message_id: int) -> list[str]:
    with app.engine.connect() as conn:
        return list(conn.execute(select(Touchpoint.kind).where(
            Touchpoint.message_id == message_id)).scalars())


def test_a_due_mail_is_handed_out_once_and_sent_once(app: App) -> None:
    mid = a_mail(app)
    queued: list[list[int]] = []
    assert dispatch(app, queued.append) == 1 and dispatch(app, queued.append) == 0
    assert send_one(app, mid) == "sent"
    assert send_one(app, mid) == "skipped"  # a duplicate delivery of the id does nothing
    sent = row(app, mid)
    assert (sent.status, sent.attempts, sent.sent_at) == ("sent", 1, T0)
    assert timeline(app, mid) == ["email_sent"]
    assert len(list(app.settings.outbox_dir.rglob("*.eml"))) == 1


def test_a_mail_lost_by_the_broker_is_handed_out_again_after_its_lease(app: App) -> None:
    mid = a_mail(app)
    lost: list[list[int]] = []
    dispatch(app, lost.append)  # the broker loses it
    app.clock.advance(QUEUE_LEASE - timedelta(seconds=1))  # type: ignore[attr-defined]
    assert dispatch(app, lost.append) == 0
    app.clock.advance(timedelta(seconds=2))  # type: ignore[attr-defined]
    again: list[list[int]] = []
    assert dispatch(app, again.append) == 1 and again == [[mid]]
    assert send_one(app, mid) == "sent"


def test_two_claims_on_one_mail_give_it_to_one_worker(app: App) -> None:
    mid = a_mail(app)
    dispatch(app, lambda _ids: None)
    with app.engine.begin() as conn:
        assert [row.id for row in Outbox(conn).claim([mid], T0)] == [mid]
    with app.engine.begin() as conn:
        assert Outbox(conn).claim([mid], T0) == []


def test_an_unsubscribe_after_the_decision_stops_the_mail_at_send_time(app: App) -> None:
    mid = a_mail(app, context={"marketing": True})
    with app.engine.begin() as conn:
        conn.execute(insert(Suppression).values(
            email_hash=email_hash("cthank_youUTC@example.com"), scope="marketing",
            reason="unsubscribe", source="test", created_at=T0))
    dispatch(app, lambda _ids: None)
    assert send_one(app, mid) == "suppressed"
    assert (row(app, mid).status, row(app, mid).last_error) == ("suppressed", "unsubscribe")


def test_a_mail_of_an_enrollment_that_exited_is_cancelled(app: App) -> None:
    mid = a_mail(app)
    cid = row(app, mid).customer_id
    with app.engine.begin() as conn:
        eid = conn.execute(insert(FlowEnrollment).values(
            customer_id=cid, flow="thank_you", entry_key="e", status=EnrollmentStatus.EXITED.value,
            exit_reason="goal: ordered", enrolled_at=T0, context={}).returning(FlowEnrollment.id)
        ).scalar_one()
        conn.execute(update(Message).where(Message.id == mid).values(enrollment_id=eid))
    dispatch(app, lambda _ids: None)
    assert send_one(app, mid) == "cancelled"
    assert row(app, mid).last_error == "the flow ended: goal: ordered"


def test_a_mail_that_comes_due_at_night_waits_for_the_morning(app: App) -> None:
    mid = a_mail(app, tz="Asia/Tokyo")  # 21:00 in Tokyo
    dispatch(app, lambda _ids: None)
    assert send_one(app, mid) == "later"
    assert row(app, mid).status == "scheduled"
    assert row(app, mid).due_at == datetime(2026, 6, 3, 23, tzinfo=UTC)  # 08:00 in Tokyo


def test_a_template_error_fails_that_mail_with_the_reason_on_the_timeline(app: App,
                                                                           tmp_path: Path) -> None:
    broken = tmp_path / "templates"
    (broken / "oops").mkdir(parents=True)
    (broken / "oops" / "subject.txt").write_text("Hello {{ customer.nickname }}\n")
    (broken / "oops" / "body.txt").write_text("x\n")
    app.settings = replace(app.settings, templates_dir=broken)
    bad, good = a_mail(app, template="oops"), a_mail(app, tz="Europe/Paris")
    app.settings = replace(app.settings, templates_dir=load_settings({}).templates_dir)
    dispatch(app, lambda _ids: None)
    app.settings = replace(app.settings, templates_dir=broken)
    assert send_one(app, bad) == "failed"
    app.settings = replace(app.settings, templates_dir=load_settings({}).templates_dir)
    assert send_one(app, good) == "sent"
    failed = row(app, bad)
    assert failed.status == "failed" and "oops/subject.txt:1" in failed.last_error
    assert "nickname" in failed.last_error and timeline(app, bad) == ["email_failed"]


def test_a_refusing_transport_retries_with_growing_waits_then_fails_for_good(app: App) -> None:
    mid = a_mail(app)
    transport = Refusing()
    waits = []
    for _ in range(MAX_ATTEMPTS):
        dispatch(app, lambda _ids: None, transport)
        outcome = send_one(app, mid, transport)
        current = row(app, mid)
        if outcome == "later":
            waits.append(current.due_at - app.clock.now())
            app.clock.advance(current.due_at - app.clock.now())  # type: ignore[attr-defined]
    assert outcome == "failed" and len(transport.calls) == MAX_ATTEMPTS
    base = app.settings.retry_base_seconds
    for n, wait in enumerate(waits, start=1):  # doubling, with jitter of +-50 %
        assert 0.5 * base * 2 ** (n - 1) <= wait.total_seconds() <= 1.5 * base * 2 ** (n - 1)
    final = row(app, mid)
    assert final.status == "failed" and "connection refused" in final.last_error
    assert timeline(app, mid) == ["email_failed"]


def test_the_file_transport_writes_the_same_file_when_a_mail_is_sent_again(
        tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    mail = Outgoing(message_id=7, sender="Shop <shop@example.com>", to="a@example.com",
                    subject="Hi", text="hello", html=None, reply_to="r@example.com", date=T0,
                    headers={"X-Lifecycle-Date": "2026-06-03", "X-Lifecycle-Template": "thank_you"})
    first = transport.send(mail)
    assert transport.send(mail) == first
    assert [p.name for p in tmp_path.rglob("*")] == ["2026-06-03", "00000007-thank_you.eml"]


def test_the_frequency_cap_is_checked_again_at_send_time(app: App) -> None:
    mid = a_mail(app, context={"marketing": True, "capped": True})
    cid = row(app, mid).customer_id
    with app.engine.begin() as conn:  # three capped mails went out this week meanwhile
        for n in range(3):
            conn.execute(insert(Message).values(
                idempotency_key=f"earlier:{n}", customer_id=cid, flow="win_back", step="s",
                template="winback_1", to_email="x@example.com", status="sent",
                due_at=T0 - timedelta(days=n + 1), sent_at=T0 - timedelta(days=n + 1),
                attempts=1, context={"marketing": True, "capped": True},
                created_at=T0, updated_at=T0))
    dispatch(app, lambda _ids: None)
    assert send_one(app, mid) == "suppressed"
    assert row(app, mid).last_error.startswith("frequency cap: 3")
