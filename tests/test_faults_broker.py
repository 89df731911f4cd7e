"""Faults before a mail is handed over: Redis stopped mid-batch, the database failing while
rendering; and what a worker makes of a Redis that is not there at all.

The process tests run a real ``lifecycle worker`` (one thread, so the batch in hand is known)
on a Redis of their own (killed and started again here, never the shared one), the SendGrid
stand-in as witness, and the real scheduler job (:class:`~lifecycle.scheduler.MailJob`) in a
thread of the test process.  No SendGrid event is fed back: a mail left ``sending`` would stay
so (with the webhook silent the outbox waits a day), so every mail ending ``sent``, by the
worker's own record, shows that none was stranded.  The lease is long
(:data:`LEASE`): mail that went out only when it ran out would fail the timing asserts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from lifecycle import runtime
from lifecycle.app import App
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.mail.rate import SendRate
from lifecycle.mail.sending import NOT_TRIED, SEND_BATCH, dispatch, send_batch
from lifecycle.models import Message, Touchpoint
from lifecycle.processes import prepare, running_scheduler
from lifecycle.scheduler import Job, MailJob
from lifecycle.tasks import broker as broker_module
from tests.factories import add_campaign
from tests.fake_sendgrid import FakeSendGrid
from tests.ports import free_port
from tests.private_redis import PrivateRedis
from tests.test_delivery_faults import FAULT_SECRET, stop_workers

ROOT = Path(__file__).resolve().parent.parent
KEY = "SG.broker-faults"
MAILS = 300
#: The send (and queue) lease: a mail that waited it out would take this long.
LEASE = 60.0
#: Posts the stand-in accepts before Redis is stopped: inside the first batch of SEND_BATCH.
STOP_AFTER = 20


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(log_bodies=False)
    server.state.api_key = KEY
    server.start()
    yield server
    server.stop()


def wait_for(check: Callable[[], object], seconds: float, what: str) -> float:
    """Poll ``check`` until it is true; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"gave up after {seconds} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


class Run:
    """A campaign of :data:`MAILS` mails, a worker process, the scheduler's mail job."""

    def __init__(self, database_url: str, redis: PrivateRedis, fake: FakeSendGrid,
                 folder: Path, **extra: str) -> None:
        self.env = {**{k: v for k, v in os.environ.items()
                       if not k.startswith(("LIFECYCLE_", "SENDGRID_"))},
                    "LIFECYCLE_DATABASE_URL": database_url, "LIFECYCLE_BROKER_URL": redis.url,
                    "LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": KEY,
                    "SENDGRID_API_HOST": fake.url, "LIFECYCLE_SECRET_KEY": FAULT_SECRET,
                    "LIFECYCLE_WORKER_THREADS": "1", "LIFECYCLE_TICK_SECONDS": "0.2",
                    "LIFECYCLE_SEND_LEASE_SECONDS": str(LEASE), "LIFECYCLE_SEND_TIMEOUT": "5",
                    "LIFECYCLE_SETTLE_SECONDS": "2", "LIFECYCLE_RETRY_BASE_SECONDS": "0.2",
                    "LIFECYCLE_LOG_LEVEL": "WARNING", "LIFECYCLE_OUTBOX_DIR": str(folder),
                    **extra}
        self.app = App(load_settings(self.env), clock=SystemClock())
        self.redis, self.fake, self.folder = redis, fake, folder
        self.workers: list[subprocess.Popen[bytes]] = []
        with self.app.engine.begin() as conn:
            self.ids = sorted(add_campaign(conn, MAILS, self.app.clock.now()))
        # Dispatch hands mails out by due time, then id: the first broker message holds these.
        self.first_batch = set(self.ids[:SEND_BATCH])

    def start_worker(self) -> None:
        log = open(self.folder / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        self.workers.append(subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"],
                                             cwd=ROOT, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT))

    @contextmanager
    def scheduler(self) -> Iterator[None]:
        """The scheduler's mail job, as ``lifecycle scheduler`` runs it, in a thread."""
        broker = prepare(self.app)
        try:
            with running_scheduler(self.app, [Job("mail.dispatch", 0.0, MailJob())]):
                yield
        finally:
            runtime.set_app(None)
            broker.close()
            broker_module.setup(None)

    def accepted(self) -> list[int]:
        with self.fake.state.lock:
            return [int(r["custom_args"]["lifecycle_message_id"]) for r in self.fake.state.accepted]

    def rows(self) -> dict[int, object]:
        with self.app.engine.connect() as conn:
            return {row.id: row for row in conn.execute(select(Message.__table__))}

    def count(self, *statuses: str) -> int:
        with self.app.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Message).where(
                Message.status.in_(statuses))).scalar_one())

    def close(self) -> None:
        stop_workers(self.workers)
        self.app.close()

    def assert_each_sent_exactly_once_by_its_worker(self) -> None:
        """The stand-in accepted each mail once; each is ``sent`` with SendGrid's id and one
        ``email_sent``, recorded by the worker that posted it: none was left ``sending`` (no
        "no answer", no settlement by an event, no "outcome unknown")."""
        witness = Counter(self.accepted())
        assert not {mid: n for mid, n in witness.items() if n > 1}, "sent more than once"
        assert set(witness) == set(self.ids)
        rows = self.rows()
        assert {row.status for row in rows.values()} == {"sent"}  # type: ignore[attr-defined]
        with self.fake.state.lock:
            by_ours = {int(r["custom_args"]["lifecycle_message_id"]): r["x_message_id"]
                       for r in self.fake.state.accepted}
        assert {mid: row.provider_message_id for mid, row in rows.items()} == by_ours  # type: ignore[attr-defined]
        for row in rows.values():
            outcomes = [entry["outcome"] for entry in row.attempt_log]  # type: ignore[attr-defined]
            assert outcomes[-1] == "sent" and set(outcomes) <= {"sent", "later"}, outcomes
        with self.app.engine.connect() as conn:
            timeline = Counter(conn.execute(select(Touchpoint.message_id).where(
                Touchpoint.kind == "email_sent")).scalars())
        assert timeline == Counter(set(self.ids))


@pytest.fixture
def run_env(fresh_database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
            tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def make(**extra: str) -> Run:
        url = make_url(fresh_database_url).render_as_string(hide_password=False)
        runs.append(Run(url, redis_server, fake, tmp_path, **extra))
        return runs[-1]

    yield make
    for run in runs:
        run.close()


def not_tried(row: object) -> bool:
    return any(entry.get("detail", "").startswith(NOT_TRIED)
               for entry in row.attempt_log)  # type: ignore[attr-defined]


def stop_redis_mid_batch(run: Run, caplog: pytest.LogCaptureFixture) -> int:
    """Start the worker and the scheduler, stop Redis once the stand-in accepted
    :data:`STOP_AFTER` posts (inside the first batch), wait until the worker let go of its
    batch and the scheduler saw the outage; how many posts the stand-in had at the stop."""
    run.fake.state.delay = 0.02  # a batch of 100 takes two seconds: the stop lands inside it
    run.start_worker()
    wait_for(lambda: len(run.accepted()) >= STOP_AFTER, 90, "the worker's first posts")
    run.redis.kill()
    seen = len(run.accepted())
    run.fake.state.delay = 0.0
    assert 0 < seen < SEND_BATCH, "the stop landed inside the first batch"
    wait_for(lambda: run.count("sending") == 0, 30, "the worker lets go of its batch")
    time.sleep(1)  # the scheduler ticks a few times while Redis is away
    return seen


def restart_redis_and_time_the_rest(run: Run, caplog: pytest.LogCaptureFixture) -> float:
    """Start Redis again; the seconds until every mail is sent (asserted well under the lease
    the queued ones would otherwise wait out)."""
    run.redis.start()
    took = wait_for(lambda: run.count("sent") == MAILS, LEASE, "every mail sent")
    print(f"every mail sent {took:.1f} s after Redis came back (lease {LEASE:.0f} s)")
    assert took < LEASE / 3, f"{took:.1f} s after Redis came back; the lease is {LEASE:.0f} s"
    assert "The broker does not answer" in caplog.text  # the scheduler saw the outage …
    assert "The broker answers again as a new server" in caplog.text  # … and the new Redis
    return took


def test_redis_stopped_mid_batch_with_a_send_rate_puts_the_unposted_mails_back_and_sends_them_once_it_returns(  # noqa: E501
        run_env: Callable[..., Run], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lifecycle")
    run = run_env(LIFECYCLE_SEND_RATE="1000")  # each post takes its place in Redis's window
    try:
        with run.scheduler():
            seen = stop_redis_mid_batch(run, caplog)
            during = run.accepted()
            # The batch stopped at the stop: at most the post already under way went out after it.
            assert len(during) <= seen + 1
            rows = run.rows()
            assert {mid for mid, row in rows.items() if row.status == "sent"} == set(during)  # type: ignore[attr-defined]
            for mid in run.first_batch - set(during):  # the rest of the batch: back, untried
                row = rows[mid]
                assert row.status == "scheduled" and row.attempts == 0 and not_tried(row), row  # type: ignore[attr-defined]
                assert "ConnectionError" in row.last_error  # type: ignore[attr-defined]
            assert {row.status for row in rows.values()} <= {"sent", "scheduled", "queued"}  # type: ignore[attr-defined]
            assert len(run.accepted()) == len(during)  # nothing went out while Redis was away
            restart_redis_and_time_the_rest(run, caplog)
        run.assert_each_sent_exactly_once_by_its_worker()
    finally:
        run.close()


def test_redis_stopped_mid_batch_without_a_send_rate_lets_the_batch_finish_and_queued_mail_go_out_once_it_returns(  # noqa: E501
        run_env: Callable[..., Run], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lifecycle")
    run = run_env(LIFECYCLE_SEND_RATE="0")
    try:
        with run.scheduler():
            seen = stop_redis_mid_batch(run, caplog)
            during = run.accepted()
            # Sending needs nothing of Redis without a rate: the batch went on after the stop.
            assert run.first_batch <= set(during) and len(during) > seen + 1
            rows = run.rows()
            assert {mid for mid, row in rows.items() if row.status == "sent"} == set(during)  # type: ignore[attr-defined]
            assert not [mid for mid, row in rows.items() if not_tried(row)]
            # The ids of the other batches were in Redis: lost with it, their rows queued.
            assert {row.status for row in rows.values()} == {"sent", "queued"}  # type: ignore[attr-defined]
            restart_redis_and_time_the_rest(run, caplog)
        run.assert_each_sent_exactly_once_by_its_worker()
    finally:
        run.close()


def test_a_database_error_while_rendering_puts_the_batch_back_untried_and_it_goes_out_once_mended(  # noqa: E501
        run_env: Callable[..., Run]) -> None:
    run = run_env()
    try:
        # Rendering reads the orders; claiming does not: every batch is claimed, then fails.
        with run.app.engine.begin() as conn:
            conn.execute(text("ALTER TABLE orders RENAME TO orders_away"))
        with run.scheduler():
            run.start_worker()
            wait_for(lambda: sum(not_tried(r) for r in run.rows().values()) >= SEND_BATCH, 90,
                     "a batch put back")
            rows = run.rows()
            assert run.accepted() == []  # nothing reached SendGrid
            assert not {row.status for row in rows.values()} & {"failed", "sent"}  # type: ignore[attr-defined]
            back = [row for row in rows.values() if not_tried(row)]
            assert all("orders" in row.attempt_log[-1]["detail"] for row in back  # type: ignore[attr-defined]
                       if row.status == "scheduled")  # type: ignore[attr-defined]
            with run.app.engine.begin() as conn:
                conn.execute(text("ALTER TABLE orders_away RENAME TO orders"))
            mended = time.monotonic()
            wait_for(lambda: run.count("sent") == MAILS, LEASE, "every mail sent")
            assert time.monotonic() - mended < LEASE / 3
        run.assert_each_sent_exactly_once_by_its_worker()
        assert all(row.attempts == 1 for row in run.rows().values())  # type: ignore[attr-defined]
    finally:
        run.close()


REFUSE_PUT_BACK = {
    "postgresql": [
        "CREATE FUNCTION refuse_put_back() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the test refuses every put back'; END $$",
        "CREATE TRIGGER refuse_put_back BEFORE UPDATE ON messages FOR EACH ROW "
        "WHEN (NEW.status = 'scheduled') EXECUTE FUNCTION refuse_put_back()"],
    "sqlite": [
        "CREATE TRIGGER refuse_put_back BEFORE UPDATE ON messages "
        "WHEN NEW.status = 'scheduled' BEGIN "
        "SELECT RAISE(ABORT, 'the test refuses every put back'); END"]}


def test_a_database_failing_while_rendering_and_while_putting_back_holds_the_batch_until_it_mends(  # noqa: E501
        run_env: Callable[..., Run]) -> None:
    run = run_env()
    backend = run.app.engine.dialect.name
    try:
        with run.app.engine.begin() as conn:  # rendering fails, and so does the put back
            conn.execute(text("ALTER TABLE orders RENAME TO orders_away"))
            for statement in REFUSE_PUT_BACK[backend]:
                conn.execute(text(statement))
        worker_log = run.folder / "worker-0.log"
        with run.scheduler():
            run.start_worker()
            wait_for(lambda: run.count("sending") == SEND_BATCH, 90, "the first batch claimed")
            time.sleep(2)  # rendering fails at once, then the put back, again and again
            assert run.count("sending") == SEND_BATCH  # held while the worker tries again
            assert run.accepted() == []
            with run.app.engine.begin() as conn:
                conn.execute(text("DROP TRIGGER refuse_put_back" +
                                  (" ON messages" if backend == "postgresql" else "")))
                conn.execute(text("ALTER TABLE orders_away RENAME TO orders"))
            mended = time.monotonic()
            wait_for(lambda: run.count("sent") == MAILS, LEASE, "every mail sent")
            assert time.monotonic() - mended < LEASE / 3  # not settled after the lease
        assert "could not be recorded as put back untried" in worker_log.read_text()
        run.assert_each_sent_exactly_once_by_its_worker()
        assert all(row.attempts == 1 for row in run.rows().values())  # type: ignore[attr-defined]
    finally:
        run.close()


# ------------------------------------------------- a worker whose Redis is not there at all

def nowhere_app(database_url: str, fake: FakeSendGrid, rate: str) -> App:
    url = make_url(database_url).render_as_string(hide_password=False)
    return App(load_settings({"LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_MAIL_TRANSPORT": "sendgrid",
                              "SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": fake.url,
                              "LIFECYCLE_SECRET_KEY": FAULT_SECRET, "LIFECYCLE_SEND_RATE": rate}),
               clock=SystemClock())


@contextmanager
def redis_nowhere() -> Iterator[None]:
    """The process's broker: Redis on a port where nothing listens."""
    broker = broker_module.setup(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield
    finally:
        broker.close()
        broker_module.setup(None)


def test_without_a_send_rate_a_worker_whose_redis_is_away_sends_its_batch(
        fresh_database_url: str, fake: FakeSendGrid) -> None:
    app = nowhere_app(fresh_database_url, fake, "0")
    try:
        with app.engine.begin() as conn:
            ids = add_campaign(conn, 3, app.clock.now())
        batches: list[list[int]] = []
        dispatch(app, batches.append)
        with redis_nowhere():
            assert send_batch(app, batches[0])["sent"] == 3
        assert sorted(int(r["custom_args"]["lifecycle_message_id"])
                      for r in fake.state.accepted) == sorted(ids)
        with app.engine.connect() as conn:
            assert set(conn.execute(select(Message.status)).scalars()) == {"sent"}
    finally:
        app.close()


def test_with_a_send_rate_a_worker_whose_redis_is_away_puts_its_batch_back_due_at_once(
        fresh_database_url: str, fake: FakeSendGrid) -> None:
    app = nowhere_app(fresh_database_url, fake, "10")
    try:
        with app.engine.begin() as conn:
            add_campaign(conn, 3, app.clock.now())
        batches: list[list[int]] = []
        dispatch(app, batches.append)
        with redis_nowhere():
            assert send_batch(app, batches[0])["later"] == 3
        assert fake.state.accepted == []
        with app.engine.connect() as conn:
            rows = conn.execute(select(Message.__table__)).all()
        for row in rows:  # not `sending`, where SendGrid's mail would wait for an event
            assert row.status == "scheduled" and row.attempts == 0 and not_tried(row)
            assert row.due_at <= row.updated_at  # no lease, no retry wait: due at once
        # The next dispatch after Redis answers hands them out again.
        assert dispatch(app, batches.append) == 3
    finally:
        app.close()


def test_a_pause_after_a_429_that_redis_cannot_share_still_holds_back_its_own_process() -> None:
    import redis

    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        rate = SendRate(0, client)
        rate.pause(0.5)  # Redis refuses it: kept in the process, not raised
        started = time.monotonic()
        rate.wait_for_pause()  # the shared pause unreadable: this process's own still holds
        assert time.monotonic() - started >= 0.4
    finally:
        client.close()


def test_ids_the_broker_refuses_are_handed_out_again_at_the_next_dispatch_not_after_their_lease(
        app: App) -> None:
    with app.engine.begin() as conn:
        ids = add_campaign(conn, 3, app.clock.now())

    def refuse(batch: list[int]) -> None:
        raise ConnectionError("the broker is away")

    assert dispatch(app, refuse) == 3
    app.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    batches: list[list[int]] = []
    assert dispatch(app, batches.append) == 3
    assert sorted(batches[0]) == sorted(ids)
