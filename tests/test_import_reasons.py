"""Imports that say what they did: customer_id-only files, date attributes checked, skipped rows
counted by reason, and an exit status that tells whether everything went in."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, select

from lifecycle.cli import cli
from lifecycle.db import make_engine
from lifecycle.imports import UNKNOWN_NO_EMAIL, ImportResult, import_records
from lifecycle.imports.rows import RowError, check_dates, reason_kind
from lifecycle.imports.source import open_source
from lifecycle.models import Customer
from tests.factories import customers_csv, write_csv, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def run_import(conn: Connection, path: Path, **kwargs) -> ImportResult:  # type: ignore[no-untyped-def]
    source = open_source(str(path))
    try:
        return import_records(conn, "customers", source.records(), source_name=source.name,
                              **kwargs)
    finally:
        source.close()


def attributes_of(conn: Connection) -> dict[str, dict]:  # type: ignore[type-arg]
    return dict(conn.execute(select(Customer.external_id, Customer.attributes)).all())


def test_a_file_of_customer_ids_and_attributes_updates_known_customers_and_skips_unknown_ones(
        conn: Connection, tmp_path: Path) -> None:
    run_import(conn, customers_csv(tmp_path / "c.csv"))
    path = write_csv(tmp_path / "birthdays.csv", ("customer_id", "birthday", "first_name"), [
        ("c1", "1990-12-05", ""), ("nobody", "1985-01-02", "Nob"), ("c2", "03-14", "Robert")])
    result = run_import(conn, path)
    assert [str(i) for i in result.issues] == [
        f"{path}:3: unknown customer and no email to create one"]
    assert (result.inserted, result.updated, result.unchanged, result.skipped) == (0, 2, 0, 1)
    assert result.skipped_reasons == {UNKNOWN_NO_EMAIL: 1}
    found = attributes_of(conn)
    assert "nobody" not in found
    assert found["c1"] == {"loyalty_tier": "gold", "birthday": "1990-12-05"}
    assert found["c2"] == {"birthday": "03-14"}
    bob = conn.execute(select(Customer).where(Customer.external_id == "c2")).one()
    assert (bob.email, bob.first_name) == ("bob@example.com", "Robert")  # the email is kept


def test_a_customer_row_with_an_email_still_creates_the_customer(conn: Connection,
                                                                 tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"customer_id": "n1", "email": "new@example.com", "birthday": "2001-07-08"},
        {"customer_id": "n2", "birthday": "2001-07-09"}])
    result = run_import(conn, path)
    assert (result.inserted, result.skipped) == (1, 1)
    assert [(i.line, i.reason) for i in result.issues] == [(2, UNKNOWN_NO_EMAIL)]
    assert attributes_of(conn) == {"n1": {"birthday": "2001-07-08"}}


def test_skipped_rows_are_counted_by_reason_without_their_values(conn: Connection,
                                                                 tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email"), [
        ("c1", "bob@"), ("c2", "x@y"), ("c3", ""), ("c4", "ok@example.com"), ("", "z@example.com"),
        ("c4", "again@example.com")])
    result = run_import(conn, path)
    assert result.skipped == 5 and result.inserted == 1
    assert result.skipped_reasons == {
        "email is not a valid address": 2, UNKNOWN_NO_EMAIL: 1, "customer_id is missing": 1,
        "the id appears again later in the file (the later line is imported)": 1}
    assert sum(result.skipped_reasons.values()) == result.skipped


def test_reasons_are_counted_without_quoted_values_item_numbers_or_closing_remarks() -> None:
    assert reason_kind("items[2].url 'javascript:x' is not an http(s) URL") == \
        "items[n].url is not an http(s) URL"
    assert reason_kind("created_at: 'last tuesday' is not an ISO 8601 date or date-time") == \
        "created_at is not an ISO 8601 date or date-time"
    assert reason_kind("not valid JSON (Expecting value at column 3)") == "not valid JSON"
    assert reason_kind("4 fields but the header has 2") == "more fields than the header"


def test_a_bad_birthday_is_named_by_file_and_line_and_left_out_while_the_row_lands(
        conn: Connection, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email", "first_name", "birthday"), [
        ("c1", "ann@example.com", "Ann", "05.12.1990"),
        ("c2", "bob@example.com", "Bob", "1990-13-40"),
        ("c3", "cy@example.com", "Cy", "1990-12-05"),
        ("c4", "dee@example.com", "Dee", "02-29"),
        ("c5", "eve@example.com", "Eve", "12/25/1990"),
    ])
    result = run_import(conn, path, date_attributes={"birthday"})
    assert [str(i) for i in result.issues] == [
        f"{path}:2: birthday '05.12.1990' is not a date written YYYY-MM-DD or MM-DD (did you "
        "mean 1990-12-05?); it was left out and the rest of the row imported",
        f"{path}:3: birthday '1990-13-40' is not a date written YYYY-MM-DD or MM-DD; it was "
        "left out and the rest of the row imported",
        f"{path}:6: birthday '12/25/1990' is not a date written YYYY-MM-DD or MM-DD (did you "
        "mean 1990-12-25?); it was left out and the rest of the row imported"]
    assert (result.inserted, result.skipped, result.left_out) == (5, 0, 3)
    assert result.left_out_reasons == {
        "birthday is not a date written YYYY-MM-DD or MM-DD (left out)": 3}
    assert not result.complete
    found = attributes_of(conn)
    assert found == {"c1": {}, "c2": {}, "c3": {"birthday": "1990-12-05"},
                     "c4": {"birthday": "02-29"}, "c5": {}}
    names = dict(conn.execute(select(Customer.external_id, Customer.first_name)).all())
    assert names["c1"] == "Ann" and names["c2"] == "Bob"


def test_a_bad_date_does_not_erase_the_date_already_known(conn: Connection,
                                                          tmp_path: Path) -> None:
    good = write_csv(tmp_path / "a.csv", ("customer_id", "email", "birthday"),
                     [("c1", "ann@example.com", "1990-12-05")])
    run_import(conn, good, date_attributes={"birthday"})
    bad = write_csv(tmp_path / "b.csv", ("customer_id", "birthday"), [("c1", "5 Dec")])
    result = run_import(conn, bad, date_attributes={"birthday"})
    assert result.left_out == 1 and result.unchanged == 1
    assert attributes_of(conn) == {"c1": {"birthday": "1990-12-05"}}


def test_attributes_no_date_trigger_reads_are_not_checked(conn: Connection,
                                                          tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email", "birthday"),
                     [("c1", "ann@example.com", "05.12.1990")])
    result = run_import(conn, path)
    assert result.complete and attributes_of(conn) == {"c1": {"birthday": "05.12.1990"}}


def test_ambiguous_and_impossible_dates_get_honest_hints() -> None:
    def said(value: object) -> str:
        attributes = {"birthday": value}
        problems = check_dates(attributes, {"birthday"})
        assert attributes == {} and len(problems) == 1 and isinstance(problems[0], RowError)
        return str(problems[0])

    assert "(did you mean 1990-12-05 or 1990-05-12?)" in said("05/12/1990")
    assert "(did you mean 1990-12-25?)" in said("25-12-1990")
    assert "(did you mean 1990-02-03?)" in said("1990/2/3")
    assert "(did you mean 1990-12-05?)" in said("1990-12-05T10:00:00")
    assert "did you mean" not in said("31.02.1990")
    assert "did you mean" not in said(19901205)
    kept = {"birthday": " 1990-12-05 "}
    assert check_dates(kept, {"birthday"}) == [] and kept == {"birthday": "1990-12-05"}


# ---------------------------------------------------------------- the command


def flows_folder(tmp_path: Path) -> Path:
    """The shipped segments and policies, and one flow that fires on customers' birthdays."""
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("segments.yaml", "policies.yaml"):
        shutil.copy(ROOT / "flows" / name, folder / name)
    (folder / "birthday.yaml").write_text(
        "trigger:\n  date: {attribute: birthday}\nreentry: every_time\n"
        "steps:\n  - id: hello\n    send: loyalty_offer\n", encoding="utf-8")
    return folder


def test_the_command_counts_skipped_rows_by_reason_and_exits_3(cli_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    env = {**cli_env, "LIFECYCLE_FLOWS_DIR": str(flows_folder(tmp_path)), "COLUMNS": "200"}
    runner = CliRunner()
    first = runner.invoke(cli, ["import", "customers", str(customers_csv(tmp_path / "c.csv"))],
                          env=env)
    assert first.exit_code == 0, first.output
    path = write_csv(tmp_path / "b.csv", ("customer_id", "birthday"), [
        ("c1", "1990-12-05"), ("x1", "1991-01-01"), ("x2", "1992-02-02"), ("c2", "05.12.1990")])
    result = runner.invoke(cli, ["import", "customers", str(path)], env=env)
    assert result.exit_code == 3, result.output
    assert f"{path}:3: unknown customer and no email to create one" in result.stderr
    assert f"{path}:5: birthday '05.12.1990' is not a date written YYYY-MM-DD" in result.stderr
    assert "Skipped rows (2) by reason" in result.stdout
    assert re.search(rf"{UNKNOWN_NO_EMAIL}\s+│\s+2\b", result.stdout)
    assert "Rows imported with a value left out (1) by reason" in result.stdout
    assert "exit status 3" in result.stderr

    as_json = runner.invoke(cli, ["import", "customers", "--json", str(path)], env=env)
    assert as_json.exit_code == 3
    summary = json.loads(as_json.stdout)
    assert summary["skipped_by_reason"] == {UNKNOWN_NO_EMAIL: 2}
    assert summary["left_out_by_reason"] == {
        "birthday is not a date written YYYY-MM-DD or MM-DD (left out)": 1}
    assert (summary["read"], summary["unchanged"], summary["skipped"], summary["left_out"],
            summary["exit_status"]) == (4, 2, 2, 1, 3)
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        found = attributes_of(conn)
    engine.dispose()
    assert found["c1"] == {"loyalty_tier": "gold", "birthday": "1990-12-05"}
    assert found["c2"] == {} and "x1" not in found


def test_the_command_exits_0_when_every_row_went_in(cli_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["import", "customers", "--json",
                                      str(customers_csv(tmp_path / "c.csv"))], env=cli_env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["skipped"], summary["skipped_by_reason"],
            summary["exit_status"]) == (3, 0, {}, 0)


def test_an_orders_import_counts_its_skipped_rows_by_reason_too(cli_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    def order(n: int, quantity: object) -> dict[str, object]:
        return {"order_id": f"o{n}", "customer_id": "c1", "ordered_at": "2024-01-01",
                "total": "3", "items": [{"sku": "A", "quantity": quantity}]}
    path = write_jsonl(tmp_path / "o.jsonl", [order(1, "two"), order(2, 1), order(3, "x"),
                                              "{broken"])
    result = CliRunner().invoke(cli, ["import", "orders", str(path)],
                                env={**cli_env, "COLUMNS": "200"})
    assert result.exit_code == 3, result.output
    assert re.search(r"items\[n\]\.quantity must be a whole number\s+│\s+2\b", result.stdout)
    assert re.search(r"not valid JSON\s+│\s+1\b", result.stdout)


def test_strict_mode_stops_at_a_bad_date_and_writes_nothing(cli_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    env = {**cli_env, "LIFECYCLE_FLOWS_DIR": str(flows_folder(tmp_path))}
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email", "birthday"), [
        ("c1", "ann@example.com", "1990-12-05"), ("c2", "bob@example.com", "1990-13-40")])
    result = CliRunner().invoke(cli, ["import", "customers", "--strict", str(path)], env=env)
    assert result.exit_code == 1, result.output
    assert f"{path}:3: birthday '1990-13-40' is not a date" in result.stderr
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        assert attributes_of(conn) == {}
    engine.dispose()


def test_the_orders_summary_in_json_says_what_the_orders_did(cli_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "o.jsonl", [
        {"order_id": "o1", "customer_id": "new", "ordered_at": "2024-01-01", "total": "3"},
        {"order_id": "o2", "customer_id": "new", "ordered_at": "2024-01-02", "total": "-1"}])
    result = CliRunner().invoke(cli, ["import", "orders", "--json", str(path)], env=cli_env)
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["skipped_by_reason"], summary["customers_created"],
            summary["announced"], summary["status_changes"]) == (
        1, {"total is negative": 1}, 1, 1, 0)
    assert summary["customers_without_email"] == 1  # "new" has no email in the file


def test_the_orders_summary_says_how_many_created_customers_no_mail_can_reach(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "o.jsonl", [
        {"order_id": "o1", "customer_id": "ann", "email": "ann@example.com",
         "ordered_at": "2024-01-01", "total": "3"},
        {"order_id": "o2", "customer_id": "bob", "ordered_at": "2024-01-02", "total": "4"},
        {"order_id": "o3", "customer_id": "cy", "ordered_at": "2024-01-02", "total": "5"},
        {"order_id": "o4", "customer_id": "cy", "email": "cy@example.com",
         "ordered_at": "2024-01-03", "total": "5"}])
    result = CliRunner().invoke(cli, ["import", "orders", str(path)],
                                env={**cli_env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "3 customers named in the file were not known and were created" in said
    assert ("1 of them have no email in the file: their orders count for segments and results, "
            "but no mail reaches them until a customers import (or the API) gives them one.") \
        in said


def test_a_semicolon_separated_file_as_german_excel_writes_it_is_read(
        conn: Connection, tmp_path: Path) -> None:
    path = tmp_path / "kunden.csv"
    path.write_bytes("\ufeffcustomer_id;email;first_name;city\r\n"
                     "DE-1;jurgen@example.de;Jürgen;\"Köln; Altstadt\"\r\n".encode())
    result = run_import(conn, path)
    assert (result.inserted, result.skipped) == (1, 0)
    first, attributes = conn.execute(select(Customer.first_name, Customer.attributes).where(
        Customer.external_id == "DE-1")).one()
    assert first == "Jürgen" and attributes["city"] == "Köln; Altstadt"


def test_a_file_that_is_not_utf8_stops_the_import_with_one_line_and_exit_status_2(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("customer_id,email,first_name\nDE-1,k@example.de,König\n".encode("cp1252"))
    result = CliRunner().invoke(cli, ["import", "customers", str(path)], env=cli_env)
    assert result.exit_code == 2, result.output
    assert "is not UTF-8 text (byte 0xf6 cannot be read)" in result.output
    assert "Traceback" not in result.output


def test_a_row_skipped_as_a_repeat_is_not_also_counted_as_imported_with_a_value_left_out(
        conn: Connection, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dup.csv", ("customer_id", "email", "birthday"),
                     [("DE-1", "a@example.de", "05.12.1990"), ("DE-1", "a@example.de",
                                                                 "1990-12-05")])
    result = run_import(conn, path, date_attributes={"birthday"})
    assert (result.skipped, result.left_out) == (1, 0)
    assert not result.left_out_reasons


def test_a_file_of_the_other_kind_is_refused_whole_with_the_command_to_use(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    """An orders file given as customers would turn order_id, total and items into customer
    attributes, row by row; a customers file given as orders would skip every row."""
    orders = write_csv(tmp_path / "orders.csv",
                       ("order_id", "customer_id", "email", "ordered_at", "total"),
                       [("o1", "c1", "ann@example.com", "2024-01-01", "9.50")])
    as_customers = CliRunner().invoke(cli, ["import", "customers", str(orders)], env=cli_env)
    assert as_customers.exit_code == 2, as_customers.output
    assert (f"{orders}:2: this looks like an orders file (it has the columns order_id, "
            "ordered_at, total): import it with `lifecycle import orders`") \
        in " ".join(as_customers.output.split())
    customers = customers_csv(tmp_path / "customers.csv")
    as_orders = CliRunner().invoke(cli, ["import", "orders", str(customers)], env=cli_env)
    assert as_orders.exit_code == 2, as_orders.output
    assert "this looks like a customers file (no order_id, ordered_at or total column)" \
        in " ".join(as_orders.output.split())
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        assert attributes_of(conn) == {}  # nothing of either went in
    engine.dispose()
    right = CliRunner().invoke(cli, ["import", "orders", str(orders)], env=cli_env)
    assert right.exit_code == 0, right.output
    with_ids = write_csv(tmp_path / "ids.csv", ("customer_id", "birthday"), [("c1", "05-17")])
    assert CliRunner().invoke(cli, ["import", "customers", str(with_ids)],
                              env=cli_env).exit_code == 0  # attributes only: still customers


@pytest.mark.parametrize("written", ["١٩٩٠-٠١-٠٥", "１９９０-０１-０５", "٠١-٠٥"])
def test_a_date_in_digits_other_than_0_to_9_is_not_a_date(written: str) -> None:
    """Python's \\d takes Arabic-Indic and full-width digits; the flows' date trigger does not,
    so such a birthday would be stored and never wished."""
    attributes = {"birthday": written}
    [problem] = check_dates(attributes, {"birthday"})
    assert attributes == {} and "is not a date written YYYY-MM-DD or MM-DD" in str(problem)
