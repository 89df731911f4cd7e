"""``GET /api/v1/offers``: the codes mails handed out, for the shop (scope ``offers:read``).

Keyset pages in the order the codes were made: ``cursor`` is the ``next_cursor`` of the page
before (the last id shown), ``limit`` 1 to 1000 (default 100).  Filters: ``redeemed``
(true/false), ``flow``, ``since`` (made at or after this ISO 8601 moment, with its offset).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials

from lifecycle.apikeys import authenticate
from lifecycle.app import App
from lifecycle.offers.schemas import OfferPage
from lifecycle.offers.service import Filters, listing
from lifecycle.timeline import MAX_ROW_ID

#: Most offers in one page.
MAX_LIMIT = 1000


def _moment(since: datetime, invalid: Any) -> datetime:
    """``since`` in UTC; a 422 without an offset or outside the years 1970 to 9998."""
    if since.tzinfo is None:
        raise invalid([{"loc": ["query", "since"], "type": "value_error",
                        "msg": "since needs its UTC offset, e.g. 2026-06-01T00:00:00Z"}])
    try:
        moment = since.astimezone(UTC)
    except OverflowError:
        moment = None
    if moment is None or not 1970 <= moment.year <= 9998:
        raise invalid([{"loc": ["query", "since"], "type": "value_error",
                        "msg": "since must fall in the years 1970 to 9998 (UTC)"}])
    return moment


def offer_routes(app: App, bearer: Any, invalid: Any) -> APIRouter:
    """The offers endpoint; ``bearer`` reads the key, ``invalid(problems)`` makes a 422."""
    router = APIRouter(tags=["offers"])  # under the ingest router's /api/v1

    def reader(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        with app.engine.begin() as conn:
            authenticate(conn, credentials.credentials if credentials else None, "offers:read",
                         app.clock.now())

    @router.get("/offers", response_model=OfferPage, dependencies=[Depends(reader)])
    def offers(cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$",
                                                   description=(
                   "The next_cursor of the page before."))] = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
               redeemed: Annotated[bool | None, Query(description=(
                   "true: only redeemed codes; false: only codes not redeemed."))] = None,
               flow: Annotated[str | None, Query(max_length=100,
                                                 pattern=r"^[A-Za-z0-9_.-]+$")] = None,
               since: Annotated[datetime | None, Query(description=(
                   "Only codes made at or after this moment (ISO 8601 with offset)."))] = None,
               ) -> dict[str, Any]:
        """The offer codes mails handed out, oldest first, a page at a time."""
        after = 0
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > MAX_ROW_ID:
                raise invalid([{"loc": ["query", "cursor"], "type": "value_error",
                                "msg": "not a cursor of this endpoint (use next_cursor)"}])
            after = int(cursor)
        if since is not None:
            since = _moment(since, invalid)
        with app.engine.connect() as conn:
            found = listing(conn, Filters(redeemed, flow, since), after=after, limit=limit)
        more = str(found[-1]["id"]) if len(found) == limit else None
        return {"offers": found, "next_cursor": more}

    return router
