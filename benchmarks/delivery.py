"""Benchmark: mails end to end — render, send to a SendGrid stand-in on loopback, record.

Run:  uv run python -m benchmarks.delivery [--mails 50000] [--workers 2] [--threads 2]
      [--client pooled|official] [--backend postgresql|sqlite]

In one run it measures:

* reference: how fast a minimal keep-alive HTTP client (``http.client``, one
  connection, posting prepared mail/send payloads one after another: the first
  mails of this run's outbox, rendered and composed by the worker's code) can
  post to the same stand-in, which runs in a process of its own: the figure the
  ratio is taken against; the same client posting the small sample payload of
  earlier figures; and, for scale, as many clients in processes of their own
  as there are workers;
* Lifecycle: ``--mails`` outbox rows due now, handed out by ``dispatch`` to
  Redis and sent by ``--workers`` ``lifecycle worker`` processes with the
  ``sendgrid`` transport; mails per second from the first hand-out to the
  last ``sent`` commit, and due-to-sent latency p50 / p99.

The customers speak the shipped languages in turn (:data:`LOCALES`; ``--no-locales``:
none, the shop's default). Each customer's order holds one to three of :data:`CATALOG` products (with url and
image_url) and the products, co-purchase counts and suggestions are computed
before sending, so every mail's context carries its recommendations
(``--no-recommendations``: the orders hold one line without a SKU, as before).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select, update

from benchmarks.common import BENCH_SECRET, fresh_database
from lifecycle.app import App
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.mail.compose import compose
from lifecycle.mail.sending import dispatch
from lifecycle.mail.templates import Rendered
from lifecycle.mail.transports import sendgrid_payload
from lifecycle.models import Customer, Message, Order, ProcessHeartbeat
from lifecycle.recommendations.compute import refresh_products
from lifecycle.tasks.broker import setup
from lifecycle.tasks.mail import send
from tests.factories import add_campaign
from tests.ports import free_port

REDIS_URL = os.environ.get("LIFECYCLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
KEY = "SG.bench"
ROOT = Path(__file__).resolve().parent.parent


def _raw_poster(port: int, bodies: list[bytes], seconds: float,
                out: multiprocessing.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        conn.request("POST", "/v3/mail/send", body=bodies[done % len(bodies)], headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 202
        done += 1
    out.put(done)


def raw_rate(port: int, bodies: list[bytes], processes: int, seconds: float = 5.0) -> float:
    """Mails per second that ``processes`` keep-alive clients post, each posting ``bodies``
    in turn for ``seconds``."""
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_raw_poster, args=(port, bodies, seconds, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def cpu_seconds(match: str) -> float:
    """CPU time (user + system, seconds) used so far by the live processes whose command line
    starts with ``match`` (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().replace(b"\0", b" ").startswith(match.encode()):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def control(port: int, order: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/_control", body=json.dumps(order))
    return json.loads(conn.getresponse().read())


def accepted(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/_log")
    return len(json.loads(conn.getresponse().read())["accepted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    # On loopback the CPU is the limit and two threads per process keep it busy; against the
    # real API each request waits ~100 ms, and more threads (LIFECYCLE_WORKER_THREADS) pay.
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--client", choices=("pooled", "official"), default="pooled")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--no-recommendations", dest="recommendations", action="store_false")
    parser.add_argument("--no-locales", dest="locales", action="store_false",
                        help="every customer without a locale (the shop's default language)")
    args = parser.parse_args()
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_sendgrid", "--port", str(port),
                             "--api-key", KEY, "--no-bodies"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    fake.stdout.readline()  # listening
    workers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as folder:
        url = fresh_database(args.backend, Path(folder), "delivery")
        env = {**os.environ, "LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_BROKER_URL": REDIS_URL,
               "LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": KEY,
               "SENDGRID_API_HOST": f"http://127.0.0.1:{port}",
               "LIFECYCLE_SECRET_KEY": BENCH_SECRET, "LIFECYCLE_WORKER_THREADS": str(args.threads),
               "LIFECYCLE_SENDGRID_CLIENT": args.client, "LIFECYCLE_LOG_LEVEL": "WARNING"}
        if args.recommendations:
            env["LIFECYCLE_TEMPLATES_DIR"] = str(showing_recommendations(Path(folder)))
        settings = load_settings(env)
        app = App(settings, clock=SystemClock())
        app.upgrade_database()
        try:
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
            with app.engine.begin() as conn:
                add_campaign(conn, args.mails, app.clock.now())
                if args.locales:
                    with_locales(conn)
                if args.recommendations:
                    with_products(conn, app.clock.now())
            with app.engine.begin() as conn:
                # Planner statistics, as autovacuum keeps them on a live database: without them
                # a table loaded a second ago looks empty and every batch scans it whole.
                conn.exec_driver_sql("ANALYZE")
            # The reference posts this run's own mails, rendered and composed as a worker does
            # (a mail of each locale in turn), so it pays for the same bytes; and, for
            # comparison with earlier figures, the small payload it posted before.
            bodies = sample_payloads(app, settings)
            tiny = compose(settings, _Row(), Rendered("thank_you", "Thank you for your order",
                                                      "Thanks!\n" * 20, "<p>Thanks!</p>" * 40),
                           app.clock.now(), "2026-11-23")
            small = raw_rate(port, [json.dumps(sendgrid_payload(tiny)).encode()], 1)
            single = raw_rate(port, bodies, 1)
            reference = raw_rate(port, bodies, args.workers)
            control(port, {"reset": True})
            broker = setup(REDIS_URL)
            workers = [subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], cwd=ROOT,
                                        env=env) for _ in range(args.workers)]
            started_workers(app, workers)
            with app.engine.begin() as conn:  # due from now: latency counts from here
                conn.execute(update(Message).values(due_at=app.clock.now()))
            watched = {"workers": f"{sys.executable} -m lifecycle worker",
                       "PostgreSQL": "postgres:", "stand-in": f"{sys.executable} -m tests.fake_"}
            cpu_before = {name: cpu_seconds(match) for name, match in watched.items()}
            took = deliver_all(app)
            cpu = {name: cpu_seconds(match) - cpu_before[name] for name, match in watched.items()}
            with app.engine.connect() as conn:
                sent = conn.execute(select(func.count()).select_from(Message).where(
                    Message.status == "sent")).scalar_one()
                latencies = sorted(
                    (r.sent_at - r.due_at).total_seconds() for r in conn.execute(
                        select(Message.sent_at, Message.due_at).where(Message.sent_at.is_not(None))))
            broker.close()
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(30)
            app.close()
        sent_by_fake = accepted(port)
        fake.terminate()
        fake.wait(10)
    rate = args.mails / took
    print(f"\n{args.backend} + Redis, {args.workers} worker processes x {args.threads} threads, "
          f"{args.client} client, {args.mails:,} mails; reference measured in this run")
    size = sum(map(len, bodies)) / len(bodies)
    print(f"{'reference: minimal keep-alive client, 1 connection':<52}"
          f"{single:8.0f} mails/s  1.00x   (this run's mails, {size / 1024:.1f} KiB of JSON each)")
    print(f"{'reference: the same, posting a 1.3 KiB sample mail':<52}"
          f"{small:8.0f} mails/s {small / single:5.2f}x   (the payload of earlier figures; "
          f"Lifecycle {rate / small:.2f}x of it)")
    print(f"{'reference: the same, ' + str(args.workers) + ' in processes of their own':<52}"
          f"{reference:8.0f} mails/s {reference / single:5.2f}x")
    print(f"{'Lifecycle: dispatch -> Redis -> workers -> SendGrid':<52}{rate:8.0f} mails/s "
          f"{rate / single:5.2f}x   ({took:.1f} s; {rate / reference:.2f}x the "
          f"{args.workers} clients)")
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{'due-to-sent latency':<52}p50 {p50:.1f} s, p99 {p99:.1f} s")
    print(f"{'accepted by the stand-in (each once)':<52}{sent_by_fake:8d}")
    if args.backend == "sqlite":
        cpu.pop("PostgreSQL")
    print(f"{'CPU per mail (µs), while sending':<52}" + ", ".join(
        f"{name} {1e6 * seconds / args.mails:.0f}" for name, seconds in cpu.items())
        + f"; the machine has {os.cpu_count()} cores: {1e6 * (os.cpu_count() or 1) / rate:.0f}"
          " µs of CPU per mail elapsed")
    assert sent_by_fake == args.mails == sent, "the stand-in's log disagrees with the outbox"


def sample_payloads(app: App, settings: Any, count: int = 14) -> list[bytes]:
    """The SendGrid payloads of the first ``count`` mails of the outbox, rendered and
    composed by the worker's own code (:func:`lifecycle.mail.sending._render`, which only
    reads), as JSON bytes."""
    from collections import Counter

    from lifecycle.mail.sending import _render, _renderer

    with app.engine.connect() as conn:
        rows = conn.execute(select(Message.__table__).order_by(Message.id).limit(count)).all()
        customers = {c.id: c for c in conn.execute(select(Customer.__table__).where(
            Customer.id.in_([r.customer_id for r in rows])))}
    ready = _render(app, rows, customers, _renderer(settings.templates_dir, settings.locale),
                    app.clock.now(), Counter())
    assert len(ready) == len(rows), "a sample mail did not render"
    return [json.dumps(sendgrid_payload(r.mail)).encode() for r in ready]


def deliver_all(app: App) -> float:
    """Hand out due mails, as a scheduler with LIFECYCLE_TICK_SECONDS=0.5 would, until none
    is waiting or on its way; the seconds from the first hand-out to the last ``sent``."""
    started = time.perf_counter()
    while True:
        dispatch(app, send.send)
        with app.engine.connect() as conn:  # by the status index, not a table scan
            busy = conn.execute(select(Message.id).where(Message.status.in_(
                ("scheduled", "queued", "sending"))).limit(1)).first()
        if busy is None:
            return time.perf_counter() - started
        time.sleep(0.5)


def started_workers(app: App, workers: list[subprocess.Popen], timeout: float = 120.0) -> None:
    """Wait until every worker process has recorded its heartbeat, which it does once its
    threads take broker messages: the clock must not start while a worker is still importing
    (a process without bytecode caches takes seconds) or its CPU would count as sending."""
    pids = {w.pid for w in workers}
    deadline = time.monotonic() + timeout
    while True:
        with app.engine.connect() as conn:
            up = set(conn.execute(select(ProcessHeartbeat.pid).where(
                ProcessHeartbeat.kind == "worker", ProcessHeartbeat.pid.in_(pids))).scalars())
        if up == pids:
            return
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise SystemExit(f"the workers did not start: {len(up)} of {len(pids)} are up")
        time.sleep(0.2)


#: The customers' locales, in turn: each of the shipped languages, spelled as shops send them.
LOCALES = ("de-DE", "nb-NO", "sv-SE", "da-DK", "pl-PL", "en-US", "de-AT")


def with_locales(conn) -> None:  # type: ignore[no-untyped-def]
    """Give the customers the shipped languages in turn: every mail picks its locale folder
    and formats amounts and dates in its customer's locale."""
    ids = conn.execute(select(Customer.id).order_by(Customer.id)).scalars().all()
    conn.execute(update(Customer).where(Customer.id == bindparam("cid")).values(
        locale=bindparam("loc")),
        [{"cid": cid, "loc": LOCALES[n % len(LOCALES)]} for n, cid in enumerate(ids)])
    print(f"locales on: {len(ids):,} customers in {len(LOCALES)} locales")


#: Products of the benchmark's orders.
CATALOG = 500


def with_products(conn, now) -> None:  # type: ignore[no-untyped-def]
    """Give every order one to three products and compute what to suggest to each buyer."""
    rng = random.Random(3)
    rows = conn.execute(select(Order.id)).scalars().all()
    updates = []
    for order_id in rows:
        picks = sorted({rng.randrange(CATALOG) for _ in range(rng.randint(1, 3))})
        updates.append({"oid": order_id, "new": [
            {"sku": f"SKU-{n:04d}", "name": f"Product {n}", "quantity": 1, "price": "12.50",
             "url": f"https://shop.example/p/{n}", "image_url": f"https://cdn.shop.example/{n}.jpg"}
            for n in picks]})
    conn.execute(update(Order).where(Order.id == bindparam("oid")).values(
        items=bindparam("new")), updates)
    products, pairs = refresh_products(conn, now)
    print(f"recommendations on: {products} products, {pairs:,} pairs")


#: What the benchmark adds to the thank-you mail if it shows no recommendations itself.
SHOWN_HTML = """{% if recommendations %}<table role="presentation">{% for r in recommendations %}
<tr><td>{% if r.image_url %}<img src="{{ r.image_url }}" width="96" alt="">{% endif %}</td>
<td><a href="{{ r.url }}">{{ r.name }}</a>{% if r.price %} {{ r.price }}{% endif %}</td></tr>
{% endfor %}</table>{% endif %}"""
SHOWN_TEXT = """{% for r in recommendations %}
{{ r.name }}{% if r.price %} ({{ r.price }}){% endif %}: {{ r.url }}{% endfor %}
"""


def showing_recommendations(folder: Path) -> Path:
    """A copy of the templates whose thank-you mail lists the recommendations (unless its
    parts already use them): the benchmark measures rendering them too."""
    copy = folder / "templates"
    shutil.copytree(ROOT / "templates" / "email", copy)
    for part in sorted((copy / "thank_you").rglob("body.*")):
        source = part.read_text(encoding="utf-8")
        if "recommendations" in source:
            continue
        if part.suffix == ".html" and "{% endblock %}" in source:
            head, _, tail = source.rpartition("{% endblock %}")
            part.write_text(head + SHOWN_HTML + "{% endblock %}" + tail, encoding="utf-8")
        elif part.suffix == ".txt":
            part.write_text(source + SHOWN_TEXT, encoding="utf-8")
    return copy


class _Row:
    id = 1
    customer_id = 1
    flow = "thank_you"
    step = "thanks"
    template = "thank_you"
    to_email = "b0@example.com"
    context = None  # compose reads the mail's stored context (none here) ...
    attempts = 0  # ... and its attempt number


if __name__ == "__main__":
    main()
