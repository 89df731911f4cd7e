"""A segment's page and members (paged, CSV), `segments members`, and customer attributes on
the customer page and in `customer show`."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from html import escape

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import insert

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.models import Customer, SegmentMembership
from tests.factories import WEB_T0 as T0
from tests.factories import account, logged_in


def members(app: App, segment: str, count: int, left: int = 0) -> list[int]:
    """``count`` customers in ``segment`` now (and ``left`` who were in it and left); the ids
    of those in it."""
    ids = []
    with app.engine.begin() as conn:
        for n in range(count + left):
            cid = conn.execute(insert(Customer).returning(Customer.id).values(
                external_id=f"M{n:03d}", email=f"m{n}@example.com", first_name="Mo",
                last_name=f"No{n}", attributes={}, created_at=T0, updated_at=T0)).scalar_one()
            gone = n >= count
            conn.execute(insert(SegmentMembership).values(
                customer_id=cid, segment=segment, entered_at=T0 - timedelta(days=n),
                exited_at=T0 if gone else None, reason={}))
            if not gone:
                ids.append(int(cid))
    return ids


def test_the_segment_page_shows_its_definition_and_its_members_fifty_a_page(
        app: App, web: TestClient) -> None:
    ids = members(app, "tea_lovers", 60, left=3)
    account(app, "max@shop.example", "manager")
    logged_in(web, "max@shop.example")
    listing = web.get("/segments").text
    assert ('<a href="/segments/tea_lovers">Tea lovers</a> <code class="note">tea_lovers</code>'
            in listing)  # linked, the label beside the name the YAML gives it
    page = web.get("/segments/tea_lovers")
    assert page.status_code == 200
    assert 'Tea lovers <code class="note">tea_lovers</code></h1>' in page.text
    assert "Custom segment: Bought tea at least twice in the last year." in page.text
    assert "custom:\n  tea_lovers:\n" in page.text and "category: tea" in page.text
    assert "60 customers in the segment now; showing 50" in page.text
    assert [n for n in range(63) if f">M{n:03d}</a>" in page.text] == list(range(50))
    assert ('<td><a href="/customers/M001">M001</a></td><td>m1@example.com</td><td>Mo No1</td>'
            '<td>2026-06-02 12:00</td>') in page.text
    assert f'href="/segments/tea_lovers?after={ids[49]}">Next 50</a>' in page.text
    second = web.get("/segments/tea_lovers", params={"after": ids[49]}).text
    # the rest, not those who left
    assert [n for n in range(63) if f">M{n:03d}</a>" in second] == list(range(50, 60))
    assert "Next 50" not in second and 'href="/segments/tea_lovers">First page</a>' in second
    assert 'href="/segments/tea_lovers/members.csv"' in page.text
    lapsed = web.get("/segments/lapsed").text  # a built-in one: its settings
    assert "last order more than 180 days ago" in lapsed and "lapsed_days: 180" in lapsed
    assert "Nobody is in this segment now." in lapsed
    assert web.get("/segments/no_such_segment").status_code == 404
    assert web.get("/segments/tea_lovers", params={"after": "x"}).status_code == 400


def test_the_members_csv_holds_every_member_and_needs_a_login(
        app: App, web: TestClient) -> None:
    ids = members(app, "vip", 1203, left=2)
    with app.engine.begin() as conn:  # a name a spreadsheet would run as a formula
        conn.execute(Customer.__table__.update().where(Customer.id == ids[0])
                     .values(first_name="=HYPERLINK(1)", last_name=None))
    anonymous = TestClient(web.app).get("/segments/vip/members.csv", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    account(app, "sue@shop.example", "support")
    support = logged_in(TestClient(web.app), "sue@shop.example")
    assert support.get("/segments/vip/members.csv").status_code == 403
    account(app, "max@shop.example", "manager")
    answer = logged_in(web, "max@shop.example").get("/segments/vip/members.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert 'filename="segment-vip-2026-06-03.csv"' in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == ["customer_id", "external_id", "email", "name", "joined_at"]
    assert [int(r[0]) for r in rows[1:]] == ids  # all 1203, by row id, none who left
    assert rows[1] == [str(ids[0]), "M000", "m0@example.com", "'=HYPERLINK(1)",
                       "2026-06-03T12:00:00+00:00"]
    assert rows[2] == [str(ids[1]), "M001", "m1@example.com", "Mo No1",
                       "2026-06-02T12:00:00+00:00"]


def test_segments_members_prints_a_table_or_csv(app: App, cli_env: dict[str, str]) -> None:
    ids = members(app, "loyal", 3, left=1)
    runner = CliRunner()
    table = runner.invoke(cli, ["segments", "members", "loyal"], env=cli_env)
    assert table.exit_code == 0, table.output
    assert "Loyal (loyal): 3 customers" in table.stdout
    assert all(f"M00{n}" in table.stdout for n in range(3)) and "M003" not in table.stdout
    short = runner.invoke(cli, ["segments", "members", "loyal", "--limit", "2"], env=cli_env)
    assert "Loyal (loyal): 3 customers, the first 2" in short.stdout
    assert "M002" not in short.stdout
    exported = runner.invoke(cli, ["segments", "members", "loyal", "--csv"], env=cli_env)
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.splitlines() == [
        "customer_id,external_id,email,name,joined_at",
        f"{ids[0]},M000,m0@example.com,Mo No0,2026-06-03T12:00:00+00:00",
        f"{ids[1]},M001,m1@example.com,Mo No1,2026-06-02T12:00:00+00:00",
        f"{ids[2]},M002,m2@example.com,Mo No2,2026-06-01T12:00:00+00:00"]
    limited = runner.invoke(cli, ["segments", "members", "loyal", "--csv", "--limit", "1"],
                            env=cli_env)
    assert len(limited.stdout.splitlines()) == 2
    unknown = runner.invoke(cli, ["segments", "members", "nope"], env=cli_env)
    assert unknown.exit_code == 2 and "no segment 'nope'" in unknown.stderr
    close = runner.invoke(cli, ["segments", "members", "loyl"], env=cli_env)
    assert close.exit_code == 2 and "no segment 'loyl' (did you mean 'loyal'?)" in " ".join(
        close.stderr.split())


ATTRIBUTES = {"city": "Oslo", "birthday": "1990-05-01", "note": "<b>VIP</b> & co",
              "tags": ["tea", "coffee"], "Zone": "[bold]north[/bold]"}


def attributed(app: App) -> int:
    with app.engine.begin() as conn:
        return int(conn.execute(insert(Customer).returning(Customer.id).values(
            external_id="A1", email="ann@example.com", first_name="Ann", last_name="Lee",
            attributes=ATTRIBUTES, created_at=T0, updated_at=T0)).scalar_one())


def test_the_customer_page_shows_the_attributes_sorted_and_escaped(
        app: App, web: TestClient) -> None:
    attributed(app)
    account(app, "sue@shop.example", "support")
    page = logged_in(web, "sue@shop.example").get("/customers/A1").text
    cells = [f'<th scope="row">{escape(k)}</th><td>{escape(v)}</td>' for k, v in (
        ("Zone", "[bold]north[/bold]"), ("birthday", "1990-05-01"), ("city", "Oslo"),
        ("note", "<b>VIP</b> & co"))]
    positions = [page.index(cell) for cell in cells]
    assert positions == sorted(positions)
    assert "<b>VIP</b>" not in page
    assert '<th scope="row">tags</th><td>["tea", "coffee"]</td>' in page  # JSON


def test_customer_show_prints_the_attributes_sorted_in_text_and_json(
        app: App, cli_env: dict[str, str]) -> None:
    attributed(app)
    runner = CliRunner()
    shown = runner.invoke(cli, ["customer", "show", "A1", "--json"], env=cli_env)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["attributes"] == ATTRIBUTES
    assert list(data["attributes"]) == ["Zone", "birthday", "city", "note", "tags"]
    text = runner.invoke(cli, ["customer", "show", "A1"], env=cli_env).stdout
    lines = text.splitlines()
    start = lines.index("Attributes:")
    assert lines[start + 1:start + 6] == [
        "  Zone: [bold]north[/bold]", "  birthday: 1990-05-01", "  city: Oslo",
        "  note: <b>VIP</b> & co", '  tags: ["tea", "coffee"]']


def test_an_export_read_slowly_holds_no_connection_and_no_lock_between_its_chunks(
        app: App) -> None:
    """A download that stalls (a phone, a paused browser) must not hold the database: each
    chunk is read on a short connection of its own, so writers go on meanwhile."""
    from lifecycle.segments.members import EXPORT_CHUNK, all_members

    ids = members(app, "vip", EXPORT_CHUNK + 5)
    export = all_members(app.engine, "vip")
    first = next(export)  # the download stalls after its first bytes
    assert first.id == ids[0] and app.engine.pool.checkedout() == 0
    with app.engine.begin() as conn:  # a writer (SQLite: BEGIN IMMEDIATE) is not kept waiting
        conn.execute(insert(Customer).values(
            external_id="late", email="late@example.com", attributes={},
            marketing_consent=True, created_at=T0, updated_at=T0))
    assert [m.id for m in export] == ids[1:]
