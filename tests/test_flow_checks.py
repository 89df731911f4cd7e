"""``lifecycle flows validate`` renders every template a flow sends in every locale and compares
what flows and segments name with the data; YAML mistakes and step ids are explained."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, text

from lifecycle.cli import cli
from lifecycle.config import load_settings
from lifecycle.db import make_engine
from lifecycle.flows.checks import Known, Reference, check, data_warnings
from lifecycle.flows.definitions import Context, load_flow, load_folder
from lifecycle.flows.policies import load_policies
from lifecycle.segments.definitions import load_definitions
from lifecycle.yamlfile import InvalidFile
from tests.factories import add_customer, add_order, add_touchpoint

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SEGMENTS = set(load_definitions(ROOT / "flows" / "segments.yaml").all_names())


def copies(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the shipped templates and flows to break."""
    templates, flows = tmp_path / "email", tmp_path / "flows"
    shutil.copytree(ROOT / "templates" / "email", templates)
    shutil.copytree(ROOT / "flows", flows)
    return templates, flows


def no_database(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"LIFECYCLE_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}", **more}


def settings_for(templates: Path, flows: Path):  # type: ignore[no-untyped-def]
    return replace(load_settings({}), templates_dir=templates, flows_dir=flows)


def loaded(settings):  # type: ignore[no-untyped-def]
    catalogue = load_folder(settings.flows_dir, Context.from_folders(settings.templates_dir,
                                                                      SEGMENTS))
    assert catalogue.problems == []
    return list(catalogue.flows.values())


# ------------------------------------------------------------------------ templates


def test_every_undefined_variable_in_every_locale_is_listed_with_file_line_and_a_hint(
        tmp_path: Path) -> None:
    templates, _flows = copies(tmp_path)
    german = templates / "thank_you" / "de" / "body.txt"
    german.write_text(german.read_text(encoding="utf-8").replace(
        "{{ customer.first_name }}", "{{ customer.frist_name }}"), encoding="utf-8")
    english = templates / "thank_you" / "en" / "body.txt"
    english.write_text(english.read_text(encoding="utf-8")
                       + "{{ order.totl }} and {{ shopp.name }}\n"
                         "{% for line in order.lines %}{{ line.nmae }}{% endfor %}\n",
                       encoding="utf-8")
    last = len(english.read_text(encoding="utf-8").splitlines())
    html = templates / "thank_you" / "sv" / "body.html"
    html.write_text(html.read_text(encoding="utf-8").replace(
        "{{ customer.first_name }}", "{{ customer.first_nam }}"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["flows", "validate"],
                                env=no_database(tmp_path,
                                                LIFECYCLE_TEMPLATES_DIR=str(templates)))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"{german}:1: `customer` has no `frist_name`; did you mean `first_name`?" in lines
    assert f"{english}:{last - 1}: `order` has no `totl`; did you mean `total`?" in lines
    assert f"{english}:{last - 1}: `shopp` is undefined; did you mean `shop`?" in lines
    assert f"{english}:{last}: `line` has no `nmae`; did you mean `name`?" in lines
    assert any(line.startswith(f"{html}:") and line.endswith(
        "`customer` has no `first_nam`; did you mean `first_name`?") for line in lines)
    assert result.stdout.strip() == ("5 problems. Templates rendered for the built-in example customer in "
                         "every locale they have. The data was not compared: there is no "
                         f"database at SQLite file {tmp_path / 'none.db'}.")
    assert not (tmp_path / "none.db").exists()  # validating makes no database


def test_without_a_database_the_shipped_templates_render_for_the_example_customer(
        tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["flows", "validate"], env=no_database(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "Templates rendered for the built-in example customer in every locale" in \
        result.stdout


def test_templates_render_with_real_customers_when_the_database_has_them(
        tmp_path: Path, conn: Connection) -> None:
    templates, flows = copies(tmp_path)
    body = templates / "thank_you" / "en" / "body.txt"
    body.write_text("Your tier: {{ customer.attributes.tier }}\n"
                    + body.read_text(encoding="utf-8"), encoding="utf-8")
    settings = settings_for(templates, flows)
    example = check(settings, loaded(settings), None, NOW)
    assert [str(p) for p in example.errors] == [
        f"{body}:1: `customer.attributes` has no `tier`; it has birthday"]
    ids = []
    for n, tier in enumerate(("gold", "silver", "bronze", None)):
        attributes = {"tier": tier} if tier else {}
        customer = add_customer(conn, f"c{n}", NOW, first_name=f"Kim{n}", locale="de-DE",
                                attributes=attributes)
        ids.append(customer)
        add_order(conn, customer, NOW.replace(month=5, day=1 + n), "12.00",
                  items=[{"sku": "TEA-1", "name": "Tea", "price": "12.00", "category": "tea"}])
    add_order(conn, ids[0], NOW.replace(month=5), "5.00", status="cancelled")
    # the three customers of the completed orders recorded last: c3 (no tier), c2, c1
    report = check(settings, loaded(settings), conn, NOW)
    assert report.rendered_for == "3 customers (c3, c2, c1)"
    assert [str(p) for p in report.errors] == [f"{body}:1: `customer.attributes` has no `tier`"]


# ------------------------------------------------------------------------ data


def with_data(conn: Connection) -> None:
    ada = add_customer(conn, "ada", NOW, attributes={"birthday": "1990-05-17", "tier": "gold"})
    ben = add_customer(conn, "ben", NOW, attributes={"birthday": "1985-01-02"})
    coffee = {"sku": "COF-1", "name": "Beans", "price": "9.00", "category": "coffee"}
    tea = {"sku": "TEA-1", "name": "Sencha", "price": "8.00", "category": "tea"}
    kettle = {"sku": "ACC-1", "name": "Kettle", "price": "40.00", "category": "equipment"}
    for day, items in ((1, [coffee]), (2, [coffee, tea]), (3, [coffee, kettle]), (4, [tea])):
        add_order(conn, ada if day % 2 else ben, NOW.replace(month=5, day=day), "20.00",
                  items=items)
    # lines of other shapes name nothing (and break nothing)
    add_order(conn, ben, NOW.replace(month=4), "1.00", items=["a note", 3, {"name": "Wrap"}])
    add_touchpoint(conn, ada, "event", NOW, name="signed_up")
    add_touchpoint(conn, ben, "event", NOW, name="signed_up")
    add_touchpoint(conn, ben, "event", NOW, name="cart_abandoned")


FLOW = """\
trigger:
  first_order: {category: %s}
goals:
  - attribute: {name: tierr, op: exists}
steps:
  - id: check
    branch: {if: {attribute: {name: %s, op: "=", value: x}}, then: thanks}
  - id: thanks
    send: thank_you
  - id: mark
    set: {attribute: welcomed, value: true}
status: live
"""


def test_categories_skus_attributes_and_events_no_data_has_are_warnings_with_known_values(
        tmp_path: Path, conn: Connection) -> None:
    with_data(conn)
    templates, flows = copies(tmp_path)
    (flows / "coffee_fans.yaml").write_text(FLOW % ("Coffee", "welcomed"), encoding="utf-8")
    (flows / "tea_fans.yaml").write_text(FLOW.replace("category: %s", "sku: TEA-2")
                                         % "birthday", encoding="utf-8")
    (flows / "signups.yaml").write_text(
        "trigger: {event: signup}\nsteps:\n  - send: thank_you\n", encoding="utf-8")
    (flows / "birthdays.yaml").write_text(
        "trigger: {date: {attribute: birthdy}}\nsteps:\n  - send: thank_you\n", encoding="utf-8")
    segments = flows / "segments.yaml"
    before = len(segments.read_text(encoding="utf-8").splitlines())
    segments.write_text(segments.read_text(encoding="utf-8") + (
        "  cofee_lovers:\n    bought: {category: cofee}\n"
        "  kettle_folk:\n    any:\n      - bought: {sku: ACC-9}\n"
        "      - attribute: {name: teir, op: exists}\n"
        "  tea_refills:\n    due_again: {sku: TEA-9, first_cycle: 30 days}\n"), encoding="utf-8")
    settings = settings_for(templates, flows)
    report = check(settings, loaded(settings), conn, NOW, segments)
    assert report.errors == []
    found = [str(p).replace(str(flows) + "/", "") for p in report.warnings]
    assert found == [
        "birthdays.yaml:1:29: no customer has the attribute 'birthdy' (nor does any flow's set "
        "step write it); known: birthday (2), tier (1); did you mean 'birthday'?",
        "coffee_fans.yaml:2:27: no order has category 'Coffee'; known: coffee (3), tea (2), "
        "equipment (1); did you mean 'coffee'?",
        "coffee_fans.yaml:4:23: no customer has the attribute 'tierr' (nor does any flow's set "
        "step write it); known: birthday (2), tier (1); did you mean 'tier'?",
        f"segments.yaml:{before + 2}:24: no order has category 'cofee'; known: coffee (3), "
        "tea (2), equipment (1); did you mean 'coffee'?",
        f"segments.yaml:{before + 5}:23: no order has SKU 'ACC-9'; known: COF-1 (3), TEA-1 (2), "
        "ACC-1 (1); did you mean 'ACC-1'?",
        f"segments.yaml:{before + 6}:27: no customer has the attribute 'teir' (nor does any "
        "flow's set step write it); known: birthday (2), tier (1); did you mean 'tier'?",
        f"segments.yaml:{before + 8}:22: no order has SKU 'TEA-9'; known: COF-1 (3), TEA-1 (2), "
        "ACC-1 (1); did you mean 'TEA-1'?",
        "signups.yaml:1:18: no event is named 'signup' (an event trigger waits for events sent "
        "with this name); known: signed_up (2), cart_abandoned (1); did you mean 'signed_up'?",
        "tea_fans.yaml:2:22: no order has SKU 'TEA-2'; known: COF-1 (3), TEA-1 (2), ACC-1 (1); "
        "did you mean 'TEA-1'?",
        "tea_fans.yaml:4:23: no customer has the attribute 'tierr' (nor does any flow's set "
        "step write it); known: birthday (2), tier (1); did you mean 'tier'?",
    ]


def test_an_empty_database_gives_no_data_warnings(tmp_path: Path, conn: Connection) -> None:
    templates, flows = copies(tmp_path)
    (flows / "coffee_fans.yaml").write_text(FLOW % ("Coffee", "welcomed"), encoding="utf-8")
    settings = settings_for(templates, flows)
    report = check(settings, loaded(settings), conn, NOW, flows / "segments.yaml")
    assert report.warnings == [] and report.errors == []
    assert report.rendered_for == "the built-in example customer"


def test_validate_prints_warnings_and_exits_0_when_there_are_only_warnings(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.begin() as conn:
        with_data(conn)
    engine.dispose()
    _templates, flows = copies(tmp_path)
    (flows / "coffee_fans.yaml").write_text(FLOW % ("Coffee", "welcomed"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["flows", "validate"],
                                env={**cli_env, "LIFECYCLE_FLOWS_DIR": str(flows)})
    assert result.exit_code == 0, result.stderr
    assert (f"{flows / 'coffee_fans.yaml'}:2:27: warning: no order has category 'Coffee'; "
            "known: coffee (3), tea (2), equipment (1); did you mean 'coffee'?") \
        in result.stderr.splitlines()
    assert result.stdout.startswith("10 flows without problems, 2 warnings: advocacy_ask, "
                                    "birthday, coffee_fans,")
    assert "Templates rendered for 2 customers (ben, ada) in every locale they have." \
        in result.stdout
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:  # validating made no secret key
        assert conn.execute(text("SELECT COUNT(*) FROM instance_secrets")).scalar_one() == 0
    engine.dispose()


def test_a_warning_lists_at_most_ten_known_values_most_common_first() -> None:
    known = Known(categories={f"c{n:02}": n for n in range(1, 13)})
    [warning] = data_warnings(known, [Reference("category", "zz", "F", 3, 5)])
    assert str(warning) == ("F:3:5: no order has category 'zz'; known: c12 (12), c11 (11), "
                            "c10 (10), c09 (9), c08 (8), c07 (7), c06 (6), c05 (5), c04 (4), "
                            "c03 (3) and 2 more")


def test_a_database_that_is_not_migrated_is_only_read_and_the_example_customer_is_used(
        tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = CliRunner().invoke(cli, ["flows", "validate"],
                                env={"LIFECYCLE_DATABASE_URL": f"sqlite:///{empty}"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        "Templates rendered for the built-in example customer in every locale they have. The "
        f"data was not compared: the database SQLite file {empty} is not migrated "
        "(`lifecycle db upgrade`).\n")
    assert sqlite3.connect(empty).execute("SELECT COUNT(*) FROM sqlite_master").fetchone() == (0,)


# ------------------------------------------------------------------------ YAML and ids


def flow_problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidFile) as caught:
        load_flow(path, Context({"thank_you"}, set()))
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


def test_a_tab_is_explained_in_plain_words(tmp_path: Path) -> None:
    assert flow_problems(tmp_path, "trigger:\n\tfirst_order: {}\nsteps: []\n") == [
        "F:2:1: a tab character: YAML indents with spaces only; replace the tab with spaces "
        "(as many as the lines above use)"]


def test_a_bad_indent_is_explained_in_plain_words(tmp_path: Path) -> None:
    assert flow_problems(tmp_path, "trigger:\n  first_order: {}\n   reentry: once\n") == [
        "F:3:4: this line is indented by 3 spaces, but the settings above it (from line 2) by "
        "2 spaces: the keys of one mapping start in the same column (and a line indented "
        "further belongs under a key that ends with a colon)"]
    assert flow_problems(tmp_path, "steps:\n  - id: a\n  send: x\n") == [
        "F:3:3: this line is indented by 2 spaces and is not a list item: the list above it "
        "(from line 2) has its items at 2 spaces, each starting with '- '; indent this line as "
        "far as the settings of the item above, or start it with '- '"]
    assert flow_problems(tmp_path, "description: Note: read me\n")[0] == (
        "F:1:18: a colon and a space inside a value, or a key indented under a value: put a "
        "value that holds ': ' in quotes (description: \"Note: …\"), or check the indentation "
        "of this line")


def test_an_unclosed_bracket_or_quote_is_explained_in_plain_words(tmp_path: Path) -> None:
    assert flow_problems(tmp_path, "trigger: {first_order: {}\nsteps: []\n") == [
        "F:2:1: the { opened at line 1, column 10 is not closed with } (or a comma is missing "
        "between its items)"]
    assert flow_problems(tmp_path, "description: \"Thanks\nsteps: []\n") == [
        "F:3:1: the quote opened at line 1, column 14 is never closed"]


def test_an_unquoted_time_of_day_says_to_quote_it(tmp_path: Path) -> None:
    found = flow_problems(tmp_path, "trigger: {date: {attribute: birthday, at: 10:00}}\n"
                                    "steps:\n  - wait: {until_weekday: monday, at: 9:30}\n"
                                    "  - send: thank_you\n")
    assert found == [
        "F:1:43: at: 10:00 was read as the number 600 (YAML reads an unquoted time as "
        "minutes); write the time in quotes: at: \"10:00\"",
        "F:3:39: at: 9:30 was read as the number 570 (YAML reads an unquoted time as "
        "minutes); write the time in quotes: at: \"9:30\""]
    (tmp_path / "policies.yaml").write_text("quiet_hours: {from: 21:00, to: \"08:00\"}\n",
                                            encoding="utf-8")
    with pytest.raises(InvalidFile) as caught:
        load_policies(tmp_path)
    assert "from: 21:00 was read as the number 1260 (YAML reads an unquoted time as minutes); " \
           "write the time in quotes: from: \"21:00\"" in str(caught.value)


def test_a_step_id_may_hold_letters_of_any_language(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("trigger: {first_order: {}}\nsteps:\n  - id: grüße\n    wait: 1 day\n"
                    "  - id: tak-før_køb\n    send: thank_you\n  - id: Łódź2\n    exit: done\n",
                    encoding="utf-8")
    flow = load_flow(path, Context({"thank_you"}, set()))
    assert [s.id for s in flow.steps] == ["grüße", "tak-før_køb", "Łódź2"]
    assert flow_problems(tmp_path, "trigger: {first_order: {}}\nsteps:\n"
                                   "  - id: thank you!\n    send: thank_you\n") == [
        "F:3:9: id 'thank you!': it has a space, '!'; an id may hold letters of any language "
        "(ü, ø, ł …), digits, - and _, must start with a letter or a digit, has at most 63 "
        "characters and is not 'exit'"]


def test_stored_values_of_a_date_trigger_s_attribute_that_are_not_dates_are_a_warning(
        tmp_path: Path, conn: Connection) -> None:
    """Imports refuse a bad birthday; rows stored before, or by the API, may hold one, and the
    birthday flow silently never reaches them: validate names them."""
    with_data(conn)  # ada and ben: good birthdays
    add_customer(conn, "cy", NOW, attributes={"birthday": "17.05.1990"})
    add_customer(conn, "dee", NOW, attributes={"birthday": "1990-02-30"})
    add_customer(conn, "eve", NOW, attributes={"birthday": "05-17"})  # no year: fine
    templates, flows = copies(tmp_path)
    settings = settings_for(templates, flows)
    report = check(settings, loaded(settings), conn, NOW, flows / "segments.yaml")
    [warning] = [p for p in report.warnings if "not dates" in p.message]
    assert (warning.file, warning.line) == (str(flows / "birthday.yaml"), 13)
    assert warning.message == (
        "2 customers have birthday values that are not dates (YYYY-MM-DD or MM-DD), so this "
        "flow never reaches them: cy has '17.05.1990', dee has '1990-02-30'")
    with conn.begin_nested():
        conn.execute(text("DELETE FROM customers WHERE external_id IN ('cy', 'dee')"))
        again = check(settings, loaded(settings), conn, NOW, flows / "segments.yaml")
        assert [p for p in again.warnings if "not dates" in p.message] == []


def test_an_email_that_runs_out_of_time_is_rendered_once_not_for_every_customer_and_locale(
        tmp_path: Path) -> None:
    """Each render may take seconds before it is stopped: an endless template in six locales
    for three customers would hold a flow's page for a minute."""
    templates, flows = copies(tmp_path)
    for locale in ("en", "de", "nb", "sv", "da", "pl"):
        body = templates / "thank_you" / locale / "body.txt"
        body.write_text("{% for a in range(9999) %}{% for b in range(9999) %}{% for c in "
                        "range(9999) %}{% endfor %}{% endfor %}{% endfor %}\n"
                        + body.read_text(encoding="utf-8"), encoding="utf-8")
    settings = settings_for(templates, flows)
    thank_you = [f for f in loaded(settings) if f.name == "thank_you"]
    report = check(settings, thank_you, None, NOW)
    notes = [p for p in report.errors if "was not rendered for the other customers" in p.message]
    assert len(notes) == 1, report.errors
    assert notes[0].message == ("the email thank_you was not rendered for the other customers "
                                "and locales: it ran out of time once, fix that first")
    timed_out = [p for p in report.errors if "processor time" in p.message
                 or "seconds" in p.message and p is not notes[0]]
    assert len(timed_out) == 1, report.errors
