"""Reviews and referrals through the ingest API: once per id, on the timeline, and the
customer in ``reviewer`` / ``referrer`` when the request returns — so ``advocacy_ask``
asks a reviewer for a referral, never for another review."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from lifecycle.app import App
from lifecycle.flows.engine import advance, enroll
from lifecycle.flows.service import catalogue, policies_of
from lifecycle.models import Customer, Message, SegmentMembership, Touchpoint
from lifecycle.timeline import page
from tests.factories import WEB_T0 as T0
from tests.test_api import ann, key

SCOPES = ("customers:write", "reviews:write", "referrals:write")


def review(n: int = 1, customer: int = 1, **changes: Any) -> dict[str, Any]:
    return {"id": f"R{n}", "customer_id": f"C{customer}", "product": "Sencha", "sku": "TEA-1",
            "rating": 5, "text": "Lovely tea.\nWould buy again.",
            "url": "https://shop.example/p/tea-1#r1", "occurred_at": "2026-06-02T18:00:00Z",
            **changes}


def referral(n: int = 1, customer: int = 1, **changes: Any) -> dict[str, Any]:
    return {"id": f"F{n}", "customer_id": f"C{customer}", "referred_customer_id": "C2",
            "occurred_at": "2026-06-02T18:00:00Z", **changes}


def open_segments(app: App, external_id: str) -> set[str]:
    from lifecycle.models import Customer

    with app.engine.connect() as conn:
        cid = conn.execute(select(Customer.id).where(Customer.external_id == external_id)
                           ).scalar_one()
        return set(conn.execute(select(SegmentMembership.segment).where(
            SegmentMembership.customer_id == cid, SegmentMembership.exited_at.is_(None))
        ).scalars())


def timeline(app: App, external_id: str) -> list[tuple[str, str]]:
    from lifecycle.models import Customer

    with app.engine.connect() as conn:
        cid = conn.execute(select(Customer.id).where(Customer.external_id == external_id)
                           ).scalar_one()
        return [(e.kind, e.summary) for e in page(conn, cid)]


@pytest.fixture
def headers(app: App, web: TestClient) -> dict[str, str]:
    """A key for customers, reviews and referrals; customers C1 and C2 posted."""
    found = key(app, *SCOPES)
    assert web.post("/api/v1/customers", json=[ann(1), ann(2)], headers=found).status_code == 200
    return found


def test_a_review_puts_the_customer_in_reviewer_when_the_request_returns_once_per_id(
        app: App, web: TestClient, headers: dict[str, str]) -> None:
    assert "reviewer" not in open_segments(app, "C1")
    first = web.post("/api/v1/reviews", json=[review()], headers=headers)
    assert first.status_code == 200 and first.json()["inserted"] == 1
    assert "reviewer" in open_segments(app, "C1")
    again = web.post("/api/v1/reviews", json=[review()], headers=headers).json()
    assert (again["inserted"], again["unchanged"]) == (0, 1)
    entries = timeline(app, "C1")
    assert entries.count(("review", "Reviewed Sencha: 5/5 — Lovely tea.")) == 1
    assert ("segment_entered", "Entered segment “Reviewer”") in [
        (kind, text) for kind, text in entries]
    with app.engine.connect() as conn:
        data = conn.execute(select(Touchpoint.data).where(Touchpoint.kind == "review")
                            ).scalar_one()
    assert data == {"id": "R1", "product": "Sencha", "sku": "TEA-1", "rating": 5,
                    "text": "Lovely tea.\nWould buy again.",
                    "url": "https://shop.example/p/tea-1#r1"}


def test_a_referral_puts_the_referrer_in_referrer_and_names_who_was_referred(
        app: App, web: TestClient, headers: dict[str, str]) -> None:
    posted = [referral(1), referral(2, referred_customer_id=None,
                                    referred_email="Friend@Example.COM")]
    assert web.post("/api/v1/referrals", json=posted, headers=headers).json()["inserted"] == 2
    assert web.post("/api/v1/referrals", json=posted, headers=headers).json()["inserted"] == 0
    assert "referrer" in open_segments(app, "C1")
    assert "referrer" not in open_segments(app, "C2")  # the referred is not a referrer
    kinds = [text for kind, text in timeline(app, "C1") if kind == "referral"]
    assert sorted(kinds) == ["Referred C2", "Referred Friend@example.com"]


def test_a_review_outside_the_window_records_it_but_makes_no_reviewer(
        app: App, web: TestClient, headers: dict[str, str]) -> None:
    old = review(occurred_at=(T0 - timedelta(days=400)).isoformat())
    assert web.post("/api/v1/reviews", json=[old], headers=headers).json()["inserted"] == 1
    assert "reviewer" not in open_segments(app, "C1")


@pytest.mark.parametrize(("path", "item", "field"), [
    ("reviews", review(rating=6), "rating"),
    ("reviews", review(rating=0), "rating"),
    ("reviews", review(text="bad\x00text"), "text"),
    ("reviews", review(url="javascript:alert(1)"), "url"),
    ("reviews", review(customer=9), "customer_id"),
    ("reviews", {k: v for k, v in review().items() if k != "id"}, "id"),
    ("referrals", referral(referred_customer_id=None), "referred_customer_id"),
    ("referrals", referral(referred_customer_id="C1"), "referred_customer_id"),
    ("referrals", referral(referred_customer_id=None, referred_email="not an address"),
     "referred_email"),
    ("referrals", referral(referred_customer_id=None, referred_email="ann1@example.com"),
     "referred_email"),  # the referrer's own address: a self-referral by email
    ("referrals", referral(referred_email="ANN1@Example.COM"), "referred_email"),
    ("referrals", referral(occurred_at="2026-06-02T18:00:00"), "occurred_at"),
])
def test_a_bad_review_or_referral_gets_422_naming_item_and_field_and_nothing_is_stored(
        app: App, web: TestClient, headers: dict[str, str], path: str, item: dict[str, Any],
        field: str) -> None:
    good = review(5) if path == "reviews" else referral(5)
    answer = web.post(f"/api/v1/{path}", json=[good, item], headers=headers)
    assert answer.status_code == 422, answer.text
    assert [1, field] in [problem["loc"][1:3] for problem in answer.json()["detail"]]
    with app.engine.connect() as conn:
        assert conn.execute(select(Touchpoint.id).where(
            Touchpoint.kind.in_(("review", "referral")))).first() is None


def test_the_same_id_twice_in_one_post_is_refused(app: App, web: TestClient,
                                                   headers: dict[str, str]) -> None:
    answer = web.post("/api/v1/reviews", json=[review(1), review(1, rating=1)], headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", 1, "id"]


def test_reviews_and_referrals_need_their_scopes(app: App, web: TestClient,
                                                  headers: dict[str, str]) -> None:
    other = key(app, "events:write")
    assert web.post("/api/v1/reviews", json=[review()], headers=other).status_code == 403
    assert web.post("/api/v1/referrals", json=[referral()], headers=other).status_code == 403
    assert web.post("/api/v1/reviews", json=[review()]).status_code == 401


def test_advocacy_ask_asks_a_reviewer_for_a_referral_and_never_for_another_review(
        app: App, web: TestClient, headers: dict[str, str]) -> None:
    """C1 reviewed (posted through the API), C2 did not; both became promoters."""
    assert web.post("/api/v1/reviews", json=[review()], headers=headers).status_code == 200
    flows = catalogue(app).flows
    with app.engine.begin() as conn:
        from lifecycle.models import Customer

        ids = dict(conn.execute(select(Customer.external_id, Customer.id)).all())
        for external in ("C1", "C2"):
            assert enroll(conn, flows["advocacy_ask"], ids[external], f"promoter:{external}",
                          T0) is not None
    with app.engine.begin() as conn:
        for day in range(1, 5):  # the flow waits a business day, until 10:00 in their zone
            advance(conn, flows, T0 + timedelta(days=day), policies=policies_of(app),
                    default_tz="UTC")
        sent = {cid: template for cid, template in conn.execute(
            select(Message.customer_id, Message.template).where(Message.flow == "advocacy_ask"))}
    assert sent == {ids["C1"]: "referral_invite", ids["C2"]: "review_request"}


def test_two_posts_naming_the_same_ids_in_opposite_orders_at_once_both_succeed(
        app: App, web: TestClient, headers: dict[str, str]) -> None:
    """Each post waits for the other's uncommitted ids: inserted in the order given, the two
    would wait for each other (a deadlock PostgreSQL breaks with a 500)."""
    from lifecycle.web.app import create_app

    held = app.engine.connect()
    held.begin()  # holds R3 uncommitted, so both posts are under way before either ends
    held.execute(Touchpoint.__table__.insert().values(
        customer_id=select(Customer.id).where(Customer.external_id == "C2").scalar_subquery(),
        kind="review", channel="api", occurred_at=T0, recorded_at=T0, source_key="review:R3",
        data={}))
    answers: dict[str, Any] = {}

    def post(name: str, order: list[int]) -> None:
        try:
            answers[name] = TestClient(create_app(app)).post(
                "/api/v1/reviews", json=[review(n, customer=1 + n % 2) for n in order],
                headers=headers)
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            answers[name] = exc

    threads = [threading.Thread(target=post, args=("ab", [1, 3, 2])),
               threading.Thread(target=post, args=("ba", [2, 3, 1]))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while _waiting_on_locks(app) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    held.rollback()
    held.close()
    for thread in threads:
        thread.join(60)
    assert {name: getattr(a, "status_code", a) for name, a in answers.items()} == {
        "ab": 200, "ba": 200}
    assert sum(a.json()["inserted"] for a in answers.values()) == 3
    with app.engine.connect() as conn:
        assert sorted(conn.execute(select(Touchpoint.source_key).where(
            Touchpoint.kind == "review")).scalars()) == ["review:R1", "review:R2", "review:R3"]
    assert "reviewer" in open_segments(app, "C1") and "reviewer" in open_segments(app, "C2")


def _waiting_on_locks(app: App) -> int:
    """How many sessions wait for a lock (PostgreSQL); SQLite's writers queue on its busy
    timeout, which nothing counts: taken as both waiting after a moment."""
    if app.engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return 2
    with app.engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


@pytest.mark.parametrize("path", ["reviews", "referrals"])
def test_an_erased_customer_cannot_be_given_a_review_or_referral(
        app: App, web: TestClient, headers: dict[str, str], path: str) -> None:
    """Erasure leaves a shell named ``erased:<id>``: a post naming it must not put personal
    data (a review's text, whom they referred) back on it, nor segments."""
    from lifecycle.privacy import erase

    with app.engine.begin() as conn:
        shell = conn.execute(select(Customer.__table__).where(Customer.external_id == "C1")
                             ).one()
        erase(conn, shell, T0)
    item = (review if path == "reviews" else referral)(customer=1)
    item["customer_id"] = f"erased:{shell.id}"
    answer = web.post(f"/api/v1/{path}", json=[item], headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == [
        "body", 0, "customer_id"]
    with app.engine.connect() as conn:
        assert conn.execute(select(Touchpoint.kind).where(
            Touchpoint.customer_id == shell.id, Touchpoint.kind.in_(("review", "referral")))
        ).first() is None
