"""A manager's test send never touches the customer it was rendered for: its links, one-click
unsubscribe, reply address, mailto unsubscribe and SendGrid events change nothing for them, it
is not on their timeline, and its headers say it is a test of a named flow and step."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.links import inbound_key, sign
from lifecycle.mail.outbox import Outbox
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, ProviderEvent, Suppression, Touchpoint
from tests.factories import (
    WEB_SECRET,
    account,
    add_campaign,
    csrf_of,
    logged_in,
    webhook_headers,
    webhook_key,
)
from tests.factories import WEB_T0 as T0
from tests.test_subscriptions import ONE_CLICK_ENCODINGS

PRIVATE, PUBLIC = webhook_key()
MANAGER = "max@shop.example"
TEST_PAGE = "This was a test mail"


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path) -> Iterator[App]:
    """The conftest app, with SendGrid's event webhook configured."""
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key=WEB_SECRET, outbox_dir=tmp_path / "outbox",
                      sendgrid_webhook_public_key=PUBLIC),
              clock=ManualClock(T0))
    yield app
    app.close()


@dataclass
class SentTest:
    customer_id: int
    message_id: int
    mail: EmailMessage

    def body(self, subtype: str) -> str:
        part = self.mail.get_body((subtype,))
        assert part is not None
        return str(part.get_content())

    def path(self, kind: str) -> str:
        """The path of the first ``/u/…``, ``/p/…`` or ``/f/…`` link in the mail."""
        found = re.search(rf"https?://[^/\s]+(/{kind}/[^\s\"<>]+)", self.body("plain") +
                          self.body("html"))
        assert found, f"no /{kind}/ link in the mail"
        return found.group(1).replace("&amp;", "&")


def manager_tests_feedback_request_for(app: App, web: TestClient, cid: int) -> int:
    """A manager's "Send a test to me" of feedback_request's ask, rendered for customer b0
    (row id ``cid``); the test mail's id."""
    account(app, MANAGER, "manager")
    logged_in(web, MANAGER)
    page = web.get("/flows/feedback_request/preview", params={"customer": "b0"})
    nonce = page.text.split('name="nonce" value="')[1].split('"')[0]
    assert web.post("/flows/feedback_request/test", follow_redirects=False, data={
        "csrf": csrf_of(page.text), "nonce": nonce, "step": "ask",
        "template": "feedback_request", "customer_id": str(cid), "customer": "b0"}
    ).status_code == 303
    with app.engine.connect() as conn:
        return int(conn.execute(select(Message.id).where(Message.to_email == MANAGER))
                   .scalar_one())


def standing(app: App, customer_id: int) -> tuple[list[tuple[str, Any]], int]:
    """The customer's timeline (kind, mail) and how many suppressions there are."""
    with app.engine.connect() as conn:
        entries = [tuple(row) for row in conn.execute(
            select(Touchpoint.kind, Touchpoint.message_id).where(
                Touchpoint.customer_id == customer_id).order_by(Touchpoint.id))]
        return entries, int(conn.execute(select(func.count()).select_from(Suppression))
                            .scalar_one())


@pytest.fixture
def test_mail(app: App, web: TestClient) -> SentTest:
    """Customer b0, with a real mail sent to them, and a manager's test of the feedback
    request rendered for them, sent through the file transport."""
    with app.engine.begin() as conn:
        [real] = add_campaign(conn, 1, T0)
        cid = int(conn.execute(select(Message.customer_id).where(Message.id == real))
                  .scalar_one())
    mid = manager_tests_feedback_request_for(app, web, cid)
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 2
    [path] = app.settings.outbox_dir.glob(f"*/{mid:08d}-*.eml")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    return SentTest(cid, mid, mail)


def test_a_test_mail_says_it_is_a_test_of_its_flow_and_step_and_is_off_the_timeline(
        app: App, test_mail: SentTest) -> None:
    headers = test_mail.mail
    assert (headers["To"], headers["X-Lifecycle-Test"]) == (MANAGER, "yes")
    assert (headers["X-Lifecycle-Flow"], headers["X-Lifecycle-Step"]) == ("feedback_request", "ask")
    assert headers["X-Lifecycle-Template"] == "feedback_request"
    entries, suppressed = standing(app, test_mail.customer_id)
    assert [kind for kind, _ in entries] == ["email_sent"]  # the real mail's alone
    assert test_mail.message_id not in {mail for _, mail in entries} and suppressed == 0
    # its Feedback-ID keeps it apart; its shop links carry the flow's UTM as real mail does
    assert headers["Feedback-ID"] == "test:ask:feedback_request:example.com"
    with app.engine.connect() as conn:
        context = conn.execute(select(Message.context).where(
            Message.id == test_mail.message_id)).scalar_one()
    assert context["utm"] == {"campaign": "feedback_request"}


def test_every_link_of_a_test_mail_says_so_and_changes_nothing(
        app: App, web: TestClient, test_mail: SentTest) -> None:
    before = standing(app, test_mail.customer_id)
    unsubscribe, preferences = test_mail.path("u"), test_mail.path("p")
    feedback = test_mail.path("f").split("?")[0]
    answers = [
        web.get(unsubscribe), web.post(unsubscribe, data={}),
        web.get(preferences), web.post(preferences, data={"scope": "marketing"}),
        web.get(feedback, params={"score": "2"}), web.post(feedback, data={"comment": "Bad"}),
    ]
    for answer in answers:
        assert answer.status_code == 200 and TEST_PAGE in answer.text, answer.request.url
    assert standing(app, test_mail.customer_id) == before


@ONE_CLICK_ENCODINGS
def test_one_click_on_a_test_mails_list_unsubscribe_changes_nothing(
        app: App, web: TestClient, test_mail: SentTest, one_click: dict[str, Any]) -> None:
    before = standing(app, test_mail.customer_id)
    url = test_mail.mail["List-Unsubscribe"].split("<")[1].split(">")[0]
    answer = web.post(url.removeprefix(app.settings.base_url), **one_click)
    assert answer.status_code == 200 and TEST_PAGE in answer.text
    assert standing(app, test_mail.customer_id) == before


def test_a_test_link_cannot_be_made_into_a_real_one(
        app: App, web: TestClient, test_mail: SentTest) -> None:
    payload, _, signature = test_mail.path("u").removeprefix("/u/").partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert data.get("t") == 1
    del data["t"]
    forged = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()
                                      ).rstrip(b"=").decode()
    assert web.post(f"/u/{forged}.{signature}", data={}).status_code == 400
    assert standing(app, test_mail.customer_id)[1] == 0


def test_a_link_naming_a_test_send_is_a_test_link_even_without_the_flag(
        app: App, web: TestClient, test_mail: SentTest) -> None:
    """Test mails sent before tokens carried the flag: the mail they name is a test send."""
    old = sign(WEB_SECRET, "unsubscribe", {"c": test_mail.customer_id, "m": test_mail.message_id})
    answer = web.post(f"/u/{old}", data={})
    assert answer.status_code == 200 and TEST_PAGE in answer.text
    assert standing(app, test_mail.customer_id)[1] == 0


def test_the_links_of_a_preview_are_test_links(app: App, web: TestClient,
                                               test_mail: SentTest) -> None:
    page = web.get("/flows/feedback_request/preview", params={"customer": "b0"})
    before = standing(app, test_mail.customer_id)
    for kind in ("u", "f"):
        found = re.search(rf"https?://[^/\s]+(/{kind}/[^\s\"<>&]+)", page.text)
        assert found, f"no /{kind}/ link on the preview page"
        answer = web.post(found.group(1), data={})
        assert answer.status_code == 200 and TEST_PAGE in answer.text
    assert standing(app, test_mail.customer_id) == before


@pytest.mark.parametrize("kind", ["u", "p", "f"])
def test_a_preview_link_made_before_tokens_carried_the_flag_changes_nothing(
        app: App, web: TestClient, test_mail: SentTest, kind: str) -> None:
    """A preview renders for no mail (``m`` 0): its links, pasted or followed by a link
    scanner, must not unsubscribe the customer or answer for them."""
    purpose = {"u": "unsubscribe", "p": "preferences", "f": "feedback"}[kind]
    old = sign(WEB_SECRET, purpose, {"c": test_mail.customer_id, "m": 0})
    before = standing(app, test_mail.customer_id)
    answers = [web.get(f"/{kind}/{old}", params={"score": "0"} if kind == "f" else None),
               web.post(f"/{kind}/{old}", data={"scope": "marketing", "comment": "x"})]
    for answer in answers:
        assert answer.status_code == 200 and TEST_PAGE in answer.text, answer.text
    assert standing(app, test_mail.customer_id) == before


def inbound(web: TestClient, to: str, headers: str = "Message-ID: <r1@mail.example>\n") -> Any:
    form = {"from": f"Max <{MANAGER}>", "to": to, "subject": "Re: How did we do?",
            "headers": headers, "text": "Looks good, ship it. Unsubscribe"}
    return web.post(f"/webhooks/sendgrid/inbound?key={inbound_key(WEB_SECRET)}",
                    files={name: (None, value) for name, value in form.items()})


def test_replies_and_mailto_unsubscribes_to_a_test_mail_change_nothing(
        app: App, web: TestClient, test_mail: SentTest) -> None:
    before = standing(app, test_mail.customer_id)
    mailto = test_mail.mail["List-Unsubscribe"].split("<mailto:")[1].rstrip(">")
    answers = [
        inbound(web, test_mail.mail["Reply-To"]),
        inbound(web, mailto, "Message-ID: <r2@mail.example>\n"),
        inbound(web, "shop@example.com", "Message-ID: <r3@mail.example>\n"
                f"In-Reply-To: {test_mail.mail['Message-ID']}\n"),
    ]
    for answer in answers:
        assert answer.status_code == 200 and answer.json() == {"matched": True, "test": True}
    assert standing(app, test_mail.customer_id) == before


def test_sendgrid_events_of_a_test_mail_are_kept_but_reach_no_timeline(
        app: App, web: TestClient, test_mail: SentTest) -> None:
    before = standing(app, test_mail.customer_id)
    events = [{"event": name, "sg_event_id": f"ev-{name}", "sg_message_id": "sg1.filter",
               "email": MANAGER, "timestamp": int(T0.timestamp()) + n,
               "lifecycle_message_id": str(test_mail.message_id), "url": "https://x.example"}
              for n, name in enumerate(("processed", "delivered", "open", "click"))]
    body = json.dumps(events).encode()
    answer = web.post("/webhooks/sendgrid/events", content=body,
                      headers=webhook_headers(PRIVATE, body, int(T0.timestamp())))
    assert answer.status_code == 200
    assert (answer.json()["stored"], answer.json()["touchpoints"]) == (4, 0)
    with app.engine.connect() as conn:
        assert set(conn.execute(select(ProviderEvent.message_id)).scalars()) \
            == {test_mail.message_id}
    assert standing(app, test_mail.customer_id) == before


def test_a_failed_test_mail_is_not_on_the_customers_timeline(
        app: App, test_mail: SentTest) -> None:
    before = standing(app, test_mail.customer_id)
    with app.engine.begin() as conn:
        row = conn.execute(select(Message.__table__).where(
            Message.id == test_mail.message_id)).one()
        Outbox(conn).touch(row, "email_failed", T0, reason="the manager's mailbox is full")
    assert standing(app, test_mail.customer_id) == before


def test_a_test_send_goes_at_once_in_the_customers_night_and_is_not_in_their_upcoming_mails(
        app: App, web: TestClient) -> None:
    """Quiet hours are the customer's; a test mail is the manager's: held for the customer's
    morning it would sit among *their* upcoming mails, where pausing it writes on their
    timeline."""
    with app.engine.begin() as conn:
        [real] = add_campaign(conn, 1, T0)
        cid = int(conn.execute(select(Message.customer_id).where(Message.id == real))
                  .scalar_one())
        conn.execute(update(Customer).where(Customer.id == cid).values(
            timezone="Pacific/Kiritimati"))  # 02:00 there at T0: quiet hours
    mid = manager_tests_feedback_request_for(app, web, cid)
    account(app, "sue@shop.example", "support")
    support = TestClient(web.app)
    logged_in(support, "sue@shop.example")
    assert f"/mails/{mid}" not in support.get(f"/customers/{cid}").text
    ids: list[int] = []
    dispatch(app, ids.extend)
    outcomes = send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))
    assert (outcomes["sent"], outcomes["later"]) == (1, 1)  # the test now; b0's in their morning
    with app.engine.connect() as conn:
        assert conn.execute(select(Message.status).where(Message.id == mid)).scalar_one() == \
            "sent"
    assert f"/mails/{mid}" not in support.get(f"/customers/{cid}").text
    assert support.post(f"/customers/{cid}/mails/{mid}/pause", follow_redirects=False,
                        data={"csrf": csrf_of(support.get(f"/customers/{cid}").text)}
                        ).status_code in (404, 409)
    assert standing(app, cid)[0] == []
