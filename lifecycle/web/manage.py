"""Pages for CRM managers: flows and their results, previews, test sends, segments and
their members (a page, and a CSV export).

Every page needs the ``manager`` role (admins have it too).  A test send is
an outbox row like any other mail — the workers send it, once — addressed
to the manager who asked, with a key made from a token of the form, so a
double-clicked button sends one mail.  It is kept out of flow results and off
the customer's timeline, and never touches that customer: its context names
the manager (``test``) and the flow (``test_flow``), which makes its tokens
test tokens and its headers say so (:mod:`lifecycle.mail.compose`).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import func, or_, select
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.db import insert_new
from lifecycle.flows.checks import check_flow
from lifecycle.flows.definitions import Flow, Send
from lifecycle.flows.diagram import (
    boxes_of_file,
    boxes_of_flow,
    diagram,
    problems_by_box,
    trigger_words,
)
from lifecycle.flows.engine import offer_context
from lifecycle.flows.figures import flow_overview, recent_failures, step_figures
from lifecycle.flows.preview import preview_mails
from lifecycle.flows.service import catalogue, configuration
from lifecycle.flows.states import EXIT, STATUSES, WAIT, effective_statuses, file_state, switch
from lifecycle.models import (
    Customer,
    EnrollmentStatus,
    FlowEnrollment,
    FlowStatusChange,
    Message,
    MessageStatus,
    SegmentMembership,
)
from lifecycle.results import flow_results, segment_sizes
from lifecycle.segments.definitions import segment_words
from lifecycle.segments.members import (
    COLUMNS,
    PAGE,
    all_members,
    definition_yaml,
    describe,
    member_count,
    members_page,
)
from lifecycle.segments.service import definitions
from lifecycle.web.charts import line_chart
from lifecycle.web.linked import field, row_id, search_problem, templates
from lifecycle.web.staff import Gate
from lifecycle.yamlfile import InvalidFile, Problem, load

#: Longest period a results page covers (days).
MAX_DAYS = 730
#: The flows list counts mails sent and failed in this many days before now.
LIST_DAYS = 7
#: A flow page warns of mails of the flow that failed in this many hours before now.
NOTICE_HOURS = 24


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
        with app.engine.connect() as conn:
            figures = flow_overview(conn, app.clock.now(), LIST_DAYS)
            states = effective_statuses(conn, loaded.flows)
        return templates.TemplateResponse(request, "flows.html", {
            "who": who, "flows": sorted(loaded.flows.values(), key=lambda f: f.name),
            "problems": loaded.problems, "notices": loaded.notices,
            "figures": figures, "state_of": lambda f: states[f.name],
            "file_status": lambda f: file_state(f).status,
            "trigger_words": trigger_text, "list_days": LIST_DAYS})

    @router.get("/flows/{name}", response_class=HTMLResponse)
    def results(request: Request, name: str, days: int = 90, window: float = 0) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        loaded = configuration(app)
        flow = loaded.flows.get(name)  # while its file is invalid: the last valid version
        problems = [p for p in loaded.problems if _flow_name(app, p) == name]
        instead = next((n.instead for n in loaded.notices if n.flow == name), None)
        if flow is None and not problems:
            return Response("No such flow.", status_code=404)
        attribution = window if 0 < window <= 365 else app.settings.attribution_days
        start, end = _period(app, days)
        boxes, placed = [], {}
        if flow is not None:
            boxes = boxes_of_flow(flow)
        else:
            try:
                located = load(app.settings.flows_dir / f"{name}.yaml")
            except InvalidFile:
                located = None  # not even YAML: the problems say where
            if located is not None:
                boxes = boxes_of_file(located)
                placed = problems_by_box(located, boxes, problems)
        with app.engine.connect() as conn:
            found = flow_results(conn, name, start, end, timedelta(days=attribution),
                                 [b.key for b in boxes], sends=[
                                     (s.id, [v.template for v in s.action.variants]
                                      if len(s.action.variants) > 1 else [None])
                                     for s in (flow.steps if flow else ())
                                     if isinstance(s.action, Send)],
                                 currency=app.settings.currency)
            figures = step_figures(conn, name, start, end)
            failures = recent_failures(conn, name, app.clock.now(), NOTICE_HOURS)
            state = effective_statuses(conn, [flow])[name] if flow is not None else None
            enrolled = conn.execute(select(func.count()).select_from(FlowEnrollment).where(
                FlowEnrollment.flow == name,
                FlowEnrollment.status == EnrollmentStatus.ACTIVE.value)).scalar_one()
            switches = conn.execute(select(FlowStatusChange.__table__).where(
                FlowStatusChange.flow == name).order_by(FlowStatusChange.id.desc())
                .limit(SWITCHES_SHOWN)).all()
            # a flow started by entering a segment enrols only who enters from now on: say
            # how many are in it already (they are not mailed when it is made live)
            already_in = None
            if flow is not None and flow.trigger.kind == "segment_entered":
                stays = SegmentMembership.__table__
                already_in = conn.execute(select(func.count(func.distinct(
                    stays.c.customer_id))).where(
                    stays.c.segment.in_(flow.trigger.options["segments"]),
                    stays.c.exited_at.is_(None))).scalar_one()
        picture = diagram(boxes, figures, placed, title=f"{name}: the flow, with each step's "
                          f"figures for the mails decided in the last {max(1, min(days, MAX_DAYS))} days") \
            if boxes else None
        day_list = [d.day for d in found.daily]
        chart = line_chart(f"{name}: mails sent and conversions per day", day_list, [
            ("sent", [d.sent for d in found.daily]),
            ("conversions", [d.conversions for d in found.daily])])
        checks = (check_flow(app.settings, app.engine, flow, app.clock.now())
                  if flow is not None else None)
        return templates.TemplateResponse(request, "flow.html", {
            "who": who, "flow": flow, "name": name, "r": found, "days": days,
            "window": attribution, "chart": chart, "diagram": picture, "problems": problems,
            "instead": instead, "failures": failures, "notice_hours": NOTICE_HOURS,
            "status": state.status if state is not None else "invalid",
            "trigger": trigger_text(flow) if flow is not None else None,
            "state": state, "enrolled": enrolled, "checks": checks, "switches": switches,
            "already_in": already_in})

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
        if status == "live" and field(form, "anyway") != "yes":
            found = await run_in_threadpool(check_flow, app.settings, app.engine, flow,
                                            app.clock.now(), True)
            if found.errors:  # its mails would fail: made live only when the manager insists
                n = len(found.errors)
                return Response(f"The flow {name} was not made live: its templates have "
                                f"{n} problem{'s' if n != 1 else ''}, so its mails would fail to "
                                "send (see Checks on its page). Fix them, or tick \"make it "
                                "live anyway\" on the page.", status_code=409)

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
                person = customer_by_id_or_email(conn, key)
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

    def segment_of(request: Request, name: str) -> tuple[Any, Any, Response | None]:
        """The visitor and the segment definitions, or the answer if they may not see the
        segment ``name`` (as :meth:`Gate.guard`), the file is broken (422) or there is no
        such segment (404)."""
        who, refused = gate.guard(request, "manager")
        if refused:
            return who, None, refused
        try:
            defs = definitions(app)
        except InvalidFile as exc:
            return who, None, Response("The segment definitions have problems:\n"
                                       + "\n".join(map(str, exc.problems)),
                                       status_code=422, media_type="text/plain")
        if name not in defs.all_names():
            return who, None, Response("No such segment.", status_code=404)
        return who, defs, None

    @router.get("/segments/{name}", response_class=HTMLResponse)
    def segment(request: Request, name: str, after: str = "") -> Response:
        """A segment: its definition, and its members now, :data:`PAGE` a page by row id."""
        who, defs, refused = segment_of(request, name)
        if refused:
            return refused
        start = row_id(after) if after else 0
        if start is None:
            return Response("Not a page cursor.", status_code=400)
        with app.engine.connect() as conn:
            members, following = members_page(conn, name, after=start)
            total = member_count(conn, name)
        # a broken segments.yaml: this page shows its last valid version, and says so
        notices = [n for n in configuration(app).notices
                   if Path(n.file).name == "segments.yaml"]
        return templates.TemplateResponse(request, "segment.html", {
            "who": who, "name": name, "family": defs.family(name), "notices": notices,
            "summary": describe(defs, name), "source": definition_yaml(defs, name),
            "file": defs.file, "members": members, "total": total, "after": start,
            "following": following, "page": PAGE})

    @router.get("/segments/{name}/members.csv")
    def segment_csv(request: Request, name: str) -> Response:
        """Every member now as CSV (:data:`lifecycle.segments.members.COLUMNS`), streamed."""
        _who, _defs, refused = segment_of(request, name)
        if refused:
            return refused

        def lines() -> Iterator[str]:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(COLUMNS)
            # each chunk on a short read-only connection: a slow download holds nothing
            for n, member in enumerate(all_members(app.engine, name), 1):
                writer.writerow(member.row())
                if n % 500 == 0:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
            yield out.getvalue()

        stamp = app.clock.now().strftime("%Y-%m-%d")
        return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="segment-{name}-{stamp}.csv"'})

    return router


#: Switches of a flow's status listed on its page, newest first.
SWITCHES_SHOWN = 10


def customer_by_id_or_email(conn: Any, key: str) -> Any | None:
    """The customer a preview is for: whose shop id is ``key``, or whose email address it is
    (in any case); the first by row id if several."""
    c = Customer.__table__
    return conn.execute(select(c).where(or_(
        c.c.external_id == key, func.lower(c.c.email) == key.lower()))
        .order_by(c.c.id).limit(1)).first()


def trigger_text(flow: Flow) -> str:
    """The flow's trigger in words, as the list and the flow page show it."""
    return trigger_words(flow.trigger)


def _flow_name(app: App, problem: Problem) -> str | None:
    """The flow a problem is about: the name of its file when that is a flow file of
    LIFECYCLE_FLOWS_DIR (not segments.yaml or policies.yaml), else None."""
    path = Path(problem.file)
    if path.suffix != ".yaml" or path.name in ("segments.yaml", "policies.yaml") \
            or path.parent.resolve() != app.settings.flows_dir.resolve():
        return None
    return path.stem
