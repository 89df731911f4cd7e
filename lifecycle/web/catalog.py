"""The catalog page, ``/catalog``: the categories, SKUs, attribute names and event names in the
data, with their counts (:mod:`lifecycle.catalog.service`), for CRM managers writing flows and
segments.  It needs the ``manager`` role (admins have it too)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.app import App
from lifecycle.catalog.service import COUNTS, LISTS, read_catalog
from lifecycle.web.linked import templates
from lifecycle.web.staff import Gate

#: Entries per list unless ``?limit=`` says otherwise, and the most a page shows.
PAGE_LIMIT, MAX_LIMIT = 100, 5_000
TITLES = {"categories": "Categories", "skus": "SKUs", "attributes": "Customer attributes",
          "events": "Custom events"}
#: Where each list's names are used.
USES = {"categories": "order lines' category: an order trigger's or segment's category",
        "skus": "order lines' sku",
        "attributes": "customer attributes: an attribute condition, a date trigger's attribute",
        "events": "custom events (POST /api/v1/events): trigger: {event: NAME}"}


def catalog_routes(app: App, gate: Gate) -> APIRouter:
    router = APIRouter()

    @router.get("/catalog", response_class=HTMLResponse)
    def catalog(request: Request, limit: int = PAGE_LIMIT) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        limit = max(1, min(limit, MAX_LIMIT))
        with app.engine.connect() as conn:
            found = read_catalog(conn, limit)
        lists = [{"key": name, "title": TITLES[name], "use": USES[name], "unit": COUNTS[name],
                  "entries": getattr(found, name), "distinct": found.distinct[name]}
                 for name in LISTS]
        return templates.TemplateResponse(request, "catalog.html", {
            "who": who, "lists": lists, "limit": limit})

    return router
