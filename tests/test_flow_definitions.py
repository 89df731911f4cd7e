"""Flow files: the shipped flows are valid; each kind of mistake is named with its position."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifecycle.cli import cli
from lifecycle.flows.definitions import Branch, Context, Send, Wait, load_flow, load_folder
from lifecycle.locales import SHIPPED
from lifecycle.segments.definitions import load_definitions
from lifecycle.yamlfile import InvalidFile

ROOT = Path(__file__).resolve().parent.parent
SEGMENTS = set(load_definitions(ROOT / "flows" / "segments.yaml").all_names())
CONTEXT = Context.from_folders(ROOT / "templates" / "email", SEGMENTS)


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidFile) as caught:
        load_flow(path, CONTEXT)
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


def test_the_nine_shipped_flows_are_valid() -> None:
    catalogue = load_folder(ROOT / "flows", CONTEXT)
    assert catalogue.problems == []
    assert sorted(catalogue.flows) == ["advocacy_ask", "birthday", "feedback_request",
                                       "loyalty_offer", "replenishment", "second_purchase",
                                       "thank_you", "vip_early_access", "win_back"]
    thanks = catalogue.flows["thank_you"]
    assert thanks.kind == "transactional" and thanks.exempt_from_cap
    assert thanks.trigger.kind == "order_placed" and thanks.reentry == "every_time"
    win_back = catalogue.flows["win_back"]
    assert [type(s.action) for s in win_back.steps] == [Wait, Send, Wait, Send, Wait, Branch,
                                                        Send]
    assert win_back.goals == ({"ordered": True},)
    assert catalogue.flows["loyalty_offer"].trigger.options == {"segments": ["vip", "loyal"]}
    ask = catalogue.flows["advocacy_ask"].steps[0].action
    assert isinstance(ask, Wait) and ask.business_days == 1 and ask.at == (10, 0)


def test_every_shipped_template_has_a_subject_and_both_bodies_in_every_language() -> None:
    for email in (ROOT / "templates" / "email").iterdir():
        if email.name.startswith("_"):
            continue
        for locale in SHIPPED:
            folder = email / locale
            assert {"subject.txt", "body.txt", "body.html"} <= {p.name for p in folder.iterdir()}
            assert '{% extends "_base/body.html" %}' in (folder / "body.html").read_text()
    for locale in SHIPPED:
        assert (ROOT / "templates" / "email" / "_base" / locale / "words.yaml").is_file()


def test_unknown_templates_segments_and_durations_are_named(tmp_path: Path) -> None:
    found = problems(tmp_path, """trigger:
  segment_entered: [sleepy, lapsd]
steps:
  - id: a
    wait: three days
  - id: b
    send: thank_yuo
  - id: c
    wait: {for: 2 weeks, at: "25:00"}
""")
    assert found == [
        "F:2:21: unknown segment 'sleepy'; see flows/segments.yaml (`lifecycle segments list`)",
        "F:2:29: unknown segment 'lapsd' (did you mean 'lapsed'?); see flows/segments.yaml "
        "(`lifecycle segments list`)",
        "F:5:11: 'three days' is not a duration such as '30 days' or '2 weeks'",
        "F:7:11: unknown template 'thank_yuo' (did you mean 'thank_you'?): no folder "
        "templates/email/thank_yuo/ with subject.txt and body.txt or body.html",
        "F:9:30: '25:00' is not a time of day such as '09:30'",
    ]


def test_an_unreachable_step_is_named(tmp_path: Path) -> None:
    found = problems(tmp_path, """trigger: {first_order: {}}
steps:
  - id: hello
    send: thank_you
  - exit: done
  - id: orphan
    send: thank_you
""")
    assert found == ["F:6:5: step 'orphan' can never be reached"]


def test_a_loop_without_a_wait_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, """trigger: {first_order: {}}
steps:
  - id: mail
    send: thank_you
  - id: again
    branch:
      if: {opened: mail}
      then: exit
      else: mail
""")
    assert found == ["F:3:5: the loop mail -> again -> mail has no wait step"]


def test_a_branch_with_no_way_out_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, """trigger: {first_order: {}}
steps:
  - id: pause
    wait: 1 day
  - id: check
    branch:
      if: {ordered: true}
      then: pause
      else: pause
""")
    assert found == ["F:3:5: step 'pause' has no way out: every path from it loops forever",
                     "F:5:5: step 'check' has no way out: every path from it loops forever"]


def test_bad_targets_keys_and_conditions_are_each_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, """trigger: {order_placed: {nth: first}}
kind: newsletter
reentry: sometimes
goals:
  - bought: true
steps:
  - id: mail
    send: {variants: [{template: thank_you, weight: 0}, {template: winback_1}]}
    colour: blue
  - branch:
      if: {clicked: later}
      then: nowhere
""")
    assert found == [
        "F:1:31: nth must be a whole number",
        "F:2:7: kind must be marketing or transactional",
        "F:3:10: reentry is once, every_time or {once_per: 90 days}",
        "F:5:5: a condition is one of 'all:', 'any:', 'not:', 'opened:', 'clicked:', 'replied:', "
        "'ordered:', 'in_segment:', 'entered_segment:', 'attribute:'",
        "F:8:53: weight must be a whole number of 1 or more",
        "F:9:13: unknown step setting 'colour'; a step has an id and one of wait, send, branch, "
        "set, exit",
        "F:11:21: clicked names 'later', which is not a send step before this one (or write "
        "true for any mail of this flow)",
        "F:12:13: then goes to 'nowhere', which is no step id; use a step id, next or exit",
    ]


def test_validate_reports_broken_files_and_still_accepts_the_good_ones(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", folder)
    (folder / "broken.yaml").write_text("trigger: {first_order: {}}\nsteps:\n  - send: nope\n",
                                        encoding="utf-8")
    catalogue = load_folder(folder, CONTEXT)
    assert len(catalogue.flows) == 9 and "broken" not in catalogue.flows
    result = CliRunner().invoke(cli, ["flows", "validate", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{folder / 'broken.yaml'}:3:11: unknown template 'nope'")
    ok = CliRunner().invoke(cli, ["flows", "validate"])
    assert ok.exit_code == 0 and ok.stdout.startswith("9 flows without problems")


def test_a_broken_segments_file_is_one_problem_not_one_per_flow_naming_a_segment(
        tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", folder)
    (folder / "segments.yaml").write_text("custom:\n  vip_plus:\n    all:\n      - metric: "
                                          "{name: order_count, op: \"==\", value: 3}\n",
                                          encoding="utf-8")
    result = CliRunner().invoke(cli, ["flows", "validate", str(folder)])
    assert result.exit_code == 1
    assert "segments.yaml" in result.stderr and "unknown segment" not in result.stderr
    assert all("segments.yaml" in line or "warning" in line
               for line in result.stderr.splitlines() if line.strip())
