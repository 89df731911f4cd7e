"""The insights page (``/insights``) and its CSV files, for managers only: the hand-worked
shop of tests/insights_data.py as of 2026-06-01, in the reader's locale."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import event, insert

from lifecycle.app import App
from lifecycle.insights import TABLES
from lifecycle.models import Touchpoint
from tests.factories import account, logged_in
from tests.insights_data import at, shop
from tests.test_campaign_pages import text_of

ASKED = "/insights?as_of=2026-06-01&months=6&days=365"


def manager(app: App, web: TestClient) -> TestClient:
    with app.engine.begin() as conn:
        shop(conn)
    account(app, "max@shop.example", "manager")
    return logged_in(web, "max@shop.example")


def section(html: str, start: str, end: str) -> str:
    """The page's text from heading id ``start`` to heading id ``end``."""
    return text_of(html[html.index(f'id="{start}"'):html.index(f'id="{end}"')])


def test_a_manager_reads_every_measure_as_of_the_date_asked(app: App, web: TestClient) -> None:
    page = manager(app, web).get(ASKED, headers={"accept-language": "en-US"})
    assert page.status_code == 200
    html = page.text
    repurchase = section(html, "repurchase", "cohorts")
    assert "60.0% of 5 buyers placed a second completed order (3)" in repurchase
    assert "30 days 3 1 33.3%" in repurchase and "180 days 0 0 —" in repurchase
    assert "Median: 10 days" in repurchase and "90–180 days 1" in repurchase
    cohorts = section(html, "cohorts", "clv")
    assert ("2026-01 2 2 100.0% $95.00 0.0% $0.00 50.0% $15.00 0.0% $0.00 50.0% $30.00 "
            "0.0% $0.00 2026-03 1 0 100.0% $0.00") in cohorts
    assert "1 order in EUR (€70.00)" in cohorts
    clv = section(html, "clv", "nps")
    assert ("All cohorts $62.50 $62.50 $77.50 $77.50 $107.50 "
            "Pooled for the month 4 2 2 2 2 2026-01 2 $95.00") in clv
    assert "2026-01 2 $95.00 $95.00 $110.00 $110.00 $140.00 $140.00" in clv
    nps = section(html, "nps", "stages")
    assert "2026-04 25 4 2 1 1 2 comments" in nps and "2026-05 -100 1 0 0 1 —" in nps
    assert "3/10 from dee on 2026-04-20: “Late parcel”" in nps
    stages = section(html, "stages", "attribution")
    assert "At risk 1 1 1 3 $180.00 $180.00 52.9%" in stages
    assert "New 1 1 0 0 $0.00 $0.00 0.0%" in stages  # Cy paid in euros
    assert "No stage recorded 2 2 2 3 $60.00 $30.00 17.6%" in stages
    assert "All $340.00" in stages and "1 order in EUR (€70.00)" in stages
    assert "They are not in the orders above either." in stages
    sources = text_of(html[html.index('id="attribution"'):])
    assert "Flows 2 $150.00 44.1% Campaigns 1 $60.00 17.6% The rest 5 $130.00 38.2%" in sources
    assert "welcome (flow) 2 $150.00 spring (campaign) 1 $60.00" in sources


def test_the_cohorts_are_a_heat_map_drawn_in_inline_svg_beside_their_numbers(
        app: App, web: TestClient) -> None:
    html = manager(app, web).get(ASKED).text
    svg = re.search(r'<svg[^>]*class="chart heat".*?</svg>', html, re.S)
    assert svg is not None and 'role="img"' in svg.group(0) and "<script" not in html
    cells = re.findall(r'<rect[^>]*fill="rgb\(([^)]*)\)"[^>]*/><text[^>]*>([^<]*)</text>',
                       svg.group(0))
    # the January cohort: 100% deep blue, 0% white, 50% between
    assert cells[:3] == [("27, 79, 156", "100.0%"), ("255, 255, 255", "0.0%"),
                         ("141, 167, 206", "50.0%")]
    assert len(cells) == 6 + 4 + 2  # a cell per month since each cohort's first, to June


def test_the_page_writes_numbers_and_money_for_the_readers_locale(app: App, web: TestClient
                                                                  ) -> None:
    html = manager(app, web).get(ASKED, headers={"accept-language": "de-DE"}).text
    stages = section(html, "stages", "attribution").replace("\xa0", " ")
    assert "180,00 $" in stages and "52,9 %" in stages, stages


def test_a_date_that_is_not_one_is_said_and_now_is_shown(app: App, web: TestClient) -> None:
    html = manager(app, web).get("/insights?as_of=June").text
    assert "As of: 'June' is not an ISO 8601 date or date-time; showing now instead." in \
        text_of(html)


def test_only_managers_see_the_insights(app: App, web: TestClient) -> None:
    assert web.get("/insights", follow_redirects=False).status_code == 303
    account(app, "sue@shop.example", "support")
    client = logged_in(web, "sue@shop.example")
    assert client.get("/insights").status_code == 403
    assert client.get("/insights/cohorts.csv").status_code == 403


def test_each_table_is_a_csv_file_with_the_pages_figures(app: App, web: TestClient) -> None:
    client = manager(app, web)
    for table in TABLES:
        answer = client.get(f"/insights/{table}.csv?as_of=2026-06-01&months=6")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(
            "text/csv")
        assert answer.headers["content-disposition"] == \
            f'attachment; filename="insights-{table}-2026-06-01.csv"'
    rows = list(csv.reader(io.StringIO(client.get(
        "/insights/stages.csv?as_of=2026-06-01").text)))
    assert rows[0] == ["stage", "customers", "buyers", "customers_buying_in_USD", "orders_USD",
                       "revenue_USD", "revenue_per_customer_buying_in_USD", "share_of_revenue"]
    assert ["at_risk", "1", "1", "1", "3", "180.00", "180.00", "0.5294"] in rows
    nps = list(csv.reader(io.StringIO(client.get(
        "/insights/nps.csv?as_of=2026-06-01&months=3").text)))
    assert nps[1:] == [["2026-04", "4", "2", "1", "1", "25.0"],
                       ["2026-05", "1", "0", "0", "1", "-100.0"], ["2026-06", "0", "0", "0",
                                                                   "0", ""]]
    assert client.get("/insights/nothing.csv").status_code == 404
    assert client.get("/insights/nps.csv?as_of=June").status_code == 422


def test_a_comment_that_a_spreadsheet_would_run_is_defused(app: App, web: TestClient) -> None:
    client = manager(app, web)
    with app.engine.begin() as conn:
        conn.execute(insert(Touchpoint).values(
            customer_id=1, kind="feedback", channel="email", occurred_at=at(5, 9),
            recorded_at=at(5, 9), data={"score": 0, "comment": "=HYPERLINK(\"x\")"}))
    rows = list(csv.reader(io.StringIO(client.get(
        "/insights/nps-comments.csv?as_of=2026-06-01").text)))
    assert ["2026-05", "2026-05-09T00:00:00+00:00", "ann", "0", "'=HYPERLINK(\"x\")"] in rows


def test_by_default_twelve_months_and_a_year_of_revenue_are_shown(app: App, web: TestClient
                                                                  ) -> None:
    html = manager(app, web).get("/insights?as_of=2026-06-01").text
    nps = html[html.index('aria-label="NPS per month"'):]
    assert re.findall(r'<th scope="row">(\d{4}-\d\d)</th>', nps[:nps.index("</table>")]) == [
        f"{2025 + (m > 12)}-{(m - 1) % 12 + 1:02d}" for m in range(7, 19)]
    assert "Completed orders of the 365 days before" in text_of(html)
    assert 'value="12"' in html and 'value="365"' in html


def test_a_month_shows_fifty_comments_and_sends_to_the_csv_for_the_rest(
        app: App, web: TestClient) -> None:
    client = manager(app, web)
    with app.engine.begin() as conn:
        conn.execute(insert(Touchpoint), [
            {"customer_id": 1, "kind": "feedback", "channel": "email",
             "occurred_at": at(5, 1) + timedelta(minutes=n),
             "recorded_at": at(5, 1), "data": {"score": 8, "comment": f"Note {n}"}}
            for n in range(51)])
    html = client.get("/insights?as_of=2026-06-01").text
    nps = html[html.index('aria-label="NPS per month"'):]
    may = nps[nps.index('<th scope="row">2026-05</th>'):]
    may = may[:may.index("</tr>")]
    assert "51 comments" in text_of(may) and may.count("<li>") == 50
    assert "and 1 more in nps-comments.csv" in text_of(may)
    assert "Note 0" not in may and "Note 50" in may  # the newest first


def test_a_date_before_1900_is_said_on_the_page_and_refused_as_csv(app: App, web: TestClient
                                                                   ) -> None:
    client = manager(app, web)
    for asked in ("0001-01-01", "0002-06-01", "1899-12-31"):
        page = client.get(f"/insights?as_of={asked}&months=60&days=3650")
        assert page.status_code == 200
        assert (f"As of: {asked} is before 1900-01-01, the earliest date the insights go "
                "back to; showing now instead.") in text_of(page.text)
        for table in TABLES:
            answer = client.get(f"/insights/{table}.csv?as_of={asked}&months=60&days=3650")
            assert answer.status_code == 422 and "before 1900-01-01" in answer.text


def test_the_csv_links_carry_the_pages_parameters_encoded_and_only_a_date_that_was_read(
        app: App, web: TestClient) -> None:
    client = manager(app, web)
    html = client.get("/insights?as_of=2026-06-01T00:00%2B02:00&months=6").text
    assert 'href="/insights/cohorts.csv?as_of=2026-06-01T00%3A00%2B02%3A00&amp;months=6' \
           '&amp;days=365"' in html
    link = re.search(r'href="(/insights/cohorts.csv\?[^"]*)"', html)
    assert link is not None
    answer = client.get(link.group(1).replace("&amp;", "&"))
    assert answer.headers["content-disposition"].endswith('-2026-05-31.csv"')
    bad = client.get("/insights?as_of=June%23x&months=6").text
    assert 'href="/insights/cohorts.csv?months=6&amp;days=365"' in bad


def test_the_flows_and_campaigns_table_says_it_leaves_other_currencies_out_of_its_orders(
        app: App, web: TestClient) -> None:
    html = manager(app, web).get(ASKED).text
    cohorts = section(html, "cohorts", "clv")  # Cy's month with an order counts
    assert "1 order in EUR (€70.00). They count as orders all the same." in cohorts
    sources = text_of(html[html.index('id="attribution"'):])
    assert "All 8 $340.00" in sources  # Cy's order in EUR is not among the 8
    assert "1 order in EUR (€70.00). They are not in the orders above either." in sources
    assert "They count as orders all the same" not in sources


def test_the_page_says_its_months_are_the_shops(app: App, web: TestClient) -> None:
    from dataclasses import replace

    client = manager(app, web)
    app.settings = replace(app.settings, timezone="America/New_York")
    html = client.get("/insights?as_of=2026-06-01&months=2").text
    assert "Months are calendar months in America/New_York." in text_of(html)
    nps = html[html.index('aria-label="NPS per month"'):]
    assert re.findall(r'<th scope="row">(\d{4}-\d\d)</th>', nps[:nps.index("</table>")]) == [
        "2026-05", "2026-06"]  # as of 2026-06-01 00:00 there, 04:00 UTC


def test_a_csv_file_computes_only_the_measure_of_its_table(app: App, web: TestClient) -> None:
    client = manager(app, web)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(app.engine, "before_cursor_execute", seen)
    try:
        assert client.get("/insights/nps.csv?as_of=2026-06-01").status_code == 200
        nps = list(statements)
        statements.clear()
        assert client.get("/insights/stages.csv?as_of=2026-06-01").status_code == 200
    finally:
        event.remove(app.engine, "before_cursor_execute", seen)
    assert any("'feedback'" in s for s in nps)
    assert not any("FROM orders" in s for s in nps)  # no repurchase, cohorts, stages …
    assert any("segment_memberships" in s for s in statements)
    assert not any("touchpoints" in s or "messages" in s for s in statements)
