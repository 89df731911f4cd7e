"""Importing purchase history: upserts by external id, bad rows named and skipped."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, create_engine, select, text

from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.imports import ImportAborted, ImportResult, import_records
from lifecycle.imports.rows import Defaults
from lifecycle.imports.source import open_source
from lifecycle.models import Customer, Order
from lifecycle.timeutil import UTC
from tests.conftest import count
from tests.factories import CUSTOMER_HEADER, ORDER_HEADER, customers_csv, orders_csv, write_csv, write_jsonl


def run_import(conn: Connection, kind: str, path: Path, **kwargs) -> ImportResult:  # type: ignore[no-untyped-def]
    source = open_source(str(path))
    try:
        return import_records(conn, kind, source.records(), source_name=source.name, **kwargs)
    finally:
        source.close()


def totals(result: ImportResult) -> tuple[int, int, int, int]:
    return result.inserted, result.updated, result.unchanged, result.skipped


def test_importing_the_same_files_twice_changes_nothing(conn: Connection, tmp_path: Path) -> None:
    customers, orders = customers_csv(tmp_path / "c.csv"), orders_csv(tmp_path / "o.csv")
    assert totals(run_import(conn, "customers", customers)) == (3, 0, 0, 0)
    first_orders = run_import(conn, "orders", orders)
    assert totals(first_orders) == (4, 0, 0, 0)
    assert first_orders.customers_created == 1
    snapshot = (conn.execute(text("SELECT * FROM customers ORDER BY id")).all(),
                conn.execute(text("SELECT * FROM orders ORDER BY id")).all())

    assert totals(run_import(conn, "customers", customers)) == (0, 0, 3, 0)
    again = run_import(conn, "orders", orders)
    assert totals(again) == (0, 0, 4, 0) and again.customers_created == 0
    assert (conn.execute(text("SELECT * FROM customers ORDER BY id")).all(),
            conn.execute(text("SELECT * FROM orders ORDER BY id")).all()) == snapshot


def test_imported_values_are_normalised_and_typed(conn: Connection, tmp_path: Path) -> None:
    run_import(conn, "customers", customers_csv(tmp_path / "c.csv"))
    run_import(conn, "orders", orders_csv(tmp_path / "o.csv"), defaults=Defaults("UTC", "GBP"))
    bob = conn.execute(select(Customer).where(Customer.external_id == "c2")).one()
    assert bob.locale == "en-US" and bob.timezone == "America/New_York"
    assert bob.attributes == {}
    ann = conn.execute(select(Customer).where(Customer.external_id == "c1")).one()
    assert ann.attributes == {"loyalty_tier": "gold"}
    cy = conn.execute(select(Customer).where(Customer.external_id == "c3")).one()
    assert cy.created_at.isoformat() == "2024-03-09T06:00:00+00:00"
    by_id = {o.external_id: o for o in conn.execute(select(Order)).all()}
    assert by_id["o1"].total == Decimal("17.80") and by_id["o1"].currency == "EUR"
    assert by_id["o1"].items == [{"sku": "TEA-1", "name": "Sencha", "category": "tea",
                                  "quantity": 2, "price": "8.90"}]
    assert by_id["o2"].status == "refunded"
    assert by_id["o3"].status == "completed"  # "paid" means completed
    assert by_id["o3"].ordered_at.isoformat() == "2024-04-03T04:30:00+00:00"
    assert by_id["o4"].currency == "GBP" and by_id["o4"].status == "completed"


def test_times_without_an_offset_are_read_in_the_given_zone(conn: Connection,
                                                            tmp_path: Path) -> None:
    path = write_csv(tmp_path / "o.csv", ORDER_HEADER,
                     [("o1", "c1", "2024-07-01 09:00:00", "1", "EUR", "", ""),
                      ("o2", "c1", "2024-07-01", "1", "EUR", "", "")])
    run_import(conn, "orders", path, defaults=Defaults("Europe/Berlin"))
    times = {row[0]: row[1] for row in conn.execute(select(Order.external_id, Order.ordered_at))}
    assert times["o1"].isoformat() == "2024-07-01T07:00:00+00:00"
    assert times["o2"].isoformat() == "2024-06-30T22:00:00+00:00"


def test_bad_rows_are_named_by_file_and_line_and_the_good_rows_land(
        conn: Connection, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "customers.csv", CUSTOMER_HEADER, [
        ("c1", "ann@example.com", "Ann", "", "", "", "", ""),
        ("c2", "bob@", "Bob", "", "", "", "", ""),
        ("", "nobody@example.com", "", "", "", "", "", ""),
        ("c4", "dee@example.com", "Dee", "", "Mars/Olympus", "", "", ""),
        ("c5", "eve@example.com", "Eve", "", "", "", "last tuesday", ""),
        ("c6", "fay@example.com", "Fay", "", "", "", "", ""),
    ])
    result = run_import(conn, "customers", path)
    assert [str(i) for i in result.issues] == [
        f"{path}:3: email 'bob@' is not a valid address",
        f"{path}:4: customer_id is missing",
        f"{path}:5: timezone 'Mars/Olympus' is not an IANA timezone such as Europe/Berlin",
        f"{path}:6: created_at: 'last tuesday' is not an ISO 8601 date or date-time",
    ]
    assert totals(result) == (2, 0, 0, 4)
    assert sorted(conn.execute(select(Customer.external_id)).scalars()) == ["c1", "c6"]


def test_bad_order_rows_name_the_field_at_fault(conn: Connection, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "orders.jsonl", [
        {"order_id": "o1", "customer_id": "c1", "ordered_at": "2024-01-01", "total": "-3"},
        {"order_id": "o2", "customer_id": "c1", "ordered_at": "2024-13-01", "total": "3"},
        {"order_id": "o3", "customer_id": "c1", "ordered_at": "2024-01-01", "total": "abc"},
        {"customer_id": "c1", "ordered_at": "2024-01-01", "total": "3"},
        {"order_id": "o5", "customer_id": "c1", "ordered_at": "2024-01-01", "total": "3",
         "status": "lost"},
        {"order_id": "o6", "customer_id": "c1", "ordered_at": "2024-01-01", "total": "3",
         "items": [{"sku": "A", "quantity": "two"}]},
        "{broken json",
        "[1, 2]",
        {"order_id": "o9", "customer_id": "c1", "ordered_at": "2024-01-01", "total": "3"},
    ])
    result = run_import(conn, "orders", path)
    assert [(i.line, i.reason.split(" ")[0]) for i in result.issues] == [
        (1, "total"), (2, "ordered_at:"), (3, "total"), (4, "order_id"), (5, "status"),
        (6, "items[1].quantity"), (7, "not"), (8, "each")]
    assert result.inserted == 1 and result.skipped == 8


def test_an_imported_line_s_quantity_is_at_most_a_million_as_the_api_allows(
        conn: Connection, tmp_path: Path) -> None:
    def order(n: int, quantity: object) -> dict[str, object]:
        return {"order_id": f"o{n}", "customer_id": "c1", "ordered_at": "2024-01-01",
                "total": "3", "items": [{"sku": "A", "price": "999999999999.99",
                                         "quantity": quantity}]}
    path = write_jsonl(tmp_path / "orders.jsonl", [
        order(1, 1_000_000), order(2, 1_000_001), order(3, "1000000000000000000")])
    result = run_import(conn, "orders", path)
    assert [(i.line, i.reason) for i in result.issues] == [
        (2, "items[1].quantity is more than 1,000,000"),
        (3, "items[1].quantity is more than 1,000,000")]
    assert result.inserted == 1
    assert conn.execute(select(Order.items)).scalar_one()[0]["quantity"] == 1_000_000


def test_strict_mode_stops_at_the_first_bad_row_and_writes_nothing(
        conn: Connection, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, [
        ("c1", "ann@example.com", "", "", "", "", "", ""),
        ("c2", "bob@", "", "", "", "", "", ""),
        ("c3", "cy@example.com", "", "", "", "", "", ""),
    ])
    nested = conn.begin_nested()
    with pytest.raises(ImportAborted) as caught:
        run_import(conn, "customers", path, strict=True)
    nested.rollback()
    assert str(caught.value) == f"{path}:3: email 'bob@' is not a valid address"
    assert count(conn, "customers") == 0


def test_changed_rows_are_updated_and_blank_cells_keep_what_is_known(
        conn: Connection, tmp_path: Path) -> None:
    run_import(conn, "customers", customers_csv(tmp_path / "c.csv"))
    update = write_csv(tmp_path / "update.csv", ("customer_id", "email", "last_name", "city"), [
        ("c1", "ann.lee@example.com", "", "Berlin"),  # new email, new attribute
        ("c2", "bob@example.com", "", ""),  # nothing new
    ])
    assert totals(run_import(conn, "customers", update)) == (0, 1, 1, 0)
    ann = conn.execute(select(Customer).where(Customer.external_id == "c1")).one()
    assert ann.email == "ann.lee@example.com"
    assert ann.last_name == "Lee"
    assert ann.attributes == {"loyalty_tier": "gold", "city": "Berlin"}
    assert totals(run_import(conn, "customers", update)) == (0, 0, 2, 0)


def test_an_order_whose_status_changes_is_updated(conn: Connection, tmp_path: Path) -> None:
    run_import(conn, "orders", orders_csv(tmp_path / "o.csv"))
    refund = write_csv(tmp_path / "r.csv", ORDER_HEADER,
                       [("o1", "c1", "2024-03-01T10:00:00Z", "17.80", "EUR", "refunded", "")])
    assert totals(run_import(conn, "orders", refund)) == (0, 1, 0, 0)
    status, items = conn.execute(select(Order.status, Order.items)
                                 .where(Order.external_id == "o1")).one()
    assert status == "refunded" and items == []


def test_orders_for_unknown_customers_create_them_with_what_is_known(
        conn: Connection, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "o.jsonl", [
        {"order_id": "o1", "customer_id": "new-1", "ordered_at": "2024-05-01T10:00:00Z",
         "total": 10, "email": "New@Example.com", "first_name": "Nia"},
        {"order_id": "o2", "customer_id": "new-1", "ordered_at": "2024-04-01T10:00:00Z",
         "total": 10},
    ])
    result = run_import(conn, "orders", path)
    assert result.customers_created == 1 and result.inserted == 2
    nia = conn.execute(select(Customer).where(Customer.external_id == "new-1")).one()
    assert (nia.email, nia.first_name) == ("New@example.com", "Nia")
    assert nia.created_at.isoformat() == "2024-04-01T10:00:00+00:00"  # their first order
    # A later customers file completes the record without losing what is known.
    more = write_csv(tmp_path / "c.csv", ("customer_id", "email", "last_name"),
                     [("new-1", "new@example.com", "Ng")])
    assert totals(run_import(conn, "customers", more)) == (0, 1, 0, 0)
    nia = conn.execute(select(Customer).where(Customer.external_id == "new-1")).one()
    assert (nia.first_name, nia.last_name, nia.email) == ("Nia", "Ng", "new@example.com")


def test_a_repeated_id_in_one_file_keeps_the_later_row_and_says_so(
        conn: Connection, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email"), [
        ("c1", "old@example.com"), ("c2", "b@example.com"), ("c1", "new@example.com")])
    result = run_import(conn, "customers", path)
    assert [str(i) for i in result.issues] == [
        f"{path}:2: customer_id 'c1' appears again on line 4; the later line is imported"]
    assert totals(result) == (2, 0, 0, 1)
    assert conn.execute(select(Customer.email).where(Customer.external_id == "c1")).scalar() \
        == "new@example.com"


def test_csv_and_json_lines_files_give_the_same_data(tmp_path: Path, backend: str,
                                                     databases) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _require_backend

    _require_backend(backend)
    records = [
        {"customer_id": "c1", "email": "a@example.com", "first_name": "A", "timezone": "Asia/Tokyo",
         "created_at": "2023-05-06T07:08:09+09:00", "tier": "gold"},
        {"customer_id": "c2", "email": "b@example.com", "locale": "pt_br"},
    ]
    header = ("customer_id", "email", "first_name", "timezone", "created_at", "tier", "locale")
    csv_path = write_csv(tmp_path / "c.csv", header,
                         [tuple(r.get(h, "") for h in header) for r in records])
    jsonl_path = write_jsonl(tmp_path / "c.jsonl", records)
    seen = []
    for path in (csv_path, jsonl_path):
        engine = create_engine_for(databases.new_url(backend))
        with engine.begin() as conn:
            run_import(conn, "customers", path, clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
            seen.append(conn.execute(text(
                "SELECT external_id, email, first_name, timezone, locale, created_at, attributes "
                "FROM customers ORDER BY external_id")).all())
        engine.dispose()
    assert seen[0] == seen[1]


def create_engine_for(url: str):  # type: ignore[no-untyped-def]
    from lifecycle.db import make_engine

    return make_engine(url)


def test_a_quoted_field_over_several_lines_is_reported_at_the_line_its_row_starts(
        conn: Connection, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('customer_id,email,first_name\nc1,a@example.com,"Ann\nMarie"\n'
                    'c2,nope,Bo\n', encoding="utf-8")
    result = run_import(conn, "customers", path)
    assert [str(i) for i in result.issues] == [f"{path}:4: email 'nope' is not a valid address"]
    name = conn.execute(select(Customer.first_name).where(Customer.external_id == "c1")).scalar()
    assert name == "Ann\nMarie"


# ---------------------------------------------------------------- the command


def test_the_import_command_prints_bad_rows_and_a_summary(cli_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email"),
                     [("c1", "a@example.com"), ("c2", "broken"), ("c3", "c@example.com")])
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "customers", str(path)], env=cli_env)
    assert result.exit_code == 3, result.output  # a row was skipped
    assert f"{path}:3: email 'broken' is not a valid address" in result.stderr
    assert "inserted" in result.stdout and "skipped" in result.stdout
    again = runner.invoke(cli, ["import", "customers", str(path)], env=cli_env)
    assert again.exit_code == 3
    engine = create_engine_for(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        assert count(conn, "customers") == 2
    engine.dispose()


def test_the_strict_command_exits_non_zero_and_imports_nothing(cli_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ("customer_id", "email"),
                     [("c1", "a@example.com"), ("c2", "broken")])
    result = CliRunner().invoke(cli, ["import", "customers", "--strict", str(path)], env=cli_env)
    assert result.exit_code == 1
    assert f"{path}:3: email 'broken' is not a valid address" in result.stderr
    assert "nothing was imported" in result.stderr
    engine = create_engine_for(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        assert count(conn, "customers") == 0
    engine.dispose()


def test_orders_can_be_piped_in_on_stdin(cli_env: dict[str, str]) -> None:
    lines = "\n".join(json.dumps({"order_id": f"o{n}", "customer_id": "c1",
                                  "ordered_at": "2024-01-02", "total": n}) for n in range(1, 4))
    result = CliRunner().invoke(cli, ["import", "orders", "-"], input=lines + "\n", env=cli_env)
    assert result.exit_code == 0, result.output
    assert "were not known and were created" in result.stdout
    engine = create_engine_for(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        assert count(conn, "orders") == 3
    engine.dispose()


def test_an_unreadable_file_is_one_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["import", "orders", str(tmp_path / "nope.csv")], env=cli_env)
    assert missing.exit_code == 2 and "nope.csv" in missing.stderr
    odd = tmp_path / "orders.txt"
    odd.write_text("x", encoding="utf-8")
    unknown = CliRunner().invoke(cli, ["import", "orders", str(odd)], env=cli_env)
    assert unknown.exit_code == 2 and "--format" in unknown.stderr


def test_a_database_without_the_schema_is_told_to_upgrade(tmp_path: Path) -> None:
    env = {"LIFECYCLE_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = CliRunner().invoke(cli, ["import", "customers", "-"], input="", env=env)
    assert result.exit_code == 2
    assert "lifecycle db upgrade" in result.stderr
    create_engine(env["LIFECYCLE_DATABASE_URL"]).dispose()


def test_a_time_before_the_first_utc_instant_is_a_bad_row_and_the_good_rows_land(
        conn: Connection, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "orders.jsonl", [
        {"order_id": "o1", "customer_id": "c1", "ordered_at": "0001-01-01T00:00:00+14:00",
         "total": "3"},
        {"order_id": "o2", "customer_id": "c1", "ordered_at": "9999-12-31T23:59:59-14:00",
         "total": "3"},
        {"order_id": "o3", "customer_id": "c1", "ordered_at": "2024-01-01", "total": "3"},
    ])
    result = run_import(conn, "orders", path)
    assert [(i.line, i.reason) for i in result.issues] == [
        (1, "ordered_at: '0001-01-01T00:00:00+14:00' is outside the range of dates"),
        (2, "ordered_at: '9999-12-31T23:59:59-14:00' is outside the range of dates")]
    assert result.inserted == 1 and result.skipped == 2
