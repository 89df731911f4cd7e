"""The page behind the NPS links of the feedback mail: ``/f/<token>?score=N``.

``GET`` records the score (a click in the mail *is* the answer; clicking
another score later replaces it) and refreshes the customer's segments at
once (:mod:`lifecycle.feedback`), then offers an optional comment, which
``POST`` keeps with the answer.  A score outside 0–10 gets 400.  A test mail's
link (:class:`lifecycle.web.linked.Linked`) records nothing and says so.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.feedback import SCORES, add_comment, answer_of, record_answer
from lifecycle.segments.definitions import Definitions
from lifecycle.segments.service import definitions
from lifecycle.web.linked import Linked, field, read_form
from lifecycle.yamlfile import InvalidFile

log = logging.getLogger(__name__)


def feedback_routes(app: App) -> APIRouter:
    router = APIRouter()
    linked = Linked(app)

    def segment_definitions() -> Definitions | None:
        try:
            return definitions(app)
        except InvalidFile as exc:
            log.error("Segments are not refreshed after a feedback answer: %s has problems:\n%s",
                      app.settings.segments_file, exc)
            return None

    def answer(request: Request, token: str, score: int | None, comment: str | None) -> Response:
        now = app.clock.now()
        with app.engine.begin() as conn:
            found = linked.holder(conn, "feedback", token)
            if found is None:
                return linked.bad_link(request)
            if found.test:
                return linked.test_link(request)  # no answer is recorded for the customer
            customer, message_id, _ = found
            if score is not None:
                entered, _left = record_answer(conn, customer, message_id, score, now,
                                               segment_definitions(), clock=app.clock)
                if entered:
                    log.info("Customer %d entered %s after a feedback answer.", customer.id,
                             ", ".join(entered))
            if comment is not None and not add_comment(conn, customer, message_id, comment, now):
                return linked.bad_link(request)
            data = answer_of(conn, customer, message_id)
        if data is None:
            return linked.bad_link(request)
        return linked.page(request, "feedback.html", token, customer, score=data["score"],
                           comment=data.get("comment", ""), commented=comment is not None)

    @router.get("/f/{token}", response_class=HTMLResponse)
    def click(request: Request, token: str, score: str = "") -> Response:
        # ASCII digits only: "¹" is a digit to str.isdigit, and int() refuses it
        if not (score.isascii() and score.isdigit() and len(score) <= 2) \
                or int(score) not in SCORES:
            return linked.bad_link(request)
        return answer(request, token, int(score), None)

    @router.post("/f/{token}", response_class=HTMLResponse)
    async def comment(request: Request, token: str) -> Response:
        form = await read_form(request)
        text = field(form, "comment", strip=False)
        return await run_in_threadpool(answer, request, token, None, text)

    return router
