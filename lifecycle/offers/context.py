"""The template's ``offer``: what a mail says about its code, and the button that applies it.

=============  =================================================================
``code``       the stored code (a sample, ``PREFIX-TEST-CODE``, in a test send or preview)
``kind``       ``percent``, ``fixed`` or ``free_shipping``
``percent``    the whole percent off (``15``) or None
``amount``     the fixed amount off, formatted for the customer's locale (``5,00 €``) or None
``value``      the raw value as text: ``15``, ``5.00``, ``""`` for free shipping
``currency``   the fixed amount's currency or None
``expires``    the last day, a long date in the customer's zone and language
``expires_at`` the expiry instant, ISO 8601 in UTC
``url``        ``LIFECYCLE_OFFER_URL`` filled in: the shop's page that applies the code
=============  =================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from dateutil.relativedelta import relativedelta

from lifecycle import locales
from lifecycle.flows.definitions import Offer
from lifecycle.money import money
from lifecycle.offers.service import sample_code, spec_context
from lifecycle.timeutil import as_utc, parse_instant


def offer_url(pattern: str, shop_url: str, code: str) -> str:
    """``LIFECYCLE_OFFER_URL`` (checked by the configuration) with the code filled in."""
    return pattern.replace("{shop_url}", shop_url).replace("{code}", quote(code, safe=""))


def offer_vars(offer: Offer | Mapping[str, Any], *, shop_url: str, url_pattern: str,
               locale: str | None, tz: str, as_of: datetime) -> dict[str, Any]:
    """The template's ``offer`` for a mail's stored offer (the outbox context's ``offer``,
    with its ``code`` and ``expires_at``) or a step's :class:`Offer` (a preview: sample code,
    expiry counted from ``as_of``)."""
    spec = spec_context(offer) if isinstance(offer, Offer) else dict(offer)
    code = spec.get("code") or sample_code(str(spec.get("prefix") or "OFFER"))
    if spec.get("expires_at"):
        expires_at = as_utc(parse_instant(str(spec["expires_at"])))
    else:
        expires_at = as_utc(as_of) + relativedelta(**(spec.get("valid") or {"days": 14}))
    kind = str(spec.get("kind") or "percent")  # mails decided before kinds: percent
    value = spec.get("value")
    percent = spec.get("percent")
    if kind == "percent" and percent is None and value not in (None, ""):
        percent = int(value)
    if kind == "percent" and value is None:
        value = str(percent)
    reader = locales.formatting_locale(locale)
    amount = None
    if kind == "fixed" and value and spec.get("currency"):
        amount = money(value, str(spec["currency"]), reader)
    return {"code": code, "kind": kind, "percent": int(percent) if percent is not None else None,
            "amount": amount, "value": "" if value is None else str(value),
            "currency": spec.get("currency"),
            "expires": locales.long_date(expires_at, reader, tz),
            "expires_at": expires_at.isoformat(),
            "url": offer_url(url_pattern, shop_url, code)}
