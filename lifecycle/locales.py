"""Customers' languages: which language a customer reads, and numbers, money and dates in it.

A customer's ``locale`` (from an import, an API call or a webhook) is untrusted
text: :func:`parse_locale` turns ``de-AT``, ``de_AT`` or ``DE-at`` into Babel's
``de_AT`` and anything else into ``None``; it never raises.

Copy (mail templates, the public pages) ships in :data:`SHIPPED` languages, one
folder per locale.  :func:`fallback_chain` is the order in which such folders
are tried for a customer; the mail renderer and the public pages both use it.

Formatting (:func:`money`, :func:`long_date`, :func:`number`) is Babel's, for the
customer's locale when Babel knows it, else the shop's default
(``LIFECYCLE_LOCALE``); money goes through :func:`lifecycle.money.money`.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import get_currency_precision

from lifecycle import money as _money

#: The languages every shipped template and public page is written in.
SHIPPED: tuple[str, ...] = ("en", "de", "nb", "sv", "da", "pl")

#: The shop's default when ``LIFECYCLE_LOCALE`` is not set.
DEFAULT_LOCALE = "en"

#: Languages read through another one's copy: Norwegian (``no``) and Nynorsk (``nn``)
#: customers read the Bokmål (``nb``) copy.
ALIASES: dict[str, str] = {"no": "nb", "nn": "nb"}

_SHAPE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@lru_cache(maxsize=1024)
def parse_locale(raw: Any) -> str | None:
    """Babel's identifier (``de_AT``, ``nb``, ``zh_Hant_TW``) for a customer's locale text,
    or ``None`` for no text, text of another shape or a locale Babel does not know.

    Accepts ``-`` or ``_`` as separator and any letter case (``DE-at`` → ``de_AT``).
    ``no`` stays ``no`` (Babel knows it; :func:`fallback_chain` adds ``nb``); a Norwegian
    locale Babel does not know (``no-NO``) reads as Bokmål (``nb_NO``); a known language
    with an unknown region is the language (``de-XX`` → ``de``).
    Never raises.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text or len(text) > 35 or not _SHAPE.match(text):
        return None
    parts = text.replace("-", "_").split("_")
    language = parts[0].lower()
    alias = ALIASES.get(language)
    # The full locale, then (Babel has no ``no_NO``) the Bokmål one, then the language alone
    # when the region or script is unknown (``de-XX`` → ``de``).
    for candidate in ("_".join(parts), alias and "_".join([alias, *parts[1:]]), language, alias):
        if not candidate:
            continue
        try:
            return str(Locale.parse(candidate))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return None


def is_locale(raw: str) -> bool:
    """True when ``raw`` names a locale Babel knows (in any of the accepted spellings)."""
    return parse_locale(raw) is not None


@lru_cache(maxsize=1024)
def _chain(customer: str | None, default: str) -> tuple[str, ...]:
    out: list[str] = []

    def add(name: str | None) -> None:
        if name and name not in out:
            out.append(name)

    parsed = parse_locale(customer) if customer else None
    if parsed:
        locale = Locale.parse(parsed)
        language = locale.language
        alias = ALIASES.get(language)
        add(parsed)
        if locale.script:
            add(f"{language}_{locale.script}")
        add(language)
        if alias:
            if locale.territory:
                add(f"{alias}_{locale.territory}")
            add(alias)
    shop = parse_locale(default) or DEFAULT_LOCALE
    shop_locale = Locale.parse(shop)
    add(shop)
    add(shop_locale.language)
    add(ALIASES.get(shop_locale.language))
    return tuple(out)


def fallback_chain(customer_locale: str | None, default: str = DEFAULT_LOCALE) -> list[str]:
    """The locale folder names to try, best first, for a customer's locale.

    Contract (the mail renderer and the public pages rely on it):

    - ``customer_locale`` is the raw, untrusted ``customers.locale`` text (or None);
      ``default`` is the shop's ``LIFECYCLE_LOCALE`` (``Settings.locale``).
    - The result is a non-empty list of distinct Babel identifiers with ``_``
      (folder names): the customer's full locale, then its language (with script
      first when it has one), then the shop default and its language.
      ``de-AT`` → ``["de_AT", "de", "en"]``; ``DE`` → ``["de", "en"]``.
    - Norwegian without Bokmål copy: ``no``/``nn``/``no-NO``/``nn_NO`` get ``nb``
      after their own names: ``nn-NO`` → ``["nn_NO", "nn", "nb_NO", "nb", "en"]``,
      ``no`` → ``["no", "nb", "en"]``, ``no-NO`` → ``["nb_NO", "nb", "en"]``.
    - Garbage, an unknown locale, ``""`` or ``None`` → just the default's chain
      (``["en"]``; ``de_CH`` default → ``["de_CH", "de"]``).
    - It never raises. The caller picks, per part, the first folder that has it and
      then the template's root (parts outside any locale folder); the language of
      the folder used is what ``lang`` reports (:func:`html_lang`).
    """
    return list(_chain(customer_locale if isinstance(customer_locale, str) else None,
                       default if isinstance(default, str) else DEFAULT_LOCALE))


def choose(customer_locale: str | None, available: Any, default: str = DEFAULT_LOCALE) -> str | None:
    """The first name of :func:`fallback_chain` that is in ``available`` (a set of folder
    names, e.g. :data:`SHIPPED`), or None."""
    for name in fallback_chain(customer_locale, default):
        if name in available:
            return name
    return None


def written_locales(templates: Path) -> frozenset[str]:
    """The locale folder names the mail templates in ``templates`` are written in (any
    template's, not ``_base``'s), read again at most every :data:`WRITTEN_SECONDS`."""
    now = time.monotonic()
    kept = _written.get(templates)
    if kept is None or now - kept[0] > WRITTEN_SECONDS:
        names: set[str] = set()
        try:
            for email in templates.iterdir():
                if email.is_dir() and not email.name.startswith("_"):
                    names.update(f.name for f in email.iterdir() if f.is_dir() and is_locale(f.name))
        except OSError:
            pass
        kept = (now, frozenset(names))
        _written[templates] = kept
    return kept[1]


#: Seconds :func:`written_locales` keeps what it read (the renderer rereads folders as often).
WRITTEN_SECONDS = 2.0
_written: dict[Path, tuple[float, frozenset[str]]] = {}


@lru_cache(maxsize=1024)
def copy_formatting_locale(customer_locale: str | None, written: frozenset[str],
                           default: str = DEFAULT_LOCALE) -> Locale:
    """The locale a mail's amounts and dates are written in: the customer's (``de_AT``) when
    the copy can be in their language (a folder of ``written`` on their fallback chain has
    their language), else the locale of the copy they get (a French customer of a shop
    writing English and German reads English copy: ``€11.50`` and ``13 January 2027``, not
    ``11,50 €`` and ``13 janvier 2027`` inside English sentences).  Remembered: a mail's
    worth of locale parsing for every mail of a batch otherwise."""
    chosen = choose(customer_locale, written, default)
    own = parse_locale(customer_locale) if isinstance(customer_locale, str) else None
    if own and chosen and Locale.parse(chosen).language == Locale.parse(own).language:
        return formatting_locale(own, default)
    return formatting_locale(chosen or default, default)


def html_lang(name: str) -> str:
    """The BCP 47 tag of a folder name for ``<html lang>``: ``de_AT`` → ``de-AT``."""
    return name.replace("_", "-")


def formatting_locale(customer_locale: str | None, default: str = DEFAULT_LOCALE) -> Locale:
    """The Babel locale amounts and dates are written in: the customer's when Babel knows it
    (``de-AT`` → ``de_AT``; ``no`` → ``nb``), else the shop default's."""
    return _formatting(customer_locale if isinstance(customer_locale, str) else None,
                       default if isinstance(default, str) else DEFAULT_LOCALE)


@lru_cache(maxsize=1024)
def _formatting(customer: str | None, default: str) -> Locale:
    for raw in (customer, default, DEFAULT_LOCALE):
        parsed = parse_locale(raw) if raw else None
        if parsed:
            return Locale.parse(parsed)
    return Locale.parse(DEFAULT_LOCALE)  # pragma: no cover - DEFAULT_LOCALE always parses


def money(amount: Any, currency: str, locale: Locale | str | None = None,
          default: str = DEFAULT_LOCALE) -> str:
    """``amount`` (Decimal, or a string/int that is one; never a float) in ``currency`` as the
    locale writes it, with the currency's own decimals: ``1.234,50 €`` (de),
    ``$1,234.50`` (en_US), ``¥750`` (JPY in en).  Floats are refused (TypeError)."""
    if isinstance(amount, float):
        raise TypeError("money amounts are Decimal, never float")
    value = Decimal(str(amount))
    loc = locale if isinstance(locale, Locale) else formatting_locale(locale, default)
    # Babel writes the currency's standard decimals (JPY: 0, EUR: 2) and rounds half-even.
    return _money.money(value, currency, loc)


def currency_decimals(currency: str) -> int:
    """How many decimals ``currency`` is written with (JPY 0, EUR 2, KWD 3)."""
    return get_currency_precision(currency)


def number(value: Any, locale: Locale | str | None = None, default: str = DEFAULT_LOCALE) -> str:
    """A number as the locale writes it (``1.234`` de, ``1,234`` en, ``1 234`` nb/sv/pl)."""
    if isinstance(value, float):
        raise TypeError("numbers are formatted from int or Decimal, never float")
    loc = locale if isinstance(locale, Locale) else formatting_locale(locale, default)
    return _money.number(value, loc)


def long_date(moment: datetime | date, locale: Locale | str | None = None,
              timezone: str | None = None, default: str = DEFAULT_LOCALE) -> str:
    """A long date as the locale writes it: ``30. Dezember 2026`` (de), ``December 30, 2026``
    (en).  A datetime (aware; naive is read as UTC) is first moved into ``timezone``
    (an IANA name; unknown or None keeps UTC) so the day is the customer's day."""
    loc = locale if isinstance(locale, Locale) else formatting_locale(locale, default)
    day: date
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("UTC"))
        zone = _zone(timezone)
        day = aware.astimezone(zone).date()
    else:
        day = moment
    return _long_date(day, loc)


@lru_cache(maxsize=4096)
def _long_date(day: date, loc: Locale) -> str:
    """:func:`long_date` of a day, remembered: a batch of mails writes the same few days."""
    return format_date(day, format="long", locale=loc)


@lru_cache(maxsize=512)
def _zone(name: str | None) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):
            pass
    return ZoneInfo("UTC")
