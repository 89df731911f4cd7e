"""A campaign end to end on the app: the scheduler's job starts it, the mails go through the
same dispatch, checks and sender as flow mails, named by the campaign on the way."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

from sqlalchemy import insert, select

from lifecycle.app import App
from lifecycle.campaigns.jobs import tick
from lifecycle.campaigns.service import Campaigns
from lifecycle.campaigns.spec import parse_spec
from lifecycle.flows.definitions import Context
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, SegmentMembership, Suppression, Touchpoint, email_hash
from lifecycle.timeline import summary
from lifecycle.yamlfile import loads
from tests.factories import add_customer, daytime_zone

ROOT = Path(__file__).resolve().parent.parent
SPRING = """\
kind: marketing
send: {template: vip_early_access}
audience: {segments: [vip]}
"""


def _scheduled(app: App, text: str = SPRING) -> None:
    spec = parse_spec(loads(text, "campaigns/spring.yaml"), "spring", Context.from_folders(
        app.settings.templates_dir, {"vip", "loyal"}))
    now = app.clock.now()
    with app.engine.begin() as conn:
        Campaigns(conn).create(spec, {"kind": "marketing",
                                      "send": {"template": "vip_early_access"},
                                      "audience": {"segments": ["vip"]}},
                               "max@shop.example", "test", now)
        Campaigns(conn).schedule("spring", spec, "max@shop.example", now)


def _vips(app: App, n: int) -> list[int]:
    now = app.clock.now()
    ids = []
    with app.engine.begin() as conn:
        for i in range(n):
            cid = add_customer(conn, f"v{i}", now, timezone=daytime_zone(now))
            conn.execute(insert(SegmentMembership).values(
                customer_id=cid, segment="vip", entered_at=now, reason={}))
            ids.append(cid)
    return ids


def test_the_scheduler_starts_a_due_campaign_and_the_workers_send_it_once(app: App) -> None:
    _vips(app, 3)
    _scheduled(app)
    assert tick(app) == 1
    assert tick(app) == 0  # started once, whatever ticks come
    handed: list[int] = []
    dispatch(app, handed.extend)
    assert len(handed) == 3
    outcomes = send_batch(app, handed, transport=FileTransport(app.settings.outbox_dir))
    assert outcomes["sent"] == 3
    assert send_batch(app, handed, transport=FileTransport(app.settings.outbox_dir))[
        "skipped"] == 3  # the same ids again: nothing twice
    files = sorted(app.settings.outbox_dir.rglob("*.eml"))
    assert len(files) == 3
    mail = message_from_bytes(files[0].read_bytes())
    assert mail["X-Lifecycle-Campaign"] == "spring"
    assert mail["Feedback-ID"].startswith("campaign-spring:")
    with app.engine.begin() as conn:
        [entry] = conn.execute(select(Touchpoint.kind, Touchpoint.data).where(
            Touchpoint.kind == "email_sent").limit(1)).all()
        assert " — campaign spring" in summary(entry.kind, entry.data)
    tick(app)  # every mail settled: the campaign is sent
    with app.engine.connect() as conn:
        assert Campaigns(conn).get("spring").status == "sent"


def test_an_unsubscribe_after_the_start_withholds_that_mail_at_send_time(app: App) -> None:
    ann, _bob = _vips(app, 2)
    _scheduled(app)
    tick(app)
    with app.engine.begin() as conn:
        conn.execute(insert(Suppression).values(
            email_hash=email_hash("v0@example.com"), scope="marketing", reason="unsubscribe",
            source="test", created_at=app.clock.now()))
    handed: list[int] = []
    dispatch(app, handed.extend)
    outcomes = send_batch(app, handed, transport=FileTransport(app.settings.outbox_dir))
    assert (outcomes["sent"], outcomes["suppressed"]) == (1, 1)
    with app.engine.connect() as conn:
        status = conn.execute(select(Message.status).where(Message.customer_id == ann)).scalar()
    assert status == "suppressed"


def test_a_preview_renders_each_variant_and_a_test_send_goes_to_the_manager_only(
        app: App) -> None:
    from lifecycle.campaigns.preview import preview_mails, write_test_send

    [ann] = _vips(app, 1)
    text = SPRING.replace("send: {template: vip_early_access}", "send: {variants: ["
                          "{template: vip_early_access}, {template: birthday}]}")
    spec = parse_spec(loads(text, "campaigns/spring.yaml"), "spring", Context.from_folders(
        app.settings.templates_dir, {"vip"}))
    with app.engine.begin() as conn:
        customer = conn.execute(select(Customer.__table__).where(Customer.id == ann)).one()
        shown = preview_mails(conn, app.settings, spec, customer, app.clock.now())
        assert [(p.template, p.ab, p.error) for p in shown] == [
            ("vip_early_access", True, None), ("birthday", True, None)]
        assert "utm_campaign=spring" in (shown[0].mail.html or "")
        assert write_test_send(conn, spec, "birthday", ann, 1, "max@shop.example", "n1",
                               app.clock.now())
        assert write_test_send(conn, spec, "birthday", ann, 1, "max@shop.example", "n1",
                               app.clock.now())  # a double click: still one mail
        assert not write_test_send(conn, spec, "thank_you", ann, 1, "max@shop.example", "n2",
                                   app.clock.now())
    handed: list[int] = []
    dispatch(app, handed.extend)
    assert send_batch(app, handed, transport=FileTransport(app.settings.outbox_dir))[
        "sent"] == 1
    [file] = app.settings.outbox_dir.rglob("*.eml")
    mail = message_from_bytes(file.read_bytes())
    assert mail["To"] == "max@shop.example" and mail["X-Lifecycle-Test"] == "yes"
    with app.engine.connect() as conn:
        assert conn.execute(select(Touchpoint.id)).first() is None  # not the customer's


def test_a_campaign_mail_is_named_by_its_campaign_for_sendgrid(app: App) -> None:
    from types import SimpleNamespace

    from lifecycle.mail.compose import compose
    from lifecycle.mail.templates import Rendered

    row = SimpleNamespace(id=7, customer_id=3, flow=None, step=None, template="birthday",
                          variant="birthday", to_email="ann@example.com", attempts=1,
                          context={"campaign": "spring", "marketing": True})
    mail = compose(app.settings, row, Rendered("birthday", "Hi", "Hi", None), app.clock.now(),
                   "2026-06-03")
    assert mail.categories == ("campaign:spring",)
    assert mail.headers["X-Lifecycle-Campaign"] == "spring"
    assert mail.custom_args["lifecycle_campaign"] == "spring"
