"""Flow files: parsing and checking what CRM managers write.

A flow file (``flows/<name>.yaml``) has a trigger, optional goals, a re-entry
policy and a list of steps::

    description: Thank every first-time buyer
    kind: transactional          # or marketing (needs consent, counts towards the cap)
    priority: 80                 # higher wins when two flows want one customer the same day
    trigger:
      first_order: {}
    reentry: once                # once | every_time | {once_per: 90 days}
    goals:                       # checked before every step; the first that holds ends the flow
      - ordered: true
    utm: {campaign: thanks}      # optional: UTM on shop links (false: none; lifecycle.mail.utm)
    status: live                 # draft | live | paused (lifecycle.flows.states)
    steps:
      - id: pause
        wait: 3 hours
      - id: thanks
        send: thank_you

:func:`check` reports every problem as ``FILE:LINE:COLUMN: message``: unknown
keys, templates or segments, bad durations, targets that do not exist,
unreachable steps, loops without a wait and branches with no way out.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta

from lifecycle.durations import WEEKDAYS, parse_business_days, parse_clock, parse_duration
from lifecycle.locales import parse_locale
from lifecycle.mail.templates import emails_in
from lifecycle.money import known_currency
from lifecycle.yamlfile import InvalidFile, Located, Problem, load

KINDS = ("marketing", "transactional")
TRIGGERS = ("order_placed", "first_order", "segment_entered", "segment_exited", "date",
            "feedback_received", "email_replied", "email_clicked", "event")
STEP_KINDS = ("wait", "send", "branch", "set", "exit")
#: A flow's status (:mod:`lifecycle.flows.states`): only a live flow enrols and advances.
STATUSES = ("draft", "live", "paused")
#: A step id: letters of any language (ü, ø, ł, ß …), digits, - and _, starting with a letter
#: or a digit, at most 63 characters.
_ID = re.compile(r"^[^\W_][\w-]{0,62}\Z")
END = "exit"  # a branch target that ends the flow
#: Steps one flow may have (its checks follow every path through them).
MAX_STEPS = 200


@dataclass(frozen=True)
class Trigger:
    kind: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Wait:
    duration: relativedelta | None = None
    business_days: int | None = None
    until_weekday: int | None = None  # 0 = Monday
    at: tuple[int, int] | None = None  # local time of day to resume at


@dataclass(frozen=True)
class Variant:
    template: str
    weight: int


#: What an offer gives: a share off, an amount off, or the shipping.
OFFER_KINDS = ("percent", "fixed", "free_shipping")


@dataclass(frozen=True)
class Offer:
    """A discount the mail hands out: a code made for the customer and the step when the
    mail is decided, and stored (:mod:`lifecycle.offers`).

    ``kind`` is ``percent`` (``percent`` set), ``fixed`` (``amount`` and ``currency``)
    or ``free_shipping`` (neither).
    """

    kind: str
    valid: relativedelta
    prefix: str
    percent: int | None = None
    amount: Decimal | None = None
    currency: str | None = None

    @property
    def value(self) -> str:
        """The raw value as text: ``15`` (percent), ``5.00`` (fixed), ``""`` (free shipping)."""
        if self.kind == "percent":
            return str(self.percent)
        if self.kind == "fixed":
            return str(self.amount)
        return ""


@dataclass(frozen=True)
class Send:
    variants: tuple[Variant, ...]
    offer: Offer | None = None


@dataclass(frozen=True)
class Branch:
    condition: dict[str, Any]
    then: str
    otherwise: str


@dataclass(frozen=True)
class SetValue:
    attribute: str
    value: Any


@dataclass(frozen=True)
class Exit:
    reason: str


@dataclass(frozen=True)
class Step:
    id: str
    action: Wait | Send | Branch | SetValue | Exit


@dataclass(frozen=True)
class Flow:
    name: str
    file: str
    description: str
    kind: str
    priority: int
    trigger: Trigger
    reentry: str  # once, every_time, or once_per
    reentry_period: relativedelta | None
    goals: tuple[dict[str, Any], ...]
    steps: tuple[Step, ...]
    exempt_from_cap: bool = False
    #: How the preferences page names the flow to a customer: locale -> text (``""``: any
    #: language); empty: the description.
    labels: dict[str, str] = field(default_factory=dict)
    #: UTM parameters on the shop links of this flow's mail (:mod:`lifecycle.mail.utm`):
    #: None the defaults, False none, or a mapping of fields to a value or False.
    utm: bool | dict[str, str | bool] | None = None
    #: ``status:`` of the file (draft, live, paused); None when the file says none (it runs
    #: as live, and ``flows validate`` warns).
    status: str | None = None

    def label(self, chain: list[str]) -> str:
        """The customer-facing name for a locale fallback chain (:func:`lifecycle.locales.
        fallback_chain`): the first locale with a label, else the plain label, else the
        description."""
        for name in chain:
            if name in self.labels:
                return self.labels[name]
        return self.labels.get("", self.description)

    def step_index(self, step_id: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.id == step_id)


@dataclass
class Context:
    """What a flow may refer to: templates and segments that exist."""

    templates: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    #: False while segments.yaml itself has problems: the segment names flows use are not
    #: checked then (its own problem is the one reported, not one per flow naming a segment).
    segments_known: bool = True
    #: The templates folder, when known (checks that read a template's text use it).
    folder: Path | None = None

    @classmethod
    def from_folders(cls, templates_dir: Path, segments: set[str]) -> Context:
        return cls(emails_in(templates_dir), segments,  # as the renderer sees its emails
                   folder=templates_dir)


def _did_you_mean(name: str, known: set[str]) -> str:
    """`` (did you mean 'vip'?)`` for the closest of ``known`` to a misspelt ``name``, else ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: ``did you mean`` for other packages' messages (campaigns name segments and templates too).
did_you_mean = _did_you_mean


def parse_send(located: Located, context: Context, body: Any,
               path: tuple[str | int, ...]) -> tuple[Send | None, list[Problem]]:
    """A send step's body (``{template: …}`` or ``{variants: […]}``, an optional offer) as
    a flow file has it, parsed by the flows' own rules; the send (None if it has problems)
    and the problems.  Campaigns send in the same shape (:mod:`lifecycle.campaigns.spec`)."""
    checker = _Checker(located, context)
    send = checker.send(body, path)
    return (send if not checker.problems else None), checker.problems


class _Checker:
    def __init__(self, located: Located, context: Context) -> None:
        self.located = located
        self.context = context
        self.problems: list[Problem] = []

    def fail(self, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append(self.located.problem(path, message))

    def keys(self, body: Any, path: tuple[str | int, ...], allowed: set[str],
             required: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        if not isinstance(body, dict):
            self.fail(path, "expected a mapping of settings")
            return False
        ok = True
        for key in sorted(required - set(body)):
            self.fail(path, f"{key} is missing")
            ok = False
        for key in body:
            if key not in allowed:
                self.fail(path + (key,), f"unknown setting {key!r}; expected "
                                         + ", ".join(sorted(allowed)))
                ok = False
        return ok

    def segment(self, name: Any, path: tuple[str | int, ...]) -> None:
        if not isinstance(name, str):
            self.fail(path, f"a segment is named by its name, not {name!r}")
        elif self.context.segments_known and name not in self.context.segments:
            self.fail(path, f"unknown segment {name!r}{_did_you_mean(name, self.context.segments)}"
                            "; see flows/segments.yaml (`lifecycle segments list`)")

    def duration(self, text: Any, path: tuple[str | int, ...]) -> relativedelta | None:
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    # ---------------------------------------------------------------- trigger

    def trigger(self, node: Any, path: tuple[str | int, ...]) -> Trigger | None:
        if not isinstance(node, dict) or len(node) != 1 or next(iter(node)) not in TRIGGERS:
            self.fail(path, "the trigger is one of " + ", ".join(TRIGGERS))
            return None
        kind, options = next(iter(node.items()))
        here = path + (kind,)
        if kind in ("segment_entered", "segment_exited"):
            names = options if isinstance(options, list) else [options]
            for i, name in enumerate(names):
                self.segment(name, here + (i,) if isinstance(options, list) else here)
            return Trigger(kind, {"segments": [str(n) for n in names]})
        if kind == "event":
            if not isinstance(options, str) or not options:
                self.fail(here, "event takes the event's name")
                return None
            return Trigger(kind, {"name": options})
        options = options or {}
        allowed = {
            "order_placed": {"nth", "min_total", "category", "sku"},
            "first_order": {"min_total", "category", "sku"},
            "date": {"anniversary_of", "attribute", "at"},
            "feedback_received": {"min_score", "max_score"},
            "email_replied": {"flow"},
            "email_clicked": {"flow"},
        }[kind]
        if not self.keys(options, here, allowed):
            return None
        for key in ("nth", "min_score", "max_score"):
            if key in options and (not isinstance(options[key], int) or isinstance(options[key], bool)
                                   or options[key] < 0):
                self.fail(here + (key,), f"{key} must be a whole number")
        if "min_total" in options and (isinstance(options["min_total"], bool)
                                       or not isinstance(options["min_total"], (int, float))):
            self.fail(here + ("min_total",), "min_total must be a number")
        if kind == "date":
            if ("anniversary_of" in options) == ("attribute" in options):
                self.fail(here, "date needs exactly one of anniversary_of (first_order) or "
                                "attribute (a date attribute such as birthday)")
            elif options.get("anniversary_of", "first_order") != "first_order":
                self.fail(here + ("anniversary_of",), "anniversary_of takes first_order")
            self.clock(options.get("at", "10:00"), here + ("at",))
        if kind == "first_order":
            options = {**options, "nth": 1}
        return Trigger("order_placed" if kind == "first_order" else kind, dict(options))

    def clock(self, value: Any, path: tuple[str | int, ...]) -> tuple[int, int] | None:
        try:
            return parse_clock(value)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    # ------------------------------------------------------------ conditions

    def condition(self, node: Any, path: tuple[str | int, ...], sends: set[str]) -> None:
        """Branch conditions and goals: opened/clicked/replied, ordered, segments, attributes."""
        kinds = ("all", "any", "not", "opened", "clicked", "replied", "ordered", "in_segment",
                 "entered_segment", "attribute")
        if not isinstance(node, dict) or len(node) != 1 or next(iter(node)) not in kinds:
            self.fail(path, "a condition is one of " + ", ".join(f"'{k}:'" for k in kinds))
            return
        kind, body = next(iter(node.items()))
        here = path + (kind,)
        if kind in ("all", "any"):
            if not isinstance(body, list) or not body:
                self.fail(here, f"'{kind}' takes a non-empty list of conditions")
                return
            for i, item in enumerate(body):
                self.condition(item, here + (i,), sends)
        elif kind == "not":
            self.condition(body, here, sends)
        elif kind in ("opened", "clicked", "replied"):
            if body is True:
                return  # any mail of this flow
            if body not in sends:
                self.fail(here, f"{kind} names {body!r}, which is not a send step before this "
                                "one (or write true for any mail of this flow)")
        elif kind == "ordered":
            if body is not True:
                self.fail(here, "ordered takes true: an order since the customer entered the flow")
        elif kind in ("in_segment", "entered_segment"):
            self.segment(body, here)
        elif kind == "attribute":
            if self.keys(body, here, {"name", "op", "value"}, {"name", "op"}):
                ops = ("=", "!=", "<", "<=", ">", ">=", "exists", "missing")
                if body["op"] not in ops:
                    self.fail(here + ("op",), f"op must be one of {' '.join(ops)}")

    # -------------------------------------------------------------------- utm

    def utm(self, node: Any, path: tuple[str | int, ...]) -> bool | dict[str, str | bool] | None:
        """``utm: false``, ``utm: true`` (the defaults) or a mapping of source, medium,
        campaign and content to text (or false to leave one out)."""
        from lifecycle.mail.utm import FIELDS, MAX_VALUE

        if node is True:
            return None
        if node is False:
            return False
        if not isinstance(node, dict):
            self.fail(path, "utm takes false (no UTM parameters), true (the defaults) or a "
                            "mapping of " + ", ".join(FIELDS))
            return None
        if not self.keys(node, path, set(FIELDS)):
            return None
        values: dict[str, str | bool] = {}
        for key, value in node.items():
            if value is False:
                values[key] = False
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if (not isinstance(value, str) or not 1 <= len(value.strip()) <= MAX_VALUE
                    or not value.isprintable()):
                self.fail(path + (key,), f"utm {key} must be text of 1 to {MAX_VALUE} printable "
                                         "characters, or false to leave it out")
                continue
            values[key] = value.strip()
        return values

    # ------------------------------------------------------------------ steps

    def wait(self, body: Any, path: tuple[str | int, ...]) -> Wait | None:
        if isinstance(body, str):
            days = parse_business_days(body)
            if days is not None:
                return Wait(business_days=days)
            duration = self.duration(body, path)
            return Wait(duration=duration) if duration else None
        if not self.keys(body, path, {"for", "business_days", "until_weekday", "at"}):
            return None
        ways = [k for k in ("for", "business_days", "until_weekday") if k in body]
        if len(ways) > 1:
            self.fail(path, "a wait takes one of for, business_days or until_weekday")
            return None
        at = self.clock(body["at"], path + ("at",)) if "at" in body else None
        if not ways and at is None:
            self.fail(path, "a wait needs for, business_days, until_weekday or at")
            return None
        wait = Wait(at=at)
        if "for" in body:
            duration = self.duration(body["for"], path + ("for",))
            wait = Wait(duration=duration, at=at)
        elif "business_days" in body:
            days = body["business_days"]
            if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 60:
                self.fail(path + ("business_days",), "business_days must be 1 to 60")
                return None
            wait = Wait(business_days=days, at=at)
        elif "until_weekday" in body:
            day = str(body["until_weekday"]).lower()
            if day not in WEEKDAYS:
                self.fail(path + ("until_weekday",), "until_weekday must be a day such as monday")
                return None
            wait = Wait(until_weekday=WEEKDAYS.index(day), at=at)
        return wait

    def send(self, body: Any, path: tuple[str | int, ...]) -> Send | None:
        if isinstance(body, str):
            body = {"template": body}
        if not self.keys(body, path, {"template", "variants", "offer"}):
            return None
        offer = self.offer(body["offer"], path + ("offer",)) if "offer" in body else None
        if ("template" in body) == ("variants" in body):
            self.fail(path, "send takes a template or a list of variants")
            return None
        if "template" in body:
            raw = [{"template": body["template"], "weight": 1}]
            where = [path + ("template",)]
        else:
            raw = body["variants"]
            if not isinstance(raw, list) or len(raw) < 2:
                self.fail(path + ("variants",), "variants takes two or more {template, weight}")
                return None
            where = [path + ("variants", i) for i in range(len(raw))]
        variants = []
        for item, here in zip(raw, where):
            if not self.keys(item, here, {"template", "weight"}, {"template"}):
                continue
            weight = item.get("weight", 1)
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
                self.fail(here + ("weight",), "weight must be a whole number of 1 or more")
                continue
            template = item["template"]
            if template not in self.context.templates:
                self.fail(here if "variants" not in body else here + ("template",),
                          f"unknown template {template!r}"
                          f"{_did_you_mean(str(template), self.context.templates)}: no folder "
                          f"templates/email/{template}/ with subject.txt and body.txt or "
                          "body.html")
                continue
            variants.append(Variant(template, weight))
        if len(variants) != len(raw) or ("offer" in body and offer is None):
            return None
        return Send(tuple(variants), offer)

    def offer(self, body: Any, path: tuple[str | int, ...]) -> Offer | None:
        """``{percent: 15}``, ``{amount: "5.00", currency: EUR}`` or ``{free_shipping: true}``,
        each with optional ``valid`` (default 14 days) and ``prefix``."""
        allowed = {"percent", "amount", "currency", "free_shipping", "valid", "prefix"}
        if not self.keys(body, path, allowed):
            return None
        kinds = [k for k in ("percent", "amount", "free_shipping") if k in body]
        if len(kinds) != 1:
            self.fail(path, "an offer takes exactly one of percent (e.g. 10), amount (e.g. "
                            "\"5.00\" with currency) or free_shipping: true"
                      + (f"; it has {', '.join(kinds)}" if kinds else ""))
            return None
        percent = amount = currency = None
        if "currency" in body and kinds != ["amount"]:
            self.fail(path + ("currency",), "currency belongs to an amount offer only")
            return None
        if kinds == ["percent"]:
            percent = body["percent"]
            if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 90:
                self.fail(path + ("percent",), "percent must be a whole number from 1 to 90")
                return None
            kind, default_prefix = "percent", f"SAVE{percent}"
        elif kinds == ["amount"]:
            raw = body["amount"]
            if isinstance(raw, float):
                self.fail(path + ("amount",), f"amount {raw!r} must be quoted text such as "
                                              "\"5.00\" (a number in YAML is a float)")
                return None
            try:
                amount = Decimal(str(raw)) if isinstance(raw, str | int) \
                    and not isinstance(raw, bool) else None
            except InvalidOperation:
                amount = None
            if amount is None or not amount.is_finite() or amount <= 0 or amount > 100_000 \
                    or amount.as_tuple().exponent < -2:  # type: ignore[operator]
                self.fail(path + ("amount",), f"amount {raw!r} must be an amount such as "
                                              "\"5.00\": more than 0, at most 2 decimals")
                return None
            amount = amount.quantize(Decimal("0.01"))
            currency = body.get("currency")
            if currency is None:
                self.fail(path, "currency is missing: an amount offer names its currency, "
                                "e.g. currency: EUR")
                return None
            if not isinstance(currency, str) or not known_currency(currency):
                self.fail(path + ("currency",), f"currency {currency!r} is not an ISO 4217 "
                                                "code in capitals such as EUR")
                return None
            kind, default_prefix = "fixed", f"SAVE{amount:.0f}"
        else:
            if body["free_shipping"] is not True:
                self.fail(path + ("free_shipping",), "free_shipping takes true")
                return None
            kind, default_prefix = "free_shipping", "FREESHIP"
        valid = self.duration(body.get("valid", "14 days"), path + ("valid",))
        prefix = str(body.get("prefix", default_prefix))
        if not re.match(r"^[A-Z0-9]{2,12}$", prefix):
            self.fail(path + ("prefix",), "prefix must be 2 to 12 capital letters or digits")
            return None
        if valid is None:
            return None
        return Offer(kind, valid, prefix, percent, amount, currency)

    def steps(self, node: Any, path: tuple[str | int, ...]) -> list[Step]:
        if not isinstance(node, list) or not node:
            self.fail(path, "steps takes a non-empty list")
            return []
        if len(node) > MAX_STEPS:
            self.fail(path, f"a flow has at most {MAX_STEPS} steps; this one has {len(node)}")
            return []
        steps: list[Step] = []
        ids: dict[str, int] = {}
        sends: set[str] = set()
        pending_branches: list[tuple[int, tuple[str | int, ...], dict[str, Any]]] = []
        for i, raw in enumerate(node):
            here = path + (i,)
            if not isinstance(raw, dict):
                self.fail(here, "a step is a mapping such as {id: thanks, send: thank_you}")
                continue
            kinds = [k for k in STEP_KINDS if k in raw]
            extra = set(raw) - set(STEP_KINDS) - {"id"}
            for key in sorted(extra):
                self.fail(here + (key,), f"unknown step setting {key!r}; a step has an id and one "
                                         f"of {', '.join(STEP_KINDS)}")
            if len(kinds) != 1:
                self.fail(here, f"a step takes exactly one of {', '.join(STEP_KINDS)}")
                continue
            step_id = str(raw.get("id", f"step-{i + 1}"))
            if not _ID.match(step_id) or step_id == END:
                odd = sorted({c for c in step_id if not (c.isalnum() or c in "-_")})
                what = (" it has " + ", ".join("a space" if c == " " else repr(c) for c in odd)
                        + ";" if odd else "")
                self.fail(here + ("id",), f"id {step_id!r}:{what} an id may hold letters of any "
                                          "language (ü, ø, ł …), digits, - and _, must start "
                                          "with a letter or a digit, has at most 63 characters "
                                          "and is not 'exit'")
            if step_id in ids:
                self.fail(here + ("id",), f"id {step_id!r} is used by step {ids[step_id] + 1} too")
            ids[step_id] = i
            kind = kinds[0]
            body = raw[kind]
            action: Any = None
            if kind == "wait":
                action = self.wait(body, here + ("wait",))
            elif kind == "send":
                action = self.send(body, here + ("send",))
                sends.add(step_id)
            elif kind == "branch":
                if self.keys(body, here + ("branch",), {"if", "then", "else"}, {"if", "then"}):
                    self.condition(body["if"], here + ("branch", "if"), set(sends))
                    pending_branches.append((i, here + ("branch",), body))
                    action = Branch(body["if"], str(body["then"]), str(body.get("else", "next")))
            elif kind == "set":
                if self.keys(body, here + ("set",), {"attribute", "value"}, {"attribute", "value"}):
                    action = SetValue(str(body["attribute"]), body["value"])
            elif kind == "exit":
                action = Exit(str(body) if body not in (None, True) else "completed")
            if action is not None:
                steps.append(Step(step_id, action))
        for _i, here, body in pending_branches:
            for key in ("then", "else"):
                target = str(body.get(key, "next"))
                if target not in (END, "next") and target not in ids:
                    self.fail(here + (key,), f"{key} goes to {target!r}, which is no step id; "
                                             "use a step id, next or exit")
        if not self.problems:
            self.graph(steps, path)
        return steps

    def graph(self, steps: list[Step], path: tuple[str | int, ...]) -> None:
        """Unreachable steps, loops without a wait, steps with no way out."""
        index = {s.id: i for i, s in enumerate(steps)}
        end = len(steps)

        def successors(i: int) -> list[int]:
            action = steps[i].action
            if isinstance(action, Exit):
                return [end]
            if isinstance(action, Branch):
                out = []
                for target in (action.then, action.otherwise):
                    out.append(end if target == END else i + 1 if target == "next" else index[target])
                return out
            return [i + 1]

        edges = {i: successors(i) for i in range(end)}
        seen = {0}
        stack = [0]
        while stack:
            for nxt in edges.get(stack.pop(), []):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        for i in range(end):
            if i not in seen:
                self.fail(path + (i,), f"step {steps[i].id!r} can never be reached")
        # A cycle among steps with no wait would run forever within one tick.
        no_wait = {i for i in range(end) if not isinstance(steps[i].action, Wait)}
        colour: dict[int, int] = {}

        def visit(i: int, trail: list[int]) -> None:
            colour[i] = 1
            for nxt in edges[i]:
                if nxt == end or nxt not in no_wait:
                    continue
                if colour.get(nxt) == 1:
                    loop = trail[trail.index(nxt):] + [i] if nxt in trail else [i]
                    names = " -> ".join(steps[j].id for j in loop) + f" -> {steps[nxt].id}"
                    self.fail(path + (nxt,), f"the loop {names} has no wait step")
                elif nxt not in colour:
                    visit(nxt, trail + [i])
            colour[i] = 2

        for i in sorted(no_wait):
            if i not in colour:
                visit(i, [])
        # Every reachable step must be able to reach the end.
        reaches_end = {end}
        changed = True
        while changed:
            changed = False
            for i in range(end):
                if i not in reaches_end and any(n in reaches_end for n in edges[i]):
                    reaches_end.add(i)
                    changed = True
        for i in sorted(seen - reaches_end - {end}):
            self.fail(path + (i,), f"step {steps[i].id!r} has no way out: every path from it "
                                   "loops forever")


def parse(located: Located, context: Context, name: str) -> Flow:
    data = located.data
    checker = _Checker(located, context)
    allowed = {"description", "label", "kind", "priority", "trigger", "reentry", "goals", "steps",
               "exempt_from_cap", "utm", "status"}
    if not isinstance(data, dict):
        raise InvalidFile([located.problem((), "a flow file is a mapping with trigger and steps")])
    checker.keys(data, (), allowed, {"trigger", "steps"})
    kind = data.get("kind", "marketing")
    if kind not in KINDS:
        checker.fail(("kind",), "kind must be marketing or transactional")
    priority = data.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
        checker.fail(("priority",), "priority must be a whole number from 0 to 100")
        priority = 50
    exempt = data.get("exempt_from_cap", kind == "transactional")
    if not isinstance(exempt, bool):
        checker.fail(("exempt_from_cap",), "exempt_from_cap must be true or false")
    trigger = checker.trigger(data.get("trigger"), ("trigger",)) if "trigger" in data else None
    reentry, period = "once", None
    raw = data.get("reentry", "once")
    if raw in ("once", "every_time"):
        reentry = raw
    elif isinstance(raw, dict) and set(raw) == {"once_per"}:
        reentry, period = "once_per", checker.duration(raw["once_per"], ("reentry", "once_per"))
    else:
        checker.fail(("reentry",), "reentry is once, every_time or {once_per: 90 days}")
    goals = data.get("goals") or []
    if not isinstance(goals, list):
        checker.fail(("goals",), "goals takes a list of conditions")
        goals = []
    for i, goal in enumerate(goals):
        checker.condition(goal, ("goals", i), set())
    steps = checker.steps(data.get("steps"), ("steps",)) if "steps" in data else []
    labels = _labels(checker, data.get("label"))
    utm = checker.utm(data["utm"], ("utm",)) if "utm" in data else None
    status = data.get("status")
    if status is not None and status not in STATUSES:
        checker.fail(("status",), "status must be draft, live or paused")
    if checker.problems:
        raise InvalidFile(sorted(checker.problems, key=lambda p: (p.line, p.column)))
    assert trigger is not None
    return Flow(name, located.file, str(data.get("description", "")), kind, priority, trigger,
                reentry, period, tuple(goals), tuple(steps), bool(exempt), labels, utm, status)


def _labels(checker: _Checker, raw: Any) -> dict[str, str]:
    """``label``: one text, or a mapping of locale (``en``, ``de``, ``de_AT`` …) to text."""
    if raw is None:
        return {}
    if isinstance(raw, str) and raw.strip():
        return {"": raw.strip()}
    if not isinstance(raw, dict) or not raw:
        checker.fail(("label",), "label takes a text, or a mapping of locale to text "
                                 "({en: Offers, de: Angebote})")
        return {}
    labels: dict[str, str] = {}
    for key, text in raw.items():
        name = parse_locale(key) if isinstance(key, str) else None
        if name is None or name != key:
            checker.fail(("label", key), f"{key!r} is not a locale as Babel writes it "
                                         "(en, de, de_AT, nb …)")
        elif not isinstance(text, str) or not text.strip():
            checker.fail(("label", key), "a label is a text")
        else:
            labels[name] = text.strip()
    return labels


def load_flow(path: Path, context: Context) -> Flow:
    return parse(load(path), context, path.stem)


@dataclass
class Catalogue:
    """Every flow file of a folder: the valid flows and the problems of the others."""

    flows: dict[str, Flow]
    problems: list[Problem]


def load_folder(folder: Path, context: Context) -> Catalogue:
    flows: dict[str, Flow] = {}
    problems: list[Problem] = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name in ("segments.yaml", "policies.yaml"):
            continue
        try:
            flows[path.stem] = load_flow(path, context)
        except InvalidFile as exc:
            problems.extend(exc.problems)
    return Catalogue(flows, problems)
