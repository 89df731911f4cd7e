"""A campaign's whole journey in a real browser (Debian's Chromium, as tests/test_browser.py):
a manager creates it in the form, sees the audience's size and who is left out and why,
previews it for a customer, sends a test, schedules it, and — once the scheduler's job has
started it — pauses, resumes and cancels it, reading the page after each step."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select, update

from lifecycle.app import App
from lifecycle.campaigns.jobs import tick
from lifecycle.models import Customer, Message
from tests.factories import account
from tests.test_browser import log_in, page, site  # noqa: F401  (fixtures)
from tests.test_campaign_pages import vips

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402


def landed(page, done: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The page is the campaign's after the action ``done`` (its address says so)."""
    expect(page).to_have_url(re.compile(rf"/campaigns/spring\?done={done}$"))


def press(page, button: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Press the button ``button`` from the keyboard.  A page that scrolls itself just after
    it loads (to its ``#preview`` part, or back after a full-page screenshot) can move a
    button between the moment a mouse click aims at it and the click, which then lands
    beside it; the keyboard does not aim."""
    page.get_by_role("button", name=button).press("Enter")


def test_a_manager_creates_previews_tests_schedules_pauses_resumes_and_cancels_a_campaign(
        app: App, page, site: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # the mail's pictures are on the shop's site, out of reach here: refused at once, so
    # each page has loaded (its preview frame too) before the next click
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site)
               else route.abort())
    ann, bob, cy = vips(app, 3, first_name="Ann")
    with app.engine.begin() as conn:
        conn.execute(update(Customer).where(Customer.id == cy).values(marketing_consent=False))
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    page.wait_for_url("**/campaigns")
    assert "No campaign yet." in page.content()
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label(re.compile(r"^Name")).fill("spring")
    page.get_by_label("Description").fill("The spring collection")
    page.get_by_label("Template", exact=True).select_option("vip_early_access")
    page.get_by_label("Audience: anyone in any of these segments").select_option(["vip"])
    page.get_by_label("At most").check()
    page.get_by_label("Mails per hour").fill("600")
    page.shots("form")
    page.get_by_role("button", name="Create the draft").click()
    landed(page, "create")
    assert page.get_by_role("status").inner_text() == "The draft was saved."
    assert page.get_by_role("heading", name="Status: draft").is_visible()
    audience = page.get_by_role("region", name="Audience").inner_text()
    assert "If it started now: 3 customers, 2 would be mailed." in audience
    left = page.get_by_role("table", name="Left out").inner_text()
    assert "no marketing consent\t1" in left and "left out in all\t1" in left

    page.get_by_label("Customer id or email").fill("v0@example.com")
    page.get_by_role("button", name="Preview").click()
    assert "Subject:" in page.get_by_role("region", name="Preview for a customer").inner_text()
    assert "Ann" in page.frame_locator("iframe.mail").locator("body").inner_text()
    press(page, "Send a test of vip_early_access to me")
    assert page.get_by_role("status").inner_text() == \
        "A test of vip_early_access is on its way to max@shop.example."

    press(page, "Schedule it")
    landed(page, "schedule")
    assert page.get_by_role("heading", name="Status: scheduled").is_visible()
    assert "Scheduled to start 2026-06-03 12:00 UTC" in page.content()

    assert tick(app) == 1  # the scheduler's job starts it
    page.goto("/campaigns/spring?customer=v0%40example.com")
    assert page.get_by_role("heading", name="Status: sending").is_visible()
    assert "Fixed when it started: 3 customers, 2 mails written." in \
        page.get_by_role("region", name="Audience").inner_text()
    assert "Ann" in page.frame_locator("iframe.mail").locator("body").inner_text()
    page.locator("iframe.mail").scroll_into_view_if_needed()  # drawn before the shot
    shot = page.shots("campaign")
    assert shot.exists()

    press(page, "Pause")
    landed(page, "pause")
    assert page.get_by_role("heading", name="Status: paused").is_visible()
    assert "2 mails held" in page.get_by_role("table", name="History").inner_text()
    page.get_by_role("button", name="Resume").click()
    landed(page, "resume")
    assert page.get_by_role("heading", name="Status: sending").is_visible()

    page.get_by_label("Yes, cancel it").check()
    page.get_by_role("button", name="Cancel the campaign").click()
    landed(page, "cancel")
    assert page.get_by_role("heading", name="Status: cancelled").is_visible()
    history = page.get_by_role("table", name="History").inner_text()
    for line in ("cancel\tcancelled\t2 mails withdrawn", "resume\tsending\t2 mails released",
                 "start\tsending", "schedule\tscheduled", "create\tdraft"):
        assert line in history, line
    page.shots("cancelled")
    with app.engine.connect() as conn:
        mails = conn.execute(select(Message.to_email, Message.status)
                             .order_by(Message.id)).all()
    assert sorted(mails) == [("max@shop.example", "scheduled"),  # the test send
                             ("v0@example.com", "cancelled"), ("v1@example.com", "cancelled")]
    page.goto("/campaigns")
    listed = page.get_by_role("table", name="Campaigns").inner_text()
    assert "spring\tcancelled\tmarketing\tvip\tas soon as it is scheduled" in listed
    assert "\t3\t2\tmax@shop.example" in listed  # audience size, mails written
