"""Campaigns under faults, with real processes: every mailed customer gets exactly one mail.

A real campaign (:class:`Campaigns` ``create`` and ``schedule``) to :data:`AUDIENCE`
customers of a segment (and some it leaves out) is started by the scheduler's campaign job —
:func:`lifecycle.campaigns.jobs.tick` in the test process, or a real ``lifecycle scheduler``
process where the scheduler is the one killed (``tests/pause_at.py`` stops it at the exact
point).  Real ``lifecycle worker`` processes send it through the SendGrid stand-in on a Redis
of the test's own; the test process plays the scheduler's dispatch and SendGrid's Event
Webhook as in ``tests/test_delivery_faults.py``.  At the end the stand-in's log is the
witness: each customer mailed at most once, none lost, and the outbox,
``campaign_members`` and the campaign's status agree.

PostgreSQL only: the issue asks these on PostgreSQL + Redis, and the same worker processes
on SQLite are proven by ``tests/test_delivery_faults.py``; each test here starts two to
three processes, so one backend keeps the file fast enough to run twenty times in a row.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.campaigns.jobs import context_of, tick
from lifecycle.campaigns.model import CampaignChange, CampaignMember
from lifecycle.campaigns.service import Campaigns
from lifecycle.campaigns.spec import parse_spec
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.mail.outbox import Outbox
from lifecycle.mail.sending import dispatch
from lifecycle.models import Customer, Message, ProcessHeartbeat, SegmentMembership
from lifecycle.models.journeys import SegmentCalibration
from lifecycle.tasks.broker import build
from lifecycle.tasks.mail import send
from lifecycle.yamlfile import Located
from tests.factories import daytime_zone
from tests.fake_sendgrid import FakeSendGrid
from tests.private_redis import PrivateRedis
from tests.test_delivery_faults import FAULT_SECRET, post_events

ROOT = Path(__file__).resolve().parent.parent
KEY = "SG.campaign-faults"
#: Customers of the segment who are mailed; :data:`LEFT_OUT` more of it have no consent,
#: :data:`OUTSIDE` are in no segment of the campaign.
AUDIENCE, LEFT_OUT, OUTSIDE = 300, 10, 10
WAIT = 40.0  # seconds for anything a test waits for
NAME = "spring"


@pytest.fixture(scope="module", params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only (see the module doc)."""
    return str(request.param)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(log_bodies=False)
    server.state.api_key = KEY
    server.start()
    yield server
    server.stop()


def until(what: str, check: Callable[[], Any], step: Callable[[], None] | None = None) -> Any:
    """Poll ``check`` (running ``step`` between polls) until it is true; its value."""
    deadline = time.monotonic() + WAIT
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up after {WAIT} s: {what}"
        if step is not None:
            step()
        time.sleep(0.05)


class Run:
    """A shop with a campaign scheduled, its workers, scheduler and webhook pump."""

    def __init__(self, database_url: str, redis: PrivateRedis, fake: FakeSendGrid,
                 folder: Path, per_hour: int | None) -> None:
        flows = folder / "flows"  # the shop's segments and policies, and no flow to run
        flows.mkdir()
        for name in ("segments.yaml", "policies.yaml"):
            shutil.copy(ROOT / "flows" / name, flows / name)
        self.env = {**{k: v for k, v in os.environ.items()
                       if not k.startswith(("LIFECYCLE_", "SENDGRID_"))},
                    "LIFECYCLE_DATABASE_URL": database_url, "LIFECYCLE_BROKER_URL": redis.url,
                    "LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": KEY,
                    "SENDGRID_API_HOST": fake.url, "LIFECYCLE_SECRET_KEY": FAULT_SECRET,
                    "LIFECYCLE_WORKER_THREADS": "2", "LIFECYCLE_TICK_SECONDS": "0.2",
                    "LIFECYCLE_SEND_LEASE_SECONDS": "5", "LIFECYCLE_SETTLE_SECONDS": "1",
                    "LIFECYCLE_RETRY_BASE_SECONDS": "0.2", "LIFECYCLE_SEND_TIMEOUT": "2",
                    "LIFECYCLE_LOG_LEVEL": "WARNING", "LIFECYCLE_OUTBOX_DIR": str(folder),
                    "LIFECYCLE_FLOWS_DIR": str(flows)}
        self.app = App(load_settings(self.env), clock=SystemClock())
        self.fake, self.redis, self.folder = fake, redis, folder
        self.broker = build(redis.url)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.events_seen = 0
        now = self.app.clock.now()
        tz = daytime_zone(now)
        with self.app.engine.begin() as conn:
            ids = conn.execute(insert(Customer).returning(Customer.id), [
                {"external_id": f"c{i}", "email": f"c{i}@example.com", "first_name": "Sam",
                 "attributes": {}, "marketing_consent": i < AUDIENCE + OUTSIDE, "timezone": tz,
                 "created_at": now, "updated_at": now}
                for i in range(AUDIENCE + OUTSIDE + LEFT_OUT)]).scalars().all()
            in_segment = ids[:AUDIENCE] + ids[AUDIENCE + OUTSIDE:]
            conn.execute(insert(SegmentMembership), [
                {"customer_id": cid, "segment": "vip", "entered_at": now, "reason": {}}
                for cid in in_segment])
            # a refresh just ran: a scheduler process leaves the memberships as they are
            conn.execute(insert(SegmentCalibration).values(as_of=now, computed_at=now,
                                                           customers=len(ids), cutoffs={}))
        self.mailed = set(ids[:AUDIENCE])
        self.members = set(in_segment)
        raw: dict[str, Any] = {"kind": "marketing", "send": {"template": "vip_early_access"},
                               "audience": {"segments": ["vip"]}, "schedule": "now"}
        if per_hour is not None:
            raw["throttle"] = {"per_hour": per_hour}
        self.spec = parse_spec(Located(f"campaign {NAME}", raw, {}), NAME,
                               context_of(self.app))
        with self.app.engine.begin() as conn:
            Campaigns(conn).create(self.spec, raw, "max@shop.example", "test", now)
            Campaigns(conn).schedule(NAME, self.spec, "max@shop.example", now)

    # -- processes -----------------------------------------------------------
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

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A ``lifecycle worker``, once its threads run (its first heartbeat is written)."""
        worker = self.start("worker")

        def beating() -> bool:
            with self.app.engine.connect() as conn:
                return conn.execute(select(ProcessHeartbeat.name).where(
                    ProcessHeartbeat.pid == worker.pid,
                    ProcessHeartbeat.kind == "worker")).first() is not None

        until("the worker runs", beating)
        return worker

    def marker(self, point: str) -> Path:
        return self.folder / f"{point}.json"

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def close(self) -> None:
        """Kill what still runs: the test has its answer, and its database goes."""
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)
        self.broker.close()
        self.app.close()

    # -- the scheduler and the webhook, played here ----------------------------
    def pump_events(self) -> None:
        """SendGrid's Event Webhook: post the stand-in's new events."""
        self.events_seen = post_events(self.app, self.fake, self.events_seen)

    def step(self) -> None:
        """One tick of the scheduler's campaign and mail jobs, one webhook post."""
        tick(self.app)
        dispatch(self.app, lambda ids: self.broker.enqueue(send.message(ids)))
        self.pump_events()

    # -- what happened -------------------------------------------------------
    def accepted(self) -> list[int]:
        """Our message id of each mail the stand-in accepted, in order."""
        with self.fake.state.lock:
            return [int(r["custom_args"]["lifecycle_message_id"]) for r in self.fake.state.accepted]

    def statuses(self) -> dict[str, int]:
        with self.app.engine.connect() as conn:
            return dict(conn.execute(select(Message.status, func.count())  # type: ignore[arg-type]
                                     .group_by(Message.status)).all())

    def campaign(self) -> Any:
        with self.app.engine.connect() as conn:
            return Campaigns(conn).get(NAME)

    def settled(self, *end: str) -> bool:
        """The campaign is in one of ``end`` (``sent``: every mail of it settled)."""
        return self.campaign().status in end

    def run_to_the_end(self, step: Callable[[], None] | None = None) -> None:
        until(f"the campaign ends: {self.statuses()}", lambda: self.settled("sent"),
              step or self.step)

    def assert_each_mailed_customer_got_exactly_one(self, mailed: set[int] | None = None) -> None:
        """The stand-in's log: each customer of ``mailed`` (every mailed member) accepted
        once, nobody else; the outbox, ``campaign_members`` and the campaign agree."""
        mailed = self.mailed if mailed is None else mailed
        with self.app.engine.connect() as conn:
            customer_of = dict(conn.execute(select(Message.id, Message.customer_id)).all())
            members = dict(conn.execute(select(CampaignMember.customer_id,
                                               CampaignMember.left_out)).all())
            rows = conn.execute(select(Message.customer_id, Message.status)).all()
        witness = Counter(customer_of[mid] for mid in self.accepted())
        twice = sorted(cid for cid, n in witness.items() if n > 1)
        assert not twice, f"customers mailed twice: {twice[:10]}"
        lost = sorted(mailed - set(witness))
        assert not lost, f"customers never mailed: {lost[:10]}"
        assert set(witness) == mailed
        assert set(members) == self.members  # the audience fixed once, and whole
        assert {cid for cid, why in members.items() if why is None} == self.mailed
        assert Counter(cid for cid, _ in rows) == Counter(self.mailed)  # one row each
        assert {cid for cid, status in rows if status == "sent"} == mailed
        campaign = self.campaign()
        assert (campaign.audience_size, campaign.mailed) == (len(self.members), AUDIENCE)

    def starts_recorded(self) -> int:
        with self.app.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(CampaignChange).where(
                CampaignChange.action == "start")).scalar_one())


def _run(fresh_database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
         tmp_path: Path, per_hour: int | None) -> Iterator[Run]:
    url = make_url(fresh_database_url).render_as_string(hide_password=False)
    run = Run(url, redis_server, fake, tmp_path, per_hour)
    yield run
    run.close()


@pytest.fixture
def shop(fresh_database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
         tmp_path: Path) -> Iterator[Run]:
    """A campaign sent as fast as the workers go."""
    yield from _run(fresh_database_url, redis_server, fake, tmp_path, None)


@pytest.fixture
def throttled(fresh_database_url: str, redis_server: PrivateRedis, fake: FakeSendGrid,
              tmp_path: Path) -> Iterator[Run]:
    """A campaign throttled to 60 mails a second: in flight for five seconds."""
    yield from _run(fresh_database_url, redis_server, fake, tmp_path, 216_000)


def test_a_worker_killed_mid_campaign_leaves_each_customer_exactly_one_mail(
        shop: Run, fake: FakeSendGrid) -> None:
    fake.state.delay = 0.03  # each post takes a while: the kill lands inside a batch
    worker = shop.start_worker()
    assert tick(shop.app) == 1
    until("the worker has sent some", lambda: len(shop.accepted()) >= 50, shop.step)
    shop.kill(worker)  # the only worker: it held a claimed batch, posted and unposted
    assert shop.statuses().get("sending", 0) > 0
    shop.start_worker()
    shop.run_to_the_end()
    shop.assert_each_mailed_customer_got_exactly_one()
    with shop.app.engine.connect() as conn:
        entries = [entry for log in conn.execute(select(Message.attempt_log)).scalars()
                   for entry in log]
    # the killed worker's claimed mails were settled: found sent by their events where
    # SendGrid had them, sent again where it never had
    assert [e for e in entries if e["outcome"] == "requeued"
            or e.get("detail", "").startswith("settled by SendGrid's event")]


def test_a_scheduler_killed_before_and_after_a_campaign_starts_commits_starts_it_once(
        shop: Run) -> None:
    shop.start("worker")
    for point in ("campaign-start-before-commit", "campaign-start-after-commit"):
        scheduler = shop.start("scheduler", pause_at=point)
        until(f"the scheduler stops at {point}", shop.marker(point).exists)
        assert json.loads(shop.marker(point).read_text())["written"] == AUDIENCE
        shop.kill(scheduler)
        with shop.app.engine.connect() as conn:
            members = conn.execute(select(func.count()).select_from(CampaignMember)).scalar_one()
        if point == "campaign-start-before-commit":  # nothing of the start was written
            assert (shop.campaign().status, members, shop.statuses()) == ("scheduled", 0, {})
            assert shop.starts_recorded() == 0
        else:  # the next scheduler started it: all of it written, once
            assert shop.campaign().status == "sending"
            assert (members, shop.statuses()) == (len(shop.members), {"scheduled": AUDIENCE})
            assert shop.starts_recorded() == 1
            # the audience is fixed: a customer who joins the segment now gets nothing
            now = shop.app.clock.now()
            with shop.app.engine.begin() as conn:
                late = conn.execute(insert(Customer).values(
                    external_id="late", email="late@example.com", attributes={},
                    marketing_consent=True, timezone=daytime_zone(now), created_at=now,
                    updated_at=now).returning(Customer.id)).scalar_one()
                conn.execute(insert(SegmentMembership).values(
                    customer_id=late, segment="vip", entered_at=now, reason={}))
    assert shop.accepted() == []
    shop.start("scheduler")  # the next one goes on with it: hands the mails out, finishes it
    shop.run_to_the_end(shop.pump_events)
    assert shop.starts_recorded() == 1
    shop.assert_each_mailed_customer_got_exactly_one()


def _claimed_batch_in_flight(run: Run, fake: FakeSendGrid) -> None:
    """Start the throttled campaign with a worker slower than its rate (a backlog of
    ``queued`` mails), until it has sent a few."""
    fake.state.delay = 0.1  # 2 threads: 20 mails a second against a rate of 60
    run.start_worker()
    assert tick(run.app) == 1
    until("the worker is sending", lambda: len(run.accepted()) >= 20, run.step)


def _mid_batch(run: Run, action: Callable[[Any], int]) -> tuple[dict[str, set[int]], int]:
    """Run ``action`` (a manager's, in a transaction) at a moment when some of the campaign's
    mails are claimed by the worker, some queued and some scheduled, each row locked first
    (a worker's claim or outcome waits for the commit): what it found, and what it returned."""

    def locked() -> tuple[dict[str, set[int]], int] | None:
        with run.app.engine.begin() as conn:
            found: dict[str, set[int]] = {}
            for mid, status in conn.execute(select(Message.id, Message.status)
                                            .order_by(Message.id).with_for_update()):
                found.setdefault(status, set()).add(mid)
            if not {"sending", "queued", "scheduled"} <= set(found):
                return None  # (the commit changes nothing and lets the locks go)
            return found, action(conn)

    return until("mails are claimed, queued and scheduled at once", locked, run.step)


def test_a_campaign_paused_mid_batch_and_resumed_sends_each_mail_once_and_keeps_staffs_pauses(
        throttled: Run, fake: FakeSendGrid) -> None:
    run = throttled
    _claimed_batch_in_flight(run, fake)
    now = run.app.clock.now()
    with run.app.engine.begin() as conn:
        staff_held = conn.execute(select(Message.id).where(Message.status == "scheduled")
                                  .order_by(Message.id.desc()).limit(1)).scalar_one()
        assert Outbox(conn).hold(staff_held, "pause", now, "sam@shop.example")
    before, held = _mid_batch(run, lambda conn: Campaigns(conn).pause(
        NAME, "max@shop.example", run.app.clock.now()))
    claimed, waiting = before["sending"], before["queued"] | before["scheduled"]
    assert claimed and before["queued"] and held == len(waiting)
    # the claimed batch finishes; nothing held goes, however long the broker's ids wait
    fake.state.delay = 0.0
    until("the claimed batch is done", lambda: "sending" not in run.statuses(), run.step)
    for _ in range(10):
        run.step()
    sent_in_pause = set(run.accepted())
    assert sent_in_pause == before.get("sent", set()) | claimed
    assert run.statuses()["paused"] == len(waiting) + 1
    with run.app.engine.begin() as conn:
        assert Campaigns(conn).resume(NAME, run.spec, "max@shop.example",
                                      run.app.clock.now()) == len(waiting)
    until("the held mails are sent", lambda: run.statuses().get("paused") == 1
          and set(run.statuses()) == {"sent", "paused"}, run.step)
    assert run.campaign().status == "sending"  # support staff's pause still holds one
    staff_customer = _customer_of(run, staff_held)
    run.assert_each_mailed_customer_got_exactly_one(run.mailed - {staff_customer})
    with run.app.engine.begin() as conn:
        assert Outbox(conn).hold(staff_held, "resume", run.app.clock.now(), "sam@shop.example")
    run.run_to_the_end()
    run.assert_each_mailed_customer_got_exactly_one()


def _customer_of(run: Run, message_id: int) -> int:
    with run.app.engine.connect() as conn:
        return int(conn.execute(select(Message.customer_id).where(
            Message.id == message_id)).scalar_one())


def test_a_campaign_cancelled_mid_run_sends_only_what_a_worker_had_claimed(
        throttled: Run, fake: FakeSendGrid) -> None:
    run = throttled
    _claimed_batch_in_flight(run, fake)
    before, withdrawn = _mid_batch(run, lambda conn: Campaigns(conn).cancel(
        NAME, "max@shop.example", run.app.clock.now()))
    claimed = before["sending"]
    assert claimed and withdrawn == len(before["queued"] | before["scheduled"])
    until("the claimed batch is done", lambda: "sending" not in run.statuses(), run.step)
    for _ in range(10):
        run.step()
    witness = Counter(run.accepted())
    assert max(witness.values()) == 1
    after_cancel = set(witness) - before.get("sent", set())
    # the stand-in and the outbox agree on what still went: what the worker had claimed, but
    # for a mail it put back untried (its claim ending, on a loaded machine), which never goes:
    # the scheduler's tick withdraws it as the cancel did the rest
    put_back = claimed - after_cancel
    assert after_cancel <= claimed
    with run.app.engine.connect() as conn:
        by_status = {status: set(ids) for status, ids in _grouped(conn).items()}
    assert by_status == {"sent": set(witness),
                         "cancelled": before["queued"] | before["scheduled"] | put_back}
    assert run.campaign().status == "cancelled"


def _grouped(conn: Any) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for mid, status in conn.execute(select(Message.id, Message.status)):
        found.setdefault(status, []).append(mid)
    return found


def test_a_broker_restarted_mid_campaign_leaves_each_customer_exactly_one_mail(
        throttled: Run) -> None:
    run = throttled
    run.start_worker()
    assert tick(run.app) == 1
    until("a third is sent", lambda: len(run.accepted()) >= AUDIENCE // 3, run.step)
    run.redis.kill()  # every id on the broker is gone with it
    time.sleep(0.5)
    run.step()  # the scheduler carries on; the broker refuses
    run.redis.start()
    run.run_to_the_end()
    run.assert_each_mailed_customer_got_exactly_one()
