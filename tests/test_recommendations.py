"""Recommendations: products and co-purchase counts from order items, the suggestions of a
batch of mails, review links, and product links checked on the way in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, event, select, update

from lifecycle.app import App
from lifecycle.config import ConfigError, load_settings
from lifecycle.imports import import_records
from lifecycle.imports.source import open_source
from lifecycle.mail.context import build_context, load_facts
from lifecycle.models import CoPurchase, Customer, CustomerSuggestion, Order, Product
from lifecycle.recommendations.load import load_suggestions
from lifecycle.segments.compute import refresh_all
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC
from tests.factories import WEB_SECRET, add_customer, add_order, write_jsonl
from tests.test_api import ALL, key

ROOT = Path(__file__).resolve().parent.parent
DEFS = load_definitions(ROOT / "flows" / "segments.yaml")
AS_OF = datetime(2026, 6, 30, 12, tzinfo=UTC)
NBSP = "\xa0"


def ago(days: float) -> datetime:
    return AS_OF - timedelta(days=days)


def line(sku: str, **more: Any) -> dict[str, Any]:
    return {"sku": sku, "name": f"Product {sku}", "quantity": 1, "price": "10.00", **more}


def a_shop(conn: Connection) -> dict[str, int]:
    """Seven customers whose pairs were counted by hand (see the test below)."""
    ids = {name: add_customer(conn, name, ago(400)) for name in
           ("ann", "bob", "cy", "dee", "eve", "fay", "gus")}
    add_order(conn, ids["ann"], ago(90), 20, items=[
        line("A", name="Sencha (old)", price="8.00", url="https://shop.example/a-old"),
        line("B")], currency="EUR")
    add_order(conn, ids["ann"], ago(10), 10, items=[line("C")])
    add_order(conn, ids["bob"], ago(50), 29.5, items=[
        line("A", name="Sencha", price="9.50",
             image_url="https://cdn.shop.example/a.jpg"), line("B")], currency="EUR")
    add_order(conn, ids["cy"], ago(40), 20, items=[line("A"), line("D")])
    add_order(conn, ids["cy"], ago(30), 10, "refunded", items=[line("E")])
    add_order(conn, ids["dee"], ago(20), 20, items=[line("B"), line("C")])
    add_order(conn, ids["eve"], ago(15), 10, items=[line("F")])
    add_order(conn, ids["eve"], AS_OF + timedelta(days=1), 20, items=[line("A"), line("F")])
    add_order(conn, ids["fay"], ago(5), 20, "pending", items=[line("A"), line("C")])
    add_order(conn, ids["gus"], ago(60), 20, items=[line("A"), line("A"), {"name": "no sku"}])
    add_order(conn, ids["gus"], ago(55), 10, items=[line("B")])
    return ids


def pairs(conn: Connection) -> set[tuple[str, str, int]]:
    return {(r.sku, r.other_sku, r.customers) for r in conn.execute(select(CoPurchase.__table__))}


def refresh(conn: Connection, as_of: datetime = AS_OF):  # type: ignore[no-untyped-def]
    return refresh_all(conn, DEFS, as_of, as_of)


def test_the_full_refresh_counts_the_customers_who_bought_each_two_products(
        conn: Connection) -> None:
    """Completed orders up to the moment only (not cy's refunded E, fay's pending order or
    eve's order of tomorrow), all of a customer's orders together (ann's A, B and C), each
    customer once (gus bought A twice in one order), each pair both ways round."""
    a_shop(conn)
    report = refresh(conn)
    expected = {("A", "B", 3), ("A", "C", 1), ("A", "D", 1), ("B", "C", 2)}
    assert pairs(conn) == expected | {(b, a, n) for a, b, n in expected}
    assert (report.products, report.pairs) == (5, 8)


def test_a_product_is_described_by_its_latest_line_and_counts_its_distinct_buyers(
        conn: Connection) -> None:
    a_shop(conn)
    refresh(conn)
    products = {r.sku: r for r in conn.execute(select(Product.__table__))}
    assert sorted(products) == ["A", "B", "C", "D", "F"]
    a = products["A"]
    assert (a.name, a.price, a.currency) == ("Product A", "10.00", "USD")  # cy's, the latest
    # the latest link and picture any line gave, though later lines had none
    assert (a.url, a.image_url) == ("https://shop.example/a-old", "https://cdn.shop.example/a.jpg")
    assert {sku: p.buyers for sku, p in products.items()} == {"A": 4, "B": 4, "C": 2, "D": 1,
                                                              "F": 1}


def test_a_products_link_and_picture_are_the_latest_lines_that_had_them_not_the_greatest(
        conn: Connection) -> None:
    """An old line's link (a third-party host sorting last as text) never outranks a newer
    one; url and picture each come from the latest line that has one, ties by order id."""
    a, b, c, d = (add_customer(conn, n, ago(400)) for n in ("a", "b", "c", "d"))
    add_order(conn, a, ago(300), 10, items=[line("A", url="https://zz-tracker.example/r?to=a",
                                                 image_url="https://zz.example/a.jpg")])
    add_order(conn, b, ago(20), 10, items=[line("A", url="https://shop.example/products/a")])
    add_order(conn, c, ago(10), 10, items=[line("A", image_url="https://cdn.example/a1.jpg")])
    add_order(conn, d, ago(10), 10, items=[line("A", image_url="https://cdn.example/a0.jpg")])
    add_order(conn, c, ago(1), 10, items=[line("A")])  # the latest line has neither
    refresh(conn)
    product = conn.execute(select(Product.url, Product.image_url)
                           .where(Product.sku == "A")).one()
    # d's order, inserted after c's at the same moment, is the later one
    assert tuple(product) == ("https://shop.example/products/a", "https://cdn.example/a0.jpg")


def test_a_refresh_replaces_the_results_of_the_one_before(conn: Connection) -> None:
    ids = a_shop(conn)
    refresh(conn)
    conn.execute(update(Order).where(Order.customer_id.in_([ids["ann"], ids["gus"]]))
                 .values(status="refunded"))
    add_order(conn, ids["dee"], ago(1), 10, items=[line("G")])
    refresh(conn)
    expected = {("A", "B", 1), ("A", "D", 1), ("B", "C", 1), ("B", "G", 1), ("C", "G", 1)}
    assert pairs(conn) == expected | {(b, a, n) for a, b, n in expected}
    assert sorted(conn.execute(select(Product.sku)).scalars()) == ["A", "B", "C", "D", "F", "G"]
    # ann's orders were all refunded: her suggestions of before are gone
    assert conn.execute(select(CustomerSuggestion.sku).where(
        CustomerSuggestion.customer_id == ids["ann"])).all() == []
    assert conn.execute(select(CustomerSuggestion.sku).where(
        CustomerSuggestion.customer_id == ids["dee"]).order_by(CustomerSuggestion.rank)
    ).scalars().all() == ["A"]


def test_a_refresh_as_of_a_past_moment_that_only_reports_leaves_the_products_alone(
        conn: Connection) -> None:
    a_shop(conn)
    refresh(conn)
    before = pairs(conn)
    report = refresh(conn, ago(100))  # before the memberships just written: report only
    assert not report.written
    assert pairs(conn) == before


def suggested(conn: Connection, *customers: int) -> dict[int, list[str]]:
    return {cid: [s.sku for s in found]
            for cid, found in load_suggestions(conn, customers, AS_OF).items()}


def test_suggestions_are_what_others_bought_with_it_strongest_first_ties_by_sku(
        conn: Connection) -> None:
    a_shop(conn)
    hal = add_customer(conn, "hal", ago(5))
    add_order(conn, hal, ago(1), 10, items=[line("A")])
    refresh(conn)
    # B with A by 3 customers; C and D by 1 each: C first by its SKU
    assert suggested(conn, hal) == {hal: ["B", "C", "D"]}


def test_suggestions_leave_out_what_the_customer_owns_and_fill_up_with_best_sellers(
        conn: Connection) -> None:
    ids = a_shop(conn)
    refresh(conn)
    # bob owns A and B: C scores 1 (with A) + 2 (with B), D 1; then the best seller F,
    # since A and B (4 buyers each) are his and C (2) is already suggested
    assert suggested(conn, ids["bob"]) == {ids["bob"]: ["C", "D", "F"]}
    # a product bought since the refresh counts as owned at once, pending orders too
    # (fay's A and C); only five products are known
    assert suggested(conn, ids["fay"]) == {ids["fay"]: ["B", "D", "F"]}
    add_order(conn, ids["bob"], ago(1), 10, items=[line("C")])
    assert suggested(conn, ids["bob"]) == {ids["bob"]: ["D", "F"]}


def test_a_customer_with_nothing_bought_with_their_products_gets_the_best_sellers(
        conn: Connection) -> None:
    ids = a_shop(conn)
    refresh(conn)
    ivy = add_customer(conn, "ivy", ago(5))
    # eve's F was bought with nothing; ivy bought nothing; A and B tie on 4 buyers
    assert suggested(conn, ids["eve"], ivy) == {ids["eve"]: ["A", "B", "C"],
                                                ivy: ["A", "B", "C"]}


def test_a_shop_before_its_first_full_refresh_suggests_nothing(conn: Connection) -> None:
    ids = a_shop(conn)
    assert suggested(conn, *ids.values()) == {}


def test_ties_are_broken_by_the_sku_s_bytes_on_both_backends(conn: Connection) -> None:
    """Upper case sorts before lower case, whatever the database's collation."""
    buyers = [add_customer(conn, f"t{i}", ago(100)) for i in range(3)]
    for cid, other in zip(buyers, ("b-2", "B-3", "a-1"), strict=True):
        add_order(conn, cid, ago(50), 20, items=[line("X"), line(other)])
    jo = add_customer(conn, "jo", ago(5))
    add_order(conn, jo, ago(1), 10, items=[line("X")])
    refresh(conn)
    assert suggested(conn, jo) == {jo: ["B-3", "a-1", "b-2"]}


@contextmanager
def statements(conn: Connection) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", record)


def test_a_batch_of_mails_loads_its_suggestions_in_the_same_few_queries_whatever_its_size(
        conn: Connection) -> None:
    ids = a_shop(conn)
    refresh(conn)
    with statements(conn) as one:
        load_facts(conn, [ids["ann"]], [], AS_OF)
    with statements(conn) as seven:
        facts = load_facts(conn, list(ids.values()), [], AS_OF)
    # orders; then suggestions, best sellers, what they own, the products chosen
    assert len(seven) == len(one) == 5
    assert len(facts.suggestions) == 7
    with statements(conn) as alone:
        load_suggestions(conn, list(ids.values()), AS_OF)
    assert len(alone) == 4


def settings(**env: str):  # type: ignore[no-untyped-def]
    return replace(load_settings({"LIFECYCLE_SHOP_URL": "https://tea.example", **env}),
                   secret_key=WEB_SECRET)


def context_of(conn: Connection, cid: int, **env: str) -> dict[str, Any]:
    customer = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
    # utm=False: these tests read the links as the shop gave them (UTM: test_mail_standards)
    return build_context(conn, settings(**env), customer, as_of=AS_OF, utm=False)


def test_a_mail_prices_suggestions_only_in_the_customer_s_own_currency(
        conn: Connection) -> None:
    a_shop(conn)
    ole = add_customer(conn, "ole", ago(5))  # the latest line of A: in euros
    add_order(conn, ole, ago(2), 12.5, items=[line("A", price="12.50")], currency="EUR")
    kim = add_customer(conn, "kim", ago(5), locale="de-DE")
    add_order(conn, kim, ago(1), 10, items=[line("B")])
    refresh(conn)
    context = context_of(conn, kim)
    first = context["recommendations"][0]
    # A was last sold in euros; kim pays in dollars: no price rather than another currency's
    assert first == {"name": "Product A", "sku": "A", "price": None,
                     "url": "https://shop.example/a-old",
                     "image_url": "https://cdn.shop.example/a.jpg"}
    assert [r["sku"] for r in context["recommendations"]] == ["A", "C", "D"]
    assert context["recommendations"][1]["price"] == f"10,00{NBSP}$"
    assert context["recommendation"] == "Product A"
    euro = add_customer(conn, "ida", ago(5), locale="de-DE")
    add_order(conn, euro, ago(1), 10, items=[line("B")], currency="EUR")
    assert context_of(conn, euro)["recommendations"][0]["price"] == f"12,50{NBSP}€"


def test_a_mail_without_anything_to_suggest_has_an_empty_list_and_no_recommendation(
        conn: Connection) -> None:
    lee = add_customer(conn, "lee", ago(5))
    context = context_of(conn, lee)
    assert context["recommendations"] == [] and context["recommendation"] is None


def test_review_links_follow_the_pattern_for_each_product_of_the_mail_s_order(
        conn: Connection) -> None:
    mo = add_customer(conn, "mo", ago(5))
    add_order(conn, mo, ago(1), 30, items=[
        line("TEA/1", url="https://tea.example/p/sencha"), line("TEA/1"),
        {"name": "Gift wrap", "quantity": 1}, line("CUP 2")])
    context = context_of(conn, mo, LIFECYCLE_REVIEW_URL="{shop_url}/r/{sku}?o={order_id}")
    order_id = context["order"]["id"]
    assert context["reviews"] == [
        {"name": "Product TEA/1", "url": f"https://tea.example/r/TEA%2F1?o={order_id}"},
        {"name": "Product CUP 2", "url": f"https://tea.example/r/CUP%202?o={order_id}"}]
    lines = context["order"]["lines"]
    assert [x["review_url"] for x in lines] == [
        f"https://tea.example/r/TEA%2F1?o={order_id}", f"https://tea.example/r/TEA%2F1?o={order_id}",
        None, f"https://tea.example/r/CUP%202?o={order_id}"]
    assert (lines[0]["url"], lines[1]["url"], lines[0]["image_url"]) == (
        "https://tea.example/p/sencha", None, None)
    assert context["links"]["review"] == context["reviews"][0]["url"]

    on_page = context_of(conn, mo, LIFECYCLE_REVIEW_URL="{url}#reviews")
    assert on_page["reviews"] == [{"name": "Product TEA/1",
                                   "url": "https://tea.example/p/sencha#reviews"}]


def test_without_a_product_review_link_the_review_link_is_the_shop_s_review_page(
        conn: Connection) -> None:
    ned = add_customer(conn, "ned", ago(5))
    add_order(conn, ned, ago(1), 10, items=[{"name": "Gift card", "quantity": 1}])
    context = context_of(conn, ned, LIFECYCLE_REVIEW_URL="{shop_url}/r/{sku}")
    assert context["reviews"] == []
    assert context["links"]["review"] == "https://tea.example/reviews"
    # the default pattern is the shop's review page for every product
    default = context_of(conn, ned)
    assert default["reviews"] == [{"name": "Gift card", "url": "https://tea.example/reviews"}]


@pytest.mark.parametrize(("pattern", "says"), [
    ("{shop_url}/r/{product}", "unknown placeholder {product}"),
    ("{shop_url}/r/{sku:>10}", "placeholder {sku} takes no format"),
    ("{shop_url}/r?u={url}", "{url} (a whole URL) may only start the pattern"),
    ("ftp://tea.example/{sku}", "is not an http(s) URL"),
    ("{shop_url}/r/{", "is not a pattern"),
])
def test_a_review_url_pattern_that_cannot_work_is_refused_at_start(pattern: str,
                                                                  says: str) -> None:
    with pytest.raises(ConfigError, match="LIFECYCLE_REVIEW_URL") as refused:
        load_settings({"LIFECYCLE_REVIEW_URL": pattern})
    assert says in str(refused.value)


def test_an_imported_order_line_with_a_bad_link_is_refused_with_file_line_and_field(
        conn: Connection, tmp_path: Path) -> None:
    def order(n: int, **link: Any) -> dict[str, Any]:
        return {"order_id": f"o{n}", "customer_id": "c1", "ordered_at": "2026-06-01T10:00:00Z",
                "total": "10", "items": [line("A"), line("B", **link)]}

    path = write_jsonl(tmp_path / "orders.jsonl", [
        order(1, url="https://tea.example/b", image_url=" https://cdn.tea.example/b.jpg "),
        order(2, url="javascript:alert(1)"),
        order(3, image_url="https://cdn.tea.example/" + "x" * 2000),
        order(4, url="https://tea.example/a b"),
        order(5, image_url="//cdn.tea.example/b.jpg"),
        order(6, url=""),
    ])
    source = open_source(str(path))
    try:
        result = import_records(conn, "orders", source.records(), source_name=source.name)
    finally:
        source.close()
    assert [str(i) for i in result.issues] == [
        f"{path}:2: items[2].url 'javascript:alert(1)' is not an http(s) URL",
        f"{path}:3: items[2].image_url is longer than 2000 characters",
        f"{path}:4: items[2].url 'https://tea.example/a b' contains spaces or control characters",
        f"{path}:5: items[2].image_url '//cdn.tea.example/b.jpg' is not an http(s) URL",
    ]
    items = dict(conn.execute(select(Order.external_id, Order.items)).all())
    assert items["o1"][1]["url"] == "https://tea.example/b"
    assert items["o1"][1]["image_url"] == "https://cdn.tea.example/b.jpg"
    assert "url" not in items["o6"][1]


def test_the_api_refuses_an_order_line_with_a_bad_link_naming_the_field(
        app: App, web: TestClient) -> None:
    headers = key(app, *ALL)
    good = {"order_id": "O1", "customer_id": "C1", "ordered_at": "2026-06-03T11:00:00+02:00",
            "total": "10.00", "currency": "EUR", "email": "c1@example.com",
            "items": [{"sku": "A", "url": "https://tea.example/a",
                       "image_url": "https://cdn.tea.example/a.png"}]}
    bad = {**good, "order_id": "O2",
           "items": [{"sku": "A", "image_url": "data:image/png;base64,AAAA"}]}
    answer = web.post("/api/v1/orders", json=[good, bad], headers=headers)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["body", 1, "items", 0, "image_url"]
    assert "is not an http(s) URL" in detail["msg"]
    answer = web.post("/api/v1/orders", json=[good], headers=headers)
    assert answer.status_code == 200, answer.text
    with app.engine.connect() as conn:
        stored = conn.execute(select(Order.items)).scalar_one()
    assert stored[0]["url"] == "https://tea.example/a"
    assert stored[0]["image_url"] == "https://cdn.tea.example/a.png"
