"""Signed links: unsubscribe, preferences, feedback — short, tamper-proof tokens.

A token is ``<payload>.<signature>``: the payload is compact JSON in base64url,
the signature the first 16 bytes of HMAC-SHA256 over the purpose and the
payload with ``LIFECYCLE_SECRET_KEY``.  A token made for one purpose is not
valid for another, and any change to it is refused.  Tokens stay short so
that a ``List-Unsubscribe`` header is not folded by relays.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from typing import Any

SIGNATURE_BYTES = 16


class BadToken(ValueError):
    """A token that was altered, forged, or made for another purpose."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    """HMAC-SHA256 keyed with ``secret`` and fed nothing yet, to be copied (a mail signs
    about five tokens: the key schedule is done once, not five times per mail)."""
    return hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)


def _signature(secret: str, purpose: str, payload: str) -> str:
    mac = _keyed(secret).copy()
    mac.update(f"{purpose}.{payload}".encode("ascii"))
    return _b64(mac.digest()[:SIGNATURE_BYTES])


def sign(secret: str, purpose: str, data: dict[str, Any]) -> str:
    payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{payload}.{_signature(secret, purpose, payload)}"


def verify(secret: str, purpose: str, token: str) -> dict[str, Any]:
    """The data of a token made by :func:`sign` for ``purpose``; BadToken otherwise."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise BadToken("malformed token")
    if not hmac.compare_digest(signature, _signature(secret, purpose, payload)):
        raise BadToken("bad signature")
    try:
        data = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise BadToken("malformed token") from None
    if not isinstance(data, dict):
        raise BadToken("malformed token")
    return data


def offer_code(secret: str, prefix: str, *parts: object) -> str:
    """A stable, unguessable discount code for one customer and one mail, e.g. ``BACK10-7KQ2MX``."""
    mac = hmac.new(secret.encode("utf-8"), ":".join(map(str, parts)).encode("utf-8"),
                   hashlib.sha256).digest()
    code = base64.b32encode(mac[:5]).decode("ascii").rstrip("=")
    return f"{prefix}-{code}"


def inbound_key(secret: str) -> str:
    """The ``key`` of the Inbound Parse URL (SendGrid does not sign those posts: the URL it is
    given carries this, and a post without it is refused)."""
    return _signature(secret, "inbound-parse", "v1")
