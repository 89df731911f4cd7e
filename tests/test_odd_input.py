"""Odd input on public and staff routes gets a 4xx, never a 500; nothing public says more than
it must (API documents, caching, echoed input)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from lifecycle.apikeys import create_key
from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.links import inbound_key, sign
from lifecycle.mail.compose import compose
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.templates import Rendered
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, ProviderEvent, Touchpoint
from lifecycle.web.app import create_app
from tests.conftest import count
from tests.factories import (
    PASSWORD,
    WEB_SECRET,
    WEB_T0,
    account,
    add_campaign,
    csrf_of,
    logged_in,
    webhook_headers,
    webhook_key,
)

PRIVATE, PUBLIC = webhook_key()
HUGE_ID = "9" * 20  # a row id no BIGINT holds


def make_app(url: str, tmp_path: Path, **changes: Any) -> App:
    changes.setdefault("sendgrid_webhook_public_key", PUBLIC)
    return App(replace(load_settings({}), database_url=make_url(url), secret_key=WEB_SECRET,
                       outbox_dir=tmp_path / "outbox", **changes), clock=ManualClock(WEB_T0))


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path) -> Iterator[App]:
    app = make_app(fresh_database_url, tmp_path)
    yield app
    app.close()


@pytest.fixture
def web(app: App) -> TestClient:
    return TestClient(create_app(app))


@pytest.fixture
def admin(app: App, web: TestClient) -> TestClient:
    account(app, "ada@shop.example", "admin")
    return logged_in(web, "ada@shop.example")


def a_sent_mail(app: App) -> tuple[int, int]:
    """A mail sent to a customer: (customer row id, mail id)."""
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, WEB_T0)
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    return cid, mid


def csrf(web: TestClient) -> str:
    from tests.factories import csrf_of

    return csrf_of(web.get("/customers").text)


# ------------------------------------------------------------------ link pages and search

def test_a_superscript_digit_or_5000_digits_as_a_feedback_score_is_400_not_a_server_error(
        app: App, web: TestClient) -> None:
    cid, mid = a_sent_mail(app)
    token = sign(WEB_SECRET, "feedback", {"c": cid, "m": mid})
    assert web.get(f"/f/{token}?score=\u00b9").status_code == 400
    assert web.get(f"/f/{token}", params={"score": "9" * 5000}).status_code == 400
    assert web.get(f"/f/{token}?score=9").status_code == 200


@pytest.mark.parametrize("method,path", [
    ("get", "/customers/{huge}/mails/1"), ("get", "/customers/1/mails/{huge}"),
    ("post", "/customers/{huge}/mails/1/pause"), ("post", "/customers/1/mails/{huge}/pause"),
    ("post", "/customers/{huge}/notes"), ("post", "/admin/staff/{huge}"),
    ("get", "/customers/{huge}")])
def test_a_twenty_digit_row_id_in_a_staff_route_is_a_4xx_not_a_server_error(
        app: App, admin: TestClient, method: str, path: str) -> None:
    url = path.format(huge=HUGE_ID)
    if method == "get":
        answer = admin.get(url)
    else:
        answer = admin.post(url, data={"csrf": csrf(admin), "note": "hi", "role": "support"},
                            follow_redirects=False)
    assert 400 <= answer.status_code < 500, (url, answer.status_code)


def test_a_twenty_digit_customer_id_in_the_api_is_a_4xx_not_a_server_error(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        key = create_key(conn, "k", ["events:write", "orders:write"], WEB_T0)
    headers = {"Authorization": f"Bearer {key}"}
    answer = web.post("/api/v1/events", headers=headers, json=[{
        "customer_id": HUGE_ID, "name": "x", "occurred_at": "2026-06-01T00:00:00Z"}])
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == [
        "body", 0, "customer_id"]
    answer = web.post("/api/v1/orders", headers=headers, json=[{
        "order_id": HUGE_ID, "customer_id": HUGE_ID, "ordered_at": "2026-06-01T00:00:00Z",
        "total": "1.00", "email": "a@example.com"}])
    assert answer.status_code in (200, 422), answer.text


@pytest.mark.parametrize("cursor", [f"2026-06-01T00:00:00Z~{'9' * 40}", "9" * 5000,
                                    f"{'9' * 5000}~1", "x" * 60_000])
def test_an_oversized_timeline_cursor_is_a_4xx_not_a_server_error(
        app: App, admin: TestClient, cursor: str) -> None:
    cid, mid = a_sent_mail(app)
    for name in ("before", "after"):
        answer = admin.get(f"/customers/{cid}", params={name: cursor})
        assert 400 <= answer.status_code < 500, (name, answer.status_code)
        answer = admin.get(f"/customers/{cid}", params={name: cursor, "kind": "note"})
        assert 400 <= answer.status_code < 500, (name, answer.status_code)


@pytest.mark.parametrize("q", ["\x00", "a\x00b", "x" * 60_000, "%" * 20_000, "_%" * 10_000])
def test_an_odd_customer_search_is_answered_without_a_server_error(
        app: App, admin: TestClient, q: str) -> None:
    a_sent_mail(app)
    answer = admin.get("/customers", params={"q": q})
    assert answer.status_code in (200, 400, 422), answer.status_code
    answer = admin.get("/flows/welcome/preview", params={"customer": q})
    assert answer.status_code in (200, 400, 404, 422), answer.status_code


def test_an_address_holding_a_nul_character_is_400_before_any_database_sees_it(
        app: App, admin: TestClient) -> None:
    cid, _mid = a_sent_mail(app)
    assert admin.get(f"/customers/{cid}", params={"kind": "\x00"}).status_code == 400
    assert admin.get("/customers/a%00b").status_code == 400
    assert admin.post("/admin/apikeys/%00/revoke", data={"csrf": csrf(admin)}
                      ).status_code == 400


def test_a_form_field_holding_a_nul_character_is_taken_without_it(
        app: App, admin: TestClient) -> None:
    answer = admin.post("/admin/apikeys", data={"csrf": csrf(admin), "name": "sh\x00op",
                                                "scope": "orders:write"})
    assert answer.status_code == 200 and "shop" in answer.text


# ------------------------------------------------------------------------------ webhooks

def post_events(web: TestClient, body: bytes) -> Any:
    return web.post("/webhooks/sendgrid/events", content=body,
                    headers=webhook_headers(PRIVATE, body, int(WEB_T0.timestamp())))


def event(mid: int, n: int, **fields: Any) -> dict[str, Any]:
    return {"event": "delivered", "sg_event_id": f"ev-{n}", "sg_message_id": "sg1.filter",
            "email": "b0@example.com", "timestamp": int(WEB_T0.timestamp()) + n,
            "lifecycle_message_id": str(mid), **fields}


def events_stored(app: App) -> set[str]:
    with app.engine.connect() as conn:
        return set(conn.execute(select(ProviderEvent.event_id)).scalars())


def test_a_signed_event_post_with_deeply_nested_events_keeps_the_good_events(
        app: App, web: TestClient) -> None:
    """SendGrid retries a whole batch on a 5xx: one bad event must not hold up the rest.
    Nested 100 deep Python parses (the item is skipped after); 100,000 deep it cannot."""
    _cid, mid = a_sent_mail(app)
    for n, depth in enumerate((100, 100_000)):
        good = json.dumps([event(mid, 2 * n)])[1:-1].encode()
        nested = b'{"sg_event_id": "ev-deep", "x": ' + b"[" * depth + b"]" * depth + b"}"
        body = b"[" + good + b", " + nested + b', {"s": "\\"]["}, ' \
            + json.dumps(event(mid, 2 * n + 1)).encode() + b"]"
        answer = post_events(web, body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["ignored"] == 2 and answer.json()["stored"] == 2
    assert events_stored(app) == {"ev-0", "ev-1", "ev-2", "ev-3"}


def test_a_signed_event_holding_nan_or_infinity_is_skipped_and_the_rest_kept(
        app: App, web: TestClient) -> None:
    """PostgreSQL's jsonb refuses NaN: a post holding one was a 503, posted again for ever."""
    _cid, mid = a_sent_mail(app)
    odd = ['"x": NaN', '"timestamp": Infinity', '"x": {"a": [-Infinity]}', '"x": 1e999']
    body = ("[" + json.dumps(event(mid, 0)) + ", "
            + ", ".join(json.dumps(event(mid, 10 + n))[:-1] + ", " + field + "}"
                        for n, field in enumerate(odd))
            + ", " + json.dumps(event(mid, 1)) + "]").encode()
    answer = post_events(web, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ignored"] == len(odd) and answer.json()["stored"] == 2
    assert events_stored(app) == {"ev-0", "ev-1"}


def test_a_signed_event_holding_half_a_surrogate_pair_is_stored_without_it(
        app: App, web: TestClient) -> None:
    """JSON's \\ud800 escape makes a string no UTF-8 (and no database) holds: it was a 500."""
    _cid, mid = a_sent_mail(app)
    body = json.dumps([event(mid, 0, email="b0@example.com\ud800"),
                       event(mid, 1, **{"x\udfff": ["\ud800"]}),
                       {**event(mid, 2), "sg_event_id": "ev-2\udbff"},
                       event(mid, 3, smile="\ud83d\ude00")]).encode()
    assert b"\\ud800" in body
    answer = post_events(web, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 4
    assert events_stored(app) == {"ev-0", "ev-1", "ev-2\ufffd", "ev-3"}


@pytest.mark.parametrize("stamp", ["9" * 400, "1e9", "-5"])
def test_a_signed_event_post_whose_timestamp_is_no_sane_number_is_refused(
        app: App, web: TestClient, stamp: str) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from lifecycle.mail.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER

    body = b"[]"
    signature = PRIVATE.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    answer = web.post("/webhooks/sendgrid/events", content=body, headers={
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: stamp, "Content-Type": "application/json"})
    assert answer.status_code == 403, answer.text
    assert "timestamp" in answer.json()["error"]


def test_a_signed_event_with_a_huge_or_odd_message_id_is_kept_as_unmatched(
        app: App, web: TestClient) -> None:
    _cid, mid = a_sent_mail(app)
    odd = [HUGE_ID, "9" * 5000, 10**30, -1, 1.5e300, [1], {"a": 1}, "\u00b9"]
    body = json.dumps([event(mid, n, lifecycle_message_id=value)
                       for n, value in enumerate(odd)] + [event(mid, 99)]).encode()
    answer = post_events(web, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["unmatched"] == len(odd) and answer.json()["touchpoints"] == 1
    assert len(events_stored(app)) == len(odd) + 1


@pytest.mark.parametrize("where", ["text", "subject", "from", "headers", "html"])
def test_an_inbound_reply_with_a_nul_character_is_stored_not_retried_forever(
        app: App, web: TestClient, where: str) -> None:
    """SendGrid posts again whatever gets a 5xx: a NUL that the database refuses was a 503
    for ever."""
    _cid, mid = a_sent_mail(app)
    with app.engine.connect() as conn:
        row = conn.execute(select(Message.__table__).where(Message.id == mid)).one()
    mail = compose(app.settings, row, Rendered("thank_you", "Thanks", "Hi", None), WEB_T0,
                   "2026-06-03")
    form = {"from": "Sam <b0@example.com>", "to": mail.reply_to, "subject": "Re: Thanks",
            "text": "Lovely tea!", "html": "<p>Lovely tea!</p>",
            "headers": "Message-ID: <r1@mail.example>\nSubject: Re: Thanks\n"}
    form[where] = form[where][:3] + "\x00" + form[where][3:]
    answer = web.post(f"/webhooks/sendgrid/inbound?key={inbound_key(WEB_SECRET)}",
                      files={name: (None, value) for name, value in form.items()})
    assert 200 <= answer.status_code < 300, answer.text
    with app.engine.connect() as conn:
        kinds = list(conn.execute(select(Touchpoint.kind)).scalars())
    assert "replied" in kinds or where == "from", kinds


# ------------------------------------------------------------- what public answers say

def test_the_api_documents_need_a_staff_login_or_an_api_key(app: App, web: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert web.get(path).status_code == 404, path
        assert web.get(path, headers={"Authorization": "Bearer lc_nope_nope"}
                       ).status_code == 404, path
    with app.engine.begin() as conn:
        key = create_key(conn, "k", ["events:write"], WEB_T0)
    document = web.get("/openapi.json", headers={"Authorization": f"Bearer {key}"})
    assert document.status_code == 200 and "/api/v1/orders" in document.json()["paths"]
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert web.get(path).status_code == 200, path
    assert "/openapi.json" in web.get("/docs").text


def test_the_api_documents_pages_may_load_the_script_and_styles_they_name(
        fresh_database_url: str, tmp_path: Path) -> None:
    """The pages' own policy forbids script; Swagger UI and ReDoc are nothing without theirs."""
    import re
    from urllib.parse import urlsplit

    app = make_app(fresh_database_url, tmp_path, public_api_docs=True)
    web = TestClient(create_app(app))
    for path in ("/docs", "/redoc"):
        page = web.get(path)
        policy = dict(part.strip().split(" ", 1) for part in
                      page.headers["content-security-policy"].split(";"))
        scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page.text)
        styles = [re.search(r'href="([^"]+)"', tag).group(1)  # type: ignore[union-attr]
                  for tag in re.findall(r"<link[^>]*>", page.text) if "stylesheet" in tag]
        assert scripts, path
        for url, directive in [(u, "script-src") for u in scripts] + \
                              [(u, "style-src") for u in styles]:
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
            assert origin in policy[directive].split(), (path, url)
        if re.search(r"<script>\s*\S", page.text):  # an inline start-up script
            assert "'unsafe-inline'" in policy["script-src"].split(), path
    app.close()


def test_a_setting_makes_the_api_documents_public(fresh_database_url: str,
                                                  tmp_path: Path) -> None:
    app = make_app(fresh_database_url, tmp_path, public_api_docs=True)
    web = TestClient(create_app(app))
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert web.get(path).status_code == 200, path
    app.close()


def test_a_422_names_the_bad_field_without_echoing_a_large_value(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        key = create_key(conn, "k", ["events:write"], WEB_T0)
    huge = "x" * 1_000_000
    answer = web.post("/api/v1/events", headers={"Authorization": f"Bearer {key}"}, json=[{
        "customer_id": "c1", "name": huge, "occurred_at": "2026-06-01T00:00:00Z"}])
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", 0, "name"]
    assert len(answer.content) < 2000
    whole = web.post("/api/v1/events", headers={"Authorization": f"Bearer {key}",
                                                "Content-Type": "application/json"},
                     content=json.dumps({"not": "a list", "pad": huge}))
    assert whole.status_code == 422 and len(whole.content) < 2000


@pytest.mark.parametrize("body", [
    'NaN', '[NaN]', '[{"customer_id": "c1", "name": "x", "occurred_at": NaN}]',
    '[{"customer_id": "c1", "name": "x", "occurred_at": "2026-06-01T00:00:00Z", '
    '"properties": {"a": [Infinity]}}]'])
def test_a_number_json_has_no_word_for_is_a_422_not_a_server_error(
        app: App, web: TestClient, body: str) -> None:
    """Python's JSON parser takes NaN and Infinity; no JSON answer or column can hold them."""
    with app.engine.begin() as conn:
        key = create_key(conn, "k", ["events:write"], WEB_T0)
    answer = web.post("/api/v1/events", content=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text


def test_customer_staff_and_link_pages_are_not_kept_in_caches(
        app: App, web: TestClient) -> None:
    cid, mid = a_sent_mail(app)
    token = sign(WEB_SECRET, "preferences", {"c": cid, "m": mid})
    for path in (f"/p/{token}", f"/u/{sign(WEB_SECRET, 'unsubscribe', {'c': cid, 'm': mid})}",
                 "/login", "/customers", "/healthz"):  # /customers: the login redirect
        answer = web.get(path, follow_redirects=False)
        assert answer.headers.get("cache-control") == "no-store", path
    refused = web.post("/api/v1/orders", json=[])
    assert refused.status_code == 401 and refused.headers.get("cache-control") == "no-store"
    account(app, "ada@shop.example", "admin")
    logged_in(web, "ada@shop.example")
    for path in (f"/customers/{cid}", f"/customers/{cid}/mails/{mid}", "/customers?q=b0",
                 "/flows", "/segments", "/admin/staff", "/admin/apikeys", "/"):
        answer = web.get(path)
        assert answer.status_code == 200, path
        assert answer.headers.get("cache-control") == "no-store", path
    note = web.post(f"/customers/{cid}/notes", data={"csrf": csrf(web), "note": "hi"},
                    follow_redirects=False)
    assert note.status_code == 303 and note.headers.get("cache-control") == "no-store"


@pytest.mark.parametrize(("base_url", "secure"), [("https://crm.shop.example", True),
                                                  ("http://127.0.0.1:8000", False)])
def test_login_and_session_cookies_are_secure_when_the_base_url_is_https(
        fresh_database_url: str, tmp_path: Path, base_url: str, secure: bool) -> None:
    app = make_app(fresh_database_url, tmp_path, base_url=base_url)
    try:
        account(app, "sue@shop.example", "support")
        web = TestClient(create_app(app), base_url="https://testserver")
        login = web.get("/login")
        answer = web.post("/login", data={"email": "sue@shop.example", "password": PASSWORD,
                                          "csrf": csrf_of(login.text)}, follow_redirects=False)
        cookies = [login.headers["set-cookie"], answer.headers["set-cookie"]]
        assert all(("; secure" in c.lower()) is secure for c in cookies), cookies
        assert "lifecycle_session=" in cookies[1]
    finally:
        app.close()


def test_without_the_webhook_key_every_event_post_is_refused_and_logged(
        fresh_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(fresh_database_url, tmp_path, sendgrid_webhook_public_key=None)
    try:
        web = TestClient(create_app(app))
        body = json.dumps([{"event": "delivered", "email": "a@b.example", "timestamp": 1,
                            "sg_event_id": "e1", "lifecycle_message_id": "1"}]).encode()
        with caplog.at_level("WARNING"):
            answer = web.post("/webhooks/sendgrid/events", content=body,
                              headers={"content-type": "application/json"})
        assert answer.status_code == 403 and "SENDGRID_WEBHOOK_PUBLIC_KEY" in answer.text
        assert any("SENDGRID_WEBHOOK_PUBLIC_KEY is not set" in r.getMessage()
                   for r in caplog.records)
        with app.engine.connect() as conn:
            assert count(conn, "provider_events") == 0
    finally:
        app.close()


# ------------------------------------------------------------- odd text and dates via the API

def api_key(app: App, *scopes: str) -> dict[str, str]:
    with app.engine.begin() as conn:
        return {"Authorization": f"Bearer {create_key(conn, 'k', list(scopes), WEB_T0)}"}


@pytest.mark.parametrize(("path", "changes", "field"), [
    ("customers", {"first_name": "Ann\ud800"}, "first_name"),
    ("customers", {"attributes": {"tier\udfff": "gold"}}, "attributes"),
    ("customers", {"attributes": {"tier": ["gold\ud800"]}}, "attributes"),
    ("customers", {"\ud800": 1}, None),  # pydantic names the item: no text holds the key
    ("events", {"properties": {"k\ud800": 1}}, "properties"),
    ("events", {"properties": {"k": "v\udbff"}}, "properties")])
def test_half_a_surrogate_pair_in_an_api_item_is_a_422_naming_the_field(
        app: App, web: TestClient, path: str, changes: dict[str, Any], field: str | None
        ) -> None:
    """JSON's \\ud800 escape makes a string no UTF-8 (and no database) holds: it was a 500,
    and so was a 422 repeating it."""
    item = ({"customer_id": "c1", "email": "ann@example.com"} if path == "customers" else
            {"customer_id": "c1", "name": "x", "occurred_at": "2026-06-01T00:00:00Z"})
    answer = web.post(f"/api/v1/{path}", content=json.dumps([{**item, **changes}]),
                      headers={**api_key(app, f"{path}:write"),
                               "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", 0, *([field] if field else [])]
    assert "\ud800" not in answer.text and "\udfff" not in answer.text


@pytest.mark.parametrize(("field", "value"), [
    ("ordered_at", "0001-01-01T00:00:00+00:00"), ("ordered_at", "9999-12-31T23:59:59+00:00"),
    ("ordered_at", "0001-01-01T00:00:00-05:00"), ("created_at", "0001-01-01T00:00:00Z")])
def test_an_api_date_outside_sane_years_is_a_422_naming_the_field(
        app: App, web: TestClient, field: str, value: str) -> None:
    """A year-1 order was stored, and its customer's staff page was a 500 from then on."""
    headers = api_key(app, "customers:write", "orders:write")
    if field == "created_at":
        answer = web.post("/api/v1/customers", headers=headers, json=[{
            "customer_id": "c1", "email": "ann@example.com", field: value}])
    else:
        answer = web.post("/api/v1/orders", headers=headers, json=[{
            "order_id": "o1", "customer_id": "c1", "email": "ann@example.com", "total": "5",
            field: value}])
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", 0, field]
    assert "1970" in answer.json()["detail"][0]["msg"]


@pytest.mark.parametrize(("moment", "tz"), [
    (datetime(1, 1, 1, tzinfo=UTC), "America/Los_Angeles"),
    (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "Asia/Tokyo")])
def test_a_moment_at_the_edge_of_the_calendar_shows_on_the_staff_page_and_the_cli_timeline(
        app: App, admin: TestClient, cli_env: dict[str, str], moment: datetime,
        tz: str) -> None:
    """Stored before the API checked years: the customer's page was a 500 for good."""
    from click.testing import CliRunner

    from lifecycle.cli import cli

    with app.engine.begin() as conn:
        cid = conn.execute(insert(Customer).returning(Customer.id).values(
            external_id="C1", email="b0@example.com", attributes={}, timezone=tz,
            created_at=moment, updated_at=WEB_T0)).scalar_one()
        conn.execute(insert(Touchpoint).values(
            customer_id=cid, kind="support", channel="phone", occurred_at=moment,
            recorded_at=WEB_T0, data={"type": "call", "summary": "Asked"}))
    page = admin.get(f"/customers/{cid}")
    assert page.status_code == 200, page.text
    assert f"{moment:%Y-%m-%d %H:%M} UTC" in page.text
    result = CliRunner().invoke(cli, ["timeline", "C1"], env={**cli_env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"{moment:%Y-%m-%d %H:%M} UTC" in result.stdout
