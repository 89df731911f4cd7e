"""A campaign's audience in set-based SQL, the same on SQLite and PostgreSQL.

:func:`audience_query` selects every customer in any of the campaign's segments (open
stays), not in any excluded one, for whom its ``where`` condition holds, with the reason
each is left out (None: mailed), first that applies:

``no email address``; ``unsubscribed or suppressed`` (a suppression of the address for
all mail, or for marketing when the campaign is marketing: unsubscribes, bounces, spam
reports); ``no marketing consent`` (marketing); ``frequency cap`` (marketing: the customer
already got ``policies.cap`` capped marketing mails in the cap's window); ``another
marketing mail that day`` (marketing, with ``one_marketing_flow_per_day``: a marketing mail
of a flow due from 12 hours before the start to 24 hours after it).

:func:`fix_audience` writes it into ``campaign_members`` (one ``INSERT … SELECT``) and
:func:`write_mails` turns the members to be mailed into outbox rows (one more), each due at
its zone's time, spread at the campaign's rate.  The send-time checks still run for every
mail (an unsubscribe between the start and the send withholds it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, text

from lifecycle.campaigns.spec import CampaignSpec
from lifecycle.flows.timing import QuietHours
from lifecycle.segments.sql import Dialect, Params, Who, _condition, metrics_sql
from lifecycle.timeutil import UTC, zone

#: The reasons a customer of the audience gets no mail, in the order they are decided.
NO_EMAIL = "no email address"
SUPPRESSED = "unsubscribed or suppressed"
NO_CONSENT = "no marketing consent"
CAPPED = "frequency cap"
SAME_DAY = "another marketing mail that day"
REASONS = (NO_EMAIL, SUPPRESSED, NO_CONSENT, CAPPED, SAME_DAY)
#: Around the start, the window in which a flow's marketing mail makes a customer left out.
SAME_DAY_BEFORE, SAME_DAY_AFTER = timedelta(hours=12), timedelta(hours=24)


@dataclass(frozen=True)
class Rules:
    """What decides who is left out, from ``policies.yaml`` (:class:`lifecycle.flows.engine.
    Policies`) and the settings."""

    cap: int
    cap_window: timedelta
    one_per_day: bool
    quiet: QuietHours
    default_tz: str
    currency: str


def email_hash_sql(d: Dialect, column: str) -> str:
    """SQL for :func:`lifecycle.models.email_hash` of ``column`` (SQLite: the function
    :mod:`lifecycle.db` registers on each connection)."""
    if d.pg:
        return f"encode(sha256(convert_to(lower(btrim({column})), 'UTF8')), 'hex')"
    return f"lifecycle_email_hash({column})"


def _flag(d: Dialect, document: str, key: str) -> str:
    """``document``'s boolean ``key`` is true."""
    if d.pg:
        return f"(({document} ->> '{key}') = 'true')"
    return f"(json_extract({document}, '$.{key}') = 1)"


def audience_query(spec: CampaignSpec, d: Dialect, p: Params, start: datetime,
                   rules: Rules) -> str:
    """``SELECT customer_id, zone, left_out`` for the campaign's audience as of ``start``
    (parameters in ``p``, ``:as_of`` among them)."""
    p.values["as_of"] = start
    segments = ", ".join(p.add(s) for s in spec.segments)
    excluded = ""
    if spec.exclude:
        names = ", ".join(p.add(s) for s in spec.exclude)
        excluded = (f"AND id NOT IN (SELECT customer_id FROM segment_memberships "
                    f"WHERE exited_at IS NULL AND segment IN ({names}))")
    where = "1 = 1"
    metrics = ""
    if spec.where is not None:
        where = _condition(spec.where, d, p, start, Who())
        metrics = (f"LEFT JOIN ({metrics_sql(d, None, among='SELECT id FROM c')}) AS m "
                   "ON m.customer_id = c.id")
    scopes = "('all', 'marketing')" if spec.marketing else "('all')"
    reasons = [f"WHEN c.email IS NULL OR c.email = '' THEN {p.add(NO_EMAIL)}",
               f"WHEN EXISTS (SELECT 1 FROM suppressions AS s WHERE s.email_hash = "
               f"{email_hash_sql(d, 'c.email')} AND s.scope IN {scopes}) THEN {p.add(SUPPRESSED)}"]
    joins = ""
    if spec.marketing:
        reasons.append(f"WHEN NOT c.marketing_consent THEN {p.add(NO_CONSENT)}")
        # Each rule over the mails already written is one pass over them grouped by customer,
        # joined: never a subquery per customer, whose index the planner may misjudge (with
        # statistics from before a busy day of sending, one ran for minutes per 100,000).
        joins += (
            f" LEFT JOIN (SELECT x.customer_id, COUNT(*) AS n FROM messages AS x "
            f"WHERE x.status = 'sent' AND x.sent_at > {p.add(start - rules.cap_window)} "
            f"AND {_flag(d, 'x.context', 'capped')} GROUP BY x.customer_id) AS capped "
            "ON capped.customer_id = c.id")
        reasons.append(f"WHEN COALESCE(capped.n, 0) >= {p.add(rules.cap)} THEN {p.add(CAPPED)}")
        if rules.one_per_day:
            joins += (
                f" LEFT JOIN (SELECT DISTINCT y.customer_id FROM messages AS y "
                f"WHERE y.flow IS NOT NULL "
                f"AND y.status IN ('scheduled', 'queued', 'sending', 'sent') "
                f"AND y.due_at > {p.add(start - SAME_DAY_BEFORE)} "
                f"AND y.due_at < {p.add(start + SAME_DAY_AFTER)} "
                f"AND {_flag(d, 'y.context', 'marketing')}) AS same_day "
                "ON same_day.customer_id = c.id")
            reasons.append(f"WHEN same_day.customer_id IS NOT NULL THEN {p.add(SAME_DAY)}")
    return f"""
        WITH c AS (SELECT * FROM customers WHERE id IN (
                       SELECT customer_id FROM segment_memberships
                       WHERE exited_at IS NULL AND segment IN ({segments})) {excluded})
        SELECT c.id AS customer_id, COALESCE(c.timezone, {p.add(rules.default_tz)}) AS zone,
               CASE {' '.join(reasons)} ELSE NULL END AS left_out
        FROM c{joins} {metrics}
        WHERE {where}"""


def dialect(conn: Connection, rules: Rules) -> Dialect:
    return Dialect(conn.dialect.name, rules.currency)


def count_audience(conn: Connection, spec: CampaignSpec, start: datetime,
                   rules: Rules) -> tuple[int, dict[str, int]]:
    """How many customers the audience has now, and how many of them would be left out, by
    reason (:data:`REASONS`): what the form shows before sending.  Reads only."""
    p = Params()
    query = audience_query(spec, dialect(conn, rules), p, start, rules)
    rows = conn.execute(text(f"SELECT left_out, COUNT(*) AS n FROM ({query}) AS a "
                             "GROUP BY left_out"), p.values).all()
    left = {row.left_out: int(row.n) for row in rows if row.left_out is not None}
    return sum(int(row.n) for row in rows), {r: left.get(r, 0) for r in REASONS}


def fix_audience(conn: Connection, campaign_id: int, spec: CampaignSpec, start: datetime,
                 rules: Rules) -> tuple[int, int]:
    """Write the audience into ``campaign_members`` in one ``INSERT … SELECT``: the A/B
    group and variant of each (a deterministic shuffle by customer id), and why one is left
    out.  (audience size, members to mail)."""
    d = dialect(conn, rules)
    p = Params()
    query = audience_query(spec, d, p, start, rules)
    variants = [v.template for v in spec.send.variants]
    k = len(variants)
    # the mailed and the left out are ranked apart, each in a shuffle that is the same on
    # both databases (Knuth's multiplicative hash of the id): the A/B groups and variants
    # are drawn among the mailed
    apart = "PARTITION BY CASE WHEN a.left_out IS NULL THEN 1 ELSE 0 END"
    shuffled = (f"ROW_NUMBER() OVER ({apart} ORDER BY (a.customer_id * 2654435761) "
                "% 4294967296, a.customer_id)")
    mailed = f"COUNT(*) OVER ({apart})"
    variant_of = "CASE ((r.pos - 1) % {k}) " + " ".join(
        f"WHEN {i} THEN {p.add(v)}" for i, v in enumerate(variants)) + " END"
    if spec.ab_test is not None:
        share = p.add(spec.ab_test.share)
        grp = f"CASE WHEN r.pos <= CEIL(r.n * {share}) THEN 'test' ELSE 'rest' END" if d.pg \
            else (f"CASE WHEN r.pos <= CAST(r.n * {share} AS INTEGER) + "
                  f"(r.n * {share} > CAST(r.n * {share} AS INTEGER)) THEN 'test' ELSE 'rest' END")
        variant = f"CASE WHEN {grp} = 'test' THEN {variant_of.format(k=k)} END"
    else:
        grp = "'all'"
        variant = variant_of.format(k=k) if k > 1 else p.add(variants[0])
    conn.execute(text(f"""
        INSERT INTO campaign_members (campaign_id, customer_id, grp, variant, left_out)
        SELECT {p.add(campaign_id)}, r.customer_id,
               CASE WHEN r.left_out IS NULL THEN {grp} ELSE 'all' END,
               CASE WHEN r.left_out IS NULL THEN {variant} END, r.left_out
        FROM (SELECT a.customer_id, a.left_out,
                     {shuffled} AS pos, {mailed} AS n
              FROM ({query}) AS a) AS r"""), p.values)
    size, to_mail = conn.execute(text(
        "SELECT COUNT(*), COUNT(*) - COUNT(left_out) FROM campaign_members "
        "WHERE campaign_id = :cid"), {"cid": campaign_id}).one()
    return int(size), int(to_mail)


def zone_due(zones: list[str], spec: CampaignSpec, start: datetime,
             quiet: QuietHours) -> dict[str, datetime]:
    """When the first mail of each zone is due: the start (``now`` / ``at``) or the zone's
    next ``local_time`` at or after it, then out of the quiet hours."""
    due = {}
    for name in zones:
        try:
            tz = zone(name)
        except ValueError:
            tz, name_ok = UTC, False
        else:
            name_ok = True
        moment = start
        if spec.schedule.local_time is not None:
            hour, minute = spec.schedule.local_time
            local = start.astimezone(tz)
            at = datetime.combine(local.date(), time(hour, minute), tzinfo=tz)
            if at < local:
                at = datetime.combine(local.date() + timedelta(days=1), time(hour, minute),
                                      tzinfo=tz)
            moment = at.astimezone(UTC)
        due[name] = quiet.next_allowed(moment, name if name_ok else "UTC")
    return due


def write_mails(conn: Connection, campaign_id: int, name: str, spec: CampaignSpec,
                start: datetime, now: datetime, rules: Rules, group: str,
                per_hour: float | None, winner: str | None = None) -> int:
    """Outbox rows for the members of ``group`` (``all`` and ``test`` at the start, ``rest``
    with the ``winner`` once it is known) in one ``INSERT … SELECT``; the rows written.
    Each is due at its zone's time (:func:`zone_due`), the ``n``-th of a zone ``n`` ×
    3600 / ``per_hour`` seconds later.  A row already written (the same decision taken
    again) is skipped: the key is ``campaign:<id>:<customer id>``."""
    d = dialect(conn, rules)
    p = Params()
    groups = ("all", "test") if group != "rest" else ("rest",)
    leave_out_lost_addresses(conn, campaign_id, groups)
    zones = [row.zone for row in conn.execute(text(
        "SELECT DISTINCT COALESCE(c.timezone, :tz) AS zone FROM campaign_members AS cm "
        "JOIN customers AS c ON c.id = cm.customer_id WHERE cm.campaign_id = :cid "
        "AND cm.left_out IS NULL AND cm.grp IN :groups").bindparams(
            bindparam("groups", expanding=True)),
        {"tz": rules.default_tz, "cid": campaign_id, "groups": list(groups)})]
    if not zones:
        return 0
    due = zone_due(zones, spec, start, rules.quiet)
    zone_sql = f"COALESCE(c.timezone, {p.add(rules.default_tz)})"
    base = "CASE " + zone_sql + " " + " ".join(
        f"WHEN {p.add(z)} THEN {p.add(at)}" for z, at in due.items()) + " END"
    step = 3600.0 / per_hour if per_hour else 0.0
    rank = f"(ROW_NUMBER() OVER (PARTITION BY {zone_sql} ORDER BY cm.customer_id) - 1)"
    if not step:
        due_sql = base
    elif d.pg:
        due_sql = f"({base} + make_interval(secs => {rank} * {p.add(step)}))"
    else:
        due_sql = (f"strftime('%Y-%m-%d %H:%M:%f', {base}, '+' || ({rank} * {p.add(step)}) "
                   "|| ' seconds')")
    contexts = {}
    for v in spec.send.variants:
        context: dict[str, Any] = {
            "marketing": spec.marketing, "capped": spec.marketing, "campaign": name,
            "utm": {"campaign": name, "content": v.template}}
        contexts[v.template] = json.dumps(context, separators=(",", ":"))
    cast = "CAST({} AS JSONB)" if d.pg else "{}"
    # the winner is one parameter used as text in several places: cast once, or PostgreSQL
    # deduces clashing types for it
    variant_col = "cm.variant" if group != "rest" else f"CAST({p.add(winner)} AS VARCHAR(100))"
    context_sql = "CASE " + variant_col + " " + " ".join(
        f"WHEN {p.add(t)} THEN {cast.format(p.add(c))}" for t, c in contexts.items()) + " END"
    key = (f"'campaign:' || CAST({p.add(campaign_id)} AS TEXT) || ':' || "
           "CAST(cm.customer_id AS TEXT)")
    variant_value = variant_col if len(spec.send.variants) > 1 else "NULL"
    groups_sql = ", ".join(p.add(g) for g in groups)
    now_p = p.add(now)
    written = conn.execute(text(f"""
        INSERT INTO messages (idempotency_key, customer_id, campaign_id, template, variant,
                              to_email, status, due_at, attempts, context, attempt_log,
                              created_at, updated_at)
        SELECT {key}, cm.customer_id, {p.add(campaign_id)}, {variant_col}, {variant_value},
               c.email, 'scheduled', {due_sql}, 0, {context_sql},
               {cast.format(p.add('[]'))}, {now_p}, {now_p}
        FROM campaign_members AS cm JOIN customers AS c ON c.id = cm.customer_id
        WHERE cm.campaign_id = {p.add(campaign_id)} AND cm.left_out IS NULL
          AND cm.grp IN ({groups_sql}) AND c.email IS NOT NULL AND c.email <> ''
        ON CONFLICT (idempotency_key) DO NOTHING"""), p.values).rowcount
    return int(written)


def leave_out_lost_addresses(conn: Connection, campaign_id: int, groups: tuple[str, ...]) -> int:
    """Members of ``groups`` whose address is gone since the audience was fixed (erased, or
    their email removed before the A/B winner went to the rest): left out, with the reason
    ``no email address``; how many."""
    return int(conn.execute(text(
        "UPDATE campaign_members SET left_out = :why WHERE campaign_id = :cid "
        "AND left_out IS NULL AND grp IN :groups AND customer_id IN ("
        "SELECT id FROM customers WHERE email IS NULL OR email = '')").bindparams(
            bindparam("groups", expanding=True)),
        {"why": NO_EMAIL, "cid": campaign_id, "groups": list(groups)}).rowcount)


def left_out_counts(conn: Connection, campaign_id: int) -> Mapping[str, int]:
    """The fixed audience's members left out, by reason."""
    rows = conn.execute(text("SELECT left_out, COUNT(*) AS n FROM campaign_members "
                             "WHERE campaign_id = :cid AND left_out IS NOT NULL "
                             "GROUP BY left_out"), {"cid": campaign_id}).all()
    found = {row.left_out: int(row.n) for row in rows}
    return {r: found.get(r, 0) for r in REASONS}

