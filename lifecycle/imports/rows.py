"""Validation of import rows: raw fields in, clean values or one reason out.

A reason is a short sentence naming the field, e.g. ``email 'bob@' is not a
valid address``.  The loader turns it into ``FILE:LINE: reason``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from lifecycle.models.customers import OrderStatus
from lifecycle.recommendations.urls import BadUrl, check_url
from lifecycle.timeutil import is_timezone, parse_instant

MAX_ID = 255
MAX_NAME = 200
MAX_TOTAL = Decimal("999999999999.99")
#: Largest quantity of an order line (as the API's OrderItem allows).
MAX_QUANTITY = 1_000_000

CUSTOMER_COLUMNS = ("customer_id", "email", "first_name", "last_name", "timezone", "locale",
                    "created_at", "marketing_consent", "attributes")
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "total", "currency", "status", "items",
                 "email", "first_name", "last_name", "timezone", "discount_codes")
#: Most discount codes one order may carry, and the longest code.
MAX_CODES, MAX_CODE = 20, 40
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_LOCALE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

_STATUS_ALIASES = {
    "completed": OrderStatus.COMPLETED, "complete": OrderStatus.COMPLETED,
    "paid": OrderStatus.COMPLETED, "fulfilled": OrderStatus.COMPLETED,
    "shipped": OrderStatus.COMPLETED, "delivered": OrderStatus.COMPLETED,
    "pending": OrderStatus.PENDING, "processing": OrderStatus.PENDING,
    "cancelled": OrderStatus.CANCELLED, "canceled": OrderStatus.CANCELLED,
    "refunded": OrderStatus.REFUNDED,
}
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class RowError(ValueError):
    """The row cannot be imported; the message says why.

    ``kind`` is the reason without the row's values (``email is not a valid address``), by
    which an import's summary counts its skipped rows; by default it is made from the message
    (:func:`reason_kind`).
    """

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or reason_kind(message)


_QUOTED = re.compile(r"""\s*(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_DETAIL = re.compile(r"\s*\([^()]*\)$")
_FIELDS = re.compile(r"^\d+ fields but the header has \d+$")


def reason_kind(reason: str) -> str:
    """A reason without the values of its row, to count rows by: quoted values, item numbers
    and a closing remark in brackets go (``items[2].url 'javascript:…' is not an http(s) URL``
    is counted as ``items[n].url is not an http(s) URL``)."""
    if _FIELDS.match(reason):
        return "more fields than the header"
    if reason.startswith("not readable as CSV"):
        return "not readable as CSV"
    kind = _DETAIL.sub("", _QUOTED.sub("", reason))
    kind = re.sub(r"\[\d+\]", "[n]", kind).replace(": is ", " is ")
    return kind.strip() or reason


@dataclass(frozen=True)
class Defaults:
    """Values for what a file leaves out."""

    timezone: str = "UTC"  # zone of timestamps without an offset
    currency: str = "USD"


def _text(fields: dict[str, Any], name: str, limit: int = MAX_NAME) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if type(value) is str:
        text = value.strip()
    elif isinstance(value, (dict, list)):
        raise RowError(f"{name} must be text, not {type(value).__name__}")
    else:
        text = str(value).strip()
    if not text:
        return None
    if len(text) > limit:
        raise RowError(f"{name} is longer than {limit} characters")
    return text


def _required(fields: dict[str, Any], name: str, limit: int = MAX_ID) -> str:
    value = _text(fields, name, limit)
    if value is None:
        raise RowError(f"{name} is missing")
    return value


def normalise_email(raw: str) -> str:
    """Return the address with its domain lower-cased; RowError if it is not one."""
    email = raw.strip()
    if len(email) > 320 or email.count("@") != 1:
        raise RowError(f"email {raw!r} is not a valid address")
    local, domain = email.split("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise RowError(f"email {raw!r} is not a valid address") from None
    labels = ascii_domain.split(".")
    if (not local or len(local) > 64 or not _LOCAL.match(local) or len(labels) < 2
            or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit()):
        raise RowError(f"email {raw!r} is not a valid address")
    return f"{local}@{domain.lower()}"


def _email(fields: dict[str, Any], required: bool) -> str | None:
    raw = _text(fields, "email", 320)
    if raw is None:
        if required:
            raise RowError("email is missing")
        return None
    return normalise_email(raw)


def _instant(fields: dict[str, Any], name: str, defaults: Defaults) -> datetime | None:
    raw = _text(fields, name, 64)
    if raw is None:
        return None
    try:
        return parse_instant(raw, defaults.timezone)
    except ValueError as exc:
        raise RowError(f"{name}: {exc}") from None


def _timezone(fields: dict[str, Any]) -> str | None:
    tz = _text(fields, "timezone", 64)
    if tz is not None and not is_timezone(tz):
        raise RowError(f"timezone {tz!r} is not an IANA timezone such as Europe/Berlin")
    return tz


def _locale(fields: dict[str, Any]) -> str | None:
    raw = _text(fields, "locale", 35)
    if raw is None:
        return None
    match = _LOCALE.match(raw)
    if not match:
        raise RowError(f"locale {raw!r} is not a locale such as en or de-DE")
    lang, script, region = match.groups()
    parts = [lang.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


def _consent(fields: dict[str, Any]) -> bool | None:
    value = fields.get("marketing_consent")
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowError(f"marketing_consent {value!r} must be true or false")


def _json_value(fields: dict[str, Any], name: str) -> Any:
    value = fields.get(name)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RowError(f"{name} is not valid JSON") from None
    return value


_PLAIN_AMOUNT = re.compile(r"^\s*\d{1,12}(?:\.\d{1,2})?\s*$", re.ASCII)
_CENT = Decimal("0.01")


def _money(value: Any, name: str) -> Decimal:
    if type(value) is str and _PLAIN_AMOUNT.match(value):  # the common case, checked cheaply
        return Decimal(value).quantize(_CENT)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"{name} is missing")
    if isinstance(value, bool):
        raise RowError(f"{name} {value!r} is not a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise RowError(f"{name} {value!r} is not a number") from None
    if not amount.is_finite():
        raise RowError(f"{name} {value!r} is not a number")
    if amount < 0:
        raise RowError(f"{name} {value!r} is negative")
    if amount > MAX_TOTAL:
        raise RowError(f"{name} {value!r} is too large")
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def customer_row(fields: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    """Validate one customer record; unknown columns become attributes."""
    attributes: dict[str, Any] = {}
    given = _json_value(fields, "attributes")
    if given is not None:
        if not isinstance(given, dict):
            raise RowError("attributes must be a JSON object")
        attributes.update(given)
    for key, value in fields.items():
        if key in CUSTOMER_COLUMNS or value is None:
            continue
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        attributes[key] = value
    return {
        "external_id": _required(fields, "customer_id"),
        "email": _email(fields, required=False),  # needed to create a customer only (the loader)
        "first_name": _text(fields, "first_name"),
        "last_name": _text(fields, "last_name"),
        "timezone": _timezone(fields),
        "locale": _locale(fields),
        "created_at": _instant(fields, "created_at", defaults),
        "marketing_consent": _consent(fields),
        "attributes": attributes,
    }


# re.ASCII: \d is 0-9 only (Python's \d also takes ١٩٩٠ and １９９０, which int() reads but
# nothing else in the product does)
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$", re.ASCII)
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$", re.ASCII)
_YEAR_FIRST = re.compile(r"^(\d{4})[-./](\d{1,2})[-./](\d{1,2})(?:[T ].*)?$", re.ASCII)
_YEAR_LAST = re.compile(r"^(\d{1,2})([-./])(\d{1,2})\2(\d{4})$", re.ASCII)
#: The year a month-day (``MM-DD``) is checked in: a leap year, so that ``02-29`` is a date.
_LEAP_YEAR = 2000


def _real(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _date_hint(text: str) -> str:
    """What a date written otherwise probably means, as `` (did you mean 1990-12-05?)``:
    year first (``1990/12/5``), or day first with dots (``05.12.1990``, as in Germany), or with
    slashes or dashes when one of the numbers is above 12 (``25/12/1990``, ``12/25/1990``);
    two readings when both are possible (``05/12/1990``)."""
    found: list[str] = []
    if match := _YEAR_FIRST.match(text):
        found = [_real(int(match[1]), int(match[2]), int(match[3])) or ""]
    elif match := _YEAR_LAST.match(text):
        first, sep, second, year = int(match[1]), match[2], int(match[3]), int(match[4])
        if sep == "." or first > 12:
            found = [_real(year, second, first) or ""]
        elif second > 12:
            found = [_real(year, first, second) or ""]
        else:
            found = [_real(year, second, first) or "", _real(year, first, second) or ""]
    found = [f for f in dict.fromkeys(found) if f]
    return f" (did you mean {' or '.join(found)}?)" if found else ""


def date_value(value: Any) -> str | None:
    """``value`` as a date attribute is kept (``YYYY-MM-DD`` or ``MM-DD``, a real date,
    surrounding spaces dropped), or None if it is not one."""
    if type(value) is not str:
        return None
    text = value.strip()
    if match := _ISO_DATE.match(text):
        return text if _real(int(match[1]), int(match[2]), int(match[3])) else None
    if match := _MONTH_DAY.match(text):
        return text if _real(_LEAP_YEAR, int(match[1]), int(match[2])) else None
    return None


def check_dates(attributes: dict[str, Any], names: Collection[str]) -> list[RowError]:
    """Check the attributes ``names`` (those a flow's date trigger reads) of a row: a value
    that is not a date written ``YYYY-MM-DD`` or ``MM-DD`` is taken out of ``attributes`` (the
    rest of the row is kept); one error for each, naming the value and what it may mean."""
    problems: list[RowError] = []
    for name in sorted(names):
        if name not in attributes or attributes[name] is None:
            continue
        value = attributes[name]
        clean = date_value(value)
        if clean is not None:
            attributes[name] = clean
            continue
        del attributes[name]
        hint = _date_hint(value.strip()) if isinstance(value, str) else ""
        problems.append(RowError(
            f"{name} {value!r} is not a date written YYYY-MM-DD or MM-DD{hint}; it was left "
            "out and the rest of the row imported",
            kind=f"{name} is not a date written YYYY-MM-DD or MM-DD (left out)"))
    return problems


def _items(fields: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The order's lines; None when the row gives none (a blank cell or no column: what is
    known of the order stays)."""
    items = _json_value(fields, "items")
    if items is None:
        return None
    if not isinstance(items, list):
        raise RowError("items must be a JSON list of objects")
    clean: list[dict[str, Any]] = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise RowError(f"items[{index}] must be an object")
        entry = item  # freshly parsed: ours to normalise in place
        quantity = entry.get("quantity", 1)
        if type(quantity) is not int:
            if isinstance(quantity, bool) or not isinstance(quantity, str):
                raise RowError(f"items[{index}].quantity must be a whole number")
            try:
                quantity = int(quantity)
            except ValueError:
                raise RowError(f"items[{index}].quantity must be a whole number") from None
        if quantity < 0:
            raise RowError(f"items[{index}].quantity is negative")
        if quantity > MAX_QUANTITY:
            raise RowError(f"items[{index}].quantity is more than {MAX_QUANTITY:,}")
        entry["quantity"] = quantity
        price = entry.get("price")
        if price is not None:
            entry["price"] = str(_money(price, f"items[{index}].price"))
        for key in ("sku", "name", "category"):
            value = entry.get(key)
            if value is not None and type(value) is not str:
                entry[key] = str(value)
        for key in ("url", "image_url"):
            if key in entry:
                try:
                    link = check_url(entry[key])
                except BadUrl as exc:
                    raise RowError(f"items[{index}].{key} {exc}") from None
                if link is None:
                    del entry[key]
                else:
                    entry[key] = link
        clean.append(entry)
    return clean


def _discount_codes(fields: dict[str, Any]) -> list[str]:
    """``discount_codes``: a list (JSON, or the API's), or text with codes separated by commas
    or spaces (a CSV cell: ``BACK10-7KQ2-M9XD, WELCOME``); each code trimmed, in capitals."""
    raw = fields.get("discount_codes")
    if raw is None:
        return []
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            raw = _json_value(fields, "discount_codes")
        else:
            raw = [part for part in re.split(r"[\s,;]+", text) if part]
    if not isinstance(raw, list):
        raise RowError("discount_codes must be a list of codes")
    if len(raw) > MAX_CODES:
        raise RowError(f"discount_codes has {len(raw)} codes; at most {MAX_CODES}")
    codes: list[str] = []
    for index, code in enumerate(raw, start=1):
        if type(code) is not str or not _CODE.match(code.strip()) or len(code.strip()) > MAX_CODE:
            raise RowError(f"discount_codes[{index}] {code!r} is not a discount code (letters, "
                           f"digits, - and _, at most {MAX_CODE} characters)")
        if code.strip().upper() not in codes:
            codes.append(code.strip().upper())
    return codes


def order_row(fields: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    """Validate one order record."""
    ordered_at = _instant(fields, "ordered_at", defaults)
    if ordered_at is None:
        raise RowError("ordered_at is missing")
    status_raw = _text(fields, "status", 32)
    status: OrderStatus | None = None  # not given: the order's known status, else completed
    if status_raw is not None:
        found = _STATUS_ALIASES.get(status_raw.lower())
        if found is None:
            raise RowError(f"status {status_raw!r} must be one of "
                           f"{', '.join(s.value for s in OrderStatus)}")
        status = found
    currency = _text(fields, "currency", 8)  # not given: the known one, else the default
    if currency is not None and not _CURRENCY.match(currency):
        raise RowError(f"currency {currency!r} is not a three-letter ISO 4217 code")
    return {
        "external_id": _required(fields, "order_id"),
        "customer_external_id": _required(fields, "customer_id"),
        "ordered_at": ordered_at,
        "total": _money(fields.get("total"), "total"),
        "currency": currency.upper() if currency else None,
        "default_currency": defaults.currency.upper(),
        "status": status.value if status else None,
        "items": _items(fields),
        "email": _email(fields, required=False),
        "first_name": _text(fields, "first_name"),
        "last_name": _text(fields, "last_name"),
        "timezone": _timezone(fields),
        "discount_codes": _discount_codes(fields),
    }
