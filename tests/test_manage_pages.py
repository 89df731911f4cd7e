"""Staff pages past the timeline: roles on every route, the customer's standing, sent mails,
flow results, previews and test sends, segments, and the admin pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from html import escape
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from lifecycle.app import App
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import (
    ApiKey,
    FlowEnrollment,
    Message,
    MessageContent,
    SegmentMembership,
    StaffUser,
    Touchpoint,
)
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import segment_words
from lifecycle.segments.service import definitions
from lifecycle.timeutil import as_utc, zone
from lifecycle.web.app import create_app
from tests.factories import WEB_T0 as T0
from tests.factories import account, add_campaign, add_customer, csrf_of, logged_in

#: Every staff route, with the least role it needs ({c}: a customer, {m}: a mail,
#: {s}: a staff account, {k}: an API key prefix, {f}: a flow, {g}: a segment).
ROUTES = [
    ("GET", "/customers", "support"),
    ("GET", "/customers/{x}", "support"),  # x: the shop's customer id (or row id)
    ("GET", "/customers/{c}/mails/{m}", "support"),
    ("POST", "/customers/{c}/mails/{m}/pause", "support"),
    ("POST", "/customers/{c}/notes", "support"),
    ("GET", "/flows", "manager"),
    ("GET", "/flows/{f}", "manager"),
    ("GET", "/flows/{f}/preview", "manager"),
    ("POST", "/flows/{f}/test", "manager"),
    ("POST", "/flows/{f}/status", "manager"),
    ("GET", "/segments", "manager"),
    ("GET", "/segments/{g}", "manager"),
    ("GET", "/segments/{g}/members.csv", "manager"),
    ("GET", "/catalog", "manager"),
    ("GET", "/campaigns", "manager"),
    ("GET", "/campaigns/new", "manager"),
    ("POST", "/campaigns/new", "manager"),
    ("GET", "/campaigns/{f}", "manager"),
    ("GET", "/campaigns/{f}/edit", "manager"),
    ("POST", "/campaigns/{f}/edit", "manager"),
    ("POST", "/campaigns/{f}/test", "manager"),
    ("POST", "/campaigns/{f}/pause", "manager"),
    ("GET", "/admin/staff", "admin"),
    ("POST", "/admin/staff", "admin"),
    ("POST", "/admin/staff/{s}", "admin"),
    ("GET", "/admin/apikeys", "admin"),
    ("POST", "/admin/apikeys", "admin"),
    ("POST", "/admin/apikeys/{k}/revoke", "admin"),
]
STAFF_PREFIXES = ("/customers", "/flows", "/campaigns", "/segments", "/catalog", "/admin")


def sent_mail(app: App) -> tuple[int, int]:
    """A customer with a thank-you mail sent through the file transport: (customer, mail)."""
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    return int(cid), int(mid)


def test_every_staff_route_is_in_the_role_table(app: App) -> None:
    listed = {(method, path.format(c="{customer_id}", m="{message_id}", s="{staff_id}",
                                   k="{prefix}", f="{name}", x="{key:path}", g="{name}"))
              for method, path, _ in ROUTES}
    found = {(method, route.path) for route in _flat(create_app(app).routes)
             for method in getattr(route, "methods", None) or ()
             if route.path.startswith(STAFF_PREFIXES) and method != "HEAD"}
    # pause, resume and cancel share one route; the table names pause
    found.discard(("POST", "/customers/{customer_id}/mails/{message_id}/{action}"))
    listed.discard(("POST", "/customers/{customer_id}/mails/{message_id}/pause"))
    # as do a campaign's schedule, pause, resume and cancel
    found.discard(("POST", "/campaigns/{name}/{action}"))
    listed.discard(("POST", "/campaigns/{name}/pause"))
    assert found == listed


def _flat(routes: list[Any]) -> Iterator[Any]:
    """Every route, also those of included routers (FastAPI keeps those apart)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _flat(inner.routes) if inner is not None else (route,)


def test_each_role_is_refused_every_page_and_action_above_it(app: App, web: TestClient) -> None:
    cid, mid = sent_mail(app)
    ids = {"support": account(app, "sue@shop.example", "support"),
           "manager": account(app, "max@shop.example", "manager"),
           "admin": account(app, "ada@shop.example", "admin")}
    with app.engine.begin() as conn:
        from lifecycle.apikeys import create_key

        prefix = create_key(conn, "shop", ["orders:write"], T0).split("_")[1]
    before = _state(app)
    for method, template, needed in ROUTES:
        path = template.format(c=cid, m=mid, s=ids["support"], k=prefix, f="thank_you", x=cid,
                               g="new")
        anonymous = TestClient(web.app).request(method, path, follow_redirects=False)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith(
            "/login"), path
        for role in ("support", "manager"):
            if role == needed or (role, needed) == ("manager", "support"):
                continue
            client = logged_in(TestClient(web.app), f"{_name(role)}@shop.example")
            csrf = csrf_of(client.get("/customers").text)
            answer = client.request(method, path, data={"csrf": csrf, "note": "x",
                                                        "role": "admin", "name": "k",
                                                        "scope": "orders:write"}
                                    if method == "POST" else None, follow_redirects=False)
            assert answer.status_code == 403, (role, method, path)
    assert _state(app) == before  # nothing a refused request asked for happened


def _name(role: str) -> str:
    return {"support": "sue", "manager": "max", "admin": "ada"}[role]


def _state(app: App) -> tuple[object, ...]:
    with app.engine.connect() as conn:
        return (conn.execute(select(Message.status).order_by(Message.id)).all(),
                conn.execute(select(func.count()).select_from(Touchpoint)).scalar_one(),
                conn.execute(select(StaffUser.role, StaffUser.is_active)
                             .order_by(StaffUser.id)).all(),
                conn.execute(select(ApiKey.revoked_at, func.count()).group_by(
                    ApiKey.revoked_at)).all())


def test_the_customer_page_shows_metrics_rfm_stage_badges_and_active_flows(
        app: App, web: TestClient) -> None:
    cid, _mid = sent_mail(app)
    with app.engine.begin() as conn:
        refresh_all(conn, definitions(app), T0, T0)
        conn.execute(insert(FlowEnrollment).values(
            customer_id=cid, flow="feedback_request", entry_key="fr:1", status="active",
            current_step="ask", next_run_at=T0 + timedelta(days=5), enrolled_at=T0,
            context={}))
        entered = conn.execute(select(SegmentMembership.segment, SegmentMembership.entered_at)
                               .where(SegmentMembership.customer_id == cid,
                                      SegmentMembership.exited_at.is_(None))).all()
    account(app, "sue@shop.example", "support")
    page = logged_in(web, "sue@shop.example").get(f"/customers/{cid}").text
    assert "Retention stage</th><td>New" in page
    # the order was paid in EUR, the shop reports in USD: kept apart, never added in
    assert "1 · spent $0.00 in all" in page and "R " in page and "F " in page
    assert "also €42.50 in 1 order paid in EUR, kept apart" in page
    tz = zone(page.split("time zone ")[1].split(" ")[0])
    for segment, at in entered:
        assert escape(f"{segment_words(segment)} since {as_utc(at).astimezone(tz):%Y-%m-%d}") \
            in page
    assert "feedback_request</td><td>ask" in page


def test_a_sent_mail_opens_as_it_went_out_with_its_history(app: App, web: TestClient) -> None:
    cid, mid = sent_mail(app)
    with app.engine.connect() as conn:
        content = conn.execute(select(MessageContent).where(
            MessageContent.message_id == mid)).one()
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example")
    timeline = web.get(f"/customers/{cid}").text
    assert f'href="/customers/{cid}/mails/{mid}"' in timeline
    page = web.get(f"/customers/{cid}/mails/{mid}")
    assert page.status_code == 200 and escape(content.subject) in page.text
    assert 'sandbox srcdoc="' in page.text and "&lt;html" in page.text.lower()
    assert "Hi Sam," in page.text and "List-Unsubscribe" in page.text
    assert web.get(f"/customers/{cid + 1}/mails/{mid}").status_code == 404


def test_flow_results_page_shows_steps_and_a_chart(app: App, web: TestClient) -> None:
    sent_mail(app)
    account(app, "max@shop.example", "manager")
    logged_in(web, "max@shop.example")
    page = web.get("/flows/thank_you", params={"days": 30, "window": 3})
    assert page.status_code == 200
    assert "<svg" in page.text and 'role="img"' in page.text
    assert '<th scope="row">thanks</th><td>—</td>' in page.text
    assert 'name="window" type="number" min="0.01" max="365" step="any" value="3"' in page.text
    assert web.get("/flows/no_such_flow").status_code == 404


def test_a_manager_previews_a_flow_and_sends_one_test_to_themselves(
        app: App, web: TestClient) -> None:
    cid, _mid = sent_mail(app)
    account(app, "max@shop.example", "manager")
    logged_in(web, "max@shop.example")
    page = web.get("/flows/thank_you/preview", params={"customer": "b0"})
    assert page.status_code == 200 and "Send a test to me" in page.text and "Hi Sam" in page.text
    assert "No customer" in web.get("/flows/thank_you/preview",
                                    params={"customer": "nobody"}).text
    nonce = page.text.split('name="nonce" value="')[1].split('"')[0]
    form = {"csrf": csrf_of(page.text), "nonce": nonce, "step": "thanks",
            "template": "thank_you", "customer_id": str(cid), "customer": "b0"}
    for _ in range(2):  # a double click
        assert web.post("/flows/thank_you/test", data=form,
                        follow_redirects=False).status_code == 303
    with app.engine.connect() as conn:
        [test] = conn.execute(select(Message.__table__).where(Message.flow.is_(None))).all()
        timeline_before = conn.execute(select(func.count()).select_from(Touchpoint)).scalar_one()
    assert test.to_email == "max@shop.example" and test.context["test"] == "max@shop.example"
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Touchpoint)).scalar_one() \
            == timeline_before  # not on the customer's timeline
    wrong = dict(form, template="winback_1")
    assert web.post("/flows/thank_you/test", data=wrong).status_code == 404


def test_the_segments_page_lists_sizes_now_and_over_time(app: App, web: TestClient) -> None:
    sent_mail(app)
    with app.engine.begin() as conn:
        refresh_all(conn, definitions(app), T0 - timedelta(days=2), T0 - timedelta(days=2))
    account(app, "max@shop.example", "manager")
    page = logged_in(web, "max@shop.example").get("/segments", params={"days": 7})
    assert page.status_code == 200 and "<svg" in page.text
    assert ('<td><a href="/segments/new">New</a> <code class="note">new</code></td>'
            '<td>retention</td><td class="n">1</td>') in page.text  # in words, with the name
    assert "Can&#39;t lose them (RFM)</a> <code" in page.text  # flows use
    assert ">RFM segments</h3>" in page.text and "Rfm" not in page.text  # the chart's heading


def test_an_admin_adds_staff_changes_roles_and_manages_api_keys(app: App,
                                                                web: TestClient) -> None:
    me = account(app, "ada@shop.example", "admin")
    logged_in(web, "ada@shop.example")
    csrf = csrf_of(web.get("/admin/staff").text)
    short = web.post("/admin/staff", data={"csrf": csrf, "email": "new@shop.example",
                                           "role": "support", "password": "short"})
    assert short.status_code == 422 and "at least 12 characters" in short.text
    web.post("/admin/staff", data={"csrf": csrf, "email": "new@shop.example",
                                   "role": "support", "password": "a long enough one"})
    with app.engine.connect() as conn:
        new = conn.execute(select(StaffUser.id).where(
            StaffUser.email == "new@shop.example")).scalar_one()
    web.post(f"/admin/staff/{new}", data={"csrf": csrf, "role": "manager"})
    web.post(f"/admin/staff/{new}", data={"csrf": csrf, "active": "no"})
    assert web.post(f"/admin/staff/{me}", data={"csrf": csrf, "active": "no"}).status_code == 422
    with app.engine.connect() as conn:
        assert conn.execute(select(StaffUser.role, StaffUser.is_active).where(
            StaffUser.id == new)).one() == ("manager", False)
    made = web.post("/admin/apikeys", data={"csrf": csrf, "name": "shop",
                                            "scope": ["orders:write", "customers:write"]})
    key = made.text.split('<pre class="mail">')[1].split("</pre>")[0]
    assert key.startswith("lc_") and made.headers["cache-control"] == "no-store"
    assert key not in web.get("/admin/apikeys").text  # shown once
    prefix = key.split("_")[1]
    web.post(f"/admin/apikeys/{prefix}/revoke", data={"csrf": csrf})
    with app.engine.connect() as conn:
        assert conn.execute(select(ApiKey.revoked_at).where(ApiKey.prefix == prefix)) \
            .scalar_one() is not None
    nothing = web.post("/admin/apikeys", data={"csrf": csrf, "name": "x"})
    assert nothing.status_code == 422


def test_pages_forbid_scripts_and_framing(app: App, web: TestClient) -> None:
    cid, mid = sent_mail(app)
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example")
    for path in ("/login", f"/customers/{cid}", f"/customers/{cid}/mails/{mid}"):
        headers = web.get(path).headers
        assert "script-src 'none'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY", path
    assert "content-security-policy" not in web.get("/healthz").headers  # JSON, not a page


def test_flow_results_put_ab_variants_side_by_side(app: App, web: TestClient) -> None:
    from tests.test_flow_results import mail

    with app.engine.begin() as conn:
        cid = add_customer(conn, "ab", T0 - timedelta(days=400))
        for days, variant in enumerate(("winback_1", "winback_2", "winback_2"), start=1):
            mail(conn, cid, "win_back", "miss-you", variant, T0 - timedelta(days=days))
    account(app, "max@shop.example", "manager")
    page = logged_in(web, "max@shop.example").get("/flows/win_back").text
    assert "Per step and A/B variant" in page
    first = page.index('<th scope="row">miss-you</th><td>winback_1</td>')
    second = page.index('<th scope="row">miss-you</th><td>winback_2</td>')
    assert first < second
    assert '<td>winback_2</td>\n        <td class="n">2</td><td class="n">2</td>' in page


def test_broken_segment_definitions_name_the_problem_and_keep_the_timeline(
        app: App, tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace

    cid, _mid = sent_mail(app)
    flows = tmp_path / "flows"
    shutil.copytree(app.settings.flows_dir, flows)
    (flows / "segments.yaml").write_text("rfm:\n  grid: [not, a, grid\n", encoding="utf-8")
    broken = App(replace(app.settings, flows_dir=flows), clock=app.clock)
    account(broken, "max@shop.example", "manager")
    web = logged_in(TestClient(create_app(broken)), "max@shop.example")
    page = web.get(f"/customers/{cid}")
    assert page.status_code == 200 and "segment definitions have problems" in page.text
    assert "segments.yaml" in page.text and "Mail sent:" in page.text  # the timeline is there
    segments = web.get("/segments")
    assert segments.status_code == 422 and "segments.yaml" in segments.text
    broken.close()
