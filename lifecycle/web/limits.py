"""Bounds on every request body, enforced while it is read: one table, one middleware.

Every route answers anyone before it knows who is asking (the ingest API checks its
key before the body is read: lifecycle.web.api.KeyBeforeBody), so each body is bounded
in size and in time *as it arrives*, before it is held in memory:
:class:`BodyLimit` refuses a declared ``Content-Length`` over the limit at once
(413, without reading a byte), a chunked body as soon as it passes the limit
(413), and a body that is not complete in time (408).  An address (path or query
string) holding a NUL character is refused as well (400).  The limits are per route
prefix (:data:`LIMITS`, longest prefix first); a path not in the table gets
:data:`DEFAULT` (staff forms, logout, and anything unknown).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple

KIB, MIB = 1024, 1024 * 1024


class Limit(NamedTuple):
    """The most a request body may be: ``size`` bytes, arriving within ``seconds``."""

    size: int
    seconds: float


#: Per route prefix.  Sizes: SendGrid posts events in batches of up to 768 KB, and one
#: inbound mail with its attachments as one Inbound Parse post of up to about 30 MB; the
#: API takes up to 1,000 items (16 KiB each is a large order); the pages behind a mail's
#: links post a few short fields (the longest a 4,000-character comment, URL-encoded); the
#: login form three fields.
LIMITS: dict[str, Limit] = {
    "/webhooks/sendgrid/events": Limit(4 * MIB, 30.0),
    "/webhooks/sendgrid/inbound": Limit(32 * MIB, 120.0),
    "/api/": Limit(16 * MIB, 60.0),
    "/u/": Limit(64 * KIB, 10.0),
    "/p/": Limit(64 * KIB, 10.0),
    "/f/": Limit(64 * KIB, 10.0),
    "/login": Limit(16 * KIB, 10.0),
}
#: Every other path: staff forms (a 4,000-character note is the largest), logout, unknown.
DEFAULT = Limit(64 * KIB, 10.0)


def limit_for(path: str) -> Limit:
    """The limit of a request to ``path``: the longest prefix of :data:`LIMITS` it starts
    with, else :data:`DEFAULT`."""
    best = ""
    for prefix in LIMITS:
        if path.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return LIMITS[best] if best else DEFAULT


class BodyRefused(Exception):
    """A body over its limit (413) or too slow (408): raised into the app while it reads,
    answered by :class:`BodyLimit` whatever the app does with it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BodyLimit:
    """ASGI middleware: every request body is bounded by :func:`limit_for` its path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # no page takes one, and PostgreSQL refuses to compare text holding one
            await _answer(send, BodyRefused(400, "The address holds a NUL character."))
            return
        limit, seconds = limit_for(scope["path"])
        too_big = BodyRefused(413, f"The body is larger than {limit} bytes.")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, too_big)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        size, complete = 0, False
        refused: BodyRefused | None = None
        answered = False

        async def bounded() -> dict[str, Any]:
            nonlocal size, complete, refused
            if refused is not None:
                raise refused
            if complete:  # the body is in: what follows (a disconnect) may take any time
                return await receive()  # type: ignore[no-any-return]
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                refused = BodyRefused(408, f"The body did not arrive within {seconds:g} "
                                           "seconds.")
                raise refused from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    refused = too_big
                    raise refused
                complete = not message.get("more_body", False)
            return message  # type: ignore[no-any-return]

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal answered
            if refused is not None and not answered:
                return  # the app answered a refused body its own way (caught it): ours goes
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, bounded, guarded)
        except Exception as exc:  # noqa: BLE001 - whatever the app made of a refused body
            if refused is None:
                raise
            _forget(exc)
        if refused is not None:
            _forget(refused)
            if not answered:
                await _answer(send, refused)


def _forget(exc: BaseException | None) -> None:
    """Drop the frames an exception (and those it chains) holds: they hold the part of a
    refused body read so far, which would otherwise wait for the cycle collector."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


async def _answer(send: Any, refused: BodyRefused) -> None:
    body = json.dumps({"detail": refused.detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": refused.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii")),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
