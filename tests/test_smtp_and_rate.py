"""The SMTP transport against a real SMTP server, and the global send rate (memory and Redis)."""

from __future__ import annotations

import email
import email.policy
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.mail.compose import Outgoing
from lifecycle.mail.rate import SendRate, send_rate_for
from lifecycle.mail.sending import NOT_TRIED, dispatch, send_batch
from lifecycle.mail.transports import SendError, SmtpTransport
from lifecycle.models import Message, Touchpoint
from lifecycle.tasks.broker import build
from lifecycle.timeutil import UTC
from tests.factories import add_campaign
from tests.fake_smtp import FakeSmtp
from tests.private_redis import PrivateRedis

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp().start()
    yield server
    server.stop()


def outgoing(message_id: int = 5, to: str = "ann@example.com") -> Outgoing:
    return Outgoing(message_id=message_id, sender="Leaf and Bean <shop@leaf.example>", to=to,
                    subject="Thank you", text="Thanks!\n", html="<p>Thanks!</p>",
                    reply_to="reply+t@leaf.example", date=T0,
                    headers={"Message-ID": f"<lifecycle.{message_id}@leaf.example>",
                             "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})


def test_smtp_delivers_the_mime_mail_over_one_kept_connection(smtp: FakeSmtp) -> None:
    transport = SmtpTransport(smtp.url, timeout=5)
    ids = [transport.send(outgoing(n)) for n in (1, 2)]
    assert ids == ["smtp:lifecycle.1@leaf.example", "smtp:lifecycle.2@leaf.example"]
    assert smtp.connections == 1
    first = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    assert smtp.messages[0].recipients == ["ann@example.com"]
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["Reply-To"] == "reply+t@leaf.example"


def test_smtp_refusals_are_permanent_or_passing_by_their_code(smtp: FakeSmtp) -> None:
    transport = SmtpTransport(smtp.url, timeout=5)
    smtp.refuse.add("gone@example.com")
    with pytest.raises(SendError) as refused:
        transport.send(outgoing(to="gone@example.com"))
    assert refused.value.permanent and refused.value.status == 550
    smtp.busy = True
    with pytest.raises(SendError) as busy:
        transport.send(outgoing())
    assert not busy.value.permanent and busy.value.status == 451


def test_no_smtp_server_is_a_passing_failure() -> None:
    with pytest.raises(SendError) as caught:
        SmtpTransport("smtp://127.0.0.1:9", timeout=1).send(outgoing())
    assert not caught.value.permanent and not caught.value.ambiguous


def test_mails_sent_by_smtp_are_recorded_one_by_one(fresh_database_url: str, tmp_path: Path,
                                                     smtp: FakeSmtp) -> None:
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       mail_transport="smtp", smtp_url=smtp.url, secret_key="k" * 40)
    app = App(settings, clock=ManualClock(T0))
    try:
        with app.engine.begin() as conn:
            ids = add_campaign(conn, 3, T0)
        batches: list[list[int]] = []
        dispatch(app, batches.append)
        assert send_batch(app, batches[0], rate=SendRate(0))["sent"] == 3
        with app.engine.connect() as conn:
            assert set(conn.execute(select(Message.status)).scalars()) == {"sent"}
            assert len(conn.execute(select(Touchpoint.id).where(
                Touchpoint.kind == "email_sent")).all()) == 3
        assert sorted(int(email.message_from_bytes(m.data)["X-Lifecycle-Message-Id"])
                      for m in smtp.messages) == sorted(ids)
    finally:
        app.close()


class KillingRedis:
    """SMTP through a worker whose Redis (the send rate's store) is killed once its first mail
    of a batch has gone out."""

    idempotent, settles_by_events = False, False

    def __init__(self, smtp: FakeSmtp, redis_server: PrivateRedis) -> None:
        self.real = SmtpTransport(smtp.url, timeout=5)
        self.redis_server = redis_server

    def send(self, mail: Outgoing) -> str:
        answer = self.real.send(mail)
        self.redis_server.kill()
        return answer


def test_smtp_mails_not_yet_sent_when_the_rate_store_fails_go_back_untried(
        fresh_database_url: str, smtp: FakeSmtp, redis_server: PrivateRedis) -> None:
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       mail_transport="smtp", smtp_url=smtp.url, secret_key="k" * 40)
    app = App(settings, clock=ManualClock(T0))
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=1)
    try:
        with app.engine.begin() as conn:
            first, *rest = add_campaign(conn, 3, T0)
        batches: list[list[int]] = []
        dispatch(app, batches.append)
        # SMTP mails are recorded one by one; the second's place in Redis's window fails.
        outcome = send_batch(app, batches[0], KillingRedis(smtp, redis_server),
                             rate=SendRate(1000, client))
        assert outcome["sent"] == 1 and outcome["later"] == 2
        with app.engine.connect() as conn:
            found = {r.id: r for r in conn.execute(select(Message.__table__))}
        assert found[first].status == "sent"
        for mid in rest:  # not `sending`: SMTP's settlement would fail them as outcome unknown
            assert found[mid].status == "scheduled" and found[mid].attempts == 0
            [entry] = found[mid].attempt_log
            assert entry["detail"].startswith(NOT_TRIED)
        assert [int(email.message_from_bytes(m.data)["X-Lifecycle-Message-Id"])
                for m in smtp.messages] == [first]
    finally:
        client.close()
        app.close()


class Outlasting:
    """SMTP whose send outlasts the worker's lease (each command waits up to the timeout): the
    scheduler runs, ``lease`` later, before the worker hears back."""

    idempotent, settles_by_events = False, False

    def __init__(self, app: App, smtp: FakeSmtp, lease: timedelta) -> None:
        self.app, self.real, self.lease = app, SmtpTransport(smtp.url, timeout=5), lease

    def send(self, mail: Outgoing) -> str:
        answer = self.real.send(mail)
        self.app.clock.advance(self.lease)  # type: ignore[attr-defined]
        assert dispatch(self.app, lambda ids: None) == 0  # settled, not handed out again
        return answer


def test_an_smtp_send_that_outlasts_its_lease_is_recorded_as_outcome_unknown_never_sent_twice(
        fresh_database_url: str, smtp: FakeSmtp) -> None:
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       mail_transport="smtp", smtp_url=smtp.url, secret_key="k" * 40)
    app = App(settings, clock=ManualClock(T0))
    try:
        with app.engine.begin() as conn:
            [mid] = add_campaign(conn, 1, T0)
        batches: list[list[int]] = []
        dispatch(app, batches.append)
        lease = timedelta(seconds=settings.send_lease_seconds + 1)
        outcome = send_batch(app, batches[0], Outlasting(app, smtp, lease), rate=SendRate(0))
        assert outcome["sent"] == 0  # the worker's late `sent` found the mail settled
        with app.engine.connect() as conn:
            row = conn.execute(select(Message.__table__)).one()
            failed = conn.execute(select(Touchpoint.id).where(
                Touchpoint.kind == "email_failed", Touchpoint.message_id == mid)).all()
        assert row.status == "failed" and row.last_error.startswith("outcome unknown")
        assert len(failed) == 1  # on the timeline, for support staff to decide
        app.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
        assert dispatch(app, batches.append) == 0
        assert len(smtp.messages) == 1
    finally:
        app.close()


# ------------------------------------------------------------------- send rate

def starts_per_second(rate: SendRate, mails: int) -> Counter[int]:
    seconds: Counter[int] = Counter()
    for _ in range(mails):
        rate.take()
        seconds[int(time.time())] += 1
    return seconds


def test_the_send_rate_never_lets_more_mails_out_in_a_second_than_allowed(
        broker_url: str | None) -> None:
    broker = build(broker_url)
    try:
        if broker_url is not None:
            broker.client.delete(*broker.client.keys("lifecycle:send-*") or ["none"])
        rate = send_rate_for(40, broker)
        seconds = starts_per_second(rate, 100)
    finally:
        broker.close()
    assert max(seconds.values()) <= 40 and sum(seconds.values()) == 100
    assert len(seconds) >= 3  # 100 mails at 40 a second need at least three seconds


def test_a_pause_after_a_429_holds_every_sender_back(broker_url: str | None) -> None:
    broker = build(broker_url)
    try:
        one = send_rate_for(0, broker)  # one worker …
        other = SendRate(0, broker.client) if broker_url else one  # … another (on Redis: a host)
        one.pause(0.5)
        started = time.monotonic()
        other.wait_for_pause()
        assert time.monotonic() - started >= 0.4
    finally:
        broker.close()


def test_a_pause_ends_and_sending_resumes_without_a_restart() -> None:
    rate = SendRate(0)
    rate.pause(0.2)
    time.sleep(0.25)
    started = time.monotonic()
    rate.wait_for_pause()
    rate.take()
    assert time.monotonic() - started < 0.1
