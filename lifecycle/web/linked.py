"""What the pages behind the links of a mail share: the signed token, the page layout.

A link's token (see :mod:`lifecycle.links`) names the customer and the mail;
it is the credential (a mail client posts a one-click unsubscribe without
cookies), so a page trusts nothing else.  A forged, altered or cut-short
token — or one made for another purpose — gets :meth:`Linked.bad_link`
(400) and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from sqlalchemy import Connection, select

from lifecycle.app import App
from lifecycle.links import BadToken, verify
from lifecycle.models import Message
from lifecycle.money import FALLBACK_LOCALE, money, number, reader_locale
from lifecycle.segments.definitions import segment_words
from lifecycle.subscriptions import customer_of
from lifecycle.timeutil import as_utc, zone


def _reader(request: Request) -> dict[str, Any]:
    """What every page knows of its reader: the locale amounts are written for (their
    browser's ``Accept-Language``, negotiated by Babel; see :mod:`lifecycle.money`)."""
    return {"locale": reader_locale(request.headers.get("accept-language"))}


@pass_context
def _money(context: Any, amount: Any, currency: str) -> str:
    return money(amount, currency, context.get("locale") or FALLBACK_LOCALE)


@pass_context
def _number(context: Any, value: Any) -> str:
    return number(value, context.get("locale") or FALLBACK_LOCALE)


def _local(moment: datetime | None, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An instant as wall-clock time in the zone ``tz`` ("—" for none)."""
    return "—" if moment is None else as_utc(moment).astimezone(zone(tz)).strftime(fmt)


templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"),
                            context_processors=[_reader])
templates.env.filters.update({"money": _money, "number": _number, "local": _local,
                              "segment": segment_words})


async def read_form(request: Request) -> dict[str, list[str]]:
    """The URL-encoded form a page posted (each field a list, as it may repeat)."""
    return parse_qs((await request.body()).decode("utf-8", "replace"))


def field(form: dict[str, list[str]], name: str, strip: bool = True) -> str:
    """One posted field's first value ("" if absent), stripped unless ``strip`` is False
    (passwords, tokens and free text are taken as typed)."""
    value = (form.get(name) or [""])[0]
    return value.strip() if strip else value


def masked(address: str) -> str:
    """``a***@example.com``: enough to recognise, not to harvest from a forwarded link."""
    name, _, domain = address.partition("@")
    return f"{name[:1]}***@{domain}"


class Linked:
    def __init__(self, app: App) -> None:
        self.app = app

    def holder(self, conn: Connection, purpose: str, token: str) -> tuple[Any, int | None] | None:
        """The customer row and mail id of a valid ``token``; None for a bad one."""
        try:
            data = verify(self.app.settings.secret_key, purpose, token)
            customer_id, message_id = int(data["c"]), int(data.get("m") or 0)
        except (BadToken, KeyError, TypeError, ValueError):
            return None
        customer = customer_of(conn, customer_id)
        if customer is None or not customer.email:
            return None  # erased since the mail went out: nothing to change
        known = conn.execute(select(Message.id).where(Message.id == message_id)).first()
        return customer, (message_id if known else None)

    def bad_link(self, request: Request) -> Response:
        return templates.TemplateResponse(request, "bad_link.html", {}, status_code=400)

    def page(self, request: Request, name: str, token: str, customer: Any,
             **extra: Any) -> Response:
        return templates.TemplateResponse(request, name, {
            "token": token, "shop": self.app.settings.shop_name,
            "address": masked(customer.email), **extra})
