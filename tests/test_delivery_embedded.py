"""End to end in the embedded default: flows on a sample shop write .eml files at simulated times.

Scheduler jobs (segments, flows, mail dispatch) run on a ManualClock; real
dramatiq workers take the mails from the broker (in-process and Redis) and the
file transport writes them.
"""

from __future__ import annotations

import email
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from email.message import Message as MimeMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from lifecycle import runtime
from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.imports import import_rows
from lifecycle.links import verify
from lifecycle.models import Customer, Message, MessageStatus, Order, Touchpoint
from lifecycle.processes import prepare, running_worker
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.scheduler import Job, Scheduler, flows_job, mail_job, segments_job
from lifecycle.timeutil import UTC, zone
from tests.factories import add_customer, add_order, add_touchpoint

SECRET = "s" * 40
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def settle(app: App, seconds: float = 30.0) -> None:
    """Wait until no mail is queued or being sent."""
    deadline = time.monotonic() + seconds
    while True:
        with app.engine.connect() as conn:
            busy = conn.execute(select(func.count()).select_from(Message).where(
                Message.status.in_((MessageStatus.QUEUED.value,
                                    MessageStatus.SENDING.value)))).scalar_one()
        if not busy:
            return
        assert time.monotonic() < deadline, "mails stayed queued"
        time.sleep(0.05)


def run_until(app: App, scheduler: Scheduler, clock: ManualClock, end: datetime,
              step: timedelta = timedelta(hours=1)) -> None:
    while clock.now() < end:
        clock.advance(step)
        scheduler.tick()
        settle(app)


def eml_files(outbox: Path) -> dict[str, MimeMessage]:
    return {p.name: email.message_from_bytes(p.read_bytes()) for p in outbox.rglob("*.eml")}


def body(mail: MimeMessage, subtype: str) -> str:
    for part in mail.walk():
        if part.get_content_type() == f"text/{subtype}":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    raise AssertionError(f"no text/{subtype} part")


def test_the_shipped_flows_write_mails_as_files_at_the_right_simulated_times(
        fresh_database_url: str, broker_url: str | None, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    outbox = tmp_path / "outbox"
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       broker_url=broker_url, worker_threads=2, outbox_dir=outbox,
                       secret_key=SECRET, shop_name="Leaf and Bean",
                       base_url="https://crm.leaf.example")
    app = App(settings, clock=clock)
    broker = prepare(app)
    scheduler = Scheduler(app, [Job("segments.refresh", 0, segments_job),
                                Job("flows.tick", 0, flows_job), Job("mail.dispatch", 0, mail_job)])
    try:
        with app.engine.begin() as conn:
            shop = SampleShop(ShopShape(customers=60, years=2), until=T0 - timedelta(days=1),
                              seed=7)
            import_rows(conn, "customers", shop.customers())
            import_rows(conn, "orders", shop.orders())
            buyer, lapsing = conn.execute(select(Customer.id).order_by(Customer.id).limit(2)) \
                .scalars().all()
            conn.execute(update(Customer).where(Customer.id.in_((buyer, lapsing))).values(
                timezone="Europe/Berlin", marketing_consent=True))
            conn.execute(Order.__table__.delete().where(Order.customer_id == lapsing))
            add_order(conn, lapsing, T0 - timedelta(days=170), "42.00")  # lapses on day 11
            # A first-time buyer (new tomorrow) and a regular whose fourth order makes them loyal.
            newbie = add_customer(conn, "newbie", T0, timezone="Europe/Berlin")
            regular = add_customer(conn, "regular", T0 - timedelta(days=100),
                                   timezone="Europe/Berlin")
            for days in (90, 60, 30):
                add_order(conn, regular, T0 - timedelta(days=days), "20.00")
        with running_worker(app, broker):
            scheduler.tick()  # first run: segments computed, trigger cursors placed
            settle(app)
            ordered_at = T0 + timedelta(minutes=20)  # 10:20 in Berlin
            with app.engine.begin() as conn:
                add_order(conn, buyer, ordered_at, "64.50",
                          items=[{"name": "Sencha", "quantity": 2, "price": "32.25"}])
                order_id = conn.execute(select(Order.external_id).where(
                    Order.customer_id == buyer).order_by(Order.ordered_at.desc()).limit(1)
                ).scalar_one()
                add_touchpoint(conn, buyer, "order_placed", ordered_at, order_id=order_id,
                               nth=5, total="64.50")
                # Tomorrow they answer the survey of an earlier order with a 10: a promoter.
                add_touchpoint(conn, buyer, "feedback", T0 + timedelta(days=1), score=10)
                for customer, nth in ((newbie, 1), (regular, 4)):
                    add_order(conn, customer, ordered_at, "20.00")
                    add_touchpoint(conn, customer, "order_placed", ordered_at, nth=nth,
                                   total="20.00")
            run_until(app, scheduler, clock, T0 + timedelta(days=12))
            # Nothing is timed to the hour after this: three-hourly ticks (still at 09:00 UTC).
            run_until(app, scheduler, clock, T0 + timedelta(days=29), step=timedelta(hours=3))
        with app.engine.connect() as conn:
            statuses = dict(conn.execute(select(Message.template, Message.status)
                                         .where(Message.customer_id.in_((buyer, lapsing)))).all())
            later = {customer: dict(conn.execute(
                select(Message.template, Message.status)
                .where(Message.customer_id == customer)).all()) for customer in (newbie, regular)}
            sent_touches = conn.execute(select(func.count()).select_from(Touchpoint).where(
                Touchpoint.kind == "email_sent")).scalar_one()
            sent = conn.execute(select(func.count()).select_from(Message).where(
                Message.status == "sent")).scalar_one()
    finally:
        runtime.set_app(None)
        app.close()
    assert statuses == {"thank_you": "sent", "feedback_request": "sent", "winback_1": "sent",
                        "winback_2": "sent", "winback_3": "sent", "review_request": "sent"}
    assert sent_touches == sent  # one timeline entry per mail sent
    files = eml_files(outbox)
    mine = {m["X-Lifecycle-Template"]: m for m in files.values()
            if m["X-Lifecycle-Customer-Id"] in (str(buyer), str(lapsing))}
    assert set(mine) == set(statuses)
    # Their first order thanked and asked about like anyone's, then the nudge; the regular's
    # loyalty thanks.
    assert later == {
        newbie: {"thank_you": "sent", "feedback_request": "sent", "second_purchase": "sent"},
        regular: {"thank_you": "sent", "feedback_request": "sent", "loyalty_offer": "sent"}}
    by_customer = {(m["X-Lifecycle-Customer-Id"], m["X-Lifecycle-Template"]): m
                   for m in files.values()}
    # New from the refresh of 3 March, 09:00 UTC (10:00 Berlin); three weeks later at 10:00
    # Berlin is 24 March, 09:00 UTC, still winter time there.
    nudge = by_customer[(str(newbie), "second_purchase")]
    assert parsedate_to_datetime(nudge["Date"]) == datetime(2026, 3, 24, 9, tzinfo=UTC)
    assert "NEXT10" in body(nudge, "plain")
    # Loyal from the same refresh; the next day at 10:00 Berlin.
    loyalty = by_customer[(str(regular), "loyalty_offer")]
    assert parsedate_to_datetime(loyalty["Date"]) == datetime(2026, 3, 4, 9, tzinfo=UTC)
    assert "THANKS15" in body(loyalty, "plain") and "ordered from us 4 times" in body(loyalty, "plain")
    thanks = mine["thank_you"]
    # The thank-you goes two hours after the order, on the next hourly tick.
    assert parsedate_to_datetime(thanks["Date"]) == T0 + timedelta(hours=3)
    assert order_id in body(thanks, "plain") and "64.50" in body(thanks, "plain")
    assert "Leaf and Bean" in body(thanks, "html")
    # The feedback request: 10:00 in Berlin on the seventh day after enrolment (11:00 on
    # 2 March there), so 9 March, 09:00 UTC.
    feedback = mine["feedback_request"]
    assert parsedate_to_datetime(feedback["Date"]) == datetime(2026, 3, 9, 9, tzinfo=UTC)
    nps = [line for line in body(feedback, "plain").split() if "/f/" in line]
    assert len(nps) == 11 and nps[10].endswith("score=10")
    # Win-back: more than 180 days after the last order is 13 March; the daily refresh
    # (09:00 UTC, 24 h after the first) sees it, the morning wait ends at 10:00 Berlin and
    # the test's hourly tick sends it within that hour.
    winback = mine["winback_1"]
    local = parsedate_to_datetime(winback["Date"]).astimezone(zone("Europe/Berlin"))
    assert local.date() == date(2026, 3, 13) and 10 <= local.hour <= 11
    # Then 10 % a week later (at 10:00, though the first went at 11:00), and 20 % ten days
    # after that: 30 March, the day after Berlin
    # moved to summer time, so 10:00 there is 08:00 UTC (the three-hourly tick sends at 09:00).
    second, last = mine["winback_2"], mine["winback_3"]
    assert parsedate_to_datetime(second["Date"]) == datetime(2026, 3, 20, 9, tzinfo=UTC)
    assert "BACK10" in body(second, "plain")
    local = parsedate_to_datetime(last["Date"]).astimezone(zone("Europe/Berlin"))
    assert local.date() == date(2026, 3, 30) and 10 <= local.hour <= 12
    assert local.utcoffset() == timedelta(hours=2) and "BACK20" in body(last, "plain")
    # Advocacy: the daily refresh at the moment of the answer (3 March, 09:00 UTC) makes
    # them a promoter; one business day later at 10:00 Berlin comes the review request.
    review = mine["review_request"]
    local = parsedate_to_datetime(review["Date"]).astimezone(zone("Europe/Berlin"))
    assert local.date() == date(2026, 3, 4) and 10 <= local.hour <= 11
    for mail in mine.values():
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        token = mail["List-Unsubscribe"].split("/u/")[1].split(">")[0]
        assert verify(SECRET, "unsubscribe", token)["m"] == int(mail["X-Lifecycle-Message-Id"])
        assert mail["Reply-To"].startswith("r-")  # r-<id>-<mac>: lifecycle.mail.addresses
