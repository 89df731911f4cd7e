"""The starter gallery: birthday, VIP early-access and replenishment flows, shipped as drafts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, update
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows.definitions import Branch, Context, Send, Wait, load_folder
from lifecycle.flows.engine import enroll
from lifecycle.flows.service import catalogue, tick
from lifecycle.flows.states import switch
from lifecycle.locales import SHIPPED
from lifecycle.mail.templates import Renderer
from lifecycle.models import FlowEnrollment, Message, Touchpoint
from lifecycle.segments.definitions import DueAgainCondition, load_definitions
from lifecycle.timeutil import UTC
from tests.factories import WEB_SECRET, add_customer, add_order, add_touchpoint
from tests.mail_samples import rich_context
from tests.test_flow_engine import FLOWS, mails, run, state

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)  # a Wednesday, daytime in UTC
GALLERY = ("birthday", "vip_early_access", "replenishment")


def test_the_gallery_flows_ship_as_marketing_drafts_named_in_every_language() -> None:
    for name in GALLERY:
        flow = FLOWS[name]
        assert (flow.status, flow.kind) == ("draft", "marketing"), name
        assert set(flow.labels) == set(SHIPPED), name
    birthday = FLOWS["birthday"]
    assert birthday.trigger.kind == "date" and birthday.reentry == "every_time"
    [wishes] = birthday.steps
    assert isinstance(wishes.action, Send) and wishes.action.offer is not None
    vip = FLOWS["vip_early_access"]
    assert vip.trigger.options == {"segments": ["vip"]} and vip.goals == ({"ordered": True},)
    assert [type(s.action) for s in vip.steps] == [Wait, Send, Wait, Branch, Send]
    refill = FLOWS["replenishment"]
    assert refill.trigger.options == {"segments": ["coffee_due_again"]}
    assert refill.reentry == "every_time" and refill.goals == ({"ordered": True},)
    assert [type(s.action) for s in refill.steps] == [Wait, Send]


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path) -> Iterator[App]:
    """An App with its own copy of the shipped flows, after a first tick at T0."""
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      flows_dir=flows, outbox_dir=tmp_path / "outbox", secret_key=WEB_SECRET),
              clock=ManualClock(T0))
    tick(app)  # the first tick only places the trigger cursors
    yield app
    app.close()


def _at(app: App, when: datetime) -> None:
    app.clock.set(when)  # type: ignore[attr-defined]
    tick(app)


def test_the_birthday_draft_mails_nobody_until_it_is_switched_on_then_sends_its_present(
        app: App) -> None:
    with app.engine.begin() as conn:
        ann = add_customer(conn, "ann", T0 - timedelta(days=30), timezone="UTC",
                           attributes={"birthday": "1990-06-04"})
        bo = add_customer(conn, "bo", T0 - timedelta(days=30), timezone="UTC",
                          attributes={"birthday": "06-05"})
        add_touchpoint(conn, ann, "segment_entered", T0, segment="vip")
    _at(app, datetime(2026, 6, 4, 10, 30, tzinfo=UTC))
    with app.engine.connect() as conn:
        assert conn.execute(select(FlowEnrollment.flow).where(
            FlowEnrollment.flow.in_(GALLERY))).all() == []  # drafts: no birthday, no VIP mail
    with app.engine.begin() as conn:
        switch(conn, catalogue(app).flows["birthday"], "live", "max@shop.example",
               app.clock.now(), "wait")
    _at(app, datetime(2026, 6, 5, 9, 0, tzinfo=UTC))
    _at(app, datetime(2026, 6, 5, 10, 0, tzinfo=UTC))
    with app.engine.connect() as conn:
        sent = conn.execute(select(Message.__table__).where(Message.flow == "birthday")).all()
    assert [(m.customer_id, m.template, m.due_at) for m in sent] == [
        (bo, "birthday", datetime(2026, 6, 5, 10, tzinfo=UTC))]  # ann's day passed as a draft
    offer = sent[0].context["offer"]
    assert offer["code"].startswith("BDAY-") and offer["percent"] == 10
    assert offer["expires_at"] == datetime(2026, 6, 19, 10, tzinfo=UTC).isoformat()  # 14 days


def _clicked(conn: Connection, customer_id: int, mail: Message, at: datetime) -> None:
    add_touchpoint(conn, customer_id, "email_clicked", at)
    conn.execute(update(Touchpoint).where(Touchpoint.customer_id == customer_id,
                                          Touchpoint.kind == "email_clicked")
                 .values(message_id=mail.id))


def test_the_vip_reminder_goes_only_to_those_who_did_not_click_nor_order(
        conn: Connection) -> None:
    flow = FLOWS["vip_early_access"]
    looked, quiet, bought = (add_customer(conn, name, T0 - timedelta(days=300), timezone="UTC")
                             for name in ("looked", "quiet", "bought"))
    ids = [enroll(conn, flow, cid, "segment:vip", T0) for cid in (looked, quiet, bought)]
    run(conn, T0)
    morning = datetime(2026, 6, 4, 10, tzinfo=UTC)
    assert {state(conn, eid).next_run_at for eid in ids} == {morning}
    run(conn, morning)  # the next morning: the first mail to each
    for cid in (looked, quiet, bought):
        assert [(m.template, m.due_at) for m in mails(conn, cid)] == [("vip_early_access",
                                                                       morning)]
    _clicked(conn, looked, mails(conn, looked)[0], morning + timedelta(hours=1))
    add_order(conn, bought, morning + timedelta(days=1), "40.00")
    run(conn, morning + timedelta(days=2))
    assert all(len(mails(conn, cid)) == 1 for cid in (looked, quiet, bought))  # still waiting
    run(conn, morning + timedelta(days=3))  # three days later
    assert [m.template for m in mails(conn, looked)] == ["vip_early_access"]
    assert [m.template for m in mails(conn, bought)] == ["vip_early_access"]
    assert [(m.template, m.due_at) for m in mails(conn, quiet)] == [
        ("vip_early_access", morning),
        ("vip_early_access_reminder", morning + timedelta(days=3))]
    assert [(state(conn, eid).status, state(conn, eid).exit_reason) for eid in ids] == [
        ("completed", "branch looked"), ("completed", "completed"), ("exited", "goal: ordered")]


def _with_lines(locale: str, *lines: tuple[str, str]) -> dict[str, object]:
    """A sample context whose order holds ``lines`` of (name, category)."""
    context = rich_context(locale)
    order = dict(context["order"])
    order["lines"] = [{**order["lines"][0], "name": name, "category": category}
                      for name, category in lines]
    return {**context, "order": order}


@pytest.mark.parametrize("locale", SHIPPED)
def test_the_replenishment_mail_lists_the_coffee_of_their_last_order_and_nothing_else(
        locale: str) -> None:
    renderer = Renderer(ROOT / "templates" / "email")
    mail = renderer.render("replenishment", _with_lines(
        locale, ("Yirgacheffe beans", "coffee"), ("Sencha leaves", "tea")))
    assert "Yirgacheffe beans" in mail.html and "Yirgacheffe beans" in (mail.text or "")
    assert "Sencha leaves" not in mail.html and "Sencha leaves" not in (mail.text or "")
    plain = renderer.render("replenishment", _with_lines(locale, ("Sencha leaves", "tea")))
    assert "Sencha leaves" not in plain.html and plain.text and plain.html  # still a mail


def test_the_replenishment_starter_copied_for_tea_as_its_comment_says_times_and_lists_tea(
        tmp_path: Path) -> None:
    flows, templates = tmp_path / "flows", tmp_path / "templates"
    shutil.copytree(ROOT / "flows", flows)
    shutil.copytree(ROOT / "templates" / "email", templates)
    text = (flows / "replenishment.yaml").read_text(encoding="utf-8")
    (flows / "replenishment_tea.yaml").write_text(
        text.replace("coffee_due_again", "tea_due_again")
        .replace("send: replenishment", "send: replenishment_tea"), encoding="utf-8")
    with (flows / "segments.yaml").open("a", encoding="utf-8") as segments:
        segments.write("  tea_due_again:\n    due_again: {category: tea}\n")
    shutil.copytree(templates / "replenishment", templates / "replenishment_tea")
    for body in (templates / "replenishment_tea").glob("*/body.*"):
        body.write_text(body.read_text(encoding="utf-8").replace(
            '{% set category = "coffee"', '{% set category = "tea"'), encoding="utf-8")
    defs = load_definitions(flows / "segments.yaml")
    catalogue = load_folder(flows, Context.from_folders(templates, set(defs.all_names())))
    assert catalogue.problems == []
    tea = catalogue.flows["replenishment_tea"]
    assert tea.trigger.options == {"segments": ["tea_due_again"]}
    assert [c.condition for c in defs.custom if c.name == "tea_due_again"] == [
        DueAgainCondition("category", "tea")]
    mail = Renderer(templates).render("replenishment_tea", _with_lines(
        "en", ("Yirgacheffe beans", "coffee"), ("Sencha leaves", "tea")))
    assert "Sencha leaves" in mail.html and "Yirgacheffe beans" not in mail.html
