"""The flow engine on both backends: enrolment rules, waits, goals, quiet hours, the cap."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path

from sqlalchemy import Connection, select

from lifecycle.app import App
from lifecycle.flows.definitions import Context, Flow, load_flow, load_folder
from lifecycle.flows.engine import Policies, advance, enroll
from lifecycle.flows.timing import QuietHours
from lifecycle.models import FlowEnrollment, Message, Suppression, email_hash
from lifecycle.segments.definitions import load_definitions
from lifecycle.timeutil import UTC, zone
from tests.factories import add_customer, add_order, add_touchpoint

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = Context.from_folders(ROOT / "templates" / "email",
                               set(load_definitions(ROOT / "flows" / "segments.yaml").all_names()))
FLOWS = load_folder(ROOT / "flows", CONTEXT).flows
T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)  # a Wednesday, 14:00 in Berlin
POLICIES = Policies(quiet=QuietHours(time(21, 0), time(8, 0)))


def run(conn: Connection, at: datetime, flows: dict[str, Flow] = FLOWS,
        policies: Policies = POLICIES):  # type: ignore[no-untyped-def]
    return advance(conn, flows, at, policies=policies, default_tz="UTC")


def mails(conn: Connection, customer_id: int) -> list:  # type: ignore[type-arg]
    return conn.execute(select(Message).where(Message.customer_id == customer_id)
                        .order_by(Message.id)).all()


def state(conn: Connection, enrollment_id: int):  # type: ignore[no-untyped-def]
    return conn.execute(select(FlowEnrollment).where(FlowEnrollment.id == enrollment_id)).one()


def test_the_thank_you_waits_two_hours_then_writes_one_mail(conn: Connection) -> None:
    cid = add_customer(conn, "ann", T0 - timedelta(days=1), timezone="Europe/Berlin")
    eid = enroll(conn, FLOWS["thank_you"], cid, "order:o1", T0, {"order_id": "o1"})
    assert eid is not None
    run(conn, T0)
    assert mails(conn, cid) == [] and state(conn, eid).next_run_at == T0 + timedelta(hours=2)
    run(conn, T0 + timedelta(hours=1))
    assert mails(conn, cid) == []
    report = run(conn, T0 + timedelta(hours=2))
    [mail] = mails(conn, cid)
    assert (mail.template, mail.status, mail.step) == ("thank_you", "scheduled", "thanks")
    assert mail.due_at == T0 + timedelta(hours=2)
    assert mail.context == {"order_id": "o1", "marketing": False, "capped": False}
    assert report.mails == 1 and state(conn, eid).status == "completed"
    run(conn, T0 + timedelta(hours=3))
    assert len(mails(conn, cid)) == 1


def test_a_trigger_seen_twice_enrols_once_and_every_order_gets_its_thanks(conn: Connection) -> None:
    cid = add_customer(conn, "bo", T0)
    first = enroll(conn, FLOWS["thank_you"], cid, "order:o1", T0)
    assert first is not None
    assert enroll(conn, FLOWS["thank_you"], cid, "order:o1", T0) is None
    assert enroll(conn, FLOWS["thank_you"], cid, "order:o2", T0) is not None


def test_a_mail_due_at_night_waits_for_the_morning_in_the_customers_zone(
        conn: Connection) -> None:
    tokyo = zone("Asia/Tokyo")
    night = datetime(2026, 6, 3, 21, 30, tzinfo=tokyo).astimezone(UTC)  # +2 h = 23:30
    cid = add_customer(conn, "kei", night, timezone="Asia/Tokyo")
    enroll(conn, FLOWS["thank_you"], cid, "order:o1", night)
    run(conn, night)
    run(conn, night + timedelta(hours=2))
    [mail] = mails(conn, cid)
    assert mail.due_at.astimezone(tokyo) == datetime(2026, 6, 4, 8, 0, tzinfo=tokyo)


def turns(conn: Connection, enrollment_id: int, n: int) -> None:
    """Give an enrollment up to ``n`` turns, each at the time it is due."""
    for _ in range(n):
        e = state(conn, enrollment_id)
        if e.status != "active":
            return
        run(conn, e.next_run_at)


def test_win_back_writes_in_the_customers_morning_then_waits(conn: Connection) -> None:
    cid = add_customer(conn, "bo", T0 - timedelta(days=400), timezone="Asia/Tokyo")
    eid = enroll(conn, FLOWS["win_back"], cid, "segment:lapsed", T0)  # 21:00 in Tokyo
    run(conn, T0)
    assert mails(conn, cid) == []
    assert state(conn, eid).next_run_at == datetime(2026, 6, 4, 1, tzinfo=UTC)  # 10:00 Tokyo
    turns(conn, eid, 1)
    assert [(m.template, m.due_at) for m in mails(conn, cid)] == [
        ("winback_1", datetime(2026, 6, 4, 1, tzinfo=UTC))]


def test_win_back_stops_when_the_customer_orders(conn: Connection) -> None:
    cid = add_customer(conn, "cy", T0 - timedelta(days=400))
    eid = enroll(conn, FLOWS["win_back"], cid, "segment:lapsed", T0)
    turns(conn, eid, 2)
    assert [m.template for m in mails(conn, cid)] == ["winback_1"]
    add_order(conn, cid, T0 + timedelta(days=2), 30)
    run(conn, state(conn, eid).next_run_at)
    e = state(conn, eid)
    assert (e.status, e.exit_reason) == ("exited", "goal: ordered")
    assert [m.template for m in mails(conn, cid)] == ["winback_1"]


def test_win_back_escalates_and_a_click_on_the_second_offer_ends_it(conn: Connection) -> None:
    cid = add_customer(conn, "di", T0 - timedelta(days=400))
    eid = enroll(conn, FLOWS["win_back"], cid, "segment:lapsed", T0)
    turns(conn, eid, 3)
    second = mails(conn, cid)[-1]
    assert second.template == "winback_2"
    add_touchpoint(conn, cid, "email_clicked", second.due_at + timedelta(hours=1))
    from sqlalchemy import update

    from lifecycle.models import Touchpoint
    conn.execute(update(Touchpoint).where(Touchpoint.customer_id == cid).values(
        message_id=second.id))
    run(conn, state(conn, eid).next_run_at)
    e = state(conn, eid)
    assert (e.status, e.exit_reason) == ("completed", "branch clicked-before")
    assert [m.template for m in mails(conn, cid)] == ["winback_1", "winback_2"]


def test_without_a_click_the_third_mail_goes_out_with_a_bigger_offer(conn: Connection) -> None:
    cid = add_customer(conn, "ed", T0 - timedelta(days=400))
    eid = enroll(conn, FLOWS["win_back"], cid, "segment:lapsed", T0)
    turns(conn, eid, 5)
    assert [m.template for m in mails(conn, cid)] == ["winback_1", "winback_2", "winback_3"]
    assert state(conn, eid).status == "completed"


def test_marketing_needs_consent_and_stops_on_unsubscribe(conn: Connection) -> None:
    no = add_customer(conn, "no-consent", T0, marketing_consent=False)
    assert enroll(conn, FLOWS["win_back"], no, "x", T0) is None
    assert enroll(conn, FLOWS["thank_you"], no, "order:1", T0) is not None  # transactional
    yes = add_customer(conn, "leaver", T0)
    eid = enroll(conn, FLOWS["win_back"], yes, "x", T0)
    run(conn, T0)
    conn.execute(Suppression.__table__.insert().values(
        email_hash=email_hash("leaver@example.com"), email="leaver@example.com", scope="all",
        reason="unsubscribe", source="test", created_at=T0))
    run(conn, state(conn, eid).next_run_at)
    assert state(conn, eid).exit_reason == "suppressed: unsubscribe"


def test_reentry_once_per_period(conn: Connection) -> None:
    cid = add_customer(conn, "fay", T0)
    flow = FLOWS["feedback_request"]  # once per 90 days
    first = enroll(conn, flow, cid, "order:1", T0)
    for _ in range(3):
        e = state(conn, first)
        if e.status == "active":
            run(conn, e.next_run_at)
    assert enroll(conn, flow, cid, "order:2", T0 + timedelta(days=30)) is None
    assert enroll(conn, flow, cid, "order:3", T0 + timedelta(days=91)) is not None


def test_the_frequency_cap_counts_marketing_mail_across_flows(conn: Connection,
                                                              tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("trigger: {event: a}\nsteps:\n  - send: winback_1\n")
    (tmp_path / "b.yaml").write_text("trigger: {event: b}\nsteps:\n  - send: winback_1\n")
    (tmp_path / "t.yaml").write_text("kind: transactional\ntrigger: {event: t}\n"
                                     "steps:\n  - send: thank_you\n")
    flows = {p.stem: load_flow(p, CONTEXT) for p in tmp_path.glob("*.yaml")}
    cid = add_customer(conn, "gus", T0)
    add_order(conn, cid, T0 - timedelta(days=3), 10)
    policies = Policies(cap=1, cap_window=timedelta(days=7), quiet=QuietHours(time(0), time(0)))
    for name in ("a", "b", "t"):
        enroll(conn, flows[name], cid, name, T0)
    report = run(conn, T0, flows, policies)
    by_flow = {m.flow: (m.status, m.last_error) for m in mails(conn, cid)}
    assert by_flow == {"a": ("scheduled", None), "b": ("suppressed", "frequency cap reached"),
                       "t": ("scheduled", None)}
    assert report.capped == 1
    enroll(conn, flows["b"], cid, "b-later", T0 + timedelta(days=8))
    run(conn, T0 + timedelta(days=8), flows, policies)
    assert mails(conn, cid)[-1].status == "scheduled"  # the window has passed


def test_touchpoints_after_the_engine_starts_trigger_flows_once(app: App) -> None:
    """Each step its own transaction, as in the scheduler: the engine reads what others
    committed (on PostgreSQL, of transactions older than any still running)."""
    from lifecycle.flows.triggers import dispatch

    drafts = frozenset(name for name, flow in FLOWS.items() if flow.status == "draft")
    with app.engine.begin() as conn:
        cid = add_customer(conn, "hal", T0 - timedelta(days=60))
        add_touchpoint(conn, cid, "segment_entered", T0 - timedelta(days=1), segment="lapsed")
    with app.engine.begin() as conn:
        # the first run only sets the cursor: history is quiet
        assert dispatch(conn, FLOWS, T0, held=drafts) == 0
    with app.engine.begin() as conn:
        add_touchpoint(conn, cid, "order_placed", T0, order_id="o9", nth=2, total="12.00")
        add_touchpoint(conn, cid, "segment_entered", T0, segment="vip")
        add_touchpoint(conn, cid, "feedback", T0, score=10)
    with app.engine.begin() as conn:
        # thank_you, feedback_request, loyalty_offer (the draft vip_early_access waits)
        assert dispatch(conn, FLOWS, T0, held=drafts) == 3
    with app.engine.begin() as conn:
        assert dispatch(conn, FLOWS, T0, held=drafts) == 0
        flows = {row.flow: row.context for row in conn.execute(
            select(FlowEnrollment.flow, FlowEnrollment.context)
            .where(FlowEnrollment.customer_id == cid))}
    assert set(flows) == {"thank_you", "feedback_request", "loyalty_offer"}
    assert flows["thank_you"]["order_id"] == "o9"


def test_order_trigger_filters(conn: Connection, tmp_path: Path) -> None:
    from lifecycle.flows.triggers import matches

    (tmp_path / "f.yaml").write_text(
        "trigger: {order_placed: {nth: 2, min_total: 50, category: tea}}\n"
        "steps:\n  - send: thank_you\n")
    flow = load_flow(tmp_path / "f.yaml", CONTEXT)
    good = {"nth": 2, "total": "60.00", "categories": ["tea", "gifts"]}
    assert matches(flow, "order_placed", good)
    assert not matches(flow, "order_placed", {**good, "nth": 1})
    assert not matches(flow, "order_placed", {**good, "total": "49.99"})
    assert not matches(flow, "order_placed", {**good, "categories": ["coffee"]})
    assert not matches(flow, "segment_entered", good)


def test_two_schedulers_at_once_write_each_mail_once(fresh_database_url: str) -> None:
    import threading

    from lifecycle.db import make_engine

    engine = make_engine(fresh_database_url)
    with engine.begin() as conn:
        ids = [add_customer(conn, f"r{i}", T0) for i in range(40)]
        for cid in ids:
            enroll(conn, FLOWS["win_back"], cid, "x", T0)
        advance(conn, FLOWS, T0, policies=POLICIES, default_tz="UTC")  # all wait for 10:00
    morning = T0 + timedelta(hours=22)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                with engine.begin() as conn:
                    advance(conn, FLOWS, morning, policies=POLICIES, default_tz="UTC", batch=7)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engine.connect() as conn:
        per_customer = conn.execute(select(Message.customer_id, Message.template)).all()
        waiting = conn.execute(select(FlowEnrollment.current_step)).scalars().all()
    engine.dispose()
    assert sorted(per_customer) == sorted((cid, "winback_1") for cid in ids)
    assert set(waiting) == {"pause-1"}
