"""Offers that redeem: flow offers of three kinds, codes stored at the engine's decision (once,
whatever the key), rendered with their button, told to the shop by a signed webhook that is
retried, listed by the API and the export, and redeemed by the orders that use them."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select, update
from standardwebhooks.webhooks import Webhook

from lifecycle.apikeys import create_key
from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.config import ConfigError, load_settings
from lifecycle.flows.definitions import Context, Flow, load_flow
from lifecycle.flows.engine import Policies, advance, enroll
from lifecycle.flows.preview import preview_mails
from lifecycle.mail.context import build_context
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, FlowEnrollment, Message, OfferCode, OfferWebhook, Touchpoint
from lifecycle.offers import webhooks
from lifecycle.offers.context import offer_vars
from lifecycle.offers.service import ALPHABET, new_code
from lifecycle.results import flow_results
from lifecycle.timeline import summary
from lifecycle.timeutil import UTC
from lifecycle.yamlfile import InvalidFile
from tests.factories import WEB_T0 as T0
from tests.factories import account, add_customer, logged_in
from tests.test_demo_run import all_steps

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = Context.from_folders(ROOT / "templates" / "email", set())
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64
CODE = re.compile(r"^BACK10-[23456789ABCDEFGHJKMNPQRSTWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTWXYZ]{4}$")
POLICIES = Policies(cap=1)


def flow_file(tmp_path: Path, offer: str, name: str = "back", kind: str = "transactional") -> Flow:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"description: t\nkind: {kind}\ntrigger:\n  first_order: {{}}\nsteps:\n"
                    f"  - id: ten-percent\n    send: {{template: winback_2, offer: {offer}}}\n",
                    encoding="utf-8")
    return load_flow(path, CONTEXT)


def problems(tmp_path: Path, offer: str) -> list[str]:
    with pytest.raises(InvalidFile) as caught:
        flow_file(tmp_path, offer)
    return [str(p).replace(str(tmp_path / "back.yaml"), "F") for p in caught.value.problems]


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    return flow_file(tmp_path, "{percent: 10, valid: 14 days, prefix: BACK10}")


def decide(conn: Connection, flow: Flow, customer: str, at: datetime = T0,
           notify: bool = False, **values: Any) -> int:
    """Enrol a new customer in ``flow`` and let the engine decide its mail; the customer id."""
    cid = add_customer(conn, customer, at - timedelta(days=30), **values)
    assert enroll(conn, flow, cid, f"order:{customer}", at) is not None
    advance(conn, {flow.name: flow}, at, policies=POLICIES, default_tz="UTC", notify_offers=notify)
    return cid


def offers_of(conn: Connection, customer_id: int | None = None) -> list[Any]:
    query = select(OfferCode.__table__).order_by(OfferCode.id)
    if customer_id is not None:
        query = query.where(OfferCode.customer_id == customer_id)
    return list(conn.execute(query))


# --------------------------------------------------------------------------- flow files


def test_an_offer_is_a_percent_a_fixed_amount_or_free_shipping(tmp_path: Path) -> None:
    percent = flow_file(tmp_path, "{percent: 15}").steps[0].action.offer  # type: ignore[union-attr]
    assert (percent.kind, percent.percent, percent.value, percent.prefix) == (
        "percent", 15, "15", "SAVE15")
    fixed = flow_file(tmp_path, '{amount: "5.00", currency: EUR, valid: 30 days, prefix: FIVE}'
                      ).steps[0].action.offer  # type: ignore[union-attr]
    assert (fixed.kind, fixed.amount, fixed.currency, fixed.value, fixed.prefix) == (
        "fixed", Decimal("5.00"), "EUR", "5.00", "FIVE")
    assert isinstance(fixed.amount, Decimal)
    free = flow_file(tmp_path, "{free_shipping: true}").steps[0].action.offer  # type: ignore[union-attr]
    assert (free.kind, free.value, free.prefix) == ("free_shipping", "", "FREESHIP")


def test_a_bad_offer_is_named_with_file_line_and_field(tmp_path: Path) -> None:
    assert problems(tmp_path, "{amount: 5.5, currency: EUR}") == [
        "F:7:49: amount 5.5 must be quoted text such as \"5.00\" (a number in YAML is a float)"]
    assert problems(tmp_path, '{amount: "5.00"}') == [
        "F:7:40: currency is missing: an amount offer names its currency, e.g. currency: EUR"]
    assert problems(tmp_path, '{amount: "5.001", currency: EUR}')[0].startswith(
        "F:7:49: amount '5.001' must be an amount")
    assert problems(tmp_path, '{amount: "5", currency: euro}') == [
        "F:7:64: currency 'euro' is not an ISO 4217 code in capitals such as EUR"]
    assert problems(tmp_path, "{percent: 10, free_shipping: true}")[0].startswith(
        "F:7:40: an offer takes exactly one of percent")
    assert problems(tmp_path, "{free_shipping: yes please}") == [
        "F:7:56: free_shipping takes true"]
    assert problems(tmp_path, "{percent: 10, currency: EUR}") == [
        "F:7:64: currency belongs to an amount offer only"]


def test_the_shipped_loyalty_mail_promises_what_its_offer_gives() -> None:
    from lifecycle.flows.definitions import load_folder
    from lifecycle.mail.templates import Renderer
    from tests.test_templates import full_context

    loyalty = load_folder(ROOT / "flows", Context.from_folders(
        ROOT / "templates" / "email", {"vip", "loyal", "lapsed", "promoter", "reviewer"})
    ).flows["loyalty_offer"]
    offer = loyalty.steps[-1].action.offer  # type: ignore[union-attr]
    assert offer is not None and (offer.kind, offer.percent) == ("percent", 15)
    renderer = Renderer(ROOT / "templates" / "email")
    context = full_context()
    context["offer"].update(percent=15, value="15")
    mail = renderer.render("loyalty_offer", context)
    for part in (mail.text or "", mail.html or ""):
        assert "15% off your next order" in part and "free shipping" not in part
        assert context["offer"]["url"] in part  # the button (and the text's link)
    context["offer"].update(kind="free_shipping", percent=None, value="")
    assert "free shipping on your next order" in (renderer.render("loyalty_offer", context).text
                                                  or "")


# --------------------------------------------------------------------------- codes


def test_codes_are_random_readable_and_carry_the_prefix() -> None:
    codes = {new_code("BACK10") for _ in range(2000)}
    assert len(codes) == 2000 and all(CODE.match(c) for c in codes)
    assert not set("01ILOUV") & set(ALPHABET)


def test_the_engine_stores_the_code_with_the_outbox_row_and_a_replay_makes_no_second(
        conn: Connection, flow: Flow) -> None:
    cid = decide(conn, flow, "ann")
    [mail] = conn.execute(select(Message).where(Message.customer_id == cid)).all()
    [offer] = offers_of(conn, cid)
    assert CODE.match(offer.code) and mail.context["offer"]["code"] == offer.code
    assert (offer.flow, offer.step, offer.message_id, offer.kind, offer.value, offer.currency) == (
        "back", "ten-percent", mail.id, "percent", Decimal("10"), None)
    assert offer.expires_at == mail.due_at + timedelta(days=14)
    assert (offer.created_at, offer.redeemed_at) == (T0, None)
    # The same decision again (the enrollment put back before its send step): no second code.
    conn.execute(update(FlowEnrollment).where(FlowEnrollment.customer_id == cid).values(
        status="active", current_step="ten-percent", next_run_at=T0))
    advance(conn, {"back": flow}, T0 + timedelta(minutes=1), policies=POLICIES, default_tz="UTC")
    assert [o.code for o in offers_of(conn, cid)] == [offer.code]
    assert conn.execute(select(func.count()).select_from(Message).where(
        Message.customer_id == cid)).scalar_one() == 1


def test_a_mail_capped_at_decision_gets_no_code(conn: Connection, tmp_path: Path) -> None:
    marketing = flow_file(tmp_path, "{percent: 10, prefix: BACK10}", name="promo", kind="marketing")
    cid = decide(conn, marketing, "cap")
    conn.execute(update(Message).where(Message.customer_id == cid).values(status="sent"))
    assert len(offers_of(conn, cid)) == 1
    conn.execute(update(FlowEnrollment).where(FlowEnrollment.customer_id == cid).values(
        status="active", current_step="ten-percent", next_run_at=T0, entry_key="again"))
    conn.execute(update(Message).where(Message.customer_id == cid).values(
        idempotency_key="the first"))
    advance(conn, {"promo": marketing}, T0 + timedelta(hours=1), policies=POLICIES,
            default_tz="UTC")
    statuses = conn.execute(select(Message.status).where(Message.customer_id == cid)
                            .order_by(Message.id)).scalars().all()
    assert statuses == ["sent", "suppressed"] and len(offers_of(conn, cid)) == 1


def test_the_code_a_mail_renders_is_the_stored_one_whatever_the_secret_key(
        conn: Connection, flow: Flow) -> None:
    cid = decide(conn, flow, "key", locale="de-AT", timezone="Europe/Vienna")
    [offer] = offers_of(conn, cid)
    [mail] = conn.execute(select(Message).where(Message.customer_id == cid)).all()
    customer = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
    shown = []
    for key in ("a" * 20 + "B7x9Qm2Lp4Zr8Tw6Ky3N", "z" * 20 + "Hq5Vn1Jc7Ds0Gf4Rb8Mw"):
        settings = replace(load_settings({"LIFECYCLE_SHOP_URL": "https://leaf.example"}),
                           secret_key=key)
        shown.append(build_context(conn, settings, customer, as_of=T0, message_id=mail.id,
                                   flow="back", step="ten-percent",
                                   offer=mail.context["offer"])["offer"])
    assert shown[0] == shown[1]
    assert shown[0]["code"] == offer.code and shown[0]["kind"] == "percent"
    assert (shown[0]["percent"], shown[0]["value"], shown[0]["amount"]) == (10, "10", None)
    assert shown[0]["url"] == (f"https://leaf.example/discount/{offer.code}?utm_source=lifecycle"
                               "&utm_medium=email&utm_campaign=back&utm_content=ten-percent")
    assert shown[0]["expires"] == "17. Juni 2026"  # de_AT, in Vienna


def test_a_fixed_amount_is_formatted_for_the_customers_locale_and_the_raw_value_kept() -> None:
    stored = {"code": "FIVE-ABCD-EFGH", "kind": "fixed", "value": "5.00", "currency": "EUR",
              "percent": None, "prefix": "FIVE", "expires_at": "2026-06-30T21:59:59+00:00"}
    german = offer_vars(stored, shop_url="https://s.example", locale="de-DE", tz="Europe/Berlin",
                        url_pattern="{shop_url}/apply?code={code}", as_of=T0)
    assert (german["amount"], german["value"], german["expires"]) == ("5,00\xa0€", "5.00",
                                                                       "30. Juni 2026")
    assert german["url"] == "https://s.example/apply?code=FIVE-ABCD-EFGH"
    english = offer_vars(stored, shop_url="https://s.example", locale=None, tz="UTC",
                         url_pattern="{shop_url}/discount/{code}", as_of=T0)
    assert (english["amount"], english["expires"]) == ("€5.00", "June 30, 2026")


def test_a_sent_mail_carries_the_stored_code_and_its_button_to_the_shop(
        app: App, tmp_path: Path, flow: Flow) -> None:
    with app.engine.begin() as conn:
        cid = decide(conn, flow, "sam", first_name="Sam")
        [offer] = offers_of(conn, cid)
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    [path] = app.settings.outbox_dir.glob("*/*.eml")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    button = f'href="{app.settings.shop_url}/discount/{offer.code}?utm_source=lifecycle&amp;'
    assert offer.code in html and button in html and "Use my code" in html
    assert f"{app.settings.shop_url}/discount/{offer.code}?utm_source=lifecycle&" in text
    with app.engine.connect() as conn:
        assert len(offers_of(conn)) == 1  # rendering and sending made no other


def test_previews_and_test_sends_make_no_offer_rows(app: App, flow: Flow) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "pre", T0 - timedelta(days=3))
        customer = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
        [shown] = preview_mails(conn, app.settings, flow, customer, T0)
        assert shown.mail is not None and "BACK10-TEST-CODE" in shown.mail.text
        assert offers_of(conn) == []
    web = TestClient(__import__("lifecycle.web.app", fromlist=["create_app"]).create_app(app))
    account(app, "max@shop.example", "manager")
    logged_in(web, "max@shop.example")
    page = web.get("/flows/win_back/preview", params={"customer": "pre"})
    nonce = page.text.split('name="nonce" value="')[1].split('"')[0]
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert web.post("/flows/win_back/test", follow_redirects=False, data={
        "csrf": csrf, "nonce": nonce, "step": "ten-percent", "template": "winback_2",
        "customer_id": str(cid), "customer": "pre"}).status_code == 303
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    [path] = app.settings.outbox_dir.glob("*/*.eml")
    assert b"BACK10-TEST-CODE" in path.read_bytes()
    with app.engine.connect() as conn:
        assert offers_of(conn) == [] and conn.execute(
            select(func.count()).select_from(OfferWebhook)).scalar_one() == 0


# --------------------------------------------------------------------------- webhooks


class Shop:
    """A shop's webhook endpoint on 127.0.0.1 that answers 503 to the first ``failures``
    posts, then 204; it keeps every post."""

    def __init__(self, failures: int, status: int = 503) -> None:
        self.failures = failures
        self.posts: list[tuple[dict[str, str], bytes]] = []
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                shop.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(shop.posts) <= shop.failures
                self.send_response(status if failing else 204)
                if failing and status in (301, 302, 307):
                    self.send_header("location", "/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/lifecycle"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shop() -> Iterator[Shop]:
    endpoint = Shop(failures=2)
    yield endpoint
    endpoint.close()


def hooked(app: App, url: str) -> App:
    return App(replace(app.settings, offer_webhook_url=url, offer_webhook_secret=SECRET),
               clock=app.clock)


def test_the_shop_is_told_of_each_code_by_a_signed_webhook_retried_until_it_takes_it(
        app: App, flow: Flow, shop: Shop) -> None:
    app = hooked(app, shop.url)
    clock = app.clock
    assert isinstance(clock, ManualClock)
    with app.engine.begin() as conn:
        cid = decide(conn, flow, "hook", notify=True, email="hook@example.com")
        [offer] = offers_of(conn, cid)
    outcomes = []
    for _ in range(3):
        outcomes.append(dict(webhooks.deliver(app, _due(app))))
        clock.advance(timedelta(hours=7))  # past the longest wait
    assert outcomes == [{"later": 1}, {"later": 1}, {"delivered": 1}]
    assert len(shop.posts) == 3
    ids = {headers["webhook-id"] for headers, _ in shop.posts}
    assert len(ids) == 1  # the same id on every attempt: the shop drops repeats by it
    for headers, body in shop.posts:
        event = Webhook(SECRET).verify(body, headers)  # the library's own check
        assert headers["webhook-signature"].startswith("v1,")
    assert event["type"] == "offer.created"
    assert event["data"] == {
        "code": offer.code, "kind": "percent", "value": "10", "currency": None,
        "expires_at": offer.expires_at.isoformat(), "created_at": T0.isoformat(),
        "flow": "back", "step": "ten-percent",
        "customer": {"id": "hook", "email": "hook@example.com"}}
    with app.engine.connect() as conn:
        row = conn.execute(select(OfferWebhook.__table__)).one()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    assert webhooks.deliver(app, [row.id]) == {"skipped": 1} and len(shop.posts) == 3
    tampered = dict(shop.posts[-1][0])
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(shop.posts[-1][1].replace(b"percent", b"fixed"), tampered)


def test_a_redirect_is_not_taken_for_delivered(app: App, flow: Flow) -> None:
    endpoint = Shop(failures=1, status=302)
    try:
        app = hooked(app, endpoint.url)
        with app.engine.begin() as conn:
            decide(conn, flow, "moved", notify=True)
        assert webhooks.deliver(app, _due(app)) == {"later": 1}
        with app.engine.connect() as conn:
            assert conn.execute(select(OfferWebhook.last_error)).scalar_one() == "HTTP 302"
        assert len(endpoint.posts) == 1  # not followed
    finally:
        endpoint.close()


def _due(app: App) -> list[int]:
    with app.engine.begin() as conn:
        return webhooks.hand_out(conn, app.clock.now())


def test_a_webhook_the_shop_never_takes_is_given_up_after_the_horizon_and_recorded(
        app: App, flow: Flow) -> None:
    endpoint = Shop(failures=10**6)
    try:
        app = hooked(app, endpoint.url)
        clock = app.clock
        assert isinstance(clock, ManualClock)
        with app.engine.begin() as conn:
            decide(conn, flow, "never", notify=True)
        results: list[str] = []
        while not results or results[-1] == "later":
            assert len(results) < 40
            [ident] = _due(app)
            [outcome] = webhooks.deliver(app, [ident])
            results.append(outcome)
            with app.engine.connect() as conn:
                clock.set(conn.execute(select(OfferWebhook.next_attempt_at)).scalar_one())
        with app.engine.connect() as conn:
            row = conn.execute(select(OfferWebhook.__table__)).one()
        assert row.status == "failed" and row.failed_at - T0 <= webhooks.HORIZON
        assert row.last_error.startswith(f"given up after {row.attempts} attempts in 3 days: "
                                         "HTTP 503")
        assert row.attempts == len(endpoint.posts) == len(results) and 8 <= row.attempts <= 25
        assert _due(app) == []
    finally:
        endpoint.close()


def test_the_scheduler_job_hands_webhooks_to_the_workers_and_not_without_a_url(
        app: App, flow: Flow, shop: Shop) -> None:
    with app.engine.begin() as conn:
        decide(conn, flow, "nourl")  # no URL set: no webhook row at all
    assert webhooks.dispatch(app, lambda ids: None) == 0
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OfferWebhook)).scalar_one() == 0
    app = hooked(app, shop.url)
    with app.engine.begin() as conn:
        decide(conn, flow, "url", notify=True)
    handed: list[list[int]] = []
    assert webhooks.dispatch(app, handed.append) == 1
    assert webhooks.dispatch(app, handed.append) == 0  # under its lease
    shop.failures = 0
    assert webhooks.deliver(app, handed[0]) == {"delivered": 1}


def test_webhook_settings_are_checked() -> None:
    base = {"LIFECYCLE_OFFER_WEBHOOK_URL": "https://shop.example/hooks"}
    with pytest.raises(ConfigError, match="LIFECYCLE_OFFER_WEBHOOK_SECRET must be set"):
        load_settings(base)
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_c2hvcnQ="):
        with pytest.raises(ConfigError, match="LIFECYCLE_OFFER_WEBHOOK_SECRET"):
            load_settings({**base, "LIFECYCLE_OFFER_WEBHOOK_SECRET": bad})
    with pytest.raises(ConfigError, match="LIFECYCLE_OFFER_WEBHOOK_URL"):
        load_settings({"LIFECYCLE_OFFER_WEBHOOK_URL": "ftp://x", "LIFECYCLE_OFFER_WEBHOOK_SECRET":
                       SECRET})
    good = load_settings({**base, "LIFECYCLE_OFFER_WEBHOOK_SECRET": SECRET})
    assert (good.offer_webhook_url, good.offer_webhook_secret) == (base[
        "LIFECYCLE_OFFER_WEBHOOK_URL"], SECRET)
    assert SECRET not in repr(good)


@pytest.mark.parametrize(("pattern", "problem"), [
    ("{shop_url}/discount", "must contain {code}"),
    ("{shop}/d/{code}", "placeholder {shop}"),
    ("{shop_url}/d/{code", "unmatched"),
    ("/discount/{code}", "not an http(s) URL"),
])
def test_the_offer_url_pattern_is_checked(pattern: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_settings({"LIFECYCLE_OFFER_URL": pattern})
    assert load_settings({"LIFECYCLE_OFFER_URL": "https://s.example/?c={code}"}).offer_url


# --------------------------------------------------------------------------- API and export


def three_offers(app: App, flow: Flow) -> list[Any]:
    with app.engine.begin() as conn:
        for n, name in enumerate(("a1", "a2", "a3")):
            decide(conn, flow, name, at=T0 + timedelta(days=n), email=f"{name}@example.com")
        return offers_of(conn)


def test_the_api_lists_offers_in_keyset_pages_with_filters(app: App, web: TestClient,
                                                           flow: Flow) -> None:
    made = three_offers(app, flow)
    with app.engine.begin() as conn:
        reader = {"Authorization": f"Bearer {create_key(conn, 'shop', ['offers:read'], T0)}"}
        writer = {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}
    assert web.get("/api/v1/offers").status_code == 401
    assert web.get("/api/v1/offers", headers=writer).status_code == 403
    first = web.get("/api/v1/offers", params={"limit": 2}, headers=reader).json()
    assert [o["code"] for o in first["offers"]] == [made[0].code, made[1].code]
    assert first["offers"][0] == {
        "id": made[0].id, "code": made[0].code, "kind": "percent", "value": "10",
        "currency": None, "customer_id": "a1", "email": "a1@example.com", "flow": "back",
        "step": "ten-percent", "message_id": made[0].message_id, "mail_status": "scheduled",
        "expires_at": made[0].expires_at.isoformat(), "created_at": T0.isoformat(),
        "redeemed_at": None, "redeemed_order_id": None}
    second = web.get("/api/v1/offers", params={"limit": 2, "cursor": first["next_cursor"]},
                     headers=reader).json()
    assert [o["code"] for o in second["offers"]] == [made[2].code]
    assert second["next_cursor"] is None
    since = web.get("/api/v1/offers", headers=reader,
                    params={"since": (T0 + timedelta(days=1)).isoformat()}).json()
    assert [o["code"] for o in since["offers"]] == [made[1].code, made[2].code]
    assert web.get("/api/v1/offers", params={"flow": "other"}, headers=reader).json() == {
        "offers": [], "next_cursor": None}
    web.post("/api/v1/orders", headers=writer, json=[{
        "order_id": "O1", "customer_id": "a2", "ordered_at": "2026-06-05T10:00:00Z",
        "total": "20.00", "discount_codes": [made[1].code]}])
    redeemed = web.get("/api/v1/offers", params={"redeemed": "true"}, headers=reader).json()
    assert [(o["code"], o["redeemed_order_id"]) for o in redeemed["offers"]] == [
        (made[1].code, "O1")]
    open_ = web.get("/api/v1/offers", params={"redeemed": "false"}, headers=reader).json()
    assert len(open_["offers"]) == 2
    for bad in ({"cursor": "x1"}, {"limit": 0}, {"since": "2026-06-01T00:00:00"},
                {"since": "0001-01-01T00:00:00+05:00"}, {"flow": "a b"}):
        assert web.get("/api/v1/offers", params=bad, headers=reader).status_code == 422


def test_the_export_writes_every_offer_as_csv_or_json_lines(cli_env: dict[str, str],
                                                            flow: Flow, tmp_path: Path) -> None:
    app = App(load_settings(cli_env))
    try:
        with app.engine.begin() as conn:
            for name in ("e1", "e2"):
                decide(conn, flow, name)
            made = offers_of(conn)
    finally:
        app.close()
    runner = CliRunner()
    out = runner.invoke(cli, ["offers", "export"], env=cli_env)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["code"] for r in rows] == [o.code for o in made]
    assert (rows[0]["customer_id"], rows[0]["kind"], rows[0]["value"], rows[0]["redeemed_at"]) \
        == ("e1", "percent", "10", "")
    target = tmp_path / "offers.jsonl"
    written = runner.invoke(cli, ["offers", "export", "--json", "--out", str(target),
                                  "--not-redeemed", "--flow", "back"], env=cli_env)
    assert written.exit_code == 0 and "2 offers written" in written.stderr
    lines = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
    assert [o["code"] for o in lines] == [o.code for o in made] and lines[1]["customer_id"] == "e2"
    none = runner.invoke(cli, ["offers", "export", "--redeemed"], env=cli_env)
    assert none.stdout.splitlines()[1:] == []
    bad = runner.invoke(cli, ["offers", "export", "--since", "someday"], env=cli_env)
    assert bad.exit_code != 0 and "--since" in bad.output


# --------------------------------------------------------------------------- redemption


def order(n: int, customer: str, codes: list[str], at: str = "2026-06-05T10:00:00Z",
          **more: Any) -> dict[str, Any]:
    return {"order_id": f"O{n}", "customer_id": customer, "ordered_at": at, "total": "30.00",
            "currency": "EUR", "discount_codes": codes, **more}


def test_an_order_with_the_code_redeems_it_once_on_the_timeline_and_in_flow_results(
        app: App, web: TestClient, flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    made = three_offers(app, flow)
    with app.engine.begin() as conn:
        headers = {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}
    code = made[0].code
    answer = web.post("/api/v1/orders", headers=headers, json=[
        order(1, "a1", [f"  {code.lower()} ", "SHOP-OWN-CODE"])])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["redeemed"], answer.json()["unknown_codes"]) == (1, 1)
    assert "SHOP-OWN-CODE" in caplog.text  # the unknown code: ignored, logged
    # posted again, and a second order with the same code: the first order keeps it
    web.post("/api/v1/orders", headers=headers, json=[order(1, "a1", [code])])
    web.post("/api/v1/orders", headers=headers, json=[
        order(2, "a2", [code], at="2026-06-06T10:00:00Z")])
    with app.engine.connect() as conn:
        [redeemed] = [o for o in offers_of(conn) if o.redeemed_at is not None]
        entries = conn.execute(select(Touchpoint.__table__).where(
            Touchpoint.kind == "offer_redeemed")).all()
        results = flow_results(conn, "back", T0 - timedelta(days=1), T0 + timedelta(days=5),
                               timedelta(days=7), sends=[("ten-percent", [None])])
    assert (redeemed.code, redeemed.redeemed_order_id) == (code, "O1")
    assert redeemed.redeemed_at == datetime(2026, 6, 5, 10, tzinfo=UTC)
    [entry] = entries
    assert (entry.customer_id, entry.message_id, entry.channel) == (
        made[0].customer_id, made[0].message_id, "shop")
    assert summary(entry.kind, entry.data) == (
        f"Used the offer code {code} (10% off) in order O1 — back/ten-percent")
    assert results.rows[0].counts["redeemed"] == 1 and results.total.counts["redeemed"] == 1


def test_a_code_used_after_its_expiry_is_recorded_as_redeemed_late(
        app: App, web: TestClient, flow: Flow) -> None:
    made = three_offers(app, flow)
    with app.engine.begin() as conn:
        headers = {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}
    late = (made[0].expires_at + timedelta(days=2)).isoformat()
    web.post("/api/v1/orders", headers=headers, json=[order(1, "a1", [made[0].code], at=late)])
    web.post("/api/v1/orders", headers=headers, json=[
        order(2, "a2", [made[1].code], status="cancelled")])  # a cancelled order used nothing
    with app.engine.connect() as conn:
        offers = offers_of(conn)
        [entry] = conn.execute(select(Touchpoint.__table__).where(
            Touchpoint.kind == "offer_redeemed")).all()
    assert offers[0].redeemed_order_id == "O1" and offers[1].redeemed_at is None
    assert entry.data["late"] is True and summary(entry.kind, entry.data).endswith(
        "in order O1 after it had expired — back/ten-percent")


def test_an_order_placed_before_the_code_was_handed_out_redeems_nothing(
        app: App, web: TestClient, flow: Flow) -> None:
    made = three_offers(app, flow)
    with app.engine.begin() as conn:
        headers = {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}
    before = (made[0].created_at - timedelta(days=30)).isoformat()
    answer = web.post("/api/v1/orders", headers=headers, json=[
        order(1, "a1", [made[0].code], at=before)])
    assert (answer.json()["redeemed"], answer.json()["unknown_codes"]) == (0, 1)
    web.post("/api/v1/orders", headers=headers, json=[order(2, "a1", [made[0].code])])
    with app.engine.connect() as conn:
        assert offers_of(conn)[0].redeemed_order_id == "O2"  # the owner's later order


def test_an_imported_order_with_a_discount_codes_column_redeems(
        cli_env: dict[str, str], flow: Flow, tmp_path: Path) -> None:
    app = App(load_settings(cli_env))
    try:
        with app.engine.begin() as conn:
            decide(conn, flow, "imp")
            [made] = offers_of(conn)
        path = tmp_path / "orders.csv"
        path.write_text("order_id,customer_id,ordered_at,total,currency,discount_codes\n"
                        f'I1,imp,2026-06-04T09:00:00Z,12.00,EUR,"WELCOME, {made.code}"\n'
                        "I2,imp,2026-06-04T10:00:00Z,12.00,EUR,\n"
                        "I3,imp,2026-06-04T11:00:00Z,12.00,EUR,not a code!\n", encoding="utf-8")
        result = CliRunner().invoke(cli, ["import", "orders", str(path)], env=cli_env)
        assert "orders.csv:4: discount_codes[3] 'code!' is not a discount code" in result.output
        assert "Offer codes: 1 redeemed, 1 unknown (ignored)" in result.output
        with app.engine.connect() as conn:
            [offer] = offers_of(conn)
            kinds = conn.execute(select(Touchpoint.kind, Touchpoint.channel).where(
                Touchpoint.kind == "offer_redeemed")).all()
    finally:
        app.close()
    assert offer.redeemed_order_id == "I1" and kinds == [("offer_redeemed", "import")]


def test_a_bad_discount_code_is_refused_with_its_item_and_field(
        app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        headers = {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}
    answer = web.post("/api/v1/orders", headers=headers,
                      json=[order(1, "z1", ["ok-code"]), order(2, "z1", ["no spaces"])])
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", 1, "discount_codes"]


def test_the_flow_results_page_has_a_redeemed_column(app: App, web: TestClient,
                                                     flow: Flow, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    for name in ("segments.yaml", "policies.yaml"):
        (flows / name).write_text((ROOT / "flows" / name).read_text("utf-8"), "utf-8")
    (flows / "back.yaml").write_text((tmp_path / "back.yaml").read_text("utf-8"), "utf-8")
    app = App(replace(app.settings, flows_dir=flows), clock=app.clock)
    made = three_offers(app, flow)
    app.clock.advance(timedelta(days=3))  # type: ignore[attr-defined]
    with app.engine.begin() as conn:
        headers = {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}
    web = TestClient(__import__("lifecycle.web.app", fromlist=["create_app"]).create_app(app))
    web.post("/api/v1/orders", headers=headers, json=[
        order(1, "a1", [made[0].code]), order(2, "a3", [made[2].code], at="2026-06-06T10:00:00Z")])
    account(app, "max@shop.example", "manager")
    page = logged_in(web, "max@shop.example").get("/flows/back", params={"days": 30}).text
    figures = all_steps(page)
    assert figures["decided"] == 3 and figures["redeemed"] == 2


def test_a_customers_codes_are_in_their_export_and_erasure_stops_their_webhooks(
        app: App, flow: Flow, shop: Shop) -> None:
    from lifecycle.privacy import erase, export

    app = hooked(app, shop.url)
    with app.engine.begin() as conn:
        cid = decide(conn, flow, "gone", notify=True, email="gone@example.com")
        customer = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
        [offer] = offers_of(conn, cid)
        assert [o["code"] for o in export(conn, customer)["offers"]] == [offer.code]
        assert erase(conn, customer, T0)["offer_webhooks"] == 1
        hook = conn.execute(select(OfferWebhook.__table__)).one()
    assert (hook.status, hook.payload, hook.last_error) == (
        "failed", {"erased": True}, "the customer was erased")
    assert _due(app) == [] and webhooks.deliver(app, [hook.id]) == {"skipped": 1}
    assert shop.posts == []


# --------------------------------------------------------------------------- security review


def _malformed_shop() -> Any:
    """A listener that answers every post with a line that is no HTTP status line."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve() -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(b"HELLO\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_a_malformed_answer_from_the_shop_is_a_recorded_failed_attempt_and_the_batch_goes_on(
        app: App, flow: Flow) -> None:
    srv = _malformed_shop()
    try:
        app = hooked(app, f"http://127.0.0.1:{srv.getsockname()[1]}/")
        with app.engine.begin() as conn:
            for name in ("h1", "h2", "h3"):
                decide(conn, flow, name, notify=True)
        assert webhooks.deliver(app, _due(app)) == {"later": 3}
    finally:
        srv.close()
    with app.engine.connect() as conn:
        rows = conn.execute(select(OfferWebhook.status, OfferWebhook.attempts,
                                   OfferWebhook.last_error)).all()
    assert [(r.status, r.attempts) for r in rows] == [("pending", 1)] * 3
    assert all(r.last_error.startswith("BadStatusLine") for r in rows), rows


def test_a_poster_that_raises_is_recorded_as_a_failed_attempt(app: App, flow: Flow) -> None:
    app = hooked(app, "http://127.0.0.1:9/")
    with app.engine.begin() as conn:
        for name in ("r1", "r2"):
            decide(conn, flow, name, notify=True)

    def boom(url: str, body: bytes, headers: dict[str, str]) -> str | None:
        raise RuntimeError("unexpected")

    assert webhooks.deliver(app, _due(app), poster=boom) == {"later": 2}
    with app.engine.connect() as conn:
        assert conn.execute(select(OfferWebhook.last_error)).scalars().all() == [
            "RuntimeError: unexpected"] * 2


def test_the_csv_export_puts_a_quote_before_a_cell_a_spreadsheet_would_run_as_a_formula(
        cli_env: dict[str, str], flow: Flow) -> None:
    evil = "=cmd|'/Ccalc'!A0@example.com"
    app = App(load_settings(cli_env))
    try:
        with app.engine.begin() as conn:
            decide(conn, flow, "+HYPERLINK", email=evil)
            decide(conn, flow, "plain")
    finally:
        app.close()
    out = CliRunner().invoke(cli, ["offers", "export"], env=cli_env)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert (rows[0]["email"], rows[0]["customer_id"]) == ("'" + evil, "'+HYPERLINK")
    assert rows[1]["customer_id"] == "plain"
    from lifecycle.cli.offers import csv_cell
    assert [csv_cell(v) for v in ("-1", "@x", "\tx", "\rx", "a=b", None, 5)] == [
        "'-1", "'@x", "'\tx", "'\rx", "a=b", "", "5"]
    as_json = CliRunner().invoke(cli, ["offers", "export", "--json"], env=cli_env)
    assert json.loads(as_json.stdout.splitlines()[0])["email"] == evil  # JSON is data, as it is


def _writer(app: App) -> dict[str, str]:
    with app.engine.begin() as conn:
        return {"Authorization": f"Bearer {create_key(conn, 'w', ['orders:write'], T0)}"}


def test_another_customers_order_redeems_nothing_and_the_owner_can_still_use_the_code(
        app: App, web: TestClient, flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    made = three_offers(app, flow)
    code, headers = made[0].code, _writer(app)  # a1's code, passed on to a2
    stranger = web.post("/api/v1/orders", headers=headers, json=[order(1, "a2", [code])]).json()
    assert (stranger["redeemed"], stranger["codes_not_theirs"], stranger["unknown_codes"]) == (
        0, 1, 0)
    assert f"Order O1 used the code {code}, which a mail handed to another customer" in caplog.text
    with app.engine.connect() as conn:
        assert offers_of(conn)[0].redeemed_at is None
        assert conn.execute(select(func.count()).select_from(Touchpoint).where(
            Touchpoint.kind == "offer_redeemed")).scalar_one() == 0
    own = web.post("/api/v1/orders", headers=headers,
                   json=[order(2, "a1", [code], at="2026-06-06T10:00:00Z")]).json()
    assert (own["redeemed"], own["codes_not_theirs"]) == (1, 0)
    with app.engine.connect() as conn:
        assert offers_of(conn)[0].redeemed_order_id == "O2"
        [entry] = conn.execute(select(Touchpoint.customer_id, Touchpoint.message_id).where(
            Touchpoint.kind == "offer_redeemed")).all()
    assert tuple(entry) == (made[0].customer_id, made[0].message_id)


def test_a_redemption_is_taken_back_when_its_order_is_cancelled_or_refunded(
        app: App, web: TestClient, flow: Flow) -> None:
    made = three_offers(app, flow)
    code, headers = made[0].code, _writer(app)
    web.post("/api/v1/orders", headers=headers, json=[order(1, "a1", [code], status="pending")])
    cancelled = web.post("/api/v1/orders", headers=headers,
                         json=[order(1, "a1", [], status="cancelled")]).json()
    assert cancelled["redemptions_undone"] == 1
    with app.engine.connect() as conn:
        assert offers_of(conn)[0].redeemed_at is None
    again = web.post("/api/v1/orders", headers=headers,
                     json=[order(2, "a1", [code], at="2026-06-07T10:00:00Z")]).json()
    assert again["redeemed"] == 1
    refunded = web.post("/api/v1/orders", headers=headers,
                        json=[order(2, "a1", [code], at="2026-06-07T10:00:00Z",
                                    status="refunded")]).json()
    assert refunded["redemptions_undone"] == 1
    web.post("/api/v1/orders", headers=headers, json=[order(2, "a1", [], status="refunded")])
    with app.engine.connect() as conn:
        assert offers_of(conn)[0].redeemed_at is None
        entries = conn.execute(select(Touchpoint.kind, Touchpoint.data).where(
            Touchpoint.kind.in_(("offer_redeemed", "offer_redemption_undone")))
            .order_by(Touchpoint.id)).all()
    assert [(kind, data["order_id"]) for kind, data in entries] == [
        ("offer_redeemed", "O1"), ("offer_redemption_undone", "O1"),
        ("offer_redeemed", "O2"), ("offer_redemption_undone", "O2")]
    assert summary(entries[1].kind, entries[1].data) == (
        f"The offer code {code} is open again: order O1 was cancelled or refunded "
        "— back/ten-percent")


def test_an_imported_cancellation_takes_the_redemption_back(
        cli_env: dict[str, str], flow: Flow, tmp_path: Path) -> None:
    app = App(load_settings(cli_env))
    try:
        with app.engine.begin() as conn:
            decide(conn, flow, "imp")
            [made] = offers_of(conn)
        path = tmp_path / "orders.csv"
        head = "order_id,customer_id,ordered_at,total,currency,status,discount_codes\n"
        path.write_text(head + f"I1,imp,2026-06-04T09:00:00Z,12.00,EUR,pending,{made.code}\n",
                        encoding="utf-8")
        CliRunner().invoke(cli, ["import", "orders", str(path)], env=cli_env)
        path.write_text(head + "I1,imp,2026-06-04T09:00:00Z,12.00,EUR,cancelled,\n",
                        encoding="utf-8")
        result = CliRunner().invoke(cli, ["import", "orders", str(path)], env=cli_env)
        assert "1 taken back (their" in " ".join(result.output.split()), result.output
        with app.engine.connect() as conn:
            [offer] = offers_of(conn)
    finally:
        app.close()
    assert offer.redeemed_at is None and offer.redeemed_order_id is None


def test_the_referral_link_names_the_customer_by_a_signed_id_not_the_offer_code(
        app: App, flow: Flow) -> None:
    from lifecycle.links import verify
    from lifecycle.mail.context import links, referral_id

    refs = {cid: links(app.settings, cid, 1)["referral"] for cid in (12, *range(120, 130))}
    ids = {cid: re.search(r"[?&]ref=([^&#]+)", url).group(1)  # type: ignore[union-attr]
           for cid, url in refs.items()}
    assert len(set(ids.values())) == len(ids)  # 12 and 120–129 no longer share a prefix
    assert all(verify(app.settings.secret_key, "referral", ref)["c"] == cid
               for cid, ref in ids.items())
    assert links(app.settings, 12, 2)["referral"] == refs[12]  # the same in every mail
    with app.engine.begin() as conn:
        cid = decide(conn, flow, "refer")
        [made] = offers_of(conn, cid)
        [mail] = conn.execute(select(Message).where(Message.customer_id == cid)).all()
        customer = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
        context = build_context(conn, app.settings, customer, as_of=T0, message_id=mail.id,
                                flow="back", step="ten-percent", offer=mail.context["offer"])
    assert context["offer"]["code"] == made.code and made.code not in context["links"]["referral"]
    assert context["links"]["referral"].startswith(
        f"{app.settings.shop_url}/?ref={referral_id(app.settings.secret_key, cid)}&utm_source=")


def _trickling_shop(pause: float) -> Any:
    """A listener that answers a status line, then one header every ``pause`` seconds."""
    import socket
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def answer(client: Any) -> None:
        with client:
            try:
                client.recv(65536)
                client.sendall(b"HTTP/1.1 200 OK\r\n")
                for n in range(40):
                    time.sleep(pause)
                    client.sendall(f"x-slow-{n}: 1\r\n".encode())
                client.sendall(b"content-length: 0\r\n\r\n")
            except OSError:
                return

    def serve() -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(client,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_a_shop_that_trickles_its_answer_is_cut_off_after_the_timeout_in_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(webhooks, "TIMEOUT", 1.0)
    srv = _trickling_shop(0.3)  # each read well within 1 s, the answer 12 s long
    try:
        started = time.monotonic()
        error = webhooks.post(f"http://127.0.0.1:{srv.getsockname()[1]}/", b"{}", {})
        took = time.monotonic() - started
    finally:
        srv.close()
    assert error == "no whole answer within 1 seconds" and took < 2.5, (error, took)


def test_the_webhook_actor_has_its_own_queue_every_worker_consumes_and_ends_within_its_lease(
        ) -> None:
    import dramatiq

    from lifecycle.offers.tasks import notify
    from lifecycle.tasks import broker as broker_module
    from lifecycle.tasks import load_actors

    assert notify.queue_name == webhooks.QUEUE == "webhooks"
    assert notify.options["time_limit"] < webhooks.LEASE.total_seconds() * 1000
    assert webhooks.BATCH_SECONDS * 1000 < notify.options["time_limit"]
    load_actors()
    built = broker_module.setup(None)  # the in-process broker of `lifecycle run`
    worker = dramatiq.Worker(built, worker_threads=1)
    worker.start()
    try:
        assert {"default", "webhooks"} <= set(worker.consumers)
    finally:
        worker.stop()
        broker_module.install(broker_module.build(None))


def test_a_worker_whose_posting_threads_are_busy_gives_the_webhooks_back_at_once(
        app: App, flow: Flow, shop: Shop) -> None:
    app = hooked(app, shop.url)
    with app.engine.begin() as conn:
        decide(conn, flow, "busy", notify=True)
    ids = _due(app)
    assert _due(app) == []  # under its lease
    held = [webhooks._posting.acquire(blocking=False) for _ in range(webhooks.POSTING_THREADS)]
    try:
        assert all(held)
        assert webhooks.deliver_limited(app, ids) == {"busy": 1}
    finally:
        for _ in held:
            webhooks._posting.release()
    assert _due(app) == ids and shop.posts == []  # due again at once, nothing posted
    shop.failures = 0
    assert webhooks.deliver_limited(app, ids) == {"delivered": 1}
