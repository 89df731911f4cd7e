"""The page behind the NPS links of the feedback mail: ``/f/<token>?score=N``.

Link scanners fetch every link of a mail (:mod:`lifecycle.scanners`), so
fetching a link records nothing:

* ``GET /f/<token>?score=N`` shows the score and a form that posts it; a small
  inline script (allowed by its hash in the page's Content-Security-Policy,
  and waiting while the page is only prerendered) submits it at once, so a
  person's one click is the answer; with script off they press the button.
* ``HEAD`` answers as ``GET`` would, without the body, and records nothing.
* ``POST /f/<token>`` with ``score`` holds the vote (:func:`lifecycle.feedback.
  hold_vote`; ``via=page`` for the thank-you page's "choose again" buttons),
  unless the request shows a scanner's traits (then it is only counted in a
  log line), and shows the thank-you page, which offers an optional comment
  (and, once a scanner's burst was seen for the mail, asks to press the score
  again: only that counts then);
  ``POST`` with ``comment`` keeps it with the answer.

A score outside 0–10 gets 400.  A test mail's link
(:class:`lifecycle.web.linked.Linked`) records nothing and says so.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.feedback import (
    SCORES,
    add_comment,
    answer_of,
    definitions_of,
    hold_vote,
    needs_confirming,
)
from lifecycle.scanners import scanner_trait
from lifecycle.web.linked import PAGE_POLICY, Holder, Linked, field, read_form

log = logging.getLogger(__name__)

#: The score link page's script: post the form at once — once the page is really shown (a
#: prerendered page waits until the person navigates to it).
AUTO_SUBMIT = ('(function(){var f=document.getElementById("nps-send");'
               'function go(){f.submit();}'
               'if(document.prerendering){document.addEventListener("prerenderingchange",go,'
               '{once:true});}else{go();}})();')
#: :data:`~lifecycle.web.linked.PAGE_POLICY` with that one script allowed, by its hash.
_AUTO_SUBMIT_HASH = base64.b64encode(hashlib.sha256(AUTO_SUBMIT.encode()).digest()).decode()
SEND_POLICY = PAGE_POLICY.replace("script-src 'none'", f"script-src 'sha256-{_AUTO_SUBMIT_HASH}'")

#: Requests with a scanner's traits are logged at most once per this many seconds, counted.
SCANNER_LOG_SECONDS = 60.0


class ScannerTally:
    """Counts the requests to NPS links that showed a scanner's traits (and recorded nothing),
    by trait; logs them at once for the first, then at most every
    :data:`SCANNER_LOG_SECONDS` with how many came meanwhile."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._agent = ""
        self._logged_at: float | None = None
        self._lock = threading.Lock()

    def note(self, trait: str, method: str, agent: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[f"{method} {trait}"] += 1
            self._agent = agent[:120]
            if self._logged_at is not None and now - self._logged_at < SCANNER_LOG_SECONDS:
                return
            counts, self._counts, self._logged_at = self._counts, Counter(), now
            agent = self._agent
        log.info("%d request(s) to NPS score links showed a link scanner's traits and recorded "
                 "nothing: %s (the latest User-Agent: %r).", sum(counts.values()),
                 ", ".join(f"{n} × {what}" for what, n in counts.most_common()), agent)


def _score(text: str) -> int | None:
    """``text`` as a score 0–10 (ASCII digits only: "¹" is a digit to str.isdigit, and int()
    refuses it); None otherwise."""
    if text.isascii() and text.isdigit() and len(text) <= 2 and int(text) in SCORES:
        return int(text)
    return None


def feedback_routes(app: App) -> APIRouter:
    router = APIRouter()
    linked = Linked(app)
    tally = ScannerTally()

    segment_definitions = definitions_of(app)

    def holder_in(conn: Connection, request: Request, token: str) -> Holder | Response:
        """The customer and mail of ``token``, or the page to answer instead: a bad link's, or
        a test mail's (no answer is recorded for the customer)."""
        found = linked.holder(conn, "feedback", token)
        if found is None:
            return linked.bad_link(request)
        if found.test:
            return linked.test_link(request)
        return found

    def holder_of(request: Request, token: str) -> Holder | Response:
        with app.engine.connect() as conn:
            return holder_in(conn, request, token)

    @router.api_route("/f/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def link(request: Request, token: str, score: str = "") -> Response:
        chosen = _score(score)
        if chosen is None:
            return linked.bad_link(request)
        found = holder_of(request, token)
        if isinstance(found, Response):
            return found
        trait = scanner_trait(request.method, request.headers)
        if trait is not None:  # a GET records nothing anyway; counted, for the operator
            tally.note(trait, request.method, request.headers.get("user-agent", ""))
        page = linked.page(request, "feedback.html", token, found.customer, score=chosen,
                           send=True, script=AUTO_SUBMIT)
        page.headers["Content-Security-Policy"] = SEND_POLICY
        return page

    def vote(request: Request, token: str, score: int, via: str) -> Response:
        agent = request.headers.get("user-agent", "")
        trait = scanner_trait(request.method, request.headers)
        with app.engine.begin() as conn:
            found = holder_in(conn, request, token)
            if isinstance(found, Response):
                return found
            customer, message_id, _ = found
            if trait is not None:
                tally.note(trait, "POST", agent)
            else:
                hold_vote(conn, customer.id, message_id, score, via, app.clock.now(),
                          app.settings.nps_hold_seconds, segment_definitions, agent=agent,
                          clock=app.clock)
            data = answer_of(conn, customer.id, message_id) or {}
            confirm = via == "mail" and needs_confirming(conn, customer.id, message_id)
        return linked.page(request, "feedback.html", token, customer, score=score,
                           comment=data.get("comment", ""), commented=False, confirm=confirm)

    def comment(request: Request, token: str, text: str) -> Response:
        with app.engine.begin() as conn:
            found = holder_in(conn, request, token)
            if isinstance(found, Response):
                return found
            customer, message_id, _ = found
            if not add_comment(conn, customer.id, message_id, text, app.clock.now()):
                return linked.bad_link(request)
            data = answer_of(conn, customer.id, message_id)
        if data is None:
            return linked.bad_link(request)
        return linked.page(request, "feedback.html", token, customer, score=data["score"],
                           comment=data.get("comment", ""), commented=True)

    @router.post("/f/{token}", response_class=HTMLResponse)
    async def post(request: Request, token: str) -> Response:
        form = await read_form(request)
        if "score" not in form:
            return await run_in_threadpool(comment, request, token,
                                           field(form, "comment", strip=False))
        chosen = _score(field(form, "score"))
        if chosen is None:
            return linked.bad_link(request)
        via = "page" if field(form, "via") == "page" else "mail"
        return await run_in_threadpool(vote, request, token, chosen, via)

    return router
