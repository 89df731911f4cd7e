"""Unsubscribe links, one-click unsubscribe (RFC 8058), the preference page, resubscribing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from lifecycle.app import App
from lifecycle.links import sign
from lifecycle.mail.compose import compose
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.templates import Rendered
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Message, Suppression, Touchpoint, email_hash
from lifecycle.web import limits
from tests.conftest import raw_post
from tests.factories import WEB_SECRET as SECRET
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
#: The same one-click post as ``multipart/form-data``, the encoding RFC 8058 recommends.
ONE_CLICK_MULTIPART = {"files": {"List-Unsubscribe": (None, "One-Click")}}
#: A one-click post in each encoding, for ``pytest.mark.parametrize``.
ONE_CLICK_ENCODINGS = pytest.mark.parametrize(
    "one_click", [ONE_CLICK, ONE_CLICK_MULTIPART], ids=["urlencoded", "multipart"])


def a_customer_with_a_mail(app: App) -> tuple[int, int]:
    """A customer and the (transactional) thank-you mail they got."""
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    assert send_due(app) == {mid: "sent"}
    return cid, mid


def token(purpose: str, cid: int, mid: int) -> str:
    return sign(SECRET, purpose, {"c": cid, "m": mid})


def due_mail(app: App, cid: int, flow: str, marketing: bool) -> int:
    with app.engine.begin() as conn:
        return int(conn.execute(insert(Message).returning(Message.id).values(
            idempotency_key=f"{flow}:{cid}:{marketing}", customer_id=cid, flow=flow,
            step="one", template="thank_you", to_email="b0@example.com", status="scheduled",
            due_at=T0, attempts=0,
            context={"order_id": "o0", "marketing": marketing, "capped": False},
            created_at=T0, updated_at=T0)).scalar_one())


def send_due(app: App) -> dict[int, str]:
    ids: list[int] = []
    dispatch(app, ids.extend)
    send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))
    with app.engine.connect() as conn:
        return dict(conn.execute(select(Message.id, Message.status).where(
            Message.id.in_(ids))).all())


def scopes(app: App) -> set[str]:
    with app.engine.connect() as conn:
        return set(conn.execute(select(Suppression.scope)).scalars())


def changes(app: App) -> list[tuple[str, Any]]:
    with app.engine.connect() as conn:
        return [(kind, data["scope"]) for kind, data in conn.execute(
            select(Touchpoint.kind, Touchpoint.data).where(
                Touchpoint.kind.in_(("unsubscribed", "resubscribed"))).order_by(Touchpoint.id))]


def test_opening_the_unsubscribe_link_asks_and_changes_nothing(app: App, web: TestClient) -> None:
    cid, mid = a_customer_with_a_mail(app)
    page = web.get(f"/u/{token('unsubscribe', cid, mid)}")
    assert page.status_code == 200 and "Unsubscribe from Example Shop?" in page.text
    assert "b***@example.com" in page.text and "b0@example.com" not in page.text
    assert scopes(app) == set()


@ONE_CLICK_ENCODINGS
def test_one_click_unsubscribes_at_once_and_a_second_post_changes_nothing(
        app: App, web: TestClient, one_click: dict[str, Any]) -> None:
    cid, mid = a_customer_with_a_mail(app)
    url = f"/u/{token('unsubscribe', cid, mid)}"
    first = web.post(url, **one_click)
    assert first.status_code == 200 and "You are unsubscribed" in first.text
    assert web.post(url, **one_click).status_code == 200
    assert scopes(app) == {"marketing"}
    assert changes(app) == [("unsubscribed", "marketing")]
    with app.engine.connect() as conn:
        touch = conn.execute(select(Touchpoint).where(Touchpoint.kind == "unsubscribed")).one()
    assert (touch.message_id, touch.data["via"]) == (mid, "one-click")


def test_a_multipart_post_without_the_one_click_field_is_the_pages_button(
        app: App, web: TestClient) -> None:
    cid, mid = a_customer_with_a_mail(app)
    answer = web.post(f"/u/{token('unsubscribe', cid, mid)}",
                      files={"List-Unsubscribe": (None, "Something-Else")})
    assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    with app.engine.connect() as conn:
        touch = conn.execute(select(Touchpoint).where(Touchpoint.kind == "unsubscribed")).one()
    assert touch.data["via"] == "unsubscribe page"


def test_after_unsubscribing_marketing_mail_is_withheld_and_order_mail_still_goes(
        app: App, web: TestClient) -> None:
    cid, mid = a_customer_with_a_mail(app)
    web.post(f"/u/{token('unsubscribe', cid, mid)}", **ONE_CLICK)
    offer = due_mail(app, cid, "win_back", marketing=True)
    thanks = due_mail(app, cid, "thank_you", marketing=False)
    assert send_due(app) == {offer: "suppressed", thanks: "sent"}


@pytest.mark.parametrize("path", ["/u/{t}", "/p/{t}"])
def test_a_forged_or_altered_token_is_refused_and_changes_nothing(
        app: App, web: TestClient, path: str) -> None:
    cid, mid = a_customer_with_a_mail(app)
    good = token("unsubscribe" if path.startswith("/u") else "preferences", cid, mid)
    payload, _, signature = good.partition(".")
    other = token("unsubscribe", cid + 1, mid).partition(".")[0]
    wrong_purpose = token("feedback", cid, mid)
    for bad in (f"{other}.{signature}", good[:-2], wrong_purpose, "nonsense"):
        assert web.get(path.format(t=bad)).status_code == 400
        answer = web.post(path.format(t=bad), **ONE_CLICK)
        assert answer.status_code == 400 and "This link is not valid" in answer.text
    assert scopes(app) == set() and changes(app) == []


def test_the_preference_page_stops_one_flow_and_leaves_the_others(app: App,
                                                                   web: TestClient) -> None:
    cid, mid = a_customer_with_a_mail(app)
    url = f"/p/{token('preferences', cid, mid)}"
    page = web.get(url)
    offered = re.findall(r'name="scope" value="([^"]+)"', page.text)
    assert offered[0] == "marketing" and "flow:win_back" in offered
    assert "thank_you" not in " ".join(offered)  # transactional: not a choice
    keep = {s: "on" for s in offered if s != "flow:win_back"}
    saved = web.post(url, data={"scope": offered, **keep})
    assert saved.status_code == 200 and "Saved." in saved.text
    assert re.search(r'name="flow:win_back" value="on">', saved.text)  # shown unchecked
    assert scopes(app) == {"flow:win_back"}
    offer = due_mail(app, cid, "win_back", marketing=True)
    other = due_mail(app, cid, "loyalty_offer", marketing=True)
    assert send_due(app) == {offer: "suppressed", other: "sent"}


def test_resubscribing_lifts_the_unsubscribe_but_never_a_hard_bounce(app: App,
                                                                      web: TestClient) -> None:
    cid, mid = a_customer_with_a_mail(app)
    web.post(f"/u/{token('unsubscribe', cid, mid)}", **ONE_CLICK)
    url = f"/p/{token('preferences', cid, mid)}"
    web.post(url, data={"scope": ["marketing"], "marketing": "on"})
    assert scopes(app) == set()
    assert changes(app) == [("unsubscribed", "marketing"), ("resubscribed", "marketing")]
    with app.engine.begin() as conn:
        conn.execute(insert(Suppression).values(
            email_hash=email_hash("b0@example.com"), email="b0@example.com", scope="all",
            reason="hard_bounce", source="sendgrid", created_at=T0))
    page = web.post(url, data={"scope": ["marketing"], "marketing": "on"})
    assert "cannot receive mail because: hard bounce" in page.text
    assert scopes(app) == {"all"}


def test_the_unsubscribe_header_of_a_sent_mail_leads_to_a_working_one_click(
        app: App, web: TestClient) -> None:
    cid, mid = a_customer_with_a_mail(app)
    with app.engine.connect() as conn:
        row = conn.execute(select(Message.__table__).where(Message.id == mid)).one()
    mail = compose(app.settings, row, Rendered("thank_you", "Thanks", "Hi", None), T0,
                   "2026-06-03")
    link = re.match(r"<([^>]+)>", mail.headers["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
    path = link.removeprefix(app.settings.base_url)
    assert path.startswith("/u/")
    assert web.post(path, **ONE_CLICK).status_code == 200
    assert scopes(app) == {"marketing"}


def test_a_form_declared_larger_than_the_limit_is_refused_before_its_body_is_read(
        app: App, served: int) -> None:
    cid, mid = a_customer_with_a_mail(app)
    status, _ = raw_post(served, f"/u/{token('unsubscribe', cid, mid)}",
                         {"Content-Type": "application/x-www-form-urlencoded",
                          "Content-Length": str(10**9)}, b"List-Unsubscribe=One-Click")
    assert status == 413  # answered with a gigabyte still unsent: nothing waited for it
    assert scopes(app) == set()


@pytest.mark.parametrize("kind", ["urlencoded", "multipart file part"])
def test_a_form_growing_past_the_limit_without_a_length_is_refused_and_changes_nothing(
        app: App, served: int, kind: str) -> None:
    cid, mid = a_customer_with_a_mail(app)
    if kind == "urlencoded":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        first = b"List-Unsubscribe=One-Click&pad="
    else:
        headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
        first = (b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
                 b'One-Click\r\n--XyZ\r\nContent-Disposition: form-data; name="f"; '
                 b'filename="big.bin"\r\n\r\n')
    sent = {"bytes": 0}

    def body() -> Iterator[bytes]:  # 64 MB, chunked: no Content-Length to refuse up front
        yield first
        for _ in range(1024):
            sent["bytes"] += 65536
            yield b"a" * 65536

    answer = httpx.post(f"http://127.0.0.1:{served}/u/{token('unsubscribe', cid, mid)}",
                        headers=headers, content=body(), timeout=30)
    assert answer.status_code == 413
    assert scopes(app) == set()


def test_a_form_sent_too_slowly_is_refused_in_bounded_time(
        app: App, served: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(limits.LIMITS, "/u/", limits.Limit(limits.LIMITS["/u/"].size, 0.5))
    cid, mid = a_customer_with_a_mail(app)
    status, seconds = raw_post(served, f"/u/{token('unsubscribe', cid, mid)}",
                               {"Content-Type": "application/x-www-form-urlencoded",
                                "Content-Length": "26"}, b"List-Unsubscribe=")  # 9 bytes short
    assert status == 408 and seconds < 10
    assert scopes(app) == set()


@pytest.mark.parametrize("body", [
    b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--XyZ--\r\n",
    b"no boundary at all",
    b"--XyZ\r\n" + b"X-Header: " + b"h" * 100_000 + b"\r\n\r\nx\r\n--XyZ--\r\n",
    b"".join(b'--XyZ\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % n
             for n in range(500)) + b"--XyZ--\r\n",
], ids=["part without a name", "no boundary", "huge part header", "500 fields"])
def test_a_malformed_or_overfull_multipart_post_is_never_a_server_error(
        app: App, web: TestClient, body: bytes) -> None:
    cid, mid = a_customer_with_a_mail(app)
    answer = web.post(f"/u/{token('unsubscribe', cid, mid)}", content=body,
                      headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert answer.status_code < 500
