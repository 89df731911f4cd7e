"""Benchmark: SendGrid event posts through the signed webhook, end to end.

Run:  uv run python -m benchmarks.webhooks [--mails 20000] [--batch 1000]
      [--backend postgresql|sqlite]

``--mails`` mails are sent (file transport) so that events match real rows;
then ``lifecycle web`` runs in a process of its own and the benchmark posts
every mail's processed, delivered, open and click events (4 per mail) in
signed batches of ``--batch`` over one keep-alive connection: each post is
verified, parsed, stored once, and applied (a touchpoint per event).  Then it
posts the first tenth of the batches again (SendGrid's retries: duplicates,
which change nothing).

Reference, measured in the same run: a plain ``INSERT`` (executemany) of the
same events into a table shaped like ``provider_events`` (no checks, no
touchpoints) — what storing them costs at the least.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.engine import make_url

from benchmarks.common import BENCH_SECRET, fresh_database
from lifecycle.app import App
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Message, Touchpoint
from lifecycle.models.base import JSONType
from tests.factories import add_campaign, webhook_headers, webhook_key
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("processed", "delivered", "open", "click")


def events_for(mails: list[tuple[int, str]], start: float) -> list[dict]:
    return [{"event": kind, "sg_event_id": f"{mid}-{kind}", "sg_message_id": f"sg{mid}.filter",
             "email": email, "timestamp": int(start) + i, "lifecycle_message_id": str(mid),
             "lifecycle_flow": "thank_you", "lifecycle_step": "thanks",
             "category": ["flow:thank_you"],
             **({"url": "https://shop.example/tea"} if kind == "click" else {}),
             **({"useragent": "Mozilla/5.0", "ip": "192.0.2.1"} if kind in ("open", "click")
                else {})}
            for i, (mid, email) in enumerate(mails) for kind in KINDS]


def reference_rate(url: str, batches: list[list[dict]]) -> float:
    """Events per second for plain multi-row INSERTs of the same events (no checks)."""
    app = App(replace(load_settings({}), database_url=make_url(url)))
    table = Table("bench_plain_events", MetaData(),
                  Column("id", Integer, primary_key=True), Column("event_id", String(100)),
                  Column("event", String(40)), Column("email", String(320)),
                  Column("occurred_at", DateTime(timezone=True)), Column("data", JSONType))
    table.create(app.engine)
    from datetime import UTC, datetime
    started = time.perf_counter()
    for batch in batches:
        with app.engine.begin() as conn:
            conn.execute(insert(table), [
                {"event_id": e["sg_event_id"], "event": e["event"], "email": e["email"],
                 "occurred_at": datetime.fromtimestamp(e["timestamp"], UTC), "data": e}
                for e in batch])
    took = time.perf_counter() - started
    table.drop(app.engine)
    app.close()
    return sum(map(len, batches)) / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    key, public = webhook_key()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        url = fresh_database(args.backend, Path(folder), "webhooks")
        env = {**os.environ, "LIFECYCLE_DATABASE_URL": url, "SENDGRID_WEBHOOK_PUBLIC_KEY": public,
               "LIFECYCLE_SECRET_KEY": BENCH_SECRET, "LIFECYCLE_LOG_LEVEL": "WARNING",
               "LIFECYCLE_OUTBOX_DIR": str(Path(folder) / "outbox")}
        settings = load_settings(env)
        app = App(settings, clock=SystemClock())
        app.upgrade_database()
        with app.engine.begin() as conn:
            add_campaign(conn, args.mails, app.clock.now())
        transport = FileTransport(settings.outbox_dir)
        while True:
            ids: list[int] = []
            dispatch(app, ids.extend)
            if not ids:
                break
            for start in range(0, len(ids), 500):
                send_batch(app, ids[start:start + 500], transport=transport)
        with app.engine.connect() as conn:
            mails = [(r.id, r.to_email) for r in conn.execute(select(Message.id, Message.to_email))]
        events = events_for(mails, time.time() - 3600)
        batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
        reference = reference_rate(url, batches)

        server = subprocess.Popen([sys.executable, "-m", "lifecycle", "web", "--port", str(port)],
                                  cwd=ROOT, env=env)
        try:
            for _ in range(100):
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                    break
                except OSError:
                    time.sleep(0.2)
            web = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

            def post(batch: list[dict]) -> dict:
                body = json.dumps(batch).encode()
                web.request("POST", "/webhooks/sendgrid/events", body=body,
                            headers=webhook_headers(key, body, int(time.time())))
                answer = web.getresponse()
                data = json.loads(answer.read())
                assert answer.status == 200, data
                return data

            started = time.perf_counter()
            stored = sum(post(batch)["stored"] for batch in batches)
            took = time.perf_counter() - started
            retried = batches[:max(1, len(batches) // 10)]
            started = time.perf_counter()
            duplicates = sum(post(batch)["duplicates"] for batch in retried)
            took_again = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)
        with app.engine.connect() as conn:
            touchpoints = conn.execute(select(func.count()).select_from(Touchpoint).where(
                Touchpoint.kind != "email_sent")).scalar_one()
        app.close()
    rate = len(events) / took
    print(f"\n{args.backend}, {len(events):,} events ({args.mails:,} mails x {len(KINDS)}) in "
          f"signed posts of {args.batch:,}; reference measured in this run")
    print(f"{'reference: plain INSERT of the same events, no checks':<52}"
          f"{reference:8.0f} events/s  1.00x")
    print(f"{'Lifecycle: POST /webhooks/sendgrid/events':<52}{rate:8.0f} events/s "
          f"{rate / reference:5.2f}x   ({took:.1f} s: verify, parse, store, apply)")
    again = sum(map(len, retried)) / took_again
    print(f"{'the same posts again (SendGrid retrying)':<52}{again:8.0f} events/s "
          f"{again / reference:5.2f}x   (duplicates: {duplicates:,})")
    print(f"{'stored / touchpoints made':<52}{stored:8d} / {touchpoints}")
    assert stored == len(events) == touchpoints, "an event was lost or applied twice"
    assert duplicates == sum(map(len, retried)), "a retried event was stored again"


if __name__ == "__main__":
    main()
