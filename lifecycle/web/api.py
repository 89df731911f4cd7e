"""The ingest API, ``/api/v1``: customers, orders, support contacts and custom events in.

Every request needs an API key (``Authorization: Bearer lc_…``, see
:mod:`lifecycle.apikeys`) with the scope of its endpoint: 401 without a valid
key, 403 without the scope.  Each endpoint takes a JSON array of up to
:data:`MAX_ITEMS` items and stores all of them or none: any invalid item
gets 422 naming the item and the field (``loc``: ``["body", index,
field]``), and nothing of that request is stored.  Customers and orders go
through the same validation as the file importer; a new completed order
lands on the timeline as ``order_placed`` and fires order triggers, and the segments of
the customers whose completed orders changed are refreshed in the same transaction.
Posting the same items again changes nothing (upserts; support contacts and
events with an ``id`` are kept once per id).

Reviews and referrals land as ``review`` / ``referral`` touchpoints, once per
``id``, and the segments of each customer who got a new one are refreshed in
the same transaction (:func:`lifecycle.segments.compute.refresh_customers`), so
a reviewer is in ``reviewer`` — and ``advocacy_ask`` asks them for a referral
rather than a review — when the request returns.
"""

from __future__ import annotations

import json
import logging
import math
import re
import reprlib
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from sqlalchemy import Connection, select
from starlette.concurrency import run_in_threadpool

from lifecycle.apikeys import ApiKeyRefused, authenticate, known_key
from lifecycle.app import App
from lifecycle.db import insert_new
from lifecycle.imports import import_records
from lifecycle.imports.rows import RowError, normalise_email
from lifecycle.imports.source import Record
from lifecycle.models import Customer, Touchpoint
from lifecycle.orders import OrdersRefused, place_orders
from lifecycle.privacy import ERASED_PREFIX
from lifecycle.recommendations.urls import MAX_URL, BadUrl, check_url
from lifecycle.segments.compute import refresh_customers
from lifecycle.segments.service import definitions
from lifecycle.timeutil import UTC
from lifecycle.yamlfile import InvalidFile

log = logging.getLogger(__name__)

MAX_ITEMS = 1000
BEARER = HTTPBearer(auto_error=False, description="An API key: lc_…")
Text = Annotated[str, Field(min_length=1, max_length=200)]


#: Half a surrogate pair: JSON's ``\\ud800`` escapes make one; UTF-8 has no bytes for it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_nul(value: Any) -> Any:
    """Refuse NUL characters anywhere in a value (PostgreSQL stores none in text or JSON), half
    a surrogate pair (no UTF-8 text holds one), and the numbers JSON has no words for
    (``NaN``, ``Infinity``: Python's parser takes them)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    if isinstance(value, str) and _LONE_SURROGATE.search(value):
        raise ValueError("must not contain half a surrogate pair (\\ud800 to \\udfff)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, dict):
        for key, inner in value.items():
            _no_nul(key)
            _no_nul(inner)
    elif isinstance(value, list):
        for inner in value:
            _no_nul(inner)
    return value


#: The years a moment given to the API may fall in (UTC): before the first is no shop's
#: order or customer; the last leaves a margin below 9999, so a moment written in any zone
#: (a staff page, ``lifecycle timeline``) is still a date Python holds.
FIRST_YEAR, LAST_YEAR = 1970, 9998


def _in_utc(value: datetime) -> datetime:
    """``value`` as UTC (PostgreSQL refuses offsets beyond ±15:59, which Python allows), in
    the years :data:`FIRST_YEAR` to :data:`LAST_YEAR`."""
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        moment = None
    if moment is None or not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"must fall in the years {FIRST_YEAR} to {LAST_YEAR} (UTC)")
    return moment


#: A moment with its UTC offset, stored in UTC.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _plain = field_validator("*", mode="before")(classmethod(lambda cls, v: _no_nul(v)))


class CustomerIn(_Item):
    customer_id: Text = Field(description="The shop's own id of the customer.")
    email: Annotated[str, Field(max_length=320)]
    first_name: Text | None = None
    last_name: Text | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="IANA timezone, e.g. Europe/Berlin.")
    locale: Annotated[str, Field(max_length=35)] | None = None
    created_at: Instant | None = None
    marketing_consent: bool | None = None
    attributes: dict[str, Any] | None = None


def _product_url(value: str) -> str | None:
    try:
        return check_url(value)
    except BadUrl as exc:
        raise ValueError(str(exc)) from None


#: A product or image link of an order line (:func:`lifecycle.recommendations.urls.check_url`).
ProductUrl = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_product_url)]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # more fields of a line are kept as given

    _plain = model_validator(mode="before")(classmethod(lambda cls, v: _no_nul(v)))
    sku: Text | None = None
    name: Text | None = None
    category: Text | None = None
    quantity: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    price: Annotated[Decimal, Field(ge=0, le=10**9, decimal_places=2)] | None = None
    url: ProductUrl | None = Field(None, description="The product's page (http or https).")
    image_url: ProductUrl | None = Field(None, description="The product's picture (http or https).")


class OrderIn(_Item):
    order_id: Text
    customer_id: Text
    ordered_at: Instant
    total: Annotated[Decimal, Field(ge=0, le=10**9, decimal_places=2)]
    currency: Annotated[str, Field(pattern="^[A-Za-z]{3}$")] = "EUR"
    status: Literal["completed", "pending", "cancelled", "refunded"] = "completed"
    items: Annotated[list[LineIn], Field(max_length=1000)] = []
    email: Annotated[str, Field(max_length=320)] | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    discount_codes: Annotated[list[Annotated[str, Field(min_length=1, max_length=40)]],
                              Field(max_length=20)] | None = Field(
        None, description="The codes the order used: each that a Lifecycle mail handed out is "
                          "marked redeemed by this order when it was handed to this "
                          "order's customer (the first order wins).")


class SupportIn(_Item):
    id: Text | None = Field(None, description="Your ticket or call id: kept once per id.")
    customer_id: Text
    type: Literal["ticket", "call", "chat"]
    summary: Annotated[str, Field(min_length=1, max_length=4000)]
    occurred_at: Instant
    agent: Text | None = None


class EventIn(_Item):
    id: Text | None = Field(None, description="Your event id: kept once per id.")
    customer_id: Text
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\w.:-]+$")]
    occurred_at: Instant
    properties: dict[str, Any] = {}


class ReviewIn(_Item):
    id: Text = Field(description="Your review id: kept once per id.")
    customer_id: Text = Field(description="The reviewer.")
    product: Text | None = Field(None, description="The product's name.")
    sku: Text | None = None
    rating: Annotated[int, Field(ge=1, le=5, description="Stars, 1 to 5.")]
    text: Annotated[str, Field(max_length=4000)] | None = None
    url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s]+$")] | None = Field(
        None, description="Where the review is published.")
    occurred_at: Instant


class ReferralIn(_Item):
    id: Text = Field(description="Your referral id: kept once per id.")
    customer_id: Text = Field(description="The referrer.")
    referred_customer_id: Text | None = Field(
        None, description="The referred customer's customer_id (give this or referred_email).")
    referred_email: Annotated[str, Field(max_length=320)] | None = None
    occurred_at: Instant


class Stored(BaseModel):
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    announced: int = Field(0, description="Orders that fired order triggers now.")
    redeemed: int = Field(0, description="Offer codes the orders' discount_codes redeemed now.")
    unknown_codes: int = Field(0, description="Discount codes that are no offer Lifecycle "
                                              "handed out (ignored).")
    codes_not_theirs: int = Field(0, description="Discount codes Lifecycle handed to another "
                                                 "customer than the one ordering (ignored: "
                                                 "they redeem nothing).")
    redemptions_undone: int = Field(0, description="Redemptions taken back: their orders "
                                                   "arrived cancelled or refunded.")


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _items() -> Any:
    return Body(..., max_length=MAX_ITEMS, description=f"Up to {MAX_ITEMS} items.")


def api_routes(app: App) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["ingest"])

    def keyed(scope: str) -> Any:
        def check(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(BEARER)]) -> None:
            with app.engine.begin() as conn:
                authenticate(conn, credentials.credentials if credentials else None, scope,
                             app.clock.now())
        return Depends(check)

    def imported(kind: str, items: list[Any]) -> Stored:
        fields = [item.model_dump(mode="json", exclude_none=True) for item in items]
        announced, codes = 0, None
        with app.engine.begin() as conn:
            if kind == "orders":
                try:
                    placed = place_orders(conn, fields, app.clock,
                                          segments=lambda: definitions(app))
                except OrdersRefused as exc:
                    raise _invalid(exc.issues) from None
                result, announced = placed.result, placed.announced
                codes = result.redemptions
            else:
                result = import_records(conn, kind, [Record(n, f) for n, f in enumerate(fields)],
                                        source_name="body", clock=app.clock)
                if result.issues:
                    raise _invalid(result.issues)
        return Stored(inserted=result.inserted, updated=result.updated,
                      unchanged=result.unchanged, announced=announced,
                      redeemed=codes.redeemed if codes else 0,
                      unknown_codes=codes.unknown if codes else 0,
                      codes_not_theirs=codes.not_theirs if codes else 0,
                      redemptions_undone=codes.undone if codes else 0)

    @router.post("/customers", response_model=Stored, dependencies=[keyed("customers:write")])
    def customers(items: Annotated[list[CustomerIn], _items()]) -> Stored:
        """Create or update customers (by ``customer_id``)."""
        return imported("customers", items)

    @router.post("/orders", response_model=Stored, dependencies=[keyed("orders:write")])
    def orders(items: Annotated[list[OrderIn], _items()]) -> Stored:
        """Create or update orders (by ``order_id``); an unknown customer is created from the
        order's email and names."""
        return imported("orders", items)

    def touched(kind: str, items: list[Any], data: Any, refresh: bool = False,
                check: Any = None) -> Stored:
        """Each item as a ``kind`` touchpoint (once per ``id``); with ``refresh``, the segments
        of the customers who got a new one are refreshed in the same transaction.  ``check``
        (conn, customer row ids by customer_id) returns more problems, read in that
        transaction."""
        defs = segment_definitions(kind) if refresh else None
        with app.engine.begin() as conn:
            ids = _customers(conn, [i.customer_id for i in items])
            missing = [{"loc": ["body", n, "customer_id"], "type": "value_error",
                        "msg": f"no customer with customer_id {i.customer_id!r}"}
                       for n, i in enumerate(items) if i.customer_id not in ids]
            if not missing and check is not None:
                missing = check(conn, ids)
            if missing:
                raise _Invalid(missing)
            now = app.clock.now()
            rows = [{
                "customer_id": ids[item.customer_id], "kind": kind,
                "channel": "support" if kind == "support" else "api",
                "occurred_at": item.occurred_at, "recorded_at": now,
                "source_key": f"{kind}:{item.id}"[:255] if item.id else None,
                "data": data(item)} for item in items]
            # In one order for every post: two posts naming the same ids in other orders would
            # each wait for an id the other holds uncommitted (a deadlock on PostgreSQL).
            rows.sort(key=lambda row: row["source_key"] or "")
            touched_customers = insert_new(conn, Touchpoint.__table__, rows, ("source_key",),
                                           "customer_id")  # one per row inserted
            if defs is not None and touched_customers:
                refresh_customers(conn, defs, touched_customers, now, now,
                                  clock=app.clock)
        return Stored(inserted=len(touched_customers),
                      unchanged=len(items) - len(touched_customers))

    def segment_definitions(kind: str) -> Any:
        try:
            return definitions(app)
        except InvalidFile as exc:
            log.error("Segments are not refreshed after posted %ss: %s has problems:\n%s",
                      kind, app.settings.segments_file, exc)
            return None

    @router.post("/support", response_model=Stored, dependencies=[keyed("support:write")])
    def support(items: Annotated[list[SupportIn], _items()]) -> Stored:
        """Record support contacts (ticket, call, chat) on the customers' timelines."""
        return touched("support", items, lambda i: {
            "type": i.type, "summary": i.summary, "id": i.id, "agent": i.agent})

    @router.post("/events", response_model=Stored, dependencies=[keyed("events:write")])
    def events(items: Annotated[list[EventIn], _items()]) -> Stored:
        """Record custom events (they can trigger flows: ``trigger: {event: NAME}``)."""
        return touched("event", items, lambda i: {
            "name": i.name, "id": i.id, "properties": i.properties})

    @router.post("/reviews", response_model=Stored, dependencies=[keyed("reviews:write")])
    def reviews(items: Annotated[list[ReviewIn], _items()]) -> Stored:
        """Record product reviews (once per ``id``): the reviewer enters ``reviewer`` now."""
        _unique_ids(items)
        return touched("review", items, lambda i: {
            "id": i.id, "product": i.product, "sku": i.sku, "rating": i.rating,
            "text": i.text, "url": i.url}, refresh=True)

    @router.post("/referrals", response_model=Stored, dependencies=[keyed("referrals:write")])
    def referrals(items: Annotated[list[ReferralIn], _items()]) -> Stored:
        """Record referrals (once per ``id``): the referrer (``customer_id``) enters
        ``referrer`` now; the referred customer is named by ``referred_customer_id`` or
        ``referred_email``."""
        _unique_ids(items)
        problems, emails = [], {}  # emails: item id -> the referred address, normalised
        for n, item in enumerate(items):
            if item.referred_customer_id is None and item.referred_email is None:
                problems.append(_problem(n, "referred_customer_id",
                                         "give referred_customer_id or referred_email"))
            elif item.referred_customer_id == item.customer_id:
                problems.append(_problem(n, "referred_customer_id",
                                         "a customer cannot refer themselves"))
            if item.referred_email is not None:
                try:
                    emails[item.id] = normalise_email(item.referred_email)
                except RowError as exc:
                    problems.append(_problem(n, "referred_email", str(exc)))
        if problems:
            raise _Invalid(problems)

        def not_themselves(conn: Connection, ids: dict[str, int]) -> list[dict[str, Any]]:
            """A referred address that is the referrer's own (in any case) is a self-referral."""
            own = dict(conn.execute(select(Customer.id, Customer.email).where(
                Customer.id.in_({ids[i.customer_id] for i in items if i.id in emails}))).all())
            return [_problem(n, "referred_email", "a customer cannot refer themselves "
                                                  "(it is their own address)")
                    for n, item in enumerate(items) if item.id in emails
                    and (own.get(ids[item.customer_id]) or "").lower() == emails[item.id].lower()]

        return touched("referral", items, lambda i: {
            "id": i.id, "referred_customer_id": i.referred_customer_id,
            "referred_email": emails.get(i.id)}, refresh=True, check=not_themselves)

    from lifecycle.offers.endpoints import offer_routes

    router.include_router(offer_routes(app, BEARER, _Invalid))
    return router


def _problem(n: int, field: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", n, field], "type": "value_error", "msg": msg}


def _unique_ids(items: list[Any]) -> None:
    """422 for an ``id`` given twice in one request (which of the two would count?)."""
    seen: dict[str, int] = {}
    problems = []
    for n, item in enumerate(items):
        if item.id in seen:
            problems.append(_problem(n, "id", f"id {item.id!r} is also item {seen[item.id]}"))
        seen.setdefault(item.id, n)
    if problems:
        raise _Invalid(problems)


def _invalid(issues: list[Any]) -> _Invalid:
    """422 naming each bad item and, where the importer's message starts with it, the field."""
    return _Invalid([{"loc": ["body", issue.line, *_field(issue.reason)], "msg": issue.reason,
                      "type": "value_error"} for issue in issues])


def _field(reason: str) -> list[str]:
    """The field an importer message starts with (``email is not …`` -> ``["email"]``)."""
    first = reason.split(" ", 1)[0].split("[", 1)[0].rstrip(":")
    return [first] if first.isidentifier() else []


def _customers(conn: Connection, external_ids: list[str]) -> dict[str, int]:
    """Row ids by customer_id; an erased customer's shell (``erased:<id>``) is nobody."""
    return {external: cid for cid, external in conn.execute(select(
        Customer.id, Customer.external_id).where(
        Customer.external_id.in_(set(external_ids)),
        ~(Customer.external_id.startswith(ERASED_PREFIX) & Customer.email.is_(None))))}


#: Most characters of a bad value a 422 repeats (``input``): it names the field, it does not
#: send a large body back.
MAX_ECHO = 100
_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxdict, _ECHO.maxlist = 2, 4, 4
_ECHO.maxstring, _ECHO.maxother, _ECHO.maxlong = MAX_ECHO, MAX_ECHO, 40


def _echo(value: Any) -> Any:
    """A bad value as a 422 repeats it: itself if short; else cut to :data:`MAX_ECHO`
    characters (a long text) or summed up in as many (a list or object)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # JSON has no NaN
    if value is None or isinstance(value, bool | int):
        return value if abs(value or 0) < 10**40 else _ECHO.repr(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    text = _ECHO.repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "…"


def install_api_errors(web: Any) -> None:
    """401/403 for keys, 422 for invalid items (as FastAPI's own validation errors, whose
    ``input`` is cut short: :func:`_echo`)."""

    @web.exception_handler(RequestValidationError)
    def unprocessable(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{**error, "input": _echo(error["input"])} if "input" in error else error
                  for error in exc.errors()]
        return JSONResponse({"detail": _encodable(jsonable_encoder(errors))}, status_code=422)

    @web.exception_handler(ApiKeyRefused)
    def refused(_request: Request, exc: ApiKeyRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status,
                            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @web.exception_handler(_Invalid)
    def invalid(_request: Request, exc: _Invalid) -> JSONResponse:
        return JSONResponse({"detail": _encodable(exc.errors)}, status_code=422)


def _encodable(value: Any) -> Any:
    """``value`` with every half of a surrogate pair in its strings (an echoed input, a field
    name in ``loc``) written as its escape, ``\\ud800``: UTF-8 cannot encode one."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


class KeyBeforeBody:
    """ASGI middleware: a request to ``/api/`` without a known, unrevoked key gets the API's
    401 before a byte of its body is read.  (FastAPI parses a JSON body before the route's
    key dependency runs: 16 MiB of ``[]`` items is some 300 MB of Python objects, which
    anyone could make the server build.)  The scope is checked by the route, as before."""

    def __init__(self, web: Any, app: App) -> None:
        self.web = web
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            try:
                await run_in_threadpool(self._check, _bearer(scope))
            except ApiKeyRefused as exc:
                body = json.dumps({"detail": str(exc)}).encode("utf-8")
                await send({"type": "http.response.start", "status": exc.status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode("ascii")),
                                        (b"www-authenticate", b"Bearer"),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.web(scope, receive, send)

    def _check(self, presented: str | None) -> None:
        with self.app.engine.connect() as conn:
            known_key(conn, presented)


def _bearer(scope: dict[str, Any]) -> str | None:
    """The key of a request's ``Authorization: Bearer …`` header, as :data:`BEARER` reads it."""
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    kind, key = get_authorization_scheme_param(header)
    return key if kind.lower() == "bearer" and key else None
