"""FastAPI application factory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from lifecycle.apikeys import ApiKeyRefused, authenticate
from lifecycle.app import App
from lifecycle.flows.service import configuration
from lifecycle.models import Customer, Message, Order, ProcessHeartbeat
from lifecycle.tasks import heartbeat
from lifecycle.web.admin import admin_routes
from lifecycle.web.api import KeyBeforeBody, api_routes, install_api_errors
from lifecycle.web.campaigns import campaign_routes
from lifecycle.web.catalog import catalog_routes
from lifecycle.web.feedback import feedback_routes
from lifecycle.web.insights import insight_routes
from lifecycle.web.limits import BodyLimit
from lifecycle.web.linked import PAGE_POLICY, templates
from lifecycle.web.manage import manager_routes
from lifecycle.web.staff import Gate, staff_routes
from lifecycle.web.subscriptions import subscription_routes
from lifecycle.web.webhooks import webhook_routes

#: A process whose row names no heartbeat interval counts as gone when not seen for this long
#: (the demo's row); schedulers and workers after four missed heartbeats.
STALE_AFTER = timedelta(minutes=2)



#: The API documents' pages (Swagger UI, ReDoc) are FastAPI's: their script and styles come from
#: the jsDelivr CDN, with an inline start-up script; nothing else is allowed.
DOCS_POLICY = ("default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
               "style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
               "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
               "https://cdn.redoc.ly; worker-src blob:; connect-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")


def create_app(app: App) -> FastAPI:
    # The API documents are served below, to staff and API clients only.
    web = FastAPI(title="Lifecycle", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None)
    web.state.lifecycle = app
    web.include_router(webhook_routes(app))
    web.include_router(subscription_routes(app))
    web.include_router(feedback_routes(app))
    web.include_router(api_routes(app))
    gate = Gate(app)
    web.include_router(staff_routes(app, gate))
    web.include_router(manager_routes(app, gate))
    web.include_router(campaign_routes(app, gate))
    web.include_router(insight_routes(app, gate))
    web.include_router(catalog_routes(app, gate))
    web.include_router(admin_routes(app, gate))
    install_api_errors(web)
    web.add_middleware(KeyBeforeBody, app=app)  # FastAPI would read the body first
    web.add_middleware(BodyLimit)

    @web.middleware("http")
    async def page_headers(request: Request, call_next: Any) -> Any:
        """Every answer: kept in no cache (staff pages, customer data, and the pages behind a
        mail's links are personal; nothing here is static).  Every HTML page: no script runs
        (none is needed; the NPS link's page sets its own policy allowing its one script), no
        other site may frame it, forms post only here, and links do not leak paths (customer
        ids) to other sites."""
        answer = await call_next(request)
        answer.headers.setdefault("Cache-Control", "no-store")
        if answer.headers.get("content-type", "").startswith("text/html"):
            answer.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            answer.headers.setdefault("X-Frame-Options", "DENY")
            answer.headers.setdefault("Referrer-Policy", "same-origin")
            answer.headers.setdefault("X-Content-Type-Options", "nosniff")
        return answer

    def may_read_docs(request: Request) -> bool:
        """Whether ``request`` may read the API documents: ``LIFECYCLE_PUBLIC_API_DOCS``, a
        staff login, or a valid API key (of any scope) in ``Authorization: Bearer``."""
        if app.settings.public_api_docs or gate.visitor(request).staff is not None:
            return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        try:
            with app.engine.begin() as conn:  # no key has the empty scope: 403 means valid
                authenticate(conn, presented.strip(), "", app.clock.now())
        except ApiKeyRefused as exc:
            return exc.status == 403
        return False

    def not_found() -> Response:
        return Response("Not Found", status_code=404, media_type="text/plain")

    @web.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> Response:
        return JSONResponse(web.openapi()) if may_read_docs(request) else not_found()

    def documents(page: Response) -> Response:
        page.headers["Content-Security-Policy"] = DOCS_POLICY  # not PAGE_POLICY: they need script
        return page

    @web.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        return documents(get_swagger_ui_html(openapi_url="/openapi.json", title="Lifecycle API")) \
            if may_read_docs(request) else not_found()

    @web.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> Response:
        return documents(get_redoc_html(openapi_url="/openapi.json", title="Lifecycle API")) \
            if may_read_docs(request) else not_found()

    @web.get("/healthz")
    def healthz(request: Request) -> JSONResponse:
        """Database reachable, the schedulers and workers seen recently, and the problems of
        the configuration files (``status`` is ``degraded`` while there are any): in full for
        staff who are logged in, else only the file's name and line of each (a problem's text
        quotes the file and its path names the server's folders)."""
        now = app.clock.now()
        try:
            with app.sessions() as session:
                beats = session.scalars(select(ProcessHeartbeat)
                                        .order_by(ProcessHeartbeat.name)).all()
                # mails SendGrid took twice (a late event after a resend: lifecycle.mail.outbox)
                sent_twice = session.scalar(select(func.count()).select_from(Message).where(
                    Message.duplicate_at.is_not(None)))
            # a broken configuration file: its last valid version runs, but someone must fix it
            found = configuration(app).problems
            problems = ([str(p) for p in found] if gate.visitor(request).staff is not None
                        else [f"{Path(p.file).name}:{p.line}" for p in found])
        except SQLAlchemyError as exc:
            return JSONResponse({"ok": False, "database": f"unreachable: {type(exc).__name__}"},
                                status_code=503)
        processes: list[dict[str, Any]] = [
            {"name": b.name, "kind": b.kind, "last_seen_at": b.last_seen_at.isoformat(),
             # in real time (under the demo's fast clock too), by the process's own beat
             "alive": heartbeat.alive(app.clock, now, b.last_seen_at, b.info,
                                      STALE_AFTER.total_seconds() / heartbeat.MISSED_BEATS),
             **b.info}
            for b in beats]
        return JSONResponse({"ok": True, "status": "degraded" if problems else "ok",
                             "database": "ok", "processes": processes,
                             "mails_sent_twice": sent_twice, "configuration": problems})

    @web.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        """The front page: a link to the login; what the database holds and where mail goes
        only for staff who are logged in (a public page names no path and no figure)."""
        if gate.visitor(request).staff is None:
            return templates.TemplateResponse(request, "index.html", {"counts": None})
        with app.sessions() as session:
            counts = {
                "customers": session.scalar(select(func.count()).select_from(Customer)),
                "orders": session.scalar(select(func.count()).select_from(Order)),
                "messages": session.scalar(select(func.count()).select_from(Message)),
            }
        return templates.TemplateResponse(request, "index.html", {
            "counts": counts, "database": app.database_label(),
            "transport": app.settings.mail_transport,
            "outbox": app.settings.outbox_dir.resolve(),
        })

    return web
