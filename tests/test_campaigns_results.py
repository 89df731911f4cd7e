"""Campaign results: counts per variant (the rest under the winner), spam reports, revenue in
the reporting currency with other currencies apart, the daily series, and conversions by last
touch counted once across flows and campaigns."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, insert, select, update

from lifecycle.campaigns.results import campaign_results
from lifecycle.campaigns.service import Campaigns
from lifecycle.campaigns.winner import release_winner
from lifecycle.models import Message, OfferCode
from lifecycle.results import flow_results
from tests.factories import add_order
from tests.test_campaigns import RULES, SPRING, T0, member, spec, started
from tests.test_flow_results import event, mail

DAY = timedelta(days=1)


def ab_started(conn: Connection, n: int, share: str, by: str,
               variants: tuple[str, ...] = ("vip_early_access", "birthday")) -> tuple[int, str]:
    """``n`` customers in ``loyal`` and an A/B campaign of ``variants`` (testing on ``share``
    of them, the winner by ``by`` after 4 hours) started for them; (its id, its text)."""
    for i in range(n):
        member(conn, f"c{i:02}", "loyal")
    text = SPRING.replace("send: {template: vip_early_access}", "send: {variants: [" + ", ".join(
        f"{{template: {v}}}" for v in variants) + "]}") + \
        f"ab_test: {{share: {share}, winner_by: {by}, after: 4 hours}}\n"
    return started(conn, text)[0], text


def send_all(conn: Connection, cid: int, at: datetime) -> list:  # type: ignore[type-arg]
    """Mark the campaign's waiting mails sent at ``at``; those mails, by customer."""
    m = Message.__table__
    return conn.execute(update(m).where(m.c.campaign_id == cid, m.c.status == "scheduled")
                        .values(status="sent", sent_at=at).returning(
                            m.c.id, m.c.customer_id, m.c.variant)).all()


def test_results_count_each_variant_with_spam_reports_and_the_rest_under_the_winner(
        conn: Connection) -> None:
    cid, text = ab_started(conn, 8, "50%", "clicks")
    empty = campaign_results(conn, cid, 7 * DAY, "EUR")
    assert [(r.step, r.variant, r.counts["sent"]) for r in empty.rows] == [
        ("vip_early_access", "vip_early_access", 0), ("birthday", "birthday", 0)]
    test = send_all(conn, cid, T0)
    assert len(test) == 4
    (a1, a2), (b1, b2) = ([x for x in test if x.variant == v]
                          for v in ("vip_early_access", "birthday"))
    for kind in ("email_delivered", "email_opened", "email_opened", "email_clicked",
                 "email_spam_report"):
        event(conn, a1.customer_id, a1.id, kind, T0 + timedelta(minutes=5))
    event(conn, a2.customer_id, a2.id, "email_machine_opened", T0)  # a privacy proxy's
    event(conn, a2.customer_id, a2.id, "email_bounced", T0)
    for kind in ("email_delivered", "email_opened", "replied", "email_unsubscribed"):
        event(conn, b1.customer_id, b1.id, kind, T0 + timedelta(minutes=9))
    event(conn, b2.customer_id, b2.id, "email_delivered", T0)
    add_order(conn, a1.customer_id, T0 + DAY, "40.00", currency="EUR")
    add_order(conn, a1.customer_id, T0 + 2 * DAY, "10.00", currency="USD")  # kept apart
    add_order(conn, b1.customer_id, T0 + 10 * DAY, "99.00", currency="EUR")  # past the window
    for n, (m, redeemed) in enumerate(((a1, T0 + DAY), (b2, None))):
        conn.execute(insert(OfferCode).values(
            code=f"SPRING-{n}", customer_id=m.customer_id, message_id=m.id, kind="percent",
            value=Decimal("10"), expires_at=T0 + 14 * DAY, created_at=T0, redeemed_at=redeemed))
    release = release_winner(conn, Campaigns(conn).get("spring"), spec(text), RULES,
                             T0 + timedelta(hours=1), winner="birthday", by="max@shop.example")
    assert release is not None and release.written == 4
    m = Message.__table__
    waiting = conn.execute(select(m.c.id).where(m.c.campaign_id == cid, m.c.status ==
                                                "scheduled").order_by(m.c.id)).scalars().all()
    conn.execute(update(m).where(m.c.id == waiting[0]).values(status="failed"))
    conn.execute(update(m).where(m.c.id == waiting[1]).values(status="suppressed"))
    rest = send_all(conn, cid, T0 + timedelta(hours=2))
    add_order(conn, rest[0].customer_id, T0 + timedelta(hours=3), "25.00", currency="EUR")

    r = campaign_results(conn, cid, 7 * DAY, "EUR")
    a, b = r.rows
    assert (a.variant, b.variant, r.winner, r.has_variants) == (
        "vip_early_access", "birthday", "birthday", True)
    assert {c: a.counts[c] for c in ("decided", "sent", "delivered", "opened", "clicked",
                                     "bounced", "spam_reports", "conversions", "redeemed")} == {
        "decided": 2, "sent": 2, "delivered": 1, "opened": 1, "clicked": 1, "bounced": 1,
        "spam_reports": 1, "conversions": 2, "redeemed": 1}
    assert a.revenue == Decimal("40.00") and list(a.other_revenue) == [("USD", Decimal("10.00"))]
    assert {c: b.counts[c] for c in ("decided", "sent", "failed", "skipped", "delivered",
                                     "opened", "replied", "unsubscribed", "conversions",
                                     "redeemed")} == {
        "decided": 6, "sent": 4, "failed": 1, "skipped": 1, "delivered": 2, "opened": 1, "replied": 1,
        "unsubscribed": 1, "conversions": 1, "redeemed": 0}
    assert b.revenue == Decimal("25.00")
    assert (r.total.counts["sent"], r.total.counts["conversions"], r.total.revenue) == (
        6, 3, Decimal("65.00"))
    assert [(d.day, d.sent, d.conversions, d.revenue) for d in r.daily] == [
        (T0.date(), 6, 1, Decimal("25.00")), ((T0 + DAY).date(), 0, 1, Decimal("40.00")),
        ((T0 + 2 * DAY).date(), 0, 1, Decimal("0"))]
    later = campaign_results(conn, cid, 7 * DAY, "EUR", now=T0 + 4 * DAY)
    assert len(later.daily) == 5 and later.daily[-1].sent == 0


def test_an_order_after_a_flow_mail_and_a_later_campaign_mail_is_the_campaign_s_alone(
        conn: Connection) -> None:
    ann = member(conn, "ann", "loyal")
    mail(conn, ann, "win_back", "one", None, T0 - 2 * DAY)
    cid, _ = started(conn, SPRING)
    send_all(conn, cid, T0)
    add_order(conn, ann, T0 + DAY, "30.00", currency="EUR")
    campaign = campaign_results(conn, cid, 7 * DAY, "EUR")
    flow = flow_results(conn, "win_back", T0 - 7 * DAY, T0 + 7 * DAY, 7 * DAY,
                        currency="EUR")
    assert (campaign.total.counts["conversions"], campaign.total.revenue) == (
        1, Decimal("30.00"))
    assert (flow.total.counts["conversions"], flow.total.revenue) == (0, Decimal("0"))


def test_an_order_after_a_campaign_mail_and_a_later_flow_mail_is_the_flow_s_alone(
        conn: Connection) -> None:
    ann = member(conn, "ann", "loyal")
    cid, _ = started(conn, SPRING)
    send_all(conn, cid, T0)
    mail(conn, ann, "win_back", "one", None, T0 + DAY)
    add_order(conn, ann, T0 + 2 * DAY, "30.00", currency="EUR")
    campaign = campaign_results(conn, cid, 7 * DAY, "EUR")
    flow = flow_results(conn, "win_back", T0, T0 + 7 * DAY, 7 * DAY, currency="EUR")
    assert campaign.total.counts["conversions"] == 0
    assert (flow.total.counts["conversions"], flow.total.revenue) == (1, Decimal("30.00"))


def test_a_click_on_the_campaign_mail_after_the_flow_mail_wins_the_order_back(
        conn: Connection) -> None:
    ann = member(conn, "ann", "loyal")
    cid, _ = started(conn, SPRING)
    [sent] = send_all(conn, cid, T0)
    mail(conn, ann, "win_back", "one", None, T0 + DAY)
    event(conn, ann, sent.id, "email_clicked", T0 + 2 * DAY)  # the latest touch
    add_order(conn, ann, T0 + 3 * DAY, "30.00", currency="EUR")
    assert campaign_results(conn, cid, 7 * DAY, "EUR").total.counts["conversions"] == 1
    flow = flow_results(conn, "win_back", T0, T0 + 7 * DAY, 7 * DAY, currency="EUR")
    assert flow.total.counts["conversions"] == 0
