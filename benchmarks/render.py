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

from lifecycle.locales import SHIPPED
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


def context(locale: str = "en") -> dict[str, Any]:
    """Every variable the shipped templates use (the context contract in the README), for a
    customer whose locale is ``locale``."""
    lines = [{"name": name, "sku": sku, "quantity": quantity, "price": price,
              "line_total": total, "url": f"https://shop.example/p/{sku}",
              "image_url": f"https://shop.example/img/{sku}.jpg",
              "review_url": f"https://shop.example/p/{sku}/review"}
             for name, sku, quantity, price, total in (
                 ("Sencha & Co", "S1", 2, "€12.50", "€25.00"),
                 ("Matcha", "M1", 1, "€2.80", "€2.80"))]
    recommendations = [{"name": f"Tea {n}", "sku": f"R{n}", "price": "€9.90",
                        "url": f"https://shop.example/p/R{n}",
                        "image_url": f"https://shop.example/img/R{n}.jpg"} for n in range(3)]
    return {
        "customer": {"first_name": "Zoë", "last_name": "Ng", "email": "zoe@example.com",
                     "locale": locale, "timezone": "Europe/Berlin", "attributes": {}},
        "order": {"id": "A-1001", "total": "€27.80", "amount": "27.80", "currency": "EUR",
                  "ordered_at": "2026-03-12T10:00:00+00:00", "date": "March 12, 2026",
                  "lines": lines},
        "last_order": {"id": "A-1001", "date": "March 12, 2026"},
        "metrics": {"order_count": 7, "total_spend": "€199.00", "currency": "EUR"},
        "offer": {"code": "BACK10-7KQ2", "kind": "percent", "percent": 10, "amount": None,
                  "value": "10", "expires": "April 30, 2026",
                  "url": "https://shop.example/discount/BACK10-7KQ2"},
        "recommendations": recommendations, "recommendation": "Tea 0",
        "reviews": [{"name": line["name"], "url": line["review_url"]} for line in lines],
        "shop": {"name": "Leaf & Bean", "team": "Leaf & Bean", "url": "https://shop.example/",
                 "address": "1 Harbour Row, Kiel", "logo_url": None, "brand_color": "#2f5d50",
                 "support_email": "help@shop.example"},
        "links": {"unsubscribe": "https://shop.example/u/TOKEN",
                  "preferences": "https://shop.example/p/TOKEN",
                  "shop": "https://shop.example/", "review": "https://shop.example/r/TOKEN",
                  "referral": "https://shop.example/ref/TOKEN",
                  "nps": [f"https://shop.example/f/TOKEN?score={n}" for n in range(11)]},
    }


def per_mail(renderer: Renderer, names: list[str], mails: int, whole: bool,
             locales: list[str]) -> float:
    """Microseconds per mail over ``mails`` renders, cycling through ``names`` and, for each,
    the customers' ``locales``."""
    data = [context(locale) for locale in locales]
    started = time.perf_counter()
    for n in range(mails):
        name = names[n % len(names)]
        given = data[(n // len(names)) % len(data)]
        if whole:
            renderer.render(name, given)
        else:  # the three parts from their locale folders, nothing inlined
            chain = renderer.chain(given["customer"]["locale"])
            choice = renderer.choose(name, chain)
            for path, folder in zip(choice.paths, choice.folders, strict=True):
                if path is not None:
                    renderer._render(path, renderer.part_context(folder, chain, given))
    return (time.perf_counter() - started) / mails * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--locales", default=",".join(SHIPPED),
                        help="the customers' locales, in turn (default: every shipped one)")
    args = parser.parse_args()
    locales = args.locales.split(",")
    bounded, plain = Renderer(TEMPLATES), PlainRenderer(TEMPLATES)
    names = sorted(p.name for p in TEMPLATES.iterdir() if bounded.exists(p.name))
    for renderer in (bounded, plain):  # warm-up: compile every template
        per_mail(renderer, names, len(names) * len(locales), True, locales)
    figures: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for whole in (True, False):
            for label, renderer in (("bounded", bounded), ("plain", plain)):
                figures.setdefault((label, whole), []).append(
                    per_mail(renderer, names, args.mails, whole, locales))
    print(f"{len(names)} shipped emails in {len(locales)} locales ({', '.join(locales)}), "
          f"{args.mails} mails per round, {args.rounds} rounds (median µs per mail)")
    for whole, what in ((True, "whole mail (CSS inlined)"), (False, "templates alone")):
        b = statistics.median(figures[("bounded", whole)])
        p = statistics.median(figures[("plain", whole)])
        print(f"  {what:26s} bounded {b:8.1f}  plain sandbox {p:8.1f}  "
              f"cost {b - p:+7.1f} µs ({(b / p - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
