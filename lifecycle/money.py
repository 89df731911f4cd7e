"""Money for people: an exact amount with its currency, formatted by Babel for a reader.

Amounts are :class:`~decimal.Decimal` with an ISO 4217 currency; they are
never floats, and amounts in different currencies are never added together.
The shop reports in one currency (``LIFECYCLE_CURRENCY``): purchase metrics
and flow revenue count only orders in it, and orders in other currencies are
shown apart, per currency (:class:`Amounts`).

Whose format: a staff page formats for the language its reader's browser asks
for (``Accept-Language``, negotiated by Babel against the locales it has
data for, :func:`reader_locale`); the command line for the terminal's locale
(``LC_ALL`` / ``LC_MONETARY`` / ``LANG``, :func:`terminal_locale`); both fall
back to :data:`FALLBACK_LOCALE`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError, default_locale
from babel.localedata import locale_identifiers
from babel.numbers import format_currency, format_decimal, format_percent, is_currency

#: The locale of a reader who names none Babel knows.
FALLBACK_LOCALE = "en_US"


def known_currency(code: str) -> bool:
    """True for an ISO 4217 code Babel knows (upper case, e.g. ``EUR``)."""
    return code.isupper() and is_currency(code)


def money(amount: Any, currency: str, locale: Locale | str = FALLBACK_LOCALE) -> str:
    """``$1,234.50`` (en_US), ``1.234,50 €`` (de_DE): ``amount`` in ``currency`` as the
    locale writes it.  An unknown currency code is written as the code itself.

    Remembered per amount, currency and locale (a mail writes several amounts, and a
    batch of mails the same prices again and again; Babel takes ~50 µs for each)."""
    return _formatted(str(Decimal(str(amount))), currency, locale)


@lru_cache(maxsize=8192)
def _formatted(amount: str, currency: str, locale: Locale | str) -> str:
    """:func:`money` of the exact amount written ``amount`` (the key keeps ``1.5`` and
    ``1.50`` apart, and ``-0`` from ``0``)."""
    return format_currency(Decimal(amount), currency, locale=locale)


def percent(share: Any, locale: Locale | str = FALLBACK_LOCALE) -> str:
    """A share (0–1) as a percentage with one decimal as the locale writes it (``33.3%`` /
    ``33,3 %``); "—" for None (no share: nothing to divide by)."""
    if share is None:
        return "—"
    pattern = Locale.parse(locale).percent_formats[None].pattern.split(";")[0]
    # the locale's own pattern (its sign and spacing: 33.3% / 33,3 %), with one decimal
    one_decimal = re.sub(r"0(?=[^0#]*$)", "0.0", pattern, count=1)
    return format_percent(Decimal(str(share)), format=one_decimal, locale=locale)


def number(value: Any, locale: Locale | str = FALLBACK_LOCALE) -> str:
    """A plain number as the locale writes it (``1,234`` / ``1.234``)."""
    return format_decimal(value, locale=locale)


@lru_cache(maxsize=1)
def _available() -> tuple[str, ...]:
    return tuple(locale_identifiers())


def preferred_tags(accept_language: str | None) -> list[str]:
    """The language tags of an ``Accept-Language`` header, best first (by q-weight, then
    order; ``q=0`` and ``*`` left out), with ``_`` for ``-`` (``de_AT``)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            weighted.append((-q, index, tag.replace("-", "_")))
    return [tag for _, _, tag in sorted(weighted)]


@lru_cache(maxsize=512)
def reader_locale(accept_language: str | None) -> Locale:
    """The locale of a request's ``Accept-Language`` (its tags by their q-weights, the
    first Babel has data for); :data:`FALLBACK_LOCALE` when none is usable."""
    preferred = preferred_tags(accept_language)
    found = Locale.negotiate(preferred, _available()) if preferred else None
    return found or Locale.parse(FALLBACK_LOCALE)


def terminal_locale() -> Locale:
    """The locale the terminal's environment names (``LC_ALL``, ``LC_MONETARY``, ``LANG``);
    :data:`FALLBACK_LOCALE` for ``C``/``POSIX`` or none."""
    name = default_locale("LC_MONETARY")
    if not name or name.endswith("_POSIX"):
        return Locale.parse(FALLBACK_LOCALE)
    try:
        return Locale.parse(name)
    except (UnknownLocaleError, ValueError):
        return Locale.parse(FALLBACK_LOCALE)


class Amounts:
    """Sums per currency, never mixed: ``add`` keeps each currency apart."""

    def __init__(self, items: Iterable[tuple[str, Any]] = ()) -> None:
        self.by_currency: dict[str, Decimal] = {}
        for currency, amount in items:
            self.add(currency, amount)

    def add(self, currency: str, amount: Any) -> None:
        self.by_currency[currency] = self.by_currency.get(currency, Decimal("0")) \
            + Decimal(str(amount))

    def get(self, currency: str) -> Decimal:
        return self.by_currency.get(currency, Decimal("0"))

    def others(self, currency: str) -> list[tuple[str, Decimal]]:
        """The sums in every currency but ``currency``, by code."""
        return sorted((c, a) for c, a in self.by_currency.items() if c != currency)

    def __iter__(self) -> Iterator[tuple[str, Decimal]]:
        return iter(sorted(self.by_currency.items()))

    def __bool__(self) -> bool:
        return bool(self.by_currency)
