"""The retention measures, each as of any moment, computed in set-based SQL.

Only **completed** orders count, and only those at or before the moment ``as_of``.  Months
are calendar months in the shop's zone (``LIFECYCLE_TIMEZONE``).  Money is counted in the
shop's reporting currency (``LIFECYCLE_CURRENCY``) as :class:`~decimal.Decimal`; completed
orders in other currencies count as orders (a buyer, a second order, a month with an
order) but never in a sum of money: each measure says how many such orders it left out of
its money, per currency (:attr:`LeftOut`).

* :func:`repurchase` — the share of buyers with a second completed order, overall and
  within 30/90/180/365 days of their first (counting only buyers whose first order is at
  least that many days old), and the time from the first to the second order (median and
  distribution).
* :func:`cohorts` — cohorts by the month of their first order × months since (month 0 is
  the first): the share of the cohort with an order in that month and revenue per cohort
  member; :func:`clv` adds that up into historic CLV, cumulative revenue per customer by
  cohort age.
* :func:`nps` — per month: promoters (9–10), passives (7–8), detractors (0–6), the number
  of answers and NPS = % promoters − % detractors; the comments given with the answers.
* :func:`stages` — revenue of a period by the customers' retention stage as of the moment
  (from the stays recorded in ``segment_memberships``).
* :func:`attribution` — the revenue of a period credited to flows and to campaigns by last
  touch, exactly as :mod:`lifecycle.results` credits conversions (the customer's latest
  mail sent or clicked at most ``window`` before the order; an order counts once), next to
  the rest.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from lifecycle.insights.sql import (
    Flavour,
    micros,
    month_label,
    month_number,
    month_of,
    month_start,
    run,
)
from lifecycle.segments.definitions import STAGES
from lifecycle.timeutil import UTC

#: The "within N days" windows of the repurchase rate.
WITHIN_DAYS = (30, 90, 180, 365)
#: Upper bounds (days, inclusive) of the time-to-second-order distribution; the last bucket
#: is everything above the last bound.
GAP_BUCKETS = (7, 30, 90, 180, 365)
DAY_US = 86_400_000_000
CENT = Decimal("0.01")


def _money(cents: Any) -> Decimal:
    return (Decimal(int(cents or 0)) / 100).quantize(CENT)


def _share(part: int, whole: int) -> Decimal | None:
    """``part / whole`` as a fraction with 4 decimals; None when ``whole`` is 0."""
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001")) if whole else None


@dataclass
class LeftOut:
    """Completed orders in a currency other than the reporting one, kept out of the money."""

    currency: str
    orders: int
    total: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "orders": self.orders, "total": str(self.total)}


def _left_out(conn: Connection, currency: str, as_of: datetime,
              since: datetime | None = None, customers: str = "") -> list[LeftOut]:
    """The completed orders in other currencies at or before ``as_of`` (after ``since``),
    of the customers ``customers`` selects (SQL: ``customer_id IN (…)``), per currency."""
    where = "status = 'completed' AND ordered_at <= :as_of AND currency <> :currency"
    params: dict[str, Any] = {"as_of": as_of, "currency": currency}
    if since is not None:
        where += " AND ordered_at > :since"
        params["since"] = since
    if customers:
        where += f" AND customer_id IN ({customers})"
    rows = run(conn, f"""SELECT currency, COUNT(*) AS n, SUM({Flavour.cents('total')}) AS cents
                         FROM orders WHERE {where} GROUP BY currency ORDER BY currency""",
               **params)
    return [LeftOut(r.currency, int(r.n), _money(r.cents)) for r in rows]


# ------------------------------------------------------------------------- repurchase

@dataclass
class Within:
    """The repurchase rate within ``days`` of the first order."""

    days: int
    #: Buyers whose first order is at least ``days`` old (the denominator).
    eligible: int
    #: Of those, buyers whose second order came at most ``days`` after the first.
    repeated: int

    @property
    def rate(self) -> Decimal | None:
        return _share(self.repeated, self.eligible)


@dataclass
class Bucket:
    """Buyers whose second order came more than ``low`` and at most ``high`` days after the
    first (the first bucket from 0 included; ``high`` None: more than ``low``)."""

    low: int
    high: int | None
    buyers: int

    @property
    def label(self) -> str:
        if self.high is None:
            return f"over {self.low} days"
        return f"{self.low}–{self.high} days"


@dataclass
class Repurchase:
    as_of: datetime
    #: Customers with a completed order.
    buyers: int
    #: Customers with two or more.
    repeat_buyers: int
    within: list[Within]
    #: Median days from the first to the second order (2 decimals); None without repeaters.
    median_days: Decimal | None
    distribution: list[Bucket]

    @property
    def rate(self) -> Decimal | None:
        return _share(self.repeat_buyers, self.buyers)

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "buyers": self.buyers,
                "repeat_buyers": self.repeat_buyers, "rate": _text(self.rate),
                "within": [{"days": w.days, "eligible": w.eligible, "repeated": w.repeated,
                            "rate": _text(w.rate)} for w in self.within],
                "time_to_second_order": {
                    "median_days": _text(self.median_days),
                    "distribution": [{"from_days": b.low, "to_days": b.high,
                                      "buyers": b.buyers} for b in self.distribution]}}

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        rows: list[list[Any]] = [["overall", "", self.buyers, self.repeat_buyers,
                                  _text(self.rate)]]
        rows += [["within", w.days, w.eligible, w.repeated, _text(w.rate)] for w in self.within]
        return ["measure", "days", "buyers", "repeat_buyers", "rate"], rows


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def repurchase(conn: Connection, as_of: datetime) -> Repurchase:
    """The repurchase rate and time to second order as of ``as_of`` (see the module doc).

    A second order at the same instant as the first counts (gap 0 days); orders of one
    instant are taken in row order."""
    f = Flavour.of(conn)
    now_us = micros(as_of)
    params: dict[str, Any] = {"as_of": as_of}
    within_sql = []
    for days in WITHIN_DAYS:
        params[f"old{days}"] = now_us - days * DAY_US
        params[f"gap{days}"] = days * DAY_US
        within_sql.append(
            f"SUM(CASE WHEN first_us <= :old{days} THEN 1 ELSE 0 END) AS eligible{days}, "
            f"SUM(CASE WHEN first_us <= :old{days} AND second_us - first_us <= :gap{days} "
            f"THEN 1 ELSE 0 END) AS repeated{days}")
    bucket_sql, low = [], 0
    for i, high in enumerate(GAP_BUCKETS):
        params[f"b{i}"] = high * DAY_US
        lower = f"second_us - first_us > :b{i - 1} AND " if i else ""
        bucket_sql.append(f"SUM(CASE WHEN {lower}second_us - first_us <= :b{i} "
                          f"THEN 1 ELSE 0 END) AS bucket{i}")
    bucket_sql.append(f"SUM(CASE WHEN second_us - first_us > :b{len(GAP_BUCKETS) - 1} "
                      f"THEN 1 ELSE 0 END) AS bucket{len(GAP_BUCKETS)}")
    pairs = f"""WITH ranked AS (
                  SELECT customer_id, {f.micros('ordered_at')} AS us,
                         ROW_NUMBER() OVER (PARTITION BY customer_id
                                            ORDER BY ordered_at, id) AS n
                  FROM orders WHERE status = 'completed' AND ordered_at <= :as_of),
                pairs AS (
                  SELECT customer_id, MAX(CASE WHEN n = 1 THEN us END) AS first_us,
                         MAX(CASE WHEN n = 2 THEN us END) AS second_us
                  FROM ranked WHERE n <= 2 GROUP BY customer_id)"""
    row = run(conn, f"""{pairs}
                        SELECT COUNT(*) AS buyers, COUNT(second_us) AS repeaters,
                               {', '.join(within_sql)}, {', '.join(bucket_sql)}
                        FROM pairs""", **params)[0]
    middle = run(conn, f"""{pairs},
                           gaps AS (SELECT second_us - first_us AS gap,
                                           ROW_NUMBER() OVER (ORDER BY second_us - first_us)
                                               AS i,
                                           COUNT(*) OVER () AS n
                                    FROM pairs WHERE second_us IS NOT NULL)
                           SELECT MIN(gap) AS low, MAX(gap) AS high FROM gaps
                           WHERE i = (n + 1) / 2 OR i = (n + 2) / 2""", as_of=as_of)[0]
    median = None
    if middle.low is not None:
        median = ((Decimal(int(middle.low)) + Decimal(int(middle.high))) / 2
                  / DAY_US).quantize(CENT)
    buckets, low = [], 0
    for i, high in enumerate((*GAP_BUCKETS, None)):
        buckets.append(Bucket(low, high, int(getattr(row, f"bucket{i}") or 0)))
        low = high or 0
    return Repurchase(as_of, int(row.buyers), int(row.repeaters or 0),
                      [Within(d, int(getattr(row, f"eligible{d}") or 0),
                              int(getattr(row, f"repeated{d}") or 0)) for d in WITHIN_DAYS],
                      median, buckets)


# --------------------------------------------------------------------------- cohorts

@dataclass
class Cell:
    """Cohort members with a completed order in month ``k`` after their first, and the
    revenue of those orders in the reporting currency."""

    k: int
    active: int
    revenue: Decimal


@dataclass
class Cohort:
    month: str  # YYYY-MM (in the shop's zone)
    size: int
    #: One cell per month from 0 to the month of ``as_of`` (zeros where nobody bought).
    cells: list[Cell]
    #: Members with a completed order in the reporting currency at or before ``as_of``: the
    #: denominator of every amount per customer (revenue counts only that currency).
    payers: int = 0

    def share(self, cell: Cell) -> Decimal | None:
        return _share(cell.active, self.size)

    def revenue_per_customer(self, cell: Cell) -> Decimal:
        """The cell's revenue over the members buying in the reporting currency (0.00 if
        none did: then there is no such revenue)."""
        return (cell.revenue / self.payers).quantize(CENT) if self.payers else Decimal("0.00")

    def cumulative(self) -> list[Decimal]:
        """Historic CLV: revenue per member buying in the reporting currency up to the end
        of each month since the first."""
        total, out = Decimal("0"), []
        for cell in self.cells:
            total += cell.revenue
            out.append((total / self.payers).quantize(CENT) if self.payers
                       else Decimal("0.00"))
        return out


@dataclass
class Cohorts:
    as_of: datetime
    currency: str
    months: int
    cohorts: list[Cohort]
    left_out: list[LeftOut] = field(default_factory=list)
    #: The zone whose calendar months these are.
    zone: str = "UTC"

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "currency": self.currency,
                "cohorts": [{"cohort": c.month, "customers": c.size,
                             "customers_buying_in_currency": c.payers, "months": [
                    {"months_since": cell.k, "active": cell.active,
                     "share_active": _text(c.share(cell)), "revenue": str(cell.revenue),
                     "revenue_per_customer": str(c.revenue_per_customer(cell))}
                    for cell in c.cells]} for c in self.cohorts],
                "left_out": [x.to_json() for x in self.left_out]}

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        return (["cohort", "customers", f"customers_buying_in_{self.currency}", "months_since",
                 "active", "share_active", f"revenue_{self.currency}",
                 f"revenue_per_customer_buying_in_{self.currency}"],
                [[c.month, c.size, c.payers, cell.k, cell.active, _text(c.share(cell)),
                  cell.revenue, c.revenue_per_customer(cell)]
                 for c in self.cohorts for cell in c.cells])


def cohorts(conn: Connection, as_of: datetime, currency: str, months: int = 12,
            zone: str = "UTC") -> Cohorts:
    """The cohorts of the last ``months`` months (the month of ``as_of`` included) by month
    of first completed order, each with a cell per month since (see the module doc); months
    are calendar months in ``zone``."""
    f = Flavour.of(conn)
    last = month_number(as_of, zone)
    first_month = last - max(1, months) + 1
    params: dict[str, Any] = {"as_of": as_of, "currency": currency, "from_month": first_month}
    month = month_of("ordered_at", first_month, last, zone, params)
    base = f"""WITH done AS (
                 SELECT customer_id, ordered_at, total, currency, {month} AS m
                 FROM orders WHERE status = 'completed' AND ordered_at <= :as_of),
               firsts AS (SELECT customer_id, MIN(m) AS cohort FROM done GROUP BY customer_id)"""
    counted = run(conn, f"""{base}
        SELECT cohort, COUNT(*) AS n,
               SUM(CASE WHEN customer_id IN (SELECT customer_id FROM done
                                             WHERE currency = :currency)
                        THEN 1 ELSE 0 END) AS payers
        FROM firsts WHERE cohort >= :from_month GROUP BY cohort""", **params)
    sizes = {int(r.cohort): int(r.n) for r in counted}
    payers = {int(r.cohort): int(r.payers or 0) for r in counted}
    found: dict[tuple[int, int], Cell] = {}
    for r in run(conn, f"""{base}
            SELECT cohort, k, COUNT(DISTINCT customer_id) AS active,
                   SUM(CASE WHEN currency = :currency THEN {f.cents('total')} ELSE 0 END)
                       AS cents
            FROM (SELECT d.customer_id, d.total, d.currency, s.cohort, d.m - s.cohort AS k
                  FROM done d JOIN firsts s ON s.customer_id = d.customer_id
                  WHERE s.cohort >= :from_month) AS x
            GROUP BY cohort, k""", **params):
        found[(int(r.cohort), int(r.k))] = Cell(int(r.k), int(r.active), _money(r.cents))
    rows = [Cohort(month_label(m), sizes[m],
                   [found.get((m, k), Cell(k, 0, Decimal("0.00"))) for k in range(last - m + 1)],
                   payers[m])
            for m in sorted(sizes)]
    members = """SELECT customer_id FROM orders WHERE status = 'completed'
                 AND ordered_at <= :as_of GROUP BY customer_id
                 HAVING MIN(ordered_at) >= :since"""
    left = run(conn, f"""SELECT currency, COUNT(*) AS n, SUM({f.cents('total')}) AS cents
                         FROM orders WHERE status = 'completed' AND ordered_at <= :as_of
                         AND currency <> :currency AND customer_id IN ({members})
                         GROUP BY currency ORDER BY currency""",
               as_of=as_of, currency=currency, since=month_start(first_month, zone))
    return Cohorts(as_of, currency, months, rows,
                   [LeftOut(r.currency, int(r.n), _money(r.cents)) for r in left], zone)


# ------------------------------------------------------------------------------- CLV

@dataclass
class Clv:
    """Historic CLV: cumulative revenue per customer buying in the reporting currency by
    cohort age (months since the first order; age k includes month k).

    :attr:`overall` ("all cohorts") chains the months: its value at age k is the sum, over
    each month j ≤ k, of the revenue in month j of the cohorts whose month j has ended by
    ``as_of`` over their customers buying in the reporting currency (the customers pooled
    for month k are listed with it).  Each month adds a revenue per customer of 0 or more,
    so it never decreases along the ages, although fewer cohorts are old enough for the
    later months."""

    as_of: datetime
    currency: str
    by_cohort: list[tuple[str, int, list[Decimal]]]
    #: (age k, customers pooled for month k, cumulative revenue per customer up to age k)
    overall: list[tuple[int, int, Decimal]]
    left_out: list[LeftOut]

    @property
    def pooled(self) -> dict[int, Decimal]:
        """:attr:`overall` as revenue per customer by age."""
        return {k: v for k, _n, v in self.overall}

    @property
    def pooled_customers(self) -> dict[int, int]:
        """The customers buying in the reporting currency pooled for each month k."""
        return {k: n for k, n, _v in self.overall}

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "currency": self.currency,
                "overall": [{"months_since": k, "customers_buying_in_currency": n,
                             "revenue_per_customer": str(v)}
                            for k, n, v in self.overall],
                "cohorts": [{"cohort": month, "customers_buying_in_currency": payers,
                             "revenue_per_customer": [str(v) for v in values]}
                            for month, payers, values in self.by_cohort],
                "left_out": [x.to_json() for x in self.left_out]}

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        rows: list[list[Any]] = [["all", n, k, v] for k, n, v in self.overall]
        rows += [[month, payers, k, v] for month, payers, values in self.by_cohort
                 for k, v in enumerate(values)]
        return ["cohort", f"customers_buying_in_{self.currency}", "months_since",
                f"cumulative_revenue_per_customer_buying_in_{self.currency}"], rows


def clv(found: Cohorts) -> Clv:
    """Historic CLV from the cohort table ``found`` (see :class:`Clv`)."""
    last = month_number(found.as_of, found.zone)
    pooled: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal("0"), Decimal("0")])
    for cohort in found.cohorts:
        year, month = (int(x) for x in cohort.month.split("-"))
        start = year * 12 + month - 1
        for cell in cohort.cells:
            if start + cell.k < last:  # month k has ended
                pooled[cell.k][0] += cell.revenue
                pooled[cell.k][1] += cohort.payers
    overall, running = [], Decimal("0")
    for k, (revenue, n) in sorted(pooled.items()):
        running += revenue / n if n else Decimal("0")
        overall.append((k, int(n), running.quantize(CENT)))
    return Clv(found.as_of, found.currency,
               [(c.month, c.payers, c.cumulative()) for c in found.cohorts], overall,
               found.left_out)


# ------------------------------------------------------------------------------- NPS

@dataclass
class NpsMonth:
    month: str
    promoters: int
    passives: int
    detractors: int
    comments: list[Comment] = field(default_factory=list)

    @property
    def answers(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def score(self) -> Decimal | None:
        """% promoters − % detractors (−100 … 100, one decimal); None without answers."""
        if not self.answers:
            return None
        return (Decimal(100 * (self.promoters - self.detractors)) / self.answers
                ).quantize(Decimal("0.1"))


@dataclass
class Comment:
    at: datetime
    score: int
    comment: str
    customer_id: str  # the shop's customer id


@dataclass
class Nps:
    as_of: datetime
    months: list[NpsMonth]

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "months": [
            {"month": m.month, "answers": m.answers, "promoters": m.promoters,
             "passives": m.passives, "detractors": m.detractors, "nps": _text(m.score),
             "comments": [{"at": c.at.isoformat(), "score": c.score, "comment": c.comment,
                           "customer_id": c.customer_id} for c in m.comments]}
            for m in self.months]}

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        return (["month", "answers", "promoters", "passives", "detractors", "nps"],
                [[m.month, m.answers, m.promoters, m.passives, m.detractors, _text(m.score)]
                 for m in self.months])

    def comments_csv(self) -> tuple[list[str], list[list[Any]]]:
        return (["month", "answered_at", "customer_id", "score", "comment"],
                [[m.month, c.at.isoformat(), c.customer_id, c.score, c.comment]
                 for m in self.months for c in m.comments])


def nps(conn: Connection, as_of: datetime, months: int = 12, zone: str = "UTC") -> Nps:
    """NPS per calendar month in ``zone`` for the last ``months`` months (the month of
    ``as_of`` included): the answers are the ``feedback`` touchpoints (one per mail, the
    latest score) at or before ``as_of``; every month has its row, with or without answers."""
    f = Flavour.of(conn)
    last = month_number(as_of, zone)
    first_month = last - max(1, months) + 1
    params: dict[str, Any] = {"as_of": as_of, "since": month_start(first_month, zone)}
    answers = f"""SELECT t.occurred_at, {month_of('t.occurred_at', first_month, last, zone,
                                                  params)} AS m,
                         {f.json_number('t.data', 'score')} AS score,
                         {f.json_text('t.data', 'comment')} AS comment, c.external_id
                  FROM touchpoints t JOIN customers c ON c.id = t.customer_id
                  WHERE t.kind = 'feedback' AND t.occurred_at <= :as_of
                  AND t.occurred_at >= :since"""
    by_month = {m: NpsMonth(month_label(m), 0, 0, 0) for m in range(first_month, last + 1)}
    for r in run(conn, f"""SELECT m,
            SUM(CASE WHEN score >= 9 THEN 1 ELSE 0 END) AS promoters,
            SUM(CASE WHEN score >= 7 AND score < 9 THEN 1 ELSE 0 END) AS passives,
            SUM(CASE WHEN score < 7 THEN 1 ELSE 0 END) AS detractors
            FROM ({answers}) AS a WHERE score BETWEEN 0 AND 10 GROUP BY m""", **params):
        found = by_month[int(r.m)]
        found.promoters, found.passives = int(r.promoters), int(r.passives)
        found.detractors = int(r.detractors)
    for r in run(conn, f"""SELECT * FROM ({answers}) AS a
            WHERE score BETWEEN 0 AND 10 AND comment IS NOT NULL AND comment <> ''
            ORDER BY occurred_at DESC""", **params):
        by_month[int(r.m)].comments.append(
            Comment(_instant(r.occurred_at), int(r.score), r.comment, r.external_id))
    return Nps(as_of, list(by_month.values()))


def _instant(value: Any) -> datetime:
    """A stored instant read by raw SQL as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---------------------------------------------------------------------------- stages

@dataclass
class StageRow:
    stage: str  # a retention stage, or "" for buyers of the period with none recorded
    customers: int
    buyers: int  # of them, with a completed order in the period (in any currency)
    orders: int  # completed orders of the period in the reporting currency
    revenue: Decimal
    #: Of them, with a completed order in the reporting currency at or before ``as_of``:
    #: the denominator of :attr:`revenue_per_customer`.
    payers: int = 0

    @property
    def revenue_per_customer(self) -> Decimal:
        """Revenue over the customers buying in the reporting currency (0.00 if none)."""
        return (self.revenue / self.payers).quantize(CENT) if self.payers else \
            Decimal("0.00")


@dataclass
class Stages:
    """Revenue of the ``days`` before ``as_of`` by the customers' retention stage as of
    ``as_of`` (their stay open then in ``segment_memberships``)."""

    as_of: datetime
    since: datetime
    currency: str
    rows: list[StageRow]
    left_out: list[LeftOut]

    @property
    def revenue(self) -> Decimal:
        return sum((r.revenue for r in self.rows), Decimal("0.00"))

    def share(self, row: StageRow) -> Decimal | None:
        total = self.revenue
        return (row.revenue / total).quantize(Decimal("0.0001")) if total else None

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "since": self.since.isoformat(),
                "currency": self.currency, "revenue": str(self.revenue),
                "stages": [{"stage": r.stage or None, "customers": r.customers,
                            "buyers": r.buyers, "customers_buying_in_currency": r.payers,
                            "orders": r.orders, "revenue": str(r.revenue),
                            "revenue_per_customer": str(r.revenue_per_customer),
                            "share_of_revenue": _text(self.share(r))} for r in self.rows],
                "left_out": [x.to_json() for x in self.left_out]}

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        c = self.currency
        return (["stage", "customers", "buyers", f"customers_buying_in_{c}", f"orders_{c}",
                 f"revenue_{c}", f"revenue_per_customer_buying_in_{c}", "share_of_revenue"],
                [[r.stage or "none recorded", r.customers, r.buyers, r.payers, r.orders,
                  r.revenue, r.revenue_per_customer, _text(self.share(r))]
                 for r in self.rows])


def stages(conn: Connection, as_of: datetime, currency: str, days: int = 365) -> Stages:
    """Revenue by retention stage (see :class:`Stages`).  Customers whose stage was not
    recorded as of then but who bought in the period are a row of their own."""
    f = Flavour.of(conn)
    since = as_of - timedelta(days=days)
    placeholders = ", ".join(f":s{i}" for i in range(len(STAGES)))
    rows = run(conn, f"""
        WITH stage AS (
          SELECT customer_id, MIN(segment) AS segment FROM segment_memberships
          WHERE segment IN ({placeholders}) AND entered_at <= :as_of
          AND (exited_at IS NULL OR exited_at > :as_of) GROUP BY customer_id),
        spend AS (
          SELECT customer_id,
                 SUM(CASE WHEN currency = :currency THEN 1 ELSE 0 END) AS orders,
                 SUM(CASE WHEN currency = :currency THEN {f.cents('total')} ELSE 0 END)
                     AS cents
          FROM orders WHERE status = 'completed' AND ordered_at > :since
          AND ordered_at <= :as_of GROUP BY customer_id),
        paying AS (
          SELECT DISTINCT customer_id FROM orders WHERE status = 'completed'
          AND currency = :currency AND ordered_at <= :as_of),
        everyone AS (
          SELECT customer_id FROM stage UNION SELECT customer_id FROM spend)
        SELECT COALESCE(s.segment, '') AS stage, COUNT(*) AS customers,
               COUNT(p.customer_id) AS buyers, COALESCE(SUM(p.orders), 0) AS orders,
               COALESCE(SUM(p.cents), 0) AS cents, COUNT(y.customer_id) AS payers
        FROM everyone e LEFT JOIN stage s ON s.customer_id = e.customer_id
        LEFT JOIN spend p ON p.customer_id = e.customer_id
        LEFT JOIN paying y ON y.customer_id = e.customer_id
        GROUP BY COALESCE(s.segment, '')""",
               as_of=as_of, since=since, currency=currency,
               **{f"s{i}": s for i, s in enumerate(STAGES)})
    by_stage = {r.stage: StageRow(r.stage, int(r.customers), int(r.buyers), int(r.orders),
                                  _money(r.cents), int(r.payers)) for r in rows}
    ordered = [by_stage.get(s, StageRow(s, 0, 0, 0, Decimal("0.00"))) for s in STAGES]
    if "" in by_stage:
        ordered.append(by_stage[""])
    return Stages(as_of, since, currency, ordered,
                  _left_out(conn, currency, as_of, since))


# ------------------------------------------------------------------------ attribution

@dataclass
class Credit:
    kind: str  # flow, campaign or rest
    name: str  # the flow's or campaign's name; "" for the rest
    orders: int
    revenue: Decimal


@dataclass
class Attribution:
    """Revenue of the orders in ``(since, as_of]`` by last touch (see the module doc)."""

    as_of: datetime
    since: datetime
    window: timedelta
    currency: str
    rows: list[Credit]
    left_out: list[LeftOut]

    def total(self, kind: str | None = None) -> Decimal:
        return sum((r.revenue for r in self.rows if kind in (None, r.kind)), Decimal("0.00"))

    def orders(self, kind: str | None = None) -> int:
        return sum(r.orders for r in self.rows if kind in (None, r.kind))

    def share(self, kind: str) -> Decimal | None:
        whole = self.total()
        return (self.total(kind) / whole).quantize(Decimal("0.0001")) if whole else None

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "since": self.since.isoformat(),
                "window_days": self.window.total_seconds() / 86400, "currency": self.currency,
                "revenue": str(self.total()), "orders": self.orders(),
                "totals": [{"kind": k, "orders": self.orders(k), "revenue": str(self.total(k)),
                            "share_of_revenue": _text(self.share(k))}
                           for k in ("flow", "campaign", "rest")],
                "by_source": [{"kind": r.kind, "name": r.name, "orders": r.orders,
                               "revenue": str(r.revenue)} for r in self.rows],
                "left_out": [x.to_json() for x in self.left_out]}

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        whole = self.total()
        return (["kind", "name", "orders", f"revenue_{self.currency}", "share_of_revenue"],
                [[r.kind, r.name, r.orders, r.revenue,
                  _text((r.revenue / whole).quantize(Decimal("0.0001")) if whole else None)]
                 for r in self.rows])


def attribution(conn: Connection, as_of: datetime, currency: str, window: timedelta,
                days: int = 365) -> Attribution:
    """Flows', campaigns' and the rest's revenue of the ``days`` before ``as_of``: each
    completed order is credited to the customer's latest mail — of any flow or campaign —
    sent or clicked at or before the order and less than ``window`` before it (ties: the
    later mail id), as :func:`lifecycle.results.tally` credits conversions; an order counts
    once.  The mail's flow or campaign gets the order; an order with no such mail (or whose
    mail is of neither) is the rest."""
    f = Flavour.of(conn)
    since = as_of - timedelta(days=days)
    rows = run(conn, f"""
        WITH sold AS (
          SELECT id, customer_id, ordered_at, {f.micros('ordered_at')} AS us, total, currency
          FROM orders WHERE status = 'completed' AND ordered_at > :since
          AND ordered_at <= :as_of),
        touches AS (
          SELECT customer_id, sent_at AS at, id AS message_id FROM messages
          WHERE status = 'sent' AND sent_at > :touch_from AND sent_at <= :as_of
          UNION ALL
          SELECT t.customer_id, t.occurred_at, t.message_id
          FROM touchpoints t JOIN messages m ON m.id = t.message_id
          WHERE t.kind = 'email_clicked' AND m.status = 'sent'
          AND t.occurred_at > :touch_from AND t.occurred_at <= :as_of),
        ranked AS (
          SELECT o.id AS order_id, x.message_id,
                 ROW_NUMBER() OVER (PARTITION BY o.id
                                    ORDER BY x.at DESC, x.message_id DESC) AS n
          FROM sold o JOIN touches x ON x.customer_id = o.customer_id
          AND x.at <= o.ordered_at AND {f.micros('x.at')} > o.us - :window_us)
        SELECT CASE WHEN m.flow IS NOT NULL THEN 'flow'
                    WHEN m.campaign_id IS NOT NULL THEN 'campaign' ELSE 'rest' END AS kind,
               COALESCE(m.flow, c.name, '') AS name, COUNT(*) AS orders,
               SUM({f.cents('o.total')}) AS cents
        FROM sold o LEFT JOIN ranked r ON r.order_id = o.id AND r.n = 1
        LEFT JOIN messages m ON m.id = r.message_id
        LEFT JOIN campaigns c ON c.id = m.campaign_id
        WHERE o.currency = :currency
        GROUP BY 1, 2""", as_of=as_of, since=since, touch_from=since - window,
               window_us=micros(as_of) - micros(as_of - window), currency=currency)
    credits = [Credit(r.kind, r.name, int(r.orders), _money(r.cents)) for r in rows]
    order = {"flow": 0, "campaign": 1, "rest": 2}
    credits.sort(key=lambda c: (order[c.kind], -c.revenue, c.name))
    if not any(c.kind == "rest" for c in credits):
        credits.append(Credit("rest", "", 0, Decimal("0.00")))
    return Attribution(as_of, since, window, currency, credits,
                       _left_out(conn, currency, as_of, since))
