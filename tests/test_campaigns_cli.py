"""``lifecycle campaign …`` end to end on a fresh database (SQLite and PostgreSQL), and
campaigns kept as reviewed files (``LIFECYCLE_CAMPAIGNS_DIR``)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, insert, select

from lifecycle.campaigns.model import Campaign, CampaignChange
from lifecycle.cli import cli
from lifecycle.models import Customer, Message, SegmentMembership, StaffUser, Suppression, email_hash
from lifecycle.timeutil import UTC
from tests.factories import add_customer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "campaigns" / "spring_collection.yaml"

SPRING = """\
description: Spring, for the best customers
kind: marketing
send: {template: vip_early_access}
audience:
  segments: [loyal, vip]
  exclude: [lapsed]
schedule: now
"""


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**env, "COLUMNS": "200"})


def run(env: dict[str, str], *args: str) -> str:
    result = invoke(env, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(env: dict[str, str], *args: str) -> str:
    """The one-line refusal (exit status 2) of a command."""
    result = invoke(env, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.stderr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "campaigns"
    path.mkdir()
    return path


@pytest.fixture
def env(cli_env: dict[str, str], folder: Path) -> dict[str, str]:
    return {**cli_env, "LIFECYCLE_CAMPAIGNS_DIR": str(folder)}


@pytest.fixture
def db(cli_env: dict[str, str]) -> Iterator[Engine]:
    engine = create_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    yield engine
    engine.dispose()


def no_database_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a command that reads files only (no database is made)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "SENDGRID_"))}
    env["LIFECYCLE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'none.db'}"
    return env


def people(db: Engine) -> dict[str, int]:
    """ann and bea (loyal), cy (vip, lapsed: excluded), dee (vip, no consent), eve (vip, an
    unsubscribed address): their row ids."""
    joined = datetime(2025, 1, 1, tzinfo=UTC)
    found = {}
    with db.begin() as conn:
        for name, segments, values in (
                ("ann", ("loyal",), {"first_name": "Ann"}), ("bea", ("loyal", "vip"), {}),
                ("cy", ("vip", "lapsed"), {}), ("dee", ("vip",), {"marketing_consent": False}),
                ("eve", ("vip",), {})):
            found[name] = add_customer(conn, name, joined, timezone="UTC", **values)
            for segment in segments:
                conn.execute(insert(SegmentMembership).values(
                    customer_id=found[name], segment=segment, entered_at=joined, reason={}))
        conn.execute(insert(Suppression).values(email_hash=email_hash("eve@example.com"),
                                                scope="marketing", reason="unsubscribe",
                                                source="test", created_at=joined))
    return found


def campaign_row(db: Engine, name: str):  # type: ignore[no-untyped-def]
    with db.connect() as conn:
        return conn.execute(select(Campaign.__table__).where(Campaign.name == name)).one()


def history(db: Engine, name: str) -> list[tuple[str, str, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(CampaignChange.action, CampaignChange.status, CampaignChange.changed_by)
            .join(Campaign, Campaign.id == CampaignChange.campaign_id)
            .where(Campaign.name == name).order_by(CampaignChange.id))]


def start_due(cli_env: dict[str, str]) -> None:
    """One run of the scheduler's campaign job (as ``lifecycle scheduler`` runs it)."""
    from lifecycle.app import App
    from lifecycle.campaigns.jobs import tick
    from lifecycle.config import load_settings

    app = App(load_settings(cli_env))
    try:
        tick(app)
    finally:
        app.close()


# -- files -----------------------------------------------------------------------------------
def test_the_shipped_spring_collection_validates_against_the_shipped_templates_and_segments(
        tmp_path: Path) -> None:
    out = run(no_database_env(tmp_path), "campaign", "validate")
    assert out.strip() == "1 campaign file without problems: spring_collection."
    from lifecycle.campaigns.files import file_context, read_campaign

    context, problems = file_context(ROOT / "templates" / "email", ROOT / "flows" / "segments.yaml")
    spec, _ = read_campaign(EXAMPLE, context)
    assert problems == [] and spec.segments == ("loyal", "vip") and spec.exclude == ("lapsed",)
    assert spec.schedule.local_time == (10, 0) and spec.per_hour == 5000
    assert [v.template for v in spec.send.variants] == ["vip_early_access"]


def test_validate_prints_each_problem_at_its_line_with_a_did_you_mean_and_exits_1(
        tmp_path: Path, folder: Path) -> None:
    (folder / "good.yaml").write_text(SPRING, encoding="utf-8")
    bad = folder / "bad.yaml"
    bad.write_text(SPRING.replace("vip_early_access", "vip_early_acess")
                   .replace("[loyal, vip]", "[loyal, vipp]")
                   .replace("schedule: now", "schedule: {local_time: 10:00}"), encoding="utf-8")
    result = invoke({**no_database_env(tmp_path), "LIFECYCLE_CAMPAIGNS_DIR": str(folder)},
                    "campaign", "validate")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{bad}:3:") and "unknown template 'vip_early_acess'" in lines[0]
    assert "(did you mean 'vip_early_access'?)" in lines[0]
    assert lines[1] == (f"{bad}:5:21: unknown segment 'vipp' (did you mean 'vip'?); see "
                        "flows/segments.yaml (`lifecycle segments list`)")
    assert lines[2].startswith(f"{bad}:7:") and 'write the time in quotes' in lines[2]
    assert result.stdout.strip() == (
        "3 problems: 3 in 1 of 2 campaign files; without problems: good.")
    one = invoke(no_database_env(tmp_path), "campaign", "validate", str(folder / "good.yaml"))
    assert one.exit_code == 0 and one.stdout.strip() == "1 campaign file without problems: good."


def test_validate_counts_a_broken_segments_file_apart_from_the_campaign_files(
        tmp_path: Path, folder: Path) -> None:
    (folder / "good.yaml").write_text(SPRING, encoding="utf-8")
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "segments.yaml").write_text("segments:\n  vip: [\n", encoding="utf-8")
    result = invoke({**no_database_env(tmp_path), "LIFECYCLE_CAMPAIGNS_DIR": str(folder),
                     "LIFECYCLE_FLOWS_DIR": str(flows)}, "campaign", "validate")
    assert result.exit_code == 1
    assert result.stderr.startswith(str(flows / "segments.yaml"))
    assert result.stdout.strip() == (
        "1 problem: 1 in the templates or segments.yaml they name; without problems: good.")


def test_loading_a_file_stores_a_draft_named_by_it_with_the_file_as_its_source(
        env: dict[str, str], folder: Path, db: Engine) -> None:
    path = folder / "spring.yaml"
    path.write_text(SPRING, encoding="utf-8")
    run(env, "campaign", "validate")
    assert json.loads(run(env, "campaign", "list", "--json")) == []  # a file is no campaign
    out = run(env, "campaign", "load", "spring", "--by", "max@shop.example")
    assert out.startswith(f"Campaign spring is stored as a draft from {path}.")
    row = campaign_row(db, "spring")
    assert (row.status, row.source, row.created_by) == ("draft", f"file:{path.resolve()}",
                                                        "max@shop.example")
    assert row.spec["audience"] == {"segments": ["loyal", "vip"], "exclude": ["lapsed"]}
    assert "nothing changed" in run(env, "campaign", "load", "spring")
    path.write_text(SPRING.replace("exclude: [lapsed]", "exclude: [lapsed, engaged]"),
                    encoding="utf-8")
    assert "(a draft) was loaded again" in run(env, "campaign", "load", str(path))
    assert campaign_row(db, "spring").spec["audience"]["exclude"] == ["lapsed", "engaged"]
    assert history(db, "spring") == [("create", "draft", "max@shop.example"),
                                     ("edit", "draft", "cli")]


def test_create_from_a_file_is_load_and_takes_no_other_option(
        env: dict[str, str], folder: Path, db: Engine) -> None:
    path = folder / "spring.yaml"
    path.write_text(SPRING, encoding="utf-8")
    assert "--file takes the whole campaign from the file: leave out --template" in refused(
        env, "campaign", "create", "--file", str(path), "--template", "birthday")
    assert "is stored as a draft" in run(env, "campaign", "create", "--file", str(path))
    assert campaign_row(db, "spring").source == f"file:{path.resolve()}"


def test_a_file_with_problems_is_not_loaded(env: dict[str, str], folder: Path,
                                            db: Engine) -> None:
    path = folder / "spring.yaml"
    path.write_text(SPRING.replace("kind: marketing", "kind: newsletter"), encoding="utf-8")
    result = invoke(env, "campaign", "load", "spring")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"{path}:2:7: kind must be marketing or transactional")
    with db.connect() as conn:
        assert conn.execute(select(Campaign.id)).first() is None


def test_scheduling_a_file_campaign_is_refused_once_the_file_changed_after_it_was_loaded(
        env: dict[str, str], folder: Path, db: Engine) -> None:
    path = folder / "spring.yaml"
    path.write_text(SPRING, encoding="utf-8")
    run(env, "campaign", "load", "spring")
    assert json.loads(run(env, "campaign", "show", "spring", "--json"))["file"] == {
        "path": str(path.resolve()), "as_loaded": True}
    path.write_text(SPRING.replace("exclude: [lapsed]", "exclude: []"), encoding="utf-8")
    assert json.loads(run(env, "campaign", "show", "spring", "--json"))["file"] == {
        "path": str(path.resolve()), "as_loaded": False}
    assert (f"Its file: {path.resolve()} says something else than what was loaded; "
            "`lifecycle campaign load spring` loads it again.") in run(
        env, "campaign", "show", "spring")
    said = refused(env, "campaign", "schedule", "spring")
    assert said.strip() == (f"Error: {path.resolve()} changed after the campaign 'spring' was "
                            "loaded: load it again (`lifecycle campaign load spring`) to "
                            "schedule what it says now, or put it back as it was; a reviewed "
                            "file is what goes out.")
    assert campaign_row(db, "spring").status == "draft"
    # a comment is no change: what the file says is what counts
    path.write_text("# reviewed by Sam\n" + SPRING, encoding="utf-8")
    assert "is scheduled to start now" in run(env, "campaign", "schedule", "spring")
    assert campaign_row(db, "spring").status == "scheduled"


def test_after_loading_the_changed_file_again_it_is_what_is_scheduled(
        env: dict[str, str], folder: Path, db: Engine) -> None:
    path = folder / "spring.yaml"
    path.write_text(SPRING, encoding="utf-8")
    run(env, "campaign", "load", "spring")
    path.write_text(SPRING.replace("schedule: now", "schedule: {at: 2099-03-01T09:00:00Z}"),
                    encoding="utf-8")
    refused(env, "campaign", "schedule", "spring")
    run(env, "campaign", "load", "spring")
    out = run(env, "campaign", "schedule", "spring", "--by", "max@shop.example")
    assert out.strip() == ("Campaign spring is scheduled to start at 2099-03-01 09:00 UTC: "
                           "the scheduler fixes its audience when it starts.")
    row = campaign_row(db, "spring")
    assert row.spec["schedule"] == {"at": "2099-03-01T09:00:00+00:00"}  # kept as text
    assert row.starts_at.replace(tzinfo=UTC) == datetime(2099, 3, 1, 9, tzinfo=UTC)
    assert history(db, "spring")[-1] == ("schedule", "scheduled", "max@shop.example")
    assert "only a draft is loaded again" in refused(env, "campaign", "load", "spring")


def test_scheduling_is_refused_when_the_reviewed_file_is_gone_or_now_has_problems(
        env: dict[str, str], folder: Path, db: Engine) -> None:
    path = folder / "spring.yaml"
    path.write_text(SPRING, encoding="utf-8")
    run(env, "campaign", "load", "spring")
    path.write_text(SPRING.replace("vip_early_access", "nothing_like_it"), encoding="utf-8")
    broken = invoke(env, "campaign", "schedule", "spring")
    assert broken.exit_code == 1 and f"{path}:3:" in broken.stderr
    assert "unknown template 'nothing_like_it'" in broken.stderr
    path.unlink()
    assert f"was loaded from {path.resolve()}, which is gone" in refused(
        env, "campaign", "schedule", "spring")
    assert campaign_row(db, "spring").status == "draft"


def test_a_file_is_not_loaded_over_a_campaign_made_elsewhere(
        env: dict[str, str], folder: Path) -> None:
    run(env, "campaign", "create", "--name", "spring", "--template", "vip_early_access",
        "--segment", "loyal")
    (folder / "spring.yaml").write_text(SPRING, encoding="utf-8")
    assert ("a campaign named 'spring' exists already, made on the cli: rename spring.yaml "
            "to load it as another campaign") in refused(env, "campaign", "load", "spring")
    assert f"no campaign file {folder / 'autumn.yaml'}" in refused(
        env, "campaign", "load", "autumn")


# -- create from options, list, show ------------------------------------------------------
def test_create_from_options_stores_the_same_shape_a_file_has(
        env: dict[str, str], db: Engine) -> None:
    out = run(env, "campaign", "create", "--name", "spring", "--description", "Spring",
              "--variant", "vip_early_access", "--variant", "birthday", "--segment", "loyal",
              "--segment", "vip", "--exclude", "lapsed", "--where",
              "{attribute: {name: tier, op: '=', value: gold}}", "--schedule", "10:00",
              "--over", "6 hours", "--ab-share", "20%", "--winner-by", "clicks",
              "--winner-after", "4 hours", "--by", "max@shop.example")
    assert out.startswith("Campaign spring is stored as a draft.")
    row = campaign_row(db, "spring")
    assert (row.status, row.source, row.created_by) == ("draft", "cli", "max@shop.example")
    assert row.spec == {
        "kind": "marketing", "description": "Spring",
        "send": {"variants": [{"template": "vip_early_access"}, {"template": "birthday"}]},
        "audience": {"segments": ["loyal", "vip"], "exclude": ["lapsed"],
                     "where": {"attribute": {"name": "tier", "op": "=", "value": "gold"}}},
        "schedule": {"local_time": "10:00"}, "throttle": {"over": "6 hours"},
        "ab_test": {"share": "20%", "winner_by": "clicks", "after": "4 hours"}}
    run(env, "campaign", "create", "--name", "notice", "--kind", "transactional", "--template",
        "thank_you", "--segment", "vip", "--schedule", "2099-01-02T08:00:00Z", "--per-hour", "50")
    notice = campaign_row(db, "notice").spec
    assert notice["schedule"] == {"at": "2099-01-02T08:00:00Z"}
    assert notice["throttle"] == {"per_hour": 50} and notice["kind"] == "transactional"


def test_create_from_options_names_each_problem_and_stores_nothing(
        env: dict[str, str], db: Engine) -> None:
    bad = invoke(env, "campaign", "create", "--name", "spring", "--template", "birthdy",
                 "--segment", "loyall", "--schedule", "soon", "--ab-share", "20%")
    assert bad.exit_code == 1
    said = bad.stderr
    assert "the options: unknown template 'birthdy' (did you mean 'birthday'?)" in said
    assert "the options: unknown segment 'loyall' (did you mean 'loyal'?)" in said
    assert "the options: at: 'soon' is not an ISO 8601 date or date-time" in said
    assert "the options: winner_by is opens (human opens), clicks or conversions" in said
    one = invoke(env, "campaign", "create", "--name", "spring", "--template", "birthday",
                 "--segment", "loyal", "--ab-share", "20%", "--winner-by", "clicks",
                 "--winner-after", "4 hours")
    assert one.exit_code == 1 and one.stderr.startswith(
        "the options: ab_test needs two or more variants")
    where = invoke(env, "campaign", "create", "--name", "spring", "--template", "birthday",
                   "--segment", "loyal", "--where", "{metric: [")
    assert where.exit_code == 1 and where.stderr.startswith("--where:1:")
    assert "not both" in refused(env, "campaign", "create", "--name", "x", "--template", "a",
                                 "--variant", "b", "--segment", "loyal")
    assert "--template (or --variant, twice or more) is missing" in refused(
        env, "campaign", "create", "--name", "x", "--segment", "loyal")
    assert "--name is missing" in refused(env, "campaign", "create", "--template", "birthday")
    with db.connect() as conn:
        assert conn.execute(select(Campaign.id)).first() is None
    run(env, "campaign", "create", "--name", "spring", "--template", "birthday", "--segment",
        "loyal")
    assert "a campaign named 'spring' exists already" in refused(
        env, "campaign", "create", "--name", "spring", "--template", "birthday", "--segment",
        "loyal")


def test_list_shows_every_campaign_with_its_status_as_a_table_or_json(
        env: dict[str, str]) -> None:
    assert "No campaigns yet" in run(env, "campaign", "list")
    run(env, "campaign", "create", "--name", "spring", "--template", "birthday", "--segment",
        "loyal")
    run(env, "campaign", "create", "--name", "notice", "--kind", "transactional",
        "--template", "thank_you", "--segment", "vip")
    run(env, "campaign", "cancel", "notice")
    listed = json.loads(run(env, "campaign", "list", "--json"))
    assert [(c["campaign"], c["status"], c["kind"], c["source"]) for c in listed] == [
        ("notice", "cancelled", "transactional", "cli"), ("spring", "draft", "marketing", "cli")]
    table = run(env, "campaign", "list")
    assert "2 campaigns" in table and "cancelled" in table and "spring" in table


def test_show_counts_the_audience_and_who_would_be_left_out_before_the_start(
        env: dict[str, str], db: Engine) -> None:
    people(db)
    run(env, "campaign", "create", "--name", "spring", "--template", "vip_early_access",
        "--segment", "loyal", "--segment", "vip", "--exclude", "lapsed")
    shown = json.loads(run(env, "campaign", "show", "spring", "--json"))
    assert shown["status"] == "draft" and shown["audience"] == {
        "fixed": False, "size": 4, "mailed": None, "left_out": {
            "no email address": 0, "unsubscribed or suppressed": 1,
            "no marketing consent": 1, "frequency cap": 0,
            "another marketing mail that day": 0}}
    assert shown["definition"]["send"] == {"template": "vip_early_access"}
    assert shown["file"] is None  # made on the command line
    assert [(h["action"], h["by"]) for h in shown["history"]] == [("create", "cli")]
    assert shown["results"] is None
    text = run(env, "campaign", "show", "spring")
    assert "Audience if it started now: 4 customers, 2 to be mailed." in text
    assert "no marketing consent" in text and "template: vip_early_access" in text


def test_show_after_the_start_gives_the_audience_as_it_was_fixed_and_the_results(
        env: dict[str, str], cli_env: dict[str, str], db: Engine) -> None:
    found = people(db)
    run(env, "campaign", "create", "--name", "spring", "--template", "vip_early_access",
        "--segment", "loyal", "--segment", "vip", "--exclude", "lapsed")
    run(env, "campaign", "schedule", "spring")
    start_due(cli_env)
    with db.begin() as conn:  # dee gives consent after the start: the audience stays fixed
        conn.execute(Customer.__table__.update().where(Customer.id == found["dee"]).values(
            marketing_consent=True))
    shown = json.loads(run(env, "campaign", "show", "spring", "--json"))
    assert shown["status"] == "sending"
    assert shown["audience"]["fixed"] and shown["audience"]["size"] == 4
    assert shown["audience"]["mailed"] == 2
    assert shown["audience"]["left_out"]["no marketing consent"] == 1
    assert [h["action"] for h in shown["history"]] == ["create", "schedule", "start"]
    text = run(env, "campaign", "show", "spring")
    assert "Audience fixed at the start: 4 customers, 2 to be mailed." in text
    assert "Results" in text and "human opens" in text and "spam reports" in text
    narrow = CliRunner().invoke(cli, ["campaign", "show", "spring"],
                                env={**env, "COLUMNS": "80"}).stdout
    results = narrow[narrow.index("Results"):]
    assert max(map(len, results.splitlines())) <= 80  # a measure per row: every name whole
    assert re.search(r"human opens\W+0\W", results) and re.search(r"spam reports\W+0\W", results)
    assert shown["results"]["total"]["decided"] == 2  # the two mails written, none sent yet
    assert shown["results"]["total"]["sent"] == 0


# -- preview and test sends --------------------------------------------------------------------
def test_preview_prints_the_subject_and_text_of_each_variant_for_a_customer(
        env: dict[str, str], db: Engine) -> None:
    people(db)
    run(env, "campaign", "create", "--name", "spring", "--variant", "vip_early_access",
        "--variant", "birthday", "--segment", "loyal", "--ab-share", "20%", "--winner-by",
        "opens", "--winner-after", "4 hours")
    out = run(env, "campaign", "preview", "spring", "--customer", "ann@example.com")
    assert "variant vip_early_access" in out and "variant birthday" in out
    assert "Subject: Early access for you, Ann" in out and "To: ann@example.com" in out
    assert "You are one of our best customers" in out
    assert "no customer with customer_id or email 'nobody'" in refused(
        env, "campaign", "preview", "spring", "--customer", "nobody")
    with db.connect() as conn:
        assert conn.execute(select(Message.id)).first() is None  # nothing sent or stored


def test_a_test_send_goes_only_to_a_manager_s_staff_account_inert(
        env: dict[str, str], db: Engine) -> None:
    found = people(db)
    now = datetime.now(UTC)
    with db.begin() as conn:
        for email, role, active in (("max@shop.example", "manager", True),
                                    ("sue@shop.example", "support", True),
                                    ("old@shop.example", "admin", False)):
            conn.execute(insert(StaffUser).values(email=email, role=role, is_active=active,
                                                  created_at=now))
    run(env, "campaign", "create", "--name", "spring", "--variant", "vip_early_access",
        "--variant", "birthday", "--segment", "loyal", "--ab-share", "20%", "--winner-by",
        "opens", "--winner-after", "4 hours")
    for who in ("sue@shop.example", "old@shop.example", "someone@else.example"):
        assert f"{who} is not an active manager's or admin's staff account" in refused(
            env, "campaign", "test", "spring", "--to-me", who, "--customer", "ann")
    out = run(env, "campaign", "test", "spring", "--to-me", "Max@Shop.example", "--customer",
              "ann")
    assert out.splitlines() == [
        f"A test mail of {t}, with the data of customer ann, waits in the outbox for "
        "max@shop.example; a running worker sends it." for t in ("vip_early_access", "birthday")]
    run(env, "campaign", "test", "spring", "--to-me", "max@shop.example", "--customer", "ann",
        "--variant", "birthday")
    assert "sends vip_early_access, birthday, not 'thank_you'" in refused(
        env, "campaign", "test", "spring", "--to-me", "max@shop.example", "--customer", "ann",
        "--variant", "thank_you")
    with db.connect() as conn:
        mails = conn.execute(select(Message.__table__).order_by(Message.id)).all()
    assert [(m.template, m.to_email, m.customer_id, m.campaign_id) for m in mails] == [
        ("vip_early_access", "max@shop.example", found["ann"], None),
        ("birthday", "max@shop.example", found["ann"], None),
        ("birthday", "max@shop.example", found["ann"], None)]
    assert all(m.context["test"] == "max@shop.example" and m.context["marketing"] is False
               and m.context["test_flow"] == "campaign-spring" for m in mails)


# -- status changes ------------------------------------------------------------------------
def test_pause_resume_and_cancel_say_what_happened_and_record_who_did_it(
        env: dict[str, str], cli_env: dict[str, str], db: Engine) -> None:
    people(db)
    run(env, "campaign", "create", "--name", "spring", "--template", "vip_early_access",
        "--segment", "loyal", "--schedule", "2099-01-01T09:00:00Z")
    assert "Campaign spring is scheduled to start at 2099-01-01 09:00 UTC" in run(
        env, "campaign", "schedule", "spring")
    assert run(env, "campaign", "pause", "spring", "--by", "max@shop.example").strip() == (
        "Campaign spring is paused: it does not start until it is resumed.")
    assert run(env, "campaign", "resume", "spring").strip() == (
        "Campaign spring is resumed: it is scheduled again and starts when due.")
    assert campaign_row(db, "spring").status == "scheduled"
    with db.begin() as conn:  # due now
        conn.execute(Campaign.__table__.update().values(starts_at=datetime.now(UTC)
                                                        - timedelta(minutes=1)))
    start_due(cli_env)
    assert run(env, "campaign", "pause", "spring").strip() == (
        "Campaign spring is paused: 2 unsent mails wait until it is resumed.")
    assert run(env, "campaign", "resume", "spring").strip() == (
        "Campaign spring is resumed: 2 held mails go on.")
    assert run(env, "campaign", "cancel", "spring", "--by", "max@shop.example").strip() == (
        "Campaign spring is cancelled: 2 unsent mails were withdrawn.")
    assert [h[0] for h in history(db, "spring")] == [
        "create", "schedule", "pause", "resume", "start", "pause", "resume", "cancel"]
    assert [h[2] for h in history(db, "spring")] == [
        "cli", "cli", "max@shop.example", "cli", "scheduler", "cli", "cli", "max@shop.example"]


def test_each_action_a_campaign_s_status_does_not_allow_is_refused_with_exit_2(
        env: dict[str, str]) -> None:
    run(env, "campaign", "create", "--name", "spring", "--template", "birthday", "--segment",
        "loyal")
    assert "Error: the campaign 'spring' is draft: only a scheduled or sending campaign can " \
           "be paused." in refused(env, "campaign", "pause", "spring")
    assert "only a paused campaign can be resumed" in refused(env, "campaign", "resume",
                                                              "spring")
    run(env, "campaign", "schedule", "spring")
    assert "only a draft can be scheduled" in refused(env, "campaign", "schedule", "spring")
    run(env, "campaign", "cancel", "spring")
    assert "the campaign 'spring' is cancelled already" in refused(env, "campaign", "cancel",
                                                                    "spring")
    for action in ("show", "schedule", "pause", "resume", "cancel"):
        assert "there is no campaign 'autumn': `lifecycle campaign list` names them all." in \
            refused(env, "campaign", action, "autumn")
    run(env, "campaign", "create", "--name", "late", "--template", "birthday", "--segment",
        "loyal", "--schedule", "2020-01-01T09:00:00Z")
    assert "which has passed: change its schedule" in refused(env, "campaign", "schedule",
                                                              "late")


# -- the README ---------------------------------------------------------------------------------
def readme_block(language: str) -> str:
    """The ``language`` code block of the README's "On the command line and as files"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    part = text.split("### On the command line and as files", 1)[1].split("\n## ", 1)[0]
    return part.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_readme_shows_the_shipped_example_file_as_it_is() -> None:
    lines = [line for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
             if not line.startswith("#")]
    assert readme_block("yaml").splitlines() == lines


def test_the_readme_s_commands_run_as_written(env: dict[str, str], db: Engine) -> None:
    import shlex

    people(db)
    with db.begin() as conn:
        conn.execute(insert(StaffUser).values(email="max@shop.example", role="manager",
                                              is_active=True, created_at=datetime.now(UTC)))
    said = []
    for line in readme_block("sh").replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        assert words[0] == "lifecycle"
        said.append(run(env, *words[1:]))
    assert campaign_row(db, "spring").spec == {
        "kind": "marketing", "send": {"template": "vip_early_access"},
        "audience": {"segments": ["loyal", "vip"], "exclude": ["lapsed"]},
        "schedule": {"local_time": "10:00"}, "throttle": {"per_hour": 5000}}
    assert "Audience if it started now: 4 customers, 2 to be mailed." in said[1]
    assert "Subject: Early access for you, Ann" in said[2]
    assert "waits in the outbox for max@shop.example" in said[3]
    assert "at 10:00 in their own time zone within 24 hours" in said[4]
