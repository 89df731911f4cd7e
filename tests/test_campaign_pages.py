"""The campaign pages for managers: the list, the form (every problem beside its field, what
was typed kept), a campaign's page (audience and who is left out, preview, test send, history)
and its actions (schedule, pause, resume, cancel), each refused in words when it cannot be."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from lifecycle.app import App
from lifecycle.campaigns.jobs import tick
from lifecycle.campaigns.model import Campaign, CampaignChange
from lifecycle.models import Message, SegmentMembership, Suppression, email_hash
from lifecycle.web.linked import MAX_SEARCH
from tests.factories import account, add_customer, csrf_of, daytime_zone, logged_in

FORM = {"name": "spring", "description": "The spring collection", "kind": "marketing",
        "template": "vip_early_access", "segments": ["vip"], "schedule": "now",
        "throttle": "none"}


def vips(app: App, n: int, **values: object) -> list[int]:
    """``n`` customers in the segment vip, where it is day now; their ids."""
    now = app.clock.now()
    ids = []
    with app.engine.begin() as conn:
        for i in range(n):
            cid = add_customer(conn, f"v{i}", now - timedelta(days=90),
                               timezone=daytime_zone(now), **values)
            conn.execute(insert(SegmentMembership).values(
                customer_id=cid, segment="vip", entered_at=now, reason={}))
            ids.append(cid)
    return ids


def manager(app: App, web: TestClient) -> tuple[TestClient, str]:
    account(app, "max@shop.example", "manager")
    client = logged_in(web, "max@shop.example")
    return client, csrf_of(client.get("/campaigns/new").text)


def text_of(html: str) -> str:
    """The page's text, tags out and spaces folded (what a reader sees, roughly)."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def created(app: App, web: TestClient, **changes: object) -> tuple[TestClient, str]:
    client, csrf = manager(app, web)
    answer = client.post("/campaigns/new", data={**FORM, **changes, "csrf": csrf},
                         follow_redirects=False)
    assert answer.status_code == 303, text_of(answer.text)
    return client, csrf


def status_of(app: App, name: str = "spring") -> str:
    with app.engine.connect() as conn:
        return str(conn.execute(select(Campaign.status).where(Campaign.name == name))
                   .scalar_one())


def test_a_manager_creates_a_draft_in_the_form_and_it_is_listed(app: App, web: TestClient
                                                                ) -> None:
    client, csrf = manager(app, web)
    answer = client.post("/campaigns/new", data={**FORM, "csrf": csrf, "exclude": ["lapsed"],
                                                 "throttle": "per_hour", "per_hour": "500"},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == \
        "/campaigns/spring?done=create"
    with app.engine.connect() as conn:
        row = conn.execute(select(Campaign.__table__)).one()
    assert (row.status, row.source, row.created_by) == ("draft", "web", "max@shop.example")
    assert row.spec == {"kind": "marketing", "description": "The spring collection",
                        "send": {"template": "vip_early_access"},
                        "audience": {"segments": ["vip"], "exclude": ["lapsed"]},
                        "throttle": {"per_hour": 500}}
    listed = text_of(client.get("/campaigns").text)
    assert "spring draft marketing vip — minus lapsed as soon as it is scheduled" in listed
    assert "max@shop.example web 2026-06-03 12:00" in listed
    assert "The draft was saved." in text_of(client.get(answer.headers["location"]).text)


def test_the_staff_navigation_links_the_campaigns_for_managers_only(app: App, web: TestClient
                                                                    ) -> None:
    client, _ = manager(app, web)
    assert '<a href="/campaigns">Campaigns</a>' in client.get("/flows").text
    account(app, "sue@shop.example", "support")
    support = logged_in(TestClient(web.app), "sue@shop.example")
    assert 'href="/campaigns"' not in support.get("/customers").text


def test_every_problem_of_the_form_is_shown_beside_its_field_and_what_was_typed_is_kept(
        app: App, web: TestClient) -> None:
    client, csrf = manager(app, web)
    answer = client.post("/campaigns/new", data={
        "csrf": csrf, "name": "Spring Sale", "description": "typed by hand",
        "template": "no_such_template", "segments": ["vip", "vipp"],
        "where": "{metric: {name: total_spend, op: '>=', value: [}", "schedule": "local_time",
        "local_time": "25:99", "throttle": "over", "over": "a fortnight or so"})
    assert answer.status_code == 422
    page = answer.text
    assert "The campaign was not saved: 6 problems, shown beside their fields." in text_of(
        page), re.findall(r"class=\"error\"[^>]*>[^<]*<", page)
    for name, words in [("name", "lower_case letters, digits"),
                        ("template", "no_such_template"),
                        ("segments", "unknown segment 'vipp' (did you mean 'vip'?)"),
                        ("where", "line 1, column"), ("schedule", "25:99"),
                        ("throttle", "a fortnight or so")]:
        problem = re.search(rf'<p class="error" id="{name}-problem-1">([^<]*)</p>', page)
        assert problem is not None and words in unescape(problem.group(1)), (
            name, re.findall(r"class=\"error\"[^>]*>[^<]*<", page))
    assert 'value="Spring Sale"' in page and 'value="typed by hand"' in page
    assert "{metric: {name: total_spend, op: &#39;&gt;=&#39;, value: [}" in page
    assert '<option value="vip" selected>' in page and 'value="a fortnight or so"' in page
    with app.engine.connect() as conn:
        assert conn.execute(select(Campaign.id)).first() is None


def test_a_form_without_a_template_says_so_once_beside_the_template(app: App, web: TestClient
                                                                   ) -> None:
    client, csrf = manager(app, web)
    page = client.post("/campaigns/new", data={
        "csrf": csrf, "name": "spring", "template": "", "segments": ["vip"],
        "schedule": "now", "throttle": "none"}).text
    shown = re.findall(r'<p class="error" id="template-problem-\d+">([^<]*)</p>', page)
    shown = [unescape(s) for s in shown]
    assert shown == ["choose the template of the campaign's mail"]
    assert "1 problem" in text_of(page)


def test_a_name_taken_already_is_refused_beside_the_name(app: App, web: TestClient) -> None:
    client, csrf = created(app, web)
    answer = client.post("/campaigns/new", data={**FORM, "csrf": csrf})
    assert answer.status_code == 422
    assert "a campaign named &#39;spring&#39; exists already" in answer.text


def test_odd_input_gets_words_not_a_server_error(app: App, web: TestClient) -> None:
    client, csrf = manager(app, web)
    for odd in [{"where": "x" * 20_001}, {"name": "n" * 400}, {"per_hour": "9" * 40,
                                                               "throttle": "per_hour"},
                {"schedule": "yesterday"}, {"kind": "spam"}, {"template": "../../etc"},
                {"where": "&a [*a]"}, {"offer": "{percent: lots}"},
                {"template_b": "birthday", "share": "150%", "after": "1 second"},
                {"schedule": "at", "at": "not a date"}, {"segments": []},
                {"name": "new"}]:
        answer = client.post("/campaigns/new", data={**FORM, "csrf": csrf, **odd})
        assert answer.status_code == 422, odd
        assert "The campaign was not saved" in answer.text, odd
    for path in ["/campaigns/" + "x" * 500, "/campaigns/%00", "/campaigns/no_such"]:
        assert client.get(path).status_code in (400, 404), path
    too_long = "x" * (MAX_SEARCH + 1)
    assert client.get(f"/campaigns/spring?customer={too_long}").status_code == 404
    assert client.post("/campaigns/new", data={**FORM, "csrf": csrf}).status_code == 200
    assert client.get(f"/campaigns/spring?customer={too_long}").status_code == 422
    assert client.post("/campaigns/spring/launch", data={"csrf": csrf}).status_code == 404
    assert client.post("/campaigns/spring/test", data={
        "csrf": csrf, "template": "vip_early_access", "nonce": "n",
        "customer_id": "99999999999999999999"}).status_code == 404


def test_the_page_shows_the_audience_s_size_and_who_is_left_out_and_why_before_sending(
        app: App, web: TestClient) -> None:
    ann, bob, cy = vips(app, 3)
    with app.engine.begin() as conn:
        from sqlalchemy import update

        from lifecycle.models import Customer
        conn.execute(update(Customer).where(Customer.id == bob).values(
            marketing_consent=False))
        conn.execute(insert(Suppression).values(
            email_hash=email_hash("v2@example.com"), scope="marketing", reason="unsubscribe",
            source="test", created_at=app.clock.now()))
    client, _ = created(app, web)
    page = text_of(client.get("/campaigns/spring").text)
    assert "If it started now: 3 customers , 1 would be mailed." in page
    assert "The audience is fixed when the campaign starts." in page
    assert "unsubscribed or suppressed 1" in page and "no marketing consent 1" in page
    assert "frequency cap 0" in page and "left out in all 2" in page
    assert "kind: marketing" in client.get("/campaigns/spring").text  # the definition


def test_the_page_says_a_mail_due_in_quiet_hours_waits_for_their_end(app: App, web: TestClient
                                                                     ) -> None:
    from lifecycle.flows.service import policies_of

    vips(app, 1)
    client, _ = created(app, web)
    quiet = policies_of(app).quiet
    hours = f"{quiet.start:%H:%M}–{quiet.end:%H:%M}"
    page = text_of(client.get("/campaigns/spring").text)
    assert f"A mail due in its customer's quiet hours ({hours} in their time zone" in page
    assert "waits until they end" in page


def test_a_preview_for_a_customer_and_a_test_send_to_the_manager(app: App, web: TestClient
                                                                 ) -> None:
    [ann] = vips(app, 1)
    client, csrf = created(app, web, template_b="birthday", share="20%", winner_by="clicks",
                           after="4 hours")
    page = client.get("/campaigns/spring", params={"customer": "V0@example.com"}).text
    assert "Variant A: vip_early_access" in text_of(page)
    assert "Variant B: birthday" in text_of(page)
    assert page.count("Send a test to me") == 2
    nonce = re.search(r'name="nonce" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    for _ in range(2):  # a double click: one mail
        answer = client.post("/campaigns/spring/test", data={
            "csrf": csrf, "template": "birthday", "nonce": nonce, "customer_id": str(ann),
            "customer": "V0@example.com"}, follow_redirects=False)
        assert answer.status_code == 303
    assert "A test of birthday is on its way to max@shop.example." in text_of(
        client.get(answer.headers["location"]).text)
    with app.engine.connect() as conn:
        sent = conn.execute(select(Message.__table__)).all()
    assert [(m.to_email, m.template, m.campaign_id) for m in sent] == [
        ("max@shop.example", "birthday", None)]
    missing = text_of(client.get("/campaigns/spring", params={"customer": "nobody"}).text)
    assert "No customer has the id or email “nobody”." in missing
    answer = client.post("/campaigns/spring/test", data={
        "csrf": csrf, "template": "thank_you", "nonce": "n2", "customer_id": str(ann)})
    assert answer.status_code == 404  # not a template of the campaign


def test_schedule_start_pause_resume_and_cancel_from_the_page_are_recorded_in_its_history(
        app: App, web: TestClient) -> None:
    vips(app, 2)
    client, csrf = created(app, web)
    for action, status in [("schedule", "scheduled"), (None, "sending"), ("pause", "paused"),
                           ("resume", "sending")]:
        if action is None:
            assert tick(app) == 1
        else:
            answer = client.post(f"/campaigns/spring/{action}", data={"csrf": csrf},
                                 follow_redirects=False)
            assert answer.status_code == 303, text_of(answer.text)
        assert status_of(app) == status
    page = text_of(client.get("/campaigns/spring?done=resume").text)
    assert "The campaign goes on." in page and "Fixed when it started: 2 customers" in page
    refused = client.post("/campaigns/spring/cancel", data={"csrf": csrf})
    assert refused.status_code == 422 and status_of(app) == "sending"
    assert "tick the box that confirms it" in refused.text
    answer = client.post("/campaigns/spring/cancel", data={"csrf": csrf, "confirm": "yes"},
                         follow_redirects=False)
    assert answer.status_code == 303 and status_of(app) == "cancelled"
    with app.engine.connect() as conn:
        history = conn.execute(select(CampaignChange.action, CampaignChange.changed_by)
                               .order_by(CampaignChange.id)).all()
        mails = conn.execute(select(Message.status)).scalars().all()
    assert history == [("create", "max@shop.example"), ("schedule", "max@shop.example"),
                       ("start", "scheduler"), ("pause", "max@shop.example"),
                       ("resume", "max@shop.example"), ("cancel", "max@shop.example")]
    assert mails == ["cancelled", "cancelled"]
    page = text_of(client.get("/campaigns/spring").text)
    assert "2 mails withdrawn" in page and "Status: cancelled" in page


def test_an_action_that_cannot_be_done_is_refused_in_words(app: App, web: TestClient) -> None:
    client, csrf = created(app, web)
    answer = client.post("/campaigns/spring/resume", data={"csrf": csrf})
    assert answer.status_code == 409 and status_of(app) == "draft"
    assert ("Not done: the campaign &#39;spring&#39; is draft: only a paused campaign can be "
            "resumed.") in answer.text
    answer = client.post("/campaigns/spring/pause", data={"csrf": csrf})
    assert answer.status_code == 409 and "only a scheduled or sending campaign" in answer.text
    client.post("/campaigns/new", data={**FORM, "csrf": csrf, "name": "late",
                                        "schedule": "at", "at": "2026-06-01T09:00"})
    answer = client.post("/campaigns/late/schedule", data={"csrf": csrf})
    assert answer.status_code == 409 and "which has passed: change its schedule" in answer.text
    assert status_of(app, "late") == "draft"


def test_only_a_draft_is_edited_with_the_same_form(app: App, web: TestClient) -> None:
    client, csrf = created(app, web)
    form = client.get("/campaigns/spring/edit").text
    assert 'value="The spring collection"' in form and "readonly" in form
    answer = client.post("/campaigns/spring/edit", data={
        **FORM, "csrf": csrf, "name": "renamed", "segments": ["vip", "loyal"],
        "schedule": "local_time", "local_time": "10:00"}, follow_redirects=False)
    assert answer.status_code == 303
    with app.engine.connect() as conn:
        spec = conn.execute(select(Campaign.spec).where(Campaign.name == "spring")).scalar_one()
    assert spec["audience"] == {"segments": ["vip", "loyal"]}
    assert spec["schedule"] == {"local_time": "10:00"}
    assert "at 10:00 in each customer's time zone" in text_of(
        client.get("/campaigns/spring").text)
    client.post("/campaigns/spring/schedule", data={"csrf": csrf})
    assert client.get("/campaigns/spring/edit").status_code == 409
    answer = client.post("/campaigns/spring/edit", data={**FORM, "csrf": csrf})
    assert answer.status_code == 422 and "only a draft or a campaign paused before its start " \
        "can be changed" in text_of(answer.text)


def test_results_wait_until_the_campaign_has_sent_mails(app: App, web: TestClient) -> None:
    client, _ = created(app, web)
    assert "Results appear once the campaign has sent mails." in text_of(
        client.get("/campaigns/spring").text)


def test_support_staff_and_strangers_are_refused_and_a_post_needs_the_csrf_token(
        app: App, web: TestClient) -> None:
    client, csrf = created(app, web)
    routes = [("GET", "/campaigns"), ("GET", "/campaigns/new"), ("POST", "/campaigns/new"),
              ("GET", "/campaigns/spring"), ("GET", "/campaigns/spring/edit"),
              ("POST", "/campaigns/spring/edit"), ("POST", "/campaigns/spring/test"),
              *[("POST", f"/campaigns/spring/{a}") for a in ("schedule", "pause", "resume",
                                                               "cancel")]]
    account(app, "sue@shop.example", "support")
    support = logged_in(TestClient(web.app), "sue@shop.example")
    support_csrf = csrf_of(support.get("/customers").text)
    for method, path in routes:
        anonymous = TestClient(web.app).request(method, path, follow_redirects=False)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith(
            "/login"), path
        data = {**FORM, "csrf": support_csrf, "confirm": "yes"} if method == "POST" else None
        assert support.request(method, path, data=data).status_code == 403, path
        if method == "POST":
            answer = client.request(method, path, data={**FORM, "csrf": "wrong",
                                                        "confirm": "yes"})
            assert answer.status_code == 403, path
    assert status_of(app) == "draft"
    with app.engine.connect() as conn:
        assert len(conn.execute(select(Campaign.id)).all()) == 1


def test_the_form_takes_an_offer_a_where_condition_a_moment_and_a_spread_and_the_list_is_newest_first(
        app: App, web: TestClient) -> None:
    client, csrf = created(app, web)
    app.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    answer = client.post("/campaigns/new", data={
        **FORM, "csrf": csrf, "name": "autumn", "template": "loyalty_offer",
        "offer": "{percent: 10, valid: 14 days}",
        "where": "{metric: {name: total_spend, op: '>=', value: 100}}", "schedule": "at",
        "at": "2026-06-05T09:00", "throttle": "over", "over": "6 hours"},
        follow_redirects=False)
    assert answer.status_code == 303, text_of(answer.text)
    with app.engine.connect() as conn:
        spec = conn.execute(select(Campaign.spec).where(Campaign.name == "autumn")).scalar_one()
    assert spec["send"] == {"template": "loyalty_offer",
                            "offer": {"percent": 10, "valid": "14 days"}}
    assert spec["audience"]["where"] == {"metric": {"name": "total_spend", "op": ">=",
                                                    "value": 100}}
    assert spec["schedule"] == {"at": "2026-06-05T09:00Z"}  # the form's moment is UTC
    assert spec["throttle"] == {"over": "6 hours"}
    listed = text_of(client.get("/campaigns").text)
    assert listed.index("autumn draft") < listed.index("spring draft")
    assert "at 2026-06-05 09:00 UTC" in listed
    assert "spread over 6 hours" in text_of(client.get("/campaigns/autumn").text)
    too_long = client.post("/campaigns/new", data={**FORM, "csrf": csrf, "name": "x",
                                                   "where": "a" * 20_001,
                                                   "description": "d" * 301})
    assert too_long.status_code == 422
    assert "at most 20,000 characters (this has 20,001)" in too_long.text
    assert "at most 300 characters (this has 301)" in too_long.text


def test_a_preview_finds_the_customer_by_their_customer_id_too_and_admins_see_campaigns(
        app: App, web: TestClient) -> None:
    vips(app, 1, first_name="Ann")
    client, _ = created(app, web)
    page = text_of(client.get("/campaigns/spring", params={"customer": "v0"}).text)
    assert "Subject: Early access for you, Ann" in page
    account(app, "ada@shop.example", "admin")
    admin = logged_in(TestClient(web.app), "ada@shop.example")
    assert '<a href="/campaigns">Campaigns</a>' in admin.get("/customers").text
    assert admin.get("/campaigns").status_code == 200


def test_a_started_ab_test_shows_its_results_their_significance_and_lets_the_manager_send_the_winner(
        app: App, web: TestClient) -> None:
    vips(app, 10)
    client, csrf = created(app, web, template_b="birthday", share="40%", winner_by="clicks",
                           after="4 hours")
    assert client.post("/campaigns/spring/schedule", data={"csrf": csrf},
                       follow_redirects=False).status_code == 303
    tick(app)  # started: 4 test mails, 6 wait for the winner
    page = text_of(client.get("/campaigns/spring").text)
    assert "Results" in page and "spam reports" in page and "human opens" in page
    assert "A/B test — the leader goes to the rest at" in page
    assert "too few mails to tell" in page
    answer = client.post("/campaigns/spring/winner", data={"csrf": csrf, "variant": "birthday"},
                         follow_redirects=False)
    assert answer.status_code == 303
    with app.engine.connect() as conn:
        assert conn.execute(select(Campaign.winner)).scalar_one() == "birthday"
        templates = [t for (t,) in conn.execute(select(Message.template))]
    assert len(templates) == 10 and templates.count("birthday") == 2 + 6
    assert "the winner birthday went to the rest" in text_of(client.get("/campaigns/spring").text)
    again = client.post("/campaigns/spring/winner", data={"csrf": csrf, "variant": "birthday"})
    assert again.status_code == 409 and "has its winner already" in text_of(again.text)


def test_a_campaign_paused_before_its_start_can_be_changed_then_resumed(
        app: App, web: TestClient) -> None:
    vips(app, 2)
    client, csrf = created(app, web)
    client.post("/campaigns/spring/schedule", data={"csrf": csrf})
    client.post("/campaigns/spring/pause", data={"csrf": csrf})
    assert "Change it before it starts" in client.get("/campaigns/spring").text
    answer = client.post("/campaigns/spring/edit", data={**FORM, "csrf": csrf,
                                                         "template": "birthday"},
                         follow_redirects=False)
    assert answer.status_code == 303
    client.post("/campaigns/spring/resume", data={"csrf": csrf})
    tick(app)
    with app.engine.connect() as conn:
        assert {t for (t,) in conn.execute(select(Message.template))} == {"birthday"}


def test_a_customer_s_page_names_the_campaign_of_an_upcoming_mail_and_why_it_waits(
        app: App, web: TestClient) -> None:
    [ann] = vips(app, 1)
    client, csrf = created(app, web, throttle="per_hour", per_hour="1")
    client.post("/campaigns/spring/schedule", data={"csrf": csrf})
    tick(app)
    client.post("/campaigns/spring/pause", data={"csrf": csrf})
    account(app, "sue@shop.example", "support")
    support = logged_in(TestClient(web.app), "sue@shop.example")
    page = text_of(support.get("/customers/v0").text)
    assert "campaign spring (vip_early_access)" in page
    assert "the campaign is paused" in page and "None/None" not in page
