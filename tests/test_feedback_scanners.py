"""A scripted link scanner and real browsers against the served web app: a scanner fetching
every NPS link of a mail records no score and takes no flow down the promoter's branch; a
person's click does, with script on or off.

The web app runs under uvicorn on 127.0.0.1 (conftest's ``served``) on the test's database
(SQLite and PostgreSQL), its clock stopped (all of a scanner's fetches are one moment); the
scanners are httpx (no script) and Debian's Chromium driven by Playwright (runs the page's
script), each with a browser's User-Agent unless said otherwise.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from lifecycle.app import App
from lifecycle.feedback import settle_held
from lifecycle.flows.service import tick
from lifecycle.mail.context import links
from lifecycle.models import FlowEnrollment, Message, NpsVote, Touchpoint
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign
from tests.test_feedback import CHROME, HOLD

HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/131.0.0.0 Safari/537.36")


class Mailbox:
    """A customer who got the feedback mail: its eleven score links, on the served app."""

    def __init__(self, app: App, port: int) -> None:
        self.app = app
        self.site = f"http://127.0.0.1:{port}"
        with app.engine.begin() as conn:
            [self.mid] = add_campaign(conn, 1, T0, template="feedback_request")
            self.cid = conn.execute(select(Message.customer_id).where(
                Message.id == self.mid)).scalar_one()
        self.nps = [link.replace(app.settings.base_url, self.site)
                    for link in links(app.settings, self.cid, self.mid)["nps"]]
        self.token = self.nps[0].split("/f/")[1].split("?")[0]
        tick(app)  # the flow engine's first run: its trigger cursor starts here

    def settled(self) -> None:
        """The hold passes; the scheduler's job settles; the flow engine runs."""
        self.app.clock.set(self.app.clock.now() + timedelta(seconds=HOLD))  # type: ignore[attr-defined]
        settle_held(self.app)
        tick(self.app)

    def answers(self) -> list[int]:
        with self.app.engine.connect() as conn:
            return [d["score"] for d in conn.execute(select(Touchpoint.data).where(
                Touchpoint.customer_id == self.cid, Touchpoint.kind == "feedback")).scalars()]

    def voided(self) -> list[dict[str, Any]]:
        with self.app.engine.connect() as conn:
            return list(conn.execute(select(Touchpoint.data).where(
                Touchpoint.customer_id == self.cid,
                Touchpoint.kind == "feedback_voided")).scalars())

    def held(self) -> int:
        with self.app.engine.connect() as conn:
            return len(conn.execute(select(NpsVote.id)).all())

    def nps_segments_entered(self) -> list[str]:
        """The NPS segments the customer entered (what the promoter's flow is triggered by)."""
        with self.app.engine.connect() as conn:
            return [d["segment"] for d in conn.execute(select(Touchpoint.data).where(
                Touchpoint.customer_id == self.cid, Touchpoint.kind == "segment_entered"))
                .scalars() if d.get("segment") in ("promoter", "passive", "detractor")]

    def branch_taken(self) -> list[str]:
        """Where the promoter's flow (``advocacy_ask``) took them two days on: the templates
        of the mails it wrote (review_request or referral_invite); [] if it never began."""
        with self.app.engine.connect() as conn:
            enrolled = conn.execute(select(FlowEnrollment.id).where(
                FlowEnrollment.customer_id == self.cid,
                FlowEnrollment.flow == "advocacy_ask")).all()
        if not enrolled:
            return []
        self.app.clock.set(T0 + timedelta(days=2))  # type: ignore[attr-defined]
        tick(self.app)
        with self.app.engine.connect() as conn:
            return list(conn.execute(select(Message.template).where(
                Message.customer_id == self.cid, Message.flow == "advocacy_ask")).scalars())


@pytest.fixture
def mailbox(app: App, served: int) -> Mailbox:
    return Mailbox(app, served)


def form_of(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the score link page's sending form."""
    body = page.split('<form id="nps-send"')[1].split("</form>")[0]
    action = re.search(r'action="([^"]+)"', body).group(1)  # type: ignore[union-attr]
    return action, dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))


# ------------------------------------------------------------------ scanners

@pytest.mark.parametrize("agent", [CHROME, None], ids=["browser-agent", "library-agent"])
def test_a_scanner_fetching_all_eleven_links_head_first_without_script_records_nothing(
        mailbox: Mailbox, agent: str | None) -> None:
    headers = {"User-Agent": agent} if agent else {}
    with httpx.Client(headers=headers, timeout=20) as scanner:
        for link in mailbox.nps:
            assert scanner.head(link).status_code == 200
            page = scanner.get(link)
            assert page.status_code == 200 and "Send my answer" in page.text
    assert mailbox.held() == 0
    mailbox.settled()
    assert mailbox.answers() == [] and mailbox.voided() == []
    assert mailbox.nps_segments_entered() == [] and mailbox.branch_taken() == []


def test_a_scanner_running_the_pages_script_with_a_browsers_name_has_its_burst_voided(
        mailbox: Mailbox, browser: Any) -> None:
    context = browser.new_context(user_agent=CHROME)
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        for link in mailbox.nps:  # every link, one after another, as fast as it goes
            tab.goto(link)
            tab.get_by_role("heading", name="Thank you!").wait_for()
    finally:
        context.close()
    assert mailbox.held() == 11  # each page's script posted its score
    mailbox.settled()
    assert mailbox.answers() == []
    [trace] = mailbox.voided()
    assert trace["scores"] == list(range(11)) and trace["agents"] == [CHROME]
    assert mailbox.nps_segments_entered() == [] and mailbox.branch_taken() == []


def test_a_headless_browser_scanner_is_known_by_its_name_and_holds_nothing(
        mailbox: Mailbox, browser: Any) -> None:
    context = browser.new_context(user_agent=HEADLESS)
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        for link in mailbox.nps:
            tab.goto(link)
            tab.get_by_role("heading", name="Thank you!").wait_for()
    finally:
        context.close()
    assert mailbox.held() == 0
    mailbox.settled()
    assert mailbox.answers() == [] and mailbox.voided() == []
    assert mailbox.nps_segments_entered() == [] and mailbox.branch_taken() == []


def test_two_posts_at_once_for_different_scores_of_one_mail_do_not_both_count(
        mailbox: Mailbox) -> None:
    def at_once(fields: list[dict[str, str]]) -> None:
        start = threading.Barrier(len(fields))

        def post(data: dict[str, str]) -> None:
            with httpx.Client(headers={"User-Agent": CHROME}, timeout=20) as client:
                start.wait()
                assert client.post(f"{mailbox.site}/f/{mailbox.token}", data=data
                                   ).status_code == 200

        threads = [threading.Thread(target=post, args=(data,)) for data in fields]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    at_once([{"score": "3"}, {"score": "9"}])  # two from the mail's links: the last counts
    mailbox.settled()
    [answer] = mailbox.answers()
    assert answer in (3, 9) and mailbox.voided() == []
    mailbox.app.clock.set(mailbox.app.clock.now() + timedelta(minutes=5))  # type: ignore[attr-defined]
    at_once([{"score": "2", "via": "page"}, {"score": "8", "via": "page"}])  # chosen again
    mailbox.settled()
    [answer] = mailbox.answers()
    assert answer in (2, 8) and mailbox.voided() == []
    at_once([{"score": "1"}, {"score": "5"}, {"score": "10"}])  # three: a burst
    mailbox.settled()
    assert mailbox.answers() == [answer] and len(mailbox.voided()) == 1


# ------------------------------------------------------------------ people

def test_a_person_with_script_answers_with_one_click_and_the_promoters_flow_follows(
        mailbox: Mailbox, browser: Any) -> None:
    context = browser.new_context(user_agent=CHROME)
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(mailbox.nps[10])  # the one click; the page posts the score by itself
        tab.get_by_role("heading", name="Thank you!").wait_for()
        assert "10 out of 10" in tab.inner_text("main")
    finally:
        context.close()
    mailbox.settled()
    assert mailbox.answers() == [10] and mailbox.voided() == []
    assert mailbox.nps_segments_entered() == ["promoter"]
    assert mailbox.branch_taken() == ["review_request"]


def test_a_person_with_script_off_answers_with_the_pages_button(
        mailbox: Mailbox, browser: Any) -> None:
    context = browser.new_context(user_agent=CHROME, java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(mailbox.nps[9])
        assert "9 out of 10" in tab.inner_text("main")
        assert mailbox.held() == 0  # nothing yet: no script ran
        tab.get_by_role("button", name="Send my answer").click()
        tab.get_by_role("heading", name="Thank you!").wait_for()
    finally:
        context.close()
    mailbox.settled()
    assert mailbox.answers() == [9]
    assert mailbox.branch_taken() == ["review_request"]


def test_a_person_who_clicks_7_and_a_minute_later_9_ends_with_9(mailbox: Mailbox) -> None:
    with httpx.Client(headers={"User-Agent": CHROME}, timeout=20) as person:
        for score in (7, 9):
            action, fields = form_of(person.get(mailbox.nps[score]).text)
            assert person.post(mailbox.site + action, data=fields).status_code == 200
            mailbox.settled()
            assert mailbox.answers() == [score]
            mailbox.app.clock.set(mailbox.app.clock.now() + timedelta(minutes=1))  # type: ignore[attr-defined]
    assert mailbox.voided() == []
    assert mailbox.branch_taken() == ["review_request"]
