"""Pages for CRM managers: campaigns — the list, the form that makes or edits a draft, and a
campaign's page (its definition, status and history, the audience's size and who is left out
and why, a preview for any customer, test sends, schedule / pause / resume / cancel, results).

Every page needs the ``manager`` role, every action is a form post with the CSRF token, and
every status change goes through :class:`lifecycle.campaigns.service.Campaigns` (which records
who did it and when).  The form builds the same dict a campaign file holds and parses it with
:func:`lifecycle.campaigns.spec.parse_spec`: each problem is shown beside the field it is
about, with what was typed kept.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.campaigns.audience import count_audience, left_out_counts
from lifecycle.campaigns.jobs import context_of, rules_of, spec_of
from lifecycle.campaigns.model import Campaign, CampaignChange, CampaignStatus
from lifecycle.campaigns.preview import preview_mails, write_test_send
from lifecycle.campaigns.service import CampaignError, Campaigns
from lifecycle.campaigns.spec import KINDS, NAME, WINNER_BY, CampaignSpec, parse_spec
from lifecycle.flows.service import configuration
from lifecycle.models import Message
from lifecycle.web.charts import line_chart
from lifecycle.web.linked import field, row_id, search_problem, templates
from lifecycle.web.manage import customer_by_id_or_email
from lifecycle.web.staff import Gate
from lifecycle.yamlfile import InvalidFile, Located, loads

#: Characters a YAML field of the form (``where``, ``offer``) may have.
MAX_YAML = 20_000
#: Characters any other field may have.
MAX_FIELD = 300
#: Campaigns the list shows, newest first.
LIST_SHOWN = 200
#: Changes of a campaign its page lists, newest first.
CHANGES_SHOWN = 50

#: The form's fields in order; parse_spec's problems are placed by the field their path is
#: under (each field is a "line" of the form: :data:`POSITIONS`).
FIELDS = ("name", "description", "kind", "template", "template_b", "offer", "segments",
          "exclude", "where", "schedule", "throttle", "ab_test")
_LINE = {name: n for n, name in enumerate(FIELDS, 1)}
POSITIONS: dict[tuple[str | int, ...], tuple[int, int]] = {
    (): (_LINE["name"], 1), ("description",): (_LINE["description"], 1),
    ("kind",): (_LINE["kind"], 1), ("send",): (_LINE["template"], 1),
    ("send", "variants", 1): (_LINE["template_b"], 1), ("send", "offer"): (_LINE["offer"], 1),
    ("audience",): (_LINE["segments"], 1), ("audience", "exclude"): (_LINE["exclude"], 1),
    ("audience", "where"): (_LINE["where"], 1), ("schedule",): (_LINE["schedule"], 1),
    ("throttle",): (_LINE["throttle"], 1), ("ab_test",): (_LINE["ab_test"], 1)}

#: What the page says after each action.
DONE = {"create": "The draft was saved.", "edit": "The draft was changed.",
        "schedule": "The campaign is scheduled.", "pause": "The campaign is paused.",
        "resume": "The campaign goes on.", "cancel": "The campaign was cancelled."}
ACTIONS = ("schedule", "pause", "resume", "cancel", "winner")


def blank_form() -> dict[str, Any]:
    """The form as a new campaign starts."""
    return {"name": "", "description": "", "kind": "marketing", "template": "",
            "template_b": "", "offer": "", "segments": [], "exclude": [], "where": "",
            "schedule": "now", "at": "", "local_time": "", "throttle": "none",
            "per_hour": "", "over": "", "share": "20%", "winner_by": "clicks",
            "after": "4 hours"}


def form_of(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A stored campaign (the dict :func:`build` makes, or a file's) as the form's values."""
    values = blank_form()
    values.update(name=name, description=raw.get("description") or "",
                  kind=raw.get("kind", "marketing"))
    send = raw.get("send") or {}
    variants = send.get("variants") or [{"template": send.get("template", "")}]
    values["template"] = str(variants[0].get("template", "")) if variants else ""
    values["template_b"] = str(variants[1].get("template", "")) if len(variants) > 1 else ""
    if send.get("offer") is not None:
        values["offer"] = _yaml(send["offer"])
    audience = raw.get("audience") or {}
    for key in ("segments", "exclude"):
        found = audience.get(key) or []
        values[key] = [found] if isinstance(found, str) else list(found)
    if audience.get("where") is not None:
        values["where"] = _yaml(audience["where"])
    schedule = raw.get("schedule", "now")
    if isinstance(schedule, dict) and "at" in schedule:
        values.update(schedule="at", at=str(schedule["at"]).removesuffix("Z")[:16])
    elif isinstance(schedule, dict) and "local_time" in schedule:
        values.update(schedule="local_time", local_time=str(schedule["local_time"]))
    throttle = raw.get("throttle") or {}
    if "per_hour" in throttle:
        values.update(throttle="per_hour", per_hour=str(throttle["per_hour"]))
    elif "over" in throttle:
        values.update(throttle="over", over=str(throttle["over"]))
    ab = raw.get("ab_test")
    if isinstance(ab, dict):
        values.update(share=str(ab.get("share", "")), winner_by=str(ab.get("winner_by", "")),
                      after=str(ab.get("after", "")))
    return values


def read_values(form: dict[str, list[str]]) -> dict[str, Any]:
    """The posted form's values (as :func:`blank_form` has them)."""
    values = blank_form()
    for key in values:
        if isinstance(values[key], list):
            values[key] = [v.strip() for v in form.get(key, []) if v.strip()]
        elif key in form:  # else as a new form has it (radio buttons post nothing unset)
            values[key] = field(form, key, strip=key not in ("where", "offer"))
    return values


def build(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The campaign as a file would hold it, from the form's values; and the problems found
    before parsing it (over-long fields, YAML that does not read), by field."""
    problems: dict[str, list[str]] = {}

    def fail(name: str, message: str) -> None:
        problems.setdefault(name, []).append(message)

    for key, value in values.items():
        limit = MAX_YAML if key in ("where", "offer") else MAX_FIELD
        for item in value if isinstance(value, list) else [value]:
            if len(item) > limit:
                fail(_field_of(key), f"at most {limit:,} characters (this has {len(item):,})")
    if len(values["segments"]) + len(values["exclude"]) > 100:
        fail("segments", "at most 100 segments")
    if problems:
        return {}, problems

    def yaml_value(key: str) -> Any:
        text = values[key]
        if not text.strip():
            return None
        try:
            found = loads(text, key).data
        except InvalidFile as exc:
            for p in exc.problems:
                fail(key, f"line {p.line}, column {p.column}: {p.message}")
            return None
        return json.loads(json.dumps(found, default=str))  # stored as JSON: dates as text

    raw: dict[str, Any] = {"kind": values["kind"]}
    if values["description"]:
        raw["description"] = values["description"]
    if not values["template"]:
        fail("template", "choose the template of the campaign's mail")
    templates_chosen = [t for t in (values["template"], values["template_b"]) if t]
    send: dict[str, Any] = ({"variants": [{"template": t} for t in templates_chosen]}
                            if len(templates_chosen) > 1 else
                            {"template": templates_chosen[0] if templates_chosen else ""})
    offer = yaml_value("offer")
    if offer is not None:
        send["offer"] = offer
    raw["send"] = send
    audience: dict[str, Any] = {"segments": values["segments"]}
    if values["exclude"]:
        audience["exclude"] = values["exclude"]
    where = yaml_value("where")
    if where is not None:
        audience["where"] = where
    raw["audience"] = audience
    if values["schedule"] == "at":
        at = values["at"]
        if not at:
            fail("schedule", "give the moment it starts (UTC)")
        raw["schedule"] = {"at": at if not at or at.endswith("Z") or "+" in at[10:]
                           else f"{at}Z"}  # the form's moment is UTC
    elif values["schedule"] == "local_time":
        raw["schedule"] = {"local_time": values["local_time"]}
    elif values["schedule"] != "now":
        fail("schedule", "the schedule is now, at a moment, or a local time of day")
    if values["throttle"] == "per_hour":
        rate = values["per_hour"]
        raw["throttle"] = {"per_hour": int(rate) if rate.isascii() and rate.isdigit()
                           and len(rate) <= 12 else rate}
    elif values["throttle"] == "over":
        raw["throttle"] = {"over": values["over"]}
    elif values["throttle"] != "none":
        fail("throttle", "the throttle is none, mails per hour, or a duration")
    if len(templates_chosen) > 1:
        raw["ab_test"] = {"share": values["share"], "winner_by": values["winner_by"],
                          "after": values["after"]}
    return raw, problems


def _field_of(key: str) -> str:
    """The form field a value belongs to (the schedule's and A/B test's parts to theirs)."""
    return {"at": "schedule", "local_time": "schedule", "per_hour": "throttle",
            "over": "throttle", "share": "ab_test", "winner_by": "ab_test",
            "after": "ab_test"}.get(key, key)


def _yaml(value: Any) -> str:
    return str(yaml.safe_dump(value, sort_keys=False, allow_unicode=True,
                              default_flow_style=False)).strip()


#: The settings of a campaign in the order a file has them (the database may reorder them).
ORDER = ("description", "kind", "send", "audience", "schedule", "throttle", "ab_test")


def _in_order(raw: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(raw.items(), key=lambda kv: (
        ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER), kv[0])))


def schedule_words(raw: dict[str, Any]) -> str:
    """The schedule of a stored campaign in words."""
    schedule = raw.get("schedule", "now")
    if isinstance(schedule, dict) and "at" in schedule:
        return f"at {str(schedule['at']).replace('T', ' ').removesuffix('Z')} UTC"
    if isinstance(schedule, dict) and "local_time" in schedule:
        return f"at {schedule['local_time']} in each customer's time zone"
    return "as soon as it is scheduled"


def throttle_words(raw: dict[str, Any]) -> str:
    throttle = raw.get("throttle") or {}
    if "per_hour" in throttle:
        return f"at most {throttle['per_hour']} mails an hour"
    if "over" in throttle:
        return f"spread over {throttle['over']}"
    return "as fast as the workers send"


def audience_words(raw: dict[str, Any]) -> str:
    audience = raw.get("audience") or {}
    segments = audience.get("segments") or []
    words = ", ".join(segments if isinstance(segments, list) else [segments])
    if audience.get("exclude"):
        words += " — minus " + ", ".join(audience["exclude"])
    if audience.get("where") is not None:
        words += " — where a condition holds"
    return words


def campaign_routes(app: App, gate: Gate) -> APIRouter:
    router = APIRouter()

    def segments_in_force() -> list[str]:
        return sorted(configuration(app).segments)

    def form_page(request: Request, who: Any, values: dict[str, Any],
                  problems: dict[str, list[str]], editing: str | None,
                  status_code: int = 200) -> Response:
        context = context_of(app)
        return templates.TemplateResponse(request, "campaign_form.html", {
            "who": who, "v": values, "problems": problems, "editing": editing,
            "templates": sorted(context.templates), "segments": segments_in_force(),
            "kinds": KINDS, "winner_by": WINNER_BY, "max_yaml": MAX_YAML,
            "max_field": MAX_FIELD}, status_code=status_code)

    def checked(values: dict[str, Any]) -> tuple[dict[str, Any], CampaignSpec | None,
                                                 dict[str, list[str]]]:
        """The form's campaign as stored, parsed (None with problems), and its problems."""
        raw, problems = build(values)
        name = values["name"]
        if not NAME.match(name):
            problems.setdefault("name", []).append(
                "lower_case letters, digits, - and _ (at most 63), starting with a letter")
        elif name == "new":
            problems.setdefault("name", []).append("“new” names the form: choose another name")
        if not raw:  # over-long fields: nothing more is read
            return raw, None, problems
        try:
            spec = parse_spec(Located("form", raw, POSITIONS), name, context_of(app))
        except InvalidFile as exc:
            for p in exc.problems:
                key = FIELDS[p.line - 1] if 1 <= p.line <= len(FIELDS) else "name"
                if key == "name" and p.message.startswith("the campaign's name"):
                    continue  # said above, in shorter words
                if key in problems and key in ("template", "schedule"):
                    continue  # the form said what is missing there: one message a field
                problems.setdefault(key, []).append(p.message)
            return raw, None, problems
        return raw, (None if problems else spec), problems

    @router.get("/campaigns", response_class=HTMLResponse)
    def campaigns(request: Request) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        with app.engine.connect() as conn:
            rows = conn.execute(select(Campaign.__table__).order_by(
                Campaign.created_at.desc(), Campaign.id.desc()).limit(LIST_SHOWN)).all()
        return templates.TemplateResponse(request, "campaigns.html", {
            "who": who, "rows": rows, "shown": LIST_SHOWN, "audience_words": audience_words,
            "schedule_words": schedule_words})

    @router.get("/campaigns/new", response_class=HTMLResponse)
    def new(request: Request) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        return form_page(request, who, blank_form(), {}, None)

    @router.post("/campaigns/new")
    async def create(request: Request) -> Response:
        who, form, refused = await gate.posted(request, "manager")
        if refused:
            return refused
        values = read_values(form)
        raw, spec, problems = await run_in_threadpool(checked, values)
        if spec is not None:
            def write() -> None:
                with app.engine.begin() as conn:
                    Campaigns(conn).create(spec, raw, who.staff.email, "web", app.clock.now())

            try:
                await run_in_threadpool(write)
            except CampaignError as exc:
                problems = {"name": [str(exc)]}
            else:
                return RedirectResponse(f"/campaigns/{spec.name}?done=create",
                                        status_code=303)
        return form_page(request, who, values, problems, None, status_code=422)

    def row_of(name: str) -> Any | None:
        if len(name) > 100:
            return None
        with app.engine.connect() as conn:
            return conn.execute(select(Campaign.__table__).where(Campaign.name == name)).first()

    def page_of(request: Request, name: str) -> tuple[Any, Any, Response | None]:
        """The visitor and the campaign ``name``, or the answer if they may not see it (as
        :meth:`Gate.guard`) or there is no such campaign (404)."""
        who, refused = gate.guard(request, "manager")
        row = None if refused else row_of(name)
        if refused is None and row is None:
            refused = Response("No such campaign.", status_code=404)
        return who, row, refused

    @router.get("/campaigns/{name}/edit", response_class=HTMLResponse)
    def edit_form(request: Request, name: str) -> Response:
        who, row, refused = page_of(request, name)
        if refused:
            return refused
        if not changeable(row):
            return Response(_unchangeable(row), status_code=409)
        return form_page(request, who, form_of(name, row.spec), {}, name)

    @router.post("/campaigns/{name}/edit")
    async def edit(request: Request, name: str) -> Response:
        who, form, refused = await gate.posted(request, "manager")
        if refused:
            return refused
        row = row_of(name)
        if row is None:
            return Response("No such campaign.", status_code=404)
        if str(row.source).startswith("file:"):
            return Response(_unchangeable(row), status_code=409)
        values = {**read_values(form), "name": name}  # the name stays
        raw, spec, problems = await run_in_threadpool(checked, values)
        if spec is not None:
            def write() -> None:
                with app.engine.begin() as conn:
                    Campaigns(conn).edit(name, raw, who.staff.email, app.clock.now())

            try:
                await run_in_threadpool(write)
            except CampaignError as exc:
                problems = {"name": [str(exc)]}
            else:
                return RedirectResponse(f"/campaigns/{name}?done=edit", status_code=303)
        return form_page(request, who, values, problems, name, status_code=422)

    def campaign_page(request: Request, who: Any, row: Any, customer: str = "",
                      sent: str | None = None, done: str | None = None,
                      problem: str | None = None, status_code: int = 200) -> Response:
        now = app.clock.now()
        spec, spec_problems = None, []
        try:
            spec = spec_of(row, context_of(app))
        except InvalidFile as exc:
            spec_problems = [p.message for p in exc.problems]
        key = customer.strip()
        person, mails, missing = None, [], False
        fixed = row.started_at is not None  # the audience is fixed when the campaign starts
        rules = rules_of(app)
        with app.engine.connect() as conn:
            changes = conn.execute(select(CampaignChange.__table__).where(
                CampaignChange.campaign_id == row.id).order_by(CampaignChange.id.desc())
                .limit(CHANGES_SHOWN)).all()
            if fixed:
                size, left = row.audience_size or 0, dict(left_out_counts(conn, row.id))
            elif spec is not None and row.status != CampaignStatus.CANCELLED.value:
                size, left = count_audience(conn, spec, now, rules)
            else:
                size, left = None, {}
            by_status = dict(conn.execute(select(Message.status, func.count()).where(
                Message.campaign_id == row.id).group_by(Message.status)).all())
            if key:
                person = customer_by_id_or_email(conn, key)
                missing = person is None
            if person is not None and spec is not None:
                mails = preview_mails(conn, app.settings, spec, person, now)
            results = _results(conn, app, row)
        return templates.TemplateResponse(request, "campaign.html", {
            "who": who, "row": row, "spec": spec, "spec_problems": spec_problems,
            "definition": _yaml(_in_order(row.spec)), "changes": changes, "fixed": fixed,
            "size": size, "left": left, "mailed_now": (size - sum(left.values()))
            if size is not None else None, "by_status": by_status,
            "customer": key, "person": person, "mails": mails, "missing": missing,
            "nonce": secrets.token_urlsafe(12), "sent": sent, "done": DONE.get(done or ""),
            "problem": problem, "results": results, "audience_words": audience_words,
            "schedule_words": schedule_words, "throttle_words": throttle_words,
            "changeable": changeable(row), "quiet": rules.quiet},
            status_code=status_code)

    @router.get("/campaigns/{name}", response_class=HTMLResponse)
    def campaign(request: Request, name: str, customer: str = "") -> Response:
        who, row, refused = page_of(request, name)
        if refused:
            return refused
        problem = search_problem(customer)
        if problem is not None:
            return problem
        sent = request.query_params.get("sent")
        return campaign_page(request, who, row, customer, sent=sent[:100] if sent else None,
                             done=request.query_params.get("done"))

    @router.post("/campaigns/{name}/test")
    async def test_send(request: Request, name: str) -> Response:
        who, form, refused = await gate.posted(request, "manager")
        if refused:
            return refused
        row = row_of(name)
        template, nonce = field(form, "template"), field(form, "nonce")
        customer_id = row_id(field(form, "customer_id"))
        if row is None or not nonce or len(nonce) > 100 or customer_id is None:
            return Response("No such campaign or customer.", status_code=404)
        try:
            spec = spec_of(row, context_of(app))
        except InvalidFile as exc:
            return Response("The campaign has problems: "
                            + "; ".join(p.message for p in exc.problems), status_code=409)

        def write() -> bool:
            with app.engine.begin() as conn:
                return write_test_send(conn, spec, template, customer_id, who.staff.id,
                                       who.staff.email, nonce, app.clock.now())

        if not await run_in_threadpool(write):
            return Response("No such template in the campaign, or no such customer.",
                            status_code=404)
        person = field(form, "customer")[:100]
        return RedirectResponse(
            f"/campaigns/{name}?customer={_quote(person)}&sent={_quote(template)}#preview",
            status_code=303)

    @router.post("/campaigns/{name}/{action}")
    async def act(request: Request, name: str, action: str) -> Response:
        """Schedule, pause, resume or cancel (cancel only with ``confirm=yes``)."""
        who, form, refused = await gate.posted(request, "manager")
        if refused:
            return refused
        if action not in ACTIONS:
            return Response("The actions are schedule, pause, resume and cancel.",
                            status_code=404)
        row = row_of(name)
        if row is None:
            return Response("No such campaign.", status_code=404)
        if action == "cancel" and field(form, "confirm") != "yes":
            return campaign_page(request, who, row, problem="The campaign was not cancelled: "
                                 "tick the box that confirms it.", status_code=422)

        def run() -> None:
            from lifecycle.campaigns.files import reviewed_spec
            from lifecycle.campaigns.jobs import rules_of
            from lifecycle.campaigns.winner import release_winner

            now, by = app.clock.now(), who.staff.email
            # a campaign loaded from a reviewed file is scheduled as that file says, checked
            # again (refused when it changed since it was loaded), as on the command line
            spec = (reviewed_spec(row, context_of(app)) if action == "schedule" else
                    spec_of(row, context_of(app)) if action in ("resume", "winner") else None)
            with app.engine.begin() as conn:
                campaigns = Campaigns(conn, app.settings.offer_webhook_url is not None)
                if action == "schedule":
                    campaigns.schedule(name, spec, by, now)  # type: ignore[arg-type]
                elif action == "winner":  # the manager chooses before the test time is up
                    release_winner(conn, campaigns.get(name), spec, rules_of(app), now,
                                   winner=field(form, "variant") or None, by=by,
                                   window=timedelta(days=app.settings.attribution_days),
                                   notify_offers=app.settings.offer_webhook_url is not None)
                elif action == "resume":
                    campaigns.resume(name, spec, by, now)  # type: ignore[arg-type]
                elif action == "pause":
                    campaigns.pause(name, by, now)
                else:
                    campaigns.cancel(name, by, now)

        try:
            await run_in_threadpool(run)
        except CampaignError as exc:
            return campaign_page(request, who, row_of(name), problem=f"Not done: {exc}.",
                                 status_code=409)
        except InvalidFile as exc:
            return campaign_page(request, who, row, problem="Not done: the campaign has "
                                 "problems: " + "; ".join(p.message for p in exc.problems),
                                 status_code=409)
        return RedirectResponse(f"/campaigns/{name}?done={action}", status_code=303)

    return router


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _unchangeable(row: Any) -> str:
    """Why the campaign's page cannot change it, in words."""
    if str(row.source).startswith("file:"):
        return (f"The campaign {row.name} was loaded from its file ({row.source[5:]}): change "
                "the file and load it again (`lifecycle campaign load`); what goes out is what "
                "was reviewed.")
    return (f"The campaign {row.name} is {row.status}: only a draft or a campaign paused before "
            "its start can be changed.")


def changeable(row: Any) -> bool:
    """Whether the campaign's definition may still change on its page (:meth:`Campaigns.
    edit`): not once it started, and never one loaded from a reviewed file (that changes in
    its file, loaded again: what goes out is what was reviewed)."""
    return row.started_at is None and not str(row.source).startswith("file:") and \
        row.status in (CampaignStatus.DRAFT.value, CampaignStatus.PAUSED.value)


def _results(conn: Any, app: App, row: Any) -> Any:
    """The campaign's results per variant with a chart, and for an A/B test the rates by its
    ``winner_by`` with their significance (the leader against the runner-up); None before it
    started."""
    from lifecycle.campaigns.results import campaign_results
    from lifecycle.campaigns.winner import choose_winner, describe

    if row.started_at is None:
        return None
    window = timedelta(days=app.settings.attribution_days)
    found = campaign_results(conn, row.id, window=window, currency=app.settings.currency,
                             now=app.clock.now())
    significant = leader = None
    test = (row.spec or {}).get("ab_test") if isinstance(row.spec, dict) else None
    by = test.get("winner_by") if isinstance(test, dict) else None
    if by in ("opens", "clicks", "conversions"):
        leader, rates, tested = choose_winner(conn, row.id, by, window=window)
        significant = describe(rates, tested, by)
    chart = line_chart(f"{row.name}: mails sent and conversions per day",
                       [d.day for d in found.daily],
                       [("sent", [d.sent for d in found.daily]),
                        ("conversions", [d.conversions for d in found.daily])])
    return {"r": found, "chart": chart, "significant": significant, "leader": leader}
