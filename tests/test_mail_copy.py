"""What the shipped emails say and show, in every language: the copy rules of issue 16 and
the base layout's promises (preheader, logo, brand colour, buttons, products, footer)."""

from __future__ import annotations

import re
from html import escape
from typing import Any

import pytest

from lifecycle.mail.templates import Rendered, Renderer
from tests.mail_samples import EMAILS, LOCALES, TEMPLATES, rich_context

RENDERER = Renderer(TEMPLATES)
OFFER_EMAILS = ("second_purchase", "loyalty_offer", "winback_2", "winback_3", "birthday")
PRODUCT_EMAILS = ("second_purchase", "winback_1", "winback_2", "winback_3", "vip_early_access",
                  "vip_early_access_reminder")
#: The greeting of a customer without a first name, in each language.
PLAIN_GREETING = {"en": "Hello,", "de": "Hallo,", "nb": "Hei!", "sv": "Hej!", "da": "Hej,",
                  "pl": "Cześć!"}
#: How each language writes free shipping in the offer mails.
FREE_SHIPPING = {"en": "free shipping", "de": "kostenlose", "nb": "fri frakt", "sv": "fri frakt",
                 "da": "fri fragt", "pl": "darmow"}


def h(text: str) -> str:
    """``text`` as the HTML part writes it (escaped)."""
    return escape(text, quote=False)


def render(name: str, locale: str, **changes: Any) -> Rendered:
    context = rich_context(locale, **changes)
    return RENDERER.render(name, context)


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a text part before its signature separator."""
    body = text.split("\n-- \n")[0]
    return [p for p in body.split("\n\n") if p.strip()]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", EMAILS)
def test_every_paragraph_of_a_text_part_starts_with_a_capital_letter(name: str,
                                                                      locale: str) -> None:
    for first_name in ("zoë", None):  # a name typed in lower case is the customer's own
        text = render(name, locale, first_name=first_name).text or ""
        for paragraph in paragraphs(text):
            if paragraph[0] in " -" or paragraph.startswith(("http", "zoë")):
                continue  # indented lines (an order, a code, scores), lists and links
            assert paragraph[0].isupper(), f"{name}/{locale}: {paragraph[:60]!r}"
        assert "\n-- \n" in text and "\n--\n" not in text


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", EMAILS)
def test_a_nameless_customer_gets_the_same_mail_without_a_made_up_name(name: str,
                                                                        locale: str) -> None:
    named = render(name, locale, first_name="Zoë")
    nameless = render(name, locale, first_name=None)
    without = re.sub(r", Zoë|Zoë, | Zoë", "", named.subject)
    assert nameless.subject == without[0].upper() + without[1:]
    assert (nameless.text or "").startswith(PLAIN_GREETING[locale] + "\n")
    for part in (nameless.subject, nameless.text or "", nameless.html or ""):
        assert "None" not in part


@pytest.mark.parametrize("locale", LOCALES)
def test_the_thank_you_mail_promises_no_parcel(locale: str) -> None:
    """A gift card or a download is never packed: the thank-you says the order arrived."""
    out = render("thank_you", locale)
    words = ("pack", "ship", "on its way", "verpack", "versand", "unterwegs", "pakk", "send",
             "skick", "pakke", "wysył", "pakuj")
    for part in (out.subject, out.text or "", re.sub(r"<[^>]+>", " ", out.html or "")):
        assert not any(word in part.lower() for word in words), part


@pytest.mark.parametrize("locale", LOCALES)
def test_the_last_win_back_mail_offers_fewer_mails_instead_of_promising_none(
        locale: str) -> None:
    """The win-back flow enters again a year later: its third mail is not 'the last'."""
    out = render("winback_3", locale)
    assert "https://shop.example/p/TOKEN" in (out.text or "").split("\n-- \n")[0]
    if locale == "en":
        for part in (out.subject, out.text or "", out.html or ""):
            assert "last mail" not in part and "of its kind" not in part
            assert "leave you in peace" not in part


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", OFFER_EMAILS)
def test_an_offer_mail_promises_what_the_offer_gives_and_its_button_applies_the_code(
        name: str, locale: str) -> None:
    percent = render(name, locale, kind="percent")
    fixed = render(name, locale, kind="fixed")
    free = render(name, locale, kind="free_shipping")
    amount = rich_context(locale, kind="fixed")["offer"]["amount"]
    url = rich_context(locale)["offer"]["url"]
    assert "20" in (percent.text or "") and "%" in (percent.text or "")
    assert amount in (fixed.text or "") and h(amount) in (fixed.html or "")
    for out in (fixed, free):
        assert "%" not in (out.text or "") and "%" not in out.subject
    for out in (percent, fixed):
        assert FREE_SHIPPING[locale] not in (out.text or "").lower()
    assert FREE_SHIPPING[locale] in (free.text or "").lower()
    for out in (percent, fixed, free):
        assert "BACK20-7KQ2MXAB" in (out.text or "") and "BACK20-7KQ2MXAB" in (out.html or "")
        assert f'href="{url}"' in (out.html or "") and url in (out.text or "")
    context = rich_context(locale)
    del context["offer"]["url"]  # a context without the offers' URL: the shop's front page
    assert 'href="https://shop.example/?utm_source=lifecycle"' in \
        (RENDERER.render(name, context).html or "")


def test_the_loyalty_mail_without_a_free_shipping_offer_does_not_promise_free_shipping() -> None:
    out = render("loyalty_offer", "en", kind="percent")
    assert "shipping" not in (out.text or "") and "shipping" not in (out.html or "")
    assert "20% off your next order" in (out.text or "")


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", PRODUCT_EMAILS)
def test_product_mails_show_up_to_three_recommendations_with_price_picture_and_link(
        name: str, locale: str) -> None:
    context = rich_context(locale)
    context["recommendations"].append({"name": "Vierter Tee", "sku": "R-4", "price": "1",
                                       "url": f"{context['shop']['url']}/p/r4",
                                       "image_url": None})
    out = RENDERER.render(name, context)
    html, text = out.html or "", out.text or ""
    for item in context["recommendations"][:3]:
        assert h(item["name"]) in html and h(item["price"]) in html
        assert f'href="{item["url"]}"' in html and f'src="{item["image_url"]}"' in html
        assert item["name"] in text and item["url"] in text
    assert "Vierter Tee" not in html and "Vierter Tee" not in text
    context["recommendations"] = []
    assert "/p/r1" not in (RENDERER.render(name, context).html or "")


@pytest.mark.parametrize("locale", LOCALES)
def test_the_review_ask_links_each_product_bought_else_the_shop_s_review_page(
        locale: str) -> None:
    context = rich_context(locale)
    out = RENDERER.render("review_request", context)
    for review in context["reviews"]:
        assert f'href="{review["url"]}"' in (out.html or "") and review["url"] in (out.text or "")
    context["reviews"] = []
    out = RENDERER.render("review_request", context)
    assert 'href="https://shop.example/reviews"' in (out.html or "")
    assert "https://shop.example/reviews" in (out.text or "")


@pytest.mark.parametrize("locale", LOCALES)
def test_the_thank_you_mail_lists_each_line_with_quantity_price_picture_and_link(
        locale: str) -> None:
    context = rich_context(locale)
    out = RENDERER.render("thank_you", context)
    html, text = out.html or "", out.text or ""
    for line in context["order"]["lines"]:
        assert f'src="{line["image_url"]}"' in html and f'href="{line["url"]}"' in html
        assert h(f'{line["quantity"]} × {line["price"]}') in html and h(line["line_total"]) in html
        assert f'{line["quantity"]} × {line["name"]} ({line["price"]}): {line["line_total"]}' \
            in text
    assert h(context["order"]["total"]) in html and context["order"]["total"] in text
    context["order"]["lines"][0].update(image_url=None, url="javascript:alert(1)")
    html = RENDERER.render("thank_you", context).html or ""
    assert "javascript:" not in html and html.count('src="https://shop.example/img/line-') == 2


def test_the_header_shows_the_logo_or_else_the_shop_s_name_and_the_brand_colour() -> None:
    context = rich_context("en", logo=True)
    context["shop"]["brand_color"] = "#a33b20"
    html = RENDERER.render("winback_2", context).html or ""
    assert re.search(r'<img src="https://shop.example/img/logo.svg" alt="Teehaus '
                     r'Schwarzenberg-Hohenlohe &amp; Töchter" height="40"', html)
    assert 'bgcolor="#a33b20"' in html and "background-color: #a33b20" in html  # the button
    html = RENDERER.render("winback_2", rich_context("en")).html or ""
    assert "logo.svg" not in html
    assert re.search(r'<a href="https://shop.example/\?utm_source=lifecycle" [^>]*>\s*<span '
                     r'class="brand-name"[^>]*>Teehaus Schwarzenberg-Hohenlohe &amp; Töchter'
                     r"</span>\s*</a>", html)
    survey = RENDERER.render("feedback_request", rich_context("en")).html or ""
    assert "brand-name" in survey and "utm_source" not in survey  # nothing to browse away to


@pytest.mark.parametrize("name", EMAILS)
def test_each_mail_has_a_preheader_of_its_own_before_anything_else(name: str) -> None:
    html = render(name, "de").html or ""
    found = re.search(r'<body[^>]*>\s*<div class="preheader" style="([^"]*)">([^<]+)</div>', html)
    assert found is not None, name
    assert "display: none" in found.group(1) and "mso-hide: all" in found.group(1)
    assert len(found.group(2).strip()) > 20
    assert html.count("&zwnj;") >= 50  # filler: the inbox shows no body text after it


@pytest.mark.parametrize("name", EMAILS)
def test_the_footer_is_in_its_own_small_size_and_the_body_in_16_px(name: str) -> None:
    """Every size is written inline (an inliner once copied ``p {font-size: 16px}`` over the
    footer's rule): the footer's paragraphs say 12 px, the card they are not in says 16 px."""
    html = render(name, "en").html or ""
    footer = re.search(r'<td class="foot"[^>]*>(.*?)</td>', html, re.S)
    assert footer is not None
    sizes = re.findall(r"font-size: ?(\d+)px", footer.group(0))
    assert sizes and set(sizes) == {"12"}, sizes
    assert "Brooksfleet 7" in footer.group(1)
    card = re.search(r'<td class="card[^"]*"[^>]*>', html)
    assert card is not None and "font-size: 16px" in card.group(0)


def test_the_layout_is_tables_with_a_dark_mode_palette_and_buttons_outlook_can_draw() -> None:
    html = render("winback_3", "en").html or ""
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "@media (prefers-color-scheme: dark)" in html  # the only rules in <style>
    assert "<div class=\"card" not in html and html.count('role="presentation"') >= 5
    assert "<!--[if mso]>" in html  # a fixed 600 px frame for Outlook for Windows
    button = re.search(r'<td align="center" bgcolor="#2f5d50" style="([^"]*)">\s*<a href="'
                       r'https://shop.example/discount/BACK20-7KQ2MXAB\?utm_source=lifecycle"', html)
    assert button is not None and "mso-padding-alt" in button.group(1)
