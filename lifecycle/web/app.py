"""FastAPI application factory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from lifecycle.app import App
from lifecycle.models import Customer, Message, Order, ProcessHeartbeat
from lifecycle.tasks import heartbeat
from lifecycle.web.admin import admin_routes
from lifecycle.web.api import api_routes, install_api_errors
from lifecycle.web.feedback import feedback_routes
from lifecycle.web.limits import BodyLimit
from lifecycle.web.linked import templates
from lifecycle.web.manage import manager_routes
from lifecycle.web.staff import Gate, staff_routes
from lifecycle.web.subscriptions import subscription_routes
from lifecycle.web.webhooks import webhook_routes

#: A process whose row names no heartbeat interval counts as gone when not seen for this long
#: (the demo's row); schedulers and workers after four missed heartbeats.
STALE_AFTER = timedelta(minutes=2)

#: The pages use no script; a mail shown in a sandboxed frame inherits this policy too.
PAGE_POLICY = ("script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")



def create_app(app: App) -> FastAPI:
    web = FastAPI(title="Lifecycle", version="0.1.0")
    web.state.lifecycle = app
    web.include_router(webhook_routes(app))
    web.include_router(subscription_routes(app))
    web.include_router(feedback_routes(app))
    web.include_router(api_routes(app))
    gate = Gate(app)
    web.include_router(staff_routes(app, gate))
    web.include_router(manager_routes(app, gate))
    web.include_router(admin_routes(app, gate))
    install_api_errors(web)
    web.add_middleware(BodyLimit)  # the API reads its body before its key is checked

    @web.middleware("http")
    async def page_headers(request: Request, call_next: Any) -> Any:
        """Every HTML page: no script runs (none is needed), no other site may frame it, forms
        post only here, and links do not leak paths (customer ids) to other sites."""
        answer = await call_next(request)
        if answer.headers.get("content-type", "").startswith("text/html"):
            answer.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            answer.headers.setdefault("X-Frame-Options", "DENY")
            answer.headers.setdefault("Referrer-Policy", "same-origin")
            answer.headers.setdefault("X-Content-Type-Options", "nosniff")
        return answer

    @web.get("/healthz")
    def healthz() -> JSONResponse:
        """Database reachable, and the schedulers and workers seen recently."""
        now = app.clock.now()
        try:
            with app.sessions() as session:
                beats = session.scalars(select(ProcessHeartbeat)
                                        .order_by(ProcessHeartbeat.name)).all()
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
        return JSONResponse({"ok": True, "database": "ok", "processes": processes})

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
