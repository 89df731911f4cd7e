"""The pages behind the unsubscribe and preference links of every mail.

``/u/<token>`` and ``/p/<token>`` carry a signed token (customer and mail,
see :mod:`lifecycle.links`); a forged or altered token gets a 400 page and
changes nothing; a test mail's token gets a page saying it was a test, and
changes nothing either (:class:`lifecycle.web.linked.Linked`).

* ``GET /u/<token>`` asks (link checkers and mail scanners follow links:
  a GET never unsubscribes);
* ``POST /u/<token>`` unsubscribes from all marketing mail at once: the
  button of that page, and the one-click ``List-Unsubscribe=One-Click`` post
  that mail clients send (RFC 8058), URL-encoded or ``multipart/form-data``
  (the encoding RFC 8058 recommends): either is recorded as one-click;
* ``GET /p/<token>`` shows the choices: all marketing mail, or each marketing
  flow; ``POST /p/<token>`` saves them (and resubscribes).

The token is the credential (:mod:`lifecycle.web.linked`), as RFC 8058
requires, so these forms carry no CSRF token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.flows.service import catalogue
from lifecycle.links import sign, verify
from lifecycle.locales import fallback_chain
from lifecycle.subscriptions import (
    MARKETING,
    choices,
    opted_out,
    resubscribe,
    unsubscribe,
)
from lifecycle.web import i18n
from lifecycle.web.linked import Linked, read_form


def subscription_routes(app: App) -> APIRouter:
    router = APIRouter()
    linked = Linked(app)
    holder, bad_link, page = linked.holder, linked.bad_link, linked.page

    def unsubscribe_page(request: Request, token: str, form: dict[str, list[str]] | None
                         ) -> Response:
        """The question (``form`` None: a GET), or the answer to a POST."""
        with app.engine.begin() as conn:
            found = holder(conn, "unsubscribe", token)
            if found is None:
                return bad_link(request)
            if found.test:
                return linked.test_link(request)
            customer, message_id, _ = found
            if form is not None:
                one_click = form.get("List-Unsubscribe") == ["One-Click"]
                unsubscribe(conn, customer, MARKETING, app.clock.now(),
                            via="one-click" if one_click else "unsubscribe page",
                            message_id=message_id)
        return page(request, "unsubscribe.html", token, customer, done=form is not None,
                    prefs=_preferences_token(app, token))

    @router.get("/u/{token}", response_class=HTMLResponse)
    def ask(request: Request, token: str) -> Response:
        return unsubscribe_page(request, token, None)

    @router.post("/u/{token}", response_class=HTMLResponse)
    async def one_click(request: Request, token: str) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(unsubscribe_page, request, token, form)

    @router.get("/p/{token}", response_class=HTMLResponse)
    def preferences(request: Request, token: str) -> Response:
        with app.engine.connect() as conn:
            found = holder(conn, "preferences", token)
            if found is None:
                return bad_link(request)
            if found.test:
                return linked.test_link(request)
            return _preferences_page(app, request, page, token, conn, found.customer, saved=False)

    def save_choices(request: Request, token: str, form: dict[str, list[str]]) -> Response:
        now = app.clock.now()
        with app.engine.begin() as conn:
            found = holder(conn, "preferences", token)
            if found is None:
                return bad_link(request)
            if found.test:
                return linked.test_link(request)
            customer, message_id, _ = found
            offered = {c.scope for c in choices(_marketing_flows(app))}
            shown = [s for s in form.get("scope", []) if s in offered]
            wanted = {s for s in shown if form.get(s) == ["on"]}
            order = [MARKETING] + [s for s in shown if s != MARKETING]  # all marketing first
            for scope in order:
                if scope not in shown:
                    continue
                if scope != MARKETING and MARKETING not in wanted:
                    continue  # everything is stopped: the single flows keep their setting
                change = resubscribe if scope in wanted else unsubscribe
                change(conn, customer, scope, now, via="preferences page",
                       message_id=message_id)
            return _preferences_page(app, request, page, token, conn, customer, saved=True)

    @router.post("/p/{token}", response_class=HTMLResponse)
    async def save(request: Request, token: str) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(save_choices, request, token, form)

    return router


def _marketing_flows(app: App, chain: list[str] | None = None) -> dict[str, str]:
    """Each marketing flow's name -> how the page names it: its ``label`` for the first
    locale of ``chain`` that has one (the customer's fallback chain), else its description."""
    return {name: flow.label(chain or []) for name, flow in catalogue(app).flows.items()
            if flow.kind == "marketing"}


def _preferences_token(app: App, unsubscribe_token: str) -> str:
    """The preferences token of the same customer and mail."""
    return sign(app.keys, "preferences", verify(app.keys, "unsubscribe", unsubscribe_token))


def _preferences_page(app: App, request: Request, page: Any, token: str, conn: Any,
                      customer: Any, *, saved: bool) -> Response:
    stopped = opted_out(conn, customer)
    locked = sorted({reason for reason in stopped.values() if reason != "unsubscribe"})
    chain = fallback_chain(customer.locale, app.settings.locale)
    if i18n.language_for(customer.locale, app.settings.locale) == i18n.SOURCE_LANGUAGE:
        chain.append(i18n.SOURCE_LANGUAGE)  # an English page names flows in English
    return page(request, "preferences.html", token, customer, saved=saved,
                choices=choices(_marketing_flows(app, chain)), stopped=set(stopped),
                locked=locked)
