"""The staff pages in a real browser: Debian's Chromium, headless, driven by Playwright.

The web app runs under uvicorn on a free port of 127.0.0.1, on the same
database as the test (SQLite and PostgreSQL).  Chromium (conftest's ``browser``) is the system's
(``/usr/bin/chromium``, or LIFECYCLE_TEST_CHROMIUM); when it is missing and
the tests run as root on Debian, the session installs it with apt, else its
tests are skipped (or, with CI=true, fail).  Every step leaves a screenshot in
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from lifecycle.app import App
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.templates import Renderer
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, Touchpoint
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.service import definitions
from tests.factories import PASSWORD, account, add_campaign, add_customer, add_order
from tests.factories import WEB_T0 as T0
from tests.mail_samples import EMAILS, LOCALES, TEMPLATES, rich_context, serve_pictures

pytest.importorskip("playwright.sync_api")  # the browser fixture (conftest) drives Chromium

SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


@pytest.fixture
def site(served: int) -> str:
    """The web app of ``app`` served on 127.0.0.1 (conftest's ``served``); its base URL."""
    return f"http://127.0.0.1:{served}"


@pytest.fixture
def page(browser, site: str, backend: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=site, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.shots = _Shots(tab, f"{request.node.originalname}-{backend}")
    yield tab
    context.close()


class _Shots:
    def __init__(self, tab, name: str) -> None:  # type: ignore[no-untyped-def]
        self.tab, self.name, self.n = tab, name, 0

    def __call__(self, step: str) -> Path:
        self.n += 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        target = SHOTS / f"{self.name}-{self.n:02d}-{step}.png"
        self.tab.screenshot(path=str(target), full_page=True)
        return target


def a_customer_with_a_story(app: App) -> tuple[int, int, int]:
    """A customer who got a thank-you mail, replied, and has a win-back mail scheduled:
    (customer id, the sent mail, the scheduled mail).  The shop reports in euros, as the
    customer paid."""
    app.settings = replace(app.settings, currency="EUR")
    with app.engine.begin() as conn:
        [sent] = add_campaign(conn, 1, T0 - timedelta(days=1))
        cid = conn.execute(select(Message.customer_id).where(Message.id == sent)).scalar_one()
        conn.execute(update(Customer).where(Customer.id == cid).values(
            timezone="Europe/Berlin"))  # 14:00 there when the mail is due: no quiet hours
    app.clock.set(T0 - timedelta(days=1))  # type: ignore[attr-defined]
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    app.clock.set(T0)  # type: ignore[attr-defined]
    with app.engine.begin() as conn:
        mail = {"flow": "thank_you", "step": "thanks"}
        conn.execute(insert(Touchpoint), [
            {"customer_id": cid, "kind": kind, "channel": channel, "message_id": message,
             "occurred_at": T0 - timedelta(hours=hours), "recorded_at": T0, "data": data}
            for kind, channel, message, hours, data in [
                ("email_delivered", "email", sent, 23.9, mail),
                ("email_opened", "email", sent, 22, mail),
                ("email_clicked", "email", sent, 21.9,
                 {**mail, "url": "https://shop.example/orders/o0"}),
                ("replied", "email", sent, 20,
                 {"text": "Where is my parcel?\nIt has been a week."}),
                ("support", "support", None, 6,
                 {"type": "call", "summary": "Parcel delayed by the carrier; new one sent."}),
                ("feedback", "email", None, 2,
                 {"score": 9, "comment": "Quick help, thank you!"}),
                ("note", "support", None, 1,
                 {"by": "sue@shop.example", "text": "Sent a replacement; no charge."}),
            ]])
        later = conn.execute(insert(Message).returning(Message.id).values(
            idempotency_key="wb", customer_id=cid, flow="win_back", step="miss-you",
            template="winback_1", to_email="b0@example.com", status="scheduled",
            due_at=T0 + timedelta(days=30), attempts=0, context={}, created_at=T0,
            updated_at=T0)).scalar_one()
        refresh_all(conn, definitions(app), T0, T0)
    return int(cid), int(sent), int(later)


def log_in(page, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_support_finds_a_customer_reads_the_timeline_opens_a_mail_and_pauses_another(
        app: App, page) -> None:  # type: ignore[no-untyped-def]
    cid, sent, later = a_customer_with_a_story(app)
    account(app, "sue@shop.example", "support")
    log_in(page, "sue@shop.example")
    page.get_by_label("Email, name or customer id").fill("b0@example.com")
    page.get_by_role("button", name="Search").click()
    page.shots("search")
    page.get_by_role("link", name="b0", exact=False).first.click()
    page.wait_for_url("**/customers/b0")  # the shop's customer id
    timeline = page.get_by_role("table", name="Timeline")
    seen = timeline.inner_text()
    for line in ("Note by sue@shop.example: Sent a replacement", "Feedback: 9/10",
                 "Support call: Parcel delayed", "Replied: Where is my parcel?",
                 "Clicked https://shop.example/orders/o0", "Mail opened — thank_you/thanks",
                 "Mail delivered", "Mail sent: “Thank you for your order, Sam”"):
        assert line in seen, line
    assert seen.index("Note by") < seen.index("Replied:") < seen.index("Mail sent:")
    page.shots("timeline")

    page.get_by_role("link", name="open the mail").first.click()
    page.wait_for_url(f"**/customers/{cid}/mails/{sent}")
    frame = page.frame_locator("iframe.mail")
    assert "Sam" in frame.locator("body").inner_text()
    page.wait_for_load_state("load")
    page.locator("iframe.mail").scroll_into_view_if_needed()
    page.shots("sent-mail")

    page.go_back()
    page.get_by_role("button", name="pause win_back/miss-you").click()
    page.wait_for_url("**/customers/b0#upcoming")
    assert "paused" in page.get_by_role("table", name="Upcoming mails").inner_text()
    page.shots("paused")
    with app.engine.connect() as conn:
        assert conn.execute(select(Message.status).where(Message.id == later)) \
            .scalar_one() == "paused"

    answer = page.goto("/flows")
    assert answer is not None and answer.status == 403
    assert "needs the manager role" in page.content()
    page.shots("flows-refused")


def test_the_login_and_search_work_from_the_keyboard_alone(app: App, page) -> None:  # type: ignore[no-untyped-def]
    a_customer_with_a_story(app)
    account(app, "sue@shop.example", "support")
    page.goto("/login")
    assert page.evaluate("document.activeElement.id") == "email"  # focus starts in the form
    page.keyboard.type("sue@shop.example")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/customers")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("Sam")
    page.keyboard.press("Enter")
    page.wait_for_url("**/customers?q=Sam")
    assert page.get_by_role("link", name="b0", exact=False).count() == 1
    page.shots("keyboard")


def test_a_manager_reads_flow_results_with_a_chart(app: App, page) -> None:  # type: ignore[no-untyped-def]
    a_customer_with_a_story(app)
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")
    page.goto("/flows")
    page.get_by_role("link", name="thank_you").first.click()
    assert page.get_by_role("img", name="thank_you: mails sent and conversions per day") \
        .is_visible()
    row = page.get_by_role("row", name="thanks", exact=False).first.inner_text()
    assert row.split()[0:3] == ["thanks", "—", "1"]
    page.shots("flow-results")


def test_a_customer_page_reads_right_for_a_german_reader(  # type: ignore[no-untyped-def]
        app: App, browser, site: str, backend: str) -> None:
    """Money in the reader's format with its currency (others apart), times in the customer's
    zone, segments as words, a standing newer than the last refresh said so, timeline pages
    that say what they show, and form fields at the page's font size."""
    with app.engine.begin() as conn:
        cid = add_customer(conn, "C-42", T0, first_name="Lena", last_name="Vogel",
                           timezone="Europe/Berlin")
        add_order(conn, cid, T0 - timedelta(days=300), "1234.50", currency="EUR")
        add_order(conn, cid, T0 - timedelta(days=200), "80.00", currency="EUR")
        add_order(conn, cid, T0 - timedelta(days=100), "25.00", currency="GBP")
        conn.execute(insert(Touchpoint), [
            {"customer_id": cid, "kind": "note", "channel": "support", "recorded_at": T0,
             "occurred_at": T0 - timedelta(hours=2 * i), "data": {"by": "sue@shop.example",
                                                               "text": f"Call {60 - i}"}}
            for i in range(60)])
        app.settings = replace(app.settings, currency="EUR")
        refresh_all(conn, definitions(app), T0 - timedelta(days=150),
                    T0 - timedelta(days=150))
    account(app, "sue@shop.example", "support")
    context = browser.new_context(base_url=site, viewport={"width": 1280, "height": 900},
                                  locale="de-DE")
    page = context.new_page()
    page.set_default_timeout(15_000)
    shots = _Shots(page, f"german-reader-{backend}")
    try:
        log_in(page, "sue@shop.example")
        page.goto("/customers/C-42")
        assert page.get_by_role("heading", level=1).inner_text().startswith("Lena Vogel")
        standing = page.get_by_role("table", name="Where they stand").inner_text()
        assert "spent 1.314,50\xa0€ in all, 657,25\xa0€ on average" in standing
        assert "also 25,00\xa0£ in 1 order paid in GBP, kept apart" in standing
        assert page.get_by_role("status").inner_text().startswith(
            "Their standing has changed since the last stored segment refresh.")
        badges = page.get_by_label("Segments").inner_text()
        assert "_" not in badges and "(RFM)" in badges
        assert "time zone Europe/Berlin" in page.content()
        assert "customer since " + (T0 - timedelta(days=300)).strftime("%Y-%m-%d") \
            in page.content()  # not the day the customer row was made
        timeline = page.get_by_role("table", name="Timeline").inner_text()
        assert "When (Europe/Berlin)" in timeline
        assert "2026-06-03 14:00\tNote by sue@shop.example: Call 60" in timeline  # 12:00 UTC
        assert page.locator("#shown").inner_text().startswith("The newest 50 entries")
        body = page.evaluate("getComputedStyle(document.body).fontSize")
        for field in ("#note", "#kind"):
            assert page.evaluate(f"getComputedStyle(document.querySelector('{field}'))"
                                 ".fontSize") == body, field
        shots("customer")
        page.get_by_role("link", name="Older entries").first.click()
        assert page.locator("#shown").inner_text().startswith("The oldest 1")
        shots("older")
        page.get_by_role("link", name="Newer entries").first.click()
        assert page.locator("#shown").inner_text().startswith("The newest 50 entries")
        page.get_by_role("link", name="Older entries").first.click()
        page.get_by_role("link", name="First page (newest)").first.click()
        assert page.locator("#shown").inner_text().startswith("The newest 50 entries")
    finally:
        context.close()


def test_a_manager_sees_every_step_of_a_flow_before_any_mail(  # type: ignore[no-untyped-def]
        app: App, page) -> None:
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")
    page.goto("/flows/win_back")
    steps = page.get_by_role("table", name="Per step").inner_text()
    for step in ("miss-you", "ten-percent", "last-chance"):
        row = page.get_by_role("row", name=step, exact=False).first.inner_text().split()
        assert row[:4] == [step, "—", "0", "0"], row
    assert "all steps" in steps
    labels = page.locator("svg.chart text[text-anchor=end]").all_text_contents()
    assert labels == ["0", "1", "2", "3", "4"]
    page.shots("flow-before-any-mail")


# --- The shipped mails in a browser: every email in every language at phone and desktop width.

#: Where each NPS score link is, read in the page (the viewport's coordinates).
SCORE_BOXES = """Array.from(document.querySelectorAll('a[href*="score="]')).map(a => {
    const r = a.getBoundingClientRect(); return [a.textContent, r.left, r.right, r.width]; })"""


@pytest.mark.parametrize("locale", LOCALES)
def test_every_mail_fits_a_375_px_phone_and_a_desktop_without_scrolling_sideways(
        browser, locale: str) -> None:  # type: ignore[no-untyped-def]
    """The HTML part of each email with long German names, three order lines with pictures,
    recommendations and an offer: no horizontal scroll at 375 px (nor at 1280 px), every
    NPS score inside the screen and wide enough to tap, the footer in its small size."""
    renderer = Renderer(TEMPLATES)
    context = browser.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    serve_pictures(page)
    try:
        for name in EMAILS:
            html = renderer.render(name, rich_context(locale, logo=locale in ("de", "sv"))).html
            assert html is not None
            for width in (375, 1280):
                page.set_viewport_size({"width": width, "height": 800})
                page.set_content(html, wait_until="load")
                where = f"{name}/{locale} at {width} px"
                assert page.evaluate("document.documentElement.scrollWidth") <= width, where
                assert page.evaluate("document.body.scrollWidth") <= width, where
                broken = page.evaluate("Array.from(document.images).filter(i => "
                                       "!i.complete || !i.naturalWidth).length")
                assert broken == 0, where  # the pictures were there to take their room
                assert page.evaluate("getComputedStyle(document.querySelector('.foot p'))"
                                     ".fontSize") == "12px", where
                if name == "feedback_request":
                    boxes = page.evaluate(SCORE_BOXES)
                    assert [b[0] for b in boxes] == [str(n) for n in range(11)], where
                    for score, left, right, box_width in boxes:
                        assert 0 <= left and right <= width, f"{where}: score {score}"
                        assert box_width >= 24, f"{where}: score {score} is {box_width} px"
                if width == 375 and name in ("thank_you", "feedback_request", "winback_3"):
                    SHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SHOTS / f"mail-{name}-{locale}-375.png"),
                                    full_page=True)
    finally:
        context.close()
