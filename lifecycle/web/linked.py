"""What the pages behind the links of a mail share: the signed token, the page layout.

A link's token (see :mod:`lifecycle.links`) names the customer and the mail;
it is the credential (a mail client posts a one-click unsubscribe without
cookies), so a page trusts nothing else.  A forged, altered or cut-short
token — or one made for another purpose — gets :meth:`Linked.bad_link`
(400) and changes nothing.  A link of a test mail (its token says so, or the
mail it names is a manager's test send) gets :meth:`Linked.test_link`, a page
that says so, and changes nothing either: it was rendered for a real customer
who never got it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NamedTuple
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from fastapi import Path as InPath
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from sqlalchemy import Connection, select
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect

from lifecycle.app import App
from lifecycle.links import BadToken, verify
from lifecycle.mail.outbox import is_test
from lifecycle.models import Message
from lifecycle.money import FALLBACK_LOCALE, money, number, percent, reader_locale
from lifecycle.segments.definitions import segment_words
from lifecycle.subscriptions import customer_of
from lifecycle.timeline import MAX_ROW_ID
from lifecycle.timeutil import wall_clock
from lifecycle.web import i18n

log = logging.getLogger(__name__)

#: The pages use no script; a mail shown in a sandboxed frame inherits this policy too.  (The
#: one exception, the NPS link's page, allows its own inline script by its hash:
#: :mod:`lifecycle.web.feedback`.)
PAGE_POLICY = ("script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")


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


@pass_context
def _percent(context: Any, share: Any) -> str:
    return percent(share, context.get("locale") or FALLBACK_LOCALE)


def _local(moment: datetime | None, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An instant as wall-clock time in the zone ``tz`` ("—" for none)."""
    return "—" if moment is None else wall_clock(moment, tz, fmt)


templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"),
                            context_processors=[_reader])
templates.env.filters.update({"money": _money, "number": _number, "percent": _percent,
                              "local": _local,
                              "segment": segment_words})
i18n.install(templates.env)  # public pages speak the customer's language (lifecycle.web.i18n)


#: Limits of a posted ``multipart/form-data`` form: fields, files, bytes per part.  The
#: whole body is bounded in size and time before this reads it (:mod:`lifecycle.web.limits`).
MAX_FORM_FIELDS, MAX_FORM_FILES, MAX_FORM_PART = 100, 10, 64 * 1024


async def read_form(request: Request) -> dict[str, list[str]]:
    """The form a page or a mail client posted, URL-encoded or ``multipart/form-data`` (what
    RFC 8058 recommends for one-click unsubscribes): each field a list, as it may repeat.

    The body is bounded in size and time as it arrives (:mod:`lifecycle.web.limits`).
    NUL characters are taken out (no form needs one; PostgreSQL stores none).  File parts
    are ignored; a multipart body that cannot be read
    (malformed, or over :data:`MAX_FORM_FIELDS` / :data:`MAX_FORM_FILES` /
    :data:`MAX_FORM_PART`) reads as an empty form.
    """
    try:
        body = await request.body()
    except ClientDisconnect:
        raise HTTPException(400, "The client went away before its body arrived.") from None
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        return {name.replace("\x00", ""): [v.replace("\x00", "") for v in values]
                for name, values in parse_qs(body.decode("utf-8", "replace")).items()}

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, chunks(), max_files=MAX_FORM_FILES,
                             max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_PART)
    try:
        form = await parser.parse()
    except Exception:  # noqa: BLE001 - an unreadable form is the sender's, and carries nothing
        return {}
    fields: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(name.replace("\x00", ""), []).append(value.replace("\x00", ""))
    await form.close()
    return fields


#: Longest search text taken (characters): an address is at most 320.
MAX_SEARCH = 320


def search_problem(text: str) -> Response | None:
    """422 for search text no customer can match: more than :data:`MAX_SEARCH` characters
    (SQLite refuses a LIKE pattern over 50,000 bytes); None for any other text.  (A NUL
    character never gets here: :mod:`lifecycle.web.limits` refuses the address.)"""
    if len(text) > MAX_SEARCH:
        return Response(f"The search is longer than {MAX_SEARCH} characters.", status_code=422)
    return None


def row_id(text: str) -> int | None:
    """``text`` as a row id if it is one: ASCII digits of a number a BIGINT holds ("¹" and 20
    digits are none); else None."""
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ROW_ID:
        return int(text)
    return None


#: A row id in a route's path: 422 for one no BIGINT holds, instead of the database's error.
RowId = Annotated[int, InPath(ge=0, le=MAX_ROW_ID)]


def field(form: dict[str, list[str]], name: str, strip: bool = True) -> str:
    """One posted field's first value ("" if absent), stripped unless ``strip`` is False
    (passwords, tokens and free text are taken as typed)."""
    value = (form.get(name) or [""])[0]
    return value.strip() if strip else value


def masked(address: str) -> str:
    """``a***@example.com``: enough to recognise, not to harvest from a forwarded link."""
    name, _, domain = address.partition("@")
    return f"{name[:1]}***@{domain}"


class Holder(NamedTuple):
    """Whom a valid link names: the customer row and the mail (None if unknown), or
    (``test``) a test mail's link, which names nobody to change."""

    customer: Any
    message_id: int | None
    test: bool = False


#: Refused links are logged at most once per this many seconds (a scanner may try many).
REFUSED_LOG_SECONDS = 60.0


class Linked:
    def __init__(self, app: App) -> None:
        self.app = app
        self._refused = 0  # links refused since the last log line
        self._refused_logged_at: float | None = None  # time.monotonic() of that line
        self._refused_lock = threading.Lock()

    def _refused_link(self, purpose: str) -> None:
        """Log that a link's signature matched none of our keys: at once for the first, then
        at most every :data:`REFUSED_LOG_SECONDS` with how many came meanwhile."""
        now = time.monotonic()
        with self._refused_lock:
            self._refused += 1
            if self._refused_logged_at is not None \
                    and now - self._refused_logged_at < REFUSED_LOG_SECONDS:
                return
            count, self._refused, self._refused_logged_at = self._refused, 0, now
        log.warning("%d link(s) refused (the latest a %s link): the signature matches none of "
                    "this process's secret keys. If links from real mails are refused, a "
                    "process signs with another LIFECYCLE_SECRET_KEY (or the key kept in the "
                    "database) than this one, or a key was rotated without "
                    "LIFECYCLE_SECRET_KEY_PREVIOUS; otherwise someone altered a link.",
                    count, purpose)

    def holder(self, conn: Connection, purpose: str, token: str) -> Holder | None:
        """Whom a valid ``token`` names; None for a bad one.  A test mail's link (flagged in
        its signed token, naming a test send, or naming no mail at all: a preview's) is
        ``Holder(None, id, test=True)``."""
        try:
            data = verify(self.app.keys, purpose, token)
            customer_id, message_id = int(data["c"]), int(data.get("m") or 0)
        except BadToken:
            self._refused_link(purpose)
            return None
        except (KeyError, TypeError, ValueError):
            return None
        mail = conn.execute(select(Message.id, Message.context).where(
            Message.id == message_id)).first()
        if data.get("t") or not message_id or (mail is not None and is_test(mail)):
            # no mail (``m`` 0) is a preview's link: previews made before tokens carried ``t``
            return Holder(None, message_id or None, test=True)
        customer = customer_of(conn, customer_id)
        if customer is None or not customer.email:
            return None  # erased since the mail went out: nothing to change
        return Holder(customer, message_id if mail is not None else None)

    def browser_language(self, request: Request) -> dict[str, Any]:
        """The page language of a link that names no customer: the browser's, else the shop's."""
        return i18n.page_context(i18n.language_from_header(
            request.headers.get("accept-language"), self.app.settings.locale))

    def test_link(self, request: Request) -> Response:
        """The page behind every link of a test mail: it says so; nothing changed."""
        return templates.TemplateResponse(request, "test_link.html", {
            "shop": self.app.settings.shop_name, **self.browser_language(request)})

    def bad_link(self, request: Request) -> Response:
        return templates.TemplateResponse(request, "bad_link.html",
                                          self.browser_language(request), status_code=400)

    def page(self, request: Request, name: str, token: str, customer: Any,
             **extra: Any) -> Response:
        """A page for the mailed ``customer``, in their language (:mod:`lifecycle.web.i18n`)."""
        language = i18n.language_for(customer.locale, self.app.settings.locale)
        return templates.TemplateResponse(request, name, {
            "token": token, "shop": self.app.settings.shop_name,
            "address": masked(customer.email), "language": language,
            **i18n.page_context(language), **extra})
