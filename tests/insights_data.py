"""A small shop whose insights are worked out by hand (see tests/test_insights.py).

As of 2026-06-01 00:00 UTC:

* Ann: 2026-01-10 $100, 01-20 $50 (10 days on), 03-05 $30; stage at_risk (repeat before);
  a welcome mail two days before her first order, a spring campaign mail and a click on
  the welcome mail before her second; a win-back mail exactly 7 days before her third.
* Bob: 01-15 $40, 05-15 12:00 $60 (120.5 days on); stage repeat; a spring mail a day before
  his second order.
* Cy: 03-01 €70 (an order in another currency); stage new.
* Dee: 05-20 $20, 05-21 $25; no stage recorded; a welcome mail that failed.
* Gus: 05-30 $15 (a mail sent after it), 06-05 $99 (after the moment).
* Eve: a cancelled order only.  Fay: an order after the moment only.  Hal: a prospect.
* NPS answers: April 10 (10, "Lovely tea"), 9, 3 ("Late parcel"), 7; May 6; June 2 (after).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert

from lifecycle.campaigns.model import Campaign
from lifecycle.models import Message, SegmentMembership
from tests.factories import add_customer, add_order, add_touchpoint

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def shop(conn: Connection) -> dict[str, int]:
    """Insert the shop's rows; the customers' row ids by first name."""
    ids = {name: add_customer(conn, name.lower(), at(1, 1), first_name=name)
           for name in ("Ann", "Bob", "Cy", "Dee", "Gus", "Eve", "Fay", "Hal")}
    for name, when, total, status, currency in (
            ("Ann", at(1, 10), 100, "completed", "USD"), ("Ann", at(1, 20), 50, "completed", "USD"),
            ("Ann", at(3, 5), 30, "completed", "USD"), ("Bob", at(1, 15), 40, "completed", "USD"),
            ("Bob", at(5, 15, 12), 60, "completed", "USD"), ("Cy", at(3, 1), 70, "completed", "EUR"),
            ("Dee", at(5, 20), 20, "completed", "USD"), ("Dee", at(5, 21), 25, "completed", "USD"),
            ("Gus", at(5, 30), 15, "completed", "USD"), ("Gus", at(6, 5), 99, "completed", "USD"),
            ("Eve", at(2, 1), 500, "cancelled", "USD"), ("Fay", at(6, 2), 80, "completed", "USD")):
        add_order(conn, ids[name], when, total, status=status, currency=currency)
    for name, segment, entered, exited in (
            ("Ann", "new", at(1, 10), at(1, 20)), ("Ann", "repeat", at(1, 20), at(4, 1)),
            ("Ann", "at_risk", at(4, 1), at(7, 1)), ("Ann", "churned", at(7, 1), None),
            ("Ann", "promoter", at(4, 10), None),
            ("Bob", "new", at(1, 15), at(5, 15, 12)), ("Bob", "repeat", at(5, 15, 12), None),
            ("Cy", "new", at(3, 1), None), ("Hal", "prospect", at(1, 1), None)):
        conn.execute(insert(SegmentMembership).values(
            customer_id=ids[name], segment=segment, entered_at=entered, exited_at=exited,
            reason={}))
    spring = conn.execute(insert(Campaign).values(
        name="spring", spec={}, status="sent", source="cli", created_by="test",
        created_at=at(1, 1), updated_at=at(1, 1)).returning(Campaign.id)).scalar_one()
    mails: dict[str, int] = {}
    for key, name, flow, campaign, sent, status in (
            ("welcome", "Ann", "welcome", None, at(1, 8), "sent"),
            ("spring-ann", "Ann", None, spring, at(1, 18), "sent"),
            ("win_back", "Ann", "win_back", None, at(2, 26), "sent"),
            ("spring-bob", "Bob", None, spring, at(5, 14, 12), "sent"),
            ("welcome-dee", "Dee", "welcome", None, None, "failed"),
            ("thanks-gus", "Gus", "thank_you", None, at(5, 30, 9), "sent")):
        mails[key] = _mail(conn, key, ids[name], flow, campaign, sent, status)
    from lifecycle.models import Touchpoint

    conn.execute(insert(Touchpoint).values(
        customer_id=ids["Ann"], kind="email_clicked", channel="email", occurred_at=at(1, 19),
        recorded_at=at(1, 19), message_id=mails["welcome"], data={}))
    for name, when, score, comment in (
            ("Ann", at(4, 10), 10, "Lovely tea"), ("Bob", at(4, 12), 9, None),
            ("Dee", at(4, 20), 3, "Late parcel"), ("Gus", at(4, 25), 7, ""),
            ("Cy", at(5, 3), 6, None), ("Ann", at(6, 2), 10, "Later")):
        data: dict[str, Any] = {"score": score, "question": "nps"}
        if comment is not None:
            data["comment"] = comment
        add_touchpoint(conn, ids[name], "feedback", when, **data)
    add_touchpoint(conn, ids["Bob"], "feedback", at(5, 4), score="nine")  # not a number
    return ids


def _mail(conn: Connection, key: str, customer_id: int, flow: str | None,
          campaign: int | None, sent: datetime | None, status: str) -> int:
    return int(conn.execute(insert(Message).values(
        idempotency_key=key, customer_id=customer_id, flow=flow, campaign_id=campaign,
        step="s", template="t", to_email="x@example.com", status=status,
        due_at=sent or at(1, 1), sent_at=sent, context={}, created_at=sent or at(1, 1),
        updated_at=sent or at(1, 1)).returning(Message.id)).scalar_one())


#: What customers say with their NPS answers in :func:`busy_shop`.
SAYINGS = ("Lovely tea, quick delivery.", "The parcel took a week.", "Great coffee, pricey.",
           "Exactly as described.", "Wrong grind, but support sorted it.")


def busy_shop(app: Any) -> None:
    """A sample shop of a year (300 customers, orders until the app's clock) with its
    segments refreshed, NPS answers of the last six months (a few with a comment), and flow
    and campaign mails sent a day or two before some orders: a page worth a screenshot."""
    import random
    from datetime import timedelta

    from sqlalchemy import select

    from lifecycle.cli.sample import load_sample
    from lifecycle.models import Order, Touchpoint
    from lifecycle.segments.compute import refresh_all
    from lifecycle.segments.service import definitions

    now = app.clock.now()
    load_sample(app, 300, 2.5, 1.0, 11, now, None)
    rng = random.Random(7)
    with app.engine.begin() as conn:
        refresh_all(conn, definitions(app), now, now)
        orders = conn.execute(select(Order.customer_id, Order.ordered_at).where(
            Order.status == "completed", Order.ordered_at > now - timedelta(days=365))
            .order_by(Order.id)).all()
        spring = conn.execute(insert(Campaign).values(
            name="spring_tea", spec={}, status="sent", source="cli", created_by="test",
            created_at=now, updated_at=now).returning(Campaign.id)).scalar_one()
        for n, (customer_id, ordered_at) in enumerate(orders):
            pick = rng.random()
            if pick < 0.35:  # a mail a day or two before this order
                flow, campaign = (None, spring) if pick < 0.08 else (
                    rng.choice(("thank_you", "second_purchase", "win_back")), None)
                _mail(conn, f"busy-{n}", customer_id, flow, campaign,
                      ordered_at - timedelta(hours=rng.randint(6, 60)), "sent")
        people = sorted({customer_id for customer_id, _at in orders})
        for n in range(90):
            score = rng.choices(range(11), (2, 1, 1, 2, 2, 3, 5, 8, 12, 18, 16))[0]
            when = now - timedelta(days=rng.uniform(0, 180))
            data: dict[str, Any] = {"score": score, "question": "nps"}
            if rng.random() < 0.3:
                data["comment"] = rng.choice(SAYINGS)
            conn.execute(insert(Touchpoint).values(
                customer_id=rng.choice(people), kind="feedback", channel="email",
                occurred_at=when, recorded_at=when, data=data, source_key=f"busy-nps-{n}"))
