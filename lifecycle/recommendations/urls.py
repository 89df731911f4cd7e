"""Product links from outside, checked; and the per-product review link pattern.

An order line may carry ``url`` (the product's page) and ``image_url`` (its
picture). Both come from the shop, so both are untrusted: they must be
absolute ``http``/``https`` URLs with a host, without spaces or control
characters, at most :data:`MAX_URL` characters long.

``LIFECYCLE_REVIEW_URL`` is a pattern with these placeholders:

=============  ============================================================
``{shop_url}``  LIFECYCLE_SHOP_URL, as is
``{url}``       the line's product page, as is (only at the very start:
                ``{url}#reviews``); a line without one gets no review link
``{sku}``       the line's SKU, percent-encoded; a line without one gets none
``{order_id}``  the order's id, percent-encoded
=============  ============================================================
"""

from __future__ import annotations

import functools
import re
from string import Formatter
from urllib.parse import quote, urlsplit

#: Longest product or image URL kept (the limit of common browsers and CDNs).
MAX_URL = 2000
REVIEW_FIELDS = ("shop_url", "url", "sku", "order_id")
DEFAULT_REVIEW_URL = "{shop_url}/reviews"
_BAD_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")


class BadUrl(ValueError):
    """Not an acceptable URL; the message says why (without naming the field)."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def check_url(value: object) -> str | None:
    """``value`` as a clean http(s) URL, None for nothing (None or blank); :class:`BadUrl`."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadUrl(f"{value!r} is not a text")
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_URL:
        raise BadUrl(f"is longer than {MAX_URL} characters")
    if _BAD_CHARACTERS.search(value):
        raise BadUrl(f"{_shown(value)} contains spaces or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise BadUrl(f"{_shown(value)} is not an http(s) URL")
    return value


def safe_url(value: object) -> str | None:
    """``value`` if it is an acceptable URL, else None (for stored data older than the check)."""
    if isinstance(value, str) and len(value) <= MAX_URL:
        return _safe_text(value)
    try:
        return check_url(value)
    except BadUrl:
        return None


@functools.lru_cache(maxsize=8192)
def _safe_text(value: str) -> str | None:
    """:func:`safe_url` of a text, remembered: a batch of mails links the same products and
    pictures again and again."""
    try:
        return check_url(value)
    except BadUrl:
        return None


def check_review_pattern(pattern: str, shop_url: str) -> str:
    """``pattern`` if it is a usable review URL pattern; else :class:`ValueError` saying why."""
    fields: list[str] = []
    try:
        parsed = list(Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"is not a pattern ({exc}); write a literal brace as {{{{ or }}}}") \
            from None
    for literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in REVIEW_FIELDS:
            raise ValueError(f"has an unknown placeholder {{{name}}}; the known ones are "
                             + ", ".join(f"{{{f}}}" for f in REVIEW_FIELDS))
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format or conversion")
        if name == "url" and (fields or literal):
            raise ValueError("{url} (a whole URL) may only start the pattern, e.g. "
                             "{url}#reviews; use {sku} elsewhere")
        fields.append(name)
    sample = pattern.format(shop_url=shop_url, url="https://shop.example/p/1", sku="SKU-1",
                            order_id="1001")
    try:
        check_url(sample)
    except BadUrl as exc:
        raise ValueError(f"does not make a usable link (with sample values, {exc})") from None
    return pattern


@functools.lru_cache(maxsize=64)
def _placeholders(pattern: str) -> frozenset[str]:
    return frozenset(name for _literal, name, _spec, _conv in Formatter().parse(pattern) if name)


def review_url(pattern: str, shop_url: str, *, sku: str | None, url: str | None,
               order_id: str | None) -> str | None:
    """The review link of one order line, or None if the pattern needs what the line lacks."""
    names = _placeholders(pattern)
    if ("sku" in names and not sku) or ("url" in names and not url) or (
            "order_id" in names and not order_id):
        return None
    return safe_url(pattern.format(shop_url=shop_url, url=url or "",
                                   sku=quote(sku or "", safe=""),
                                   order_id=quote(order_id or "", safe="")))
