"""Webhooks from the mail provider: verify, then parse, then store and apply.

``POST /webhooks/sendgrid/events`` takes SendGrid's Signed Event Webhook;
``POST /webhooks/sendgrid/inbound`` its Inbound Parse (replies, and mail to
the ``mailto:`` unsubscribe address: :mod:`lifecycle.mail.inbound`).
Nothing is stored unless the signature matches the raw body: a missing,
forged or altered post gets 403; a signed post that is not a JSON array gets
400.  SendGrid retries anything but 2xx for a day, so a post we could not
store (database down) gets 503 and comes again; duplicates are expected and
change nothing (:mod:`lifecycle.mail.events`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from lifecycle.app import App
from lifecycle.links import inbound_key_ok
from lifecycle.mail.compose import domain_of
from lifecycle.mail.events import receive_events, without_nul
from lifecycle.mail.inbound import Inbound, match, record_reply
from lifecycle.mail.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    WebhookVerifier,
)
from lifecycle.subscriptions import MARKETING, customer_of, unsubscribe

log = logging.getLogger(__name__)
#: Largest text part of an Inbound Parse form kept in memory (bytes); the whole post is
#: bounded in size and time as it arrives (:mod:`lifecycle.web.limits`), attachments
#: spool to disk.
MAX_INBOUND_PART = 20 * 1024 * 1024


def webhook_routes(app: App) -> APIRouter:
    router = APIRouter()
    key = app.settings.sendgrid_webhook_public_key
    verifier = WebhookVerifier(key, app.settings.webhook_max_age) if key else None

    @router.post("/webhooks/sendgrid/events")
    async def sendgrid_events(request: Request) -> JSONResponse:
        """SendGrid's Event Webhook: a signed JSON array of events."""
        try:  # bounded in size and time as it arrives: lifecycle.web.limits
            body = await request.body()
        except ClientDisconnect:
            return JSONResponse({"error": "the body did not arrive"}, status_code=400)
        if verifier is None:
            log.warning("A SendGrid event post was refused: SENDGRID_WEBHOOK_PUBLIC_KEY is not "
                        "set, so its signature cannot be checked.")
            return JSONResponse({"error": "the event webhook is not configured "
                                          "(SENDGRID_WEBHOOK_PUBLIC_KEY)"}, status_code=403)
        try:
            verifier.check(body, request.headers.get(SIGNATURE_HEADER),
                           request.headers.get(TIMESTAMP_HEADER), app.clock.now())
        except BadSignature as exc:
            log.warning("A SendGrid event post was refused: %s.", exc)
            return JSONResponse({"error": f"bad signature: {exc}"}, status_code=403)
        try:
            items = events_of(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not JSON: {str(exc)[:200]}"},
                                status_code=400)
        if not isinstance(items, list):
            return JSONResponse({"error": "the body must be a JSON array of events, not "
                                          f"{type(items).__name__}"}, status_code=400)
        items = [None if item is None or _skipped(item) else item for item in items]
        if None in items:  # each is counted as ignored in the receipt
            log.warning("%d item(s) of a SendGrid event post were skipped: nested deeper than "
                        "%d levels, or holding NaN or Infinity.", items.count(None),
                        MAX_EVENT_DEPTH)
        if _ODD_ESCAPE.search(body):  # checked on the bytes: nearly never, so nearly free
            items = without_nul(items)
        try:
            receipt = await run_in_threadpool(_receive, app, items)
        except SQLAlchemyError as exc:
            log.error("SendGrid events could not be stored (%s); SendGrid will post them again.",
                      type(exc).__name__)
            return JSONResponse({"error": "events could not be stored; post again"},
                                status_code=503)
        return JSONResponse(receipt)

    @router.post("/webhooks/sendgrid/inbound")
    async def sendgrid_inbound(request: Request) -> JSONResponse:
        """SendGrid Inbound Parse: one mail as a multipart form (parsed, not raw)."""
        given = request.query_params.get("key", "")
        if not inbound_key_ok(app.keys, given):
            log.warning("An inbound post without the right key was refused.")
            return JSONResponse({"error": "a valid key is required: the URL `lifecycle "
                                          "webhooks` prints"}, status_code=403)
        try:
            form = await request.form(max_files=100, max_fields=1000,
                                      max_part_size=MAX_INBOUND_PART)
        except Exception as exc:  # noqa: BLE001 - any unreadable form is the sender's fault
            return JSONResponse({"error": f"not a multipart form: {exc}"}, status_code=400)
        # no NUL characters: PostgreSQL stores none, and a post refused for one comes again
        fields = {k.replace("\x00", ""): v.replace("\x00", "") for k, v in form.items()
                  if isinstance(v, str)}
        if "from" not in fields and "headers" not in fields:
            return JSONResponse({"error": "not an Inbound Parse post: no from or headers "
                                          "field"}, status_code=400)
        try:
            outcome = await run_in_threadpool(_inbound, app, Inbound.from_form(fields))
        except SQLAlchemyError as exc:
            log.error("An inbound mail could not be stored (%s); SendGrid will post it "
                      "again.", type(exc).__name__)
            return JSONResponse({"error": "could not be stored; post again"}, status_code=503)
        return JSONResponse(outcome)  # 200 even when unmatched: a retry would not match either

    return router


#: Deepest nesting of one event kept (levels): SendGrid's events are flat objects with a few
#: lists (categories); a deeper one is skipped (counted ``ignored``), the rest of its post kept.
MAX_EVENT_DEPTH = 32
_STRUCTURE = re.compile(rb'[\\"\[\]{},]')
#: The escapes of a NUL character or of half a surrogate pair, which no database stores.
_ODD_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def events_of(body: bytes) -> Any:
    """The JSON of an event post.  An array nested deeper than Python's parser goes is split
    into its items without parsing them; each item too deep to parse is None (skipped), so
    the events beside it are kept.  ValueError for a body that is not JSON."""
    try:
        return _loads(body)
    except RecursionError:
        pass
    items: list[Any] = []
    for start, end, depth in _top_level_items(body):
        if depth > MAX_EVENT_DEPTH:
            items.append(None)
            continue
        items.append(_loads(body[start:end]))
    return items


class _NotFinite:
    """What ``NaN``, ``Infinity`` or a number too large for a float parse to in an event post:
    no JSON answer or column holds them (PostgreSQL's jsonb refuses them), so an event with
    one is skipped (:func:`_skipped`)."""


NOT_FINITE = _NotFinite()


def _finite(text: str) -> Any:
    number = float(text)
    return number if math.isfinite(number) else NOT_FINITE


def _loads(body: bytes) -> Any:
    return json.loads(body, parse_constant=lambda _text: NOT_FINITE, parse_float=_finite)


def _top_level_items(body: bytes) -> list[tuple[int, int, int]]:
    """The items of the JSON array ``body`` as (start, end, nesting depth), found by a scan
    of its brackets, quotes and commas (strings and their escapes skipped)."""
    spans: list[tuple[int, int, int]] = []
    depth, deepest, start, in_string, escaped_at = 0, 0, -1, False, -1
    for found in _STRUCTURE.finditer(body):
        at, char = found.start(), found.group()
        if at == escaped_at:
            continue
        if in_string:
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
            continue
        if char == b'"':
            in_string = True
        elif char in b"[{":
            if depth == 0:
                if char != b"[":
                    raise ValueError("the body is not a JSON array")
                start = at + 1
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
            if depth == 0:
                if body[start:at].strip():
                    spans.append((start, at, deepest - 1))
                return spans
        elif char == b"," and depth == 1:
            spans.append((start, at, deepest - 1))
            start, deepest = at + 1, 1
    raise ValueError("the body ends inside its array")


def _skipped(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` nests lists and objects deeper than :data:`MAX_EVENT_DEPTH`, or
    holds a number JSON has no word for (:data:`NOT_FINITE`)."""
    if depth > MAX_EVENT_DEPTH or value is NOT_FINITE:
        return True
    if isinstance(value, dict):
        return any(_skipped(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_skipped(v, depth + 1) for v in value)
    return False


def _inbound(app: App, inbound: Inbound) -> dict[str, Any]:
    now = app.clock.now()
    with app.engine.begin() as conn:
        matched = match(conn, app.keys, inbound, domain_of(app.settings), now)
        if matched is None:
            log.info("An inbound mail from %s matched none of our mails; it is dropped.",
                     inbound.sender)
            return {"matched": False}
        if matched.erased:
            log.info("An inbound %s to mail %d of an erased customer was dropped; nothing of "
                     "it is kept.", matched.purpose, matched.message.id)
            return {"matched": True, "erased": True}
        if matched.test:
            log.info("An inbound %s to test mail %d was dropped: a test mail changes nothing "
                     "for the customer it was rendered for.", matched.purpose, matched.message.id)
            return {"matched": True, "test": True}
        if matched.purpose == "unsubscribe":
            customer = customer_of(conn, matched.message.customer_id)
            done = customer is not None and customer.email is not None and unsubscribe(
                conn, customer, MARKETING, now, via="mailto", message_id=matched.message.id)
            return {"matched": True, "unsubscribed": bool(done)}
        new = record_reply(conn, matched, inbound, now)
        return {"matched": True, "message_id": matched.message.id, "new": new,
                "automatic": inbound.is_automatic()}


def _receive(app: App, items: list) -> dict[str, int]:
    with app.engine.begin() as conn:
        return receive_events(conn, items, app.clock.now()).as_dict()
