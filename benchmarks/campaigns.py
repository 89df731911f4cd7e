"""Benchmark: a campaign's start (its audience fixed, every outbox row written) and its delivery.

Run:  uv run python -m benchmarks.campaigns                     # 1M customers, audience 500k,
                                                                #   100k mails delivered
      uv run python -m benchmarks.campaigns --customers 100000 --audience 50000 \\
          --delivery-mails 5000                                 # a quick run

PostgreSQL (a fresh database each part) and Redis. In one run it measures, each beside its
reference:

* **start**: ``--customers`` customers, the first ``--audience`` of them in the segment
  ``vip`` (memberships written set-based; one in :data:`NO_CONSENT_EVERY` has no marketing
  consent, so the audience logic has some to leave out).  Time from ``Campaigns.start`` —
  the audience fixed into ``campaign_members`` and every mail written, in one transaction,
  committed — to the commit; beside a plain ``INSERT … SELECT`` of the same rows (the
  mailed customers' messages columns copied from ``customers``, without the audience
  logic) into an empty copy of ``messages`` with the same indexes (``LIKE … INCLUDING
  ALL``: without its foreign keys), timed the same way.
* **delivery**: ``--delivery-mails`` flow mails (``thank_you``, as ``benchmarks.delivery``
  writes them: :func:`tests.factories.add_campaign`) and then a campaign
  (``vip_early_access``) to as many other customers, each handed out by ``dispatch`` to
  Redis and sent by ``--workers`` ``lifecycle worker`` processes to the SendGrid stand-in
  (``benchmarks.delivery``'s machinery); mails per second from the first hand-out to the last
  ``sent`` commit.  Neither uses locales or recommendations (``benchmarks.delivery`` does by
  default), so the two differ only in being a flow's mails or a campaign's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from benchmarks.common import BENCH_SECRET, fresh_database
from benchmarks.delivery import KEY, REDIS_URL, ROOT, accepted, deliver_all, started_workers
from lifecycle.app import App
from lifecycle.campaigns.jobs import context_of, rules_of, tick
from lifecycle.campaigns.service import Campaigns
from lifecycle.campaigns.spec import parse_spec
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.models import Message
from lifecycle.tasks.broker import setup
from lifecycle.yamlfile import Located
from tests.factories import add_campaign, daytime_zone
from tests.ports import free_port

#: One customer of the audience in this many has no marketing consent (left out).
NO_CONSENT_EVERY = 100
SPEC: dict[str, Any] = {"kind": "marketing", "send": {"template": "vip_early_access"},
                        "audience": {"segments": ["vip"]}, "schedule": "now"}


def load_customers(app: App, first: int, n: int, in_segment: int, prefix: str,
                   no_consent_every: int = 0) -> None:
    """``n`` customers (numbered from ``first`` on, in a zone where it is day; one in
    ``no_consent_every`` without marketing consent), the first ``in_segment`` of them in
    ``vip``: two set-based statements."""
    now = app.clock.now()
    with app.engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO customers (external_id, email, first_name, timezone, attributes,
                                   marketing_consent, created_at, updated_at)
            SELECT :prefix || g, :prefix || g || '@example.com', 'Sam', :tz, '{}',
                   (CAST(:every AS INTEGER) = 0 OR g % CAST(:every AS INTEGER) <> 0), :now, :now
            FROM generate_series(CAST(:first AS BIGINT), CAST(:last AS BIGINT)) AS g"""),
                     {"prefix": prefix, "tz": daytime_zone(now), "every": no_consent_every,
                      "now": now, "first": first, "last": first + n - 1})
        conn.execute(text("""
            INSERT INTO segment_memberships (customer_id, segment, entered_at, reason)
            SELECT id, 'vip', :now, '{}' FROM customers
            WHERE external_id LIKE :prefix || '%' ORDER BY id LIMIT :k"""),
                     {"now": now, "prefix": prefix, "k": in_segment})
    with app.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")  # as autovacuum keeps a live database


def scheduled_campaign(app: App, name: str) -> Any:
    spec = parse_spec(Located(f"campaign {name}", SPEC, {}), name, context_of(app))
    now = app.clock.now()
    with app.engine.begin() as conn:
        Campaigns(conn).create(spec, SPEC, "bench", "benchmark", now)
        Campaigns(conn).schedule(name, spec, "bench", now)
    return spec


def measure_start(url: str, customers: int, audience: int) -> None:
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_SECRET_KEY": BENCH_SECRET}),
              clock=SystemClock())
    app.upgrade_database()
    try:
        began = time.perf_counter()
        load_customers(app, 1, customers, audience, "c", NO_CONSENT_EVERY)
        print(f"loaded {customers:,} customers, {audience:,} in the segment, in "
              f"{time.perf_counter() - began:.0f} s")
        spec = scheduled_campaign(app, "spring")
        rules = rules_of(app)
        with app.engine.connect() as conn:
            row = Campaigns(conn).get("spring")
        began = time.perf_counter()
        with app.engine.begin() as conn:
            written = Campaigns(conn).start(row, spec, rules, app.clock.now())
        start = time.perf_counter() - began
        assert written is not None
        with app.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE plain_messages (LIKE messages INCLUDING ALL)")
        began = time.perf_counter()
        with app.engine.begin() as conn:
            copied = conn.execute(text("""
                INSERT INTO plain_messages (idempotency_key, customer_id, template, to_email,
                    status, due_at, attempts, context, attempt_log, created_at, updated_at)
                SELECT 'plain:' || id, id, 'vip_early_access', email, 'scheduled', :now, 0,
                       CAST(:context AS JSONB),
                       CAST('[]' AS JSONB), :now, :now
                FROM customers WHERE id <= :last AND marketing_consent"""),
                {"now": app.clock.now(), "last": audience,
                 "context": '{"marketing":true,"capped":true,"campaign":"spring"}'}).rowcount
        plain = time.perf_counter() - began
        with app.engine.connect() as conn:
            members = conn.execute(text("SELECT COUNT(*) FROM campaign_members")).scalar_one()
            rows = conn.execute(select(func.count()).select_from(Message)).scalar_one()
    finally:
        app.close()
    assert copied == written == rows, (copied, written, rows)
    print(f"\nPostgreSQL, {customers:,} customers; audience {members:,} "
          f"({members - written:,} left out); reference measured in this run")
    print(f"{'reference: plain INSERT … SELECT of the rows':<52}{plain:8.2f} s "
          f"{copied / plain:10,.0f} rows/s  1.00x")
    print(f"{'Campaigns.start: audience fixed + every mail':<52}{start:8.2f} s "
          f"{written / start:10,.0f} rows/s {start / plain:5.2f}x the time")


def deliver(app: App, label: str, before: int = 0) -> tuple[float, int]:
    """:func:`benchmarks.delivery.deliver_all`; (its seconds, mails sent in all, ``before``
    of them earlier)."""
    took = deliver_all(app)
    with app.engine.connect() as conn:
        sent = conn.execute(select(func.count()).select_from(Message).where(
            Message.status == "sent")).scalar_one()
    print(f"{label}: {sent - before:,} sent in {took:.1f} s")
    return took, int(sent)


def measure_delivery(url: str, mails: int, workers: int, threads: int) -> None:
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_sendgrid", "--port", str(port),
                             "--api-key", KEY, "--no-bodies"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    fake.stdout.readline()  # listening
    env = {**os.environ, "LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_BROKER_URL": REDIS_URL,
           "LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": KEY,
           "SENDGRID_API_HOST": f"http://127.0.0.1:{port}", "LIFECYCLE_SECRET_KEY": BENCH_SECRET,
           "LIFECYCLE_WORKER_THREADS": str(threads), "LIFECYCLE_LOG_LEVEL": "WARNING"}
    app = App(load_settings(env), clock=SystemClock())
    app.upgrade_database()
    processes: list[subprocess.Popen] = []
    try:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        with app.engine.begin() as conn:
            add_campaign(conn, mails, app.clock.now())
        load_customers(app, 1, mails, mails, "k")
        broker = setup(REDIS_URL)
        processes = [subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], cwd=ROOT,
                                      env=env) for _ in range(workers)]
        started_workers(app, processes)
        flow_took, flow_sent = deliver(app, "flow mails")
        scheduled_campaign(app, "spring")
        began = time.perf_counter()
        assert tick(app) == 1
        print(f"campaign started ({mails:,} mails written) in {time.perf_counter() - began:.1f} s")
        campaign_took, all_sent = deliver(app, "campaign mails", flow_sent)
        broker.close()
    finally:
        for w in processes:
            w.terminate()
        for w in processes:
            w.wait(30)
        app.close()
    by_fake = accepted(port)
    fake.terminate()
    fake.wait(10)
    campaign_sent = all_sent - flow_sent
    assert flow_sent == mails and by_fake == all_sent, "the stand-in's log disagrees"
    flow_rate, campaign_rate = flow_sent / flow_took, campaign_sent / campaign_took
    print(f"\nPostgreSQL + Redis, {workers} worker processes x {threads} threads; "
          "reference measured in this run")
    print(f"{'reference: flow mails (benchmarks.delivery)':<52}{flow_rate:8.0f} mails/s  1.00x")
    print(f"{'campaign mails':<52}{campaign_rate:8.0f} mails/s "
          f"{campaign_rate / flow_rate:5.2f}x   ({campaign_sent:,} in {campaign_took:.1f} s)")
    print(f"{'accepted by the stand-in (each once)':<52}{by_fake:8d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--audience", type=int, default=500_000)
    parser.add_argument("--delivery-mails", type=int, default=100_000,
                        help="mails of each kind delivered (0: skip the delivery part)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-start", action="store_true", help="only the delivery part")
    args = parser.parse_args()
    if args.audience > args.customers:
        parser.error("--audience cannot be more than --customers")
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_start:
            measure_start(fresh_database("postgresql", Path(folder), "campaigns"),
                          args.customers, args.audience)
        if args.delivery_mails:
            measure_delivery(fresh_database("postgresql", Path(folder), "campaigns_delivery"),
                             args.delivery_mails, args.workers, args.threads)


if __name__ == "__main__":
    main()
