"""UTM parameters on the shop's links in mail, so the shop's analytics credit the flow.

Every link to the shop in a mail (``links.shop``, ``shop.url``, the review and referral pages,
product and offer URLs) gets ``utm_source=lifecycle``, ``utm_medium=email``,
``utm_campaign=<flow>`` and ``utm_content=<step>``; our own links (``/u``, ``/p``, ``/f`` on
``LIFECYCLE_BASE_URL``) get none: they are never passed here.  A flow file may change them::

    utm: false                      # no UTM parameters on this flow's mail
    utm: {campaign: spring-sale}    # one or more of source, medium, campaign, content
    utm: {content: false}           # leave one parameter out

:func:`tag` keeps the URL's own query parameters (as written) and fragment, adds only the
parameters the URL does not already carry (so a link a template author tagged by hand keeps
its values, and tagging twice changes nothing), and leaves anything but an absolute http(s)
URL alone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

#: The parameters, in the order they are added (``utm_<field>``).
FIELDS = ("source", "medium", "campaign", "content")
DEFAULT_SOURCE = "lifecycle"
DEFAULT_MEDIUM = "email"
#: Longest value a flow file may give a parameter.
MAX_VALUE = 100

#: What a flow says about UTM: None (the defaults), False (none), or per-field values
#: (a string, or False to leave that field out).
Override = bool | Mapping[str, Any] | None


def utm_for(flow: str | None, step: str | None, override: Override = None) -> dict[str, str]:
    """The parameters of a mail of ``flow``'s ``step`` (empty: none), with the flow file's
    ``override`` (:data:`Override`) applied."""
    if override is False:
        return {}
    values: dict[str, Any] = {"source": DEFAULT_SOURCE, "medium": DEFAULT_MEDIUM,
                              "campaign": flow, "content": step}
    if isinstance(override, Mapping):
        values.update({k: v for k, v in override.items() if k in FIELDS})
    return {field: str(values[field]) for field in FIELDS
            if values.get(field) not in (None, False, "")}


def tag(url: str | None, utm: Mapping[str, str] | None) -> str | None:
    """``url`` with the ``utm`` parameters it lacks (module doc); None stays None."""
    if not url or not utm:
        return url
    return _tagged(url, tuple(utm.items()))


#: What a per-customer value of :func:`tag_value` may be made of: characters a URL carries as
#: they are (a signed token's base64url and ``.``), so the value cannot change how it parses.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9._~-]+")
#: Stands for the value in the remembered tagged URL (of the same characters).
_MARK = "LIFECYCLEVALUEMARK"


def tag_value(url: str, value: str, utm: Mapping[str, str] | None) -> str | None:
    """:func:`tag` of ``url + value``, where ``url`` ends with ``=`` and ``value`` differs from
    mail to mail (``/?ref=<the customer's token>``): ``url`` is tagged once and remembered, and
    ``value`` put in its place, instead of each customer's URL being parsed afresh.  A value
    of :data:`_PLAIN_VALUE` characters after an ``=`` is part of a parameter's value (or of the
    fragment or path), never a name, so the result is the same."""
    if not url.endswith("=") or not _PLAIN_VALUE.fullmatch(value) or _MARK in url:
        return tag(url + value, utm)
    marked = tag(url + _MARK, utm)
    assert marked is not None
    return marked.replace(_MARK, value)


@functools.lru_cache(maxsize=4096)
def _tagged(url: str, utm: tuple[tuple[str, str], ...]) -> str:
    """:func:`tag`, remembered: most mails of a step link the same shop pages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    present = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)} \
        if "utm_" in parts.query.lower() else set()
    added = "&".join(pair for name, pair in _encoded(utm) if name not in present)
    if not added:
        return url
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query, path=parts.path or "/"))


@functools.lru_cache(maxsize=256)
def _encoded(utm: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """(parameter name, ``name=value`` percent-encoded) of each non-empty field."""
    return tuple((f"utm_{field}", urlencode({f"utm_{field}": value}, quote_via=quote))
                 for field, value in utm if value)
