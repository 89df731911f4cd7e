"""Inbound Parse: replies matched to our mail, auto-replies apart, mailto unsubscribes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.app import App
from lifecycle.links import inbound_key
from lifecycle.mail.compose import compose
from lifecycle.mail.inbound import html_to_text, new_text
from lifecycle.mail.templates import Rendered
from lifecycle.models import Message, Suppression, Touchpoint
from tests.factories import WEB_SECRET as SECRET
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign


def our_mail(app: App) -> tuple[int, Any]:
    """A mail of ours and the headers it went out with."""
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        row = conn.execute(select(Message.__table__).where(Message.id == mid)).one()
    return mid, compose(app.settings, row, Rendered("thank_you", "Thanks", "Hi", None), T0,
                        "2026-06-03")


def post(web: TestClient, key: str | None = None, **fields: str) -> Any:
    form = {"from": "Sam <b0@example.com>", "subject": "Re: Thanks",
            "headers": "Message-ID: <r1@mail.example>\n", **fields}
    key = inbound_key(SECRET) if key is None else key
    return web.post(f"/webhooks/sendgrid/inbound?key={key}",
                    files={name: (None, value) for name, value in form.items()})


def timeline(app: App) -> list[tuple[str, dict[str, Any]]]:
    with app.engine.connect() as conn:
        return [(k, d) for k, d in conn.execute(select(Touchpoint.kind, Touchpoint.data)
                                                .order_by(Touchpoint.id))]


def test_a_reply_to_our_reply_to_address_lands_once_with_the_quote_cut_off(
        app: App, web: TestClient) -> None:
    mid, mail = our_mail(app)
    text = ("Lovely tea, thank you!\nSam\n\nOn Tue, 2 Jun 2026 at 10:00, Leaf wrote:\n"
            "> Thanks for your order\n")
    for _ in range(2):  # SendGrid retries a post
        answer = post(web, to=mail.reply_to, text=text)
        assert answer.status_code == 200 and answer.json()["matched"] is True
    [(kind, data)] = timeline(app)
    assert kind == "replied"
    assert data["text"] == "Lovely tea, thank you!\nSam" and data["from"] == "b0@example.com"
    assert (data["matched_by"], data["flow"]) == ("reply-to token", "thank_you")
    with app.engine.connect() as conn:
        assert conn.execute(select(Touchpoint.message_id)).scalar_one() == mid


def test_a_reply_sent_to_from_is_matched_by_in_reply_to(app: App, web: TestClient) -> None:
    _mid, mail = our_mail(app)
    headers = f"Message-ID: <r2@mail.example>\nIn-Reply-To: {mail.headers['Message-ID']}\n"
    answer = post(web, to="shop@example.com", headers=headers, text="Where is my parcel?")
    assert answer.json()["matched"] is True
    [(_kind, data)] = timeline(app)
    assert data["matched_by"] == "in-reply-to"


def test_an_out_of_office_answer_is_kept_apart_from_replies(app: App, web: TestClient) -> None:
    _mid, mail = our_mail(app)
    post(web, to=mail.reply_to, subject="Out of Office: back on Monday",
         headers="Message-ID: <r3@mail.example>\nAuto-Submitted: auto-replied\n", text="Away")
    assert [kind for kind, _ in timeline(app)] == ["auto_reply"]


def test_mail_to_the_mailto_unsubscribe_address_unsubscribes(app: App, web: TestClient) -> None:
    _mid, mail = our_mail(app)
    mailto = mail.headers["List-Unsubscribe"].split("<mailto:")[1].rstrip(">")
    assert post(web, to=mailto, subject="unsubscribe").json()["unsubscribed"] is True
    with app.engine.connect() as conn:
        assert conn.execute(select(Suppression.scope)).scalar_one() == "marketing"
    assert [(k, d["via"]) for k, d in timeline(app)] == [("unsubscribed", "mailto")]


def test_a_forged_token_or_a_missing_key_matches_nothing(app: App, web: TestClient) -> None:
    _mid, mail = our_mail(app)
    forged = mail.reply_to.replace("reply+", "reply+x")
    assert post(web, to=forged, text="hi").json() == {"matched": False}
    assert post(web, key="wrong", to=mail.reply_to, text="hi").status_code == 403
    assert timeline(app) == []


def test_html_only_mail_is_reduced_to_text() -> None:
    html = ("<html><head><style>p{color:red}</style></head><body><p>Great <b>tea</b>!</p>"
            "<script>alert(1)</script><blockquote>old</blockquote></body></html>")
    assert html_to_text(html) == "Great tea!\nold"
    assert new_text("Yes please\n-----Original Message-----\nFrom: shop") == "Yes please"
