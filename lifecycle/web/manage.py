"""Pages for CRM managers: flows and their results, previews, test sends, segments.

Every page needs the ``manager`` role (admins have it too).  A test send is
an outbox row like any other mail — the workers send it, once — addressed
to the manager who asked, with a key made from a token of the form, so a
double-clicked button sends one mail.  It is kept out of flow results and off
the customer's timeline, and never touches that customer: its context names
the manager (``test``) and the flow (``test_flow``), which makes its tokens
test tokens and its headers say so (:mod:`lifecycle.mail.compose`).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, or_, select
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.db import insert_new
from lifecycle.flows.definitions import Flow, Send
from lifecycle.flows.engine import offer_context
from lifecycle.flows.preview import preview_mails
from lifecycle.flows.service import catalogue, configuration
from lifecycle.flows.states import EXIT, STATUSES, WAIT, effective_statuses, switch
from lifecycle.models import (
    Customer,
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    MessageStatus,
    SegmentMembership,
)
from lifecycle.results import flow_results, segment_sizes
from lifecycle.segments.definitions import segment_words
from lifecycle.segments.service import definitions
from lifecycle.web.charts import line_chart
from lifecycle.web.linked import field, row_id, search_problem, templates
from lifecycle.web.staff import Gate
from lifecycle.yamlfile import InvalidFile

#: Longest period a results page covers (days).
MAX_DAYS = 730


def _period(app: App, days: int) -> tuple[datetime, datetime]:
    """The last ``days`` whole UTC days, today included."""
    today = app.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=max(1, min(days, MAX_DAYS)) - 1), today + timedelta(days=1)


def manager_routes(app: App, gate: Gate) -> APIRouter:
    router = APIRouter()

    def flow_page(request: Request, name: str) -> tuple[Any, Flow, Response | None]:
        """The visitor and the flow ``name``, or (with no flow) the answer if they may not see
        it (as :meth:`Gate.guard`) or there is no such valid flow (404)."""
        who, refused = gate.guard(request, "manager")
        flow = None if refused else catalogue(app).flows.get(name)
        if refused is None and flow is None:
            refused = Response("No such flow.", status_code=404)
        return who, flow, refused  # type: ignore[return-value]  (flow is set when not refused)

    @router.get("/flows", response_class=HTMLResponse)
    def flows(request: Request) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        loaded = configuration(app)
        return templates.TemplateResponse(request, "flows.html", {
            "who": who, "flows": sorted(loaded.flows.values(), key=lambda f: f.name),
            "problems": loaded.problems, "notices": loaded.notices})

    @router.get("/flows/{name}", response_class=HTMLResponse)
    def results(request: Request, name: str, days: int = 90, window: float = 0) -> Response:
        who, flow, refused = flow_page(request, name)
        if refused:
            return refused
        attribution = window if 0 < window <= 365 else app.settings.attribution_days
        start, end = _period(app, days)
        with app.engine.connect() as conn:
            found = flow_results(conn, name, start, end, timedelta(days=attribution),
                                 [s.id for s in flow.steps], sends=[
                                     (s.id, [v.template for v in s.action.variants]
                                      if len(s.action.variants) > 1 else [None])
                                     for s in flow.steps if isinstance(s.action, Send)],
                                 currency=app.settings.currency)
            state = effective_statuses(conn, [flow])[name]
            enrolled = conn.execute(select(func.count()).select_from(FlowEnrollment).where(
                FlowEnrollment.flow == name,
                FlowEnrollment.status == EnrollmentStatus.ACTIVE.value)).scalar_one()
        day_list = [d.day for d in found.daily]
        chart = line_chart(f"{name}: mails sent and conversions per day", day_list, [
            ("sent", [d.sent for d in found.daily]),
            ("conversions", [d.conversions for d in found.daily])])
        return templates.TemplateResponse(request, "flow.html", {
            "who": who, "flow": flow, "r": found, "days": days, "window": attribution,
            "chart": chart, "state": state, "enrolled": enrolled})

    @router.post("/flows/{name}/status")
    async def set_status(request: Request, name: str) -> Response:
        """A manager's switch: live, draft, paused (``on_pause``: wait or exit) or ``file``
        (follow the file again); recorded with who and when."""
        who, form, refused = await gate.posted(request, "manager")
        if refused:
            return refused
        flow = catalogue(app).flows.get(name)
        status, on_pause = field(form, "status"), field(form, "on_pause") or WAIT
        if flow is None:
            return Response("No such flow.", status_code=404)
        if status not in (*STATUSES, "file") or on_pause not in (WAIT, EXIT):
            return Response("The status is live, draft, paused or file; on_pause is wait or "
                            "exit.", status_code=422)

        def write() -> None:
            with app.engine.begin() as conn:
                switch(conn, flow, None if status == "file" else status, who.staff.email,
                       app.clock.now(), on_pause)

        await run_in_threadpool(write)
        return RedirectResponse(f"/flows/{name}#status", status_code=303)

    @router.get("/flows/{name}/preview", response_class=HTMLResponse)
    def preview(request: Request, name: str, customer: str = "") -> Response:
        who, flow, refused = flow_page(request, name)
        if refused:
            return refused
        mails, person, missing = [], None, False
        key = customer.strip()
        problem = search_problem(key)
        if problem is not None:
            return problem
        with app.engine.connect() as conn:
            if key:
                c = Customer.__table__
                person = conn.execute(select(c).where(or_(
                    c.c.external_id == key, func.lower(c.c.email) == key.lower()))
                    .order_by(c.c.id).limit(1)).first()
                missing = person is None
            if person is not None:
                mails = preview_mails(conn, app.settings, flow, person, app.clock.now())
        return templates.TemplateResponse(request, "preview.html", {
            "who": who, "flow": flow, "customer": key, "person": person, "mails": mails,
            "missing": missing, "nonce": secrets.token_urlsafe(12),
            "sent": request.query_params.get("sent")})

    @router.post("/flows/{name}/test")
    async def test_send(request: Request, name: str) -> Response:
        who, form, refused = await gate.posted(request, "manager")
        if refused:
            return refused
        flow = catalogue(app).flows.get(name)
        step_id, template = field(form, "step"), field(form, "template")
        nonce, customer_id = field(form, "nonce"), row_id(field(form, "customer_id"))
        step = next((s for s in flow.steps if s.id == step_id), None) if flow else None
        if step is None or not isinstance(step.action, Send) or template not in {
                v.template for v in step.action.variants} or not nonce \
                or customer_id is None:
            return Response("No such flow step or template.", status_code=404)
        action = step.action

        def write() -> bool:
            now = app.clock.now()
            context: dict[str, Any] = {"test": who.staff.email, "test_flow": name,
                                       "marketing": False}
            if action.offer is not None:
                context["offer"] = offer_context(action.offer)
            # the flow's UTM as its real mail carries them (the row names no flow: a test)
            context["utm"] = False if flow.utm is False else {"campaign": name,
                                                               **(flow.utm or {})}
            with app.engine.begin() as conn:
                if conn.execute(select(Customer.id).where(
                        Customer.id == customer_id)).first() is None:
                    return False
                insert_new(conn, Message.__table__, [{
                    "idempotency_key": f"test:{who.staff.id}:{nonce}",
                    "customer_id": customer_id, "enrollment_id": None, "flow": None,
                    "step": step_id, "template": template, "variant": None,
                    "to_email": who.staff.email, "status": MessageStatus.SCHEDULED.value,
                    "due_at": now, "attempts": 0, "context": context, "created_at": now,
                    "updated_at": now}], ("idempotency_key",))
            return True

        if not await run_in_threadpool(write):
            return Response("No such customer.", status_code=404)
        person = field(form, "customer")
        return RedirectResponse(f"/flows/{name}/preview?customer={person}&sent={template}",
                                status_code=303)

    @router.get("/segments", response_class=HTMLResponse)
    def segments(request: Request, days: int = 90) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        notices = configuration(app).notices
        try:
            defs = definitions(app)  # while the file is invalid: its last valid version
        except InvalidFile as exc:
            return templates.TemplateResponse(request, "segments.html", {
                "who": who, "problems": [str(p) for p in exc.problems], "rows": [],
                "charts": [], "days": days, "day_list": [], "series": [],
                "notices": []}, status_code=422)
        start, end = _period(app, days)
        s = SegmentMembership.__table__
        with app.engine.connect() as conn:
            now_sizes = dict(conn.execute(select(s.c.segment, func.count()).where(
                s.c.exited_at.is_(None)).group_by(s.c.segment)).all())
            day_list, series = segment_sizes(conn, start, end)
        names = defs.all_names()
        rows = [{"segment": n, "family": defs.family(n), "size": now_sizes.get(n, 0)}
                for n in names]
        by_family: dict[str, list[Any]] = {}
        for item in series:
            by_family.setdefault(defs.family(item.segment) if item.segment in names
                                 else "other", []).append(item)
        charts = [(family, line_chart(
            f"{family} segments: customers at the end of each day", day_list,
            [(segment_words(i.segment), i.sizes) for i in items]))
            for family, items in sorted(by_family.items())]
        return templates.TemplateResponse(request, "segments.html", {
            "who": who, "rows": rows, "charts": charts, "days": days, "day_list": day_list,
            "series": series, "notices": notices})

    return router
