"""NPS answers through the feedback mail's links: recorded, replaced, commented, segmented."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.app import App
from lifecycle.links import sign
from lifecycle.mail.context import links
from lifecycle.models import Customer, Message, SegmentMembership, Touchpoint
from tests.factories import WEB_SECRET as SECRET
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign


def feedback_link(app: App) -> tuple[int, int, str]:
    """A customer, the mail that asked them, and that mail's feedback token."""
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    return cid, mid, sign(SECRET, "feedback", {"c": cid, "m": mid})


def answers(app: App) -> list[dict[str, Any]]:
    with app.engine.connect() as conn:
        return list(conn.execute(select(Touchpoint.data).where(
            Touchpoint.kind == "feedback")).scalars())


def live_segments(app: App, cid: int) -> set[str]:
    with app.engine.connect() as conn:
        return set(conn.execute(select(SegmentMembership.segment).where(
            SegmentMembership.customer_id == cid,
            SegmentMembership.exited_at.is_(None))).scalars())


def test_a_click_records_the_score_and_makes_a_promoter_at_once(app: App,
                                                                web: TestClient) -> None:
    cid, mid, token = feedback_link(app)
    page = web.get(f"/f/{token}", params={"score": 10})
    assert page.status_code == 200 and "<strong>10</strong> out of 10" in page.text
    assert [a["score"] for a in answers(app)] == [10]
    assert "promoter" in live_segments(app, cid)
    with app.engine.connect() as conn:
        entered = conn.execute(select(Touchpoint.data).where(
            Touchpoint.customer_id == cid, Touchpoint.kind == "segment_entered")).scalars()
        assert "promoter" in {d["segment"] for d in entered}
        assert conn.execute(select(Touchpoint.message_id).where(
            Touchpoint.kind == "feedback")).scalar_one() == mid


def test_clicking_another_score_keeps_only_the_latest_answer(app: App, web: TestClient) -> None:
    cid, _mid, token = feedback_link(app)
    web.get(f"/f/{token}", params={"score": 9})
    app.clock.set(T0.replace(hour=13))  # type: ignore[attr-defined]
    web.get(f"/f/{token}", params={"score": 3})
    web.get(f"/f/{token}", params={"score": 3})  # the same again changes nothing
    [answer] = answers(app)
    assert (answer["score"], answer["changed_from"]) == (3, 9)
    segments = live_segments(app, cid)
    assert "detractor" in segments and "promoter" not in segments


def test_a_comment_is_kept_with_the_answer(app: App, web: TestClient) -> None:
    _cid, _mid, token = feedback_link(app)
    web.get(f"/f/{token}", params={"score": 8})
    page = web.post(f"/f/{token}", data={"comment": "  Quick delivery, lovely tea.  "})
    assert page.status_code == 200 and "Thanks for telling us more" in page.text
    [answer] = answers(app)
    assert (answer["score"], answer["comment"]) == (8, "Quick delivery, lovely tea.")


def test_a_comment_without_an_answer_or_a_bad_score_or_token_is_refused(
        app: App, web: TestClient) -> None:
    cid, mid, token = feedback_link(app)
    assert web.post(f"/f/{token}", data={"comment": "hello"}).status_code == 400
    for score in ("11", "-1", "x", ""):
        assert web.get(f"/f/{token}", params={"score": score}).status_code == 400
    forged = sign("g" * 40, "feedback", {"c": cid, "m": mid})
    assert web.get(f"/f/{forged}", params={"score": 10}).status_code == 400
    unsubscribe_token = sign(SECRET, "unsubscribe", {"c": cid, "m": mid})
    assert web.get(f"/f/{unsubscribe_token}", params={"score": 10}).status_code == 400
    assert answers(app) == []


def test_the_nps_links_a_mail_carries_lead_to_this_page(app: App, web: TestClient) -> None:
    cid, mid, _token = feedback_link(app)
    nps = links(app.settings, cid, mid)["nps"]
    assert len(nps) == 11
    path = nps[7].removeprefix(app.settings.base_url)
    assert web.get(path).status_code == 200
    assert [a["score"] for a in answers(app)] == [7]
    with app.engine.connect() as conn:
        assert conn.execute(select(Customer.id).where(Customer.id == cid)).scalar_one() == cid
