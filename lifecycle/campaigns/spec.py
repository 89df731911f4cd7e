"""A campaign as a manager writes it: a file ``campaigns/<name>.yaml``, the web form or the
command line, all in this one shape::

    description: The spring collection, for our best customers
    kind: marketing                  # or transactional (a service notice: no consent needed)
    send: {template: spring, offer: {percent: 10, valid: 14 days, prefix: SPRING}}
    #  A/B: send: {variants: [{template: spring_a}, {template: spring_b}]}
    audience:
      segments: [loyal, vip]         # anyone in any of them
      where: {metric: {name: total_spend, op: ">=", value: 100}}   # optional, segment language
      exclude: [lapsed]              # optional: nobody in any of these
    schedule: now                    # or {at: "2026-12-05T09:00:00Z"}, or {local_time: "10:00"}
    throttle: {per_hour: 5000}       # optional; or {over: 6 hours}
    ab_test: {share: 20%, winner_by: clicks, after: 4 hours}   # with two or more variants

``send`` is a flow's send step (templates with their locales, variants, an offer), parsed by
the flows' own parser; ``where`` is a custom segment's condition, parsed by the segments'.
Every problem is reported as ``FILE:LINE:COLUMN: message``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta

from lifecycle.durations import parse_clock, parse_duration
from lifecycle.flows.definitions import Context, Send, parse_send
from lifecycle.segments.definitions import Condition, parse_condition
from lifecycle.timeutil import UTC, parse_instant
from lifecycle.yamlfile import InvalidFile, Located, Problem

#: A campaign's name: as a flow's, so it reads in URLs, files and UTM parameters.
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
KINDS = ("marketing", "transactional")
WINNER_BY = ("opens", "clicks", "conversions")
#: Longest a throttled campaign may take, and the most a local-time one waits (days).
MAX_SPREAD = timedelta(days=7)
#: Slowest throttle (mails an hour).
MIN_PER_HOUR = 1


@dataclass(frozen=True)
class Schedule:
    """``now``; ``at`` a moment (UTC); or ``local_time`` (hour, minute): each customer's next
    such time in their own zone, within 24 hours of the start."""

    kind: str
    at: datetime | None = None
    local_time: tuple[int, int] | None = None


@dataclass(frozen=True)
class AbTest:
    share: float  # of the audience that gets the variants, 0 < share < 1
    winner_by: str  # opens, clicks or conversions
    after: timedelta  # from the start until the winner goes to the rest


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    description: str
    kind: str
    send: Send
    segments: tuple[str, ...]
    exclude: tuple[str, ...]
    where: Condition | None
    #: The ``where`` condition as written (kept with the campaign, shown on its page).
    where_source: Any
    schedule: Schedule
    #: Mails an hour at most (None: as fast as the workers go, under LIFECYCLE_SEND_RATE).
    per_hour: float | None
    ab_test: AbTest | None

    @property
    def marketing(self) -> bool:
        return self.kind == "marketing"


def _seconds(delta: relativedelta | timedelta) -> timedelta:
    """A duration as a fixed span (months and years counted from 2000-01-01)."""
    if isinstance(delta, timedelta):
        return delta
    start = datetime(2000, 1, 1, tzinfo=UTC)
    return (start + delta) - start


def _share(value: Any) -> float | None:
    """``20%``, ``0.2`` or ``20`` (percent) as a share; None if it is not one."""
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            share = float(value.strip()[:-1]) / 100
        elif isinstance(value, int | float) and not isinstance(value, bool):
            share = float(value) / 100 if value > 1 else float(value)
        else:
            return None
    except ValueError:
        return None
    return share if 0 < share < 1 else None


def parse_spec(located: Located, name: str, context: Context) -> CampaignSpec:
    """The campaign ``name`` from parsed YAML (or the same shape from a form); raise
    :class:`InvalidFile` listing every problem at its place."""
    problems: list[Problem] = []

    def fail(path: tuple[str | int, ...], message: str) -> None:
        problems.append(located.problem(path, message))

    data = located.data
    if not isinstance(data, dict):
        raise InvalidFile([located.problem((), "a campaign is a mapping with send, audience "
                                               "and schedule")])
    if not NAME.match(name):
        fail((), f"the campaign's name {name!r} must be lower_case letters, digits, - and _ "
                 "(at most 63), starting with a letter")
    allowed = {"description", "kind", "send", "audience", "schedule", "throttle", "ab_test"}
    for key in data:
        if key not in allowed:
            fail((key,), f"unknown setting {key!r}; expected " + ", ".join(sorted(allowed)))
    for key in ("send", "audience"):
        if key not in data:
            fail((), f"{key} is missing")
    kind = data.get("kind", "marketing")
    if kind not in KINDS:
        fail(("kind",), "kind must be marketing or transactional")
    description = data.get("description", "")
    if not isinstance(description, str):
        fail(("description",), "description must be text")
        description = ""

    send, send_problems = (parse_send(located, context, data["send"], ("send",))
                           if "send" in data else (None, []))
    problems.extend(send_problems)
    if send is not None and send.offer is not None and context.folder is not None:
        for variant in send.variants:
            if not shows_offer(context.folder / variant.template):
                fail(("send", "offer"), f"the template {variant.template} never shows the "
                                        "offer (no `offer` in any of its parts): customers "
                                        "would get a code they never see; show {{ offer.code }}"
                                        " in it (as winback_2 does), or leave the offer out")

    segments: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    where = where_source = None
    audience = data.get("audience")
    if "audience" in data:
        if not isinstance(audience, dict):
            fail(("audience",), "audience is a mapping: segments (a list), where, exclude")
        else:
            for key in audience:
                if key not in ("segments", "where", "exclude"):
                    fail(("audience", key), f"unknown setting {key!r}; expected exclude, "
                                            "segments, where")
            segments = _segment_list(audience, "segments", context, fail, required=True)
            exclude = _segment_list(audience, "exclude", context, fail, required=False)
            if "where" in audience:
                where_source = audience["where"]
                where, where_problems = parse_condition(located, audience["where"],
                                                        ("audience", "where"))
                problems.extend(where_problems)

    schedule = _schedule(data.get("schedule", "now"), fail)
    per_hour = _throttle(data["throttle"], fail) if "throttle" in data else None
    ab_test = None
    if "ab_test" in data:
        ab_test = _ab_test(data["ab_test"], fail)
        if send is not None and len(send.variants) < 2:
            fail(("ab_test",), "ab_test needs two or more variants: send: {variants: "
                               "[{template: a}, {template: b}]}")
    if problems:
        raise InvalidFile(sorted(problems, key=lambda p: (p.line, p.column)))
    assert send is not None
    return CampaignSpec(name, description, kind, send, segments, exclude, where, where_source,
                        schedule, per_hour, ab_test)


def shows_offer(folder: Path) -> bool:
    """Whether any part of the email in ``folder`` (any locale) names ``offer``."""
    return any("offer" in part.read_text(encoding="utf-8", errors="replace")
               for part in folder.rglob("*") if part.is_file()
               and part.suffix in (".txt", ".html"))


def _segment_list(audience: dict[str, Any], key: str, context: Context, fail: Any,
                  required: bool) -> tuple[str, ...]:
    value = audience.get(key)
    if value is None:
        if required:
            fail(("audience",), "segments is missing: the audience is one or more segments")
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (required and not value):
        fail(("audience", key), f"{key} takes a list of segment names, e.g. [loyal, vip]")
        return ()
    names = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            fail(("audience", key, i), f"a segment is named by its name, not {name!r}")
        elif context.segments_known and name not in context.segments:
            from lifecycle.flows.definitions import did_you_mean

            fail(("audience", key, i), f"unknown segment {name!r}"
                                       f"{did_you_mean(name, context.segments)}; see "
                                       "flows/segments.yaml (`lifecycle segments list`)")
        else:
            names.append(name)
    return tuple(dict.fromkeys(names))


def _schedule(value: Any, fail: Any) -> Schedule:
    if value == "now":
        return Schedule("now")
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in (
            "at", "local_time"):
        fail(("schedule",), "schedule is now, {at: \"2026-12-05T09:00:00Z\"} or "
                            "{local_time: \"10:00\"}")
        return Schedule("now")
    key, raw = next(iter(value.items()))
    if key == "at":
        try:
            at = parse_instant(raw.isoformat() if isinstance(raw, datetime) else str(raw))
        except ValueError as exc:
            fail(("schedule", "at"), f"at: {exc}")
            return Schedule("now")
        return Schedule("at", at=at)
    try:
        return Schedule("local_time", local_time=parse_clock(raw, "local_time"))
    except ValueError as exc:
        fail(("schedule", "local_time"), str(exc))
        return Schedule("now")


def _throttle(value: Any, fail: Any) -> float | None:
    """Mails an hour from ``{per_hour: N}`` or ``{over: DURATION}`` (:func:`per_hour_for`
    turns ``over`` into a rate once the audience is known: kept negative here)."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in (
            "per_hour", "over"):
        fail(("throttle",), "throttle is {per_hour: 5000} or {over: 6 hours}")
        return None
    key, raw = next(iter(value.items()))
    if key == "per_hour":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < MIN_PER_HOUR:
            fail(("throttle", "per_hour"), "per_hour must be a whole number of mails, 1 or more")
            return None
        return float(raw)
    try:
        span = _seconds(parse_duration(raw))
    except ValueError as exc:
        fail(("throttle", "over"), str(exc))
        return None
    if not timedelta(minutes=1) <= span <= MAX_SPREAD:
        fail(("throttle", "over"), "over must be from 1 minute to 7 days")
        return None
    return -span.total_seconds()  # a span, not a rate: see per_hour_for


def per_hour_for(spec: CampaignSpec, audience: int) -> float | None:
    """The campaign's rate (mails an hour) for an audience of ``audience`` mails: its
    ``per_hour``, or the rate that spreads the audience over its ``over``."""
    if spec.per_hour is None or spec.per_hour > 0:
        return spec.per_hour
    hours = -spec.per_hour / 3600
    return max(audience / hours, MIN_PER_HOUR) if audience else None


def _ab_test(value: Any, fail: Any) -> AbTest | None:
    if not isinstance(value, dict):
        fail(("ab_test",), "ab_test is {share: 20%, winner_by: clicks, after: 4 hours}")
        return None
    for key in value:
        if key not in ("share", "winner_by", "after"):
            fail(("ab_test", key), f"unknown setting {key!r}; expected after, share, winner_by")
    share = _share(value.get("share"))
    if share is None:
        fail(("ab_test", "share"), "share is the part of the audience that tests the variants, "
                                   "more than 0% and less than 100% (e.g. 20%)")
    winner_by = value.get("winner_by")
    if winner_by not in WINNER_BY:
        fail(("ab_test", "winner_by"), "winner_by is opens (human opens), clicks or "
                                       "conversions")
    try:
        after = _seconds(parse_duration(value.get("after")))
    except ValueError as exc:
        fail(("ab_test", "after"), f"after: {exc}")
        return None
    if not timedelta(minutes=30) <= after <= MAX_SPREAD:
        fail(("ab_test", "after"), "after must be from 30 minutes to 7 days")
        return None
    if share is None or winner_by not in WINNER_BY:
        return None
    return AbTest(share, winner_by, after)
