"""Flows go live on purpose: draft, live and paused, from the file or a manager's switch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows.dates import fire
from lifecycle.flows.engine import Policies
from lifecycle.flows.preview import preview_mails
from lifecycle.flows.service import catalogue, tick
from lifecycle.flows.simulate import simulate
from lifecycle.flows.states import effective_statuses, switch
from lifecycle.mail.sending import dispatch as dispatch_mail
from lifecycle.mail.sending import send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import (
    ConfigSnapshot,
    Customer,
    FlowEnrollment,
    FlowStatusChange,
    Message,
    TriggerCursor,
)
from lifecycle.segments.service import definitions
from lifecycle.timeutil import UTC, as_utc
from lifecycle.web.app import create_app
from tests.factories import (
    WEB_SECRET,
    WEB_T0,
    account,
    add_customer,
    add_order,
    add_touchpoint,
    csrf_of,
)
from tests.factories import logged_in as log_in

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)  # a Wednesday, daytime in UTC


@dataclass
class Shop:
    app: App
    clock: ManualClock
    flows: Path

    def set_status(self, flow: str, status: str | None) -> None:
        """Rewrite the ``status:`` line of a flow file (None: remove it)."""
        path = self.flows / f"{flow}.yaml"
        lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                 if not line.startswith("status:")]
        if status is not None:
            lines.insert(1, f"status: {status}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def order(self, customer_id: int, order_id: str) -> None:
        with self.app.engine.begin() as conn:
            add_touchpoint(conn, customer_id, "order_placed", self.clock.now(),
                           order_id=order_id, nth=2, total="20.00")

    def enrollments(self, flow: str) -> list[FlowEnrollment]:
        with self.app.engine.connect() as conn:
            return list(conn.execute(select(FlowEnrollment.__table__).where(
                FlowEnrollment.flow == flow).order_by(FlowEnrollment.id)))

    def mails(self, flow: str) -> list[Message]:
        with self.app.engine.connect() as conn:
            return list(conn.execute(select(Message.__table__).where(Message.flow == flow)))

    def switch(self, flow: str, status: str | None, on_pause: str = "wait") -> None:
        with self.app.engine.begin() as conn:
            switch(conn, catalogue(self.app).flows[flow], status, "max@shop.example",
                   self.clock.now(), on_pause)


@pytest.fixture
def shop(fresh_database_url: str, tmp_path: Path) -> Iterator[Shop]:
    """An App on a fresh database with its own copy of the shipped flows; a customer, ann."""
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    clock = ManualClock(T0)
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      flows_dir=flows, outbox_dir=tmp_path / "outbox", secret_key=WEB_SECRET),
              clock=clock)
    tick(app)  # the first tick only places the trigger cursor
    yield Shop(app, clock, flows)
    app.close()


def _ann(shop: Shop) -> int:
    with shop.app.engine.begin() as conn:
        return add_customer(conn, "ann", T0 - timedelta(days=30), timezone="UTC")


def test_a_draft_flow_enrols_nobody_but_validates_simulates_and_previews(
        shop: Shop, cli_env: dict[str, str]) -> None:
    shop.set_status("thank_you", "draft")
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    assert shop.enrollments("thank_you") == []
    assert len(shop.enrollments("feedback_request")) == 1  # a live flow enrols as ever
    checked = CliRunner().invoke(cli, ["flows", "validate", str(shop.flows)], env=cli_env)
    assert checked.exit_code == 0 and "thank_you" in checked.stdout
    flow = catalogue(shop.app).flows["thank_you"]
    assert flow.status == "draft"
    with shop.app.engine.begin() as conn:
        add_order(conn, ann, T0 - timedelta(days=10), "30.00")
    with shop.app.engine.connect() as conn:
        result = simulate(conn, flow, definitions(shop.app), T0 - timedelta(days=20), T0,
                          policies=Policies(), default_tz="UTC")
        person = conn.execute(select(Customer.__table__).where(Customer.id == ann)).one()
        [preview] = preview_mails(conn, shop.app.settings, flow, person, T0)
    assert result.enrolled == 1 and result.per_step == {"thanks": 1}
    assert preview.mail is not None and preview.template == "thank_you"


def test_pausing_with_wait_keeps_enrollments_without_mails_and_resuming_continues_them(
        shop: Shop) -> None:
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    [waiting] = shop.enrollments("thank_you")
    assert waiting.current_step == "settle"
    shop.switch("thank_you", "paused", "wait")
    shop.clock.advance(timedelta(hours=3))
    shop.order(ann, "o2")  # arrives while paused: never enrols, not even after the resume
    tick(shop.app)
    [still] = shop.enrollments("thank_you")
    assert (still.status, still.current_step) == ("active", "settle")
    assert shop.mails("thank_you") == []
    shop.switch("thank_you", "live")
    tick(shop.app)
    [done] = shop.enrollments("thank_you")
    assert done.status == "completed"
    [mail] = shop.mails("thank_you")
    assert mail.due_at == shop.clock.now()


def test_pausing_with_exit_ends_the_enrollments_with_the_reason(shop: Shop) -> None:
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    shop.switch("thank_you", "paused", "exit")
    [ended] = shop.enrollments("thank_you")
    assert (ended.status, ended.exit_reason) == ("exited", "the flow was paused")
    assert ended.finished_at == T0
    shop.clock.advance(timedelta(hours=3))
    shop.switch("thank_you", "live")
    tick(shop.app)
    assert shop.mails("thank_you") == []


TWO_MAILS = """status: live
kind: transactional
trigger: {order_placed: {}}
steps:
  - id: first
    send: thank_you
  - id: later
    wait: 1 day
  - id: second
    send: thank_you
"""


@pytest.mark.parametrize("on_pause, outcome", [("wait", "sent"), ("exit", "cancelled")])
def test_a_mail_in_the_outbox_before_a_pause_goes_if_they_wait_and_not_if_they_exit(
        shop: Shop, on_pause: str, outcome: str) -> None:
    (shop.flows / "two_mails.yaml").write_text(TWO_MAILS, encoding="utf-8")
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    [mail] = shop.mails("two_mails")
    shop.switch("two_mails", "paused", on_pause)
    ids: list[int] = []
    dispatch_mail(shop.app, ids.extend)
    if on_pause == "wait":
        assert send_batch(shop.app, ids, transport=FileTransport(
            shop.app.settings.outbox_dir))["sent"] == 1
    else:  # cancelled at the switch: not upcoming on the customer's page, never handed out
        assert ids == []
    with shop.app.engine.connect() as conn:
        status, error = conn.execute(select(Message.status, Message.last_error).where(
            Message.id == mail.id)).one()
    assert status == outcome
    if on_pause == "exit":
        assert error == "the flow ended: the flow was paused"


def test_a_draft_flow_advances_no_enrollment_until_it_is_live(shop: Shop) -> None:
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    shop.set_status("thank_you", "draft")
    shop.clock.advance(timedelta(hours=3))
    tick(shop.app)
    assert shop.mails("thank_you") == [] and shop.enrollments("thank_you")[0].status == "active"
    shop.set_status("thank_you", "live")
    tick(shop.app)
    assert len(shop.mails("thank_you")) == 1


def test_the_page_switch_overrides_the_file_until_the_manager_follows_the_file_again(
        shop: Shop) -> None:
    shop.set_status("thank_you", "paused")
    flows = catalogue(shop.app).flows

    def state():  # type: ignore[no-untyped-def]
        with shop.app.engine.connect() as conn:
            return effective_statuses(conn, flows.values())["thank_you"]

    assert (state().status, state().source, state().on_pause) == ("paused", "file", "wait")
    shop.switch("thank_you", "live")
    assert (state().status, state().source, state().changed_by) == (
        "live", "page", "max@shop.example")
    shop.set_status("thank_you", "draft")  # the file changes: the switch still holds
    flows = catalogue(shop.app).flows
    assert state().status == "live"
    expected = state()
    with shop.app.engine.connect() as conn:  # a catalogue's mapping of names works too
        assert effective_statuses(conn, flows)["thank_you"] == expected
    shop.clock.advance(timedelta(minutes=5))
    shop.switch("thank_you", None)
    assert (state().status, state().source, state().changed_at) == (
        "draft", "file", T0 + timedelta(minutes=5))


def test_the_flows_list_and_flows_show_give_the_status_in_force(
        shop: Shop, cli_env: dict[str, str]) -> None:
    shop.switch("thank_you", "paused", "wait")
    shown = CliRunner().invoke(cli, ["flows", "show", "thank_you", "--json"],
                               env={**cli_env, "LIFECYCLE_FLOWS_DIR": str(shop.flows)})
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "paused"
    account(shop.app, "max@shop.example", "manager")
    web = log_in(TestClient(create_app(shop.app)), "max@shop.example")
    listing = web.get("/flows").text
    assert '<a href="/flows/thank_you">thank_you</a></td><td>paused<br><span class="note">' \
        'set on its page' in listing
    assert '<a href="/flows/win_back">win_back</a></td><td>live</td>' in listing


def test_a_flow_file_without_a_status_runs_as_live_and_validate_asks_for_one(
        shop: Shop, cli_env: dict[str, str]) -> None:
    shop.set_status("thank_you", None)
    flow = catalogue(shop.app).flows["thank_you"]
    assert flow.status is None
    with shop.app.engine.connect() as conn:
        assert effective_statuses(conn, [flow])["thank_you"].status == "live"
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    assert len(shop.enrollments("thank_you")) == 1
    checked = CliRunner().invoke(cli, ["flows", "validate", str(shop.flows)], env=cli_env)
    assert checked.exit_code == 0
    assert f"{shop.flows / 'thank_you.yaml'}: warning: no status" in checked.stderr
    assert checked.stderr.count("warning") == 1  # the shipped flows all say status: live


def test_a_flow_file_with_an_unknown_status_is_an_error_at_its_line(shop: Shop) -> None:
    shop.set_status("thank_you", "on")
    problems = [str(p) for p in catalogue(shop.app).problems]
    assert f"{shop.flows / 'thank_you.yaml'}:2:9: status must be draft, live or paused" \
        in problems


def test_a_date_flow_that_is_not_live_catches_up_no_dates_later(shop: Shop) -> None:
    flow = replace(catalogue(shop.app).flows["thank_you"], name="birthday",
                   trigger=replace(catalogue(shop.app).flows["thank_you"].trigger, kind="date",
                                   options={"attribute": "birthday"}))
    with shop.app.engine.begin() as conn:
        add_customer(conn, "bea", T0 - timedelta(days=300), timezone="UTC",
                     attributes={"birthday": "1990-06-05"})
        fire(conn, {"birthday": flow}, T0, "UTC")  # places the cursor
        assert fire(conn, {"birthday": flow}, T0 + timedelta(days=3), "UTC",
                    held=frozenset({"birthday"})) == 0
        moved = conn.execute(select(TriggerCursor.updated_at).where(
            TriggerCursor.name == "date:birthday")).scalar_one()
        assert moved == T0 + timedelta(days=3) - timedelta(hours=10)  # "at" 10:00 before
        assert fire(conn, {"birthday": flow}, T0 + timedelta(days=3, hours=1), "UTC") == 0
        assert conn.execute(select(FlowEnrollment.id)).all() == []
        # the same dates, live: bea's birthday (5 June) enrols her
        conn.execute(TriggerCursor.__table__.update().values(updated_at=T0))
        assert fire(conn, {"birthday": flow}, T0 + timedelta(days=3), "UTC") == 1


def test_a_birthday_flow_made_live_in_the_morning_sends_today_s_birthdays_still_ahead(
        shop: Shop) -> None:
    """Made live at 02:01 UTC with ``at: "10:15"``: a Berlin and a Shanghai birthday of that
    day whose 10:15 is still ahead are sent; a Tokyo one at 10:15 local, past, is not
    backfilled."""
    flow = replace(catalogue(shop.app).flows["thank_you"], name="birthday",
                   trigger=replace(catalogue(shop.app).flows["thank_you"].trigger, kind="date",
                                   options={"attribute": "birthday", "at": "10:15"}))
    live_at = datetime(2026, 12, 1, 2, 1, tzinfo=UTC)
    with shop.app.engine.begin() as conn:
        for name, zone_name in (("berlin", "Europe/Berlin"), ("shanghai", "Asia/Shanghai"),
                                ("tokyo", "Asia/Tokyo")):
            add_customer(conn, name, live_at - timedelta(days=300), timezone=zone_name,
                         attributes={"birthday": "1990-12-01"})
        fire(conn, {"birthday": flow}, live_at - timedelta(hours=5), "UTC",
             held=frozenset({"birthday"}))  # a draft until the manager's switch
        fire(conn, {"birthday": flow}, live_at - timedelta(minutes=1), "UTC",
             held=frozenset({"birthday"}))
        fire(conn, {"birthday": flow}, live_at, "UTC")  # live: the first run places its cursor
        enrolled = fire(conn, {"birthday": flow}, live_at + timedelta(minutes=1), "UTC")
        starts = sorted(as_utc(row.next_run_at) for row in conn.execute(
            select(FlowEnrollment.next_run_at)))
    assert enrolled == 2  # Berlin (09:15 UTC) and Shanghai (02:15 UTC), not Tokyo (01:15)
    assert starts == [datetime(2026, 12, 1, 2, 15, tzinfo=UTC),
                      datetime(2026, 12, 1, 9, 15, tzinfo=UTC)]


# ----------------------------------------------------------------------- the flow's page

def test_a_manager_switches_a_flow_on_its_page_and_who_and_when_are_recorded(
        app: App, web: TestClient) -> None:
    account(app, "max@shop.example", "manager")
    log_in(web, "max@shop.example")
    page = web.get("/flows/thank_you")
    assert "Status: <strong" in page.text and "As the file says: <code>status: live" in page.text
    assert "Pause: what becomes of the 0 enrolled customers?" in page.text
    form = {"csrf": csrf_of(page.text), "status": "paused", "on_pause": "wait"}
    answer = web.post("/flows/thank_you/status", data=form, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/flows/thank_you#status"
    with app.engine.connect() as conn:
        [row] = conn.execute(select(FlowStatusChange.__table__)).all()
    assert (row.flow, row.status, row.on_pause, row.changed_by, row.changed_at) == (
        "thank_you", "paused", "wait", "max@shop.example", WEB_T0)
    page = web.get("/flows/thank_you").text
    assert "Set on this page by max@shop.example on" in page and ">paused</strong>" in page
    assert "Follow the file (live)" in page and "Make live" in page and "Back to draft" in page
    listed = web.get("/flows").text  # the list marks a status set on the page, and by whom
    assert "set on its page by max@shop.example, 2" in listed
    assert "the file says live" in listed
    assert web.post("/flows/thank_you/status", data=dict(form, status="file"),
                    follow_redirects=False).status_code == 303
    assert "As the file says" in web.get("/flows/thank_you").text
    assert "set on its page" not in web.get("/flows").text
    assert web.post("/flows/thank_you/status", data=dict(form, status="on"),
                    follow_redirects=False).status_code == 422
    assert web.post("/flows/no_such_flow/status", data=form,
                    follow_redirects=False).status_code == 404
    with app.engine.connect() as conn:
        assert [r.status for r in conn.execute(select(FlowStatusChange.__table__)
                                               .order_by(FlowStatusChange.id))] == [
            "paused", None]
    page = web.get("/flows/thank_you").text  # every switch, newest first, on the page
    assert "Switches on this page (2)" in page
    assert page.index("max@shop.example: follow the file") < page.index(
        "max@shop.example: paused (customers wait)")


def test_a_flow_whose_templates_would_fail_is_made_live_only_when_the_manager_insists(
        app: App, web: TestClient, tmp_path: Path) -> None:
    templates = tmp_path / "email"
    shutil.copytree(ROOT / "templates" / "email", templates)
    body = templates / "thank_you" / "en" / "body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace(
        "{{ customer.first_name }}", "{{ customer.frist_name }}"), encoding="utf-8")
    app.settings = replace(app.settings, templates_dir=templates)
    account(app, "max@shop.example", "manager")
    log_in(web, "max@shop.example")
    page = web.get("/flows/thank_you").text
    form = {"csrf": csrf_of(page), "status": "draft"}
    assert web.post("/flows/thank_you/status", data=form,
                    follow_redirects=False).status_code == 303
    page = web.get("/flows/thank_you").text
    assert 'name="anyway" value="yes" required' in page and "Make it live anyway" in page
    refused = web.post("/flows/thank_you/status", data=dict(form, status="live"),
                       follow_redirects=False)
    assert refused.status_code == 409 and "its mails would fail to send" in refused.text
    with app.engine.connect() as conn:
        assert effective_statuses(conn, [catalogue(app).flows["thank_you"]])[
            "thank_you"].status == "draft"
    insisted = web.post("/flows/thank_you/status", data=dict(form, status="live", anyway="yes"),
                        follow_redirects=False)
    assert insisted.status_code == 303
    with app.engine.connect() as conn:
        assert effective_statuses(conn, [catalogue(app).flows["thank_you"]])[
            "thank_you"].status == "live"


def test_a_new_file_of_a_removed_flow_s_name_starts_afresh(shop: Shop) -> None:
    """A flow switched live on its page, then deleted: a new file of the same name neither
    runs because the old one was live nor falls back to the old flow's steps if it breaks."""
    from lifecycle.flows.states import REMOVED_BY

    path = shop.flows / "win_back.yaml"
    old = path.read_text(encoding="utf-8")
    shop.switch("win_back", "live")
    tick(shop.app)
    path.unlink()
    shop.clock.advance(timedelta(minutes=1))
    tick(shop.app)  # the scheduler finds the file gone
    with shop.app.engine.connect() as conn:
        kept = conn.execute(select(ConfigSnapshot.name).where(
            ConfigSnapshot.kind == "flow")).scalars().all()
        last = conn.execute(select(FlowStatusChange.__table__).where(
            FlowStatusChange.flow == "win_back").order_by(FlowStatusChange.id.desc())).first()
    assert "win_back" not in kept
    assert last.status is None and last.changed_by == REMOVED_BY
    path.write_text(old.replace("status: live", "status: draft"), encoding="utf-8")
    flows = catalogue(shop.app).flows
    with shop.app.engine.connect() as conn:
        assert effective_statuses(conn, flows)["win_back"].status == "draft"
    path.write_text("status: live\ntrigger: {segment_entered: lapsed\n", encoding="utf-8")
    assert "win_back" not in catalogue(shop.app).flows  # broken, and nothing old to fall on


ONE_MAIL = """status: live
kind: transactional
trigger: {order_placed: {}}
steps:
  - id: only
    send: thank_you
"""


@pytest.mark.parametrize("handed_out", [False, True])
def test_pausing_with_exit_cancels_a_mail_whose_enrollment_is_already_over(
        shop: Shop, handed_out: bool) -> None:
    """The last step's mail is written and the enrollment completed, the mail still waiting
    (quiet hours, or handed to the broker and not yet claimed): "they exit" means it never
    goes either."""
    (shop.flows / "one_mail.yaml").write_text(ONE_MAIL, encoding="utf-8")
    ann = _ann(shop)
    shop.order(ann, "o1")
    tick(shop.app)
    [done] = shop.enrollments("one_mail")
    [mail] = shop.mails("one_mail")
    assert done.status == "completed"
    ids: list[int] = []
    if handed_out:
        dispatch_mail(shop.app, ids.extend)
        assert mail.id in ids
    shop.switch("one_mail", "paused", "exit")
    assert send_batch(shop.app, ids, transport=FileTransport(
        shop.app.settings.outbox_dir))["sent"] == 0
    with shop.app.engine.connect() as conn:
        status, error = conn.execute(select(Message.status, Message.last_error).where(
            Message.id == mail.id)).one()
    assert (status, error) == ("cancelled", "the flow ended: the flow was paused")


def test_make_live_checks_the_templates_afresh_not_what_the_page_kept(
        app: App, web: TestClient, tmp_path: Path) -> None:
    """The flow page keeps its checks a minute; a template broken within that minute must not
    slip through a Make live."""
    templates = tmp_path / "email"
    shutil.copytree(ROOT / "templates" / "email", templates)
    app.settings = replace(app.settings, templates_dir=templates)
    account(app, "max@shop.example", "manager")
    log_in(web, "max@shop.example")
    page = web.get("/flows/thank_you").text  # checked now: no problem, kept a minute
    form = {"csrf": csrf_of(page), "status": "draft"}
    assert web.post("/flows/thank_you/status", data=form,
                    follow_redirects=False).status_code == 303
    body = templates / "thank_you" / "en" / "body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace(
        "{{ customer.first_name }}", "{{ customer.frist_name }}"), encoding="utf-8")
    refused = web.post("/flows/thank_you/status", data=dict(form, status="live"),
                       follow_redirects=False)
    assert refused.status_code == 409
    assert "its templates have 1 problem, so its mails would fail" in refused.text


def test_a_segment_flow_s_page_says_who_is_in_the_segment_already_and_is_not_mailed(
        app: App, web: TestClient) -> None:
    from lifecycle.models import SegmentMembership

    with app.engine.begin() as conn:
        for name in ("ann", "bob"):
            cid = add_customer(conn, name, WEB_T0)
            conn.execute(SegmentMembership.__table__.insert().values(
                customer_id=cid, segment="coffee_due_again", entered_at=WEB_T0, reason={}))
    account(app, "max@shop.example", "manager")
    log_in(web, "max@shop.example")
    page = web.get("/flows/replenishment").text  # a draft, started by entering the segment
    assert ("2 customers are in coffee_due_again now. Made live, the flow enrols those who "
            "enter it from then on; the 2 already there are not mailed") in page
    assert 'id="already-in"' not in web.get("/flows/thank_you").text  # not a segment flow
