"""Predictions from the database: purchase days in the shop's zone, the fit, the stored
predictions (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import Connection, select

from lifecycle.models import CustomerPrediction, PredictionFit
from lifecycle.predictions import service
from lifecycle.predictions.service import Options
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_order
from tests.prediction_factories import simulated_buyers

AS_OF = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)


def _buyers(conn: Connection, options: Options) -> dict[int, tuple]:
    service.summarise(conn, AS_OF, options)
    rows = conn.exec_driver_sql(f"SELECT customer_id, x, t_x, big_t, n_value, value_sum "
                                f"FROM {service.BUYERS_TABLE}").all()
    return {r[0]: (r[1], r[2], r[3], r[4], None if r[5] is None else Decimal(str(r[5])))
            for r in rows}


def test_orders_on_one_day_in_the_shops_zone_are_one_purchase(conn: Connection) -> None:
    ann = add_customer(conn, "ann", AS_OF - timedelta(days=40))
    # 2026-06-01 23:30 and 2026-06-02 09:00 UTC are both 2 June in Auckland (UTC+12).
    add_order(conn, ann, datetime(2026, 6, 1, 23, 30, tzinfo=UTC), "10.00")
    add_order(conn, ann, datetime(2026, 6, 2, 9, 0, tzinfo=UTC), "5.00")
    add_order(conn, ann, datetime(2026, 6, 11, 9, 0, tzinfo=UTC), "7.50")
    add_order(conn, ann, datetime(2026, 6, 20, 9, 0, tzinfo=UTC), "99.00", status="refunded")
    add_order(conn, ann, datetime(2026, 7, 2, 9, 0, tzinfo=UTC), "99.00")  # after as_of
    # as_of (30 June 22:00 UTC) is 1 July in Auckland: T = 2 June .. 1 July = 29 days.
    assert _buyers(conn, Options(timezone="Pacific/Auckland"))[ann] == (1, 9, 29, 1, Decimal("7.5"))
    # In UTC the first two orders are on two days: x = 2, first day 1 June, T = 29.
    assert _buyers(conn, Options(timezone="UTC"))[ann] == (2, 10, 29, 2, Decimal("12.5"))


def test_a_days_value_counts_only_the_reporting_currency_and_the_first_day_none(
        conn: Connection) -> None:
    bob = add_customer(conn, "bob", AS_OF - timedelta(days=90))
    add_order(conn, bob, AS_OF - timedelta(days=60), "500.00")  # first day: no value counted
    add_order(conn, bob, AS_OF - timedelta(days=30), "20.00")
    add_order(conn, bob, AS_OF - timedelta(days=30, hours=1), "9.00", currency="EUR")
    add_order(conn, bob, AS_OF - timedelta(days=10), "40.00", currency="EUR")  # a day, no value
    x, t_x, big_t, n_value, value_sum = _buyers(conn, Options(currency="USD"))[bob]
    assert (x, t_x, big_t, n_value, value_sum) == (2, 50, 60, 1, Decimal("20"))


def test_a_refresh_fits_stores_the_fit_and_predicts_every_buyer(conn: Connection) -> None:
    ids = simulated_buyers(conn, 400, AS_OF)
    result = service.refresh(conn, AS_OF, AS_OF, Options())
    assert result.fitted, result.reason
    assert result.customers == 400 and result.scored == 400
    fit = conn.execute(select(PredictionFit).where(PredictionFit.id == result.fit_id)).one()
    assert (fit.status, fit.time_unit, fit.customers, fit.horizon_days) == ("fitted", "day", 400, 90)
    assert fit.r == pytest.approx(result.bgnbd.r) and fit.gamma == pytest.approx(result.value.gamma)
    assert fit.log_likelihood < 0 and fit.as_of == AS_OF
    assert (fit.currency, fit.timezone, fit.value_customers) == ("USD", "UTC",
                                                                 result.value.customers)
    assert fit.seconds > 0 and fit.fitted_at == AS_OF
    stored = {p.customer_id: p for p in conn.execute(select(CustomerPrediction)).all()}
    assert set(stored) == set(ids)
    # The stored numbers are the models' own, for each buyer.
    summary = _summary_after(conn, Options())
    m, v = result.bgnbd, result.value
    for cid in ids[:40]:
        x, t_x, big_t, n_value, value_sum = summary[cid]
        p = stored[cid]
        assert p.p_alive == pytest.approx(m.p_alive(x, t_x, big_t)[0])
        assert p.expected_orders == pytest.approx(m.expected_purchases(90, x, t_x, big_t)[0])
        mean = float(value_sum) / n_value if n_value else 0.0
        value = Decimal(str(round(float(v.expected_value(n_value, mean)[0]), 2)))
        assert abs(p.expected_order_value - value) <= Decimal("0.01")
        year = m.expected_purchases(365, x, t_x, big_t)[0]
        assert abs(float(p.predicted_clv) - year * float(p.expected_order_value)) < 0.02
        span = m.next_purchase_in(x, t_x, big_t)[0]
        if np.isnan(span):
            assert p.expected_next_order_at is None
        else:
            assert p.expected_next_order_at == pytest.approx(AS_OF + timedelta(days=float(span)),
                                                             abs=timedelta(seconds=1))


def _summary_after(conn: Connection, options: Options) -> dict[int, tuple]:
    return _buyers(conn, options)


def test_a_buyer_who_bought_lately_and_often_is_likelier_alive_than_one_long_silent(
        conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF)
    keen = add_customer(conn, "keen", AS_OF - timedelta(days=200))
    gone = add_customer(conn, "gone", AS_OF - timedelta(days=200))
    for days in (200, 150, 100, 50, 5):
        add_order(conn, keen, AS_OF - timedelta(days=days), "30.00")
    for days in (200, 190, 180, 170, 160):
        add_order(conn, gone, AS_OF - timedelta(days=days), "30.00")
    service.refresh(conn, AS_OF, AS_OF, Options())
    stored = {p.customer_id: p for p in conn.execute(select(CustomerPrediction)).all()}
    assert stored[keen].p_alive > 0.8 > stored[gone].p_alive
    assert stored[keen].expected_orders > stored[gone].expected_orders
    assert stored[keen].predicted_clv > stored[gone].predicted_clv
    assert stored[keen].expected_next_order_at is not None
    assert stored[gone].expected_next_order_at is None  # no likelier than not to come back


def test_too_few_buyers_are_said_plainly_and_leave_no_predictions(conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF)
    assert service.refresh(conn, AS_OF, AS_OF, Options()).scored == 400
    result = service.refresh(conn, AS_OF, AS_OF, Options(min_customers=1000))
    assert result.status == "too_little_data"
    assert result.reason == "Only 400 buyers; predictions need at least 1000."
    assert service.describe(result).endswith("predictions need at least 1000.")
    assert conn.execute(select(CustomerPrediction)).first() is None
    fit = conn.execute(select(PredictionFit).where(PredictionFit.id == result.fit_id)).one()
    assert (fit.status, fit.r, fit.p) == ("too_little_data", None, None)


def test_a_shop_with_only_first_orders_gets_no_predictions(conn: Connection) -> None:
    for i in range(310):
        cid = add_customer(conn, f"one{i}", AS_OF - timedelta(days=100))
        add_order(conn, cid, AS_OF - timedelta(days=i % 90), "10.00")
    result = service.refresh(conn, AS_OF, AS_OF, Options())
    assert result.status == "too_little_data" and "second day" in (result.reason or "")
    assert conn.execute(select(CustomerPrediction)).first() is None


def test_money_is_rounded_to_the_currencys_minor_units(conn: Connection) -> None:
    simulated_buyers(conn, 400, AS_OF, currency="JPY")
    result = service.refresh(conn, AS_OF, AS_OF, Options(currency="JPY"))
    assert result.fitted
    for p in conn.execute(select(CustomerPrediction).limit(50)).all():
        assert p.expected_order_value == p.expected_order_value.to_integral_value()
        assert p.predicted_clv == p.predicted_clv.to_integral_value()
