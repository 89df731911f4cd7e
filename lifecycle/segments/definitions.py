"""Segment definitions from ``flows/segments.yaml``.

The file has four sections (see the shipped file for every setting):

``rfm``
    Rules that name a cell of the R × FM grid (R recency score, FM the mean
    of the frequency and monetary scores rounded up; each 1–5).  The first
    rule that matches wins; together they must cover all 25 cells.
``retention``
    Thresholds of the retention stages.
``advocacy``
    Windows of the NPS, review and referral segments.
``custom``
    Named segments defined by ``all`` / ``any`` / ``not`` conditions over
    purchase metrics, customer attributes, touchpoints, bought products and
    products due again by the customer's own cadence (``due_again``).

Every problem is reported as ``FILE:LINE:COLUMN: message``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lifecycle.durations import parse_duration
from lifecycle.yamlfile import InvalidFile, Located, Problem, load

STAGES = ("prospect", "new", "repeat", "loyal", "vip", "at_risk", "lapsed", "churned")
NPS_SEGMENTS = ("promoter", "passive", "detractor")
ADVOCACY = (*NPS_SEGMENTS, "reviewer", "referrer")
RFM_PREFIX = "rfm_"
#: Metrics of the stored predictions (:mod:`lifecycle.predictions`): none for a customer
#: without one (not a buyer, too little data, or an order since the last fit).
PREDICTION_METRICS = ("p_alive", "expected_orders", "expected_order_value", "predicted_clv")
METRICS = ("order_count", "total_spend", "avg_spend", "days_since_last_order", "median_gap_days",
           "days_since_first_order", *PREDICTION_METRICS)
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
ATTRIBUTE_OPERATORS = (*OPERATORS, "in", "exists", "missing")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RfmRule(_Strict):
    name: str
    r: tuple[int, int] = Field(description="[lowest, highest] recency score")
    fm: tuple[int, int] = Field(description="[lowest, highest] frequency-monetary score")

    @model_validator(mode="after")
    def _check(self) -> RfmRule:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r} must be lower_case letters, digits and _")
        for label, (low, high) in (("r", self.r), ("fm", self.fm)):
            if not 1 <= low <= high <= 5:
                raise ValueError(f"{label} must be [low, high] with 1 <= low <= high <= 5")
        return self

    def matches(self, r: int, fm: int) -> bool:
        return self.r[0] <= r <= self.r[1] and self.fm[0] <= fm <= self.fm[1]


class RfmSettings(_Strict):
    segments: list[RfmRule]

    @model_validator(mode="after")
    def _covers_the_grid(self) -> RfmSettings:
        missing = [f"R{r}/FM{fm}" for r in range(5, 0, -1) for fm in range(1, 6)
                   if not any(rule.matches(r, fm) for rule in self.segments)]
        if missing:
            raise ValueError("no rule covers " + ", ".join(missing))
        return self

    def segment_for(self, r: int, fm: int) -> str:
        return RFM_PREFIX + next(rule.name for rule in self.segments if rule.matches(r, fm))

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(RFM_PREFIX + rule.name for rule in self.segments))


class RetentionSettings(_Strict):
    loyal_min_orders: int = Field(4, ge=2)
    vip_top_percent: float = Field(5.0, gt=0, le=50)
    vip_min_orders: int = Field(2, ge=1)
    at_risk_factor: float = Field(2.0, gt=1)
    min_gap_days: float = Field(7.0, ge=0)
    first_gap_days: float = Field(60.0, gt=0)
    lapsed_days: int = Field(180, gt=0)
    churned_days: int = Field(365, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetentionSettings:
        if self.churned_days <= self.lapsed_days:
            raise ValueError("churned_days must be greater than lapsed_days")
        return self


class AdvocacySettings(_Strict):
    nps_window_days: int = Field(365, gt=0)
    review_window_days: int = Field(365, gt=0)
    referral_window_days: int = Field(365, gt=0)


# ------------------------------------------------------------------ conditions


@dataclass(frozen=True)
class All:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    part: Condition


@dataclass(frozen=True)
class MetricCondition:
    name: str
    op: str
    value: float


@dataclass(frozen=True)
class AttributeCondition:
    name: str
    op: str
    value: Any


@dataclass(frozen=True)
class TouchpointCondition:
    kind: str
    within: relativedelta | None
    at_least: int


@dataclass(frozen=True)
class BoughtCondition:
    field: str  # category or sku
    value: str
    within: relativedelta | None
    at_least: int


@dataclass(frozen=True)
class DueAgainCondition:
    """Due to buy a category (or SKU) again by the customer's own cadence for it.

    The cadence is the mean number of days between the distinct days (UTC dates) on which
    the customer's completed orders had a line of it: (last day − first day) / (days − 1).
    A customer who bought it on one day only has ``first_cycle_days`` as cadence, or none
    (the condition does not hold).  It holds while the whole days since their last
    purchase of it (as ``days_since_last_order`` counts them) are at least
    cadence × ``factor`` and less than cadence × ``give_up``.
    """

    field: str  # category or sku
    value: str
    factor: float = 1.0
    give_up: float = 3.0
    first_cycle_days: float | None = None


Condition = All | AnyOf | Not | MetricCondition | AttributeCondition | TouchpointCondition | \
    BoughtCondition | DueAgainCondition


#: Largest ``factor`` / ``give_up`` of a ``due_again`` condition: a hundred cadences is years
#: for any product bought more than once; larger ones overflow the database's arithmetic.
MAX_CADENCE_MULTIPLE = 100
#: Longest ``first_cycle`` (days).
MAX_FIRST_CYCLE_DAYS = 3650


class _ConditionParser:
    def __init__(self, located: Located) -> None:
        self.located = located
        self.problems: list[Problem] = []

    def fail(self, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append(self.located.problem(path, message))

    def parse(self, node: Any, path: tuple[str | int, ...]) -> Condition | None:
        kinds = ("all", "any", "not", "metric", "attribute", "touchpoint", "bought", "due_again")
        if not isinstance(node, dict) or len(node) != 1 or next(iter(node)) not in kinds:
            self.fail(path, "a condition is one of " + ", ".join(f"'{k}:'" for k in kinds))
            return None
        kind, body = next(iter(node.items()))
        here = path + (kind,)
        if kind in ("all", "any"):
            if not isinstance(body, list) or not body:
                self.fail(here, f"'{kind}' takes a non-empty list of conditions")
                return None
            parts = [self.parse(item, here + (i,)) for i, item in enumerate(body)]
            if any(p is None for p in parts):
                return None
            return (All if kind == "all" else AnyOf)(tuple(p for p in parts if p is not None))
        if kind == "not":
            part = self.parse(body, here)
            return None if part is None else Not(part)
        if not isinstance(body, dict):
            self.fail(here, f"'{kind}' takes a mapping")
            return None
        return getattr(self, f"_{kind}")(body, here)

    def _keys(self, body: dict[str, Any], path: tuple[str | int, ...], required: set[str],
              optional: set[str]) -> bool:
        ok = True
        for key in required - set(body):
            self.fail(path, f"{key} is missing")
            ok = False
        for key in set(body) - required - optional:
            self.fail(path + (key,), f"unknown setting {key!r}; expected "
                                     + ", ".join(sorted(required | optional)))
            ok = False
        return ok

    def _within(self, body: dict[str, Any], path: tuple[str | int, ...]) -> relativedelta | None:
        if "within" not in body:
            return None
        try:
            return parse_duration(body["within"])
        except ValueError as exc:
            self.fail(path + ("within",), str(exc))
            return None

    def _at_least(self, body: dict[str, Any], path: tuple[str | int, ...]) -> int:
        value = body.get("at_least", 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(path + ("at_least",), "at_least must be a whole number of 1 or more")
            return 1
        return value

    def _metric(self, body: dict[str, Any], path: tuple[str | int, ...]) -> Condition | None:
        if not self._keys(body, path, {"name", "op", "value"}, set()):
            return None
        if body["name"] not in METRICS:
            self.fail(path + ("name",), f"unknown metric {body['name']!r}; known: "
                                        + ", ".join(METRICS))
            return None
        if body["op"] not in OPERATORS:
            self.fail(path + ("op",), f"op must be one of {' '.join(OPERATORS)}")
            return None
        value = body["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            self.fail(path + ("value",), "value must be a number (not .nan or .inf)")
            return None
        return MetricCondition(body["name"], body["op"], float(value))

    def _attribute(self, body: dict[str, Any], path: tuple[str | int, ...]) -> Condition | None:
        if not self._keys(body, path, {"name", "op"}, {"value"}):
            return None
        name, op = body["name"], body["op"]
        if not isinstance(name, str) or not name:
            self.fail(path + ("name",), "name must be the attribute's name")
            return None
        if op not in ATTRIBUTE_OPERATORS:
            self.fail(path + ("op",), f"op must be one of {' '.join(ATTRIBUTE_OPERATORS)}")
            return None
        value = body.get("value")
        if op in ("exists", "missing"):
            if "value" in body:
                self.fail(path + ("value",), f"'{op}' takes no value")
                return None
        elif op == "in":
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                self.fail(path + ("value",), "'in' takes a list of texts or numbers")
                return None
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(path + ("value",), "value must be a text or a number")
            return None
        return AttributeCondition(name, op, value)

    def _touchpoint(self, body: dict[str, Any], path: tuple[str | int, ...]) -> Condition | None:
        if not self._keys(body, path, {"kind"}, {"within", "at_least"}):
            return None
        if not isinstance(body["kind"], str) or not body["kind"]:
            self.fail(path + ("kind",), "kind must be a touchpoint kind such as email_opened")
            return None
        return TouchpointCondition(body["kind"], self._within(body, path), self._at_least(body, path))

    def _product(self, kind: str, body: dict[str, Any], path: tuple[str | int, ...],
                 optional: set[str]) -> str | None:
        """Which of ``category`` and ``sku`` a ``bought`` / ``due_again`` condition names (exactly
        one), with only ``optional`` settings beside it; None after reporting a problem."""
        fields = {"category", "sku"} & set(body)
        if len(fields) != 1:
            self.fail(path, f"{kind} needs exactly one of category or sku")
            return None
        field = fields.pop()
        if not self._keys(body, path, {field}, optional):
            return None
        value = body[field]
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            self.fail(path + (field,), f"{field} must be one {field} as text, such as "
                                       f"{'coffee' if field == 'category' else 'COF-ETH'}"
                                       f" (not {value!r}); write one condition per {field}")
            return None
        return field

    def _bought(self, body: dict[str, Any], path: tuple[str | int, ...]) -> Condition | None:
        field = self._product("bought", body, path, {"within", "at_least"})
        if field is None:
            return None
        return BoughtCondition(field, str(body[field]), self._within(body, path),
                               self._at_least(body, path))


    def _due_again(self, body: dict[str, Any], path: tuple[str | int, ...]) -> Condition | None:
        field = self._product("due_again", body, path, {"factor", "give_up", "first_cycle"})
        if field is None:
            return None
        numbers: dict[str, float] = {}
        for key, default in (("factor", 1.0), ("give_up", 3.0)):
            value = body.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value <= MAX_CADENCE_MULTIPLE:  # NaN fails this too
                self.fail(path + (key,), f"{key} must be a number above 0 and at most "
                                         f"{MAX_CADENCE_MULTIPLE} (a multiple of the "
                                         "customer's cadence), such as 1.5")
                return None
            numbers[key] = float(value)
        if numbers["give_up"] <= numbers["factor"]:
            self.fail(path + ("give_up",), f"give_up ({numbers['give_up']:g}) must be more than "
                                           f"factor ({numbers['factor']:g}): it ends the window "
                                           "that factor opens")
            return None
        first = None
        if "first_cycle" in body:
            first = self._days(body["first_cycle"], path + ("first_cycle",))
            if first is None:
                return None
        return DueAgainCondition(field, str(body[field]), numbers["factor"], numbers["give_up"],
                                 first)

    def _days(self, text: Any, path: tuple[str | int, ...]) -> float | None:
        """A duration in days or weeks (``30 days``, ``6 weeks``) as a number of days."""
        try:
            duration = parse_duration(text)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None
        if duration.years or duration.months or duration.hours or duration.minutes:
            self.fail(path, f"{text!r} must be counted in days or weeks (such as '30 days'), "
                            "as a cadence is")
            return None
        if not 0 < duration.days <= MAX_FIRST_CYCLE_DAYS:
            self.fail(path, f"{text!r} must be from 1 day to {MAX_FIRST_CYCLE_DAYS} days (ten "
                            "years)")
            return None
        return float(duration.days)


def parse_condition(located: Located, node: Any, path: tuple[str | int, ...]
                    ) -> tuple[Condition | None, list[Problem]]:
    """A condition in the custom segments' language (``all``/``any``/``not``, ``metric``,
    ``attribute``, ``touchpoint``, ``bought``, ``due_again``) found at ``path`` of
    ``located``: the condition (None if it has problems) and the problems.  A campaign's
    audience takes one (:mod:`lifecycle.campaigns.spec`)."""
    parser = _ConditionParser(located)
    condition = parser.parse(node, path)
    return (condition if not parser.problems else None), parser.problems


@dataclass(frozen=True)
class CustomSegment:
    name: str
    description: str
    condition: Condition
    #: The segment as the file writes it: ``custom: {name: …}`` as YAML text.
    source: str = field(default="", compare=False)


#: Words that do not read right with underscores turned into spaces.
_SPELLED = {"cant": "can't", "dont": "don't", "wont": "won't", "vip": "VIP", "nps": "NPS"}


def segment_words(segment: str) -> str:
    """A segment's name as words for people: ``rfm_cant_lose_them`` → "Can't lose them (RFM)",
    ``at_risk`` → "At risk".  Pages, badges, the timeline and the command line all use it."""
    rfm = segment.startswith(RFM_PREFIX)
    name = segment[len(RFM_PREFIX):] if rfm else segment
    words = " ".join(_SPELLED.get(w, w) for w in name.split("_") if w)
    words = words[:1].upper() + words[1:]
    return f"{words} (RFM)" if rfm else words


@dataclass(frozen=True)
class Definitions:
    file: str
    rfm: RfmSettings
    retention: RetentionSettings
    advocacy: AdvocacySettings
    custom: tuple[CustomSegment, ...]
    #: The shop's reporting currency (``LIFECYCLE_CURRENCY``): spend metrics count only
    #: orders in it.  Not part of the file; :func:`lifecycle.segments.service.definitions`
    #: sets it from the settings.
    currency: str = "USD"
    #: The shop's time zone (``LIFECYCLE_TIMEZONE``): predictions count purchase days in it.
    timezone: str = "UTC"
    #: ``LIFECYCLE_PREDICTION_HORIZON_DAYS``: the days a prediction's expected orders cover.
    prediction_horizon_days: int = 90

    def for_shop(self, settings: Any) -> Definitions:
        """These definitions with the shop's settings they do not come with: the reporting
        currency, the time zone and the prediction horizon."""
        from dataclasses import replace

        return replace(self, currency=settings.currency, timezone=settings.timezone,
                       prediction_horizon_days=settings.prediction_horizon_days)

    def all_names(self) -> list[str]:
        return [*STAGES, *self.rfm.names, *ADVOCACY, *(c.name for c in self.custom)]

    def family(self, segment: str) -> str:
        if segment in STAGES:
            return "retention"
        if segment.startswith(RFM_PREFIX):
            return "rfm"
        if segment in ADVOCACY:
            return "advocacy"
        return "custom"


def parse(located: Located) -> Definitions:
    """Validate parsed YAML; raise :class:`InvalidFile` listing every problem."""
    data = located.data
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise InvalidFile([located.problem((), "the file must be a mapping with rfm, retention, "
                                               "advocacy and custom sections")])
    for key in set(data) - {"rfm", "retention", "advocacy", "custom"}:
        problems.append(located.problem((key,), f"unknown section {key!r}; expected rfm, "
                                                "retention, advocacy or custom"))
    sections: dict[str, Any] = {}
    for key, model in (("rfm", RfmSettings), ("retention", RetentionSettings),
                       ("advocacy", AdvocacySettings)):
        if key not in data:
            if key == "rfm":
                problems.append(located.problem((), "the rfm section is missing"))
            else:
                sections[key] = model()
            continue
        try:
            sections[key] = model.model_validate(data[key] or {})
        except ValidationError as exc:
            problems.extend(located.problems_from(exc, (key,)))
    custom: list[CustomSegment] = []
    raw_custom = data.get("custom") or {}
    if not isinstance(raw_custom, dict):
        problems.append(located.problem(("custom",), "custom must map segment names to conditions"))
        raw_custom = {}
    parser = _ConditionParser(located)
    builtin = set(STAGES) | set(ADVOCACY) | set(sections["rfm"].names if "rfm" in sections else ())
    for name, body in raw_custom.items():
        path: tuple[str | int, ...] = ("custom", name)
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(located.problem(path, f"{name!r} must be lower_case letters, digits and _"))
            continue
        if name in builtin or name.startswith(RFM_PREFIX):
            problems.append(located.problem(path, f"{name!r} is already a built-in segment"))
            continue
        if not isinstance(body, dict):
            problems.append(located.problem(path, "a custom segment is a mapping with a condition"))
            continue
        description = body.get("description", "")
        rule = {k: v for k, v in body.items() if k != "description"}
        condition = parser.parse(rule, path)
        if condition is not None:
            source = yaml.safe_dump({"custom": {name: body}}, sort_keys=False,
                                    allow_unicode=True)
            custom.append(CustomSegment(name, str(description), condition, source))
    problems.extend(parser.problems)
    if problems:
        raise InvalidFile(sorted(problems, key=lambda p: (p.line, p.column)))
    return Definitions(located.file, sections["rfm"], sections["retention"], sections["advocacy"],
                       tuple(custom))


def load_definitions(path: Path) -> Definitions:
    return parse(load(path))
