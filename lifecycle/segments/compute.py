"""Segment refresh: full (set-based, inside the database) and for one customer.

A **full refresh** as of a moment:

1. computes every buyer's purchase metrics into a temporary table;
2. recalibrates the RFM quintile cut points and the VIP threshold from them
   (stored in ``segment_calibrations``);
3. computes every (customer, segment) pair in one ``INSERT … SELECT``;
4. closes the stays that ended, opens the new ones, and writes a
   ``segment_exited`` / ``segment_entered`` touchpoint for each move;
5. replaces the products and co-purchase counts recommendations are made from
   (:mod:`lifecycle.recommendations.compute`).

A **customer refresh** runs the very same SQL restricted to one customer,
scoring against the latest calibration, and applies the difference; a
**partial refresh** (:func:`refresh_customers`: the customers of a batch of
arriving orders, or of an import) runs the full refresh's set-based
statements restricted to a set of customers, scored the same way.  So
between two full refreshes nobody's RFM score moves because someone else
bought something; the next full refresh recalibrates.

Refreshing "as of" a past moment counts only orders and touchpoints up to it.
It writes only if no membership change is recorded after that moment
(history is never rewritten); otherwise it reports what the segments were.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.sql.elements import TextClause

from lifecycle.clock import Clock
from lifecycle.models import SegmentCalibration, SegmentMembership
from lifecycle.models.base import UTCDateTime
from lifecycle.recommendations.compute import refresh_products
from lifecycle.segments.definitions import STAGES, Definitions
from lifecycle.segments.sql import (
    Cutoffs,
    Dialect,
    Params,
    assignment_sql,
    metrics_sql,
    rfm_reason,
    stage_reason,
)

log = logging.getLogger(__name__)

METRICS_TABLE = "lc_seg_metrics"
ASSIGN_TABLE = "lc_seg_assign"
MOVES_TABLE = "lc_seg_moves"
#: PostgreSQL work_mem for the full refresh's own transaction (sorts of every order).
FULL_REFRESH_WORK_MEM = "256MB"
#: After this many moves a full refresh refreshes the planner's statistics.
ANALYZE_AFTER_MOVES = 50_000
#: Advisory lock key (PostgreSQL): full refreshes exclusive, customer refreshes shared.
LOCK_KEY = 7_414_001
#: Most customers a partial refresh locks one by one (PostgreSQL's lock table is shared
#: by all sessions: 64 per connection by default); more take the full refresh's lock.
LOCK_EACH_MAX = 1_000
IDS_TABLE = "lc_seg_ids"


@dataclass
class RefreshReport:
    as_of: datetime
    written: bool
    customers: int = 0
    sizes: Counter[str] = field(default_factory=Counter)
    entered: Counter[str] = field(default_factory=Counter)
    exited: Counter[str] = field(default_factory=Counter)
    cutoffs: Cutoffs | None = None
    note: str = ""
    #: Rows of ``products`` and ``co_purchases`` written (a full refresh; else 0).
    products: int = 0
    pairs: int = 0
    #: The predictions' refit (a full refresh that writes; else None).
    predictions: Any = None


def _statement(sql: str, params: dict[str, Any]) -> TextClause:
    """Text with datetime parameters bound through the UTC type (SQLite stores text)."""
    statement = text(sql)
    typed = [bindparam(name, type_=UTCDateTime()) for name, value in params.items()
             if isinstance(value, datetime)]
    return statement.bindparams(*typed) if typed else statement


def _run(conn: Connection, sql: str, params: dict[str, Any]) -> Any:
    used = {k: v for k, v in params.items() if f":{k}" in sql}
    return conn.execute(_statement(sql, used), used)


def latest_calibration(conn: Connection) -> Cutoffs | None:
    row = conn.execute(select(SegmentCalibration.cutoffs)
                       .order_by(SegmentCalibration.id.desc()).limit(1)).first()
    return None if row is None else Cutoffs.from_json(row[0])


def calibrate(conn: Connection, metrics: str, defs: Definitions) -> tuple[Cutoffs | None, int]:
    """Quintile cut points and VIP threshold over the buyers in ``metrics``."""
    n = conn.execute(text(f"SELECT COUNT(*) FROM {metrics} AS m")).scalar_one()
    if n == 0:
        return None, 0
    positions = Cutoffs.positions(n)
    vip_at = Cutoffs.vip_position(n, defs.retention.vip_top_percent)
    wanted = sorted(set(positions) | ({vip_at} if vip_at > 0 else set()))

    def values(column: str) -> dict[int, float]:
        rows = conn.execute(text(
            f"SELECT rn, v FROM (SELECT {column} AS v, ROW_NUMBER() OVER (ORDER BY {column}) AS rn "
            f"FROM {metrics} AS m) AS ranked WHERE rn IN ({', '.join(map(str, wanted))})")).all()
        return {int(rn): float(v) for rn, v in rows}

    recency = values("(-m.days_since_last)")
    frequency = values("m.order_count")
    monetary = values("m.total_spend")
    return Cutoffs(
        recency=tuple(recency[p] for p in positions),
        frequency=tuple(frequency[p] for p in positions),
        monetary=tuple(monetary[p] for p in positions),
        vip_spend=monetary[vip_at] if vip_at > 0 else -1.0,
    ), n


def _lock(conn: Connection, shared: bool) -> None:
    if conn.dialect.name == "postgresql":
        # JIT-compiling these wide queries costs seconds and saves nothing here.
        conn.exec_driver_sql("SET LOCAL jit = off")
        if not shared:  # a full refresh sorts and hashes every order and customer in memory
            conn.exec_driver_sql(f"SET LOCAL work_mem = '{FULL_REFRESH_WORK_MEM}'")
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.execute(text(f"SELECT {fn}(:key)"), {"key": LOCK_KEY})


def lock_full_refresh(conn: Connection) -> None:
    """Take the full refresh's exclusive lock (PostgreSQL; held to the end of the transaction)
    before reading the clock for its ``as_of``: customer refreshes that commit while it waits
    then lie before that moment, not after it."""
    _lock(conn, shared=False)


def _last_change(conn: Connection, customer_id: int | None = None) -> datetime | None:
    entered = select(func.max(SegmentMembership.entered_at))
    exited = select(func.max(SegmentMembership.exited_at))
    if customer_id is not None:
        entered = entered.where(SegmentMembership.customer_id == customer_id)
        exited = exited.where(SegmentMembership.customer_id == customer_id)
    times = [t for t in (conn.execute(entered).scalar(), conn.execute(exited).scalar()) if t]
    return max(times) if times else None


def _drop(conn: Connection, *tables: str) -> None:
    for table in tables:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@dataclass
class KeptMetrics:
    """Buyers' metrics kept between the full refreshes of a replay, in a temporary table.

    Valid only while orders are never changed and arrive in time order, each
    after the refresh before (a flow simulation's copy): a refresh then
    recomputes only the buyers with an order since the last one (a few dozen a
    day instead of every buyer) and derives the day counts from its own moment.
    """

    table: str = "lc_seg_metrics_kept"
    through: datetime | None = None  # the as-of moment of the last refresh


def _metrics_table(conn: Connection, d: Dialect, name: str) -> None:
    stamp, number = ("TIMESTAMPTZ", "NUMERIC") if d.pg else ("TIMESTAMP", "REAL")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {name} (customer_id BIGINT NOT NULL, "
        f"first_order_at {stamp}, last_order_at {stamp}, order_count INTEGER, "
        f"total_spend {number}, avg_spend {number}, days_since_last INTEGER, "
        f"days_since_first INTEGER, median_gap_days {number})")


def _create_metrics(conn: Connection, d: Dialect, as_of: datetime,
                    kept: KeptMetrics | None = None, among: str | None = None) -> None:
    """Fill a temporary table with every buyer's metrics as of ``as_of`` (only those of the
    customers the subquery ``among`` names, if given)."""
    _metrics_table(conn, d, METRICS_TABLE)
    if kept is None:
        _run(conn, f"INSERT INTO {METRICS_TABLE} {metrics_sql(d, None, among=among)}",
             {"as_of": as_of})
        return
    times = {"as_of": as_of, "through": kept.through}
    if kept.through is None or kept.through > as_of:
        _drop(conn, kept.table)
        _metrics_table(conn, d, kept.table)
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX {kept.table}_pk ON {kept.table} (customer_id)")
        _run(conn, f"INSERT INTO {kept.table} {metrics_sql(d, None)}", times)
    else:
        changed = f"{kept.table}_changed"
        _drop(conn, changed)
        _run(conn, f"CREATE TEMPORARY TABLE {changed} AS SELECT DISTINCT customer_id FROM orders "
             "WHERE status = 'completed' AND ordered_at > :through AND ordered_at <= :as_of", times)
        among = f"SELECT customer_id FROM {changed}"
        _run(conn, f"DELETE FROM {kept.table} WHERE customer_id IN ({among})", times)
        _run(conn, f"INSERT INTO {kept.table} {metrics_sql(d, None, among=among)}", times)
        _drop(conn, changed)
    kept.through = as_of
    _run(conn, f"""
        INSERT INTO {METRICS_TABLE}
        SELECT customer_id, first_order_at, last_order_at, order_count, total_spend, avg_spend,
               {d.whole(d.days(':as_of', 'last_order_at'))},
               {d.whole(d.days(':as_of', 'first_order_at'))}, median_gap_days
        FROM {kept.table}""", times)


def refresh_all(conn: Connection, defs: Definitions, as_of: datetime, now: datetime, *,
                recalibrate: bool = True, write: bool = True,
                progress: Callable[[str], None] | None = None,
                only: frozenset[str] | None = None,
                kept: KeptMetrics | None = None, channel: str = "system",
                predict: bool = True) -> RefreshReport:
    """Recompute every customer's segments as of ``as_of`` in ``conn``'s transaction.

    A refresh of every segment that writes first refits the predictions and replaces every
    buyer's (:func:`lifecycle.predictions.service.refresh`), so that segments on prediction
    metrics read this refresh's; ``predict=False`` leaves them (the benchmark times the two
    apart).

    ``only`` limits the refresh to those segments (a flow simulation needs just
    the ones its flow reads); stays in other segments are left alone.  ``kept``
    carries purchase metrics over from the refresh before (see :class:`KeptMetrics`).
    ``channel``: that of the moves' touchpoints (see :func:`refresh_customers`).
    """
    step = progress or (lambda _message: None)
    d = Dialect.of(conn, defs)
    _lock(conn, shared=False)
    last = _last_change(conn)
    if write and last is not None and last > as_of:
        write = False
        note = (f"Report only: memberships changed at {last:%Y-%m-%d %H:%M} UTC, after "
                f"{as_of:%Y-%m-%d %H:%M}; history is not rewritten.")
    else:
        note = ""
    report = RefreshReport(as_of, write, note=note)
    if write and predict and only is None and kept is None:
        from lifecycle.predictions.service import Options
        from lifecycle.predictions.service import refresh as refresh_predictions

        step("Fitting predictions")
        try:  # in a savepoint: a failure of the predictions must not cost the segments
            with conn.begin_nested():
                report.predictions = refresh_predictions(conn, as_of, now, Options(
                    defs.currency, defs.timezone, defs.prediction_horizon_days))
        except Exception:
            log.exception("The predictions were not refitted because of the error below; the "
                          "segments are refreshed with the predictions stored before.")
    report = _refresh(conn, defs, d, report, now, recalibrate=recalibrate, step=step, only=only,
                      kept=kept, channel=channel)
    if report.written and only is None and kept is None:  # not a flow replay's partial pass
        step("Counting products bought together")
        report.products, report.pairs = refresh_products(conn, as_of)
    return report


def refresh_customers(conn: Connection, defs: Definitions, customers: str | Iterable[int],
                      as_of: datetime, now: datetime, *, channel: str = "system",
                      clock: Clock | None = None) -> RefreshReport:
    """Bring the memberships of ``customers`` up to date as of ``as_of`` in set-based SQL: the
    full refresh's statements restricted to them, scored against the latest calibration (made
    first if there is none), like :func:`refresh_customer` for each of them but in one pass.

    ``customers`` is a SQL query of one column, customer ids (``SELECT customer_id FROM t``),
    or the ids themselves.  A single customer goes through :func:`refresh_customer` (the
    same result in fewer statements: about half the time of the set-based pass for one).
    On PostgreSQL it holds the customer refresh lock of each of them (in id order, so two
    refreshes of overlapping customers queue rather than deadlock), or, for more than
    :data:`LOCK_EACH_MAX` customers, the full refresh's exclusive lock.
    ``channel`` is that of the ``segment_entered`` / ``segment_exited`` touchpoints
    (``import``: moves that an import of history caused, which fire no flow triggers).
    ``clock`` (a live refresh: an arriving order's): ``as_of`` and ``now`` are read from it
    once the locks are held, so that moves a full refresh wrote while this one waited never
    lie after this one's (a stay left before it was entered).
    """
    d = Dialect.of(conn, defs)
    report = RefreshReport(as_of, True)
    if isinstance(customers, str):
        few = list(conn.execute(text(f"SELECT DISTINCT * FROM ({customers}) AS wanted LIMIT 2"))
                   .scalars())
    else:
        customers = sorted(set(customers))
        few = customers
    if len(few) <= 1:  # one customer: the customer refresh's few statements do the same
        for cid in few:
            entered, exited = refresh_customer(conn, defs, cid, as_of, now, channel=channel,
                                               clock=clock)
            report.customers = 1
            report.entered.update(entered)
            report.exited.update(exited)
        return report
    _drop(conn, IDS_TABLE)
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {IDS_TABLE} "
                         "(customer_id BIGINT NOT NULL PRIMARY KEY)")
    if isinstance(customers, str):
        conn.execute(text(f"INSERT INTO {IDS_TABLE} (customer_id) "
                          f"SELECT DISTINCT * FROM ({customers}) AS wanted"))
    else:
        conn.execute(text(f"INSERT INTO {IDS_TABLE} (customer_id) VALUES (:cid)"),
                     [{"cid": cid} for cid in customers])
    n = conn.execute(text(f"SELECT COUNT(*) FROM {IDS_TABLE}")).scalar_one()
    if d.pg:
        conn.exec_driver_sql(f"ANALYZE {IDS_TABLE}")
        _lock(conn, shared=n <= LOCK_EACH_MAX)
        if n <= LOCK_EACH_MAX:  # the customer refresh lock of each, in one ordered pass
            conn.execute(text(
                f"SELECT COUNT(pg_advisory_xact_lock(:key, CAST(customer_id % 2147483648 "
                f"AS INTEGER))) FROM (SELECT customer_id FROM {IDS_TABLE} "
                f"ORDER BY customer_id % 2147483648) AS ordered"), {"key": LOCK_KEY % 2**31})
    if clock is not None:  # under the locks (SQLite: the transaction's write lock)
        as_of = now = clock.now()
        report = RefreshReport(as_of, True)
    _ensure_calibration(conn, defs, d, as_of, now)
    report = _refresh(conn, defs, d, report, now, recalibrate=False,
                      step=lambda _message: None, among=f"SELECT customer_id FROM {IDS_TABLE}",
                      channel=channel)
    _drop(conn, IDS_TABLE)
    return report


def _ensure_calibration(conn: Connection, defs: Definitions, d: Dialect, as_of: datetime,
                        now: datetime) -> Cutoffs | None:
    """The latest calibration; if there is none yet, one made from every buyer now."""
    cutoffs = latest_calibration(conn)
    if cutoffs is None:
        _drop(conn, METRICS_TABLE)
        _create_metrics(conn, d, as_of)
        cutoffs, buyers = calibrate(conn, METRICS_TABLE, defs)
        _drop(conn, METRICS_TABLE)
        if cutoffs is not None:
            conn.execute(SegmentCalibration.__table__.insert().values(
                as_of=as_of, computed_at=now, customers=buyers, cutoffs=cutoffs.to_json()))
    return cutoffs


def _refresh(conn: Connection, defs: Definitions, d: Dialect, report: RefreshReport,
             now: datetime, *, recalibrate: bool, step: Callable[[str], None],
             only: frozenset[str] | None = None, kept: KeptMetrics | None = None,
             among: str | None = None, channel: str = "system") -> RefreshReport:
    """The refresh proper, under its lock: everybody, or the customers ``among`` names."""
    as_of, write = report.as_of, report.written
    _drop(conn, METRICS_TABLE, ASSIGN_TABLE, MOVES_TABLE)

    step("Computing purchase metrics")
    _create_metrics(conn, d, as_of, kept, among)
    if d.pg:
        conn.exec_driver_sql(f"ALTER TABLE {METRICS_TABLE} ADD PRIMARY KEY (customer_id)")
        conn.exec_driver_sql(f"ANALYZE {METRICS_TABLE}")
    else:
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX {METRICS_TABLE}_pk ON {METRICS_TABLE} (customer_id)")

    step("Calibrating RFM scores")
    cutoffs = latest_calibration(conn) if not recalibrate else None
    if cutoffs is None and among is None:  # (a partial refresh is never calibrated on its own)
        cutoffs, buyers = calibrate(conn, METRICS_TABLE, defs)
        if cutoffs is not None and write:
            conn.execute(SegmentCalibration.__table__.insert().values(
                as_of=as_of, computed_at=now, customers=buyers, cutoffs=cutoffs.to_json()))
    report.cutoffs = cutoffs

    step("Assigning segments")
    params = Params({"as_of": as_of})
    select_sql = assignment_sql(defs, d, as_of, cutoffs, METRICS_TABLE, None, params,
                                reasons=False, only=only, among=among)
    reason_type = "JSONB" if d.pg else "JSON"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {ASSIGN_TABLE} (customer_id BIGINT NOT NULL, "
                         f"segment VARCHAR(100) NOT NULL, reason {reason_type}, r INTEGER, "
                         f"f INTEGER, m INTEGER)")
    _run(conn, f"INSERT INTO {ASSIGN_TABLE} (customer_id, segment, reason, r, f, m) {select_sql}",
         params.values)
    if d.pg:  # moves are found by one hash join: statistics, no index
        conn.exec_driver_sql(f"ANALYZE {ASSIGN_TABLE}")
    else:
        conn.exec_driver_sql(f"CREATE INDEX {ASSIGN_TABLE}_ix ON {ASSIGN_TABLE} "
                             "(customer_id, segment)")
    report.sizes = Counter({segment: n for segment, n in conn.execute(text(
        f"SELECT segment, COUNT(*) FROM {ASSIGN_TABLE} GROUP BY segment"))})
    report.customers = conn.execute(text(
        "SELECT COUNT(*) FROM customers WHERE created_at <= :as_of"
        + (f" AND id IN ({among})" if among else ""))
        .bindparams(bindparam("as_of", type_=UTCDateTime())), {"as_of": as_of}).scalar_one()

    step("Finding moves")
    open_stays = "segment_memberships.exited_at IS NULL"
    if only is not None:
        names = ", ".join("'" + name.replace("'", "''") + "'" for name in sorted(only))
        open_stays += f" AND segment_memberships.segment IN ({names})"
    if among is not None:
        open_stays += f" AND segment_memberships.customer_id IN ({among})"
    if write:
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {MOVES_TABLE} (customer_id BIGINT NOT NULL, "
                             f"segment VARCHAR(100) NOT NULL, entered BOOLEAN NOT NULL)")
        if d.pg:  # one full join finds both kinds of move
            conn.exec_driver_sql(f"""
                INSERT INTO {MOVES_TABLE} (customer_id, segment, entered)
                SELECT COALESCE(a.customer_id, sm.customer_id), COALESCE(a.segment, sm.segment),
                       a.customer_id IS NOT NULL
                FROM {ASSIGN_TABLE} AS a FULL JOIN (
                    SELECT customer_id, segment FROM segment_memberships WHERE {open_stays}
                ) AS sm ON sm.customer_id = a.customer_id AND sm.segment = a.segment
                WHERE a.customer_id IS NULL OR sm.customer_id IS NULL""")
        else:
            conn.exec_driver_sql(f"""
                INSERT INTO {MOVES_TABLE} (customer_id, segment, entered)
                SELECT customer_id, segment, FALSE FROM segment_memberships
                WHERE {open_stays} AND NOT EXISTS (
                    SELECT 1 FROM {ASSIGN_TABLE} AS a
                    WHERE a.customer_id = segment_memberships.customer_id
                    AND a.segment = segment_memberships.segment)""")
            conn.exec_driver_sql(f"""
                INSERT INTO {MOVES_TABLE} (customer_id, segment, entered)
                SELECT a.customer_id, a.segment, TRUE FROM {ASSIGN_TABLE} AS a
                WHERE NOT EXISTS (SELECT 1 FROM segment_memberships
                                  WHERE {open_stays}
                                  AND segment_memberships.customer_id = a.customer_id
                                  AND segment_memberships.segment = a.segment)""")
        if not d.pg:  # recording the moves looks them up by customer and segment
            conn.exec_driver_sql(f"CREATE INDEX {MOVES_TABLE}_ix ON {MOVES_TABLE} "
                                 "(customer_id, segment)")
        moves = conn.execute(text(f"SELECT segment, entered, COUNT(*) FROM {MOVES_TABLE} "
                                  "GROUP BY segment, entered")).all()
        step("Recording moves")
        times = {"as_of": as_of, "now": now, "channel": channel}
        _run(conn, f"""
            UPDATE segment_memberships SET exited_at = :as_of
            WHERE {open_stays} AND EXISTS (
                SELECT 1 FROM {MOVES_TABLE} AS x WHERE NOT x.entered
                AND x.customer_id = segment_memberships.customer_id
                AND x.segment = segment_memberships.segment)""", times)
        stages = ", ".join(f"'{stage}'" for stage in STAGES)
        _run(conn, f"""
            INSERT INTO segment_memberships (customer_id, segment, entered_at, reason)
            SELECT a.customer_id, a.segment, :as_of,
                   CASE WHEN a.reason IS NOT NULL THEN a.reason
                        WHEN a.r IS NOT NULL THEN {rfm_reason(d)}
                        WHEN a.segment IN ({stages}) THEN {stage_reason(d)}
                        ELSE {d.json_object()} END
            FROM {ASSIGN_TABLE} AS a JOIN {MOVES_TABLE} AS x
              ON x.entered AND x.customer_id = a.customer_id AND x.segment = a.segment
            LEFT JOIN {METRICS_TABLE} AS m ON m.customer_id = a.customer_id""", times)
        data = d.json_object(("segment", "segment"))
        _run(conn, f"""
            INSERT INTO touchpoints (customer_id, kind, channel, occurred_at, recorded_at, data)
            SELECT customer_id, CASE WHEN entered THEN 'segment_entered' ELSE 'segment_exited' END,
                   :channel, :as_of, :now, {data}
            FROM {MOVES_TABLE}""", times)
        moved = sum(count for _segment, _entered, count in moves)
        if d.pg and moved > ANALYZE_AFTER_MOVES:  # keep plans good for the next refresh
            conn.exec_driver_sql("ANALYZE segment_memberships")
            conn.exec_driver_sql("ANALYZE touchpoints")
    else:
        moves = conn.execute(_statement(f"""
            SELECT segment, entered, COUNT(*) FROM (
                SELECT a.segment, TRUE AS entered FROM {ASSIGN_TABLE} AS a
                WHERE NOT EXISTS (SELECT 1 FROM segment_memberships AS sm
                                  WHERE sm.customer_id = a.customer_id AND sm.segment = a.segment
                                  AND sm.entered_at <= :as_of
                                  AND (sm.exited_at IS NULL OR sm.exited_at > :as_of))
                UNION ALL
                SELECT sm.segment, FALSE FROM segment_memberships AS sm
                WHERE sm.entered_at <= :as_of AND (sm.exited_at IS NULL OR sm.exited_at > :as_of)
                AND NOT EXISTS (SELECT 1 FROM {ASSIGN_TABLE} AS a
                                WHERE a.customer_id = sm.customer_id AND a.segment = sm.segment)
            ) AS diff GROUP BY segment, entered""", {"as_of": as_of}), {"as_of": as_of}).all()
    for segment, entered, count in moves:
        (report.entered if entered else report.exited)[segment] += count
    _drop(conn, METRICS_TABLE, ASSIGN_TABLE, MOVES_TABLE)
    log.log(logging.INFO if among is None else logging.DEBUG,
            "Segments refreshed as of %s for %d customers: %d entries, %d exits%s.",
             as_of.isoformat(), report.customers, sum(report.entered.values()),
             sum(report.exited.values()), "" if write else " (report only)")
    return report


def assignments_for(conn: Connection, defs: Definitions, customer_id: int, as_of: datetime,
                    cutoffs: Cutoffs | None) -> dict[str, dict[str, Any]]:
    """The segments one customer is in as of ``as_of``: ``{segment: reason}``."""
    d = Dialect.of(conn, defs)
    params = Params({"as_of": as_of, "cid": customer_id})
    metrics = f"({metrics_sql(d, ':cid')})"
    sql = assignment_sql(defs, d, as_of, cutoffs, metrics, ":cid", params)
    rows = _run(conn, sql, params.values).all()
    return {row.segment: (json.loads(row.reason) if isinstance(row.reason, str) else row.reason)
            or {} for row in rows}


def refresh_customer(conn: Connection, defs: Definitions, customer_id: int, as_of: datetime,
                     now: datetime, *, channel: str = "system",
                     clock: Clock | None = None) -> tuple[list[str], list[str]]:
    """Bring one customer's memberships up to date; return ``(entered, exited)`` segments.
    ``channel``, ``clock``: as for :func:`refresh_customers`."""
    _lock(conn, shared=True)
    if conn.dialect.name == "postgresql":  # one customer refresh at a time per customer
        conn.execute(text("SELECT pg_advisory_xact_lock(:key, :cid)"),
                     {"key": LOCK_KEY % 2**31, "cid": customer_id % 2**31})
    if clock is not None:  # under the locks (SQLite: the transaction's write lock)
        as_of = now = clock.now()
    cutoffs = _ensure_calibration(conn, defs, Dialect.of(conn, defs), as_of, now)
    wanted = assignments_for(conn, defs, customer_id, as_of, cutoffs)
    current = set(conn.execute(select(SegmentMembership.segment).where(
        SegmentMembership.customer_id == customer_id,
        SegmentMembership.exited_at.is_(None))).scalars())
    entered = sorted(set(wanted) - current)
    exited = sorted(current - set(wanted))
    table = SegmentMembership.__table__
    if exited:
        conn.execute(table.update().where(
            table.c.customer_id == customer_id, table.c.exited_at.is_(None),
            table.c.segment.in_(exited)).values(exited_at=as_of))
    if entered:
        conn.execute(table.insert(), [{"customer_id": customer_id, "segment": s, "entered_at": as_of,
                                       "reason": wanted[s]} for s in entered])
    if entered or exited:
        from lifecycle.models import Touchpoint

        conn.execute(Touchpoint.__table__.insert(), [
            {"customer_id": customer_id, "kind": kind, "channel": channel, "occurred_at": as_of,
             "recorded_at": now, "data": {"segment": s}}
            for kind, names in (("segment_exited", exited), ("segment_entered", entered))
            for s in names])
    return entered, exited
