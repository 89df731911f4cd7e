"""Telling the shop of each new code: a signed outbound webhook, delivered from an outbox.

Each ``offer_webhooks`` row is written with its offer (:func:`lifecycle.offers.service.issue`)
and holds the body to post.  The scheduler's ``offers.webhooks`` job hands due rows to the
workers (:func:`dispatch`: each row gets a lease of :data:`LEASE`, so a row lost with the
broker or a worker is handed out again when it runs out); the ``offers.notify`` actor posts
them (:func:`deliver`).

**Signing** is the Standard Webhooks scheme, done by the ``standardwebhooks`` library:
headers ``webhook-id`` (the same on every attempt: the shop drops repeats by it),
``webhook-timestamp`` (Unix seconds of the attempt, real time) and ``webhook-signature``
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the bytes of
``LIFECYCLE_OFFER_WEBHOOK_SECRET`` (``whsec_<base64>``).  The body is JSON:
``{"type": "offer.created", "timestamp": …, "data": {code, kind, value, currency,
expires_at, created_at, flow, step, customer: {id, email}}}``.

**Time.** A post has :data:`TIMEOUT` seconds in all (not per read: a watchdog shuts its
socket down when they are up); the actor's time limit is shorter than the lease, so a row is
not handed to a second worker while the first still posts it; the actor has its own broker
queue (:data:`QUEUE`) and at most :data:`POSTING_THREADS` threads of a worker process post at
once, so a slow shop does not hold up mail.

**Retries.** A 2xx answer delivers.  Anything else (another status, a malformed answer, a
refused connection, no whole answer within :data:`TIMEOUT` seconds) is tried again after
:data:`FIRST_WAIT`, doubling each time up to :data:`LONGEST_WAIT`, with jitter; once the
next try would fall more than :data:`HORIZON` after the row was written, the webhook is
given up: ``status`` ``failed``, ``failed_at`` and the last error recorded, and an error
logged.  The code stays valid and listed in ``GET /api/v1/offers``.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from standardwebhooks.webhooks import Webhook

from lifecycle.app import App
from lifecycle.offers.model import OfferWebhook, WebhookStatus
from lifecycle.timeutil import as_utc

log = logging.getLogger(__name__)

#: Seconds a post may take in all (connecting, sending and the whole answer: a shop that
#: trickles its answer is cut off too).
TIMEOUT = 10.0
#: Rows handed out per tick, and per broker message (posted one after the other).
DISPATCH_BATCH, NOTIFY_BATCH = 1000, 10
#: How long a handed-out row is a worker's before it is handed out again: longer than a
#: batch of posts that all time out, and than the actor's time limit (:data:`TIME_LIMIT`).
LEASE = timedelta(seconds=NOTIFY_BATCH * TIMEOUT + 60)
#: A batch starts no post after this many seconds (the rest wait for their lease to run out).
BATCH_SECONDS = NOTIFY_BATCH * TIMEOUT + 10
#: The ``offers.notify`` actor's time limit (milliseconds): shorter than the lease, so a row
#: is never posted by two workers at once.
TIME_LIMIT_MS = int((BATCH_SECONDS + 10) * 1000)
#: The broker queue of the ``offers.notify`` actor: its own, so a slow shop delays no mail.
QUEUE = "webhooks"
#: At most this many worker threads of a process post webhooks at once; a message that
#: finds them all busy gives its rows back (due again at the next tick) and ends.
POSTING_THREADS = 2
#: The wait before the second attempt; each next wait doubles (times 0.75 to 1.25) …
FIRST_WAIT = timedelta(seconds=30)
#: … up to this.
LONGEST_WAIT = timedelta(hours=6)
#: A webhook not delivered this long after it was written is given up.
HORIZON = timedelta(days=3)
#: Most characters of an answer kept as the error.
ERROR_CHARS = 300

_hooks = OfferWebhook.__table__


def payload(event: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """A Standard Webhooks body: ``type``, ``timestamp`` and ``data``."""
    return {"type": event, "timestamp": as_utc(at).isoformat(), "data": data}


def body_of(document: dict[str, Any]) -> bytes:
    """The exact bytes posted (and signed)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_headers(secret: str, webhook_id: str, body: bytes,
                   at: datetime | None = None) -> dict[str, str]:
    """The headers of one attempt; ``at`` (default: now, real time) is its timestamp."""
    moment = (at or datetime.now(UTC)).replace(microsecond=0)
    signature = Webhook(secret).sign(webhook_id, moment, body.decode("utf-8"))
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature, "content-type": "application/json",
            "user-agent": "Lifecycle offer webhooks"}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx (urllib would follow a 302 with a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Deadline:
    """One post's total time: each connection's socket gets the time left as its timeout,
    and a timer shuts the socket down when the time is up (a read that is still waiting
    ends at once), so no post outlasts :data:`TIMEOUT` however the shop trickles bytes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._timers: list[threading.Timer] = []

    def arm(self, sock: socket.socket) -> None:
        left = self.ends - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("the post's time is up")
        sock.settimeout(left)

        def cut() -> None:
            self.expired = True
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        timer = threading.Timer(left, cut)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


def _watched(base: type[http.client.HTTPConnection],
             deadline: _Deadline) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            super().connect()
            deadline.arm(self.sock)

    return Watched


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_watched(http.client.HTTPConnection, deadline), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(_watched(http.client.HTTPSConnection, deadline), req,
                                context=self._context)

    return urllib.request.build_opener(_NoRedirects, HTTP, HTTPS)


def post(url: str, body: bytes, headers: dict[str, str]) -> str | None:
    """Post once, within :data:`TIMEOUT` seconds in all; None when the shop took it (2xx),
    else why not (one line)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    deadline = _Deadline(TIMEOUT)
    try:
        with _opener(deadline).open(request, timeout=TIMEOUT) as answer:
            answer.read(65536)
            status = answer.status
        if deadline.expired:  # cut off: what was read may end anywhere (headers too)
            return f"no whole answer within {deadline.seconds:g} seconds"
        return None if 200 <= status < 300 else f"HTTP {status}"
    except urllib.error.HTTPError as exc:
        try:
            text = exc.read(ERROR_CHARS).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            text = ""
        if deadline.expired:
            return f"no whole answer within {deadline.seconds:g} seconds"
        return f"HTTP {exc.code}" + (f": {text}" if text else "")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if deadline.expired:
            return f"no whole answer within {deadline.seconds:g} seconds"
        # HTTPException: a malformed answer (bad status line, a header line over 64 KiB,
        # more than 100 headers).
        reason = getattr(exc, "reason", exc)
        return f"{type(exc).__name__}: {reason}"[:ERROR_CHARS]
    except Exception as exc:  # noqa: BLE001 - any other failure is an attempt that failed
        log.exception("Posting an offer webhook to the shop failed unexpectedly.")
        return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    finally:
        deadline.cancel()


def next_wait(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (module doc)."""
    base = min(FIRST_WAIT * 2 ** max(attempts - 1, 0), LONGEST_WAIT)
    return base * random.uniform(0.75, 1.25)


def hand_out(conn: Connection, now: datetime, limit: int = DISPATCH_BATCH) -> list[int]:
    """Take the due pending rows (their lease starts: :data:`LEASE`); their ids."""
    due = (select(_hooks.c.id).where(_hooks.c.status == WebhookStatus.PENDING.value,
                                     _hooks.c.next_attempt_at <= now)
           .order_by(_hooks.c.next_attempt_at, _hooks.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(conn.execute(due).scalars())
    if ids:
        conn.execute(update(_hooks).where(_hooks.c.id.in_(ids)).values(
            next_attempt_at=now + LEASE))
    return ids


def dispatch(app: App, enqueue: Callable[[list[int]], Any]) -> int:
    """Hand the due webhooks to the workers; how many.  Nothing while no URL is set.  Ids the
    broker refuses are due again at once (their lease is released)."""
    if not app.settings.offer_webhook_url:
        return 0
    now = app.clock.now()
    with app.engine.begin() as conn:
        ids = hand_out(conn, now)
    for start in range(0, len(ids), NOTIFY_BATCH):
        try:
            enqueue(ids[start:start + NOTIFY_BATCH])
        except Exception as exc:  # noqa: BLE001 - the rows are safe in the database
            with app.engine.begin() as conn:
                conn.execute(update(_hooks).where(
                    _hooks.c.id.in_(ids[start:]),
                    _hooks.c.status == WebhookStatus.PENDING.value).values(next_attempt_at=now))
            log.warning("The broker did not take %d offer webhooks (%s: %s); they are handed "
                        "out again at the next tick.", len(ids) - start, type(exc).__name__, exc)
            break
    return len(ids)


_posting = threading.BoundedSemaphore(POSTING_THREADS)


def give_back(app: App, ids: list[int]) -> None:
    """End the lease of the pending rows ``ids``: due again at the next tick."""
    with app.engine.begin() as conn:
        conn.execute(update(_hooks).where(
            _hooks.c.id.in_(ids), _hooks.c.status == WebhookStatus.PENDING.value).values(
            next_attempt_at=app.clock.now()))


def deliver_limited(app: App, ids: list[int]) -> Counter[str]:
    """:func:`deliver`, by at most :data:`POSTING_THREADS` threads of this process at once:
    with all of them posting, the rows are given back (``busy``) and the thread is free for
    other work at once (mail is not kept waiting behind a slow shop)."""
    if not _posting.acquire(blocking=False):
        give_back(app, ids)
        return Counter({"busy": len(ids)})
    try:
        return deliver(app, ids)
    finally:
        _posting.release()


def deliver(app: App, ids: list[int],
            poster: Callable[[str, bytes, dict[str, str]], str | None] = post) -> Counter[str]:
    """Post the pending webhooks ``ids`` once each and record the outcomes; no post starts
    after :data:`BATCH_SECONDS` (those rows are ``left`` to their lease)."""
    outcomes: Counter[str] = Counter()
    url, secret = app.settings.offer_webhook_url, app.settings.offer_webhook_secret
    if not url or not secret:
        outcomes["skipped"] += len(ids)
        return outcomes
    started = time.monotonic()
    with app.engine.connect() as conn:
        rows = conn.execute(select(_hooks).where(
            _hooks.c.id.in_(ids), _hooks.c.status == WebhookStatus.PENDING.value)
            .order_by(_hooks.c.id)).all()
    if len(ids) > len(rows):
        outcomes["skipped"] += len(ids) - len(rows)
    for n, row in enumerate(rows):
        if time.monotonic() - started > BATCH_SECONDS:
            outcomes["left"] += len(rows) - n
            log.warning("%d offer webhooks were left for a later tick: their batch ran out of "
                        "time.", len(rows) - n)
            break
        try:
            body = body_of(row.payload)
            error = poster(url, body, signed_headers(secret, row.webhook_id, body))
        except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, batch goes on
            log.exception("Offer webhook %s could not be posted.", row.webhook_id)
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        outcomes[record(app, row, error)] += 1
    return outcomes


def record(app: App, row: Any, error: str | None) -> str:
    """Record one attempt's outcome: ``delivered``, ``later`` or ``failed``."""
    now = app.clock.now()
    attempts = row.attempts + 1
    pending = (_hooks.c.id == row.id) & (_hooks.c.status == WebhookStatus.PENDING.value)
    with app.engine.begin() as conn:
        if error is None:
            conn.execute(update(_hooks).where(pending).values(
                status=WebhookStatus.DELIVERED.value, attempts=attempts, delivered_at=now,
                last_error=None))
            return "delivered"
        wait = next_wait(attempts)
        if now + wait > as_utc(row.created_at) + HORIZON:
            conn.execute(update(_hooks).where(pending).values(
                status=WebhookStatus.FAILED.value, attempts=attempts, failed_at=now,
                last_error=f"given up after {attempts} attempts in {HORIZON.days} days: "
                           f"{error}"[:2000]))
            log.error("The shop was not told of a new offer code: webhook %s given up after "
                      "%d attempts (%s). The code is listed by GET /api/v1/offers.",
                      row.webhook_id, attempts, error)
            return "failed"
        conn.execute(update(_hooks).where(pending).values(
            attempts=attempts, next_attempt_at=now + wait, last_error=error[:2000]))
    log.warning("Offer webhook %s was not taken (%s); tried again in %s.", row.webhook_id,
                error, wait)
    return "later"
