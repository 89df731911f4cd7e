"""Benchmark: what the rendering bounds cost an ordinary mail.

Run:  uv run python -m benchmarks.render [--mails 2000] [--rounds 5]

Renders every shipped email (templates/email, each with subject, text and
HTML) ``--mails`` times in all, through the bounded renderer the workers and
the preview use (:class:`lifecycle.mail.templates.Renderer`: sandbox with
size checks, streamed output, a deadline), and through the same renderer on
Jinja's plain immutable sandbox (``render()``, no bounds) as the reference,
in the same run, rounds interleaved.  Two figures each: the whole mail as a
worker renders it (CSS inlined into the HTML), and the templates alone (the
three parts rendered, nothing inlined), in microseconds per mail (median of
the rounds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lifecycle.mail.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "email"


class PlainRenderer(Renderer):
    """The renderer on Jinja's own immutable sandbox: no bounds (the reference)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=False),
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, auto_reload=False)

    def _render(self, path: str, context: dict[str, Any]) -> str:
        return self.env.get_template(path).render(context)


def context() -> dict[str, Any]:
    """Every variable the shipped templates use (as tests/test_templates.py gives them)."""
    return {
        "customer": {"first_name": "Zoë", "last_name": "Ng", "locale": "en"},
        "order": {"id": "A-1001", "total": "27.80", "currency": "EUR",
                  "lines": [{"quantity": 2, "name": "Sencha & Co"},
                            {"quantity": 1, "name": "Matcha"}]},
        "last_order": {"date": "12 March 2026"},
        "metrics": {"order_count": 7},
        "offer": {"code": "BACK10-7KQ2", "percent": 10, "expires": "30 April 2026"},
        "recommendation": "Ceremonial matcha",
        "shop": {"name": "Leaf & Bean", "address": "1 Harbour Row, Kiel",
                 "signature": "Mara, Leaf & Bean"},
        "links": {"unsubscribe": "https://shop.example/u/TOKEN",
                  "preferences": "https://shop.example/p/TOKEN",
                  "shop": "https://shop.example/", "review": "https://shop.example/r/TOKEN",
                  "referral": "https://shop.example/ref/TOKEN",
                  "nps": [f"https://shop.example/f/TOKEN?score={n}" for n in range(11)]},
    }


def per_mail(renderer: Renderer, names: list[str], mails: int, whole: bool) -> float:
    """Microseconds per mail over ``mails`` renders, cycling through ``names``."""
    data = context()
    started = time.perf_counter()
    for n in range(mails):
        name = names[n % len(names)]
        if whole:
            renderer.render(name, data)
        else:
            for part in ("subject.txt", "body.txt", "body.html"):
                renderer._render(f"{name}/{part}", data)
    return (time.perf_counter() - started) / mails * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bounded, plain = Renderer(TEMPLATES), PlainRenderer(TEMPLATES)
    names = sorted(p.name for p in TEMPLATES.iterdir() if bounded.exists(p.name))
    for renderer in (bounded, plain):  # warm-up: compile every template
        per_mail(renderer, names, len(names), True)
    figures: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for whole in (True, False):
            for label, renderer in (("bounded", bounded), ("plain", plain)):
                figures.setdefault((label, whole), []).append(
                    per_mail(renderer, names, args.mails, whole))
    print(f"{len(names)} shipped emails, {args.mails} mails per round, {args.rounds} rounds "
          "(median µs per mail)")
    for whole, what in ((True, "whole mail (CSS inlined)"), (False, "templates alone")):
        b = statistics.median(figures[("bounded", whole)])
        p = statistics.median(figures[("plain", whole)])
        print(f"  {what:26s} bounded {b:8.1f}  plain sandbox {p:8.1f}  "
              f"cost {b - p:+7.1f} µs ({(b / p - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
