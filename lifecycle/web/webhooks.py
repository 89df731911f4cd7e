"""Webhooks from the mail provider: verify, then parse, then store and apply.

``POST /webhooks/sendgrid/events`` takes SendGrid's Signed Event Webhook.
Nothing is stored unless the signature matches the raw body: a missing,
forged or altered post gets 403; a signed post that is not a JSON array gets
400.  SendGrid retries anything but 2xx for a day, so a post we could not
store (database down) gets 503 and comes again; duplicates are expected and
change nothing (:mod:`lifecycle.mail.events`).
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.mail.events import receive_events
from lifecycle.mail.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    WebhookVerifier,
)

log = logging.getLogger(__name__)


def webhook_routes(app: App) -> APIRouter:
    router = APIRouter()
    key = app.settings.sendgrid_webhook_public_key
    verifier = WebhookVerifier(key, app.settings.webhook_max_age) if key else None

    @router.post("/webhooks/sendgrid/events")
    async def sendgrid_events(request: Request) -> JSONResponse:
        """SendGrid's Event Webhook: a signed JSON array of events."""
        body = await request.body()
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
        try:
            receipt = await run_in_threadpool(_receive, app, items)
        except SQLAlchemyError as exc:
            log.error("SendGrid events could not be stored (%s); SendGrid will post them again.",
                      type(exc).__name__)
            return JSONResponse({"error": "events could not be stored; post again"},
                                status_code=503)
        return JSONResponse(receipt)

    return router


def _receive(app: App, items: list) -> dict[str, int]:
    with app.engine.begin() as conn:
        return receive_events(conn, items, app.clock.now()).as_dict()
