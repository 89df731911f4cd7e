"""Benchmark: the customer page of support staff, on a large timeline table.

Run:  uv run python -m benchmarks.pages [--touchpoints 10000000] [--mine 5000]
      [--requests 300] [--reuse]

PostgreSQL only (the production database).  The database holds
``--touchpoints`` timeline entries over 100,000 customers; one customer has
``--mine`` of them (orders, mails sent, delivered, opened, clicked, replies,
feedback, notes — the mail kinds tied to 1,000 mails that were sent).
``lifecycle web`` runs in a process of its own; a logged-in support user asks
over one keep-alive connection for: the customer page (first page of the
timeline, with profile, metrics, segments, flows and upcoming mails), the same
filtered by kind, a page deep in the past (a keyset cursor 4,000 entries
back), one sent mail, and the page of an ordinary customer.  Each is asked
``--requests`` times after a warm-up; p50 and p95 are printed.

References, measured in the same run: ``/healthz`` (one trivial query through
the same server and connection), and the timeline's own SQL (the first page of
the customer's entries) run straight on the database.

A full segment refresh runs once after loading (calibrated RFM scores, segment
stays and their timeline entries), so the page shows what it shows in production.

``--reuse`` keeps a database loaded by an earlier run when it holds the same
numbers (loading 10M rows takes minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy import text

from benchmarks.common import BENCH_SECRET, database_url, fresh_database
from lifecycle.config import PROJECT_ROOT
from lifecycle.db import make_engine
from lifecycle.models import Touchpoint
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.staff import add_staff
from lifecycle.timeline import page as timeline_page
from lifecycle.timeutil import UTC
from tests.ports import free_port

NAME = "pages"
FLOWS_DIR = PROJECT_ROOT / "flows"
CUSTOMERS = 100_000
MAILS = 1_000
PASSWORD = "benchmark password"
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
KINDS = ["order_placed", "email_sent", "email_delivered", "email_opened", "email_clicked",
         "replied", "feedback", "note"]


def _loaded(url: str, touchpoints: int, mine: int) -> bool:
    try:
        engine = make_engine(url)
        with engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM touchpoints")).scalar_one()
            own = conn.execute(text("SELECT count(*) FROM touchpoints WHERE customer_id = 1 "
                                    "AND kind NOT LIKE 'segment_%'")).scalar_one()
            moves = conn.execute(text("SELECT count(*) FROM touchpoints "
                                      "WHERE kind LIKE 'segment_%'")).scalar_one()
        engine.dispose()
        return (total - moves, own) == (touchpoints, mine)  # (the refresh adds segment moves)
    except Exception:  # no such database, or no schema yet
        return False


def load(url: str, touchpoints: int, mine: int) -> None:
    """Customers, orders, the customer's mails and the timeline, in set-based SQL."""
    subprocess.run([sys.executable, "-m", "lifecycle", "db", "upgrade"], check=True,
                   env={**os.environ, "LIFECYCLE_DATABASE_URL": url}, capture_output=True)
    engine = make_engine(url)
    indexes = list(Touchpoint.__table__.indexes)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO customers (external_id, email, first_name, last_name, timezone, "
            "attributes, marketing_consent, created_at, updated_at) "
            "SELECT 'c' || i, 'c' || i || '@example.com', 'Name' || i, 'Family', "
            "'Europe/Berlin', '{}'::jsonb, true, :now - interval '3 years', :now "
            "FROM generate_series(1, :n) AS i"), {"n": CUSTOMERS, "now": NOW})
        conn.execute(text(
            "INSERT INTO orders (external_id, customer_id, ordered_at, total, currency, "
            "status, items, created_at, updated_at) "
            "SELECT 'o' || i, 1 + (i % :n), :now - (i % 1000) * interval '1 day', "
            "10 + (i % 90), 'EUR', 'completed', '[]'::jsonb, :now, :now "
            "FROM generate_series(1, :orders) AS i"),
            {"n": CUSTOMERS, "now": NOW, "orders": CUSTOMERS * 2})
        conn.execute(text(
            "INSERT INTO messages (idempotency_key, customer_id, flow, step, template, "
            "to_email, status, due_at, attempts, sent_at, context, attempt_log, created_at, "
            "updated_at) "
            "SELECT 'bench:' || i, 1, 'thank_you', 'thanks', 'thank_you', 'c1@example.com', "
            "'sent', :now - i * interval '1 day', 1, :now - i * interval '1 day', "
            "'{}'::jsonb, '[]'::jsonb, :now, :now FROM generate_series(1, :mails) AS i"),
            {"now": NOW, "mails": MAILS})
        conn.execute(text(
            "INSERT INTO message_contents (message_id, subject, text, html, headers) "
            "SELECT id, 'Thank you for your order', repeat('A line of the mail. ', 100), "
            "'<p>' || repeat('A line of the mail. ', 200) || '</p>', '{}'::jsonb "
            "FROM messages"))
        for index in indexes:
            conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
        kinds = "ARRAY[" + ", ".join(f"'{k}'" for k in KINDS) + "]"
        # The customer's own entries: the mail kinds point at their mails.
        conn.execute(text(
            f"INSERT INTO touchpoints (customer_id, kind, channel, occurred_at, recorded_at, "
            f"message_id, data) "
            f"SELECT 1, ({kinds})[1 + i % 8], 'email', :now - i * interval '17 minutes', :now, "
            f"CASE WHEN i % 8 BETWEEN 1 AND 5 THEN 1 + (i % {MAILS}) END, "
            f"jsonb_build_object('flow', 'thank_you', 'step', 'thanks', 'subject', "
            f"'Thank you', 'text', 'A reply of the customer', 'score', 9, 'by', 'sue', "
            f"'order_id', 'o' || i, 'total', '12.00', 'nth', i) "
            f"FROM generate_series(1, :mine) AS i"), {"now": NOW, "mine": mine})
        conn.execute(text(
            f"INSERT INTO touchpoints (customer_id, kind, channel, occurred_at, recorded_at, "
            f"data) "
            f"SELECT 2 + (i % (:n - 1)), ({kinds})[1 + i % 8], 'email', "
            f":now - (i % 100000) * interval '13 minutes', :now, "
            f"jsonb_build_object('flow', 'thank_you', 'step', 'thanks') "
            f"FROM generate_series(1, :rest) AS i"),
            {"now": NOW, "n": CUSTOMERS, "rest": touchpoints - mine})
        for index in indexes:
            index.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    print(f"loaded {touchpoints:,} touchpoints in {time.perf_counter() - started:.0f} s")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    for _ in range(10):
        client.get(path).raise_for_status()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--touchpoints", type=int, default=10_000_000)
    parser.add_argument("--mine", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()

    url = database_url(NAME)
    if not (args.reuse and _loaded(url, args.touchpoints, args.mine)):
        url = fresh_database("postgresql", Path("."), NAME)
        load(url, args.touchpoints, args.mine)
    engine = make_engine(url)
    with engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM segment_calibrations")).scalar_one() == 0:
            # A full refresh: calibrated RFM scores and segment stays, as in production.
            started = time.perf_counter()
            refresh_all(conn, load_definitions(FLOWS_DIR / "segments.yaml"), NOW, NOW)
            print(f"segment refresh of {CUSTOMERS:,} customers: "
                  f"{time.perf_counter() - started:.0f} s")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM staff_users WHERE email = 'bench@shop.example'"))
        add_staff(conn, "bench@shop.example", "support", PASSWORD, NOW)
    with engine.connect() as conn:
        far = conn.execute(text(
            "SELECT occurred_at, id FROM touchpoints WHERE customer_id = 1 "
            "ORDER BY occurred_at DESC, id DESC OFFSET 4000 LIMIT 1")).one()
        cursor = f"{far.occurred_at.astimezone(UTC).isoformat()}~{far.id}"
        sql_times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            timeline_page(conn, 1)
            sql_times.append((time.perf_counter() - started) * 1000)

    port = free_port()
    env = {**os.environ, "LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_SECRET_KEY": BENCH_SECRET,
           "LIFECYCLE_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "lifecycle", "web", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(200):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            form = client.get("/login").text
            csrf = form.split('name="csrf" value="')[1].split('"')[0]
            client.post("/login", data={"csrf": csrf, "email": "bench@shop.example",
                                        "password": PASSWORD, "next": "/customers"})
            assert "sue" in client.get("/customers/1").text, "not logged in"
            figures = [
                ("reference: /healthz (one trivial query)", timed(client, "/healthz",
                                                                  args.requests)),
                ("reference: the timeline's SQL alone", sql_times),
                ("customer page, newest 50 entries", timed(client, "/customers/1",
                                                           args.requests)),
                ("customer page, only opens", timed(client, "/customers/1?kind=email_opened",
                                                    args.requests)),
                ("customer page, 4,000 entries back", timed(
                    client, "/customers/1?before=" + quote(cursor), args.requests)),
                ("one sent mail", timed(client, "/customers/1/mails/500", args.requests)),
                ("an ordinary customer (~100 entries)", timed(client, "/customers/777",
                                                             args.requests)),
            ]
    finally:
        server.terminate()
        server.wait(10)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM touchpoints")).scalar_one()
    engine.dispose()
    print(f"PostgreSQL, {total:,} touchpoints, the customer has {args.mine:,}; "
          f"{args.requests} requests each over one keep-alive connection")
    for label, samples in figures:
        p50, p95 = percentiles(samples)
        print(f"{label:<45} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms"
              + ("   (target p95 < 100 ms)" if label.startswith("customer page") else ""))


if __name__ == "__main__":
    main()
