"""Inbound Parse: replies matched to our mail, auto-replies apart, mailto unsubscribes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from lifecycle.app import App
from lifecycle.flows.definitions import Context, load_flow
from lifecycle.flows.triggers import matches
from lifecycle.links import inbound_key
from lifecycle.mail.compose import compose
from lifecycle.mail.inbound import html_to_text, new_text
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.templates import Rendered
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Message, MessageContent, Suppression, Touchpoint
from lifecycle.privacy import erase, find_customer
from tests.factories import WEB_SECRET as SECRET
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign

ROOT = Path(__file__).resolve().parent.parent


def our_mail(app: App, sent: bool = True) -> tuple[int, Any]:
    """A mail of ours to b0@example.com and the headers it went out with: sent through the
    outbox (its copy kept), or, if ``sent`` is False, only composed (never sent)."""
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        row = conn.execute(select(Message.__table__).where(Message.id == mid)).one()
    if not sent:
        return mid, compose(app.settings, row, Rendered("thank_you", "Thanks", "Hi", None), T0,
                            "2026-06-03")
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    with app.engine.connect() as conn:
        headers = conn.execute(select(MessageContent.headers).where(
            MessageContent.message_id == mid)).scalar_one()
    return mid, SimpleNamespace(reply_to=headers["Reply-To"], headers=headers)


def post(web: TestClient, key: str | None = None, **fields: str) -> Any:
    form = {"from": "Sam <b0@example.com>", "subject": "Re: Thanks",
            "headers": "Message-ID: <r1@mail.example>\n", **fields}
    key = inbound_key(SECRET) if key is None else key
    return web.post(f"/webhooks/sendgrid/inbound?key={key}",
                    files={name: (None, value) for name, value in form.items()})


def timeline(app: App) -> list[tuple[str, dict[str, Any]]]:
    """The timeline after the mail was sent (its ``email_sent`` left out)."""
    with app.engine.connect() as conn:
        return [(k, d) for k, d in conn.execute(select(Touchpoint.kind, Touchpoint.data)
                                                .where(Touchpoint.kind != "email_sent")
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
        assert conn.execute(select(Touchpoint.message_id).where(
            Touchpoint.kind == "replied")).scalar_one() == mid


def test_a_reply_sent_to_from_is_matched_by_in_reply_to(app: App, web: TestClient) -> None:
    _mid, mail = our_mail(app)
    headers = f"Message-ID: <r2@mail.example>\nIn-Reply-To: {mail.headers['Message-ID']}\n"
    answer = post(web, to="shop@example.com", headers=headers, text="Where is my parcel?",
                  envelope=json.dumps({"from": "B0@Example.com", "to": ["shop@example.com"]}),
                  **{"from": '"Sam Bee" <B0@EXAMPLE.com>'})
    assert answer.json()["matched"] is True
    [(_kind, data)] = timeline(app)
    assert data["matched_by"] == "in-reply-to"


def replied_flows(tmp_path: Path) -> dict[str, Any]:
    """A flow that starts when a customer replies to a thank-you mail."""
    path = tmp_path / "answer.yaml"
    path.write_text("description: Answer replies.\nkind: transactional\ntrigger:\n"
                    "  email_replied: {flow: thank_you}\nsteps:\n  - id: thanks\n"
                    "    send: thank_you\n", encoding="utf-8")
    flow = load_flow(path, Context.from_folders(ROOT / "templates" / "email", set()))
    return {flow.name: flow}


def firing(app: App, flows: dict[str, Any]) -> int:
    """How many touchpoints start one of ``flows`` (what the trigger engine enrols on: read
    here directly, as PostgreSQL's trigger cursor waits for every older transaction on the
    server to end)."""
    return sum(matches(flow, kind, data or {}) for kind, data in timeline(app)
               for flow in flows.values())


@pytest.mark.parametrize("sender", [
    {"from": "Mallory <mallory@evil.example>"},
    {"from": '"b0@example.com" <mallory@evil.example>'},  # the address in the display name
    {"from": "b0@example.com, mallory@evil.example"},  # two senders
    {"from": "Sam <b0@example.com>",
     "envelope": json.dumps({"from": "mallory@evil.example", "to": ["shop@example.com"]})},
])
def test_an_in_reply_to_from_another_address_than_the_mails_matches_nothing_and_fires_no_flow(
        app: App, web: TestClient, tmp_path: Path, sender: dict[str, str]) -> None:
    flows = replied_flows(tmp_path)
    _mid, mail = our_mail(app)
    headers = f"Message-ID: <f1@evil.example>\nIn-Reply-To: {mail.headers['Message-ID']}\n"
    answer = post(web, to="shop@example.com", headers=headers, text="forged", **sender)
    assert answer.status_code == 200 and answer.json() == {"matched": False}
    assert timeline(app) == [] and firing(app, flows) == 0
    post(web, to="shop@example.com", text="real",
         headers=f"Message-ID: <r9@mail.example>\nIn-Reply-To: {mail.headers['Message-ID']}\n")
    assert [k for k, _ in timeline(app)] == ["replied"] and firing(app, flows) == 1


def test_an_in_reply_to_naming_a_mail_never_sent_not_our_id_or_without_its_kept_copy_matches_nothing(
        app: App, web: TestClient) -> None:
    mid, mail = our_mail(app, sent=False)
    ours = mail.headers["Message-ID"]
    for n, named in enumerate([ours, f"<lifecycle.{mid}@anything.example>",
                               f"<x.lifecycle.{mid}@{ours.split('@')[1]}",
                               "<lifecycle.99999999999999999999@anything.example>",
                               f"<lifecycle.99999999999999999999@{ours.split('@')[1]}"]):
        answer = post(web, to="shop@example.com", text="hi",
                      headers=f"Message-ID: <n{n}@mail.example>\nReferences: {named}\n")
        assert answer.status_code == 200 and answer.json() == {"matched": False}, named
    with app.engine.begin() as conn:  # settled as sent from SendGrid's events: no copy kept
        conn.execute(update(Message).where(Message.id == mid).values(status="sent", sent_at=T0))
    for n, named in enumerate([f"<lifecycle.{mid}@anything.example>", ours]):
        assert post(web, to="shop@example.com", text="hi", headers=(
            f"Message-ID: <s{n}@mail.example>\nReferences: {named}\n")).json() == \
            {"matched": False}, named  # no kept Message-ID to hold it to: ids are guessable


def test_a_message_id_carries_128_random_bits_before_our_id() -> None:
    from lifecycle.mail.compose import message_id_for

    first, second = message_id_for(7, "shop.example"), message_id_for(7, "shop.example")
    assert first != second
    random_part, ours = first[1:].split(".", 1)
    assert len(random_part) == 32 and int(random_part, 16) >= 0
    assert ours == "lifecycle.7@shop.example>"


def test_an_in_reply_to_with_our_id_but_not_the_message_id_that_went_out_matches_nothing(
        app: App, web: TestClient) -> None:
    mid, mail = our_mail(app)
    ours = mail.headers["Message-ID"]
    guessed = f"<lifecycle.{mid}@{ours.split('@')[1]}"  # the id and domain, not the random part
    assert post(web, to="shop@example.com", text="hi", headers=(
        f"Message-ID: <g1@mail.example>\nIn-Reply-To: {guessed}\n")).json() == {"matched": False}
    assert post(web, to="shop@example.com", text="hi", headers=(
        f"Message-ID: <g2@mail.example>\nIn-Reply-To: {ours.upper()}\n")).json()["matched"]


def test_a_reply_to_an_erased_customers_mail_keeps_nothing_of_it(
        app: App, web: TestClient) -> None:
    _mid, mail = our_mail(app)
    with app.engine.begin() as conn:
        erase(conn, find_customer(conn, "b0"), T0)
    before = timeline(app)
    by_token = post(web, to=mail.reply_to, text="Remember me? Sam, 1 Elm St",
                    subject="Re: Thanks from Sam",
                    headers="Message-ID: <e1@mail.example>\n")
    by_id = post(web, to="shop@example.com", text="Remember me? Sam, 1 Elm St",
                 headers=f"Message-ID: <e2@mail.example>\nIn-Reply-To: "
                         f"{mail.headers['Message-ID']}\n")
    assert by_token.json() == {"matched": True, "erased": True}
    assert by_id.json() == {"matched": False}  # erasure deleted the Message-ID it could match
    after = timeline(app)  # nothing new: nothing to trigger a flow either
    assert after == before and "b0@example.com" not in repr(after) and "Elm" not in repr(after)


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
    local, _, domain = mail.reply_to.partition("@")
    forged = f"{local[:-1]}{'b' if local[-1] == 'a' else 'a'}@{domain}"  # one MAC letter changed
    assert post(web, to=forged, text="hi").json() == {"matched": False}
    assert post(web, key="wrong", to=mail.reply_to, text="hi").status_code == 403
    assert timeline(app) == []


def test_html_only_mail_is_reduced_to_text() -> None:
    html = ("<html><head><style>p{color:red}</style></head><body><p>Great <b>tea</b>!</p>"
            "<script>alert(1)</script><blockquote>old</blockquote></body></html>")
    assert html_to_text(html) == "Great tea!\nold"
    assert new_text("Yes please\n-----Original Message-----\nFrom: shop") == "Yes please"
