"""Faults with real processes, each kill at a point the test proves: a worker, the scheduler and
the web process killed with SIGKILL; SendGrid's events through the real signed webhook, on time
and late.

Every process is a real ``lifecycle`` process (``worker``, ``scheduler``,
``web``) on one database and a Redis of the test's own; SendGrid is the
stand-in (``tests/fake_sendgrid.py``), whose log of accepted mails is the
witness.  SendGrid's Event Webhook is played by the test: it posts the
stand-in's events, signed with the test's key pair, to the served web app over
HTTP — when it chooses, so that one mail's event can come late.

Where a kill must land is made exact, not timed: the stand-in takes a mail and
never answers (``accept_hang``: the worker is then between SendGrid's
acceptance and its own commit), and ``tests/pause_at.py`` stops the scheduler
or the web process for good at a named point (after its commit, before the
broker; inside the webhook's transaction; after its commit, before its
answer).  Each test checks the state at that moment (the stand-in's log, the
rows, Redis), kills, restarts, and checks the outcome against the witness.

These run on PostgreSQL only: separate ``worker``, ``scheduler`` and ``web``
processes on one database is the PostgreSQL deployment (README, processes and
production); SQLite is the embedded ``lifecycle run``, and a process stopped
inside its write transaction locks every other process out of an SQLite file,
readers included, so the state at the kill could not even be looked at.
(``tests/test_late_events.py`` covers the same rules on both databases.)
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.mail.rate import SendRate
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.models import Message, ProviderEvent, Touchpoint
from lifecycle.timeline import summary
from tests.factories import add_campaign, webhook_headers, webhook_key
from tests.fake_sendgrid import FakeSendGrid
from tests.ports import free_port
from tests.private_redis import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent
KEY = "SG.late-faults"
PRIVATE, PUBLIC = webhook_key()
LEASE = 6.0  # seconds a worker holds a claimed mail (and a queued mail waits for a worker)
SEND_TIMEOUT = 5.0  # a worker waits this long for SendGrid's answer
SETTLE = 1.0
WAIT = 60.0  # seconds for anything the test waits for


@pytest.fixture(scope="module", params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only (see the module doc)."""
    return str(request.param)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(log_bodies=False)
    server.state.api_key = KEY
    server.state.hang_seconds = 120.0
    server.start()
    yield server
    server.stop()


def until(what: str, check: Callable[[], Any], seconds: float = WAIT) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"waited {seconds:.0f} s in vain for {what}")


class Deployment:
    """A database, a Redis, the stand-in, and ``lifecycle`` processes started and killed at will."""

    def __init__(self, database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
                 folder: Path) -> None:
        self.web_port = free_port()
        self.env = {**os.environ, "LIFECYCLE_DATABASE_URL": database_url,
                    "LIFECYCLE_BROKER_URL": redis_server.url,
                    "LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": KEY,
                    "SENDGRID_API_HOST": fake.url, "SENDGRID_WEBHOOK_PUBLIC_KEY": PUBLIC,
                    "LIFECYCLE_SECRET_KEY": secrets.token_urlsafe(32),
                    "LIFECYCLE_WORKER_THREADS": "1", "LIFECYCLE_TICK_SECONDS": "0.2",
                    "LIFECYCLE_SEND_LEASE_SECONDS": str(LEASE),
                    "LIFECYCLE_SEND_TIMEOUT": str(SEND_TIMEOUT),
                    "LIFECYCLE_SETTLE_SECONDS": str(SETTLE),
                    "LIFECYCLE_RETRY_BASE_SECONDS": "0.2", "LIFECYCLE_LOG_LEVEL": "WARNING",
                    "LIFECYCLE_OUTBOX_DIR": str(folder / "outbox")}
        self.app = App(load_settings(self.env), clock=SystemClock())
        self.fake = fake
        self.redis = redis_server
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.posted = 0  # events of the stand-in already posted to the webhook

    # -- processes
    def start(self, *args: str, pause_at: str | None = None) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "lifecycle", *args]
        if pause_at is not None:
            command = [sys.executable, "-m", "tests.pause_at", pause_at,
                       str(self.marker(pause_at)), "--", *args]
        log = open(self.folder / f"{args[0]}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_web(self, pause_at: str | None = None) -> subprocess.Popen[bytes]:
        process = self.start("web", "--host", "127.0.0.1", "--port", str(self.web_port),
                             pause_at=pause_at)
        until("the web app to listen", lambda: self.get("/healthz") is not None)
        return process

    def marker(self, point: str) -> Path:
        return self.folder / f"{point}.json"

    def paused(self, point: str) -> dict[str, Any]:
        """What the process stopped at ``point`` holds there (once it got there)."""
        return until(f"a process to stop at {point}",  # type: ignore[no-any-return]
                     lambda: self.marker(point).exists() and json.loads(
                         self.marker(point).read_text()))

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        assert process.poll() is None, "the process to kill had already ended"
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.app.close()

    # -- HTTP to the web process
    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, Any] | None:
        """The status and JSON answer; None if no answer came (refused, or cut off)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        answer = self.request("GET", path, timeout=2.0)
        return answer[1] if answer is not None and answer[0] == 200 else None

    def post_events(self, events: list[dict[str, Any]],
                    timeout: float = 10.0) -> tuple[int, Any] | None:
        """One signed post of ``events``, as SendGrid's Event Webhook makes it."""
        body = json.dumps(events).encode()
        return self.request("POST", "/webhooks/sendgrid/events", body,
                            webhook_headers(PRIVATE, body, int(time.time())), timeout)

    def pump(self, held: Callable[[dict[str, Any]], bool] = lambda e: False) -> None:
        """Post the stand-in's new events (except those ``held`` back), as the webhook would."""
        with self.fake.state.lock:
            new = list(self.fake.state.events[self.posted:])
        self.posted += len(new)
        wanted = [e for e in new if not held(e)]
        if wanted:
            answer = self.post_events(wanted)
            assert answer is not None and answer[0] == 200, answer

    # -- the database and the witness
    def add_mails(self, n: int) -> list[int]:
        with self.app.engine.begin() as conn:
            return list(add_campaign(conn, n, self.app.clock.now()))

    def row(self, mid: int) -> Any:
        with self.app.engine.connect() as conn:
            return conn.execute(select(Message.__table__).where(Message.id == mid)).one()

    def rows(self) -> dict[int, Any]:
        with self.app.engine.connect() as conn:
            return {r.id: r for r in conn.execute(select(Message.__table__))}

    def accepted(self) -> Counter[int]:
        with self.fake.state.lock:
            return Counter(int(r["custom_args"]["lifecycle_message_id"])
                           for r in self.fake.state.accepted)

    def count(self, table: Any, *where: Any) -> int:
        with self.app.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(*where))
                       .scalar_one())

    def worker_killed_after_sendgrid_took(self, mid: int) -> None:
        """Start a worker, let SendGrid take mail ``mid`` and never answer, check the worker is
        between that acceptance and its commit, and kill it there."""
        self.fake.state.mode = "accept_hang"
        worker = self.start("worker")
        until("SendGrid to take the mail", lambda: self.accepted()[mid] == 1)
        at_kill = self.row(mid)
        self.kill(worker)
        # The kill landed between SendGrid's acceptance and our commit: the stand-in has the
        # mail, the row is still `sending` under the worker's claim with nothing recorded —
        # and stayed so (no commit slipped in before the kill).
        after = self.row(mid)
        for found in (at_kill, after):
            assert found.status == "sending" and found.attempts == 1
            assert found.attempt_log == [] and found.sent_attempt is None
        assert self.accepted() == {mid: 1}
        assert [e["lifecycle_attempt"] for e in self.fake.state.events] == ["1"]
        self.fake.state.mode = "ok"


@pytest.fixture
def deployment(fresh_database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
               tmp_path: Path) -> Iterator[Deployment]:
    url = make_url(fresh_database_url).render_as_string(hide_password=False)
    run = Deployment(url, redis_server, fake, tmp_path)
    yield run
    run.close()


def test_a_worker_killed_between_sendgrids_acceptance_and_its_commit_sends_once_when_the_event_comes(
        deployment: Deployment) -> None:
    d = deployment
    [mid] = d.add_mails(1)
    d.start_web()
    d.start("scheduler")
    d.worker_killed_after_sendgrid_took(mid)
    d.start("worker")  # it comes back
    d.pump()  # the event of the mail SendGrid took, on time, through the signed webhook

    found = until("the mail to be settled", lambda: (r := d.row(mid)).status == "sent" and r)
    assert found.attempt_log[-1]["detail"].startswith("settled by SendGrid's event")
    assert found.sent_attempt == 1 and found.resent_at is None
    assert d.accepted() == {mid: 1}  # the witness: exactly once
    assert d.get("/healthz")["mails_sent_twice"] == 0


def test_a_worker_killed_there_whose_event_comes_late_is_sent_again_and_recorded_sent_twice(
        deployment: Deployment) -> None:
    d = deployment
    mid, other = d.add_mails(2)
    with d.app.engine.begin() as conn:  # the other mail is not due yet
        conn.execute(update(Message).where(Message.id == other).values(
            due_at=d.app.clock.now() + timedelta(hours=1)))
    d.start_web()
    d.start("scheduler")
    d.worker_killed_after_sendgrid_took(mid)
    late = [e for e in d.fake.state.events if e["lifecycle_message_id"] == str(mid)]
    d.posted = len(d.fake.state.events)  # its event is held up on SendGrid's side
    d.start("worker")
    ended = d.row(mid).lease_expires_at
    # Not sent again while nothing SendGrid reports has come past the end of its claim.
    until("the claim on the mail to end", lambda: datetime.now(UTC) > ended
          + timedelta(seconds=SETTLE + 1), seconds=LEASE + SETTLE + 5)
    assert d.row(mid).status == "sending" and d.accepted()[mid] == 1
    with d.app.engine.begin() as conn:  # now the other mail goes; the webhook flows past
        conn.execute(update(Message).where(Message.id == other).values(
            due_at=d.app.clock.now()))
    until("the other mail to go", lambda: d.accepted()[other] == 1)
    until("the other mail's event to come past the claim's end",
          lambda: int(d.fake.state.events[-1]["timestamp"]) >= ended.timestamp())
    d.pump()
    found = until("the mail to be sent again", lambda: d.pump() or (
        (r := d.row(mid)).status == "sent" and r))
    assert found.sent_attempt == 2 and found.resent_at is not None
    assert found.duplicate_at is None
    assert d.accepted() == {mid: 2, other: 1}  # the witness: SendGrid has it twice …

    answer = d.post_events(late)  # … which the first attempt's event, late, reveals
    assert answer is not None and answer[0] == 200 and answer[1]["stored"] == 1
    again = d.post_events(late)  # and SendGrid retries that batch
    assert again is not None and again[1]["duplicates"] == 1
    found = until("the duplicate to be recorded", lambda: (r := d.row(mid)).duplicate_at and r)
    assert found.attempt_log[-1]["outcome"] == "sent twice"
    assert d.get("/healthz")["mails_sent_twice"] == 1
    with d.app.engine.connect() as conn:
        shown = conn.execute(select(Touchpoint.kind, Touchpoint.data).where(
            Touchpoint.message_id == mid, Touchpoint.kind == "email_sent_twice")).all()
    assert [summary(*entry).split(" (")[0] for entry in shown] == \
        ["Mail sent twice: SendGrid took attempts 1 and 2"]
    assert d.row(other).duplicate_at is None


def test_a_scheduler_killed_after_queueing_mails_before_the_broker_had_them_sends_each_once(
        deployment: Deployment, redis_server: PrivateRedis) -> None:
    d = deployment
    ids = d.add_mails(20)
    d.start("scheduler", pause_at="dispatch-enqueue")
    stopped = d.paused("dispatch-enqueue")
    # The kill lands after the commit and before the broker: the rows are `queued` under a
    # lease, and Redis holds no mail.send message (no worker runs yet to take one).
    assert sorted(stopped["ids"]) == ids
    assert {r.status for r in d.rows().values()} == {"queued"}
    client = redis.Redis.from_url(redis_server.url)
    try:
        held = [json.loads(raw)["actor_name"] for key in client.keys("lifecycle:*.msgs")
                for raw in client.hvals(key)]
    finally:
        client.close()
    assert "system.heartbeat" in held  # what the scheduler did put there (before its mail)
    assert "mail.send" not in held
    d.kill(d.processes[-1])
    d.start("scheduler")
    d.start("worker")
    until("every mail to be sent", lambda: {r.status for r in d.rows().values()} == {"sent"},
          seconds=LEASE + WAIT)
    assert d.accepted() == dict.fromkeys(ids, 1)  # the witness: each exactly once
    for found in d.rows().values():
        assert [e["outcome"] for e in found.attempt_log] == ["sent"]


@pytest.mark.parametrize("point", ["webhook-before-commit", "webhook-before-answer"])
def test_a_web_process_killed_mid_webhook_applies_each_event_once_when_sendgrid_posts_again(
        deployment: Deployment, point: str) -> None:
    d = deployment
    ids = d.add_mails(5)
    batches: list[list[int]] = []
    dispatch(d.app, batches.append)  # the test plays scheduler and worker here
    assert send_batch(d.app, [i for b in batches for i in b], rate=SendRate(0))["sent"] == 5
    events = list(d.fake.state.events)
    web = d.start_web(pause_at=point)
    answers: list[Any] = []
    poster = threading.Thread(target=lambda: answers.append(d.post_events(events, WAIT)))
    poster.start()
    stopped = d.paused(point)
    assert stopped["receipt"]["stored"] == 5 and stopped["receipt"]["touchpoints"] == 5
    # Where the kill lands: inside the transaction nothing is visible to anyone else yet;
    # after the commit everything is, and SendGrid has had no answer.
    committed = point == "webhook-before-answer"
    assert d.count(ProviderEvent) == (5 if committed else 0)
    assert d.count(Touchpoint, Touchpoint.kind == "email_processed") == (5 if committed else 0)
    d.kill(web)
    poster.join(WAIT)
    assert answers == [None]  # no answer: SendGrid posts the batch again
    d.start_web()
    retried = d.post_events(events)
    assert retried is not None and retried[0] == 200
    assert retried[1]["stored"] == (0 if committed else 5)
    assert retried[1]["duplicates"] == (5 if committed else 0)
    assert d.post_events(events)[1]["duplicates"] == 5  # type: ignore[index]
    assert d.count(ProviderEvent) == 5
    with d.app.engine.connect() as conn:
        applied = Counter(conn.execute(select(Touchpoint.message_id).where(
            Touchpoint.kind == "email_processed")).scalars())
    assert applied == dict.fromkeys(ids, 1)  # each event applied exactly once
    assert d.accepted() == dict.fromkeys(ids, 1)
