"""A flow drawn as a diagram: inline SVG made on the server, no script.

:func:`boxes_of_flow` turns a checked :class:`~lifecycle.flows.definitions.Flow` into boxes —
the trigger, the goals, each step (wait, send, branch with its condition, set, exit) and the
end — joined by edges (``next``, ``then``, ``else``, ``exit``); :func:`boxes_of_file` does the
same, leniently, for a flow file that has problems, so that each problem can be shown on its
step (:func:`problems_by_box` places a problem by its line).  :func:`diagram` lays the boxes
out top to bottom in the order of the file — an edge to the next box goes straight down,
any other (a branch's jump, an early exit, a loop back) runs in a lane of its own on the
right — and writes each box's figures on it (:mod:`lifecycle.flows.figures`).

Every text is escaped; a text too long for its box is cut with "…" and kept whole in a
``<title>`` (the tooltip).  The picture scales to the page's width (``viewBox``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dateutil.relativedelta import relativedelta
from markupsafe import Markup, escape

from lifecycle.durations import WEEKDAYS
from lifecycle.flows.definitions import (
    END,
    STEP_KINDS,
    Branch,
    Exit,
    Flow,
    Send,
    SetValue,
    Trigger,
    Wait,
)
from lifecycle.flows.figures import FlowFigures, StepFigures
from lifecycle.segments.definitions import segment_words
from lifecycle.yamlfile import Located, Problem

# ------------------------------------------------------------------ words


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def duration_words(d: relativedelta) -> str:
    """``relativedelta(days=7)`` → "7 days"."""
    parts = []
    for unit in ("years", "months", "days", "hours", "minutes"):
        n = getattr(d, unit) or 0
        if n:
            parts.append(f"{n} {unit[:-1] if n == 1 else unit}")
    return " ".join(parts) or "no time"


def trigger_words(trigger: Trigger) -> str:
    """A flow's trigger as a manager says it: "the 1st order (at least 50)"."""
    o = trigger.options
    if trigger.kind == "order_placed":
        words = "the first order" if o.get("nth") == 1 else (
            f"the {_ordinal(int(o['nth']))} order" if "nth" in o else "an order")
        if "min_total" in o:
            words += f" of at least {o['min_total']}"
        if "category" in o:
            words += f" with a product of category {o['category']}"
        if "sku" in o:
            words += f" with SKU {o['sku']}"
        return words + " is placed"
    if trigger.kind in ("segment_entered", "segment_exited"):
        names = " or ".join(segment_words(s) for s in o.get("segments", []))
        return ("a customer enters " if trigger.kind == "segment_entered"
                else "a customer leaves ") \
            + f"the segment {names}"
    if trigger.kind == "date":
        at = o.get("at", "10:00")
        if "attribute" in o:
            return f"every year on the date in attribute {o['attribute']}, at {at}"
        return f"every year on the anniversary of the first order, at {at}"
    if trigger.kind == "feedback_received":
        low, high = o.get("min_score"), o.get("max_score")
        score = (f" with a score from {low} to {high}" if low is not None and high is not None
                 else f" with a score of {low} or more" if low is not None
                 else f" with a score of {high} or less" if high is not None else "")
        return "feedback is received" + score
    if trigger.kind in ("email_replied", "email_clicked"):
        what = "a reply to" if trigger.kind == "email_replied" else "a click in"
        return f"{what} a mail" + (f" of the flow {o['flow']}" if o.get("flow") else "")
    if trigger.kind == "event":
        return f"the event {o.get('name')}"
    return trigger.kind


def condition_words(cond: Any) -> str:
    """A branch's condition or a goal in words: "clicked the mail of step ten-percent"."""
    if not isinstance(cond, dict) or len(cond) != 1:
        return str(cond)
    kind, body = next(iter(cond.items()))
    if kind in ("all", "any") and isinstance(body, list):
        inner = [condition_words(c) for c in body]
        return f"{kind} of: " + "; ".join(inner)
    if kind == "not":
        return f"not ({condition_words(body)})"
    if kind in ("opened", "clicked", "replied"):
        verb = {"opened": "opened", "clicked": "clicked", "replied": "replied to"}[kind]
        return f"{verb} any mail of this flow" if body is True \
            else f"{verb} the mail of step {body}"
    if kind == "ordered":
        return "ordered since entering the flow"
    if kind == "in_segment":
        return f"in the segment {segment_words(str(body))}"
    if kind == "entered_segment":
        return f"entered the segment {segment_words(str(body))} since entering the flow"
    if kind == "attribute" and isinstance(body, dict):
        name, op = body.get("name"), body.get("op")
        if op in ("exists", "missing"):
            return f"attribute {name} {'is set' if op == 'exists' else 'is not set'}"
        return f"attribute {name} {op} {body.get('value')!r}"
    return f"{kind}: {body}"


def wait_words(wait: Wait) -> str:
    parts = []
    if wait.duration is not None:
        parts.append(f"wait {duration_words(wait.duration)}")
    if wait.business_days is not None:
        parts.append(f"wait {wait.business_days} business day"
                     + ("s" if wait.business_days != 1 else ""))
    if wait.until_weekday is not None:
        parts.append(f"wait until {WEEKDAYS[wait.until_weekday].capitalize()}")
    if wait.at is not None:
        at = f"{wait.at[0]:02d}:{wait.at[1]:02d}"
        parts.append(f"then until {at} their time" if parts else f"wait until {at} their time")
    return ", ".join(parts)


def send_words(send: Send) -> str:
    if len(send.variants) == 1:
        words = f"send {send.variants[0].template}"
    else:
        words = "send A/B: " + ", ".join(f"{v.template} ({v.weight})" for v in send.variants)
    offer = send.offer
    if offer is not None:
        what = {"percent": f"{offer.percent}% off", "fixed": f"{offer.amount} {offer.currency} off",
                "free_shipping": "free shipping"}[offer.kind]
        words += f" with an offer: {what}, valid {duration_words(offer.valid)}"
    return words


# ------------------------------------------------------------------ boxes


@dataclass
class Box:
    """One box of the diagram: ``key`` is the step id, or ``trigger``, ``goals``, ``end``."""

    key: str
    kind: str  # trigger, goals, wait, send, branch, set, exit, end, or ? (not understood)
    words: str
    #: Where control goes: ``(label, target key)``; ``next`` is the box below.
    edges: list[tuple[str, str]] = field(default_factory=list)


#: The keys of the boxes that are no step: never a step id (those start with a letter or digit).
TRIGGER, GOALS, FINISH = "(trigger)", "(goals)", "(end)"


def boxes_of_flow(flow: Flow) -> list[Box]:
    """The boxes of a checked flow, in the order of its file."""
    boxes = [Box(TRIGGER, "trigger", "when " + trigger_words(flow.trigger))]
    if flow.goals:
        boxes.append(Box(GOALS, "goals", "; ".join(condition_words(g) for g in flow.goals)))
    for step in flow.steps:
        a = step.action
        if isinstance(a, Wait):
            boxes.append(Box(step.id, "wait", wait_words(a)))
        elif isinstance(a, Send):
            boxes.append(Box(step.id, "send", send_words(a)))
        elif isinstance(a, Branch):
            boxes.append(Box(step.id, "branch", "if " + condition_words(a.condition),
                             [("then", a.then), ("else", a.otherwise)]))
        elif isinstance(a, SetValue):
            boxes.append(Box(step.id, "set", f"set attribute {a.attribute} to {a.value!r}"))
        elif isinstance(a, Exit):
            boxes.append(Box(step.id, "exit", f"end the flow: {a.reason}", [("exit", END)]))
    boxes.append(Box(FINISH, "end", "the end"))
    return boxes


def boxes_of_file(located: Located) -> list[Box]:
    """The boxes of a flow file as written, even with problems: what cannot be read is shown
    as written (a step of no known kind has kind ``?``)."""
    data = located.data if isinstance(located.data, dict) else {}
    trigger = data.get("trigger")
    words = _quiet(_raw_trigger, trigger) if isinstance(trigger, dict) and len(trigger) == 1 \
        else repr(trigger)
    boxes = [Box(TRIGGER, "trigger", "when " + words)]
    goals = data.get("goals")
    if goals:
        boxes.append(Box(GOALS, "goals", "; ".join(condition_words(g) for g in goals)
                         if isinstance(goals, list) else repr(goals)))
    raw_steps = data.get("steps") if isinstance(data.get("steps"), list) else []
    for i, raw in enumerate(raw_steps):
        raw = raw if isinstance(raw, dict) else {}
        kinds = [k for k in STEP_KINDS if k in raw]
        kind = kinds[0] if len(kinds) == 1 else "?"
        body = raw.get(kind)
        step_id = str(raw.get("id", f"step-{i + 1}"))
        edges: list[tuple[str, str]] = []
        if kind == "branch" and isinstance(body, dict):
            words = "if " + condition_words(body.get("if"))
            edges = [("then", str(body.get("then", "next"))),
                     ("else", str(body.get("else", "next")))]
        elif kind == "exit":
            words, edges = f"end the flow: {body if body not in (None, True) else 'completed'}", \
                [("exit", END)]
        elif kind == "?":
            words = "not understood: " + repr(raw)
        else:
            words = _step_words(located, kind, body, ("steps", i, kind))
        boxes.append(Box(step_id, kind, words, edges))
    boxes.append(Box(FINISH, "end", "the end"))
    return boxes


class _Anything(set[str]):
    """A set that holds every name: a step of a file with problems is read for its words
    whatever templates and segments it names (the problems say which do not exist)."""

    def __contains__(self, item: object) -> bool:
        return True


def _step_words(located: Located, kind: str, body: Any, path: tuple[str | int, ...]) -> str:
    """A wait, send or set step of a file with problems in words, as the checker reads it;
    as written when it cannot."""
    from lifecycle.flows.definitions import Context, _Checker

    checker = _Checker(located, Context(_Anything(), _Anything()))
    try:
        action = checker.wait(body, path) if kind == "wait" else \
            checker.send(body, path) if kind == "send" else None
    except (KeyError, TypeError, ValueError, AttributeError):
        action = None
    if checker.problems:  # read with a problem: the words could hide it
        action = None
    if isinstance(action, Wait):
        return wait_words(action)
    if isinstance(action, Send):
        return send_words(action)
    if kind == "set" and isinstance(body, dict) and {"attribute", "value"} <= set(body):
        return f"set attribute {body['attribute']} to {body['value']!r}"
    return f"{kind} {body if isinstance(body, str) else repr(body)}"


def _raw_trigger(trigger: dict[str, Any]) -> str:
    kind, options = next(iter(trigger.items()))
    if kind in ("segment_entered", "segment_exited"):
        options = {"segments": options if isinstance(options, list) else [options]}
    elif kind == "event":
        options = {"name": options}
    elif kind == "first_order":
        kind, options = "order_placed", {**(options or {}), "nth": 1}
    return trigger_words(Trigger(kind, dict(options or {})))


def _quiet(words: Any, value: Any) -> str:
    try:
        return str(words(value))
    except (KeyError, TypeError, ValueError, AttributeError):
        return repr(value)


def problems_by_box(located: Located, boxes: list[Box],
                    problems: list[Problem]) -> dict[str, list[Problem]]:
    """Each problem of the file ``located`` on the box it is about, by its line and column:
    the step whose text it falls in, the goals, or (anything else: the flow's settings) the
    trigger's box."""
    anchors: list[tuple[tuple[int, int], int, str]] = []
    step_keys = [b.key for b in boxes if b.kind not in ("trigger", "goals", "end")]
    for path, at in located.positions.items():
        if len(path) == 2 and path[0] == "steps" and isinstance(path[1], int) \
                and path[1] < len(step_keys):
            anchors.append((at, 1, step_keys[path[1]]))
        elif len(path) == 1 and path[0] == "goals" and any(b.key == GOALS for b in boxes):
            anchors.append((at, 0, GOALS))
        elif len(path) == 1:
            anchors.append((at, 0, TRIGGER))
    anchors.sort()
    placed: dict[str, list[Problem]] = {}
    for p in problems:
        key = TRIGGER
        for at, _depth, candidate in anchors:
            if at <= (p.line, p.column):
                key = candidate
            else:
                break
        placed.setdefault(key, []).append(p)
    return placed


# ----------------------------------------------------------------- layout

WIDTH = 760
LEFT, BOX_W = 12, 470
PAD, LINE, GAP = 10, 16, 30
LANE_START, LANE_STEP = LEFT + BOX_W + 22, 16
#: Characters that fit on a line of a box (12 px sans-serif).
CHARS = 68
MAX_LINES = 2
FILL = {"trigger": "#e6f0fb", "goals": "#fff8e6", "wait": "#f5f7fa", "send": "#e8f6ef",
        "branch": "#f3eefc", "set": "#f5f7fa", "exit": "#fdeceb", "end": "#eceff3",
        "?": "#ffffff"}
KIND_WORDS = {"trigger": "Trigger", "goals": "Goals (before every step: one that holds ends "
              "the flow)", "wait": "Wait", "send": "Send", "branch": "Branch",
              "set": "Set", "exit": "Exit", "end": "End", "?": "Step"}


def _wrap(text: str, width: int = CHARS, lines: int = MAX_LINES) -> tuple[list[str], bool]:
    """``text`` in at most ``lines`` lines of ``width`` characters; True if it was cut."""
    words, out, current = text.split(), [], ""
    for word in words:
        while len(word) > width:  # a word longer than a line is split
            if current:
                out.append(current)
                current = ""
            out.append(word[:width])
            word = word[width:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            out.append(current)
            current = word
    if current:
        out.append(current)
    if len(out) <= lines:
        return out or [""], False
    kept = out[:lines]
    kept[-1] = kept[-1][:width - 1].rstrip() + "…"
    return kept, True


def _line(text: str) -> tuple[str, bool]:
    kept, cut = _wrap(text, lines=1)
    return kept[0], cut


@dataclass
class _Text:
    text: str
    whole: str | None = None  # the tooltip when cut
    css: str = ""  # "head", "figures", "bad", "why"


def _texts(box: Box, figures: StepFigures | None, flow_figures: FlowFigures | None,
           problems: list[Problem]) -> list[_Text]:
    head = KIND_WORDS.get(box.kind, box.kind)
    if box.kind not in ("trigger", "goals", "end"):
        head += f" · {box.key}"
    texts = [_Text(_line(head)[0], head if _line(head)[1] else None, "head")]
    kept, cut = _wrap(box.words)
    texts += [_Text(t, box.words if cut else None) for t in kept]
    numbers = []
    if figures is not None:
        if figures.waiting:
            numbers.append(f"waiting now {figures.waiting}")
        if box.kind == "send" or figures.sent or figures.failed or figures.skipped:
            numbers += [f"sent {figures.sent}", f"failed {figures.failed}",
                        f"skipped {figures.skipped}"]
            if figures.pending:
                numbers.append(f"not sent yet {figures.pending}")
    if box.kind == "trigger" and flow_figures is not None:
        numbers.append(f"in the flow now {flow_figures.active}")
    if box.kind in ("goals", "end") and flow_figures is not None:
        endings = {k: v for k, v in flow_figures.endings.items()
                   if k.startswith("goal:") == (box.kind == "goals")}
        numbers += [f"{k} {v}" for k, v in sorted(endings.items())]
    if numbers:
        texts.append(_Text(" · ".join(numbers), None, "figures"))
    if figures is not None:
        for label, reasons, css in (("failed", figures.failed_reasons, "bad"),
                                    ("skipped", figures.skipped_reasons, "why")):
            for why, n in reasons:
                whole = f"{label} {n}: {why}"
                kept_line, cut = _line(whole)
                texts.append(_Text(kept_line, whole if cut else None, css))
    for p in problems:
        whole = f"Problem, line {p.line}: {p.message}"
        kept, cut = _wrap(whole)
        texts += [_Text(t, whole if cut else None, "bad") for t in kept]
    return texts


def diagram(boxes: list[Box], figures: FlowFigures | None = None,
            problems: dict[str, list[Problem]] | None = None, title: str = "flow") -> Markup:
    """The SVG of ``boxes`` with each step's figures and problems (see the module doc)."""
    problems = problems or {}
    index = {b.key: i for i, b in enumerate(boxes)}
    end = index[FINISH]
    texts = [_texts(b, figures.step(b.key) if figures is not None and b.kind not in
                    ("trigger", "goals", "end") else None, figures, problems.get(b.key, []))
             for b in boxes]
    tops, y = [], 12
    for t in texts:
        tops.append(y)
        y += PAD * 2 + LINE * len(t) + GAP
    heights = [PAD * 2 + LINE * len(t) for t in texts]
    height = y - GAP + 12

    def target(i: int, to: str) -> int:
        """The box an edge goes to: the next, the end (exit), or the step named."""
        if to == "next":
            return i + 1
        return end if to == END else index.get(to, end)

    straight: dict[int, list[str]] = {}  # from box i to i + 1: its labels
    jumps: list[tuple[int, int, str]] = []
    for i, b in enumerate(boxes[:-1]):
        if b.kind == "exit" or b.edges:
            outs = [(label, target(i, to)) for label, to in b.edges]
        else:
            outs = [("", i + 1)]
        for label, j in outs:
            if j == i + 1:
                straight.setdefault(i, []).append(label)
            else:
                jumps.append((i, j, label))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
             f'width="100%" role="group" aria-label="{escape(title)}" class="flow-diagram" '
             f'font-family="system-ui, sans-serif" font-size="12">'
             f'<title>{escape(title)}</title>'
             '<defs><marker id="flow-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
             'fill="#52606d"/></marker></defs>']
    centre = LEFT + BOX_W / 2
    edges: dict[int, list[str]] = {}  # drawn after their box: read in the order of the steps
    for i, labels in straight.items():
        y1, y2 = tops[i] + heights[i], tops[i + 1]
        edges.setdefault(i, []).append(
            f'<line x1="{centre}" y1="{y1}" x2="{centre}" y2="{y2}" stroke="#52606d" '
            'marker-end="url(#flow-arrow)"/>')
        words = " / ".join(x for x in labels if x)
        if words:
            edges[i].append(f'<text x="{centre + 6}" y="{(y1 + y2) / 2 + 4}" '
                            f'fill="#52606d">{escape(words)}</text>')
    for k, (i, j, label) in enumerate(jumps):
        lane = LANE_START + (k % 14) * LANE_STEP
        y1 = tops[i] + heights[i] / 2 + (6 if label == "else" else -6 if label == "then" else 0)
        y2 = tops[j] + min(heights[j] / 2, 20) + (k % 3) * 4
        right = LEFT + BOX_W
        back = ' stroke-dasharray="4 3"' if j < i else ""  # a loop back: dashed
        edges.setdefault(i, []).append(
            f'<path d="M{right},{y1} H{lane} V{y2} H{right}" fill="none" stroke="#52606d"'
            f'{back} marker-end="url(#flow-arrow)"/>')
        if label:
            goes = "exit" if j == end else boxes[j].key
            words = label if goes == label else f"{label} → {goes}"
            edges[i].append(f'<text x="{right + 4}" y="{y1 - 3}" fill="#52606d" '
                            f'font-size="10">{escape(words)}</text>')
    for i, (b, t) in enumerate(zip(boxes, texts)):
        bad = bool(problems.get(b.key))
        dashed = ' stroke-dasharray="5 3"' if b.kind == "goals" else ""
        parts.append(f'<g class="box {escape(b.kind)}" data-step="{escape(b.key)}">'
                     f'<rect x="{LEFT}" y="{tops[i]}" width="{BOX_W}" height="{heights[i]}" '
                     f'rx="6" fill="{FILL.get(b.kind, "#fff")}" '
                     f'stroke="{"#b42318" if bad else "#7b8794"}" '
                     f'stroke-width="{2 if bad else 1}"{dashed}/>')
        for n, line in enumerate(t):
            y_text = tops[i] + PAD + LINE * n + 12
            style = {"head": ' font-weight="bold"', "figures": ' fill="#1f2933"',
                     "bad": ' fill="#b42318"', "why": ' fill="#52606d"'}.get(line.css, "")
            tip = f"<title>{escape(line.whole)}</title>" if line.whole else ""
            parts.append(f'<text x="{LEFT + PAD}" y="{y_text}"{style}>{tip}'
                         f'{escape(line.text)}</text>')
        parts.append("</g>")
        parts += edges.get(i, [])
    parts.append("</svg>")
    return Markup("".join(parts))


def outline(boxes: list[Box], figures: FlowFigures | None = None,
            problems: dict[str, list[Problem]] | None = None) -> list[dict[str, Any]]:
    """The boxes as data, in order, each with its figures and problems (``flows show``):
    ``{"key", "kind", "words", "edges": [{"label", "to"}], "figures": {...} or None,
    "problems": ["FILE:LINE:COLUMN: message", …]}``; the end box's figures are how the
    enrollments ended."""
    problems = problems or {}
    out = []
    for b in boxes:
        numbers: dict[str, Any] | None = None
        if figures is not None and b.kind not in ("trigger", "goals", "end"):
            f = figures.step(b.key)
            numbers = {"waiting": f.waiting, "sent": f.sent, "failed": f.failed,
                       "skipped": f.skipped, "not_sent_yet": f.pending,
                       "failed_reasons": [{"reason": r, "mails": n} for r, n in f.failed_reasons],
                       "skipped_reasons": [{"reason": r, "mails": n}
                                           for r, n in f.skipped_reasons]}
        elif figures is not None and b.kind == "trigger":
            numbers = {"in_the_flow_now": figures.active}
        elif figures is not None:
            numbers = {k: v for k, v in sorted(figures.endings.items())
                       if k.startswith("goal:") == (b.kind == "goals")}
        out.append({"key": b.key, "kind": b.kind, "words": b.words,
                    "edges": [{"label": label, "to": to} for label, to in b.edges],
                    "figures": numbers, "problems": [str(p) for p in problems.get(b.key, [])]})
    return out
