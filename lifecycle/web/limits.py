"""Bounds on request bodies that are read before anything is checked.

FastAPI reads and parses a JSON body before an endpoint's dependencies run,
so the ingest API's key check comes *after* the whole body is in memory:
without a bound, anyone could post gigabytes to ``/api/v1/…`` without a key.
:class:`BodyLimit` refuses such a body before it is read — a declared
``Content-Length`` over the limit at once (413), a chunked body as soon as it
passes the limit (413), and a body that does not arrive in time (408).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import HTTPException

#: Largest ingest API body (bytes): 1,000 orders of a few dozen lines each are a few MB.
MAX_API_BODY = 32 * 1024 * 1024
#: Seconds an ingest API body may take to arrive.
API_BODY_SECONDS = 60.0
#: Paths whose bodies are bounded here (the pages bound theirs in :mod:`lifecycle.web.linked`).
PREFIX = "/api/"


class BodyLimit:
    """ASGI middleware: the body of a request under :data:`PREFIX` is bounded in size and time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        limit, seconds = MAX_API_BODY, API_BODY_SECONDS
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, f"The body is larger than {limit} bytes.")
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        size, complete = 0, False

        async def bounded() -> dict[str, Any]:
            nonlocal size, complete
            if complete:  # the body is in: what follows (a disconnect) may take any time
                return await receive()  # type: ignore[no-any-return]
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise HTTPException(408, f"The body did not arrive within {seconds:g} "
                                         "seconds.") from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise HTTPException(413, f"The body is larger than {limit} bytes.")
                complete = not message.get("more_body", False)
            return message  # type: ignore[no-any-return]

        await self.app(scope, bounded, send)


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii")),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
