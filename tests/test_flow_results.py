"""Flow results: counts per step and variant, last-touch conversions, segment sizes per day."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, insert

from lifecycle.models import Message, SegmentMembership, Touchpoint
from lifecycle.results import flow_results, segment_sizes
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order

T = datetime(2026, 5, 31, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def mail(conn: Connection, cid: int, flow: str, step: str, variant: str | None,
         at: datetime, status: str = "sent") -> int:
    return int(conn.execute(insert(Message).returning(Message.id).values(
        idempotency_key=f"{flow}:{cid}:{step}:{at.isoformat()}", customer_id=cid, flow=flow,
        step=step, template=variant or step, variant=variant, to_email="x@example.com",
        status=status, due_at=at, sent_at=at if status == "sent" else None, attempts=1,
        context={}, created_at=at, updated_at=at)).scalar_one())


def event(conn: Connection, cid: int, message_id: int, kind: str, at: datetime) -> None:
    conn.execute(insert(Touchpoint).values(
        customer_id=cid, kind=kind, channel="email", occurred_at=at, recorded_at=at,
        message_id=message_id, data={}))


def a_win_back_month(conn: Connection) -> None:
    a, b, c = (add_customer(conn, name, T - 400 * DAY) for name in ("a", "b", "c"))
    m1 = mail(conn, a, "win_back", "one", "winback_1", T - 10 * DAY)
    event(conn, a, m1, "email_delivered", T - 10 * DAY)
    event(conn, a, m1, "email_opened", T - 10 * DAY)
    event(conn, a, m1, "email_opened", T - 9 * DAY)  # a second open of the same mail
    event(conn, a, m1, "email_clicked", T - 9 * DAY)
    add_order(conn, a, T - 3 * DAY, "30.00")  # 7 days after the send, 6 after the click
    mail(conn, a, "win_back", "one", "winback_1", T - 12 * DAY, status="suppressed")
    m2 = mail(conn, b, "win_back", "one", "winback_2", T - 8 * DAY)
    event(conn, b, m2, "email_machine_opened", T - 8 * DAY)
    event(conn, b, m2, "unsubscribed", T - 7 * DAY)
    mail(conn, b, "loyalty_offer", "offer", None, T - 5 * DAY)
    add_order(conn, b, T - 4 * DAY, "50.00")  # the loyalty mail is the later touch
    m4 = mail(conn, c, "win_back", "two", None, T - 6 * DAY)
    event(conn, c, m4, "email_bounced", T - 6 * DAY)
    add_order(conn, c, T - 1 * DAY, "20.00")
    add_order(conn, c, T - 1 * DAY, "99.00", status="refunded")  # not a completed order


def test_results_count_each_event_once_per_mail_and_keep_machine_opens_apart(
        conn: Connection) -> None:
    a_win_back_month(conn)
    r = flow_results(conn, "win_back", T - 30 * DAY, T, 7 * DAY, ["one", "two"])
    rows = {(row.step, row.variant): row for row in r.rows}
    assert list(rows) == [("one", "winback_1"), ("one", "winback_2"), ("two", None)]
    first, second, two = rows[("one", "winback_1")], rows[("one", "winback_2")], rows[("two", None)]
    assert (first.counts["decided"], first.counts["sent"]) == (2, 1)
    assert (first.counts["delivered"], first.counts["opened"], first.counts["clicked"]) == (1, 1, 1)
    assert (second.counts["opened"], second.counts["unsubscribed"]) == (0, 1)
    assert two.counts["bounced"] == 1 and two.rate("bounced") == 1.0
    assert r.has_variants and r.total.counts["sent"] == 3


def test_an_order_is_credited_once_to_the_latest_mail_sent_or_clicked_in_the_window(
        conn: Connection) -> None:
    a_win_back_month(conn)
    r = flow_results(conn, "win_back", T - 30 * DAY, T, 7 * DAY, ["one", "two"])
    rows = {(row.step, row.variant): row for row in r.rows}
    # a's order came 7 days after the send but 6 after the click: the click keeps it in.
    assert (rows[("one", "winback_1")].counts["conversions"],
            rows[("one", "winback_1")].revenue) == (1, Decimal("30.00"))
    # b's order followed a later loyalty mail: it is that flow's, not win_back's.
    assert rows[("one", "winback_2")].counts["conversions"] == 0
    assert (r.total.counts["conversions"], r.total.revenue) == (2, Decimal("50.00"))
    loyalty = flow_results(conn, "loyalty_offer", T - 30 * DAY, T, 7 * DAY)
    assert loyalty.total.revenue == Decimal("50.00")
    by_day = {d.day: d for d in r.daily}
    assert by_day[(T - 3 * DAY).date()].revenue == Decimal("30.00")
    assert sum(d.sent for d in r.daily) == 3 and len(r.daily) == 31
    narrow = flow_results(conn, "win_back", T - 30 * DAY, T, 3 * DAY)
    assert narrow.total.counts["conversions"] == 0


def test_segment_sizes_follow_each_stay_day_by_day(conn: Connection) -> None:
    a, b, c = (add_customer(conn, name, T - 400 * DAY) for name in ("a", "b", "c"))
    conn.execute(insert(SegmentMembership), [
        {"customer_id": a, "segment": "vip", "entered_at": T - 3 * DAY,
         "exited_at": T - 1 * DAY, "reason": {}},
        {"customer_id": b, "segment": "vip", "entered_at": T - 10 * DAY, "exited_at": None,
         "reason": {}},
        {"customer_id": c, "segment": "lapsed", "entered_at": T - 2 * DAY, "exited_at": None,
         "reason": {}}])
    days, series = segment_sizes(conn, T - 4 * DAY, T)
    assert days[0] == (T - 4 * DAY).date() and days[-1] == T.date()
    sizes = {s.segment: s.sizes for s in series}
    assert sizes == {"vip": [1, 2, 2, 1, 1], "lapsed": [0, 0, 1, 1, 1]}
