"""Template contexts built by hand, as lifecycle/mail/context.py gives them (the README's
context contract), for rendering every shipped email without a database.

:func:`rich_context` is the hard case: long German names (and one compound word with no
place to break), three order lines with pictures and links, three recommendations, an
offer, reviews.  :func:`shop_context` is a pleasant English one for the README's pictures.

``uv run python -m tests.mail_samples`` renders the README's two pictures in Chromium: the
second-purchase mail at phone width (``docs/mail-phone.png``, 375 px) and the thank-you mail at
desktop width (``docs/mail-desktop.png``, 1024 px).
"""

from __future__ import annotations

import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from lifecycle.locales import SHIPPED, long_date, money

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "email"
#: Every shipped email.
EMAILS = ("thank_you", "feedback_request", "review_request", "second_purchase",
          "loyalty_offer", "referral_invite", "winback_1", "winback_2", "winback_3", "birthday",
          "vip_early_access", "vip_early_access_reminder", "replenishment")
LOCALES = SHIPPED
SHOP = "https://shop.example"
#: Where the pictures of the sample products are "served" (a browser test answers them).
IMAGES = f"{SHOP}/img/"

LONG_NAMES = [
    ("Bio-Earl-Grey-Schwarzteemischung mit Bergamotteöl, 250-g-Nachfülldose", "12.50", 2),
    ("Handgetöpferte Steingut-Teekanne „Nordlicht“ mit Edelstahlsieb (1,2 Liter)", "89.00", 1),
    ("Donaudampfschifffahrtsgesellschaftskapitänsmützenteeprobierset", "1099.99", 3),
]
SHOP_NAMES = [
    ("Sencha Kagoshima, first flush", "14.90", 2),
    ("Stoneware teapot", "39.00", 1),
    ("Bamboo matcha whisk", "18.50", 1),
]
RECOMMENDED = [
    ("Gyokuro Asahi, schattengetrockneter Spitzentee aus Yame (Präfektur Fukuoka)", "24.90"),
    ("Matcha-Schale aus Raku-Keramik, handgeformt", "45.00"),
    ("Teeprobierset für Einsteigerinnen und Einsteiger", "29.00"),
]


def _lines(items: list[tuple[str, str, int]], currency: str, locale: str,
           pictures: bool = True) -> tuple[list[dict[str, Any]], Decimal]:
    lines, total = [], Decimal(0)
    for n, (name, price, quantity) in enumerate(items, 1):
        line_total = Decimal(price) * quantity
        total += line_total
        lines.append({"name": name, "sku": f"SKU-{n}", "quantity": quantity,
                      "price": money(price, currency, locale),
                      "line_total": money(line_total, currency, locale),
                      "url": f"{SHOP}/p/{n}", "review_url": f"{SHOP}/p/{n}/review",
                      "image_url": f"{IMAGES}line-{n}.svg" if pictures else None})
    return lines, total


def rich_context(locale: str = "de", *, kind: str = "percent", first_name: str | None =
                 "Maximilian-Alexander", names: list[tuple[str, str, int]] | None = None,
                 recommended: list[tuple[str, str]] | None = None, shop: str = "Teehaus "
                 "Schwarzenberg-Hohenlohe & Töchter", logo: bool = False) -> dict[str, Any]:
    """Every variable of the context contract, formatted for ``locale`` (values in EUR)."""
    currency = "EUR"
    lines, total = _lines(names or LONG_NAMES, currency, locale)
    expires = long_date(date(2026, 12, 30), locale)
    offer: dict[str, Any] = {
        "code": "BACK20-7KQ2MXAB", "kind": kind, "percent": 20 if kind == "percent" else None,
        "amount": money("10", currency, locale) if kind == "fixed" else None,
        "expires": expires, "url": f"{SHOP}/discount/BACK20-7KQ2MXAB?utm_source=lifecycle"}
    offer["value"] = {"percent": "20", "fixed": offer["amount"]}.get(kind, "")
    recs = [{"name": name, "sku": f"R-{n}", "price": money(price, currency, locale),
             "url": f"{SHOP}/p/r{n}", "image_url": f"{IMAGES}rec-{n}.svg"}
            for n, (name, price) in enumerate(recommended or RECOMMENDED, 1)]
    return {
        "customer": {"first_name": first_name, "last_name": "Schwarzenberg-Hohenlohe",
                     "email": "max@example.com", "locale": locale,
                     "timezone": "Europe/Berlin", "attributes": {}},
        "order": {"id": "A-100042", "total": money(total, currency, locale),
                  "amount": str(total), "currency": currency,
                  "ordered_at": "2026-11-28T10:15:00+00:00",
                  "date": long_date(date(2026, 11, 28), locale), "lines": lines},
        "last_order": {"id": "A-100042", "date": long_date(date(2026, 3, 12), locale)},
        "metrics": {"order_count": 7, "total_spend": money("1234.50", currency, locale),
                    "currency": currency},
        "offer": offer,
        "recommendations": recs,
        "recommendation": recs[0]["name"],
        "reviews": [{"name": line["name"], "url": line["review_url"]} for line in lines],
        "shop": {"name": shop, "team": shop, "url": SHOP,
                 "address": "Speicherstadt, Brooksfleet 7, 20457 Hamburg, Deutschland",
                 "logo_url": f"{IMAGES}logo.svg" if logo else None, "brand_color": "#2f5d50",
                 "support_email": "hilfe@shop.example"},
        "links": {"unsubscribe": f"{SHOP}/u/TOKEN", "preferences": f"{SHOP}/p/TOKEN",
                  "shop": f"{SHOP}/?utm_source=lifecycle", "review": f"{SHOP}/reviews",
                  "referral": f"{SHOP}/?ref=7KQ2MXAB",
                  "nps": [f"{SHOP}/f/TOKEN?score={n}" for n in range(11)]},
    }


def shop_context(locale: str = "en") -> dict[str, Any]:
    """A pleasant English context for the README's pictures: a tea shop with a logo."""
    context = rich_context(locale, first_name="Zoë", names=SHOP_NAMES, shop="Leaf & Bean",
                           logo=True, recommended=[("Genmaicha, roasted rice", "11.90"),
                                                   ("Cast-iron kettle", "64.00"),
                                                   ("Tea tin, 200 g", "9.50")])
    context["shop"]["address"] = "1 Harbour Row, 24103 Kiel, Germany"
    context["customer"].update(last_name="Ng", email="zoe@example.com")
    return context


def picture(name: str, width: int = 128) -> str:
    """An SVG picture for a sample image URL (the shop's logo or a product)."""
    if name.startswith("logo"):
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="180" height="40" '
                'viewBox="0 0 180 40"><rect width="180" height="40" rx="6" fill="#2f5d50"/>'
                '<circle cx="22" cy="20" r="10" fill="#cfe3d8"/><text x="42" y="27" '
                'font-family="Georgia, serif" font-size="19" fill="#ffffff">Leaf &amp; Bean'
                '</text></svg>')
    colours = ["#c9ddd2", "#e9d8c4", "#d6d3e8", "#f0e3b5", "#cfe0ea", "#e6cfd2"]
    colour = colours[sum(map(ord, name)) % len(colours)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{width}" '
            f'viewBox="0 0 64 64"><rect width="64" height="64" fill="{colour}"/>'
            '<path d="M18 26h24v12a10 10 0 0 1-10 10h-4a10 10 0 0 1-10-10z" fill="#2f5d50" '
            'opacity=".75"/><path d="M42 30h4a5 5 0 0 1 0 10h-4" stroke="#2f5d50" '
            'stroke-width="3" fill="none" opacity=".75"/></svg>')


def serve_pictures(page: Any) -> None:
    """Answer the sample image URLs in a Playwright page; refuse every other request."""

    def answer(route: Any) -> None:
        url = route.request.url
        if url.startswith(IMAGES):
            route.fulfill(status=200, content_type="image/svg+xml",
                          body=picture(url[len(IMAGES):]))
        else:
            route.abort()

    page.route("**/*", answer)


def main() -> None:  # pragma: no cover - makes the README's pictures
    from playwright.sync_api import sync_playwright

    from lifecycle.mail.templates import Renderer
    from tests.test_browser import CHROMIUM_ARGS, _install_chromium

    renderer = Renderer(TEMPLATES)
    chromium = _install_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        for file, name, width, scale in (("mail-phone.png", "second_purchase", 375, 2),
                                         ("mail-desktop.png", "thank_you", 1024, 1)):
            html = renderer.render(name, shop_context("en")).html
            assert html is not None
            context = browser.new_context(viewport={"width": width, "height": 800},
                                          device_scale_factor=scale)
            page = context.new_page()
            serve_pictures(page)
            page.set_content(html, wait_until="load")
            page.screenshot(path=str(ROOT / "docs" / file), full_page=True)
            context.close()
        browser.close()
    print("wrote docs/mail-phone.png and docs/mail-desktop.png", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    main()
