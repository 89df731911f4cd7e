"""SendGrid delivery against a real HTTP stand-in: payload shape, answers, settlement."""

from __future__ import annotations

import email
import email.policy
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.mail.compose import Outgoing
from lifecycle.mail.events import record_events
from lifecycle.mail.rate import SendRate
from lifecycle.mail.sending import LEASE_ENDING, MAX_ATTEMPTS, NOT_TRIED, dispatch, send_batch
from lifecycle.mail.transports import FileTransport, SendError, SendGridTransport, sendgrid_payload
from lifecycle.models import Message, Touchpoint
from lifecycle.timeutil import UTC
from tests.factories import add_campaign
from tests.fake_sendgrid import FakeSendGrid, check_payload
from tests.ports import free_port
from tests.private_redis import PrivateRedis

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
KEY = "SG.test"
CLIENTS = ("pooled", "official")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeSendGrid) -> None:
    fake.state.reset()
    fake.state.hang_seconds = 3.0


def outgoing(message_id: int = 41) -> Outgoing:
    return Outgoing(
        message_id=message_id, sender="Leaf and Bean <shop@leaf.example>",
        to="ann@example.com", subject="Thank you", text="Thanks!\n",
        html='<p style="color: red;">Thanks!</p>', reply_to="reply+tok@leaf.example", date=T0,
        headers={"List-Unsubscribe": "<https://crm.leaf.example/u/x>, <mailto:u+x@leaf.example>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                 "X-Lifecycle-Message-Id": str(message_id)},
        custom_args={"lifecycle_message_id": str(message_id), "lifecycle_customer_id": "7",
                     "lifecycle_flow": "thank_you", "lifecycle_step": "thanks"},
        categories=("flow:thank_you", "step:thank_you/thanks"))


def transport(fake: FakeSendGrid, client: str, key: str = KEY,
              timeout: float = 2.0) -> SendGridTransport:
    return SendGridTransport(key, fake.url, timeout, client)


def test_the_payload_built_with_the_library_helpers_has_the_shape_sendgrid_wants() -> None:
    payload = sendgrid_payload(outgoing())
    assert check_payload(payload) == []
    assert payload["from"] == {"email": "shop@leaf.example", "name": "Leaf and Bean"}
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert payload["reply_to"] == {"email": "reply+tok@leaf.example"}
    assert payload["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    args = {**payload.get("custom_args", {}),
            **payload["personalizations"][0].get("custom_args", {})}
    assert args["lifecycle_message_id"] == "41" and all(isinstance(v, str) for v in args.values())
    assert sorted(payload["categories"]) == ["flow:thank_you", "step:thank_you/thanks"]


def helpers_payload(mail: Outgoing) -> dict:
    """The payload as the official library's mail helpers build it, object by object."""
    from sendgrid.helpers.mail import Category, CustomArg, Email, Header, Mail, ReplyTo, To

    from lifecycle.config import sender_parts

    name, address = sender_parts(mail.sender)
    helper = Mail(from_email=Email(address, name or None), to_emails=To(mail.to),
                  subject=mail.subject, plain_text_content=mail.text, html_content=mail.html)
    helper.reply_to = ReplyTo(mail.reply_to)
    helper.header = [Header(key, value) for key, value in mail.headers.items()]
    helper.custom_arg = [CustomArg(key, value) for key, value in mail.custom_args.items()]
    helper.category = [Category(category) for category in mail.categories]
    return helper.get()  # type: ignore[no-any-return]


@pytest.mark.parametrize("mail", [
    outgoing(),
    replace(outgoing(), html=None),
    replace(outgoing(), text=None),
    replace(outgoing(), sender="shop@leaf.example", categories=(), custom_args={}, headers={}),
    replace(outgoing(), sender="Café «Løv» <shop@leaf.example>", to="åse@example.com",
            subject="Tack för din beställning 🌿", text="", html="<p>Hej – ÅÄÖ</p>"),
], ids=["text and html", "text only", "html only", "bare", "non-ascii"])
def test_the_payload_is_the_one_the_library_helpers_build(mail: Outgoing) -> None:
    assert sendgrid_payload(mail) == helpers_payload(mail)
    assert list(sendgrid_payload(mail)) == list(helpers_payload(mail))  # the keys' order too


def test_the_stand_in_refuses_what_sendgrid_refuses() -> None:
    payload = sendgrid_payload(outgoing())
    payload["headers"]["Subject"] = "sneaky"
    payload["custom_args"] = {"n": 5}
    fields = {e["field"] for e in check_payload(payload)}
    assert {"headers.Subject", "custom_args"} <= fields


@pytest.mark.parametrize("client", CLIENTS)
def test_an_accepted_mail_returns_sendgrids_message_id(fake: FakeSendGrid, client: str) -> None:
    sender = transport(fake, client)
    ids = [sender.send(outgoing(n)) for n in (1, 2, 3)]
    log = fake.state.accepted
    assert ids == [r["x_message_id"] for r in log] and all(ids)
    assert [r["custom_args"]["lifecycle_message_id"] for r in log] == ["1", "2", "3"]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_bad_key_fails_for_good_with_sendgrids_error_text(fake: FakeSendGrid,
                                                            client: str) -> None:
    with pytest.raises(SendError) as caught:
        transport(fake, client, key="SG.wrong").send(outgoing())
    assert caught.value.permanent and caught.value.status == 401
    assert "authorization grant is invalid" in caught.value.reason


@pytest.mark.parametrize("client", CLIENTS)
def test_a_429_says_how_long_to_wait(fake: FakeSendGrid, client: str) -> None:
    fake.state.mode, fake.state.reset_in = "limit", 3
    with pytest.raises(SendError) as caught:
        transport(fake, client).send(outgoing())
    assert caught.value.status == 429 and not caught.value.permanent
    assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 3


@pytest.mark.parametrize("client", CLIENTS)
def test_a_500_is_worth_another_try(fake: FakeSendGrid, client: str) -> None:
    fake.state.mode = "fail"
    with pytest.raises(SendError) as caught:
        transport(fake, client).send(outgoing())
    assert caught.value.status == 500 and not caught.value.permanent
    assert not caught.value.ambiguous and caught.value.retry_after is None


@pytest.mark.parametrize("client", CLIENTS)
def test_a_hanging_api_times_out_and_the_send_counts_as_unanswered(fake: FakeSendGrid,
                                                                     client: str) -> None:
    fake.state.mode = "hang"
    started = time.monotonic()
    with pytest.raises(SendError) as caught:
        transport(fake, client, timeout=0.5).send(outgoing())
    assert time.monotonic() - started < 2.5
    assert caught.value.ambiguous and not caught.value.permanent


@pytest.mark.parametrize("client", CLIENTS)
def test_a_mail_the_library_helpers_refuse_fails_for_good_before_anything_is_posted(
        fake: FakeSendGrid, client: str) -> None:
    # The helpers refuse a body that begins like an API key; raised as their own exception, a
    # worker could not tell it from a fault mid-post and would leave the mail to settle.
    mail = replace(outgoing(), text="SG.abc123.def456 is not a key\n")
    with pytest.raises(SendError) as caught:
        transport(fake, client).send(mail)
    assert caught.value.permanent and not caught.value.ambiguous
    assert "ApiKeyIncludedException" in caught.value.reason and fake.state.requests == 0


def test_nothing_listening_is_a_plain_failure_not_an_ambiguous_one() -> None:
    with pytest.raises(SendError) as caught:
        SendGridTransport(KEY, "http://127.0.0.1:9", 1.0).send(outgoing())
    assert not caught.value.ambiguous


# ------------------------------------------------------------- through the outbox

@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path, fake: FakeSendGrid) -> Iterator[App]:
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       outbox_dir=tmp_path / "outbox", secret_key="k" * 40,
                       mail_transport="sendgrid", sendgrid_api_key=KEY,
                       sendgrid_api_host=fake.url, send_timeout=0.5, settle_seconds=600)
    app = App(settings, clock=ManualClock(T0))
    yield app
    app.close()


def mails(app: App, n: int) -> list[int]:
    with app.engine.begin() as conn:
        return list(add_campaign(conn, n, T0))


def rows(app: App) -> dict[int, object]:
    with app.engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(Message.__table__))}


def handed_out(app: App) -> list[int]:
    batches: list[list[int]] = []
    dispatch(app, batches.append)
    return [i for batch in batches for i in batch]


def test_mails_sent_through_sendgrid_are_recorded_with_its_message_id(app: App,
                                                                      fake: FakeSendGrid) -> None:
    ids = mails(app, 3)
    outcome = send_batch(app, handed_out(app), rate=SendRate(0))
    assert outcome["sent"] == 3
    by_ours = {int(r["custom_args"]["lifecycle_message_id"]): r for r in fake.state.accepted}
    assert sorted(by_ours) == ids  # each once
    for mid, row in rows(app).items():
        assert row.status == "sent" and row.provider_message_id == by_ours[mid]["x_message_id"]
        assert [e["outcome"] for e in row.attempt_log] == ["sent"]
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Touchpoint).where(
            Touchpoint.kind == "email_sent")).scalar_one() == 3
    html = by_ours[ids[0]]["payload"]["content"][1]["value"]
    from lifecycle.mail.templates import _needs_inlining

    assert 'style="' in html and not _needs_inlining(html)  # styles inline, @media kept


def test_a_429_puts_the_batch_back_without_using_up_attempts(app: App,
                                                             fake: FakeSendGrid) -> None:
    ids = mails(app, 3)
    fake.state.mode, fake.state.reset_in = "limit", 2
    rate = SendRate(0)
    outcome = send_batch(app, handed_out(app), rate=rate)
    assert outcome["later"] == 3 and fake.state.requests == 1  # the rest not even tried
    assert rate.store.paused_until() > time.time()
    for row in rows(app).values():
        assert row.status == "scheduled" and row.attempts == 0
        assert T0 < row.due_at <= T0 + timedelta(seconds=3)
    fake.state.mode = "ok"
    app.clock.advance(timedelta(seconds=3))  # type: ignore[attr-defined]
    assert send_batch(app, handed_out(app), rate=rate)["sent"] == 3
    assert len(fake.state.accepted) == len(ids)


def test_a_stand_in_refusing_each_mail_fewer_times_than_the_outbox_tries_never_fails_one(
        app: App, fake: FakeSendGrid) -> None:
    # The fault schedule of test_delivery_faults: 500s at random, but at most MAX_ATTEMPTS - 1
    # for one mail.  Even refusing every request it allows, the mail goes out on its last
    # attempt, once; unbounded, it would be failed for good (the "lost" mail of issue 14).
    [mid] = mails(app, 1)
    fake.state.fail_share, fake.state.max_refusals = 1.0, MAX_ATTEMPTS - 1
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        outcome = send_batch(app, handed_out(app), rate=SendRate(0))
        outcomes.append(next(kind for kind in ("sent", "later", "failed") if outcome[kind]))
        app.clock.advance(rows(app)[mid].due_at - app.clock.now())  # type: ignore[attr-defined]
    assert outcomes == ["later"] * (MAX_ATTEMPTS - 1) + ["sent"]
    row = rows(app)[mid]
    assert row.status == "sent" and row.attempts == MAX_ATTEMPTS
    assert fake.state.refusals == {str(mid): MAX_ATTEMPTS - 1}  # the 500s it answered
    assert [r["custom_args"]["lifecycle_message_id"] for r in fake.state.accepted] == [str(mid)]


class Stalling:
    """SendGrid through a worker that stalls after its first post of a batch (a slow machine,
    a long wait for the send rate) while ``meanwhile`` runs: the scheduler and other workers."""

    idempotent, settles_by_events = False, True

    def __init__(self, fake: FakeSendGrid, meanwhile: Callable[[], None]) -> None:
        self.real = SendGridTransport(KEY, fake.url, 0.5)
        self.meanwhile: Callable[[], None] | None = meanwhile

    def send(self, mail: Outgoing) -> str:
        answer = self.real.send(mail)
        if self.meanwhile is not None:
            self.meanwhile, meanwhile = None, self.meanwhile
            meanwhile()
        return answer


def test_a_worker_whose_claim_is_ending_hands_the_rest_of_its_batch_back_untried(
        app: App, fake: FakeSendGrid) -> None:
    first, second = mails(app, 2)
    lease = timedelta(seconds=app.settings.send_lease_seconds - app.settings.send_timeout + 1)
    stall = Stalling(fake, lambda: app.clock.advance(lease))  # type: ignore[attr-defined]
    outcome = send_batch(app, handed_out(app), stall, rate=SendRate(0))
    assert outcome["sent"] == 1 and outcome["later"] == 1
    row = rows(app)[second]
    assert row.status == "scheduled" and row.attempts == 0 and row.due_at == app.clock.now()
    assert [e.get("detail") for e in row.attempt_log] == [LEASE_ENDING]
    assert handed_out(app) == [second]  # at once, to the next worker
    assert [r["custom_args"]["lifecycle_message_id"] for r in fake.state.accepted] == [str(first)]


def test_a_worker_that_outlives_its_claim_does_not_send_what_the_scheduler_handed_out_again(
        app: App, fake: FakeSendGrid) -> None:
    # Worker A stalls past its lease and the settle window; the webhook reports its first mail,
    # the scheduler hands the second out again, worker B sends it.  A must not send it too.
    first, second = mails(app, 2)
    app.settings = replace(app.settings, send_lease_seconds=3, settle_seconds=2)
    batch = handed_out(app)

    def scheduler_and_worker_b() -> None:
        app.clock.advance(timedelta(seconds=6))  # type: ignore[attr-defined]
        with app.engine.begin() as conn:
            record_events(conn, list(fake.state.events), app.clock.now())
        again = handed_out(app)  # settles the first as sent by its event, hands out the second
        assert again == [second]
        assert send_batch(app, again, rate=SendRate(0))["sent"] == 1

    send_batch(app, batch, Stalling(fake, scheduler_and_worker_b), rate=SendRate(0))
    accepted = Counter(r["custom_args"]["lifecycle_message_id"] for r in fake.state.accepted)
    assert accepted == {str(first): 1, str(second): 1}
    assert {r.status for r in rows(app).values()} == {"sent"}


def test_a_worker_whose_send_rate_store_is_unreachable_puts_its_claimed_batch_back_untried(
        app: App, fake: FakeSendGrid) -> None:
    # With a send rate each mail takes its place in the second's window in Redis: with Redis
    # gone, that fails right after the claim.  Nothing was posted, so the mails go back, due at
    # once (the scheduler hands them out as soon as Redis answers), not left `sending` to wait a
    # day for SendGrid events that cannot come.  (Without a rate Redis is not needed: see
    # tests/test_faults_broker.py.)
    ids = mails(app, 3)
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=1)
    outcome = send_batch(app, handed_out(app), rate=SendRate(10, unreachable))
    assert outcome["later"] == 3 and fake.state.requests == 0
    for row in rows(app).values():
        assert row.status == "scheduled" and row.attempts == 0
        assert row.due_at == T0  # due at once: no lease, no retry wait
        [entry] = row.attempt_log
        assert entry["outcome"] == "later" and entry["detail"].startswith(NOT_TRIED)
        assert "ConnectionError" in entry["detail"]
    assert send_batch(app, handed_out(app), rate=SendRate(0))["sent"] == 3
    assert sorted(int(r["custom_args"]["lifecycle_message_id"])
                  for r in fake.state.accepted) == ids


def test_a_worker_whose_redis_dies_mid_batch_records_what_it_sent_and_puts_the_rest_back(
        app: App, fake: FakeSendGrid, redis_server: PrivateRedis) -> None:
    first, second, third = mails(app, 3)
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=1)
    rate = SendRate(1000, client)  # each mail takes its place in the second's window in Redis
    try:  # Redis is killed once the first mail is posted: the second's place cannot be taken
        outcome = send_batch(app, handed_out(app), Stalling(fake, redis_server.kill), rate=rate)
    finally:
        client.close()
    assert outcome["sent"] == 1 and outcome["later"] == 2
    found = rows(app)
    assert found[first].status == "sent"
    assert found[first].provider_message_id == fake.state.accepted[0]["x_message_id"]
    for mid in (second, third):
        assert found[mid].status == "scheduled" and found[mid].attempts == 0
        assert [e["detail"].split(":")[0] for e in found[mid].attempt_log] == \
            [NOT_TRIED.split(":")[0]]
    assert [r["custom_args"]["lifecycle_message_id"] for r in fake.state.accepted] == [str(first)]


class BreakingOnSecond:
    """SendGrid through a client that posts the second mail of a batch and then fails with an
    error of its own (not a SendError): the post may have reached SendGrid."""

    idempotent, settles_by_events = False, True

    def __init__(self, fake: FakeSendGrid) -> None:
        self.real = SendGridTransport(KEY, fake.url, 0.5)
        self.calls = 0

    def send(self, mail: Outgoing) -> str:
        self.calls += 1
        answer = self.real.send(mail)
        if self.calls == 2:
            raise RuntimeError("the client broke after posting")
        return answer


def test_a_transport_that_breaks_mid_post_leaves_that_mail_to_settle_and_the_rest_untried(
        app: App, fake: FakeSendGrid) -> None:
    first, second, third = mails(app, 3)
    with pytest.raises(RuntimeError):  # a fault in a transport is not swallowed
        send_batch(app, handed_out(app), BreakingOnSecond(fake), rate=SendRate(0))
    found = rows(app)
    assert found[first].status == "sent"  # recorded, not left to the events
    # Its post may have started: settled by SendGrid's events, never resent blindly.
    assert found[second].status == "sending" and found[second].lease_expires_at == T0
    assert found[second].attempt_log[-1]["outcome"] == "no answer"
    assert found[third].status == "scheduled" and found[third].attempts == 0
    assert found[third].attempt_log[-1]["detail"].startswith(NOT_TRIED)
    with app.engine.begin() as conn:
        record_events(conn, list(fake.state.events), T0)
    app.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    handed_out(app)
    assert rows(app)[second].status == "sent"  # by its `processed` event
    assert sorted(int(r["custom_args"]["lifecycle_message_id"])
                  for r in fake.state.accepted) == [first, second]


def test_a_rejected_mail_fails_with_sendgrids_reason_on_the_timeline(app: App) -> None:
    [mid] = mails(app, 1)
    app.settings = replace(app.settings, sendgrid_api_key="SG.wrong")
    assert send_batch(app, handed_out(app), rate=SendRate(0))["failed"] == 1
    row = rows(app)[mid]
    assert row.status == "failed" and "SendGrid 401" in row.last_error
    with app.engine.connect() as conn:
        reason = conn.execute(select(Touchpoint.data).where(
            Touchpoint.kind == "email_failed")).scalar_one()["reason"]
    assert "authorization grant is invalid" in reason


def test_an_unanswered_mail_that_sendgrid_did_take_is_settled_by_its_event(
        app: App, fake: FakeSendGrid) -> None:
    [mid] = mails(app, 1)
    handed = handed_out(app)
    fake.state.mode = "hang"  # the request goes out, no answer comes back
    assert send_batch(app, handed, rate=SendRate(0))["unanswered"] == 1
    assert rows(app)[mid].status == "sending"
    # SendGrid had taken it after all: its processed event names our id.
    event = {"event": "processed", "sg_event_id": "e1", "sg_message_id": "abc123.filter1",
             "timestamp": int(T0.timestamp()), "email": "b0@example.com",
             "lifecycle_message_id": str(mid)}
    with app.engine.begin() as conn:
        assert record_events(conn, [event, event], T0) == 1  # a retried batch: stored once
    app.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    fake.state.mode = "ok"
    assert handed_out(app) == []  # settled, not handed out again
    row = rows(app)[mid]
    assert row.status == "sent" and row.provider_message_id == "abc123"
    assert fake.state.accepted == []


def test_an_unanswered_mail_with_no_event_is_sent_again_once_events_flow_past_it(
        app: App, fake: FakeSendGrid) -> None:
    [mid, other] = mails(app, 2)
    handed = handed_out(app)
    fake.state.mode = "hang"
    send_batch(app, [mid], rate=SendRate(0))
    fake.state.mode = "ok"
    send_batch(app, [i for i in handed if i != mid], rate=SendRate(0))
    app.clock.advance(timedelta(seconds=700))  # type: ignore[attr-defined]
    assert handed_out(app) == []  # no event has come since: keep waiting
    with app.engine.begin() as conn:  # the webhook delivers the other mail's event
        record_events(conn, fake.state.events, app.clock.now())
    assert handed_out(app) == [mid]
    assert send_batch(app, [mid], rate=SendRate(0))["sent"] == 1
    ours = [r["custom_args"]["lifecycle_message_id"] for r in fake.state.accepted]
    assert sorted(ours) == sorted([str(mid), str(other)])  # each exactly once
    assert [e["outcome"] for e in rows(app)[mid].attempt_log] == ["no answer", "requeued",
                                                                    "sent"]


def test_the_file_transport_and_sendgrid_carry_the_same_headers_and_parts(
        app: App, fake: FakeSendGrid, tmp_path: Path) -> None:
    [mid] = mails(app, 1)
    ids = handed_out(app)
    captured: list[Outgoing] = []

    class Both:
        idempotent, settles_by_events = False, True

        def send(self, mail: Outgoing) -> str:
            captured.append(mail)
            FileTransport(tmp_path / "eml").send(mail)
            return SendGridTransport(KEY, fake.url, 1.0).send(mail)

    assert send_batch(app, ids, transport=Both(), rate=SendRate(0))["sent"] == 1
    [path] = (tmp_path / "eml").rglob("*.eml")
    eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    payload = fake.state.accepted[0]["payload"]
    for name, value in payload["headers"].items():
        assert eml[name] == value, name
    assert eml["Subject"] == payload["subject"]
    assert eml["Reply-To"] == payload["reply_to"]["email"]
    def lines(text: str) -> str:  # MIME lines end in CRLF on the wire
        return text.replace("\r\n", "\n").rstrip("\n")

    parts = {p.get_content_type(): lines(p.get_content())  # type: ignore[attr-defined]
             for p in eml.walk() if not p.is_multipart()}
    assert parts == {c["type"]: lines(c["value"]) for c in payload["content"]}
    assert captured[0].custom_args["lifecycle_message_id"] == str(mid)


class BreaksOn:
    """The shop's renderer, raising a plain bug's error for one mail (its customer's data)."""

    def __init__(self, app: App, mid: int) -> None:
        from lifecycle.mail.templates import Renderer

        self.inner = Renderer(app.settings.templates_dir)
        with app.engine.connect() as conn:
            self.email = conn.execute(select(Message.to_email).where(Message.id == mid)).scalar_one()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def render(self, name: str, context: dict[str, object]) -> object:
        if context["customer"]["email"] == self.email:  # type: ignore[index]
            raise ValueError("a birthday of 31 February")
        return self.inner.render(name, context)


def test_a_mail_whose_rendering_breaks_is_failed_alone_and_the_rest_of_its_batch_goes(
        app: App, fake: FakeSendGrid) -> None:
    ids = mails(app, 3)
    outcome = send_batch(app, handed_out(app), rate=SendRate(0),
                         renderer=BreaksOn(app, ids[1]))  # type: ignore[arg-type]
    assert outcome["sent"] == 2 and outcome["failed"] == 1
    row = rows(app)[ids[1]]
    assert row.status == "failed" and "ValueError: a birthday of 31 February" in row.last_error
    assert sorted(r["custom_args"]["lifecycle_message_id"] for r in fake.state.accepted) == \
        sorted(str(mid) for mid in ids if mid != ids[1])
