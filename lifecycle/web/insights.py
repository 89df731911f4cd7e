"""The insights page for managers (``/insights``) and its tables as CSV files.

``/insights?as_of=DATE&months=N&days=N`` shows every measure of
:mod:`lifecycle.insights` as of ``as_of`` (an ISO 8601 date or date-time, read in the
shop's zone as ``--as-of`` is; default now): cohorts and NPS of the last ``months`` months
(12), revenue by retention stage and by source of the last ``days`` days (365).
``/insights/TABLE.csv`` with the same parameters is one table (``TABLE`` one of
:data:`lifecycle.insights.TABLES`), formula-safe.  Both need the ``manager`` role.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.app import App
from lifecycle.insights import (
    DAYS,
    MAX_DAYS,
    MAX_MONTHS,
    MONTHS,
    TABLES,
    Report,
    check_as_of,
    report,
)
from lifecycle.insights import table as one_table
from lifecycle.money import percent, reader_locale
from lifecycle.segments.members import csv_cell
from lifecycle.timeutil import parse_instant
from lifecycle.web.charts import heat_map
from lifecycle.web.linked import templates
from lifecycle.web.staff import Gate

#: Comments listed per month on the page (all of them are in the CSV).
COMMENTS_SHOWN = 50


def insight_routes(app: App, gate: Gate) -> APIRouter:
    router = APIRouter()

    def compute(as_of: str, months: int, days: int) -> tuple[Report, str | None]:
        """The report as of ``as_of`` (now if empty or unreadable: then also the problem)."""
        moment, problem = app.clock.now(), None
        if as_of.strip():
            try:
                moment = check_as_of(parse_instant(as_of, app.settings.timezone))
            except ValueError as exc:
                problem = f"As of: {exc}; showing now instead."
        with app.engine.connect() as conn:
            return report(conn, moment, app.settings.currency,
                          timedelta(days=app.settings.attribution_days),
                          months, days, app.settings.timezone), problem

    @router.get("/insights", response_class=HTMLResponse)
    def insights(request: Request, as_of: str = "", months: int = MONTHS,
                 days: int = DAYS) -> Response:
        who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        found, problem = compute(as_of, months, days)
        locale = reader_locale(request.headers.get("accept-language"))
        # the page's parameters for its CSV links: an as-of date only if it was read
        query = urlencode({**({"as_of": as_of.strip()} if as_of.strip() and not problem
                              else {}), "months": found.months, "days": found.days})
        return templates.TemplateResponse(request, "insights.html", {
            "who": who, "r": found, "problem": problem, "as_of_text": as_of.strip(),
            "heat": _heat(found, locale), "query": query, "comments_shown": COMMENTS_SHOWN,
            "max_months": MAX_MONTHS, "max_days": MAX_DAYS,
            "window": app.settings.attribution_days, "zone": app.settings.timezone})

    @router.get("/insights/{table}.csv")
    def table_csv(request: Request, table: str, as_of: str = "", months: int = MONTHS,
                  days: int = DAYS) -> Response:
        _who, refused = gate.guard(request, "manager")
        if refused:
            return refused
        if table not in TABLES:
            return Response(f"No such table: the tables are {', '.join(TABLES)}.",
                            status_code=404)
        moment = app.clock.now()
        if as_of.strip():
            try:
                moment = check_as_of(parse_instant(as_of, app.settings.timezone))
            except ValueError as exc:
                return Response(f"As of: {exc}.", status_code=422)
        with app.engine.connect() as conn:  # only the measure this table needs
            header, rows = one_table(conn, table, moment, app.settings.currency,
                                     timedelta(days=app.settings.attribution_days),
                                     months, days, app.settings.timezone)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows([cell(v) for v in row] for row in rows)
        stamp = moment.strftime("%Y-%m-%d")
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="insights-{table}-{stamp}.csv"'})

    return router


def _heat(found: Report, locale: Any) -> Any:
    """The cohort table as a heat map: the share of each cohort buying in each month since
    its first, with the share written in the cell."""
    width = max((len(c.cells) for c in found.cohorts.cohorts), default=0)
    values: list[list[float | None]] = []
    labels: list[list[str]] = []
    for cohort in found.cohorts.cohorts:
        shares = [cohort.share(cell) for cell in cohort.cells]
        values.append([float(s) if s is not None else None for s in shares]
                      + [None] * (width - len(shares)))
        labels.append([percent(s, locale) for s in shares] + [""] * (width - len(shares)))
    return heat_map(f"Cohorts by month of first order: the share of each cohort with an order "
                    f"in each month since (as of {found.as_of:%Y-%m-%d})",
                    [c.month for c in found.cohorts.cohorts],
                    [f"+{k}" for k in range(width)], values, labels)


def cell(value: Any) -> str:
    """A value as the CSV files write it: None empty, numbers as they are (a negative NPS
    too), any other text formula-safe (:func:`lifecycle.segments.members.csv_cell`)."""
    if value is None:
        return ""
    if isinstance(value, (int, Decimal)):
        return str(value)
    try:
        Decimal(str(value))
    except InvalidOperation:
        return csv_cell(value)
    return str(value) if str(value).strip() == str(value) else csv_cell(value)
