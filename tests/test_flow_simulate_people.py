"""`flows simulate` with people: opens and clicks drawn, who was left out, conditions that
cannot hold."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Connection

from lifecycle.cli import cli
from lifecycle.flows.definitions import Context, load_flow, load_folder
from lifecycle.flows.engine import Policies
from lifecycle.flows.simulate import Simulation, simulate, warnings
from lifecycle.models import Suppression, email_hash
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order

ROOT = Path(__file__).resolve().parent.parent
DEFS = load_definitions(ROOT / "flows" / "segments.yaml")
CONTEXT = Context.from_folders(ROOT / "templates" / "email", set(DEFS.all_names()))
FLOWS = load_folder(ROOT / "flows", CONTEXT).flows
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
BRANCH_NEVER = ("The branch clicked-before ({clicked: ten-percent}) can never hold in this "
                "simulation: the click rate is 0; every enrollment takes its else path (next).")


def lapsing(conn: Connection, *names: str, **values: object) -> list[int]:
    """Customers who lapse on day 11 of the window (win_back enrols them)."""
    ids = []
    for name in names:
        cid = add_customer(conn, name, START - timedelta(days=600), timezone="UTC", **values)
        add_order(conn, cid, START - timedelta(days=200), "40.00")
        add_order(conn, cid, START - timedelta(days=170), "40.00")
        ids.append(cid)
    return ids


def run(conn: Connection, flow: str = "win_back", policies: Policies | None = None,
        **rates: float) -> Simulation:
    return simulate(conn, FLOWS[flow], DEFS, START, END, policies=policies or Policies(),
                    default_tz="UTC", **rates)  # type: ignore[arg-type]


def test_drawn_clicks_send_some_customers_down_each_path_of_a_click_branch(
        conn: Connection) -> None:
    lapsing(conn, *(f"c{n}" for n in range(30)))
    result = run(conn, open_rate=0.6, click_rate=0.3, seed=7)
    held, not_held = result.branches["clicked-before"]
    assert held > 0 and not_held > 0 and held + not_held == 30
    assert result.outcomes["completed: branch clicked-before"] == held  # then: exit
    assert result.per_step["last-chance"] == not_held  # else: next
    assert result.per_step["miss-you"] == result.per_step["ten-percent"] == 30
    assert 0 < result.clicked < result.opened < len(result.mails)
    assert not any("clicked-before" in warning for warning in result.warnings)


def test_the_same_seed_gives_the_same_simulation(conn: Connection) -> None:
    lapsing(conn, *(f"c{n}" for n in range(30)))
    first = run(conn, open_rate=0.5, click_rate=0.25, seed=3)
    again = run(conn, open_rate=0.5, click_rate=0.25, seed=3)
    other = run(conn, open_rate=0.5, click_rate=0.25, seed=4)
    assert (first.mails, first.opened, first.clicked, first.branches) == \
        (again.mails, again.opened, again.clicked, again.branches)
    assert (other.opened, other.clicked, other.branches) != \
        (first.opened, first.clicked, first.branches)


def test_without_rates_nobody_opens_and_a_click_branch_is_reported_as_never_holding(
        conn: Connection) -> None:
    lapsing(conn, "ann", "bob")
    result = run(conn)
    assert result.opened == result.clicked == 0
    assert result.branches["clicked-before"] == (0, 2)
    assert result.warnings == [BRANCH_NEVER]
    assert BRANCH_NEVER not in run(conn, open_rate=0.5, click_rate=0.1).warnings


def test_a_branch_that_went_the_same_way_every_time_is_reported(conn: Connection) -> None:
    lapsing(conn, "ann", "bob")
    result = run(conn, open_rate=1.0, click_rate=1.0)
    assert result.clicked == result.opened == len(result.mails) == 4  # two mails each
    assert result.warnings == [
        "The branch clicked-before ({clicked: ten-percent}) held all 2 times it was tried: "
        "its else path (next) was never taken."]


def test_goals_and_branches_on_opens_are_reported_when_the_open_rate_is_zero(
        conn: Connection, tmp_path: Path) -> None:
    (tmp_path / "remind.yaml").write_text("""\
description: Remind lapsed customers until they read it.
kind: marketing
trigger:
  segment_entered: lapsed
goals:
  - opened: true
steps:
  - id: first
    send: winback_1
  - id: later
    wait: 3 days
  - id: unread
    branch:
      if: {not: {opened: first}}
      then: next
      else: exit
  - id: again
    send: winback_1
""", encoding="utf-8")
    flow = load_flow(tmp_path / "remind.yaml", CONTEXT)
    lapsing(conn, "ann")
    result = simulate(conn, flow, DEFS, START, END, policies=Policies(), default_tz="UTC")
    assert result.warnings == [
        "The goal {opened: true} can never be reached in this simulation: the open rate is 0.",
        "The branch unread ({not: {opened: first}}) always holds in this simulation: the open "
        "rate is 0; no enrollment takes its else path (exit)."]
    opened = simulate(conn, flow, DEFS, START, END, policies=Policies(), default_tz="UTC",
                      open_rate=1.0)
    assert opened.outcomes == {"exited: goal: opened": 1}
    assert opened.warnings == []


def test_customers_left_out_are_counted_by_reason(conn: Connection) -> None:
    lapsing(conn, "quiet", marketing_consent=False)
    lapsing(conn, "nowhere", email=None)
    lapsing(conn, "bounced", "unsubscribed", "ann", "bob")
    for who, scope in (("bounced", "all"), ("unsubscribed", "flow:win_back")):
        conn.execute(Suppression.__table__.insert().values(
            email_hash=email_hash(f"{who}@example.com"), scope=scope, reason="unsubscribe",
            source="test", created_at=START))
    # One marketing mail a month: the second and third mail of ann and bob are capped.
    result = run(conn, policies=Policies(cap=1, cap_window=timedelta(days=30)),
                 open_rate=1.0)
    assert result.left_out == {"no marketing consent": 1, "suppressed": 2, "frequency cap": 2,
                               "no email address": 1}
    assert result.opened == 2  # only the mails sent draw: not the capped or withheld ones
    assert sorted((customer, step) for _d, customer, _e, step, *_ in result.mails) == [
        ("ann", "miss-you"), ("bob", "miss-you")]  # none to the unsubscribed one
    assert result.capped == 4


def test_the_simulate_command_draws_opens_and_clicks_and_counts_who_was_left_out(
        cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["sample-data", "--customers", "60", "--until", "2026-07-01"],
                         env=cli_env).exit_code == 0
    window = ["flows", "simulate", "win_back", "--from", "2026-01-01", "--to", "2026-07-01",
              "--show", "0"]
    plain = runner.invoke(cli, window, env=cli_env)
    assert plain.exit_code == 0, plain.output
    assert "Nobody opens or clicks in this simulation" in plain.stdout
    assert "Customers left out" in plain.stdout and "no marketing consent" in plain.stdout
    assert "Warning: The branch clicked-before ({clicked: ten-percent}) can never hold" \
        in plain.stdout
    drawn = runner.invoke(cli, [*window, "--open-rate", "40%", "--click-rate", "0.08"],
                          env=cli_env)
    assert drawn.exit_code == 0, drawn.output
    assert "Opens and clicks were drawn with seed 1:" in drawn.stdout
    assert "Nobody opens" not in drawn.stdout
    again = runner.invoke(cli, [*window, "--open-rate", "40%", "--click-rate", "8%"],
                          env=cli_env)
    assert again.stdout.splitlines()[1:] == drawn.stdout.splitlines()[1:]  # line 0 has the time
    bad = runner.invoke(cli, [*window, "--open-rate", "forty"], env=cli_env)
    assert bad.exit_code == 2 and "--open-rate: 'forty' is not a rate" in bad.stderr
    over = runner.invoke(cli, [*window, "--open-rate", "5%", "--click-rate", "8%"], env=cli_env)
    assert over.exit_code == 2 and "cannot be higher than --open-rate" in over.stderr
    past = runner.invoke(cli, [*window, "--open-rate", "150%"], env=cli_env)
    assert past.exit_code == 2 and "is not between 0% and 100%" in past.stderr


def test_a_mail_is_opened_an_hour_after_it_is_due(conn: Connection, tmp_path: Path) -> None:
    (tmp_path / "check.yaml").write_text("""\
description: Look whether they read it soon.
kind: transactional
trigger:
  order_placed: {}
reentry: every_time
steps:
  - id: hello
    send: thank_you
  - id: soon
    wait: 45 minutes
  - id: read-soon
    branch: {if: {opened: hello}, then: next, else: next}
  - id: later
    wait: 30 minutes
  - id: read-later
    branch: {if: {opened: hello}, then: next, else: next}
""", encoding="utf-8")
    flow = load_flow(tmp_path / "check.yaml", CONTEXT)
    cid = add_customer(conn, "ann", START - timedelta(days=10), timezone="UTC")
    add_order(conn, cid, START + timedelta(days=3, hours=12), "20.00")
    result = simulate(conn, flow, DEFS, START, END, policies=Policies(), default_tz="UTC",
                      resolution=timedelta(minutes=15), open_rate=1.0)
    assert result.opened == 1
    assert result.branches == {"read-soon": (0, 1), "read-later": (1, 0)}


def test_warnings_follow_all_any_and_not_and_leave_untried_branches_alone(
        tmp_path: Path) -> None:
    (tmp_path / "mixed.yaml").write_text("""\
description: Conditions of every shape.
kind: marketing
trigger:
  segment_entered: lapsed
goals:
  - replied: true
  - any: [{clicked: true}, {ordered: true}]
steps:
  - id: first
    send: winback_1
  - id: both
    branch: {if: {all: [{clicked: first}, {ordered: true}]}, then: exit, else: next}
  - id: either
    branch: {if: {any: [{not: {opened: first}}, {ordered: true}]}, then: next, else: exit}
  - id: unknown
    branch: {if: {any: [{opened: first}, {ordered: true}]}, then: next, else: exit}
""", encoding="utf-8")
    flow = load_flow(tmp_path / "mixed.yaml", CONTEXT)
    found = warnings(flow, Simulation("mixed", START, END))
    assert found == [
        "The goal {replied: true} can never be reached in this simulation: nobody replies "
        "in a simulation.",
        "The branch both ({all: [{clicked: first}, {ordered: true}]}) can never hold in this "
        "simulation: the click rate is 0; every enrollment takes its else path (next).",
        "The branch either ({any: [{not: {opened: first}}, {ordered: true}]}) always holds in "
        "this simulation: the open rate is 0; no enrollment takes its else path (exit)."]
    drawn = warnings(flow, Simulation("mixed", START, END, open_rate=0.5, click_rate=0.1))
    assert drawn == [found[0]]  # the branches were never tried: nothing to say about them


def test_a_condition_in_a_warning_is_written_as_the_flow_file_writes_it() -> None:
    from lifecycle.flows.simulate import dump_condition

    assert dump_condition({"clicked": "frühzugang"}) == "{clicked: frühzugang}"
    assert dump_condition({"all": [{"opened": True}, {"attribute": {
        "name": "stadt", "op": "=", "value": "Kraków"}}]}) == (
        "{all: [{opened: true}, {attribute: {name: stadt, op: '=', value: Kraków}}]}")


def test_the_simulate_command_repeats_what_validate_warns_about_the_data_the_flow_names(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    """A flow waiting for a category nobody buys simulates to nothing: the report says why,
    for the flow's own file and for the custom segment it is triggered by."""
    import shutil

    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    (flows / "coffee_fans.yaml").write_text(
        "status: draft\nkind: transactional\ntrigger: {order_placed: {category: Cofee}}\n"
        "steps:\n  - send: thank_you\n", encoding="utf-8")
    segments = flows / "segments.yaml"
    segments.write_text(segments.read_text(encoding="utf-8")
                        + "  matcha_lovers:\n    bought: {category: matcha}\n", encoding="utf-8")
    (flows / "matcha.yaml").write_text(
        "status: draft\nkind: marketing\ntrigger: {segment_entered: matcha_lovers}\n"
        "steps:\n  - send: thank_you\n", encoding="utf-8")
    env = {**cli_env, "LIFECYCLE_FLOWS_DIR": str(flows)}
    runner = CliRunner()
    assert runner.invoke(cli, ["sample-data", "--customers", "30", "--until", "2026-03-01"],
                         env=env).exit_code == 0
    window = ["--from", "2026-01-01", "--to", "2026-03-01", "--show", "0"]
    coffee = runner.invoke(cli, ["flows", "simulate", "coffee_fans", *window], env=env)
    assert coffee.exit_code == 0, coffee.output
    assert f"Warning: {flows / 'coffee_fans.yaml'}:3:36: no order has category 'Cofee'; known:" \
        in coffee.stdout and "did you mean 'coffee'?" in coffee.stdout
    matcha = runner.invoke(cli, ["flows", "simulate", "matcha", *window], env=env)
    assert matcha.exit_code == 0, matcha.output
    [line] = [t for t in matcha.stdout.splitlines() if "no order has category" in t]
    assert line.startswith(f"Warning: {segments}:") and "'matcha'" in line
    # the segment it does not read is not its business; validate names it, simulate not
    assert "Cofee" not in matcha.stdout
    thanks = runner.invoke(cli, ["flows", "simulate", "thank_you", *window], env=env)
    assert thanks.exit_code == 0 and "no order has" not in thanks.stdout
