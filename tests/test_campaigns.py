"""Campaigns: the audience fixed at the start in one statement, who is left out and why, each
customer's local time, the rate, A/B groups, pause / resume / cancel, finishing."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text

from lifecycle.campaigns import audience
from lifecycle.campaigns.audience import Rules
from lifecycle.campaigns.model import Campaign, CampaignChange, CampaignMember
from lifecycle.campaigns.service import HELD, LATE_WINDOW, CampaignError, Campaigns
from lifecycle.campaigns.spec import parse_spec
from lifecycle.flows.definitions import Context
from lifecycle.flows.timing import QuietHours
from lifecycle.models import Message, SegmentMembership, Suppression, email_hash
from lifecycle.timeutil import UTC
from lifecycle.yamlfile import InvalidFile, loads
from tests.factories import add_customer

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday, noon UTC
CONTEXT = Context.from_folders(ROOT / "templates" / "email",
                               {"loyal", "vip", "lapsed", "engaged", "tea_lovers"})
RULES = Rules(cap=3, cap_window=timedelta(days=7), one_per_day=True,
              quiet=QuietHours(), default_tz="UTC", currency="EUR")


def spec(text: str, name: str = "spring"):  # type: ignore[no-untyped-def]
    return parse_spec(loads(text, f"campaigns/{name}.yaml"), name, CONTEXT)


SPRING = """\
kind: marketing
send: {template: vip_early_access}
audience: {segments: [loyal, vip], exclude: [lapsed]}
"""


def member(conn: Connection, name: str, *segments: str, **values: object) -> int:
    values.setdefault("timezone", "UTC")
    cid = add_customer(conn, name, T0 - timedelta(days=400), **values)
    for segment in segments:
        conn.execute(insert(SegmentMembership).values(
            customer_id=cid, segment=segment, entered_at=T0 - timedelta(days=3), reason={}))
    return cid


def started(conn: Connection, text: str, name: str = "spring",
            rules: Rules = RULES, now: datetime = T0) -> tuple[int, int]:
    """Create, schedule and start the campaign at ``now``; (campaign id, mails written)."""
    s = spec(text, name)
    campaigns = Campaigns(conn)
    cid = campaigns.create(s, loads(text, f"campaigns/{name}.yaml").data, "max@shop.example",
                           "test", now)
    campaigns.schedule(name, s, "max@shop.example", now)
    written = campaigns.start(campaigns.get(name), s, rules, now)
    assert written is not None
    return cid, written


def mails(conn: Connection, cid: int) -> list:  # type: ignore[type-arg]
    return conn.execute(select(Message.__table__).where(Message.campaign_id == cid)
                        .order_by(Message.customer_id)).all()


def test_the_audience_is_the_segments_minus_the_excluded_and_each_left_out_has_a_reason(
        conn: Connection) -> None:
    ann = member(conn, "ann", "loyal")
    bea = member(conn, "bea", "vip", "loyal")  # in two segments: one mail
    member(conn, "cy", "vip", "lapsed")  # excluded
    member(conn, "dan", "engaged")  # not in the audience's segments
    eve = member(conn, "eve", "loyal", marketing_consent=False)
    fay = member(conn, "fay", "loyal", email=None)
    gus = member(conn, "gus", "vip")
    conn.execute(insert(Suppression).values(email_hash=email_hash("gus@example.com"),
                                            scope="marketing", reason="unsubscribe",
                                            source="test", created_at=T0))
    size, left = audience.count_audience(conn, spec(SPRING), T0, RULES)
    assert size == 5 and left == {audience.NO_EMAIL: 1, audience.SUPPRESSED: 1,
                                  audience.NO_CONSENT: 1, audience.CAPPED: 0,
                                  audience.SAME_DAY: 0}
    cid, written = started(conn, SPRING)
    assert written == 2
    assert [(m.customer_id, m.template, m.status, m.due_at) for m in mails(conn, cid)] == [
        (ann, "vip_early_access", "scheduled", T0), (bea, "vip_early_access", "scheduled", T0)]
    members = dict(conn.execute(select(CampaignMember.customer_id, CampaignMember.left_out)
                                .where(CampaignMember.campaign_id == cid)).all())
    assert members == {ann: None, bea: None, eve: audience.NO_CONSENT,
                       fay: audience.NO_EMAIL, gus: audience.SUPPRESSED}
    row = Campaigns(conn).get("spring")
    assert (row.status, row.audience_size, row.mailed) == ("sending", 5, 2)
    context = mails(conn, cid)[0].context
    assert context == {"marketing": True, "capped": True, "campaign": "spring",
                       "utm": {"campaign": "spring", "content": "vip_early_access"}}


def test_a_transactional_campaign_needs_no_consent_but_never_mails_a_suppressed_address(
        conn: Connection) -> None:
    member(conn, "ann", "loyal", marketing_consent=False)
    member(conn, "bob", "loyal")
    conn.execute(insert(Suppression).values(email_hash=email_hash("bob@example.com"),
                                            scope="all", reason="hard_bounce", source="test", created_at=T0))
    cid, written = started(conn, SPRING.replace("marketing", "transactional"))
    assert written == 1 and mails(conn, cid)[0].context["marketing"] is False


def test_a_where_condition_in_the_segment_language_narrows_the_audience(
        conn: Connection) -> None:
    member(conn, "ann", "loyal", attributes={"tier": "gold"})
    member(conn, "bob", "loyal", attributes={"tier": "silver"})
    text = SPRING.replace("exclude: [lapsed]}", "where: {attribute: {name: tier, op: '=', "
                                                "value: gold}}}")
    cid, written = started(conn, text)
    assert written == 1


def test_starting_twice_writes_nothing_twice(conn: Connection) -> None:
    member(conn, "ann", "loyal")
    cid, written = started(conn, SPRING)
    campaigns = Campaigns(conn)
    assert campaigns.start(campaigns.get("spring"), spec(SPRING), RULES, T0) is None
    assert len(mails(conn, cid)) == 1


def test_a_local_time_schedule_sends_at_that_time_in_each_customer_s_zone(
        conn: Connection) -> None:
    berlin = member(conn, "ann", "loyal", timezone="Europe/Berlin")  # 13:00 at the start
    tokyo = member(conn, "bob", "loyal", timezone="Asia/Tokyo")  # 21:00 at the start
    cid, _ = started(conn, SPRING + 'schedule: {local_time: "10:00"}\n')
    due = {m.customer_id: m.due_at for m in mails(conn, cid)}
    assert due == {berlin: datetime(2026, 3, 3, 9, tzinfo=UTC),  # next day 10:00 CET
                   tokyo: datetime(2026, 3, 3, 1, tzinfo=UTC)}  # next day 10:00 JST


def test_a_throttled_campaign_spreads_its_mails_at_the_rate(conn: Connection) -> None:
    for i in range(4):
        member(conn, f"c{i}", "loyal")
    cid, _ = started(conn, SPRING + "throttle: {per_hour: 1200}\n")  # one every 3 s
    due = sorted(m.due_at for m in mails(conn, cid))
    assert due == [T0 + timedelta(seconds=3 * i) for i in range(4)]


def test_an_ab_test_mails_its_share_in_variants_and_keeps_the_rest_for_the_winner(
        conn: Connection) -> None:
    for i in range(20):
        member(conn, f"c{i:02}", "loyal")
    text = SPRING.replace("send: {template: vip_early_access}", "send: {variants: ["
                          "{template: vip_early_access}, {template: birthday}]}") + \
        "ab_test: {share: 20%, winner_by: clicks, after: 4 hours}\n"
    cid, written = started(conn, text)
    assert written == 4
    groups = Counter(conn.execute(select(CampaignMember.grp, CampaignMember.variant).where(
        CampaignMember.campaign_id == cid)).all())
    assert groups == {("test", "vip_early_access"): 2, ("test", "birthday"): 2,
                      ("rest", None): 16}
    assert Counter(m.variant for m in mails(conn, cid)) == {"vip_early_access": 2,
                                                            "birthday": 2}
    row = Campaigns(conn).get("spring")
    assert row.winner_due_at == T0 + timedelta(hours=4)


def test_pause_holds_the_unsent_mails_and_resume_releases_only_those(conn: Connection) -> None:
    for i in range(3):
        member(conn, f"c{i}", "loyal")
    cid, _ = started(conn, SPRING)
    first, second, third = mails(conn, cid)
    conn.execute(Message.__table__.update().where(Message.id == first.id).values(
        status="sent"))
    conn.execute(Message.__table__.update().where(Message.id == second.id).values(
        status="paused", last_error="paused by sue@shop.example"))  # support held it
    campaigns = Campaigns(conn)
    assert campaigns.pause("spring", "max@shop.example", T0) == 1
    assert {m.id: (m.status, m.last_error) for m in mails(conn, cid)}[third.id] == (
        "paused", HELD)
    with pytest.raises(CampaignError, match="only a scheduled or sending campaign"):
        campaigns.pause("spring", "max@shop.example", T0)
    later = T0 + timedelta(hours=1)
    assert campaigns.resume("spring", spec(SPRING), "max@shop.example", later) == 1
    now = {m.id: (m.status, m.due_at) for m in mails(conn, cid)}
    assert now[third.id] == ("scheduled", later)
    assert now[second.id][0] == "paused" and now[first.id][0] == "sent"
    assert campaigns.get("spring").status == "sending"


def test_cancel_withdraws_every_unsent_mail_and_keeps_the_sent(conn: Connection) -> None:
    for i in range(3):
        member(conn, f"c{i}", "loyal")
    cid, _ = started(conn, SPRING)
    first = mails(conn, cid)[0]
    conn.execute(Message.__table__.update().where(Message.id == first.id).values(
        status="sent"))
    assert Campaigns(conn).cancel("spring", "max@shop.example", T0) == 2
    assert Counter(m.status for m in mails(conn, cid)) == {"sent": 1, "cancelled": 2}
    with pytest.raises(CampaignError, match="is cancelled already"):
        Campaigns(conn).cancel("spring", "max@shop.example", T0)


def test_a_mail_a_worker_held_at_the_cancel_and_put_back_is_withdrawn_at_the_next_tick(
        conn: Connection) -> None:
    for i in range(2):
        member(conn, f"c{i}", "loyal")
    cid, _ = started(conn, SPRING)
    held = mails(conn, cid)[0]
    conn.execute(Message.__table__.update().where(Message.id == held.id).values(
        status="sending"))
    campaigns = Campaigns(conn)
    assert campaigns.cancel("spring", "max@shop.example", T0) == 1
    # The worker's post failed before it started: the mail is put back, scheduled again.
    conn.execute(Message.__table__.update().where(Message.id == held.id).values(
        status="scheduled"))
    assert campaigns.withdraw_late(T0 + timedelta(minutes=5)) == 1
    assert Counter(m.status for m in mails(conn, cid)) == {"cancelled": 2}
    # Long after the cancel nothing is looked at any more (the scheduler's query stays small).
    conn.execute(Message.__table__.update().where(Message.id == held.id).values(
        status="scheduled"))
    assert campaigns.withdraw_late(T0 + LATE_WINDOW + timedelta(minutes=1)) == 0


def test_a_campaign_is_sent_once_every_mail_is_settled(conn: Connection) -> None:
    member(conn, "ann", "loyal")
    cid, _ = started(conn, SPRING)
    campaigns = Campaigns(conn)
    assert campaigns.finish_settled(T0) == []
    conn.execute(Message.__table__.update().where(Message.campaign_id == cid).values(
        status="sent"))
    assert campaigns.finish_settled(T0) == ["spring"]
    assert conn.execute(select(Campaign.status)).scalar() == "sent"


def test_a_bad_campaign_is_refused_with_every_problem_at_its_line() -> None:
    with pytest.raises(InvalidFile) as caught:
        spec("kind: marketng\nsend: {template: spring_sale}\naudience:\n  segments: [loyall]\n"
             "schedule: {local_time: 10:00}\nthrottle: {per_hour: 0}\n")
    found = [str(p) for p in caught.value.problems]
    assert found[0] == "campaigns/spring.yaml:1:7: kind must be marketing or transactional"
    assert any("unknown template 'spring_sale'" in p and p.startswith("campaigns/spring.yaml:2")
               for p in found)
    assert any("unknown segment 'loyall' (did you mean 'loyal'?)" in p for p in found)
    assert any('write the time in quotes: local_time: "10:00"' in p for p in found)
    assert any(":6:" in p and "per_hour must be a whole number" in p for p in found)


def test_a_campaign_with_an_offer_stores_one_code_per_mail_in_its_context(
        conn: Connection) -> None:
    from lifecycle.models import OfferCode, OfferWebhook

    for i in range(3):
        member(conn, f"c{i}", "loyal")
    text = SPRING.replace("send: {template: vip_early_access}", "send: {template: "
                          "loyalty_offer, offer: {percent: 15, valid: 10 days, "
                          "prefix: SPRING}}")
    s = spec(text)
    campaigns = Campaigns(conn, notify_offers=True)
    campaigns.create(s, {}, "max@shop.example", "test", T0)
    campaigns.schedule("spring", s, "max@shop.example", T0)
    campaigns.start(campaigns.get("spring"), s, RULES, T0)
    codes = conn.execute(select(OfferCode.message_id, OfferCode.code, OfferCode.expires_at,
                                OfferCode.kind)).all()
    written = {m.id: m.context["offer"] for m in conn.execute(select(Message.__table__)).all()}
    assert len(codes) == 3 and {c.message_id for c in codes} == set(written)
    for code in codes:
        assert code.code.startswith("SPRING-") and code.kind == "percent"
        assert code.expires_at == T0 + timedelta(days=10)
        assert written[code.message_id]["code"] == code.code
    assert len(conn.execute(select(OfferWebhook.id)).all()) == 3  # told to the shop


def test_only_a_draft_or_a_campaign_paused_before_its_start_can_be_changed(
        conn: Connection) -> None:
    member(conn, "ann", "loyal")
    s = spec(SPRING)
    campaigns = Campaigns(conn)
    campaigns.create(s, {"v": 1}, "max@shop.example", "test", T0)
    campaigns.edit("spring", {"v": 2}, "max@shop.example", T0)
    campaigns.schedule("spring", s, "max@shop.example", T0)
    campaigns.pause("spring", "max@shop.example", T0)
    campaigns.edit("spring", {"v": 3}, "max@shop.example", T0)  # not started yet
    assert campaigns.get("spring").spec == {"v": 3}
    campaigns.resume("spring", s, "max@shop.example", T0)
    assert campaigns.get("spring").status == "scheduled"
    campaigns.start(campaigns.get("spring"), s, RULES, T0)
    with pytest.raises(CampaignError, match="only a draft or a campaign paused before"):
        campaigns.edit("spring", {"v": 4}, "max@shop.example", T0)
    details = dict(conn.execute(select(CampaignChange.action, CampaignChange.detail)).all())
    assert details["schedule"] == "starts 2026-03-02 12:00 UTC"  # moments in words, in UTC
    assert details["start"].endswith("(scheduled for 2026-03-02 12:00 UTC)")


def test_the_rest_of_an_ab_test_with_an_offer_gets_codes_when_the_winner_goes(
        conn: Connection) -> None:
    from lifecycle.campaigns.winner import release_winner
    from lifecycle.models import OfferCode

    for i in range(10):
        member(conn, f"c{i}", "loyal")
    text = SPRING.replace("send: {template: vip_early_access}", "send: {variants: ["
                          "{template: loyalty_offer}, {template: birthday}], offer: "
                          "{percent: 10, prefix: AB}}") + \
        "ab_test: {share: 20%, winner_by: clicks, after: 1 hour}\n"
    cid, written = started(conn, text)
    assert written == 2
    release_winner(conn, Campaigns(conn).get("spring"), spec(text), RULES,
                   T0 + timedelta(minutes=10), winner="birthday", by="max@shop.example")
    everyone = mails(conn, cid)
    codes = dict(conn.execute(select(OfferCode.message_id, OfferCode.code)).all())
    assert len(everyone) == 10 and set(codes) == {m.id for m in everyone}
    assert all(m.context["offer"]["code"] == codes[m.id] for m in everyone)


def test_the_frequency_cap_and_a_flow_s_marketing_mail_that_day_leave_a_customer_out(
        conn: Connection) -> None:
    capped = member(conn, "ann", "loyal")
    busy = member(conn, "bob", "loyal")
    free = member(conn, "cy", "loyal")
    for i in range(3):  # ann had the cap's three marketing mails this week
        conn.execute(insert(Message).values(
            idempotency_key=f"k{i}", customer_id=capped, flow="win_back", step="s",
            template="winback_1", to_email="ann@example.com", status="sent",
            due_at=T0 - timedelta(days=i + 1), sent_at=T0 - timedelta(days=i + 1), attempts=1,
            context={"marketing": True, "capped": True}, created_at=T0, updated_at=T0))
    conn.execute(insert(Message).values(  # bob has a flow's marketing mail due tonight
        idempotency_key="b", customer_id=busy, flow="win_back", step="s", template="winback_1",
        to_email="bob@example.com", status="scheduled", due_at=T0 + timedelta(hours=6),
        attempts=0, context={"marketing": True, "capped": True}, created_at=T0, updated_at=T0))
    cid, written = started(conn, SPRING)
    members = dict(conn.execute(select(CampaignMember.customer_id, CampaignMember.left_out)
                                .where(CampaignMember.campaign_id == cid)).all())
    assert members == {capped: audience.CAPPED, busy: audience.SAME_DAY, free: None}
    allow = Rules(**{**RULES.__dict__, "one_per_day": False})  # same_day: allow
    assert audience.count_audience(conn, spec(SPRING), T0, allow)[1][audience.SAME_DAY] == 0


def test_a_local_time_in_the_quiet_hours_moves_to_their_end(conn: Connection) -> None:
    ann = member(conn, "ann", "loyal", timezone="Europe/Berlin")
    cid, _ = started(conn, SPRING + 'schedule: {local_time: "06:30"}\n')  # quiet until 08:00
    [mail] = mails(conn, cid)
    assert (mail.customer_id, mail.due_at) == (ann, datetime(2026, 3, 3, 7, tzinfo=UTC))


def test_a_campaign_spread_over_a_period_works_out_its_rate_from_the_audience(
        conn: Connection) -> None:
    for i in range(4):
        member(conn, f"c{i}", "loyal")
    cid, _ = started(conn, SPRING + "throttle: {over: 2 minutes}\n")  # 4 mails: one each 30 s
    due = sorted(m.due_at for m in mails(conn, cid))
    assert due == [T0 + timedelta(seconds=30 * i) for i in range(4)]


def test_the_campaign_the_readme_shows_is_a_valid_campaign() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Campaigns\n"):]
    block = section[section.index("```yaml\n") + 8:section.index("```\n", section.index(
        "```yaml\n") + 8)]
    shown = spec(block, "spring")
    assert shown.segments == ("loyal", "vip") and shown.exclude == ("lapsed",)
    assert shown.send.offer is not None and shown.per_hour == 5000


def test_a_customer_erased_before_the_winner_goes_is_left_out_and_the_rest_is_mailed(
        conn: Connection) -> None:
    from lifecycle.campaigns.winner import release_winner
    from lifecycle.models import Customer

    for i in range(6):
        member(conn, f"c{i}", "loyal")
    text = SPRING.replace("send: {template: vip_early_access}", "send: {variants: ["
                          "{template: vip_early_access}, {template: birthday}]}") + \
        "ab_test: {share: 50%, winner_by: clicks, after: 1 hour}\n"
    cid, written = started(conn, text)
    rest = conn.execute(select(CampaignMember.customer_id).where(
        CampaignMember.campaign_id == cid, CampaignMember.grp == "rest")).scalars().all()
    conn.execute(Customer.__table__.update().where(Customer.id == rest[0]).values(email=None))
    release = release_winner(conn, Campaigns(conn).get("spring"), spec(text), RULES,
                             T0 + timedelta(minutes=5), winner="birthday", by="max@shop.example")
    assert release is not None and release.written == len(rest) - 1
    assert conn.execute(select(CampaignMember.left_out).where(
        CampaignMember.campaign_id == cid, CampaignMember.customer_id == rest[0])
    ).scalar() == audience.NO_EMAIL


def test_resume_goes_back_to_sending_once_the_campaign_started_whatever_the_pause_read(
        conn: Connection) -> None:
    member(conn, "ann", "loyal")
    cid, _ = started(conn, SPRING)
    campaigns = Campaigns(conn)
    campaigns.pause("spring", "max@shop.example", T0)
    assert campaigns.get("spring").paused_from == "sending"
    # as a pause that read "scheduled" just before the start committed would have left it
    conn.execute(Campaign.__table__.update().values(paused_from="scheduled"))
    campaigns.resume("spring", spec(SPRING), "max@shop.example", T0)
    assert campaigns.get("spring").status == "sending"
    assert campaigns.start(campaigns.get("spring"), spec(SPRING), RULES, T0) is None


def test_resume_keeps_each_customer_s_local_time(conn: Connection) -> None:
    berlin = member(conn, "ann", "loyal", timezone="Europe/Berlin")
    cid, _ = started(conn, SPRING + 'schedule: {local_time: "10:00"}\n')
    campaigns = Campaigns(conn)
    campaigns.pause("spring", "max@shop.example", T0 + timedelta(minutes=5))
    campaigns.resume("spring", spec(SPRING + 'schedule: {local_time: "10:00"}\n'),
                     "max@shop.example", T0 + timedelta(minutes=10))
    [mail] = mails(conn, cid)
    assert (mail.customer_id, mail.status, mail.due_at) == (
        berlin, "scheduled", datetime(2026, 3, 3, 9, tzinfo=UTC))  # still 10:00 in Berlin


def test_support_cannot_release_one_mail_a_campaign_s_pause_holds(conn: Connection) -> None:
    from lifecycle.mail.outbox import Outbox

    member(conn, "ann", "loyal")
    cid, _ = started(conn, SPRING)
    Campaigns(conn).pause("spring", "max@shop.example", T0)
    [mail] = mails(conn, cid)
    assert Outbox(conn).hold(mail.id, "resume", T0, "sue@shop.example") is False
    assert mails(conn, cid)[0].status == "paused"
    assert Outbox(conn).hold(mail.id, "cancel", T0, "sue@shop.example") is True  # that may be


def test_a_where_value_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(InvalidFile, match=r"value must be a number \(not .nan or .inf\)"):
        spec(SPRING.replace("exclude: [lapsed]}", "where: {metric: {name: total_spend, "
                                                  "op: '>=', value: .nan}}}"))


def test_an_offer_whose_template_never_shows_it_is_refused() -> None:
    """Codes would be stored and announced to the shop, and no customer would ever see one."""
    with pytest.raises(InvalidFile) as caught:
        spec(SPRING.replace("send: {template: vip_early_access}", "send: {template: "
                            "vip_early_access, offer: {percent: 10}}"))
    [problem] = caught.value.problems
    assert problem.line == 2 and problem.message.startswith(
        "the template vip_early_access never shows the offer (no `offer` in any of its parts)")


def _per_row_scans_of_messages(conn: Connection, query: str, values: dict) -> list[str]:  # type: ignore[type-arg]
    """The plan's steps that read ``messages`` once per customer (a correlated subquery)."""
    if conn.dialect.name == "postgresql":
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {query}"), values).scalar_one()
        found: list[str] = []

        def walk(node: dict, correlated: bool) -> None:  # type: ignore[type-arg]
            correlated = correlated or (node.get("Parent Relationship") == "SubPlan"
                                        and not node.get("Subplan Name", "").startswith("hashed"))
            if correlated and node.get("Relation Name") == "messages":
                found.append(node["Node Type"])
            for child in node.get("Plans", []):
                walk(child, correlated)

        walk(plan[0]["Plan"], False)
        return found
    steps = conn.execute(text(f"EXPLAIN QUERY PLAN {query}"), values).all()
    parents = {row[0]: row for row in steps}
    found = []
    for row in steps:
        chain, parent = [], row[1]
        while parent in parents:
            chain.append(parents[parent][3])
            parent = parents[parent][1]
        if " x " in f" {row[3]} " or " y " in f" {row[3]} ":  # messages AS x / y
            if any(step.startswith("CORRELATED") for step in chain):
                found.append(row[3])
    return found


def test_the_audience_reads_the_mails_already_written_in_one_pass_not_once_per_customer(
        conn: Connection) -> None:
    from lifecycle.campaigns.audience import Params, audience_query, dialect

    member(conn, "ann", "loyal")
    p = Params()
    query = audience_query(spec(SPRING), dialect(conn, RULES), p, T0, RULES)
    assert "messages AS x" in query and "messages AS y" in query  # the cap and the day's rule
    assert _per_row_scans_of_messages(conn, query, p.values) == []
