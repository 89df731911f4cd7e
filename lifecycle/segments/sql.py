"""SQL for segments, written once for PostgreSQL and SQLite.

Everything is plain SQL text with bound parameters; the few spots where the
two dialects differ (date arithmetic, JSON) go through :class:`Dialect`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from lifecycle.segments.definitions import (
    PREDICTION_METRICS,
    RFM_PREFIX,
    STAGES,
    All,
    AnyOf,
    AttributeCondition,
    BoughtCondition,
    Condition,
    Definitions,
    DueAgainCondition,
    MetricCondition,
    Not,
    TouchpointCondition,
)


@dataclass
class Params:
    """Bound parameters collected while SQL text is built."""

    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def json_typed(pg: bool, document: str, key: str, kind: str) -> str:
    """SQL for the value under ``key`` (a literal key) of a JSON ``document`` if it is a
    ``kind`` (``number``: as a number; ``string``: as text), else NULL."""
    if pg:
        value = f"({document} ->> '{key}')" + ("::numeric" if kind == "number" else "")
        return f"(CASE WHEN jsonb_typeof({document} -> '{key}') = '{kind}' THEN {value} END)"
    types = "('integer', 'real')" if kind == "number" else "('text')"
    return (f"(CASE WHEN json_type({document}, '$.{key}') IN {types} "
            f"THEN json_extract({document}, '$.{key}') END)")


@dataclass(frozen=True)
class Dialect:
    """The database's SQL flavour, and the reporting currency spend is counted in."""

    name: str
    #: ISO 4217 code (``LIFECYCLE_CURRENCY``, carried by :attr:`Definitions.currency`):
    #: ``total_spend`` and ``avg_spend`` count only completed orders in it.
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not (len(self.currency) == 3 and self.currency.isascii() and self.currency.isalpha()
                and self.currency.isupper()):
            raise ValueError(f"not a currency code: {self.currency!r}")  # it is put in the SQL

    @classmethod
    def of(cls, conn: Any, defs: Definitions) -> Dialect:
        """The dialect of ``conn``, counting spend in ``defs``' reporting currency."""
        return cls(conn.dialect.name, defs.currency)

    @property
    def in_currency(self) -> str:
        """SQL: the order row is in the reporting currency (a literal: the code is checked)."""
        return f"currency = '{self.currency}'"

    @property
    def pg(self) -> bool:
        return self.name == "postgresql"

    def days(self, later: str, earlier: str) -> str:
        """Fractional days from ``earlier`` to ``later``."""
        if self.pg:
            return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) / 86400)"
        return f"(julianday({later}) - julianday({earlier}))"

    def whole(self, expression: str) -> str:
        """Whole part of a non-negative number."""
        return f"FLOOR({expression})" if self.pg else f"CAST({expression} AS INTEGER)"

    def utc_day(self, instant: str) -> str:
        """The UTC calendar day of a stored instant, as a day number (whole; one per date)."""
        if self.pg:
            return f"(CAST(({instant} AT TIME ZONE 'UTC') AS DATE) - DATE '2000-01-01')"
        return f"CAST(julianday(date({instant})) AS INTEGER)"

    def json_object(self, *pairs: tuple[str, str]) -> str:
        args = ", ".join(f"'{key}', {value}" for key, value in pairs)
        return f"jsonb_build_object({args})" if self.pg else f"json_object({args})"

    def json_number(self, document: str, key: str) -> str:
        """The number under ``key`` (a literal key), or NULL if it is not a number."""
        return json_typed(self.pg, document, key, "number")

    def item_field(self, items: str, key: str, value: str, p: Params) -> str:
        """True when some line item of ``items`` has ``key`` = ``value`` (a text)."""
        if self.pg:  # containment: no set-returning function per order
            return f"({items} @> CAST({p.add(json.dumps([{key: value}]))} AS JSONB))"
        return (f"EXISTS (SELECT 1 FROM json_each({items}) AS e "
                f"WHERE json_extract(e.value, '$.{key}') = {p.add(value)})")

    def attribute_text(self, document: str, name: str) -> str:
        """An attribute as text (true/false spelled out), NULL when absent or null."""
        if self.pg:
            return f"({document} ->> CAST({name} AS TEXT))"
        path = f"('$.\"' || replace({name}, '\"', '\\\"') || '\"')"
        return (f"(CASE json_type({document}, {path}) WHEN 'true' THEN 'true' "
                f"WHEN 'false' THEN 'false' WHEN 'null' THEN NULL "
                f"ELSE CAST(json_extract({document}, {path}) AS TEXT) END)")

    def attribute_number(self, document: str, name: str) -> str:
        """An attribute as a number: JSON numbers and texts that spell one; else NULL."""
        text = self.attribute_text(document, name)
        if self.pg:
            return (f"(CASE WHEN {text} ~ '^\\s*-?[0-9]+(\\.[0-9]+)?\\s*$' "
                    f"THEN ({text})::numeric END)")
        return (f"(CASE WHEN trim({text}) <> '' AND trim({text}) NOT GLOB '*[^0-9.-]*' "
                f"AND trim({text}) GLOB '*[0-9]*' THEN CAST({text} AS REAL) END)")


@dataclass(frozen=True)
class Cutoffs:
    """Quintile cut points (4 each, ascending) and the VIP spend threshold.

    A score is 1 plus the number of cut points a value is strictly above, so
    a value equal to a cut point scores in the lower quintile.
    """

    recency: tuple[float, ...]  # on -(days since the last order): higher is better
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]
    vip_spend: float  # VIP when total spend is above this

    def to_json(self) -> dict[str, Any]:
        return {"recency": list(self.recency), "frequency": list(self.frequency),
                "monetary": list(self.monetary), "vip_spend": self.vip_spend}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cutoffs:
        return cls(tuple(data["recency"]), tuple(data["frequency"]), tuple(data["monetary"]),
                   float(data["vip_spend"]))

    @staticmethod
    def positions(n: int) -> list[int]:
        """1-based ranks (ascending) whose values are the four cut points."""
        return [max(1, (k * n) // 5) for k in range(1, 5)]

    @staticmethod
    def vip_position(n: int, top_percent: float) -> int:
        """1-based rank of the VIP threshold; 0 means everyone qualifies."""
        return n - math.ceil(n * top_percent / 100)


METRIC_COLUMNS = {
    "order_count": "COALESCE(m.order_count, 0)",
    "total_spend": "COALESCE(m.total_spend, 0)",
    "avg_spend": "m.avg_spend",
    "days_since_last_order": "m.days_since_last",
    "median_gap_days": "m.median_gap_days",
    "days_since_first_order": "m.days_since_first",
    **{name: f"cp.{name}" for name in PREDICTION_METRICS},
}


def uses_predictions(cond: Condition) -> bool:
    """True when ``cond`` reads a prediction metric (its SQL joins the predictions)."""
    if isinstance(cond, All | AnyOf):
        return any(uses_predictions(part) for part in cond.parts)
    if isinstance(cond, Not):
        return uses_predictions(cond.part)
    return isinstance(cond, MetricCondition) and cond.name in PREDICTION_METRICS


#: The stored predictions as ``cp`` beside a metrics row ``m``: a customer with a completed
#: order after the fit's moment has none (their prediction no longer holds) until the next.
PREDICTIONS_JOIN = """LEFT JOIN (
        SELECT sp.customer_id, sp.p_alive, sp.expected_orders, sp.expected_order_value,
               sp.predicted_clv, pf.as_of AS fitted_as_of
        FROM customer_predictions AS sp JOIN prediction_fits AS pf ON pf.id = sp.fit_id
    ) AS cp ON cp.customer_id = c.id AND m.last_order_at <= cp.fitted_as_of"""


def metrics_sql(d: Dialect, customer: str | None, among: str | None = None) -> str:
    """Purchase metrics as of ``:as_of`` for completed orders: one row per buyer.

    ``customer`` restricts to one customer (a parameter placeholder) or None;
    ``among`` to the customers a subquery names.  Every completed order counts as an
    order (count, first, last, gaps); ``total_spend`` sums only the orders in the
    reporting currency (``d.currency``, 0 if none) and ``avg_spend`` is their mean
    (NULL if none): amounts in different currencies are never added.  The median gap is the middle
    gap (mean of the two middle ones for an even count) in fractional days,
    rounded to 4 places on both backends.
    """
    only = f"AND customer_id = {customer}" if customer else ""
    if among:
        only += f" AND customer_id IN ({among})"
    if d.pg:
        # One pass: the gap to the previous order by window, the median by an
        # ordered-set aggregate (NULL gaps of first orders are ignored). Orders
        # at the same instant give a zero gap whichever comes first.
        return f"""
        SELECT customer_id, first_order_at, last_order_at, order_count, total_spend,
               ROUND(total_spend / NULLIF(spend_orders, 0), 2) AS avg_spend,
               {d.whole(d.days(':as_of', 'last_order_at'))} AS days_since_last,
               {d.whole(d.days(':as_of', 'first_order_at'))} AS days_since_first,
               ROUND(median_gap::numeric, 4) AS median_gap_days
        FROM (SELECT customer_id, MIN(ordered_at) AS first_order_at,
                     MAX(ordered_at) AS last_order_at, COUNT(*) AS order_count,
                     SUM(CASE WHEN {d.in_currency} THEN total ELSE 0 END) AS total_spend,
                     COUNT(CASE WHEN {d.in_currency} THEN 1 END) AS spend_orders,
                     percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median_gap
              FROM (SELECT customer_id, ordered_at, total, currency,
                           EXTRACT(EPOCH FROM ordered_at - LAG(ordered_at) OVER (
                               PARTITION BY customer_id ORDER BY ordered_at)) / 86400 AS gap
                    FROM orders WHERE status = 'completed' AND ordered_at <= :as_of {only}) AS o
              GROUP BY customer_id) AS agg"""
    gap = d.days("ordered_at", "prev_at")
    return f"""
        SELECT agg.customer_id, agg.first_order_at, agg.last_order_at, agg.order_count,
               agg.total_spend,
               ROUND(agg.total_spend * 1.0 / NULLIF(agg.spend_orders, 0), 2) AS avg_spend,
               {d.whole(d.days(':as_of', 'agg.last_order_at'))} AS days_since_last,
               {d.whole(d.days(':as_of', 'agg.first_order_at'))} AS days_since_first,
               ROUND(med.median_gap, 4) AS median_gap_days
        FROM (SELECT customer_id, MIN(ordered_at) AS first_order_at,
                     MAX(ordered_at) AS last_order_at, COUNT(*) AS order_count,
                     SUM(CASE WHEN {d.in_currency} THEN total ELSE 0 END) AS total_spend,
                     COUNT(CASE WHEN {d.in_currency} THEN 1 END) AS spend_orders
              FROM orders WHERE status = 'completed' AND ordered_at <= :as_of {only}
              GROUP BY customer_id) AS agg
        LEFT JOIN (
            SELECT customer_id, AVG(gap) AS median_gap FROM (
                SELECT customer_id, gap,
                       ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY gap) AS rn,
                       COUNT(*) OVER (PARTITION BY customer_id) AS n
                FROM (SELECT customer_id, {gap} AS gap FROM (
                        SELECT customer_id, ordered_at,
                               LAG(ordered_at) OVER (PARTITION BY customer_id
                                                     ORDER BY ordered_at, id) AS prev_at
                        FROM orders
                        WHERE status = 'completed' AND ordered_at <= :as_of {only}) AS o
                      WHERE prev_at IS NOT NULL) AS gaps) AS ranked
            WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
            GROUP BY customer_id) AS med ON med.customer_id = agg.customer_id"""


def _score(d: Dialect, column: str, cuts: tuple[float, ...], p: Params) -> str:
    # On PostgreSQL whole cut points bind as integers and the rest as decimals,
    # so that the comparison runs in the column's own type (no cast per row).
    values = [int(c) if float(c).is_integer() else (Decimal(str(c)) if d.pg else c)
              for c in cuts]
    return "(1" + "".join(f" + CASE WHEN {column} > {p.add(v)} THEN 1 ELSE 0 END"
                          for v in values) + ")"


@dataclass(frozen=True)
class Who:
    """Whose segments a query computes: one customer (a placeholder), the customers a
    subquery names (``among``), or everybody."""

    customer: str | None = None
    among: str | None = None

    def on(self, column: str) -> str:
        """``AND …`` restricting ``column`` (a customer id) to them; empty for everybody."""
        only = f"AND {column} = {self.customer}" if self.customer else ""
        return only + (f" AND {column} IN ({self.among})" if self.among else "")


def _condition(cond: Condition, d: Dialect, p: Params, as_of: datetime, customer: Who) -> str:
    if isinstance(cond, All):
        return "(" + " AND ".join(_condition(c, d, p, as_of, customer) for c in cond.parts) + ")"
    if isinstance(cond, AnyOf):
        return "(" + " OR ".join(_condition(c, d, p, as_of, customer) for c in cond.parts) + ")"
    if isinstance(cond, Not):
        return f"(NOT COALESCE({_condition(cond.part, d, p, as_of, customer)}, FALSE))"
    if isinstance(cond, MetricCondition):
        op = "<>" if cond.op == "!=" else cond.op
        return f"({METRIC_COLUMNS[cond.name]} {op} {p.add(cond.value)})"
    if isinstance(cond, AttributeCondition):
        name = p.add(cond.name)
        if cond.op in ("exists", "missing"):
            test = "IS NOT NULL" if cond.op == "exists" else "IS NULL"
            return f"({d.attribute_text('c.attributes', name)} {test})"
        if cond.op == "in":
            values = ", ".join(p.add(_text(v)) for v in cond.value)
            return f"({d.attribute_text('c.attributes', name)} IN ({values}))"
        if cond.op in ("=", "!="):
            op = "=" if cond.op == "=" else "<>"
            return f"({d.attribute_text('c.attributes', name)} {op} {p.add(_text(cond.value))})"
        return f"({d.attribute_number('c.attributes', name)} {cond.op} {p.add(float(cond.value))})"
    # Uncorrelated IN (…) lets the database build one hashed set per condition
    # instead of probing per customer, also under NOT and OR; for one customer
    # the set is restricted to them so that their index rows are all it reads.
    if isinstance(cond, TouchpointCondition):
        since = f"AND t.occurred_at > {p.add(as_of - cond.within)}" if cond.within else ""
        only = customer.on("t.customer_id")
        return (f"(c.id IN (SELECT t.customer_id FROM touchpoints AS t "
                f"WHERE t.kind = {p.add(cond.kind)} AND t.occurred_at <= :as_of {since} {only} "
                f"GROUP BY t.customer_id HAVING COUNT(*) >= {p.add(cond.at_least)}))")
    if isinstance(cond, BoughtCondition):
        since = f"AND o.ordered_at > {p.add(as_of - cond.within)}" if cond.within else ""
        only = customer.on("o.customer_id")
        return (f"(c.id IN (SELECT o.customer_id FROM orders AS o "
                f"WHERE o.status = 'completed' AND o.ordered_at <= :as_of {since} {only} "
                f"AND {d.item_field('o.items', cond.field, cond.value, p)} "
                f"GROUP BY o.customer_id HAVING COUNT(*) >= {p.add(cond.at_least)}))")
    if isinstance(cond, DueAgainCondition):
        return _due_again(cond, d, p, customer)
    raise TypeError(f"unknown condition {cond!r}")


def _due_again(cond: DueAgainCondition, d: Dialect, p: Params, customer: Who) -> str:
    """SQL of :class:`DueAgainCondition`: one pass over the completed orders with a line of
    it gives each buyer's first and last purchase day, their count of distinct days and the
    instant of the last purchase; the cadence is (last day − first day) / (days − 1)."""
    only = customer.on("o.customer_id")
    day = d.utc_day("o.ordered_at")
    if cond.first_cycle_days is None:
        cadence = "((b.last_day - b.first_day) * 1.0 / (b.days - 1))"
        enough = "b.days >= 2"
    else:
        cadence = (f"(CASE WHEN b.days >= 2 THEN (b.last_day - b.first_day) * 1.0 / (b.days - 1) "
                   f"ELSE {p.add(cond.first_cycle_days)} END)")
        enough = "b.days >= 1"
    since = d.whole(d.days(":as_of", "b.last_at"))
    return (f"(c.id IN (SELECT b.customer_id FROM ("
            f"SELECT o.customer_id, MIN({day}) AS first_day, MAX({day}) AS last_day, "
            f"COUNT(DISTINCT {day}) AS days, MAX(o.ordered_at) AS last_at FROM orders AS o "
            f"WHERE o.status = 'completed' AND o.ordered_at <= :as_of {only} "
            f"AND {d.item_field('o.items', cond.field, cond.value, p)} "
            f"GROUP BY o.customer_id) AS b "
            f"WHERE {enough} AND {since} >= {cadence} * {p.add(cond.factor)} "
            f"AND {since} < {cadence} * {p.add(cond.give_up)}))")


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def stage_reason(d: Dialect, m: str = "m") -> str:
    """Why a customer has their retention stage, from a metrics row aliased ``m``."""
    return d.json_object(("orders", f"COALESCE({m}.order_count, 0)"),
                         ("days_since_last_order", f"{m}.days_since_last"),
                         ("median_gap_days", f"{m}.median_gap_days"))


def rfm_reason(d: Dialect, a: str = "a") -> str:
    return d.json_object(("r", f"{a}.r"), ("f", f"{a}.f"), ("m", f"{a}.m"))


def assignment_sql(defs: Definitions, d: Dialect, as_of: datetime, cutoffs: Cutoffs | None,
                   metrics: str, customer: str | None, p: Params, reasons: bool = True,
                   only: frozenset[str] | None = None, among: str | None = None) -> str:
    """``SELECT customer_id, segment, reason, r, f, m`` for every segment each customer is in.

    ``metrics`` is a table name or a parenthesised query giving :func:`metrics_sql`'s
    columns; ``customer`` restricts to one customer (a placeholder) or None, ``among`` to
    the customers a subquery names.
    Without ``reasons`` the stage and RFM rows carry no JSON reason (a full
    refresh builds it later for the few rows that enter); RFM rows always
    carry their scores in ``r``, ``f`` and ``m``.  ``only`` names the segments
    wanted (None: all); the parts that cannot yield one of them are left out.
    """
    who = Who(customer, among)
    only_one = who.on("id")
    ret = defs.retention
    adv = defs.advocacy
    parts: list[str] = []

    def wanted(*names: str) -> bool:
        return only is None or any(name in only for name in names)

    # Retention stage: exactly one per customer.
    own_gap = (f"CASE WHEN m.median_gap_days IS NULL THEN {p.add(ret.first_gap_days)} "
               f"WHEN m.median_gap_days < {p.add(ret.min_gap_days)} THEN {p.add(ret.min_gap_days)} "
               f"ELSE m.median_gap_days END")
    vip = (f"m.total_spend > {p.add(cutoffs.vip_spend)}" if cutoffs else "1 = 0")
    stage = f"""CASE
        WHEN m.customer_id IS NULL THEN 'prospect'
        WHEN m.days_since_last > {p.add(ret.churned_days)} THEN 'churned'
        WHEN m.days_since_last > {p.add(ret.lapsed_days)} THEN 'lapsed'
        WHEN m.days_since_last > {p.add(ret.at_risk_factor)} * ({own_gap}) THEN 'at_risk'
        WHEN {vip} AND m.order_count >= {p.add(ret.vip_min_orders)} THEN 'vip'
        WHEN m.order_count >= {p.add(ret.loyal_min_orders)} THEN 'loyal'
        WHEN m.order_count >= 2 THEN 'repeat'
        ELSE 'new' END"""
    none = "CAST(NULL AS JSONB)" if d.pg else "NULL"
    nulls = "CAST(NULL AS INTEGER), CAST(NULL AS INTEGER), CAST(NULL AS INTEGER)"
    reason = stage_reason(d) if reasons else none
    if wanted(*STAGES):
        parts.append(f"SELECT c.id AS customer_id, {stage} AS segment, {reason} AS reason, "
                     f"{nulls} FROM c LEFT JOIN {metrics} AS m ON m.customer_id = c.id")

    # RFM: scores against the calibration's cut points, then the first matching rule.
    if cutoffs is not None and wanted(*(RFM_PREFIX + rule.name for rule in defs.rfm.segments)):
        r = _score(d, "(-m.days_since_last)", cutoffs.recency, p)
        f = _score(d, "m.order_count", cutoffs.frequency, p)
        mon = _score(d, "m.total_spend", cutoffs.monetary, p)
        rules = " ".join(
            f"WHEN s.r BETWEEN {rule.r[0]} AND {rule.r[1]} "
            f"AND s.fm BETWEEN {rule.fm[0]} AND {rule.fm[1]} THEN '{RFM_PREFIX}{rule.name}'"
            for rule in defs.rfm.segments)
        reason = d.json_object(("r", "s.r"), ("f", "s.f"), ("m", "s.mon")) if reasons else none
        parts.append(f"SELECT s.customer_id, CASE {rules} END, {reason}, s.r, s.f, s.mon FROM "
                     f"(SELECT customer_id, r, f, mon, (f + mon + 1) / 2 AS fm FROM "
                     f"(SELECT m.customer_id, {r} AS r, {f} AS f, {mon} AS mon "
                     f"FROM {metrics} AS m JOIN c ON c.id = m.customer_id) AS scored) AS s")

    # Advocacy: the latest NPS answer in its window, reviews and referrals in theirs.
    score = d.json_number("t.data", "score")
    tp_only = who.on("t.customer_id")
    since = p.add(as_of - timedelta(days=adv.nps_window_days))
    nps = f"""SELECT customer_id, CASE WHEN score >= 9 THEN 'promoter'
                         WHEN score >= 7 THEN 'passive' ELSE 'detractor' END,
                         {d.json_object(('score', 'score'))}, {nulls}
                     FROM (SELECT t.customer_id, {score} AS score,
                                  ROW_NUMBER() OVER (PARTITION BY t.customer_id
                                                     ORDER BY t.occurred_at DESC, t.id DESC) AS rn
                           FROM touchpoints AS t JOIN c ON c.id = t.customer_id
                           WHERE t.kind = 'feedback' AND t.occurred_at <= :as_of {tp_only}
                             AND t.occurred_at > {since} AND {score} IS NOT NULL) AS latest
                     WHERE rn = 1"""
    if wanted("promoter", "passive", "detractor"):
        parts.append(nps)
    for segment, kind, days in (("reviewer", "review", adv.review_window_days),
                                ("referrer", "referral", adv.referral_window_days)):
        if not wanted(segment):
            continue
        parts.append(f"""SELECT c.id, '{segment}', {d.json_object()}, {nulls} FROM c
                         WHERE EXISTS (SELECT 1 FROM touchpoints AS t WHERE t.customer_id = c.id
                                       AND t.kind = '{kind}' AND t.occurred_at <= :as_of {tp_only}
                                       AND t.occurred_at > {p.add(as_of - timedelta(days=days))})""")

    for custom in defs.custom:
        if not wanted(custom.name):
            continue
        test = _condition(custom.condition, d, p, as_of, who)
        predictions = PREDICTIONS_JOIN if uses_predictions(custom.condition) else ""
        parts.append(f"SELECT c.id, {p.add(custom.name)}, {d.json_object()}, {nulls} FROM c "
                     f"LEFT JOIN {metrics} AS m ON m.customer_id = c.id {predictions} "
                     f"WHERE COALESCE({test}, FALSE)")

    if not parts:
        parts.append(f"SELECT c.id, 'none', {none}, {nulls} FROM c WHERE 1 = 0")
    body = "\nUNION ALL\n".join(parts)
    head = f"WITH c AS (SELECT id, attributes FROM customers WHERE created_at <= :as_of {only_one})"
    if only is not None:
        names = ", ".join(p.add(name) for name in sorted(only))
        return (f"{head},\nwanted (customer_id, segment, reason, r, f, m) AS (\n{body}\n)\n"
                f"SELECT * FROM wanted WHERE segment IN ({names})")
    return f"{head}\n{body}"
