"""What the staff pages say: times in the customer's zone, segments as words, a standing that
changed since the last refresh, timeline pages, flow steps before any mail, chart axes, and the
customer's address by the shop's id."""

from __future__ import annotations

import re
from datetime import timedelta

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, insert, update

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.models import Customer, Touchpoint
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import segment_words
from lifecycle.segments.service import definitions
from lifecycle.timeline import page, summary
from lifecycle.web.charts import line_chart
from tests.factories import WEB_T0 as T0
from tests.factories import account, add_customer, add_order, add_touchpoint, logged_in

DAY = timedelta(days=1)


def support(app: App, web: TestClient) -> TestClient:
    account(app, "sue@shop.example", "support")
    return logged_in(web, "sue@shop.example")


def test_times_on_a_customer_s_page_are_in_their_zone_and_the_zone_is_named(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C1", T0 - DAY, timezone="Asia/Tokyo")
        add_touchpoint(conn, cid, "note", T0, by="sue@shop.example", text="Called back.")
    text = support(app, web).get(f"/customers/{cid}").text
    assert "time zone Asia/Tokyo" in text and "When (Asia/Tokyo)" in text
    assert "2026-06-03 21:00</td><td>Note by sue@shop.example: Called back." in text  # 12:00 UTC


def test_segment_names_read_as_words_the_same_on_badges_timeline_and_command_line(
        app: App, web: TestClient, cli_env: dict[str, str]) -> None:
    assert segment_words("rfm_cant_lose_them") == "Can't lose them (RFM)"
    assert segment_words("at_risk") == "At risk"
    assert summary("segment_entered", {"segment": "rfm_cant_lose_them"}) \
        == "Entered segment “Can't lose them (RFM)”"
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C1", T0 - 30 * DAY)
        add_order(conn, cid, T0 - 20 * DAY, "20.00")
        add_order(conn, cid, T0 - 10 * DAY, "20.00")
        refresh_all(conn, definitions(app), T0, T0)
    text = support(app, web).get(f"/customers/{cid}").text
    badge = re.search(r'class="badge" title="retention">([^<]+?) since', text)
    assert badge and badge.group(1) == "VIP"  # the only buyer: the top 5% by spend
    rfm = re.search(r'class="badge" title="rfm">([^<]+?) since', text)
    assert rfm and rfm.group(1) == "Lost (RFM)"  # one buyer: every score at its cut point
    timeline = text.split('id="timeline"')[1]
    assert "Entered segment “VIP”" in timeline and "Entered segment “Lost (RFM)”" in timeline
    assert "rfm_" not in timeline and "vip" not in timeline
    shown = CliRunner().invoke(cli, ["timeline", "C1"], env=cli_env).stdout
    assert "Entered segment “VIP”" in shown and "Entered segment “Lost (RFM)”" in shown


def test_the_page_says_when_the_live_standing_differs_from_the_last_refresh(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C1", T0 - 30 * DAY)
        add_order(conn, cid, T0 - 20 * DAY, "20.00")
        refresh_all(conn, definitions(app), T0 - DAY, T0 - DAY)
        add_order(conn, cid, T0 - timedelta(hours=12), "20.00")  # after the refresh
    text = support(app, web).get(f"/customers/{cid}").text
    assert "Their standing has changed since the last stored segment refresh." in text
    assert "Now in: VIP, Champions (RFM) (not recorded yet)." in text
    assert "Recorded but no longer true: New, Lost (RFM)." in text
    assert "VIP (now; not recorded yet)" in text


def test_customer_since_is_never_later_than_their_first_order(app: App,
                                                              web: TestClient) -> None:
    with app.engine.begin() as conn:  # an import dated the customer at the import time
        cid = add_customer(conn, "C1", T0)
        add_order(conn, cid, T0 - 400 * DAY, "20.00", status="refunded")
    text = support(app, web).get(f"/customers/{cid}").text
    assert f"customer since {T0 - 400 * DAY:%Y-%m-%d}" in text


def many_entries(conn: Connection, n: int) -> int:
    cid = add_customer(conn, "C1", T0 - 400 * DAY)
    conn.execute(insert(Touchpoint), [
        {"customer_id": cid, "kind": "note", "channel": "support", "recorded_at": T0,
         "occurred_at": T0 - timedelta(hours=i), "data": {"by": "sue", "text": f"n{i}"}}
        for i in range(n)])
    return int(cid)


def test_timeline_pages_go_newer_as_exactly_as_older(conn: Connection) -> None:
    cid = many_entries(conn, 120)
    first = page(conn, cid)
    second = page(conn, cid, before=first[-1].cursor)
    third = page(conn, cid, before=second[-1].cursor)
    assert len(third) == 20
    assert page(conn, cid, after=third[0].cursor) == second
    assert page(conn, cid, after=second[0].cursor) == first
    assert page(conn, cid, after=first[0].cursor) == []


def test_timeline_pages_link_newer_and_first_and_say_which_entries_they_show(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        cid = many_entries(conn, 120)
    client = support(app, web)
    first = client.get(f"/customers/{cid}").text
    assert "The newest 50 entries, newest first: from 2026-06-03 12:00 back to " \
           "2026-06-01 11:00 (UTC)." in first
    assert "Newer entries" not in first and "First page" not in first
    older = re.search(r'href="([^"]+)">Older entries', first)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert "Showing 50 entries, newest first: from 2026-06-01 10:00 back to " \
           "2026-05-30 09:00 (UTC)." in second
    assert "First page (newest)" in second
    newer = re.search(r'href="([^"]+)">Newer entries', second)
    assert newer
    back = client.get(newer.group(1).replace("&amp;", "&")).text
    assert "from 2026-06-03 12:00 back to 2026-06-01 11:00" in back
    third = client.get(re.search(r'href="([^"]+)">Older entries', second).group(1)  # type: ignore[union-attr]
                       .replace("&amp;", "&")).text
    assert "The oldest 20 entries" in third
    assert "Older entries" not in third


def test_flow_results_show_every_send_step_before_any_mail_was_sent(
        app: App, web: TestClient) -> None:
    account(app, "max@shop.example", "manager")
    text = logged_in(web, "max@shop.example").get("/flows/win_back").text
    for step in ("miss-you", "ten-percent", "last-chance"):  # the send steps, no wait
        assert re.search(rf'<th scope="row">{step}</th><td>[^<]*</td>\s*<td class="n">0</td>',
                         text), step
    assert '<th scope="row">pause-1</th>' not in text


def test_chart_axes_count_in_whole_numbers() -> None:
    from datetime import date
    svg = str(line_chart("sent", [date(2026, 6, 1), date(2026, 6, 2)], [("sent", [0, 1])]))
    labels = re.findall(r'text-anchor="end" font-size="11">([^<]+)<', svg)
    assert labels == ["0", "1", "2", "3", "4"]
    svg = str(line_chart("sent", [date(2026, 6, 1)], [("sent", [37])]))
    assert re.findall(r'text-anchor="end" font-size="11">([^<]+)<', svg) == \
        ["0", "10", "20", "30", "40"]


def test_form_fields_use_the_page_s_font_size(app: App, web: TestClient) -> None:
    text = support(app, web).get("/customers").text
    assert "input, select, textarea { font: inherit; }" in text


def test_the_shop_s_customer_id_opens_the_customer_and_row_ids_keep_working(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C 7/b", T0, first_name="Ann")
        other = add_customer(conn, str(cid), T0, first_name="Bob")  # a shop id that is a row id
    client = support(app, web)
    assert "<h1>Ann" in client.get("/customers/C%207%2Fb").text
    assert "<h1>Bob" in client.get(f"/customers/{cid}").text  # the shop's id comes first
    found = client.get("/customers", params={"q": "Ann"}).text
    assert 'href="/customers/C%207%2Fb"' in found
    assert client.get("/customers/nobody").status_code == 404
    with app.engine.begin() as conn:
        conn.execute(update(Customer).where(Customer.id == other).values(external_id="B1"))
    assert "<h1>Ann" in client.get(f"/customers/{cid}").text  # a row id still works
    assert "<h1>Bob" in client.get("/customers/B1").text


def test_customer_show_accepts_an_email_like_timeline_and_export(
        app: App, cli_env: dict[str, str]) -> None:
    with app.engine.begin() as conn:
        add_customer(conn, "C1", T0, email="ann@example.com")
    result = CliRunner().invoke(cli, ["customer", "show", "ann@example.com"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("C1  ann@example.com")


def test_a_customer_whose_record_begins_after_the_clock_gets_a_page_saying_so(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:  # an import dated them ahead, or another process's clock
        cid = add_customer(conn, "C1", T0 + DAY)
        add_order(conn, cid, T0 + DAY, "20.00")
    answer = support(app, web).get("/customers/C1")
    assert answer.status_code == 200  # it was a 500 (StopIteration in explain)
    assert "C1 was not a customer yet at 2026-06-03T12:00:00+00:00" in answer.text
    assert 'id="timeline"' in answer.text


def test_customer_show_as_of_before_the_customer_existed_says_so_in_one_line(
        app: App, cli_env: dict[str, str]) -> None:
    with app.engine.begin() as conn:
        add_customer(conn, "C1", T0, email="ann@example.com")
    result = CliRunner().invoke(cli, ["customer", "show", "C1", "--as-of", "2020-01-01"], env=cli_env)
    assert result.exit_code == 2, result.output  # it was a StopIteration traceback
    assert "C1 was not a customer yet at 2020-01-01T00:00:00+00:00" in result.output


def test_the_last_order_s_age_reads_as_words_one_day_not_one_days(
        app: App, web: TestClient, cli_env: dict[str, str]) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C1", T0 - 30 * DAY)
        add_order(conn, cid, T0 - 20 * DAY, "20.00")
        add_order(conn, cid, T0 - DAY, "20.00")
    assert "(1 day ago)" in support(app, web).get(f"/customers/{cid}").text
    shown = CliRunner().invoke(cli, ["customer", "show", "C1", "--as-of", (T0 - DAY).isoformat()],
                               env=cli_env)
    assert shown.exit_code == 0, shown.output
    assert "(today)" in shown.stdout and "days ago" not in shown.stdout


def test_odd_customer_addresses_and_forged_timeline_cursors_are_refused_not_server_errors(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C1", T0 - 3 * DAY)
        add_order(conn, cid, T0 - 2 * DAY, "20.00")
    w = support(app, web)
    # "²" is a digit to str.isdigit but no number to int(); 30 digits overflow a BIGINT
    for key in ("%C2%B2", "9" * 30, "9" * 5000):
        assert w.get(f"/customers/{key}").status_code == 404, key
    for cursor in ("2026-01-01T00:00:00~" + "9" * 30, "2026-01-01T00:00:00~%C2%B2",
                   "0001-01-01T00:00:00%2B14:00~1", "9999-12-31T23:59:59-14:00~1"):
        for direction in ("after", "before"):
            answer = w.get(f"/customers/{cid}?{direction}={cursor}")
            assert answer.status_code == 400, (direction, cursor)
            assert answer.text == "Not a timeline cursor."
    assert w.get(f"/customers/{cid}").status_code == 200
