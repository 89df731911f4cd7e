"""The insights measures on a shop worked out by hand (tests/insights_data.py), as of
2026-06-01 00:00 UTC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Connection

from lifecycle.insights import report
from lifecycle.insights.measures import attribution, cohorts, nps, repurchase, stages
from tests.factories import add_customer, add_order
from tests.insights_data import AS_OF, at, shop


def test_the_repurchase_rate_counts_buyers_with_a_second_completed_order(conn: Connection
                                                                          ) -> None:
    shop(conn)
    found = repurchase(conn, AS_OF)
    assert (found.buyers, found.repeat_buyers, found.rate) == (5, 3, Decimal("0.6000"))


def test_the_rate_within_n_days_counts_only_buyers_whose_first_order_is_that_old(
        conn: Connection) -> None:
    shop(conn)
    within = {w.days: (w.eligible, w.repeated, w.rate) for w in repurchase(conn, AS_OF).within}
    assert within == {30: (3, 1, Decimal("0.3333")), 90: (3, 1, Decimal("0.3333")),
                      180: (0, 0, None), 365: (0, 0, None)}


def test_time_to_second_order_has_its_median_and_distribution(conn: Connection) -> None:
    shop(conn)
    found = repurchase(conn, AS_OF)
    assert found.median_days == Decimal("10.00")  # Dee 1, Ann 10, Bob 120.5
    assert [(b.label, b.buyers) for b in found.distribution] == [
        ("0–7 days", 1), ("7–30 days", 1), ("30–90 days", 0), ("90–180 days", 1),
        ("180–365 days", 0), ("over 365 days", 0)]


def test_an_even_number_of_repeat_buyers_takes_the_mean_of_the_middle_two(
        conn: Connection) -> None:
    shop(conn)
    # on 2026-05-10 Bob and Dee had no second order yet: Ann's 10 days is the only gap;
    # on 2026-05-20 12:00 neither has Dee: Ann 10 and Bob 120.5 → 65.25
    assert repurchase(conn, at(5, 10)).median_days == Decimal("10.00")
    assert repurchase(conn, at(5, 20, 12)).median_days == Decimal("65.25")


def test_every_figure_is_as_of_the_moment_asked(conn: Connection) -> None:
    shop(conn)
    early = repurchase(conn, at(1, 21))
    assert (early.buyers, early.repeat_buyers) == (2, 1)
    assert repurchase(conn, at(1, 1)).buyers == 0 and repurchase(conn, at(1, 1)).rate is None


def test_cohorts_give_the_share_still_buying_and_revenue_per_customer_by_month(
        conn: Connection) -> None:
    shop(conn)
    found = cohorts(conn, AS_OF, "USD", months=6)
    table = {c.month: (c.size, [(cell.k, cell.active, c.share(cell), cell.revenue,
                                 c.revenue_per_customer(cell)) for cell in c.cells if cell.active])
             for c in found.cohorts}
    assert table == {
        "2026-01": (2, [(0, 2, Decimal("1.0000"), Decimal("190.00"), Decimal("95.00")),
                        (2, 1, Decimal("0.5000"), Decimal("30.00"), Decimal("15.00")),
                        (4, 1, Decimal("0.5000"), Decimal("60.00"), Decimal("30.00"))]),
        "2026-03": (1, [(0, 1, Decimal("1.0000"), Decimal("0.00"), Decimal("0.00"))]),
        "2026-05": (2, [(0, 2, Decimal("1.0000"), Decimal("60.00"), Decimal("30.00"))])}
    assert [len(c.cells) for c in found.cohorts] == [6, 4, 2]  # up to June, zeros included
    assert [(x.currency, x.orders, x.total) for x in found.left_out] == [
        ("EUR", 1, Decimal("70.00"))]


def test_cohorts_older_than_the_months_asked_are_left_out(conn: Connection) -> None:
    shop(conn)
    assert [c.month for c in cohorts(conn, AS_OF, "USD", months=3).cohorts] == ["2026-05"]
    assert cohorts(conn, AS_OF, "USD", months=3).left_out == []  # Cy's cohort is out


def test_historic_clv_adds_revenue_per_customer_up_by_cohort_age(conn: Connection) -> None:
    shop(conn)
    found = report(conn, AS_OF, "USD", timedelta(days=7), months=6).clv
    assert dict(found.by_cohort[i][::2] for i in range(3)) == {
        "2026-01": [Decimal(v) for v in ("95.00", "95.00", "110.00", "110.00", "140.00",
                                          "140.00")],
        "2026-03": [Decimal("0.00")] * 4, "2026-05": [Decimal("30.00")] * 2}
    # month by month over the cohorts whose month k has ended by June, per customer buying
    # in USD (Cy paid in euros): 250/4, +0/2, +30/2, +0/2, +60/2
    assert found.overall == [(0, 4, Decimal("62.50")), (1, 2, Decimal("62.50")),
                             (2, 2, Decimal("77.50")), (3, 2, Decimal("77.50")),
                             (4, 2, Decimal("107.50"))]


def test_nps_per_month_is_promoters_minus_detractors_with_the_answers_counted(
        conn: Connection) -> None:
    shop(conn)
    found = nps(conn, AS_OF, months=3)
    assert [(m.month, m.answers, m.promoters, m.passives, m.detractors, m.score)
            for m in found.months] == [
        ("2026-04", 4, 2, 1, 1, Decimal("25.0")), ("2026-05", 1, 0, 0, 1, Decimal("-100.0")),
        ("2026-06", 0, 0, 0, 0, None)]
    assert [(c.customer_id, c.score, c.comment) for c in found.months[0].comments] == [
        ("dee", 3, "Late parcel"), ("ann", 10, "Lovely tea")]


def test_revenue_by_retention_stage_uses_the_stage_each_customer_was_in_then(
        conn: Connection) -> None:
    shop(conn)
    found = stages(conn, AS_OF, "USD", days=365)
    rows = {r.stage: (r.customers, r.buyers, r.payers, r.orders, r.revenue) for r in found.rows
            if r.customers}
    assert rows == {"at_risk": (1, 1, 1, 3, Decimal("180.00")),
                    "repeat": (1, 1, 1, 2, Decimal("100.00")),
                    "new": (1, 1, 0, 0, Decimal("0.00")),  # Cy paid in euros
                    "prospect": (1, 0, 0, 0, Decimal("0.00")),
                    "": (2, 2, 2, 3, Decimal("60.00"))}  # Dee and Gus: no stage recorded
    assert found.revenue == Decimal("340.00")
    assert found.share(found.rows[[r.stage for r in found.rows].index("at_risk")]) == \
        Decimal("0.5294")
    assert [(x.currency, x.orders) for x in found.left_out] == [("EUR", 1)]
    earlier = {r.stage: r.customers for r in stages(conn, at(3, 1), "USD").rows if r.customers}
    assert earlier == {"repeat": 1, "new": 2, "prospect": 1}


def test_flows_and_campaigns_share_of_revenue_is_by_last_touch_counted_once(
        conn: Connection) -> None:
    shop(conn)
    found = attribution(conn, AS_OF, "USD", timedelta(days=7), days=365)
    assert [(r.kind, r.name, r.orders, r.revenue) for r in found.rows] == [
        ("flow", "welcome", 2, Decimal("150.00")),  # the click on it came after spring's mail
        ("campaign", "spring", 1, Decimal("60.00")),
        ("rest", "", 5, Decimal("130.00"))]  # win-back's mail was 7 days before: too early
    assert (found.share("flow"), found.share("campaign"), found.share("rest")) == (
        Decimal("0.4412"), Decimal("0.1765"), Decimal("0.3824"))
    assert found.total() == Decimal("340.00") and found.orders() == 8
    assert [(x.currency, x.orders, x.total) for x in found.left_out] == [
        ("EUR", 1, Decimal("70.00"))]


def test_a_longer_window_credits_the_earlier_mail(conn: Connection) -> None:
    shop(conn)
    found = attribution(conn, AS_OF, "USD", timedelta(days=8), days=365)
    assert ("flow", "win_back", 1, Decimal("30.00")) in [
        (r.kind, r.name, r.orders, r.revenue) for r in found.rows]


def test_the_report_gives_every_table_as_csv_rows_and_as_json(conn: Connection) -> None:
    shop(conn)
    found = report(conn, AS_OF, "USD", timedelta(days=7), months=6)
    header, rows = found.table("repurchase")
    assert header == ["measure", "days", "buyers", "repeat_buyers", "rate"]
    assert rows[0] == ["overall", "", 5, 3, "0.6000"]
    assert found.table("nps-comments")[1][0][3:] == [3, "Late parcel"]
    data = found.to_json()
    assert data["attribution"]["totals"][0] == {"kind": "flow", "orders": 2,
                                                "revenue": "150.00",
                                                "share_of_revenue": "0.4412"}


def test_months_are_calendar_months_in_the_shops_zone(conn: Connection) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tests.factories import add_customer, add_order, add_touchpoint

    york = ZoneInfo("America/New_York")
    late = add_customer(conn, "late", at(1, 1))  # 23:30 on 31 March in New York: 04:30 UTC
    add_order(conn, late, datetime(2026, 3, 31, 23, 30, tzinfo=york), 40)
    add_order(conn, late, datetime(2026, 4, 30, 23, 30, tzinfo=york), 10)
    early = add_customer(conn, "early", at(1, 1))  # 00:30 on 1 April there: still March in UTC
    add_order(conn, early, datetime(2026, 4, 1, 0, 30, tzinfo=york), 25)
    add_touchpoint(conn, late, "feedback", datetime(2026, 3, 31, 23, 30, tzinfo=york), score=9)
    add_touchpoint(conn, early, "feedback", datetime(2026, 4, 1, 0, 30, tzinfo=york), score=2)
    as_of = datetime(2026, 5, 1, tzinfo=york)  # the start of May there: 04:00 UTC
    found = cohorts(conn, as_of, "USD", months=3, zone="America/New_York")
    assert [(c.month, c.size, [(x.active, x.revenue) for x in c.cells])
            for c in found.cohorts] == [
        ("2026-03", 1, [(1, Decimal("40.00")), (1, Decimal("10.00")), (0, Decimal("0.00"))]),
        ("2026-04", 1, [(1, Decimal("25.00")), (0, Decimal("0.00"))])]
    answers = nps(conn, as_of, months=3, zone="America/New_York").months
    assert [(m.month, m.promoters, m.detractors) for m in answers] == [
        ("2026-03", 1, 0), ("2026-04", 0, 1), ("2026-05", 0, 0)]
    clv = report(conn, as_of, "USD", timedelta(days=7), months=3, zone="America/New_York").clv
    assert clv.overall == [(0, 2, Decimal("32.50")), (1, 1, Decimal("42.50"))]  # 32.50 + 10 / 1


def test_amounts_per_customer_are_per_customer_buying_in_the_reporting_currency(
        conn: Connection) -> None:
    usd = add_customer(conn, "usd", at(1, 1))
    eur = add_customer(conn, "eur", at(1, 1))
    add_order(conn, usd, at(1, 10), 100)
    add_order(conn, eur, at(1, 12), 50, currency="EUR")
    add_order(conn, eur, at(1, 14), 50, currency="EUR")
    found = report(conn, at(3, 1), "USD", timedelta(days=7), months=3, days=365)
    january = found.cohorts.cohorts[0]
    assert (january.size, january.payers) == (2, 1)  # both share-still-buying, one in USD
    assert january.share(january.cells[0]) == Decimal("1.0000")
    assert january.revenue_per_customer(january.cells[0]) == Decimal("100.00")  # not 50.00
    assert found.clv.by_cohort[0] == ("2026-01", 1, [Decimal("100.00")] * 3)
    assert found.clv.overall[0] == (0, 1, Decimal("100.00"))
    none = {r.stage: r for r in found.stages.rows}[""]
    assert (none.customers, none.buyers, none.payers, none.orders, none.revenue,
            none.revenue_per_customer) == (2, 2, 1, 1, Decimal("100.00"), Decimal("100.00"))
    assert [(x.currency, x.orders) for x in found.stages.left_out] == [("EUR", 2)]


def test_all_cohorts_historic_clv_never_goes_down_with_age(conn: Connection) -> None:
    # January's one customer spent 10, February's 100: pooling only the cohorts old enough
    # for each age gave 55.00 at +0 (both) and 10.00 at +1 (January alone)
    early = add_customer(conn, "early", at(1, 1))
    late = add_customer(conn, "late", at(1, 1))
    add_order(conn, early, at(1, 10), 10)
    add_order(conn, late, at(2, 10), 100)
    found = report(conn, at(3, 1), "USD", timedelta(days=7), months=3).clv
    assert found.overall == [(0, 2, Decimal("55.00")), (1, 1, Decimal("55.00"))]
    shop(conn)
    for as_of in (at(3, 1), at(4, 15), AS_OF, at(7, 1)):
        found = report(conn, as_of, "USD", timedelta(days=7), months=6).clv
        rows = [[v for _k, _n, v in found.overall], *(v for _m, _n, v in found.by_cohort)]
        assert rows[0], as_of
        for row in rows:
            assert row == sorted(row), (as_of, row)
