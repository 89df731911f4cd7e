"""Customers' languages: parsing a locale, the fallback chain of copy, Babel formatting per
locale, and the mail context written for a German customer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from babel.dates import format_date
from dateutil.relativedelta import relativedelta
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from lifecycle import locales
from lifecycle.config import ConfigError, load_settings
from lifecycle.flows.definitions import Offer
from lifecycle.mail.context import build_context
from lifecycle.models import Customer
from tests.factories import WEB_SECRET, add_customer, add_order
from tests.test_mail_copy import RENDERER

T0 = datetime(2026, 12, 31, 9, tzinfo=UTC)


@pytest.mark.parametrize("raw, parsed", [
    ("de-AT", "de_AT"), ("de_AT", "de_AT"), ("DE-at", "de_AT"), (" de ", "de"), ("EN", "en"),
    ("zh-Hant-TW", "zh_Hant_TW"), ("no", "no"), ("no-NO", "nb_NO"), ("nn_NO", "nn_NO"),
    ("de-XX", "de"),  # a known language with an unknown region is still the language
    ("garbage", None), ("xx", None), ("xx-DE", None), ("", None), ("   ", None), (None, None),
    ("de--AT", None), ("-de", None), ("de_AT.UTF-8", None), ("<script>", None), ("12", None),
    ("d" * 40, None), (42, None),
])
def test_a_customer_locale_is_read_in_any_spelling_and_garbage_is_none(raw: object,
                                                                        parsed: str | None) -> None:
    assert locales.parse_locale(raw) == parsed


@given(st.text(max_size=60))
def test_reading_a_locale_never_raises_on_any_text(raw: str) -> None:
    found = locales.parse_locale(raw)
    assert found is None or locales.parse_locale(found) == found
    chain = locales.fallback_chain(raw, "de_AT")
    assert chain[-2:] == ["de_AT", "de"] and len(chain) == len(set(chain))


@pytest.mark.parametrize("customer, default, chain", [
    ("de-AT", "en", ["de_AT", "de", "en"]),
    ("DE_at", "en", ["de_AT", "de", "en"]),
    ("de", "en", ["de", "en"]),
    ("en-US", "en", ["en_US", "en"]),
    ("no", "en", ["no", "nb", "en"]),
    ("nn", "en", ["nn", "nb", "en"]),
    ("no-NO", "en", ["nb_NO", "nb", "en"]),
    ("nn-NO", "de", ["nn_NO", "nn", "nb_NO", "nb", "de"]),
    ("garbage", "en", ["en"]),
    (None, "en", ["en"]),
    ("", "pl", ["pl"]),
    ("sv-FI", "de_CH", ["sv_FI", "sv", "de_CH", "de"]),
    ("de_CH", "de_CH", ["de_CH", "de"]),
])
def test_the_fallback_chain_goes_region_language_then_shop_default(
        customer: str | None, default: str, chain: list[str]) -> None:
    assert locales.fallback_chain(customer, default) == chain


def test_choosing_a_folder_takes_the_first_of_the_chain_that_exists() -> None:
    shipped = set(locales.SHIPPED)
    assert locales.choose("de-AT", shipped) == "de"
    assert locales.choose("nn-NO", shipped) == "nb"
    assert locales.choose("fr-FR", shipped, "sv") == "sv"
    assert locales.choose("fr-FR", shipped, "fr") is None  # no copy at all: the template root
    assert locales.html_lang("de_AT") == "de-AT"


AMOUNT = Decimal("1234.50")


@pytest.mark.parametrize("locale, eur, nok, usd", [
    ("de", "1.234,50\xa0€", "1.234,50\xa0NOK", "1.234,50\xa0$"),
    ("de-AT", "€\xa01.234,50", "NOK\xa01.234,50", "$\xa01.234,50"),
    ("en-US", "€1,234.50", "NOK1,234.50", "$1,234.50"),
    ("nb", "1\xa0234,50\xa0€", "1\xa0234,50\xa0kr", "1\xa0234,50\xa0USD"),
    ("sv", "1\xa0234,50\xa0€", "1\xa0234,50\xa0Nkr", "1\xa0234,50\xa0US$"),
    ("da", "1.234,50\xa0€", "1.234,50\xa0NOK", "1.234,50\xa0USD"),
    ("pl", "1\xa0234,50\xa0€", "1\xa0234,50\xa0NOK", "1\xa0234,50\xa0USD"),
    ("garbage", "€1,234.50", "NOK1,234.50", "$1,234.50"),  # the shop default, en
])
def test_money_is_written_as_each_locale_writes_it(locale: str, eur: str, nok: str,
                                                   usd: str) -> None:
    assert [locales.money(AMOUNT, c, locale) for c in ("EUR", "NOK", "USD")] == [eur, nok, usd]


def test_yen_has_no_decimals_and_amounts_are_rounded_not_truncated() -> None:
    assert locales.money(Decimal("750"), "JPY", "en") == "¥750"
    assert locales.money(Decimal("750.4"), "JPY", "ja") == "￥750"
    assert locales.money(Decimal("750"), "JPY", "de") == "750\xa0¥"
    assert locales.currency_decimals("JPY") == 0 and locales.currency_decimals("KWD") == 3
    assert locales.money("0.125", "EUR", "de") == "0,12\xa0€"  # half-even, as Babel rounds
    assert locales.money(3, "EUR", "de") == "3,00\xa0€"


def test_money_and_numbers_refuse_floats() -> None:
    with pytest.raises(TypeError):
        locales.money(12.5, "EUR", "de")
    with pytest.raises(TypeError):
        locales.number(0.1, "de")


@pytest.mark.parametrize("locale, number, day", [
    ("de", "1.234.567", "31. Dezember 2026"),
    ("de-AT", "1.234.567", "31. Dezember 2026"),
    ("en-US", "1,234,567", "December 31, 2026"),
    ("nb", "1\xa0234\xa0567", "31. desember 2026"),
    ("no", "1\xa0234\xa0567", "31. desember 2026"),
    ("sv", "1\xa0234\xa0567", "31 december 2026"),
    ("da", "1.234.567", "31. december 2026"),
    ("pl", "1\xa0234\xa0567", "31 grudnia 2026"),
])
def test_numbers_and_long_dates_per_locale_on_the_customer_s_day(locale: str, number: str,
                                                                 day: str) -> None:
    assert locales.number(1234567, locale) == number
    # 23:30 UTC on the 30th is already the 31st in Berlin
    moment = datetime(2026, 12, 30, 23, 30, tzinfo=UTC)
    assert locales.long_date(moment, locale, "Europe/Berlin") == day
    assert locales.long_date(moment, locale, "America/New_York")[:2] in ("30", "De", "Dec")


def test_the_shop_default_locale_is_checked_by_babel_at_start() -> None:
    assert load_settings({}).locale == "en"
    assert load_settings({"LIFECYCLE_LOCALE": "de-AT"}).locale == "de_AT"
    for bad in ("german", "xx", "de_XX", "no-NO", "en.UTF-8"):
        with pytest.raises(ConfigError, match="LIFECYCLE_LOCALE=.* is not a locale Babel knows"):
            load_settings({"LIFECYCLE_LOCALE": bad})


def test_brand_colour_logo_and_support_address_are_checked() -> None:
    settings = load_settings({"LIFECYCLE_MAIL_FROM": "Tea <hello@tea.example>"})
    assert settings.brand_color == "#2f5d50" and settings.shop_logo_url is None
    assert settings.support_address == "hello@tea.example"  # the From address by default
    assert load_settings({"LIFECYCLE_BRAND_COLOR": "#ABC"}).brand_color == "#abc"
    with pytest.raises(ConfigError, match="LIFECYCLE_BRAND_COLOR='red' must be a hex colour"):
        load_settings({"LIFECYCLE_BRAND_COLOR": "red"})
    with pytest.raises(ConfigError, match="LIFECYCLE_SHOP_LOGO_URL"):
        load_settings({"LIFECYCLE_SHOP_LOGO_URL": "javascript:alert(1)"})
    with pytest.raises(ConfigError, match="LIFECYCLE_SUPPORT_EMAIL"):
        load_settings({"LIFECYCLE_SUPPORT_EMAIL": "help"})


# ------------------------------------------------------------------ the mail context


def customer_row(conn: Connection, cid: int):  # type: ignore[no-untyped-def]
    return conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()


def settings(**env: str):  # type: ignore[no-untyped-def]
    return replace(load_settings({"LIFECYCLE_CURRENCY": "EUR", "LIFECYCLE_SHOP_NAME": "Teehaus",
                                  "LIFECYCLE_SHOP_LOGO_URL": "https://tee.example/logo.png",
                                  **env}), secret_key=WEB_SECRET)


def test_a_german_customer_s_mail_context_is_written_in_german(conn: Connection) -> None:
    cid = add_customer(conn, "anna", T0 - timedelta(days=400), first_name="Anna",
                       locale="de-DE", timezone="Europe/Berlin")
    add_order(conn, cid, datetime(2026, 3, 1, 10, tzinfo=UTC), "30.00", currency="EUR")
    add_order(conn, cid, datetime(2026, 12, 30, 23, 30, tzinfo=UTC), "1234.50", currency="EUR",
              items=[{"name": "Sencha", "sku": "TEA-1", "quantity": 2, "price": "617.25",
                      "url": "https://tee.example/p/sencha",
                      "image_url": "https://tee.example/i/sencha.jpg"},
                     {"name": "Gutschein", "quantity": 1}])
    context = build_context(conn, settings(), customer_row(conn, cid), as_of=T0,
                            flow="win_back", step="one",
                            offer=Offer("percent", relativedelta(days=14), "BACK", percent=10))
    order = context["order"]
    assert order["total"] == "1.234,50\xa0€" and order["amount"] == "1234.50"
    assert order["currency"] == "EUR" and order["date"] == "31. Dezember 2026"
    assert order["ordered_at"] == "2026-12-30T23:30:00+00:00"
    assert order["lines"][0] == {
        "name": "Sencha", "sku": "TEA-1", "quantity": 2, "category": None,
        "price": "617,25\xa0€", "line_total": "1.234,50\xa0€",
        "url": "https://tee.example/p/sencha?utm_source=lifecycle&utm_medium=email"
               "&utm_campaign=win_back&utm_content=one",
        "image_url": "https://tee.example/i/sencha.jpg",
        "review_url": "http://127.0.0.1:8000/reviews?utm_source=lifecycle&utm_medium=email"
                      "&utm_campaign=win_back&utm_content=one"}
    assert order["lines"][1]["price"] is None and order["lines"][1]["line_total"] is None
    assert context["last_order"]["date"] == "31. Dezember 2026"
    assert context["metrics"] == {"order_count": 2, "total_spend": "1.264,50\xa0€",
                                  "total_spend_amount": "1264.50", "currency": "EUR"}
    assert context["offer"]["expires"] == "14. Januar 2027" and context["offer"]["percent"] == 10
    assert context["customer"]["locale"] == "de_DE"
    shop = context["shop"]
    assert shop["team"] == "Teehaus" and shop["logo_url"] == "https://tee.example/logo.png"
    assert shop["brand_color"] == "#2f5d50" and shop["support_email"] == "shop@example.com"


def test_a_line_total_babel_cannot_write_is_left_out_and_the_mail_context_is_still_built(
        conn: Connection) -> None:
    """An order stored before imports capped quantities: 999999999999.99 × 10^18 has more
    digits than Babel formats (InvalidOperation); that line shows no total, the rest stays."""
    cid = add_customer(conn, "huge", T0 - timedelta(days=9), locale="de", timezone="UTC")
    add_order(conn, cid, T0 - timedelta(days=1), "10.00", currency="EUR",
              items=[{"name": "Tee", "quantity": 10**18, "price": "999999999999.99"},
                     {"name": "Tasse", "quantity": 2, "price": "5.00"}])
    context = build_context(conn, settings(), customer_row(conn, cid), as_of=T0,
                            flow="win_back", step="one")
    lines = context["order"]["lines"]
    assert (lines[0]["quantity"], lines[0]["price"], lines[0]["line_total"]) == (
        10**18, "999.999.999.999,99\xa0€", None)
    assert lines[1]["line_total"] == "10,00\xa0€"
    out = RENDERER.render("thank_you", context)  # the mail renders, that line without a total
    assert "999.999.999.999,99" in (out.text or "") and "10,00" in (out.html or "")


def test_amounts_follow_the_order_s_currency_and_the_customer_s_region(conn: Connection) -> None:
    us = add_customer(conn, "us", T0 - timedelta(days=9), locale="en-US", timezone="UTC")
    add_order(conn, us, T0 - timedelta(days=1), "1234.50", currency="USD")
    jp = add_customer(conn, "jp", T0 - timedelta(days=9), locale="en", timezone="Asia/Tokyo")
    add_order(conn, jp, T0 - timedelta(days=1), "750", currency="JPY")
    at = add_customer(conn, "at", T0 - timedelta(days=9), locale="DE-at")
    add_order(conn, at, T0 - timedelta(days=1), "1234.5", currency="EUR")
    odd = add_customer(conn, "odd", T0 - timedelta(days=9), locale="klingon")
    add_order(conn, odd, T0 - timedelta(days=1), "1234.5", currency="EUR")
    shop = settings(LIFECYCLE_LOCALE="da")
    totals = {name: build_context(conn, shop, customer_row(conn, cid), as_of=T0)["order"]["total"]
              for name, cid in (("us", us), ("jp", jp), ("at", at), ("odd", odd))}
    assert totals == {"us": "$1,234.50", "jp": "¥750", "at": "€\xa01.234,50",
                      "odd": "1.234,50\xa0€"}  # an unknown locale: the shop's default (da)


def test_a_customer_whose_language_has_no_copy_gets_amounts_and_dates_as_the_copy_writes_them(
        conn: Connection) -> None:
    """A French customer of a shop writing English and German reads English copy: its amounts
    and dates are English too, not French words inside English sentences."""
    fr = add_customer(conn, "fr", T0 - timedelta(days=9), locale="fr-FR", timezone="UTC")
    day = (T0 - timedelta(days=1)).replace(hour=12)
    add_order(conn, fr, day, "11.50", currency="USD")
    at = add_customer(conn, "at", T0 - timedelta(days=9), locale="de-AT", timezone="UTC")
    add_order(conn, at, day, "11.50", currency="EUR")
    shop = settings()  # LIFECYCLE_LOCALE en; the shipped templates: en de nb sv da pl
    french = build_context(conn, shop, customer_row(conn, fr), as_of=T0)["order"]
    assert (french["total"], french["date"]) == ("$11.50", format_date(day, "long", locale="en"))
    austrian = build_context(conn, shop, customer_row(conn, at), as_of=T0)["order"]
    assert (austrian["total"], austrian["date"]) == ("€\xa011,50",
                                                     format_date(day, "long", locale="de_AT"))


def test_the_readme_s_languages_table_is_what_babel_writes() -> None:
    from tests.test_config import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    day = datetime(2026, 12, 31, 12, tzinfo=UTC)
    rows = {
        "order.total": [locales.money(AMOUNT, "EUR", "de"), locales.money(AMOUNT, "EUR", "de-AT"),
                        locales.money(AMOUNT, "USD", "en-US"),
                        locales.money(AMOUNT, "NOK", "nb") + " (NOK)"],
        "yen": [locales.money(Decimal(750), "JPY", loc) for loc in ("de", "de-AT", "en-US", "nb")],
        "order.date": [locales.long_date(day, loc) for loc in ("de", "de-AT", "en-US", "nb")],
    }
    lines = readme.splitlines()
    for key, cells in rows.items():
        [line] = [line for line in lines if line.startswith(f"| `{key}`") or
                  line.startswith(f"| {key}")]
        written = [cell.strip().strip("`") for cell in line.split("|")[2:6]]
        assert [c.replace(" kr` (NOK)", " kr (NOK)") for c in written] \
            == [c.replace("\xa0", " ") for c in cells], key
