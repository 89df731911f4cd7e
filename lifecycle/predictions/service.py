"""Predictions from the shop's own orders: summarise in SQL, fit, score, store.

What the models see (set-based SQL, the same on SQLite and PostgreSQL):

- a *purchase day* is a day (in the shop's time zone, ``LIFECYCLE_TIMEZONE``) with at least
  one completed order up to ``as_of``; several orders on one day are one purchase, as in
  the papers;
- per buyer, in days: ``x`` = purchase days after the first, ``t_x`` = first to last
  purchase day, ``T`` = first purchase day to the day of ``as_of``;
- a purchase day's *value* is what its completed orders in the reporting currency
  (``LIFECYCLE_CURRENCY``) add up to; days whose value is zero (only other currencies, or
  free orders) carry none; the value model sees each buyer's repeat days with a value
  (``n_value``) and their sum (``value_sum``; the first day is left out, as in the paper).

The fit takes the distinct ``(x, t_x, T)`` rows with their counts; scoring computes the
predictions once per distinct row in Python and writes every buyer's in one
``INSERT … SELECT`` joining the buyers to those rows; the order value and CLV are computed
in SQL from the buyer's ``value_sum`` (exact decimals on PostgreSQL).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from babel.numbers import get_currency_precision
from sqlalchemy import Connection, bindparam, insert, select, text

from lifecycle.models import Order, OrderStatus
from lifecycle.models.base import UTCDateTime
from lifecycle.predictions.model import (
    CORRELATION_WARNING,
    MIN_CUSTOMERS,
    MIN_REPEAT_BUYERS,
    BgNbd,
    FitFailed,
    Floats,
    GammaGamma,
    fit_bgnbd,
    fit_gamma_gamma,
)
from lifecycle.predictions.models import CustomerPrediction, PredictionFit
from lifecycle.timeutil import is_timezone, zone

log = logging.getLogger(__name__)

BUYERS_TABLE = "lc_pred_buyers"
ROWS_TABLE = "lc_pred_rows"
#: Days of the predicted CLV (12 months).
CLV_DAYS = 365
#: Day numbers count from this date (both backends).
EPOCH = date(2000, 1, 1)
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-/]+$")


@dataclass(frozen=True)
class Options:
    """What a fit is made in: the reporting currency, the shop's time zone, the horizon
    of the expected orders (days) and the fewest buyers."""

    currency: str = "USD"
    timezone: str = "UTC"
    horizon_days: int = 90
    min_customers: int = MIN_CUSTOMERS
    min_value_customers: int = MIN_REPEAT_BUYERS

    def __post_init__(self) -> None:
        if not (len(self.currency) == 3 and self.currency.isalpha() and self.currency.isupper()):
            raise ValueError(f"not a currency code: {self.currency!r}")  # it goes in the SQL
        if not (_ZONE_NAME.match(self.timezone) and is_timezone(self.timezone)):
            raise ValueError(f"not an IANA time zone: {self.timezone!r}")

    @classmethod
    def of(cls, settings: Any) -> Options:
        """The options of a process's :class:`lifecycle.config.Settings`."""
        return cls(settings.currency, settings.timezone, settings.prediction_horizon_days)


@dataclass
class Fit:
    """A fit's outcome: the models, or ``reason`` (in words) why there are none."""

    as_of: datetime
    options: Options
    customers: int
    bgnbd: BgNbd | None = None
    value: GammaGamma | None = None
    status: str = "fitted"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    fit_id: int | None = None
    scored: int = 0
    seconds: float = 0.0
    #: Seconds of each part: ``summary`` (the SQL), ``fit`` (the models), ``score`` (with
    #: ``delete``, ``compute``, ``rows`` and ``insert`` of it).
    timings: dict[str, float] = field(default_factory=dict)
    #: The distinct ``(x, t_x, T, count)`` the fit was made on (scoring reuses them).
    rows: Any = field(default=None, repr=False)

    @property
    def fitted(self) -> bool:
        return self.bgnbd is not None and self.value is not None

    def as_json(self) -> dict[str, Any]:
        """The fit for ``--json``: parameters, time unit, log-likelihood, customers."""
        out: dict[str, Any] = {"status": self.status, "reason": self.reason,
                               "as_of": self.as_of.isoformat(), "customers": self.customers,
                               "time_unit": "day", "currency": self.options.currency,
                               "horizon_days": self.options.horizon_days, "notes": self.notes}
        if self.bgnbd is not None:
            m = self.bgnbd
            out.update(r=m.r, alpha=m.alpha, a=m.a, b=m.b, log_likelihood=m.log_likelihood)
        if self.value is not None:
            v = self.value
            out.update(p=v.p, q=v.q, gamma=v.gamma, value_customers=v.customers,
                       value_log_likelihood=v.log_likelihood, correlation=v.correlation)
        if self.fit_id is not None:
            out.update(fit_id=self.fit_id, scored=self.scored)
        return out


# --------------------------------------------------------------------------- SQL


def local_day(conn: Connection, column: str, tz: str) -> str:
    """SQL: the day number (days since 2000-01-01) of the stored instant ``column`` in the
    time zone ``tz`` (checked: it is written into the SQL)."""
    if not (_ZONE_NAME.match(tz) and is_timezone(tz)):
        raise ValueError(f"not an IANA time zone: {tz!r}")
    if conn.dialect.name == "postgresql":
        return f"(CAST(({column} AT TIME ZONE '{tz}') AS DATE) - DATE '2000-01-01')"
    return f"lifecycle_local_day({column}, '{tz}')"


def day_number(moment: datetime, tz: str) -> int:
    """The day number of ``moment`` in the time zone ``tz``."""
    return (moment.astimezone(zone(tz)).date() - EPOCH).days


def _statement(sql: str) -> Any:
    return text(sql).bindparams(bindparam("as_of", type_=UTCDateTime()))


def buyers_sql(conn: Connection, options: Options) -> str:
    """``SELECT customer_id, x, t_x, big_t, n_value, value_sum`` for every buyer with a
    completed order up to ``:as_of`` (``:as_of_day`` its day number); ``value_sum`` is NULL
    for a buyer with no repeat purchase day with a value."""
    day = local_day(conn, "ordered_at", options.timezone)
    money = f"currency = '{options.currency}'"
    return f"""
        SELECT customer_id, COUNT(*) - 1 AS x, MAX(day) - MIN(day) AS t_x,
               :as_of_day - MIN(day) AS big_t,
               COUNT(CASE WHEN day > first_day AND value > 0 THEN 1 END) AS n_value,
               SUM(CASE WHEN day > first_day AND value > 0 THEN value END) AS value_sum
        FROM (SELECT customer_id, day, value,
                     MIN(day) OVER (PARTITION BY customer_id) AS first_day
              FROM (SELECT customer_id, {day} AS day,
                           SUM(CASE WHEN {money} THEN total ELSE 0 END) AS value
                    FROM orders WHERE status = 'completed' AND ordered_at <= :as_of
                    GROUP BY customer_id, {day}) AS days) AS marked
        GROUP BY customer_id"""


def summarise(conn: Connection, as_of: datetime, options: Options) -> int:
    """Fill the temporary table :data:`BUYERS_TABLE` with every buyer's summary as of
    ``as_of``; the number of buyers."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {BUYERS_TABLE}")
    number = "NUMERIC" if conn.dialect.name == "postgresql" else "REAL"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {BUYERS_TABLE} (customer_id BIGINT NOT NULL, "
                         f"x INTEGER NOT NULL, t_x INTEGER NOT NULL, big_t INTEGER NOT NULL, "
                         f"n_value INTEGER NOT NULL, value_sum {number})")
    conn.execute(_statement(f"INSERT INTO {BUYERS_TABLE} {buyers_sql(conn, options)}"),
                 {"as_of": as_of, "as_of_day": day_number(as_of, options.timezone)})
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {BUYERS_TABLE}")
    return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {BUYERS_TABLE}").scalar_one())


def _numbers(conn: Connection, sql: str, width: int) -> np.ndarray:
    """The rows of ``sql`` (numbers only) as a float array, read through the driver's own
    cursor: plain tuples convert to an array twenty times faster than result rows."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        return np.array(cursor.fetchall(), dtype=np.float64).reshape(-1, width)
    finally:
        cursor.close()


def grouped_rows(conn: Connection) -> np.ndarray:
    """The distinct ``(x, t_x, T, count)`` of the summarised buyers."""
    return _numbers(conn, f"SELECT x, t_x, big_t, COUNT(*) FROM {BUYERS_TABLE} "
                          "GROUP BY x, t_x, big_t", 4)


def grouped_values(conn: Connection) -> np.ndarray:
    """The distinct ``(n_value, mean value, count)`` of the buyers with a repeat day with a
    value (the mean as a float: the fit's; money is exact again where it is stored)."""
    real = "DOUBLE PRECISION" if conn.dialect.name == "postgresql" else "REAL"
    return _numbers(conn, f"SELECT n_value, CAST(value_sum AS {real}) / n_value, COUNT(*) "
                          f"FROM {BUYERS_TABLE} WHERE n_value > 0 "
                          "GROUP BY n_value, value_sum", 3)


# --------------------------------------------------------------------------- fit


def fit(conn: Connection, as_of: datetime, options: Options) -> Fit:
    """Summarise the buyers as of ``as_of`` (left in :data:`BUYERS_TABLE`) and fit both
    models; a :class:`Fit` whose ``reason`` says why there are none when they cannot be."""
    started = time.perf_counter()
    n = summarise(conn, as_of, options)
    result = Fit(as_of, options, n)
    result.timings["summary"] = time.perf_counter() - started
    last = conn.execute(select(PredictionFit).where(
        PredictionFit.status == "fitted", PredictionFit.currency == options.currency,
        PredictionFit.timezone == options.timezone, PredictionFit.time_unit == "day")
        .order_by(PredictionFit.id.desc()).limit(1)).first()
    try:
        lap = time.perf_counter()
        rows = result.rows = grouped_rows(conn)
        result.timings["read"] = time.perf_counter() - lap
        result.bgnbd = fit_bgnbd(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], unit="day",
                                 min_customers=options.min_customers,
                                 start=(last.r, last.alpha, last.a, last.b) if last else None)
        result.timings["bgnbd"] = time.perf_counter() - lap - result.timings["read"]
        values = grouped_values(conn)
        result.value = fit_gamma_gamma(values[:, 0], values[:, 1], values[:, 2],
                                       min_customers=options.min_value_customers,
                                       start=(last.p, last.q, last.gamma) if last else None)
    except FitFailed as exc:
        result.bgnbd = result.value = None
        result.reason = str(exc)
        result.status = exc.status
    note = correlation_note(result.value)
    if note:
        result.notes.append(note)
    result.seconds = time.perf_counter() - started
    result.timings["fit"] = result.seconds - result.timings["summary"]
    return result


def correlation_note(value: GammaGamma | None) -> str | None:
    """A note when repeat purchases and mean order value correlate by more than
    :data:`CORRELATION_WARNING` (the value model assumes they do not); else None."""
    if value is None or abs(value.correlation) <= CORRELATION_WARNING:
        return None
    return (f"Repeat purchases and order value correlate ({value.correlation:.2f}); the "
            "order-value model assumes they do not, so expected order values are rough.")


def describe(result: Fit) -> str:
    """The fit in a few lines of words and numbers (the CLI's output)."""
    if not result.fitted:
        return (f"No predictions as of {result.as_of:%Y-%m-%d %H:%M} UTC: {result.reason}")
    m, v = result.bgnbd, result.value
    assert m is not None and v is not None
    lines = [
        f"Fitted as of {result.as_of:%Y-%m-%d %H:%M} UTC on {result.customers} buyers "
        f"(time unit: day).",
        f"BG/NBD: r = {m.r:.4g}, alpha = {m.alpha:.4g}, a = {m.a:.4g}, b = {m.b:.4g}; "
        f"log-likelihood {m.log_likelihood:.1f}.",
        f"Gamma-Gamma ({v.customers} buyers with a repeat purchase, {result.options.currency}): "
        f"p = {v.p:.4g}, q = {v.q:.4g}, gamma = {v.gamma:.4g}; "
        f"frequency/value correlation {v.correlation:.2f}.",
    ]
    return "\n".join(lines + result.notes)


# --------------------------------------------------------------------------- scoring


def _minor_units(currency: str) -> int:
    return int(get_currency_precision(currency))


def record(conn: Connection, result: Fit, now: datetime) -> int:
    """Store ``result`` as a ``prediction_fits`` row; its id."""
    m, v = result.bgnbd, result.value
    row: dict[str, Any] = {
        "as_of": result.as_of, "fitted_at": now, "status": result.status,
        "reason": result.reason if result.reason else ("\n".join(result.notes) or None),
        "time_unit": "day", "currency": result.options.currency,
        "timezone": result.options.timezone, "horizon_days": result.options.horizon_days,
        "customers": result.customers, "seconds": result.seconds,
    }
    if m is not None and v is not None:
        row.update(r=m.r, alpha=m.alpha, a=m.a, b=m.b, log_likelihood=m.log_likelihood,
                   p=v.p, q=v.q, gamma=v.gamma, value_customers=v.customers,
                   value_log_likelihood=v.log_likelihood, correlation=v.correlation)
    return int(conn.execute(insert(PredictionFit).values(**row)
                            .returning(PredictionFit.id)).scalar_one())


def score(conn: Connection, result: Fit, fit_id: int) -> int:
    """Replace every buyer's prediction by ``result``'s (the buyers summarised by
    :func:`fit`); the number scored.  A fit without models deletes them all: numbers
    nobody should trust are not kept."""
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.timings[name] = now - clock
        clock = now

    conn.execute(CustomerPrediction.__table__.delete())
    lap("delete")
    if not result.fitted:
        return 0
    m, v, options = result.bgnbd, result.value, result.options
    assert m is not None and v is not None
    rows = result.rows if result.rows is not None else grouped_rows(conn)
    x, t_x, big_t = rows[:, 0], rows[:, 1], rows[:, 2]
    alive = m.p_alive(x, t_x, big_t)
    horizon = m.expected_purchases(options.horizon_days, x, t_x, big_t)
    year = m.expected_purchases(CLV_DAYS, x, t_x, big_t)
    span = m.next_purchase_in(x, t_x, big_t)
    lap("compute")
    # Days to the next order: none when not likelier than not, or past a hundred years.
    span = np.where(np.isfinite(span) & (span < 36500), span, np.nan)
    _write_rows(conn, rows[:, :3].astype(np.int64), alive, horizon, year, span)
    lap("rows")
    digits = _minor_units(options.currency)
    pg = conn.dialect.name == "postgresql"
    p, q, g = (f"CAST('{value!r}' AS NUMERIC)" if pg else repr(value) for value in (v.p, v.q, v.gamma))
    value = (f"ROUND({p} * ({g} + COALESCE(b.value_sum, 0)) / ({p} * b.n_value + {q} - 1), "
             f"{digits})")
    year_orders = "CAST(r.year_orders AS NUMERIC)" if pg else "r.year_orders"
    if pg:
        next_at = "CAST(:as_of AS TIMESTAMPTZ) + r.next_days * INTERVAL '1 day'"
    else:  # in UTCDateTime's text form (microseconds: SQLite writes milliseconds)
        next_at = ("strftime('%Y-%m-%d %H:%M:%f', :as_of, "
                   "'+' || printf('%.6f', r.next_days) || ' days') || '000'")
    inserted = conn.execute(text(f"""
        INSERT INTO customer_predictions (customer_id, fit_id, p_alive, expected_orders,
                                          expected_order_value, predicted_clv,
                                          expected_next_order_at)
        SELECT customer_id, :fit_id, p_alive, expected_orders, value,
               ROUND({year_orders} * value, {digits}),
               CASE WHEN r.next_days IS NOT NULL THEN {next_at} END
        FROM (SELECT b.customer_id, r.p_alive, r.expected_orders, r.year_orders, r.next_days,
                     {value} AS value
              FROM {BUYERS_TABLE} AS b JOIN {ROWS_TABLE} AS r
                ON r.x = b.x AND r.t_x = b.t_x AND r.big_t = b.big_t) AS r""").bindparams(
        bindparam("as_of", type_=UTCDateTime())),
        {"fit_id": fit_id, "as_of": result.as_of}).rowcount
    lap("insert")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ROWS_TABLE}")
    return int(inserted)


def _write_rows(conn: Connection, keys: np.ndarray, alive: Floats, horizon: Floats,
                year: Floats, next_days: Floats) -> None:
    """The predictions of each distinct ``(x, t_x, T)`` into :data:`ROWS_TABLE`: COPY on
    PostgreSQL (a million rows in seconds), one prepared INSERT per row on SQLite;
    ``next_days`` NaN for none."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ROWS_TABLE}")
    pg = conn.dialect.name == "postgresql"
    real = "DOUBLE PRECISION" if pg else "REAL"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {ROWS_TABLE} (x INTEGER NOT NULL, "
                         f"t_x INTEGER NOT NULL, big_t INTEGER NOT NULL, p_alive {real} NOT NULL, "
                         f"expected_orders {real} NOT NULL, year_orders {real} NOT NULL, "
                         f"next_days {real})")
    days = [None if d != d else d for d in next_days.tolist()]  # NaN: none
    values = zip(keys.tolist(), np.nan_to_num(alive).tolist(), np.nan_to_num(horizon).tolist(),
                 np.nan_to_num(year).tolist(), days, strict=True)
    if pg:  # one block of COPY text: a third of the time of a row at a time
        block = "".join(
            f"{x}\t{t_x}\t{big_t}\t{p!r}\t{e!r}\t{y!r}\t"
            f"{chr(92) + 'N' if d is None else repr(d)}\n"
            for (x, t_x, big_t), p, e, y, d in values)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {ROWS_TABLE} FROM STDIN") as copy:
            copy.write(block)
        cursor.close()
        conn.exec_driver_sql(f"ANALYZE {ROWS_TABLE}")
        return
    conn.exec_driver_sql(f"INSERT INTO {ROWS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(x, t_x, big_t, p, e, y, d) for (x, t_x, big_t), p, e, y, d in values])
    conn.exec_driver_sql(f"CREATE INDEX {ROWS_TABLE}_ix ON {ROWS_TABLE} (x, t_x, big_t)")


def refresh(conn: Connection, as_of: datetime, now: datetime, options: Options) -> Fit:
    """Fit as of ``as_of``, store the fit and replace every buyer's prediction, in
    ``conn``'s transaction (the full segment refresh calls this before its segments, so
    the prediction metrics they read are fresh)."""
    started = time.perf_counter()
    result = fit(conn, as_of, options)
    result.fit_id = record(conn, result, now)
    scoring = time.perf_counter()
    result.scored = score(conn, result, result.fit_id)
    result.timings["score"] = time.perf_counter() - scoring
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {BUYERS_TABLE}")
    result.seconds = time.perf_counter() - started
    conn.execute(PredictionFit.__table__.update().where(PredictionFit.id == result.fit_id)
                 .values(seconds=result.seconds))
    if result.fitted:
        log.info("Predictions fitted as of %s on %d buyers and stored for %d in %.1f s.",
                 as_of.isoformat(), result.customers, result.scored, result.seconds)
    else:
        log.info("No predictions as of %s: %s", as_of.isoformat(), result.reason)
    return result


def latest_fit(conn: Connection) -> Any:
    """The latest ``prediction_fits`` row, or None."""
    return conn.execute(select(PredictionFit).order_by(PredictionFit.id.desc()).limit(1)).first()


def for_customer(conn: Connection, customer_id: int) -> dict[str, Any] | None:
    """A customer's stored prediction, JSON-ready (money as text in the fit's currency);
    None if they have none, or have a completed order after the fit's moment (it no longer
    holds; the segments read none either: :data:`lifecycle.segments.sql.PREDICTIONS_JOIN`)."""
    prediction = conn.execute(
        select(CustomerPrediction.p_alive, CustomerPrediction.expected_orders,
               CustomerPrediction.expected_order_value, CustomerPrediction.predicted_clv,
               CustomerPrediction.expected_next_order_at, PredictionFit.horizon_days,
               PredictionFit.currency, PredictionFit.as_of)
        .join(PredictionFit, PredictionFit.id == CustomerPrediction.fit_id)
        .where(CustomerPrediction.customer_id == customer_id)).first()
    if prediction is None:
        return None
    horizon, currency, as_of = prediction.horizon_days, prediction.currency, prediction.as_of
    since = conn.execute(select(Order.id).where(
        Order.customer_id == customer_id, Order.status == OrderStatus.COMPLETED.value,
        Order.ordered_at > as_of).limit(1)).first()
    if since is not None:
        return None
    digits = _minor_units(currency)
    quantum = Decimal(1).scaleb(-digits)
    return {
        "p_alive": round(prediction.p_alive, 4),
        "expected_orders": round(prediction.expected_orders, 3),
        "expected_order_value": str(Decimal(prediction.expected_order_value).quantize(quantum)),
        "predicted_clv": str(Decimal(prediction.predicted_clv).quantize(quantum)),
        "currency": currency,
        "expected_next_order_at": (prediction.expected_next_order_at.isoformat()
                                   if prediction.expected_next_order_at else None),
        "horizon_days": horizon,
        "as_of": as_of.isoformat(),
    }


# --------------------------------------------------------------------------- backtest

#: Calibration repeat purchases from which the backtest's rows are pooled (``7+``).
BACKTEST_TOP = 7


@dataclass
class Backtest:
    """Predicted vs actual repeat purchases (purchase days) in a holdout, for the buyers
    of the calibration period: in total and by their calibration repeat purchases."""

    fit: Fit
    holdout_days: int
    #: ``(label, customers, actual, predicted)`` per number of calibration repeat purchases.
    rows: list[tuple[str, int, int, float]] = field(default_factory=list)

    @property
    def actual(self) -> int:
        return sum(row[2] for row in self.rows)

    @property
    def predicted(self) -> float:
        return sum(row[3] for row in self.rows)

    def as_json(self) -> dict[str, Any]:
        return {"fit": self.fit.as_json(), "holdout_days": self.holdout_days,
                "actual": self.actual, "predicted": round(self.predicted, 2),
                "by_calibration_purchases": [
                    {"repeat_purchases": label, "customers": n, "actual": actual,
                     "predicted": round(predicted, 2)}
                    for label, n, actual, predicted in self.rows]}


def end_of_day(day: date, tz: str) -> datetime:
    """The last instant (to the microsecond) of ``day`` in the time zone ``tz``, in UTC."""
    start = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone(tz))
    return (start - timedelta(microseconds=1)).astimezone(zone("UTC"))


def backtest(conn: Connection, calibration_end: date, holdout_end: date,
             options: Options) -> Backtest:
    """Fit on the orders to the end of ``calibration_end`` and compare each buyer's
    expected purchase days in the holdout (the days after it to the end of
    ``holdout_end``, shop time) with the purchase days they had in it."""
    if holdout_end <= calibration_end:
        raise ValueError("the holdout must end after the calibration period")
    cal = end_of_day(calibration_end, options.timezone)
    end = end_of_day(holdout_end, options.timezone)
    days = (holdout_end - calibration_end).days
    result = fit(conn, cal, options)
    report = Backtest(result, days)
    if not result.fitted:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {BUYERS_TABLE}")
        return report
    day = local_day(conn, "o.ordered_at", options.timezone)
    rows = conn.execute(text(f"""
        SELECT b.x, b.t_x, b.big_t, COUNT(*), SUM(COALESCE(h.days, 0))
        FROM {BUYERS_TABLE} AS b LEFT JOIN (
            SELECT o.customer_id, COUNT(DISTINCT {day}) AS days FROM orders AS o
            WHERE o.status = 'completed' AND o.ordered_at > :cal AND o.ordered_at <= :end
            GROUP BY o.customer_id) AS h ON h.customer_id = b.customer_id
        GROUP BY b.x, b.t_x, b.big_t""").bindparams(
        bindparam("cal", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())),
        {"cal": cal, "end": end}).all()
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {BUYERS_TABLE}")
    data = np.array(rows, dtype=np.float64).reshape(-1, 5)
    assert result.bgnbd is not None
    expected = result.bgnbd.expected_purchases(days, data[:, 0], data[:, 1], data[:, 2])
    buckets = np.minimum(data[:, 0], BACKTEST_TOP).astype(int)
    for k in range(BACKTEST_TOP + 1):
        here = buckets == k
        if not here.any():
            continue
        label = f"{k}+" if k == BACKTEST_TOP else str(k)
        report.rows.append((label, int(data[here, 3].sum()), int(data[here, 4].sum()),
                            float(np.dot(expected[here], data[here, 3]))))
    return report
