"""A/B tests: the significance of the difference, the winner by human opens, clicks or
conversions, and the rest of the audience mailed with it once — by the scheduler after the
test time (a paused campaign's waits), or earlier by a manager's hand."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import timedelta
from statistics import NormalDist

import pytest
from sqlalchemy import Connection, select, text, update
from sqlalchemy import event as sqlevent

from lifecycle.app import App
from lifecycle.campaigns.jobs import rules_of, tick
from lifecycle.campaigns.model import Campaign, CampaignChange
from lifecycle.campaigns.service import CampaignError, Campaigns
from lifecycle.campaigns.spec import parse_spec
from lifecycle.campaigns.winner import choose_winner, release_winner, significance
from lifecycle.flows.definitions import Context
from lifecycle.models import Message
from lifecycle.yamlfile import loads
from tests.factories import add_order
from tests.test_campaigns import RULES, SPRING, T0, member, spec, started
from tests.test_campaigns_results import ab_started, send_all
from tests.test_campaigns_sending import _vips
from tests.test_flow_results import event

AB = """\
kind: marketing
send: {variants: [{template: vip_early_access}, {template: birthday}]}
audience: {segments: [vip]}
ab_test: {share: 40%, winner_by: opens, after: 4 hours}
"""


def test_significance_is_the_two_proportion_z_test_computed_by_hand() -> None:
    """Pooled rate p = (x₁ + x₂) / (n₁ + n₂); z = (x₁/n₁ − x₂/n₂) / √(p(1 − p)(1/n₁ + 1/n₂));
    two-sided p-value = erfc(|z| / √2) = 2 (1 − Φ(|z|)).

    30 of 200 against 50 of 200: p = 80/400 = 0.2, √(0.2 · 0.8 · (1/200 + 1/200)) = √0.0016 =
    0.04, z = (0.15 − 0.25) / 0.04 = −2.5, and from a normal table Φ(2.5) = 0.99379, so the
    p-value is 2 · 0.00621 = 0.0124: significant at 95 %.  Half the mails, 15 of 100 against
    25 of 100: √(0.16 · 0.02) = 0.0566, z = −1.768, Φ(1.768) = 0.9615, p-value 0.077: not."""
    found = significance(30, 200, 50, 200)
    assert found.z == pytest.approx(-2.5)
    assert found.p_value == pytest.approx(0.0124, abs=0.0001)
    assert found.enough and found.significant
    assert found.text == "significant at 95 % (p = 0.012)"
    half = significance(15, 100, 25, 100)
    assert half.z == pytest.approx(-1.768, abs=0.001)
    assert half.p_value == pytest.approx(0.077, abs=0.001)
    assert half.enough and not half.significant
    assert half.text.startswith("not significant at 95 % (p = 0.077)")
    # the same p-values from the standard library's normal distribution (SciPy is not a
    # dependency of Lifecycle: the module uses math.erfc)
    for f in (found, half):
        assert f.p_value == pytest.approx(2 * (1 - NormalDist().cdf(abs(f.z or 0))))


def test_too_few_mails_to_tell_below_five_expected_successes_or_failures_per_variant() -> None:
    few = significance(1, 10, 3, 10)  # pooled 20 %: 2 expected successes a variant
    assert not few.enough and not few.significant
    assert few.text.startswith("too few mails to tell")
    assert significance(5, 25, 5, 25).enough  # 25 · 20 % = 5: just enough
    assert not significance(0, 0, 3, 10).enough and significance(0, 0, 3, 10).p_value is None
    same = significance(0, 50, 0, 50)  # nobody did it: no difference at all
    assert same.p_value == 1.0 and not same.significant
    with pytest.raises(ValueError, match="successes cannot outnumber the mails"):
        significance(11, 10, 3, 10)
    with pytest.raises(ValueError, match="a_n must not be negative"):
        significance(0, -1, 3, 10)


def test_with_three_variants_the_leader_is_compared_with_the_runner_up(
        conn: Connection) -> None:
    cid, _ = ab_started(conn, 30, "99%", "clicks",
                        ("vip_early_access", "birthday", "thank_you"))
    sent = send_all(conn, cid, T0)
    assert len(sent) == 30
    clicks = {"vip_early_access": 2, "birthday": 5, "thank_you": 1}
    for variant, n in clicks.items():
        for m in [m for m in sent if m.variant == variant][:n]:
            event(conn, m.customer_id, m.id, "email_clicked", T0 + timedelta(hours=1))
    winner, rates, found = choose_winner(conn, cid, "clicks")
    assert winner == "birthday"
    assert [(r.variant, r.successes, r.mails) for r in rates.values()] == [
        ("vip_early_access", 2, 10), ("birthday", 5, 10), ("thank_you", 1, 10)]
    assert found == significance(5, 10, 2, 10)


def test_conversions_count_the_test_mails_credited_with_an_order(conn: Connection) -> None:
    cid, _ = ab_started(conn, 4, "99%", "conversions")
    sent = send_all(conn, cid, T0)
    [buyer] = [m for m in sent if m.variant == "vip_early_access"][:1]
    add_order(conn, buyer.customer_id, T0 + timedelta(hours=2), "30.00", currency="EUR")
    add_order(conn, buyer.customer_id, T0 + timedelta(hours=3), "20.00", currency="EUR")
    winner, rates, _ = choose_winner(conn, cid, "conversions")
    assert winner == "vip_early_access"
    assert (rates[winner].successes, rates[winner].mails) == (1, 2)  # one mail, two orders


def _scheduled(app: App, text: str = AB) -> None:
    located = loads(text, "campaigns/spring.yaml")
    spec = parse_spec(located, "spring", Context.from_folders(app.settings.templates_dir,
                                                               {"vip"}))
    now = app.clock.now()
    with app.engine.begin() as conn:
        Campaigns(conn).create(spec, located.data, "max@shop.example", "test", now)
        Campaigns(conn).schedule("spring", spec, "max@shop.example", now)


def _state(app: App) -> tuple[str | None, Counter[tuple[str | None, str]], list[str]]:
    """(the winner, mails by variant and status, the winner's history entries)."""
    with app.engine.connect() as conn:
        winner = conn.execute(select(Campaign.winner)).scalar()
        mails = Counter(conn.execute(select(Message.variant, Message.status)).all())
        history = list(conn.execute(select(CampaignChange.detail).where(
            CampaignChange.action == "winner")).scalars())
    return winner, mails, history


def test_the_scheduler_sends_the_winner_by_human_opens_to_the_rest_once_after_the_test_time(
        app: App) -> None:
    _vips(app, 10)
    _scheduled(app)
    assert tick(app) == 1
    with app.engine.begin() as conn:
        cid = conn.execute(select(Campaign.id)).scalar_one()
        sent = send_all(conn, cid, app.clock.now())
        assert len(sent) == 4
        for m in sent:
            if m.variant == "vip_early_access":  # privacy proxies open these: not people
                event(conn, m.customer_id, m.id, "email_machine_opened", app.clock.now())
        human = next(m for m in sent if m.variant == "birthday")
        event(conn, human.customer_id, human.id, "email_opened", app.clock.now())
    app.clock.advance(timedelta(hours=3, minutes=59))
    tick(app)
    assert _state(app)[0] is None  # not yet
    app.clock.advance(timedelta(minutes=1))
    tick(app)
    tick(app)  # a second tick, or a second scheduler: nothing more
    winner, mails, history = _state(app)
    assert winner == "birthday"
    assert mails == {("vip_early_access", "sent"): 2, ("birthday", "sent"): 2,
                     ("birthday", "scheduled"): 6}
    [detail] = history
    assert detail.startswith("winner birthday (the leader); human opens: vip_early_access 0 of "
                             "2 (0.0 %), birthday 1 of 2 (50.0 %); too few mails to tell")
    assert detail.endswith("6 mails written to the rest")
    with app.engine.begin() as conn:
        row = Campaigns(conn).get("spring")
        assert row.winner_due_at is None and row.mailed == 10
        spec = parse_spec(loads(AB, "x"), "spring", Context.from_folders(
            app.settings.templates_dir, {"vip"}))
        assert release_winner(conn, row, spec, rules_of(app), app.clock.now()) is None
    assert _state(app)[1][("birthday", "scheduled")] == 6


def test_a_paused_campaign_s_winner_waits_for_its_resume(app: App) -> None:
    _vips(app, 10)
    _scheduled(app)
    tick(app)
    with app.engine.begin() as conn:
        Campaigns(conn).pause("spring", "max@shop.example", app.clock.now())
    app.clock.advance(timedelta(hours=5))
    tick(app)
    winner, mails, _ = _state(app)
    assert winner is None and sum(mails.values()) == 4
    with app.engine.begin() as conn:
        Campaigns(conn).resume("spring", parse_spec(loads(AB, "x"), "spring", Context.from_folders(
            app.settings.templates_dir, {"vip"})), "max@shop.example", app.clock.now())
    tick(app)
    assert _state(app)[0] is None  # no test mail has gone yet: a winner now would be a guess
    with app.engine.begin() as conn:
        [cid] = conn.execute(select(Campaign.id)).scalars().all()
        send_all(conn, cid, app.clock.now())
    tick(app)
    winner, mails, history = _state(app)
    assert winner == "vip_early_access"  # a tie (nobody opened): the variant listed first
    assert mails[("vip_early_access", "scheduled")] == 6 and len(history) == 1


def test_a_manager_may_choose_the_winner_before_the_test_time(conn: Connection) -> None:
    cid, text = ab_started(conn, 10, "20%", "clicks")
    campaigns, s, soon = Campaigns(conn), spec(text), T0 + timedelta(hours=1)
    with pytest.raises(CampaignError, match="has no variant 'thank_you'; its variants are "
                                            "vip_early_access, birthday"):
        release_winner(conn, campaigns.get("spring"), s, RULES, soon, winner="thank_you",
                       by="max@shop.example")
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    sqlevent.listen(conn, "before_cursor_execute", seen)
    release = release_winner(conn, campaigns.get("spring"), s, RULES, soon, winner="birthday",
                             by="max@shop.example")
    sqlevent.remove(conn, "before_cursor_execute", seen)
    assert sum("INSERT INTO messages" in q for q in statements) == 1  # one INSERT … SELECT
    assert release is not None and (release.winner, release.written) == ("birthday", 8)
    rest = conn.execute(select(Message.template, Message.variant, Message.due_at).where(
        Message.campaign_id == cid, Message.template == "birthday")).all()
    assert len(rest) == 9 and {r.variant for r in rest} == {"birthday"}
    change = conn.execute(select(CampaignChange.changed_by, CampaignChange.detail).where(
        CampaignChange.action == "winner")).one()
    assert change.changed_by == "max@shop.example"
    assert change.detail.startswith("winner birthday (chosen by hand); clicks:")
    assert "too few mails to tell" in change.detail
    row = campaigns.get("spring")
    assert (row.winner, row.winner_due_at, row.mailed) == ("birthday", None, 10)
    assert release_winner(conn, row, s, RULES, T0 + timedelta(hours=4)) is None
    with pytest.raises(CampaignError, match="has its winner already: birthday"):
        release_winner(conn, row, s, RULES, soon, winner="vip_early_access", by="sue@x.example")
    assert campaigns.finish_settled(soon) == []  # the rest's mails are still to go


def test_a_campaign_without_an_ab_test_has_no_winner_to_choose(conn: Connection) -> None:
    member(conn, "ann", "loyal")
    started(conn, SPRING)
    with pytest.raises(CampaignError, match="has no A/B test"):
        release_winner(conn, Campaigns(conn).get("spring"), spec(SPRING), RULES, T0,
                       winner="birthday", by="max@shop.example")


def test_two_schedulers_releasing_at_once_mail_the_rest_once(app: App) -> None:
    """The second waits on the first's conditional update (PostgreSQL: a row lock; SQLite:
    the write lock) and, once the first commits, finds the winner set: it writes nothing."""
    _vips(app, 10)
    _scheduled(app)
    tick(app)
    app.clock.advance(timedelta(hours=4))
    s = parse_spec(loads(AB, "x"), "spring", Context.from_folders(app.settings.templates_dir,
                                                                   {"vip"}))
    rules, now = rules_of(app), app.clock.now()
    with app.engine.connect() as conn:
        row = Campaigns(conn).get("spring")
    found: dict[str, object] = {}
    released, commit = threading.Event(), threading.Event()

    def scheduler(name: str, hold: bool) -> None:
        with app.engine.begin() as conn:
            found[name] = release_winner(conn, row, s, rules, now)
            if hold:
                released.set()
                commit.wait(60)

    first = threading.Thread(target=scheduler, args=("first", True))
    first.start()
    assert released.wait(60)
    second = threading.Thread(target=scheduler, args=("second", False))
    second.start()
    if app.engine.dialect.name == "postgresql":  # the second is at the update, waiting
        with app.engine.connect() as conn:
            while not conn.execute(text("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
                                   ).scalar():
                assert second.is_alive() and first.is_alive()
                conn.commit()
                time.sleep(0.01)
    commit.set()
    first.join(60)
    second.join(60)
    assert found["first"] is not None and found["second"] is None
    winner, mails, history = _state(app)
    assert sum(mails.values()) == 10 and len(history) == 1


def test_a_winner_whose_spec_no_longer_parses_waits_with_the_problem_logged(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    _vips(app, 10)
    _scheduled(app)
    tick(app)
    with app.engine.begin() as conn:
        broken = loads(AB.replace("template: birthday", "template: gone"), "x").data
        conn.execute(update(Campaign).values(spec=broken))
    app.clock.advance(timedelta(hours=4))
    with caplog.at_level(logging.ERROR):
        tick(app)
    assert _state(app)[0] is None and sum(_state(app)[1].values()) == 4
    assert "Campaign spring cannot send its A/B test's winner: unknown template 'gone'" in \
        caplog.text
