"""A broken file never silently changes what runs: the last valid version stays in force, the
problem is shown once, /healthz says degraded until the file is fixed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import Connection, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows import service
from lifecycle.flows.definitions import Context, parse
from lifecycle.flows.engine import Policies, advance, enroll, exit_removed_steps
from lifecycle.flows.service import catalogue, configuration, policies_of, tick
from lifecycle.models import ConfigSnapshot, FlowEnrollment, Message
from lifecycle.segments import service as segment_service
from lifecycle.segments.service import definitions
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from lifecycle.yamlfile import loads
from tests.factories import WEB_SECRET, account, add_customer, add_touchpoint, logged_in

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)


@dataclass
class Shop:
    app: App
    clock: ManualClock
    flows: Path
    web: TestClient

    def health(self) -> dict:  # type: ignore[type-arg]
        answer = self.web.get("/healthz")
        assert answer.status_code == 200  # degraded or not: the web app works
        return answer.json()

    def order(self, customer_id: int, order_id: str) -> None:
        with self.app.engine.begin() as conn:
            add_touchpoint(conn, customer_id, "order_placed", self.clock.now(),
                           order_id=order_id, nth=2, total="20.00")

    def enrolled(self, flow: str) -> int:
        with self.app.engine.connect() as conn:
            return len(conn.execute(select(FlowEnrollment.id).where(
                FlowEnrollment.flow == flow)).all())


@pytest.fixture
def shop(fresh_database_url: str, tmp_path: Path) -> Iterator[Shop]:
    """An App with its own copy of the shipped flows, after a first tick (which saved every
    file's valid version); a manager logged in to its web app."""
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    clock = ManualClock(T0)
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      flows_dir=flows, outbox_dir=tmp_path / "outbox", secret_key=WEB_SECRET),
              clock=clock)
    tick(app)
    account(app, "max@shop.example", "manager")
    web = logged_in(TestClient(create_app(app)), "max@shop.example")
    yield Shop(app, clock, flows, web)
    app.close()


def _forget_what_this_process_read(app: App) -> None:
    """As after a restart (or on another host): nothing parsed is remembered in memory."""
    segment_service._loaded.clear()
    service._policies_file.cache_clear()


def test_a_broken_segments_file_keeps_the_last_valid_segments_and_flows_running(
        shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    assert shop.health()["status"] == "ok" and shop.health()["configuration"] == []
    names = definitions(shop.app).all_names()
    segments = shop.flows / "segments.yaml"
    good = segments.read_text(encoding="utf-8")
    segments.write_text("rfm:\n  recency: [1, 2\n", encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    caplog.set_level(logging.ERROR, logger="lifecycle.flows.service")
    for _ in range(3):
        tick(shop.app)
        shop.clock.advance(timedelta(minutes=1))
    found = configuration(shop.app)
    # one problem, the real one: the flows that name a segment check against the last valid
    [problem] = found.problems
    assert problem.file == str(segments) and "is not closed" in problem.message
    assert {"win_back", "loyalty_offer", "advocacy_ask"} <= set(found.flows)
    assert definitions(shop.app).all_names() == names
    assert segment_service.refresh_if_due(shop.app) is not None  # with the last valid ones
    assert caplog.text.count(str(problem)) == 1  # logged once, not every tick
    assert "its last valid version" in caplog.text
    health = shop.health()
    assert (health["ok"], health["status"], health["configuration"]) == (
        True, "degraded", [str(problem)])
    page = shop.web.get("/segments")
    assert page.status_code == 200 and str(segments) in page.text
    assert "its last valid version" in page.text and "vip</code>" in page.text
    one = shop.web.get("/segments/vip")  # a segment's own page says so too
    assert one.status_code == 200 and "Files with problems" in one.text
    assert str(segments) in one.text and "its last valid version" in one.text
    assert "As the last valid version of" in one.text
    flows_page = shop.web.get("/flows").text
    assert str(escape(str(problem))) in flows_page and "win_back" in flows_page
    segments.write_text(good, encoding="utf-8")
    assert shop.health()["status"] == "ok" and configuration(shop.app).problems == []
    assert "Files with problems" not in shop.web.get("/flows").text
    assert "Files with problems" not in shop.web.get("/segments/vip").text
    segments.write_text("rfm:\n  recency: [1, 2\n", encoding="utf-8")  # broken again
    tick(shop.app)
    assert caplog.text.count(str(problem)) == 2  # a problem that came back is logged again


def test_a_broken_segments_file_with_no_valid_version_saved_is_an_error_as_before(
        shop: Shop) -> None:
    with shop.app.engine.begin() as conn:
        conn.execute(ConfigSnapshot.__table__.delete())
    (shop.flows / "segments.yaml").write_text("rfm: [\n", encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    assert shop.web.get("/segments").status_code == 422
    assert shop.health()["status"] == "degraded"


def test_a_broken_flow_file_keeps_its_last_valid_version_running(shop: Shop) -> None:
    path = shop.flows / "thank_you.yaml"
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("wait: 2 hours", "wait: soonish"), encoding="utf-8")
    with shop.app.engine.begin() as conn:
        ann = add_customer(conn, "ann", T0 - timedelta(days=30), timezone="UTC")
    shop.order(ann, "o1")
    tick(shop.app)
    assert shop.enrolled("thank_you") == 1  # the last valid version enrols
    shop.clock.advance(timedelta(hours=2))
    tick(shop.app)
    with shop.app.engine.connect() as conn:
        assert [m.template for m in conn.execute(select(Message.template))] == ["thank_you"]
    [problem] = catalogue(shop.app).problems
    assert str(problem).startswith(f"{path}:10:11: ") and "soonish" in str(problem)
    health = shop.health()
    assert health["status"] == "degraded" and health["configuration"] == [str(problem)]
    assert "(its enrolled customers go on)" in shop.web.get("/flows").text
    page = shop.web.get("/flows/thank_you").text  # the version in force, its problem on top
    assert "The file has problems: its last valid version" in page
    assert 'data-step="thanks"' in page and "status live" in page
    path.write_text(good, encoding="utf-8")
    assert shop.health()["status"] == "ok"


def test_a_new_flow_file_that_never_was_valid_does_not_run(shop: Shop) -> None:
    (shop.flows / "broken.yaml").write_text("trigger: {order_placed: {}}\nsteps:\n"
                                            "  - wait: soonish\n", encoding="utf-8")
    found = configuration(shop.app)
    assert "broken" not in found.flows
    [notice] = found.notices
    assert notice.instead == "the flow does not run: no valid version of it was ever saved"
    assert shop.health()["status"] == "degraded"


def test_a_broken_policies_file_keeps_its_last_valid_version(shop: Shop) -> None:
    path = shop.flows / "policies.yaml"
    path.write_text("frequency_cap: {max: 1, per: 7 days}\n", encoding="utf-8")
    tick(shop.app)  # saves this version
    assert policies_of(shop.app).cap == 1
    path.write_text("frequency_cap: {max: many, per: 7 days}\n", encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    assert policies_of(shop.app).cap == 1  # not the default of 3
    assert configuration(shop.app).policies.cap == 1
    health = shop.health()
    assert health["status"] == "degraded"
    assert [p.split(": ", 1)[0] for p in health["configuration"]] == [f"{path}:1:22"]
    path.write_text("frequency_cap: {max: 2, per: 7 days}\n", encoding="utf-8")
    assert policies_of(shop.app).cap == 2 and shop.health()["status"] == "ok"


def test_a_policies_file_that_never_was_valid_leaves_the_defaults(shop: Shop) -> None:
    with shop.app.engine.begin() as conn:
        conn.execute(ConfigSnapshot.__table__.delete())
    (shop.flows / "policies.yaml").write_text("frequency_cap: {max: 1, per: soonish}\n",
                                              encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    assert policies_of(shop.app) == Policies()
    [notice] = configuration(shop.app).notices
    assert notice.instead == "the default policies apply: no valid version was ever saved"


# ------------------------------------------------------------ a flow's steps change

V1 = """trigger: {order_placed: {}}
reentry: every_time
kind: transactional
steps:
  - id: settle
    wait: 2 hours
  - id: pause
    wait: 1 day
  - id: thanks
    send: thank_you
"""
V2 = V1.replace("  - id: pause\n    wait: 1 day\n", "").replace("2 hours", "3 hours")


def _flow(text: str):  # type: ignore[no-untyped-def]
    return parse(loads(text, "flows/thanks.yaml"), Context({"thank_you"}, set()), "thanks")


def test_a_changed_step_list_keeps_the_enrollments_whose_step_remains_and_exits_the_others(
        conn: Connection) -> None:
    before, after = _flow(V1), _flow(V2)
    kept_on = add_customer(conn, "ann", T0, timezone="UTC")
    removed = add_customer(conn, "bob", T0, timezone="UTC")
    bob = enroll(conn, before, removed, "b", T0)
    policies = Policies()
    advance(conn, {"thanks": before}, T0, policies=policies, default_tz="UTC")
    ann = enroll(conn, before, kept_on, "a", T0 + timedelta(hours=2))
    advance(conn, {"thanks": before}, T0 + timedelta(hours=2), policies=policies,
            default_tz="UTC")

    def where(eid: int):  # type: ignore[no-untyped-def]
        return conn.execute(select(FlowEnrollment.__table__).where(
            FlowEnrollment.id == eid)).one()

    assert (where(ann).current_step, where(bob).current_step) == ("settle", "pause")
    assert exit_removed_steps(conn, after, T0 + timedelta(hours=3)) == 1
    assert (where(bob).status, where(bob).exit_reason, where(bob).finished_at) == (
        "exited", "the step pause was removed from the flow", T0 + timedelta(hours=3))
    # ann's wait began under the old file (2 hours): it keeps its end, T0 + 4 hours
    advance(conn, {"thanks": after}, T0 + timedelta(hours=4), policies=policies,
            default_tz="UTC")
    assert (where(ann).status, where(ann).current_step) == ("completed", None)
    assert conn.execute(select(Message.template).where(
        Message.customer_id == kept_on)).scalars().all() == ["thank_you"]
    assert conn.execute(select(Message.id).where(Message.customer_id == removed)).all() == []


def test_the_next_tick_exits_the_enrollments_on_a_step_the_file_no_longer_has(
        shop: Shop) -> None:
    with shop.app.engine.begin() as conn:
        ann = add_customer(conn, "ann", T0 - timedelta(days=30), timezone="UTC")
    shop.order(ann, "o1")
    tick(shop.app)
    path = shop.flows / "thank_you.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("id: settle", "id: rest"),
                    encoding="utf-8")
    shop.clock.advance(timedelta(minutes=1))
    tick(shop.app)
    with shop.app.engine.connect() as conn:
        [e] = conn.execute(select(FlowEnrollment.__table__).where(
            FlowEnrollment.flow == "thank_you")).all()
        [kept] = conn.execute(select(FlowEnrollment.__table__).where(
            FlowEnrollment.flow == "feedback_request")).all()
    assert (e.status, e.exit_reason, e.finished_at) == (
        "exited", "the step settle was removed from the flow", T0 + timedelta(minutes=1))
    assert kept.status == "active"  # its flow did not change


def test_healthz_tells_anyone_which_file_is_broken_but_only_staff_its_path_and_words(
        shop: Shop) -> None:
    segments = shop.flows / "segments.yaml"
    segments.write_text("rfm:\n  recency: [1, 2\n  smtp_password: x\n", encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    anonymous = TestClient(create_app(shop.app)).get("/healthz").json()
    assert anonymous["status"] == "degraded"
    assert anonymous["configuration"] == ["segments.yaml:3"]
    assert str(shop.flows) not in str(anonymous) and "smtp_password" not in str(anonymous)
    staff = shop.health()
    assert staff["configuration"][0].startswith(f"{segments}:3:")


def test_read_only_commands_use_the_last_valid_segments_while_the_file_is_broken(
        shop: Shop) -> None:
    from click.testing import CliRunner

    from lifecycle.cli import cli

    env = {"LIFECYCLE_DATABASE_URL": shop.app.settings.database_url.render_as_string(
        hide_password=False), "LIFECYCLE_FLOWS_DIR": str(shop.flows)}
    segments = shop.flows / "segments.yaml"
    segments.write_text(segments.read_text(encoding="utf-8").replace(
        "retention:", "retention:\n  bogus: [1, 2", 1), encoding="utf-8")
    listed = CliRunner().invoke(cli, ["segments", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "its last valid version" in listed.stderr and "vip" in listed.stdout
    checked = CliRunner().invoke(cli, ["segments", "validate"], env=env)
    assert checked.exit_code == 1 and "segments.yaml" in checked.stderr


def test_the_log_says_when_a_broken_file_is_fixed(
        shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    segments = shop.flows / "segments.yaml"
    good = segments.read_text(encoding="utf-8")
    caplog.set_level(logging.INFO, logger="lifecycle.flows.service")
    segments.write_text("rfm:\n  recency: [1, 2\n", encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    tick(shop.app)
    assert "has no problem any more" not in caplog.text
    segments.write_text(good, encoding="utf-8")
    _forget_what_this_process_read(shop.app)
    tick(shop.app)
    assert ("The configuration file segments.yaml has no problem any more; it is in force as "
            "it is.") in caplog.text
