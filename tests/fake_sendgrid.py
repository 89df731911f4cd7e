"""A stand-in for SendGrid's v3 API: a real HTTP/1.1 server on 127.0.0.1 (asyncio, keep-alive).

``POST /v3/mail/send`` checks the payload's shape as SendGrid documents it and
answers 202 with an ``X-Message-Id`` header, or 400 with SendGrid's error
body.  It can be told to answer 429 (with ``X-RateLimit-*`` headers), 500, or
hang, always or for a share of requests; ``max_refusals`` bounds how many 500s
one mail (our ``lifecycle_message_id``) gets, so that a test of faults the
outbox rides out can keep its fault schedule inside the outbox's retry budget
(a mail refused ``MAX_ATTEMPTS`` times is failed for good, by design).  Every accepted mail is logged (the
witness of the fault tests) and gets a ``processed`` event, as SendGrid's Event
Webhook would post it, carrying our ``custom_args``.

Control over HTTP, so that tests in other processes can use it:
``POST /_control`` (JSON: mode, fail_share, limit_share, max_refusals, hang_seconds,
reset),
``GET /_log``, ``GET /_events``.

Run alone: ``python -m tests.fake_sendgrid --port 8025``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FORBIDDEN_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                     "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
MAX_BODY = 30 * 1024 * 1024


def check_payload(payload: Any) -> list[dict[str, str]]:
    """SendGrid's errors for a v3 mail/send body; empty when it would be accepted."""
    errors: list[dict[str, str]] = []

    def error(field_name: str, message: str) -> None:
        errors.append({"message": message, "field": field_name, "help": None})  # type: ignore[dict-item]

    if not isinstance(payload, dict):
        return [{"message": "Bad Request", "field": "", "help": ""}]
    people = payload.get("personalizations")
    if not isinstance(people, list) or not 1 <= len(people) <= 1000:
        error("personalizations", "The personalizations field is required and must have at "
                                  "least one personalization.")
        people = []
    for i, person in enumerate(people):
        to = person.get("to") if isinstance(person, dict) else None
        if not isinstance(to, list) or not to or not all(
                isinstance(t, dict) and "@" in str(t.get("email", "")) for t in to):
            error(f"personalizations.{i}.to", "The to array is required for all personalization "
                                              "objects, and must have at least one email object "
                                              "with a valid email address.")
        for key, value in (person.get("custom_args") or {}).items() if isinstance(person, dict) \
                else ():
            if not isinstance(value, str):
                error(f"personalizations.{i}.custom_args.{key}", "custom_args values must be "
                                                                   "strings.")
    sender = payload.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        error("from.email", "The from object must be provided for every email send. It is an "
                            "object that requires the email parameter.")
    elif not str(sender.get("name", "")).isascii():
        error("from.name", "The from name must not contain Unicode characters.")
    if not payload.get("subject") and not all(isinstance(p, dict) and p.get("subject")
                                              for p in people):
        error("subject", "The subject is required.")
    content = payload.get("content")
    if not isinstance(content, list) or not content or not all(
            isinstance(c, dict) and c.get("type") and isinstance(c.get("value"), str) and c["value"]
            for c in content):
        error("content", "Unless a valid template_id is provided, the content parameter is "
                         "required and must have at least one value.")
    elif content[0]["type"] != "text/plain" and any(c["type"] == "text/plain" for c in content):
        error("content", "If present, text/plain content must be first, followed by text/html.")
    if "reply_to" in payload and "reply_to_list" in payload:
        error("reply_to", "reply_to and reply_to_list cannot be used together.")
    for name in payload.get("headers") or {}:
        if name.lower() in FORBIDDEN_HEADERS:
            error(f"headers.{name}", f"The {name} header is reserved and cannot be set.")
    for name, value in (payload.get("headers") or {}).items():
        if not isinstance(value, str):
            error(f"headers.{name}", "Header values must be strings.")
    categories = payload.get("categories") or []
    if len(categories) > 10 or any(len(c) > 255 for c in categories):
        error("categories", "You may not have more than 10 categories of at most 255 "
                            "characters each.")
    args = payload.get("custom_args") or {}
    if any(not isinstance(v, str) for v in args.values()):
        error("custom_args", "custom_args values must be strings.")
    if len(json.dumps(args)) > 10_000:
        error("custom_args", "custom_args may not exceed 10,000 bytes.")
    return errors


@dataclass
class FakeState:
    api_key: str = "SG.test"
    #: ok | fail (500) | limit (429) | hang | bad_gateway (502) | accept_hang (takes the mail,
    #: logs it and makes its event, then gives no answer: a sender killed now is killed
    #: between SendGrid's acceptance and its own record of it)
    mode: str = "ok"
    fail_share: float = 0.0  # share of requests answered 500
    limit_share: float = 0.0  # share of requests answered 429
    #: 500s at most per mail (then it is answered as if no fault were set); None: no bound.
    max_refusals: int | None = None
    refusals: Counter[str | None] = field(default_factory=Counter)  # 500s so far, per mail
    hang_seconds: float = 30.0
    reset_in: float = 1.0  # 429: X-RateLimit-Reset this many seconds ahead
    delay: float = 0.0  # seconds before each answer (a slower API)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    seed: int = 7
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=random.Random)

    def reset(self) -> None:
        with self.lock:
            self.mode, self.fail_share, self.limit_share = "ok", 0.0, 0.0
            self.max_refusals = None
            self.refusals.clear()
            self.accepted.clear()
            self.events.clear()
            self.requests = 0
            self.answers.clear()


_ids = itertools.count(1)


def _custom_args(payload: dict[str, Any]) -> dict[str, Any]:
    """The mail's ``custom_args`` as SendGrid merges them (the personalization's win)."""
    return {**(payload.get("custom_args") or {}),
            **(payload["personalizations"][0].get("custom_args") or {})}


def _message_id(body: bytes) -> str | None:
    """Our ``lifecycle_message_id`` in a mail/send body; None if the body names none."""
    try:
        return _custom_args(json.loads(body)).get("lifecycle_message_id")
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return None


class FakeSendGrid:
    """Start with :meth:`start` (a thread) or run :meth:`serve` in a process of its own."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state: FakeState | None = None,
                 log_bodies: bool = True) -> None:
        self.host, self.port = host, port
        self.state = state or FakeState()
        self.log_bodies = log_bodies
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle
    def start(self) -> FakeSendGrid:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(
                self._client, self.host, self.port, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-sendgrid", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    def serve(self) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self._client, self.host, self.port, backlog=1024)
            self.port = server.sockets[0].getsockname()[1]
            print(f"fake SendGrid listening on {self.url}", flush=True)
            async with server:
                await server.serve_forever()

        asyncio.run(main())

    # -- HTTP
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    await self._answer(writer, 413, {"errors": [{"message": "too large"}]}, {},
                                       close=True)
                    return
                body = await reader.readexactly(length) if length else b""
                close = headers.get("connection", "").lower() == "close"
                status, answer, extra = await self._handle(method, path, headers, body)
                if status == 0:  # hang: no answer, then the connection drops
                    writer.close()
                    return
                await self._answer(writer, status, answer, extra, close)
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError,
                asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, status: int, answer: Any,
                      extra: dict[str, str], close: bool) -> None:
        data = b"" if answer is None else json.dumps(answer).encode()
        reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
                  404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
                  500: "Internal Server Error", 502: "Bad Gateway"}.get(status, "Status")
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(data)}",
                "Content-Type: application/json", f"Connection: {'close' if close else 'keep-alive'}"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()

    async def _handle(self, method: str, path: str, headers: dict[str, str],
                      body: bytes) -> tuple[int, Any, dict[str, str]]:
        s = self.state
        if path == "/_control" and method == "POST":
            order = json.loads(body or b"{}")
            if order.pop("reset", False):
                s.reset()
            with s.lock:
                for key, value in order.items():
                    setattr(s, key, value)
            return 200, {"ok": True}, {}
        if path == "/_log":
            with s.lock:
                return 200, {"accepted": s.accepted, "requests": s.requests,
                             "answers": {str(k): v for k, v in s.answers.items()}}, {}
        if path == "/_events":
            with s.lock:
                return 200, s.events, {}
        if path != "/v3/mail/send" or method != "POST":
            return 404, {"errors": [{"message": "not found"}]}, {}
        with s.lock:
            s.requests += 1
            roll = s.rng.random()
            mode = s.mode
            if mode == "ok" and roll < s.fail_share:
                mode = "fail"
            elif mode == "ok" and roll < s.fail_share + s.limit_share:
                mode = "limit"
            if mode == "fail" and s.max_refusals is not None:
                mail = _message_id(body)
                if s.refusals[mail] >= s.max_refusals:
                    mode = "ok"
                else:
                    s.refusals[mail] += 1
        status, answer, extra = await self._mail_send(mode, headers, body)
        with s.lock:
            s.answers[status] = s.answers.get(status, 0) + 1
        return status, answer, extra

    async def _mail_send(self, mode: str, headers: dict[str, str],
                         body: bytes) -> tuple[int, Any, dict[str, str]]:
        s = self.state
        if headers.get("authorization") != f"Bearer {s.api_key}":
            return 401, {"errors": [{"message": "The provided authorization grant is invalid, "
                                                "expired, or revoked", "field": None,
                                     "help": None}]}, {}
        if mode == "hang":
            await asyncio.sleep(s.hang_seconds)
            return 0, None, {}
        if s.delay:
            await asyncio.sleep(s.delay)
        if mode == "fail":
            return 500, {"errors": [{"message": "Internal server error", "field": None}]}, {}
        if mode == "bad_gateway":
            return 502, None, {}
        if mode == "limit":
            return 429, {"errors": [{"message": "too many requests", "field": None}]}, {
                "X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time() + s.reset_in))}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"errors": [{"message": "Bad Request", "field": None,
                                     "help": None}]}, {}
        errors = check_payload(payload)
        if errors:
            return 400, {"errors": errors}, {}
        message_id = uuid.uuid4().hex[:22]
        args = _custom_args(payload)
        to = payload["personalizations"][0]["to"][0]["email"]
        record = {"x_message_id": message_id, "to": to, "custom_args": args,
                  "subject": payload.get("subject")}
        if self.log_bodies:
            record["payload"] = payload
        event = {"email": to, "timestamp": int(time.time()), "event": "processed",
                 "sg_event_id": f"evt-{next(_ids)}-{uuid.uuid4().hex[:8]}",
                 "sg_message_id": f"{message_id}.filter0001.{next(_ids)}.0",
                 "category": payload.get("categories") or [], **args}
        with s.lock:
            s.accepted.append(record)
            s.events.append(event)
        if mode == "accept_hang":
            await asyncio.sleep(s.hang_seconds)
            return 0, None, {}
        return 202, None, {"X-Message-Id": message_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--api-key", default="SG.test")
    parser.add_argument("--no-bodies", action="store_true", help="log ids only, not payloads")
    args = parser.parse_args()
    FakeSendGrid(port=args.port, state=FakeState(api_key=args.api_key),
                 log_bodies=not args.no_bodies).serve()


if __name__ == "__main__":
    main()
