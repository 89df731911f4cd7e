"""Staff sessions and roles (:class:`Gate`), and support's pages: login, customer search,
a customer's page and timeline, a sent mail, pausing mails, notes.  Managers' pages are in
:mod:`lifecycle.web.manage`, admins' in :mod:`lifecycle.web.admin`.

Sessions are a signed cookie (HMAC with the secret key, :attr:`lifecycle.app.App.keys`,
see :mod:`lifecycle.links`): the staff id, the account's session epoch when it was
issued, when it was issued (a session lasts :data:`SESSION_HOURS`) and the
session's CSRF token, which every form carries and every POST must return.
Every request reads the account: a session of an inactive account, or one
issued before the account's epoch was raised (logout, a new password,
deactivation — in any process), is no session.  The login form, which has no
session yet, uses a double-submit cookie instead; login attempts are throttled
per account name and per client address (:mod:`lifecycle.throttle`), a blocked
attempt answered 429 with how long to wait.  Each page names the least role it
needs; a visitor without a session is sent to the login page, a staff member
without the role gets 403.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, or_, select
from starlette.concurrency import run_in_threadpool

from lifecycle.app import App
from lifecycle.links import BadToken, sign, verify
from lifecycle.mail.outbox import Outbox, is_test
from lifecycle.models import (
    Customer,
    EnrollmentStatus,
    FlowEnrollment,
    Message,
    MessageContent,
    Order,
    Touchpoint,
)
from lifecycle.segments.explain import NotACustomerYet, explain
from lifecycle.segments.service import definitions
from lifecycle.staff import allows, check_password, end_sessions, staff_by_id
from lifecycle.throttle import admit, failed, keys_of, succeeded
from lifecycle.timeline import MAX_PAGE, PAGE, TIMELINE_KINDS, next_cursor
from lifecycle.timeline import page as timeline_page
from lifecycle.timeutil import as_utc
from lifecycle.web.linked import RowId, field, read_form, row_id, search_problem, templates
from lifecycle.yamlfile import InvalidFile

SESSION_COOKIE = "lifecycle_session"
LOGIN_COOKIE = "lifecycle_login"
SESSION_HOURS = 12
SEARCH_LIMIT = 50
#: Longest staff note kept (characters).
MAX_NOTE = 4000


class Visitor:
    def __init__(self, staff: Any | None, csrf: str) -> None:
        self.staff = staff
        self.csrf = csrf


class Gate:
    """Who is asking, and whether their role may: every staff page and action goes through
    :meth:`guard` (a page) or :meth:`posted` (a form post, CSRF checked too)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.secret = app.keys  # signs with the current key, accepts the previous ones too
        self.secure = app.settings.base_url.startswith("https://")

    def visitor(self, request: Request) -> Visitor:
        raw = request.cookies.get(SESSION_COOKIE, "")
        try:
            data = verify(self.secret, "session", raw) if raw else {}
        except BadToken:
            data = {}
        fresh = time.time() - float(data.get("t", 0)) < SESSION_HOURS * 3600
        staff = None
        if data and fresh:
            with self.app.engine.connect() as conn:
                staff = staff_by_id(conn, int(data["u"]))
            if staff is not None and data.get("e") != staff.session_epoch:
                staff = None  # ended by logout, a new password or deactivation
        return Visitor(staff, str(data.get("x", "")) if staff else "")

    def guard(self, request: Request, role: str) -> tuple[Visitor, Response | None]:
        """The visitor, and the answer if they may not see a page that needs ``role``: the
        login page (no session) or 403 (a role below it)."""
        who = self.visitor(request)
        if who.staff is None:
            target = quote(request.url.path + (f"?{request.url.query}" if request.url.query
                                               else ""))
            return who, RedirectResponse(f"/login?next={target}", status_code=303)
        if not allows(who.staff.role, role):
            return who, templates.TemplateResponse(request, "forbidden.html", {
                "who": who, "needed": role}, status_code=403)
        return who, None

    @staticmethod
    def csrf_ok(who: Visitor, form: dict[str, list[str]]) -> bool:
        return bool(who.csrf) and hmac.compare_digest(field(form, "csrf", strip=False), who.csrf)

    async def posted(self, request: Request, role: str
                     ) -> tuple[Visitor, dict[str, list[str]], Response | None]:
        """A staff form post: the visitor, the form, and the answer if it is refused (no
        session or role: as :meth:`guard`; a wrong CSRF token: 403)."""
        form = await read_form(request)
        who, refused = self.guard(request, role)
        if refused is None and not self.csrf_ok(who, form):
            refused = Response("Missing or wrong CSRF token.", status_code=403)
        return who, form, refused


def staff_routes(app: App, gate: Gate) -> APIRouter:
    router = APIRouter()
    secret, secure = gate.secret, gate.secure
    visitor, guard, posted, csrf_ok = gate.visitor, gate.guard, gate.posted, gate.csrf_ok

    def path_of(customer_id: int) -> str:
        with app.engine.connect() as conn:
            row = conn.execute(select(Customer.__table__).where(
                Customer.id == customer_id)).first()
        return customer_path(row) if row is not None else "/customers"

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/customers") -> Response:
        token = secrets.token_urlsafe(16)
        answer = templates.TemplateResponse(request, "login.html", {
            "csrf": token, "next": _local(next), "error": None})
        answer.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure)
        return answer

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await read_form(request)
        typed = {name: field(form, name, strip=False) for name in ("csrf", "email", "password")}
        target = _local(field(form, "next", strip=False))
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(typed["csrf"], expected):
            return Response("The login form expired; reload it.", status_code=403)

        keys = keys_of(typed["email"], request.client.host if request.client else None)

        def check() -> tuple[Any, timedelta | None]:
            """The account logged in (or None), and how long to wait if the attempt is
            refused unchecked or its failure started a block."""
            with app.engine.begin() as conn:
                wait = admit(conn, keys, app.clock.now())
            if wait is not None:
                return None, wait
            with app.engine.begin() as conn:
                staff = check_password(conn, typed["email"], typed["password"], app.clock.now())
                if staff is None:
                    return None, failed(conn, keys, app.clock.now())
                succeeded(conn, keys, app.clock.now())
                return staff, None

        staff, wait = await run_in_threadpool(check)
        if staff is None:
            error, status = "Wrong email or password.", 401
            if wait is not None:
                error, status = (f"Too many failed logins for this email address or from your "
                                 f"network. Try again in {_duration(wait)}."), 429
            answer = templates.TemplateResponse(request, "login.html", {
                "csrf": expected, "next": target, "error": error}, status_code=status)
            if wait is not None:
                answer.headers["Retry-After"] = str(math.ceil(wait.total_seconds()))
            return answer
        session = sign(secret, "session", {"u": staff.id, "e": staff.session_epoch,
                                            "t": int(time.time()),
                                            "x": secrets.token_urlsafe(16)})
        answer = RedirectResponse(target, status_code=303)
        answer.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax", secure=secure,
                          max_age=SESSION_HOURS * 3600)
        answer.delete_cookie(LOGIN_COOKIE)
        return answer

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = await read_form(request)
        who = visitor(request)
        if who.staff is not None and not csrf_ok(who, form):
            return Response("Missing or wrong CSRF token.", status_code=403)
        if who.staff is not None:
            def end() -> None:
                with app.engine.begin() as conn:
                    end_sessions(conn, who.staff.id)

            await run_in_threadpool(end)
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE)
        return answer

    @router.get("/customers", response_class=HTMLResponse)
    def customers(request: Request, q: str = "") -> Response:
        who, refused = guard(request, "support")
        if refused:
            return refused
        found: list[Any] = []
        text = q.strip()
        problem = search_problem(text)
        if problem is not None:
            return problem
        if text:
            c = Customer.__table__
            pattern = f"%{text.lower()}%"
            with app.engine.connect() as conn:
                found = list(conn.execute(select(c).where(or_(
                    c.c.external_id == text, func.lower(c.c.email) == text.lower(),
                    func.lower(c.c.email).like(pattern),
                    func.lower(func.coalesce(c.c.first_name, "") + " "
                               + func.coalesce(c.c.last_name, "")).like(pattern)))
                    .order_by(c.c.id).limit(SEARCH_LIMIT)))
        return templates.TemplateResponse(request, "customers.html", {
            "who": who, "q": text, "found": found, "limit": SEARCH_LIMIT})

    @router.get("/customers/{customer_id}/mails/{message_id}", response_class=HTMLResponse)
    def mail(request: Request, customer_id: RowId, message_id: RowId) -> Response:
        """One mail as it was sent: its kept content, status and every attempt."""
        who, refused = guard(request, "support")
        if refused:
            return refused
        with app.engine.connect() as conn:
            message = conn.execute(select(Message.__table__).where(
                Message.id == message_id, Message.customer_id == customer_id)).first()
            if message is None:
                return Response("No such mail for this customer.", status_code=404)
            content = conn.execute(select(MessageContent.__table__).where(
                MessageContent.message_id == message_id)).first()
            events = timeline_page(conn, customer_id, message=message_id, limit=MAX_PAGE)
            person = conn.execute(select(Customer.__table__).where(
                Customer.id == customer_id)).one()
        return templates.TemplateResponse(request, "mail.html", {
            "who": who, "message": message, "content": content,
            "events": list(reversed(events)), "path": customer_path(person),
            "tz": person.timezone or app.settings.timezone})

    @router.post("/customers/{customer_id}/mails/{message_id}/{action}")
    async def hold(request: Request, customer_id: RowId, message_id: RowId,
                   action: str) -> Response:
        who, _form, refused = await posted(request, "support")
        if refused:
            return refused
        if action not in ("pause", "resume", "cancel"):
            return Response("Unknown action.", status_code=404)

        def change() -> bool:
            with app.engine.begin() as conn:
                mine = conn.execute(select(Message.id, Message.context).where(
                    Message.id == message_id, Message.customer_id == customer_id)).first()
                return mine is not None and not is_test(mine) and Outbox(conn).hold(
                    message_id, action, app.clock.now(), who.staff.email)

        if not await run_in_threadpool(change):
            return Response("That mail cannot be changed any more (it went out, or someone "
                            "changed it first).", status_code=409)
        return RedirectResponse(f"{await run_in_threadpool(path_of, customer_id)}#upcoming", status_code=303)

    @router.post("/customers/{customer_id}/notes")
    async def note(request: Request, customer_id: RowId) -> Response:
        who, form, refused = await posted(request, "support")
        if refused:
            return refused
        text = field(form, "note").replace("\x00", "")
        if not text:
            return Response("The note is empty.", status_code=422)

        def write() -> bool:
            now = app.clock.now()
            with app.engine.begin() as conn:
                if conn.execute(select(Customer.id).where(Customer.id == customer_id)).first() \
                        is None:
                    return False
                conn.execute(Touchpoint.__table__.insert().values(
                    customer_id=customer_id, kind="note", channel="support", occurred_at=now,
                    recorded_at=now, data={"by": who.staff.email, "text": text[:MAX_NOTE]}))
            return True

        if not await run_in_threadpool(write):
            return Response("No such customer.", status_code=404)
        return RedirectResponse(f"{await run_in_threadpool(path_of, customer_id)}#timeline", status_code=303)

    # Last among the /customers routes: a shop's customer id may contain a slash.
    @router.get("/customers/{key:path}", response_class=HTMLResponse)
    def customer(request: Request, key: str, kind: str = "", before: str = "",
                 after: str = "") -> Response:
        """A customer's page, by the shop's customer id (or the row id)."""
        who, refused = guard(request, "support")
        if refused:
            return refused
        with app.engine.connect() as conn:
            row = customer_by_key(conn, key)
            if row is None:
                return Response("No such customer.", status_code=404)
            kinds = [kind] if kind else ()
            try:
                entries = timeline_page(conn, row.id, kinds=kinds, before=before or None,
                                        after=None if before else after or None)
            except ValueError:
                return Response("Not a timeline cursor.", status_code=400)
            if after and not before and len(entries) < PAGE:  # reached the top: the first page
                entries, after = timeline_page(conn, row.id, kinds=kinds), ""
            newer = bool(before or after) and bool(entries) and bool(timeline_page(
                conn, row.id, kinds=kinds, after=entries[0].cursor, limit=1))
            m, e, o = Message.__table__, FlowEnrollment.__table__, Order.__table__
            upcoming = [mail for mail in conn.execute(select(
                m.c.id, m.c.flow, m.c.step, m.c.template, m.c.due_at, m.c.status, m.c.context,
                m.c.last_error)
                .where(m.c.customer_id == row.id, m.c.status.in_(("scheduled", "paused")))
                .order_by(m.c.due_at)) if not is_test(mail)]  # a test send is the manager's
            enrollments = list(conn.execute(select(
                e.c.flow, e.c.current_step, e.c.enrolled_at, e.c.next_run_at).where(
                e.c.customer_id == row.id, e.c.status == EnrollmentStatus.ACTIVE.value)
                .order_by(e.c.enrolled_at)))
            first_order = conn.execute(select(func.min(o.c.ordered_at)).where(
                o.c.customer_id == row.id)).scalar()
            standing, problems, not_yet = None, [], None
            try:  # a manager's broken segments.yaml must not hide the timeline from support
                standing = explain(conn, definitions(app), row, app.clock.now())
            except InvalidFile as exc:
                problems = [str(p) for p in exc.problems]
            except NotACustomerYet as exc:  # a record dated after this process's clock
                not_yet = str(exc)
        since = as_utc(row.created_at)
        if first_order is not None:  # an import may date the customer after their orders
            since = min(since, as_utc(first_order))
        return templates.TemplateResponse(request, "customer.html", {
            "who": who, "customer": row, "path": customer_path(row), "entries": entries,
            "kind": kind, "kinds": TIMELINE_KINDS, "upcoming": upcoming,
            "enrollments": enrollments, "standing": standing, "problems": problems, "not_yet": not_yet,
            "next": next_cursor(entries, PAGE), "newer": newer,
            "tz": row.timezone or app.settings.timezone, "since": since})

    return router


def customer_by_key(conn: Any, key: str) -> Any | None:
    """The customer whose shop id (``customer_id``) is ``key``, else whose row id it is."""
    c = Customer.__table__
    row = conn.execute(select(c).where(c.c.external_id == key)).first()
    number = row_id(key)  # a row id ("²" or 30 digits are none)
    if row is None and number is not None:
        row = conn.execute(select(c).where(c.c.id == number)).first()
    return row


def customer_path(row: Any) -> str:
    """The address of a customer's page: by the shop's customer id (unique, and looked up
    first, so it always opens this customer); by the row id if there is none."""
    return f"/customers/{quote(row.external_id, safe='')}" if row.external_id \
        else f"/customers/{row.id}"


templates.env.filters["customer_path"] = customer_path


def _duration(wait: timedelta) -> str:
    """``45 seconds``, ``1 minute``, ``16 minutes`` (rounded up)."""
    seconds = math.ceil(wait.total_seconds())
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _local(target: str) -> str:
    """Only paths on this site: ``next`` must not send anyone elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/customers"
