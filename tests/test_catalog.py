"""The catalog: the categories, SKUs, attribute names and event names in the data, with their
counts, from the library, the command line and the staff page."""

from __future__ import annotations

import json
from datetime import datetime

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from lifecycle.app import App
from lifecycle.catalog.service import Entry, read_catalog
from lifecycle.cli import cli
from lifecycle.db import make_engine
from lifecycle.timeutil import UTC
from tests.factories import account, add_customer, add_order, add_touchpoint, logged_in

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TEA = {"sku": "TEA-1", "category": "tea", "quantity": 1, "price": "8.90"}
POT = {"sku": "POT-2", "category": "teaware", "quantity": 1}
CUP = {"sku": "CUP-3", "category": "teaware", "quantity": 2}


def shop(conn: Connection) -> None:
    """Three customers, four orders, three custom events."""
    ann = add_customer(conn, "ann", T0, attributes={"birthday": "1990-12-05", "tier": "gold"})
    bob = add_customer(conn, "bob", T0, attributes={"tier": "silver", "gone": None})
    cy = add_customer(conn, "cy", T0)
    add_order(conn, ann, T0, "17.80", items=[TEA, dict(TEA, quantity=2)])  # one order, twice tea
    add_order(conn, ann, T0, "40", items=[POT, CUP], status="refunded")
    add_order(conn, bob, T0, "9", items=[TEA, {"name": "a line without SKU or category"}])
    add_order(conn, cy, T0, "5", items=[])
    add_touchpoint(conn, ann, "event", T0, name="wishlist_added", id="e1")
    add_touchpoint(conn, bob, "event", T0, name="wishlist_added", id="e2")
    add_touchpoint(conn, bob, "event", T0, name="quiz_done", id="e3")
    add_touchpoint(conn, cy, "support", T0, type="call", summary="not an event")


def test_the_catalog_counts_each_value_in_the_data(conn: Connection) -> None:
    shop(conn)
    found = read_catalog(conn)
    assert found.categories == [Entry("tea", 2, 2), Entry("teaware", 1, 1)]
    assert found.skus == [Entry("TEA-1", 2, 2), Entry("CUP-3", 1, 1), Entry("POT-2", 1, 1)]
    assert found.attributes == [Entry("tier", 2, 2), Entry("birthday", 1, 1)]
    assert found.events == [Entry("wishlist_added", 2, 2), Entry("quiz_done", 1, 1)]
    assert found.distinct == {"categories": 2, "skus": 3, "attributes": 2, "events": 2}


def test_a_limited_catalog_keeps_the_most_frequent_and_says_how_many_there_are(
        conn: Connection) -> None:
    shop(conn)
    found = read_catalog(conn, limit=1)
    assert found.skus == [Entry("TEA-1", 2, 2)] and found.distinct["skus"] == 3


def test_an_empty_database_has_an_empty_catalog(conn: Connection) -> None:
    found = read_catalog(conn)
    assert (found.categories, found.skus, found.attributes, found.events) == ([], [], [], [])
    assert found.distinct == {"categories": 0, "skus": 0, "attributes": 0, "events": 0}


def test_the_catalog_command_lists_the_values_with_their_counts(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=cli_env).exit_code == 0
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.begin() as conn:
        shop(conn)
    engine.dispose()
    as_json = runner.invoke(cli, ["catalog", "--json"], env=cli_env)
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["categories"] == [{"name": "tea", "orders": 2, "customers": 2},
                                  {"name": "teaware", "orders": 1, "customers": 1}]
    assert data["skus"][0] == {"name": "TEA-1", "orders": 2, "customers": 2}
    assert data["attributes"] == [{"name": "tier", "customers": 2},
                                  {"name": "birthday", "customers": 1}]
    assert data["events"] == [{"name": "wishlist_added", "events": 2, "customers": 2},
                              {"name": "quiz_done", "events": 1, "customers": 1}]
    assert data["distinct"]["skus"] == 3
    table = runner.invoke(cli, ["catalog", "--limit", "2"], env={**cli_env, "COLUMNS": "120"})
    assert table.exit_code == 0, table.output
    assert "SKUs (order lines): 3 (the 2 most frequent shown)" in table.stdout
    assert "wishlist_added" in table.stdout and "teaware" in table.stdout
    assert "POT-2" not in table.stdout  # third of three


def test_the_catalog_page_lists_the_values_for_managers(app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        shop(conn)
    account(app, "max@shop.example", "manager")
    account(app, "sue@shop.example", "support")
    manager = logged_in(TestClient(web.app), "max@shop.example")
    page = manager.get("/catalog")
    assert page.status_code == 200, page.text
    text = page.text
    assert '<a href="/catalog">Catalog</a>' in text
    assert ('<tr><td><code>tea</code></td><td class="n">2</td><td class="n">2</td></tr>'
            in text)
    assert '<tr><td><code>tier</code></td><td class="n">2</td></tr>' in text
    assert ('<tr><td><code>quiz_done</code></td><td class="n">1</td><td class="n">1</td></tr>'
            in text)
    assert "Custom events (2)" in text
    limited = manager.get("/catalog?limit=1").text
    assert "the 1 most frequent of 3 shown" in limited and "POT-2" not in limited
    for odd in ("", "2.5", "-1", "abc", "9" * 30):  # a cleared or mistyped field: the default
        shown = manager.get(f"/catalog?limit={odd}")
        assert shown.status_code == 200 and "POT-2" in shown.text, odd
    support = logged_in(TestClient(web.app), "sue@shop.example")
    assert support.get("/catalog").status_code == 403
    anonymous = TestClient(web.app).get("/catalog", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


def test_the_command_shows_the_hundred_most_frequent_unless_told(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=cli_env).exit_code == 0
    engine = make_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.begin() as conn:
        cid = add_customer(conn, "ann", T0)
        add_order(conn, cid, T0, "1", items=[{"sku": f"S{n:03d}", "quantity": 1}
                                             for n in range(101)])
    engine.dispose()
    data = json.loads(runner.invoke(cli, ["catalog", "--json"], env=cli_env).stdout)
    assert len(data["skus"]) == 100 and data["distinct"]["skus"] == 101
    assert data["skus"][-1]["name"] == "S099"  # equal counts: by name


def test_names_that_differ_only_by_spaces_or_case_are_told_apart_and_marked_alike(
        app: App, web: TestClient, cli_env: dict[str, str]) -> None:
    """`coffee` and `coffee ` look the same on a page, but a condition matches one spelling:
    the odd one is shown quoted, and each is marked as looking like the others."""
    def odd_shop(conn: Connection) -> None:
        ann = add_customer(conn, "ann", T0)
        add_order(conn, ann, T0, "9", items=[{"category": "coffee"}, {"sku": "A"}])
        add_order(conn, ann, T0, "9", items=[{"category": "coffee "}])
        add_order(conn, ann, T0, "9", items=[{"category": "Coffee"}, {"category": "tea"}])

    with app.engine.begin() as conn:
        odd_shop(conn)
        found = read_catalog(conn)
    by_name = {e.name: e for e in found.categories}
    assert (by_name["coffee "].shown, by_name["coffee"].shown) == ("'coffee '", "coffee")
    assert set(by_name["coffee"].alike) == {"coffee ", "Coffee"}
    assert by_name["tea"].alike == () and by_name["tea"].shown == "tea"
    account(app, "max@shop.example", "manager")
    page = logged_in(TestClient(web.app), "max@shop.example").get("/catalog").text
    assert "<code>&#39;coffee &#39;</code>" in page
    assert page.count("a condition matches one spelling only") == 3
    printed = CliRunner().invoke(cli, ["catalog"], env={**cli_env, "COLUMNS": "200"})
    assert printed.exit_code == 0, printed.output
    assert "'coffee ' looks like 'coffee', 'Coffee'" in printed.stdout \
        or "'coffee ' looks like 'Coffee', 'coffee'" in printed.stdout
