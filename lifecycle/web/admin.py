"""Pages for admins: staff accounts and ingest API keys.

An admin adds accounts, changes roles, sets new passwords and deactivates
accounts (never their own: an admin cannot lock everyone out by accident; a new
password and deactivation end the account's sessions); creates API keys —
shown once, on the page that answers the form, and stored only as a hash —
and revokes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from lifecycle.apikeys import SCOPES, create_key, revoke
from lifecycle.app import App
from lifecycle.models import ApiKey, StaffUser
from lifecycle.staff import MIN_PASSWORD, RANK, add_staff, change_staff, set_password
from lifecycle.web.linked import RowId, field, templates
from lifecycle.web.staff import Gate, Visitor


def too_long(fields: dict[str, tuple[str, Any]]) -> str | None:
    """What is wrong if a typed value is longer than its column holds (label: (value,
    column)); None if every one fits."""
    for label, (value, column) in fields.items():
        room = column.type.length
        if room is not None and len(value) > room:
            return f"the {label} is longer than {room} characters"
    return None


def admin_routes(app: App, gate: Gate) -> APIRouter:
    router = APIRouter(prefix="/admin")

    def staff_page(request: Request, who: Visitor, error: str | None = None,
                   status: int = 200) -> Response:
        with app.engine.connect() as conn:
            people = list(conn.execute(select(StaffUser.__table__).order_by(StaffUser.email)))
        return templates.TemplateResponse(request, "admin_staff.html", {
            "who": who, "people": people, "roles": list(RANK), "error": error,
            "min_password": MIN_PASSWORD},
            status_code=status)

    @router.get("/staff", response_class=HTMLResponse)
    def staff(request: Request) -> Response:
        who, refused = gate.guard(request, "admin")
        return refused or staff_page(request, who)

    @router.post("/staff")
    async def add(request: Request) -> Response:
        who, form, refused = await gate.posted(request, "admin")
        if refused:
            return refused

        longer = too_long({"email": (field(form, "email"), StaffUser.email),
                           "name": (field(form, "name"), StaffUser.name)})
        if longer:
            return staff_page(request, who, f"Not added: {longer}.", 422)

        def write() -> str | None:
            try:
                with app.engine.begin() as conn:
                    add_staff(conn, field(form, "email"), field(form, "role"),
                              field(form, "password", strip=False), app.clock.now(),
                              name=field(form, "name") or None)
            except ValueError as exc:
                return str(exc)
            return None

        error = await run_in_threadpool(write)
        if error:
            return staff_page(request, who, f"Not added: {error}.", 422)
        return RedirectResponse("/admin/staff", status_code=303)

    @router.post("/staff/{staff_id}")
    async def change(request: Request, staff_id: RowId) -> Response:
        who, form, refused = await gate.posted(request, "admin")
        if refused:
            return refused
        if staff_id == who.staff.id:
            return staff_page(request, who, "You cannot change your own account here.", 422)
        role, active = field(form, "role") or None, field(form, "active")
        password = field(form, "password", strip=False)

        def write() -> bool:
            with app.engine.begin() as conn:
                if password:
                    email = conn.execute(select(StaffUser.email).where(
                        StaffUser.id == staff_id)).scalar()
                    return email is not None and set_password(conn, email, password)
                return change_staff(conn, staff_id, role=role,
                                    active={"yes": True, "no": False}.get(active))

        try:
            if not await run_in_threadpool(write):
                return Response("No such account.", status_code=404)
        except ValueError as exc:
            return staff_page(request, who, f"Not changed: {exc}.", 422)
        return RedirectResponse("/admin/staff", status_code=303)

    def keys_page(request: Request, who: Visitor, **extra: Any) -> Response:
        with app.engine.connect() as conn:
            keys = list(conn.execute(select(ApiKey.__table__).order_by(ApiKey.id)))
        return templates.TemplateResponse(request, "admin_apikeys.html", {
            "who": who, "keys": keys, "scopes": SCOPES, "new_key": None, "error": None,
            **extra}, status_code=422 if extra.get("error") else 200)

    @router.get("/apikeys", response_class=HTMLResponse)
    def keys(request: Request) -> Response:
        who, refused = gate.guard(request, "admin")
        return refused or keys_page(request, who)

    @router.post("/apikeys")
    async def create(request: Request) -> Response:
        who, form, refused = await gate.posted(request, "admin")
        if refused:
            return refused
        name, scopes = field(form, "name"), form.get("scope") or []
        if not name:
            return keys_page(request, who, error="Give the key a name.")
        longer = too_long({"name": (name, ApiKey.name)})
        if longer:
            return keys_page(request, who, error=f"Not created: {longer}.")

        def write() -> str:
            with app.engine.begin() as conn:
                return create_key(conn, name, scopes, app.clock.now(), created_by=who.staff.id)

        try:
            key = await run_in_threadpool(write)
        except ValueError as exc:
            return keys_page(request, who, error=f"Not created: {exc}.")
        answer = keys_page(request, who, new_key=key, new_name=name)
        answer.headers["Cache-Control"] = "no-store"
        return answer

    @router.post("/apikeys/{prefix}/revoke")
    async def revoke_key(request: Request, prefix: str) -> Response:
        _who, _form, refused = await gate.posted(request, "admin")
        if refused:
            return refused

        def write() -> bool:
            with app.engine.begin() as conn:
                return revoke(conn, prefix, app.clock.now())

        if not await run_in_threadpool(write):
            return Response("No active key has that prefix.", status_code=404)
        return RedirectResponse("/admin/apikeys", status_code=303)

    return router
