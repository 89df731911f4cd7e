"""The demo's parts: the fast clock, its settings, the live shop and the audience."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.cli.sample import load_sample
from lifecycle.clock import FastClock, ManualClock, real_seconds, system_clock
from lifecycle.config import load_settings
from lifecycle.demo.audience import COMMENTS, Audience, Habit, Mail, plan
from lifecycle.demo.doors import HttpDoors, webhook_key
from lifecycle.demo.shop import CURRENCY_OF, MARKETS, PRICES, LiveShop, history_shape
from lifecycle.demo.stage import (
    SHOP_URL,
    demo_jobs,
    demo_overrides,
    demo_settings,
    is_demo_database,
    resume_point,
)
from lifecycle.feedback import settle_held
from lifecycle.imports import import_rows
from lifecycle.locales import SHIPPED, parse_locale
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, MessageContent, Order, Suppression, Touchpoint
from lifecycle.orders import LIVE
from lifecycle.sample import SampleShop, ShopShape
from lifecycle.tasks import heartbeat
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from tests.factories import add_campaign, add_customer

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)


class Ticks:
    """A stand-in for ``time.monotonic`` that moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ the clock

class ClientDoors(HttpDoors):
    """HttpDoors, its requests handed to a test client of the web app in this process."""

    def __init__(self, client: TestClient, *args: Any) -> None:
        super().__init__("http://testserver", *args)
        self.client = client

    def _send(self, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Any:
        answer = self.client.request("POST" if body is not None else "GET", path, content=body,
                                     headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.content


def test_a_fast_clock_runs_its_speed_times_faster_than_real_time() -> None:
    ticks = Ticks()
    clock = FastClock(T0, 43_200, monotonic=ticks)
    assert clock.now() == T0
    ticks.now += 2.0  # two real seconds: a day
    assert clock.now() == T0 + timedelta(days=1)
    ticks.now += 0.25
    assert clock.now() == T0 + timedelta(days=1, hours=3)


def test_a_fast_clock_refuses_a_speed_of_zero_or_less() -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        FastClock(T0, 0)


def test_real_seconds_measure_a_span_of_a_fast_clock_in_real_time() -> None:
    fast = FastClock(T0, 3600)
    assert real_seconds(fast, timedelta(hours=2)) == 2.0
    assert real_seconds(system_clock, timedelta(minutes=2)) == 120.0
    assert real_seconds(ManualClock(T0), timedelta(seconds=5)) == 5.0


def test_health_judges_a_process_by_real_time_under_a_fast_clock(fresh_database_url: str) -> None:
    ticks = Ticks()
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url)),
              clock=FastClock(T0, 43_200, monotonic=ticks))
    with app.engine.begin() as conn:
        heartbeat.record(conn, "scheduler", app.clock.now(), {})
    client = TestClient(create_app(app))
    ticks.now += 60  # a real minute: a month of shop time
    [process] = client.get("/healthz").json()["processes"]
    assert process["alive"] is True
    ticks.now += 120
    [process] = client.get("/healthz").json()["processes"]
    assert process["alive"] is False
    app.close()


# ------------------------------------------------------------ the settings

def test_demo_links_name_the_port_it_serves_on_and_the_shop_an_example_site_unless_set() -> None:
    settings = load_settings({})
    mine = demo_settings(settings, host="0.0.0.0", port=8123, speed=43_200,
                         webhook_public_key="k", environ={})
    assert mine.base_url == "http://127.0.0.1:8123"
    assert mine.shop_url == "https://leaf-and-bean.example"  # its review page is not ours
    env = {"LIFECYCLE_BASE_URL": "https://crm.example.com",
           "LIFECYCLE_SHOP_URL": "https://tea.example.org"}
    theirs = demo_settings(load_settings(env), host="127.0.0.1", port=8123, speed=43_200,
                           webhook_public_key="k", environ=env)
    assert theirs.base_url == "https://crm.example.com"
    assert theirs.shop_url == "https://tea.example.org"


def test_the_demo_names_each_setting_it_overrides_and_leaves_the_environments_alone() -> None:
    every = demo_overrides("0.0.0.0", 8123, environ={})
    assert every == {"LIFECYCLE_BASE_URL": ("base_url", "http://127.0.0.1:8123"),
                     "LIFECYCLE_SHOP_NAME": ("shop_name", "Leaf & Bean"),
                     "LIFECYCLE_SHOP_URL": ("shop_url", "https://leaf-and-bean.example"),
                     "LIFECYCLE_MAIL_FROM": ("mail_from", "Leaf & Bean <hello@leafandbean.example>"),
                     "LIFECYCLE_SHOP_ADDRESS": ("shop_address", "Teestraße 12, 10115 Berlin, Germany")}
    env = {"LIFECYCLE_SHOP_NAME": "Tea Corner", "LIFECYCLE_SHOP_URL": " "}
    assert set(demo_overrides("127.0.0.1", 8123, environ=env)) == set(every) - {"LIFECYCLE_SHOP_NAME"}
    settings = demo_settings(load_settings(env), host="127.0.0.1", port=8123, speed=1,
                             webhook_public_key="k", environ=env)
    assert settings.shop_name == "Tea Corner"


def test_commands_on_a_database_the_demo_made_warn_once_that_it_runs_on_the_demos_clock(
        fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url)))
    app.upgrade_database()
    monkeypatch.setenv("LIFECYCLE_DATABASE_URL", fresh_database_url)
    plain = CliRunner().invoke(cli, ["segments", "list"])
    assert plain.exit_code == 0, plain.output
    assert "lifecycle demo" not in plain.output
    with app.engine.begin() as conn:
        heartbeat.record(conn, "demo", app.clock.now() + timedelta(days=90), {})
    app.close()
    warned = CliRunner().invoke(cli, ["segments", "list"])
    assert warned.exit_code == 0, warned.output
    assert warned.output.count("was made by `lifecycle demo`") == 1
    assert "90 days ahead of real time" in warned.output


def test_demo_durations_meant_in_real_time_are_stretched_by_the_clocks_speed() -> None:
    settings = load_settings({})
    mine = demo_settings(settings, host="127.0.0.1", port=8000, speed=100,
                         webhook_public_key="k", environ={})
    assert mine.send_lease_seconds == settings.send_lease_seconds * 100
    assert mine.retry_base_seconds == settings.retry_base_seconds * 100
    # shop time stays shop time: the refresh interval and the attribution window
    assert mine.segment_refresh_hours == settings.segment_refresh_hours
    assert mine.attribution_days == settings.attribution_days
    assert mine.tick_seconds < 1
    refresh = next(job for job in demo_jobs() if job.name == "segments.refresh")
    assert refresh.every_seconds == 0  # due by the demo clock, looked at on every tick


def test_the_demo_clock_resumes_where_an_earlier_run_left_off(conn: Connection) -> None:
    assert not is_demo_database(conn)
    assert resume_point(conn, T0) == T0
    heartbeat.record(conn, "demo", T0 + timedelta(days=40), {})
    assert is_demo_database(conn)
    assert resume_point(conn, T0) == T0 + timedelta(days=40)
    assert resume_point(conn, T0 + timedelta(days=50)) == T0 + timedelta(days=50)


def test_the_demo_refuses_a_database_it_did_not_make(fresh_database_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url)))
    with app.engine.begin() as conn:
        add_customer(conn, "real-1", T0)
    app.close()
    monkeypatch.setenv("LIFECYCLE_DATABASE_URL", fresh_database_url)
    result = CliRunner().invoke(cli, ["demo", "--seconds", "0"])
    assert result.exit_code == 2
    assert "was not made by `lifecycle demo`" in result.output
    with App(replace(load_settings({}), database_url=make_url(fresh_database_url))).engine.connect() \
            as conn:  # nothing was added to it
        assert conn.execute(select(func.count()).select_from(Order)).scalar_one() == 0


def test_the_demo_refuses_the_sendgrid_transport(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Any) -> None:
    for name, value in {"LIFECYCLE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                        "LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": "SG.x"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["demo", "--seconds", "0"])
    assert result.exit_code == 2
    assert "not sendgrid" in result.output
    assert not (tmp_path / "x.db").exists()  # refused before anything was made


def test_staff_password_gives_an_account_a_new_password_and_names_a_missing_one(
        fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lifecycle.staff import add_staff, check_password

    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url)))
    with app.engine.begin() as conn:
        add_staff(conn, "sue@shop.example", "support", "an old password", T0)
    monkeypatch.setenv("LIFECYCLE_DATABASE_URL", fresh_database_url)
    runner = CliRunner()
    done = runner.invoke(cli, ["staff", "password", "Sue@shop.example", "--password-stdin"],
                         input="a brand new password\n")
    assert done.exit_code == 0, done.output
    short = runner.invoke(cli, ["staff", "password", "sue@shop.example", "--password-stdin"],
                          input="short\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    nobody = runner.invoke(cli, ["staff", "password", "bob@shop.example", "--generate"])
    assert nobody.exit_code == 2 and "no staff account for 'bob@shop.example'" in nobody.output
    with app.engine.begin() as conn:
        assert check_password(conn, "sue@shop.example", "a brand new password", T0)
        assert check_password(conn, "sue@shop.example", "an old password", T0) is None
    app.close()


# ---------------------------------------------------------------- the shop

@pytest.fixture
def shop_app(fresh_database_url: str) -> Any:
    clock = ManualClock(T0)
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url)), clock=clock)
    shop = SampleShop(ShopShape(customers=400), until=T0, seed=3)
    with app.engine.begin() as conn:
        import_rows(conn, "customers", shop.customers())
        import_rows(conn, "orders", shop.orders())
    yield app, clock
    app.close()


def test_the_live_shop_places_orders_through_the_live_path_as_its_clock_runs(shop_app: Any) -> None:
    app, clock = shop_app
    shop = LiveShop(app, seed=5)
    with app.engine.connect() as conn:
        shop.load(conn)
    shop.step(clock.now())
    for _ in range(10 * 8):  # ten days, three hours a step
        clock.advance(timedelta(hours=3))
        shop.step(clock.now())
    assert shop.placed >= 10 and shop.new_customers >= 1
    with app.engine.connect() as conn:
        live = conn.execute(select(Order.external_id, Order.customer_id, Order.ordered_at)
                            .where(Order.external_id.like("W%"))).all()
        announced = conn.execute(select(func.count()).select_from(Touchpoint).where(
            Touchpoint.kind == "order_placed", Touchpoint.channel == LIVE)).scalar_one()
        newcomers = conn.execute(select(Customer.created_at, func.min(Order.ordered_at))
                                 .join(Order, Order.customer_id == Customer.id)
                                 .where(Customer.created_at >= T0)
                                 .group_by(Customer.id)).all()
    assert len(live) == shop.placed == announced  # each one fires order flows, once
    assert all(T0 < order.ordered_at <= clock.now() for order in live)
    assert len(newcomers) == shop.new_customers
    assert all(created < first for created, first in newcomers)  # signed up, then ordered


def test_the_demo_shops_customers_read_every_shipped_language_and_its_orders_show_products(
        fresh_database_url: str) -> None:
    """The demo's history (as ``lifecycle demo`` loads it) and its live shop: customers of
    all six shipped languages and a few of others, each in their zone and currency, and
    order lines that name their product's page and picture on the shop's site."""
    clock = ManualClock(T0)
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      shop_url=SHOP_URL), clock=clock)
    try:
        load_sample(app, 300, 2.5, 1.0, 3, T0, None, **history_shape(SHOP_URL))
        shop = LiveShop(app, seed=5)
        with app.engine.connect() as conn:
            shop.load(conn)
        shop.step(clock.now())
        for _ in range(5 * 8):  # five days, three hours a step
            clock.advance(timedelta(hours=3))
            shop.step(clock.now())
        with app.engine.connect() as conn:
            people = conn.execute(select(Customer.external_id, Customer.locale,
                                         Customer.timezone)).all()
            orders = conn.execute(select(Order.external_id, Order.currency, Order.total,
                                         Order.items, Customer.locale)
                                  .join(Customer, Customer.id == Order.customer_id)).all()
    finally:
        app.close()
    assert shop.placed >= 5 and shop.new_customers >= 1
    markets = {(tz, locale) for tz, locale, _, _ in MARKETS}
    assert all((p.timezone, p.locale) in markets for p in people)  # each in their own zone
    languages = {(parse_locale(p.locale) or "").split("_")[0] for p in people}
    assert set(SHIPPED) <= languages  # en, de, nb, sv, da, pl all get their own copy
    assert languages - set(SHIPPED)  # and a few read the fallback
    assert {o.currency for o in orders} == {"USD", "GBP", "EUR", "NOK", "SEK", "DKK", "PLN"}
    live = [o for o in orders if o.external_id.startswith("W")]
    assert live and len(live) < len(orders)
    for order in orders:
        assert order.currency == CURRENCY_OF[order.locale]  # a German pays in euros
        assert order.items
        total = 0
        for item in order.items:
            assert item["price"] == PRICES[order.currency][item["sku"]]
            total += Decimal(item["price"]) * item["quantity"]
            assert item["url"].startswith(f"{SHOP_URL}/products/")
            assert item["image_url"].startswith(f"{SHOP_URL}/images/products/")
        assert order.total == total


def test_an_order_planned_after_a_click_is_placed_at_its_time(shop_app: Any) -> None:
    app, clock = shop_app
    shop = LiveShop(app, seed=5)
    with app.engine.connect() as conn:
        shop.load(conn)
    shop.step(clock.now())
    shop.plan("C0000007", clock.now() + timedelta(minutes=30))
    clock.advance(timedelta(minutes=20))
    with app.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(Order).join(Customer).where(
            Customer.external_id == "C0000007")).scalar_one()
    shop.step(clock.now())
    clock.advance(timedelta(minutes=20))
    shop.step(clock.now())
    with app.engine.connect() as conn:
        after = conn.execute(select(func.count()).select_from(Order).join(Customer).where(
            Customer.external_id == "C0000007")).scalar_one()
    assert after >= before + 1


def test_the_status_line_counts_flow_mails_and_survives_a_managers_test_send(shop_app: Any) -> None:
    from lifecycle.demo.show import Simulation

    app, clock = shop_app
    lines: list[str] = []
    audience = Audience(doors=None, since=T0)  # type: ignore[arg-type]
    simulation = Simulation(app, LiveShop(app, seed=5), audience, say=lines.append)
    clock.advance(timedelta(hours=1))
    with app.engine.begin() as conn:
        cid = conn.execute(select(Customer.id).order_by(Customer.id)).scalars().first()
        for n, (flow, context) in enumerate((("thank_you", {}),
                                             (None, {"test": "sue@shop.example"}))):
            conn.execute(Message.__table__.insert().values(
                idempotency_key=f"status:{n}", customer_id=cid, flow=flow, step="thanks",
                template="thank_you", to_email="x@example.com", status="sent",
                due_at=clock.now(), sent_at=clock.now(), attempts=1, context=context,
                created_at=clock.now(), updated_at=clock.now()))
    line = simulation.status(clock.now())  # a test send (no flow) once made this raise
    assert "mails sent: thank_you 1;" in line


# ------------------------------------------------------------ the audience

def a_mail(n: int, flow: str = "feedback_request", marketing: bool = True) -> Mail:
    links = "\n".join(f"  {s}: http://127.0.0.1:8123/f/tok{n}.sig?score={s}" for s in range(11))
    return Mail(id=n, customer=f"C{n:07d}", flow=flow, step="ask", to=f"c{n}@example.com",
                sender="Shop <shop@example.com>", subject="How was it?",
                text=f"Hi,\n{links}\nhttps://shop.example.com/\n"
                     f"Unsubscribe: http://127.0.0.1:8123/u/u{n}.sig\n",
                html='<a href="https://shop.example.com/tea?x=1&amp;y=2">Tea</a>',
                reply_to=f"reply+r{n}.sig@example.com", message_id_header=f"<lifecycle.{n}@x>",
                unsubscribe_url=f"http://127.0.0.1:8123/u/u{n}.sig", sent_at=T0,
                provider_id=f"file:{n}", marketing=marketing)


def test_a_readers_plan_is_the_same_for_the_same_seed_and_never_before_the_mail_went_out() -> None:
    for n in range(300):
        mail = a_mail(n)
        first = plan(mail, 42)
        assert first == plan(mail, 42)
        assert all(r.at > mail.sent_at for r in first)
        kinds = [r.kind for r in first]
        if "bounce" in kinds:
            assert kinds == ["bounce"]  # a bounced mail is never opened
            continue
        assert kinds[0] == "delivered"
        opened = next((r.at for r in first if r.kind == "open"), None)
        for reaction in first:
            if reaction.kind in ("click", "answer", "reply", "unsubscribe"):
                assert opened is not None and reaction.at >= opened
    assert any(plan(a_mail(n), 42) != plan(a_mail(n), 43) for n in range(20))


def test_readers_answer_with_the_mails_own_score_links_at_about_the_habits_rates() -> None:
    plans = [plan(a_mail(n), 42) for n in range(2000)]
    kinds = [[r.kind for r in p] for p in plans]
    delivered = sum("delivered" in k for k in kinds)
    opened = sum("open" in k for k in kinds)
    answered = [r for p in plans for r in p if r.kind == "answer"]
    assert 0.97 < delivered / 2000 < 1.0
    assert 0.45 < opened / delivered < 0.65  # feedback mail: 55 %
    assert 0.55 < len(answered) / opened < 0.75  # 65 % of those who open
    for reaction in answered:
        assert reaction.detail["url"].endswith(f"?score={reaction.detail['score']}")
        assert f"/f/tok{reaction.mail_id}." in reaction.detail["url"]
    scores = [r.detail["score"] for r in answered]
    assert sum(s >= 9 for s in scores) / len(scores) > 0.4  # about half are promoters
    said = [r for r in answered if r.detail["comment"]]
    assert 0.2 < len(said) / len(answered) < 0.4  # about 30 % write a comment, in their mood
    assert all(r.detail["comment"] in COMMENTS["promoter" if r.detail["score"] >= 9 else
                                               "passive" if r.detail["score"] >= 7 else
                                               "detractor"] for r in said)
    clicked = [r.detail["url"] for p in plans for r in p if r.kind == "click"
               and "/f/" not in r.detail["url"]]
    assert not clicked  # the feedback mail is answered, not browsed
    browsed = [r.detail["url"] for n in range(400) for r in plan(a_mail(n, "win_back"), 42)
               if r.kind == "click"]
    assert browsed and set(browsed) <= {"https://shop.example.com/",
                                        "https://shop.example.com/tea?x=1&y=2"}
    keen = plan(a_mail(1, "win_back"), 42, {"win_back": Habit(opens=1, clicks=1, orders=1)})
    click = next(r for r in keen if r.kind == "click")
    assert any(r.kind == "order" and r.at > click.at for r in keen)  # the offer worked


def test_the_audience_reaches_timelines_through_the_webhook_inbound_parse_and_the_links(
        fresh_database_url: str, tmp_path: Any) -> None:
    private, public = webhook_key()
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key="s" * 40, outbox_dir=tmp_path / "outbox",
                      sendgrid_webhook_public_key=public, base_url="http://127.0.0.1:8123"),
              clock=ManualClock(T0))
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0, template="feedback_request")
        conn.execute(Message.__table__.update().values(
            context={"order_id": "o0", "marketing": True, "capped": True}))
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    client = TestClient(create_app(app))

    everything = Habit(delivered=1, opens=1, clicks=1, replies=1, answers=1, unsubscribes=1,
                       orders=1, comments=1)
    orders: list[tuple[str, datetime]] = []
    audience = Audience(ClientDoors(client, app.settings.secret_key, private),
                        since=T0 - timedelta(hours=1), seed=1,
                        order=lambda who, at: orders.append((who, at)),
                        habits={"thank_you": everything})
    with app.engine.connect() as conn:
        assert audience.read(conn, T0 + timedelta(minutes=1)) == 1
        assert audience.read(conn, T0 + timedelta(minutes=2)) == 0  # each mail read once
    app.clock.set(T0 + timedelta(days=6))  # every reaction is due by then
    assert audience.act(app.clock.now()) >= 7
    app.clock.set(T0 + timedelta(days=6, seconds=app.settings.nps_hold_seconds + 1))  # held
    settle_held(app)  # (the scheduler's feedback.settle job)
    with app.engine.connect() as conn:
        kinds = {kind: data for kind, data in conn.execute(
            select(Touchpoint.kind, Touchpoint.data).where(Touchpoint.message_id == mid))}
        unsubscribed = conn.execute(select(func.count()).select_from(Suppression)).scalar_one()
    assert {"email_sent", "email_delivered", "email_opened", "email_clicked", "replied",
            "feedback", "unsubscribed"} <= set(kinds)
    assert kinds["feedback"]["score"] in range(11)
    assert kinds["feedback"]["comment"] in {c for said in COMMENTS.values() for c in said}
    assert kinds["replied"]["matched_by"] == "reply-to token"
    assert unsubscribed == 1
    assert not orders  # the feedback mail offers nothing to buy: no click on an offer


def test_the_audience_leaves_alone_mails_sent_before_it_started_and_test_sends(
        conn: Connection) -> None:
    audience = Audience(doors=None, since=T0)  # type: ignore[arg-type]
    [old, test, new] = add_campaign(conn, 3, T0)
    for mid, sent_at, context in ((old, T0 - timedelta(hours=1), {}),
                                  (test, T0 + timedelta(hours=1), {"test": True}),
                                  (new, T0 + timedelta(hours=1), {})):
        conn.execute(Message.__table__.update().where(Message.id == mid).values(
            status="sent", sent_at=sent_at, context=context))
        conn.execute(MessageContent.__table__.insert().values(
            message_id=mid, subject="Hi", text="Hi", html=None, headers={}))
    assert audience.read(conn, T0 + timedelta(days=1)) == 1  # only the new one


class ClosedDoors:
    """A web app that does not listen (yet, or any more): every visit is refused."""

    def __init__(self) -> None:
        self.asked = 0

    def ready(self) -> bool:
        self.asked += 1
        return False

    def _refuse(self, *_: Any) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    events = inbound = follow = answer = one_click = reviews = referrals = _refuse


def test_the_audience_counts_only_what_the_web_app_accepted(conn: Connection) -> None:
    everything = Habit(delivered=1, opens=1, clicks=1, replies=1, answers=1, unsubscribes=1)
    audience = Audience(ClosedDoors(), since=T0, seed=1,  # type: ignore[arg-type]
                        habits={"thank_you": everything})
    [mid] = add_campaign(conn, 1, T0)
    conn.execute(Message.__table__.update().where(Message.id == mid).values(
        status="sent", sent_at=T0 + timedelta(minutes=1), context={"marketing": True}))
    conn.execute(MessageContent.__table__.insert().values(
        message_id=mid, subject="Hi", text="Hi https://shop.example.com/tea", html=None,
        headers={"List-Unsubscribe": "<http://127.0.0.1:8123/u/x.sig>"}))
    assert audience.read(conn, T0 + timedelta(hours=1)) == 1
    assert audience.act(T0 + timedelta(days=6)) == 0  # every visit was refused
    assert audience.done == {}  # so the status line counts none of them


def test_the_simulation_waits_for_the_web_app_to_answer_before_anyone_acts(shop_app: Any) -> None:
    import threading

    from lifecycle.demo.show import Simulation

    app, _clock = shop_app
    doors = ClosedDoors()
    shop = LiveShop(app, seed=5)
    simulation = Simulation(app, shop, Audience(doors, since=T0), say=lambda _: None)  # type: ignore[arg-type]
    simulation._engine_on = lambda: True  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=simulation.run, args=(stop,))
    thread.start()
    try:
        for _ in range(100):  # it asks every step (0.2 s); a few asks are enough to judge
            if doors.asked >= 3:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join()
    assert doors.asked >= 3  # it kept asking whether the web app answers
    assert shop.placed == 0  # neither the shop nor its readers moved while the app was closed


def test_readers_of_review_asks_and_referral_invites_post_them_to_the_api_into_their_segments(
        fresh_database_url: str, tmp_path: Any) -> None:
    from lifecycle.apikeys import create_key
    from lifecycle.models import SegmentMembership

    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key="s" * 40, outbox_dir=tmp_path / "outbox",
                      base_url="http://127.0.0.1:8123"), clock=ManualClock(T0))
    with app.engine.begin() as conn:
        asked, invited = add_campaign(conn, 2, T0, template="review_request")
        conn.execute(Message.__table__.update().where(Message.id == invited).values(
            template="referral_invite", context={
                "order_id": "o1", "marketing": True, "capped": False,
                "offer": {"percent": 10, "prefix": "FRIEND10",
                          "valid": {"years": 0, "months": 0, "days": 60}}}))
        api_key = create_key(conn, "demo", ["reviews:write", "referrals:write"], T0)
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 2
    client = TestClient(create_app(app))

    private, _ = webhook_key()
    keen = Habit(delivered=1, opens=1, clicks=0, replies=0, unsubscribes=0, reviews=1,
                 referrals=1)
    audience = Audience(ClientDoors(client, app.settings.secret_key, private,
                                    api_key), since=T0 - timedelta(hours=1), seed=1,
                        habits={"thank_you": keen})
    with app.engine.connect() as conn:
        assert audience.read(conn, T0 + timedelta(minutes=1)) == 2
    audience.doors.events = lambda *_: None  # type: ignore[method-assign] # no webhook key here
    app.clock.set(T0 + timedelta(days=3))  # every reaction is due by then
    audience.act(app.clock.now())
    assert audience.done["review"] == 1 and audience.done["referral"] == 1
    with app.engine.connect() as conn:
        kinds = dict(conn.execute(select(Customer.external_id, Touchpoint.kind).join(
            Touchpoint, Touchpoint.customer_id == Customer.id).where(
            Touchpoint.kind.in_(("review", "referral")))).all())
        segments = set(conn.execute(select(Customer.external_id, SegmentMembership.segment).join(
            SegmentMembership, SegmentMembership.customer_id == Customer.id).where(
            SegmentMembership.exited_at.is_(None),
            SegmentMembership.segment.in_(("reviewer", "referrer")))).all())
    assert kinds == {"b0": "review", "b1": "referral"}
    assert segments == {("b0", "reviewer"), ("b1", "referrer")}
