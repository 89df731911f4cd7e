"""Faults with real processes: a worker killed with SIGKILL, Redis restarted, SendGrid failing.

Each test sends a campaign of thousands of mails through its own Redis server
(started here, so that it can be killed without touching other tests) and two
``lifecycle worker`` processes using the ``sendgrid`` transport against the
stand-in.  The test process plays the scheduler (``dispatch``) and SendGrid's
Event Webhook (it stores the stand-in's events).  Afterwards the stand-in's
log is the witness: every mail accepted exactly once, none lost, and the
outbox and the timeline agree.

The in-process broker lives and dies with its only process, so these run on
Redis; they run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.mail.events import record_events
from lifecycle.mail.sending import MAX_ATTEMPTS, dispatch
from lifecycle.models import Message, Touchpoint
from lifecycle.tasks.broker import build
from lifecycle.tasks.mail import send
from tests.factories import add_campaign
from tests.fake_sendgrid import FakeSendGrid
from tests.private_redis import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent
KEY = "SG.faults"
#: LIFECYCLE_SECRET_KEY of every process a fault test starts.
FAULT_SECRET = "Fq3kLm9x2VbN7wR4tY8uZ1cD6hJ0pS5e"
MAILS = 2000
DEADLINE = 150.0  # seconds for one campaign


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(log_bodies=False)
    server.state.api_key = KEY
    server.start()
    yield server
    server.stop()


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop each worker process still running (SIGTERM, then SIGKILL after 20 s)."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()


def post_events(app: App, fake: FakeSendGrid, seen: int) -> int:
    """Store the stand-in's events after the first ``seen`` as SendGrid's Event Webhook would,
    with one of the account's other mail (see :meth:`Campaign.step`); how many are seen now."""
    with fake.state.lock:
        new = list(fake.state.events[seen:])
    other = {"email": "someone@elsewhere.example", "timestamp": int(time.time()),
             "event": "delivered", "sg_event_id": f"other-{time.monotonic_ns()}",
             "sg_message_id": "not-lifecycles.filter0001.1.0"}
    with app.engine.begin() as conn:
        record_events(conn, [*new, other], app.clock.now())
    return seen + len(new)


class Campaign:
    """A campaign's database, workers, scheduler loop and webhook pump."""

    def __init__(self, database_url: str, redis: PrivateRedis, fake: FakeSendGrid,
                 folder: Path) -> None:
        self.env = {**os.environ, "LIFECYCLE_DATABASE_URL": database_url,
                    "LIFECYCLE_BROKER_URL": redis.url, "LIFECYCLE_MAIL_TRANSPORT": "sendgrid",
                    "SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": fake.url,
                    "LIFECYCLE_SECRET_KEY": FAULT_SECRET, "LIFECYCLE_WORKER_THREADS": "2",
                    "LIFECYCLE_SEND_LEASE_SECONDS": "5", "LIFECYCLE_SETTLE_SECONDS": "2",
                    "LIFECYCLE_RETRY_BASE_SECONDS": "0.2", "LIFECYCLE_SEND_TIMEOUT": "2",
                    "LIFECYCLE_LOG_LEVEL": "WARNING", "LIFECYCLE_OUTBOX_DIR": str(folder)}
        self.app = App(load_settings(self.env), clock=SystemClock())
        self.fake = fake
        self.redis = redis
        self.broker = build(redis.url)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.events_seen = 0
        self.folder = folder
        with self.app.engine.begin() as conn:
            self.ids = list(add_campaign(conn, MAILS, self.app.clock.now()))

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], cwd=ROOT,
                                  env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(worker)
        return worker

    def enqueue(self, ids: list[int]) -> None:
        self.broker.enqueue(send.message(ids))

    def step(self) -> None:
        """One scheduler tick and one webhook post.  The post also carries an event of the
        account's other mail, as a live account's webhook keeps doing: a mail whose outcome a
        killed worker left unknown is sent again only once SendGrid's events have come past
        its lease (README, "Exactly once"), which the campaign's own events may not do when
        the other workers finish it first."""
        dispatch(self.app, self.enqueue)
        self.events_seen = post_events(self.app, self.fake, self.events_seen)

    def accepted(self) -> int:
        with self.fake.state.lock:
            return len(self.fake.state.accepted)

    def run(self, until_done: bool = True, until_accepted: int | None = None) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            self.step()
            if until_accepted is not None and self.accepted() >= until_accepted:
                return
            if until_done and not self.open_mails():
                return
            time.sleep(0.1)
        raise AssertionError(f"the campaign did not finish: {self.statuses()}")

    def open_mails(self) -> int:
        with self.app.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Message).where(
                Message.status.not_in(("sent", "failed")))).scalar_one())

    def statuses(self) -> dict[str, int]:
        with self.app.engine.connect() as conn:
            return dict(conn.execute(select(Message.status, func.count())  # type: ignore[arg-type]
                                     .group_by(Message.status)).all())

    def close(self) -> None:
        stop_workers(self.workers)
        self.broker.close()
        self.app.close()

    def assert_each_sent_exactly_once(self) -> None:
        with self.app.engine.connect() as conn:  # a mail failed for good says why, not "lost"
            unsent = {row.id: (row.status, row.attempts, row.last_error) for row in conn.execute(
                select(Message.id, Message.status, Message.attempts, Message.last_error)
                .where(Message.status != "sent").order_by(Message.id).limit(10))}
        assert not unsent, f"not sent (status, attempts, last error): {unsent}"
        with self.fake.state.lock:
            witness = Counter(int(r["custom_args"]["lifecycle_message_id"])
                              for r in self.fake.state.accepted)
        twice = {mid: n for mid, n in witness.items() if n > 1}
        assert not twice, f"sent more than once: {sorted(twice)[:10]}"
        assert set(witness) == set(self.ids), "lost: " + str(sorted(set(self.ids) - set(witness))[:10])
        assert self.statuses() == {"sent": MAILS}
        with self.app.engine.connect() as conn:
            timeline = Counter(conn.execute(select(Touchpoint.message_id).where(
                Touchpoint.kind == "email_sent")).scalars())
            provider_ids = dict(conn.execute(select(Message.id, Message.provider_message_id)).all())
        assert timeline == Counter(set(self.ids)), "one email_sent on the timeline per mail"
        by_ours = {int(r["custom_args"]["lifecycle_message_id"]): r["x_message_id"]
                   for r in self.fake.state.accepted}
        assert provider_ids == by_ours  # the outbox names SendGrid's own id for each mail


@pytest.fixture
def campaign(fresh_database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
             tmp_path: Path) -> Iterator[Campaign]:
    url = make_url(fresh_database_url).render_as_string(hide_password=False)
    run = Campaign(url, redis_server, fake, tmp_path)
    yield run
    run.close()


def test_a_worker_killed_mid_campaign_loses_nothing_and_sends_nothing_twice(
        campaign: Campaign, fake: FakeSendGrid) -> None:
    fake.state.delay = 0.005  # each batch takes a while: the kill lands inside one
    first = campaign.start_worker()
    # Only once the first worker is sending (all accepted so far are its own) does the second
    # start: a slow start under load must not leave the first idle when it is killed.
    campaign.run(until_done=False, until_accepted=50)
    campaign.start_worker()
    campaign.run(until_done=False, until_accepted=MAILS // 3)
    first.send_signal(signal.SIGKILL)  # mid-batch: claimed rows, posted and unposted
    first.wait(10)
    campaign.start_worker()  # and it comes back
    campaign.run()
    campaign.assert_each_sent_exactly_once()
    with campaign.app.engine.connect() as conn:
        entries = [entry for log in conn.execute(select(Message.attempt_log)).scalars()
                   for entry in log]
    # The killed worker's claimed mails were settled: sent again where SendGrid never had
    # them, found sent by their events where it had.
    settled = [e for e in entries if e["outcome"] == "requeued"
               or e.get("detail", "").startswith("settled by SendGrid's event")]
    assert settled


def test_a_redis_restart_mid_campaign_loses_nothing(campaign: Campaign) -> None:
    campaign.start_worker()
    campaign.start_worker()
    campaign.run(until_done=False, until_accepted=MAILS // 3)
    campaign.redis.kill()  # every queued message is gone with it
    time.sleep(1)
    campaign.step()  # the scheduler carries on; the broker refuses
    campaign.redis.start()
    campaign.run()
    campaign.assert_each_sent_exactly_once()
    # A worker that claimed a batch while Redis was down (the wait for a 429's pause, a place in
    # the send rate's window) put the mails it had not posted back.  Left `sending`, they would
    # be sent again by the scheduler only once it found no SendGrid event for them while others
    # came ("requeued"), or after a day; here every post is accepted and reported, so no mail
    # has a reason to be requeued.
    with campaign.app.engine.connect() as conn:
        requeued = [(mid, entry) for mid, log in conn.execute(
            select(Message.id, Message.attempt_log)) for entry in log
            if entry["outcome"] == "requeued"]
    assert not requeued, f"left sending, then requeued: {requeued[:3]}"


def test_sendgrid_failing_a_fifth_of_requests_and_rate_limiting_some_sends_each_mail_once(
        campaign: Campaign, fake: FakeSendGrid) -> None:
    fake.state.fail_share, fake.state.limit_share, fake.state.reset_in = 0.2, 0.02, 1
    # The outbox fails a mail refused MAX_ATTEMPTS times for good (by design: README, retries).
    # A fifth of requests refused at random would do that to one of the 2,000 mails in about
    # one run in 200 (2,000 x 0.2 ** 8), so the stand-in refuses no mail that often: this test
    # is about exactly once, not about giving up (test_outbox covers that).
    fake.state.max_refusals = MAX_ATTEMPTS - 1
    campaign.start_worker()
    campaign.start_worker()
    campaign.run()
    campaign.assert_each_sent_exactly_once()
    answers = fake.state.answers
    assert answers.get(500, 0) > MAILS // 10 and answers.get(429, 0) > 0
    with campaign.app.engine.connect() as conn:
        retried = conn.execute(select(func.count()).select_from(Message).where(
            Message.attempts > 1)).scalar_one()
    assert retried > 0  # the 500s were retried, recorded on their rows
