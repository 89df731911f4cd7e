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

import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.links import inbound_key
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
from lifecycle.web.linked import read_body

log = logging.getLogger(__name__)
#: Largest form part accepted (bytes): Inbound Parse posts up to 20 MB in all.
MAX_INBOUND_PART = 20 * 1024 * 1024
#: Largest Event Webhook post read (bytes): SendGrid posts batches of up to 768 KB, and
#: anyone may post before the signature is checked.
MAX_EVENTS_BODY = 4 * 1024 * 1024
#: Seconds an Event Webhook post may take to arrive.
EVENTS_SECONDS = 30.0


def webhook_routes(app: App) -> APIRouter:
    router = APIRouter()
    key = app.settings.sendgrid_webhook_public_key
    verifier = WebhookVerifier(key, app.settings.webhook_max_age) if key else None

    @router.post("/webhooks/sendgrid/events")
    async def sendgrid_events(request: Request) -> JSONResponse:
        """SendGrid's Event Webhook: a signed JSON array of events."""
        body = await read_body(request, MAX_EVENTS_BODY, EVENTS_SECONDS)
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
            items = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        if not isinstance(items, list):
            return JSONResponse({"error": "the body must be a JSON array of events, not "
                                          f"{type(items).__name__}"}, status_code=400)
        if b"\\u0000" in body:  # checked on the bytes: nearly never, so nearly free
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
        if not hmac.compare_digest(given, inbound_key(app.settings.secret_key)):
            log.warning("An inbound post without the right key was refused.")
            return JSONResponse({"error": "a valid key is required: the URL `lifecycle "
                                          "webhooks` prints"}, status_code=403)
        try:
            form = await request.form(max_files=100, max_fields=1000,
                                      max_part_size=MAX_INBOUND_PART)
        except Exception as exc:  # noqa: BLE001 - any unreadable form is the sender's fault
            return JSONResponse({"error": f"not a multipart form: {exc}"}, status_code=400)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
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


def _inbound(app: App, inbound: Inbound) -> dict[str, Any]:
    now = app.clock.now()
    with app.engine.begin() as conn:
        matched = match(conn, app.settings.secret_key, inbound, domain_of(app.settings))
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
