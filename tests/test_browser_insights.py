"""The insights page in a real browser (Debian's Chromium, as tests/test_browser.py): a
manager finds it in the menu, reads the heat map beside its numbers, opens a month's NPS
comments, asks for another date and fewer months, downloads a table as CSV; the page at
1280 px is the README's screenshot (docs/insights.png)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lifecycle.app import App
from tests.factories import account
from tests.insights_data import busy_shop
from tests.test_browser import log_in, page, site  # noqa: F401  (fixtures)

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_a_manager_walks_the_insights_page(app: App, page, site: str, backend: str  # type: ignore[no-untyped-def]  # noqa: F811
                                           ) -> None:
    busy_shop(app)
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Insights").click()
    page.wait_for_url("**/insights")
    expect(page.get_by_role("heading", name="Insights", exact=True)).to_be_visible()
    for heading in ("Repurchase rate", "Cohorts", "Historic CLV", "NPS over time",
                    "Revenue by retention stage", "Flows and campaigns: share of revenue"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    heat = page.get_by_role("img", name=re.compile("^Cohorts by month of first order"))
    expect(heat).to_be_visible()
    box = heat.bounding_box()
    numbers = page.get_by_role("table", name="Cohorts: share still buying and revenue per "
                                             "customer")
    expect(numbers).to_be_visible()
    beside = numbers.bounding_box()
    assert box is not None and beside is not None  # beside it, or under it when too wide
    assert beside["x"] >= box["x"] + box["width"] or beside["y"] >= box["y"] + box["height"]
    assert page.viewport_size == {"width": 1280, "height": 900}
    if backend == "sqlite":  # one screenshot of the two runs
        page.screenshot(path=str(DOCS / "insights.png"), full_page=True)
    page.shots("insights")

    nps = page.get_by_role("table", name="NPS per month")
    summary = nps.locator("summary").first
    comment = nps.locator("details").first.locator("li").first
    expect(comment).to_be_hidden()
    summary.click()
    expect(comment).to_be_visible()
    assert re.match(r"\d+/10 from \S+ on \d{4}-\d\d-\d\d: “.+”$", comment.inner_text())

    page.get_by_label("As of", exact=True).fill("2026-03-31")
    page.get_by_label("Months", exact=True).fill("6")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"/insights\?as_of=2026-03-31&months=6"))
    expect(page.get_by_text(re.compile(r"^Every figure as of 2026-03-31 00:00"))).to_be_visible()
    months = page.get_by_role("table", name="NPS per month").get_by_role("rowheader")
    expect(months).to_have_text(["2025-10", "2025-11", "2025-12", "2026-01", "2026-02",
                                 "2026-03"])
    page.shots("as-of")

    with page.expect_download() as download:
        page.get_by_role("link", name="cohorts.csv").click()
    saved = download.value
    assert saved.suggested_filename == "insights-cohorts-2026-03-31.csv"
    first = Path(saved.path()).read_text(encoding="utf-8").splitlines()[0]
    assert first == ("cohort,customers,customers_buying_in_USD,months_since,active,"
                     "share_active,revenue_USD,revenue_per_customer_buying_in_USD")
