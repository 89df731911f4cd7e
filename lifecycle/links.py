"""Signed links: unsubscribe, preferences, feedback — short, tamper-proof tokens.

A token is ``<payload>.<signature>``: the payload is compact JSON in base64url,
the signature the first 16 bytes of HMAC-SHA256 over the purpose and the
payload with the secret key.  A token made for one purpose is not
valid for another, and any change to it is refused.  Tokens stay short so
that a ``List-Unsubscribe`` header is not folded by relays.

The secret is a plain key or a :class:`KeyRing` (what a running process
uses, from :attr:`lifecycle.app.App.keys`): a ring signs with its current key
and accepts what any of its keys signed, so links and sessions made before a
key rotation keep working while ``LIFECYCLE_SECRET_KEY_PREVIOUS`` names the
old key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

SIGNATURE_BYTES = 16


class BadToken(ValueError):
    """A token that was altered, forged, or made for another purpose."""


@dataclass(frozen=True)
class KeyRing:
    """The secret key that signs, and the earlier keys that are still accepted."""

    current: str
    previous: tuple[str, ...] = ()
    #: Where :attr:`current` came from: ``environment`` or ``database``.
    source: str = "environment"

    def __repr__(self) -> str:  # never the keys themselves
        return f"KeyRing(source={self.source!r}, previous={len(self.previous)})"

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every key whose signatures verify, the current one first."""
        return (self.current, *self.previous)


#: What signs and verifies: one key, or a ring of them.
Secret = str | KeyRing


def _signing_key(secret: Secret) -> str:
    key = secret.current if isinstance(secret, KeyRing) else secret
    if not isinstance(key, str):  # settings.secret_key before App.keys filled it in
        raise TypeError("no secret key to sign with: read App.keys first "
                        "(it takes LIFECYCLE_SECRET_KEY or the key kept in the database)")
    return key


def _accepted_keys(secret: Secret) -> tuple[str, ...]:
    return secret.accepted if isinstance(secret, KeyRing) else (_signing_key(secret),)


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


def sign(secret: Secret, purpose: str, data: dict[str, Any]) -> str:
    """A token for ``purpose`` carrying ``data``, signed with the current key."""
    return sign_each(secret, (purpose,), data)[0]


def sign_each(secret: Secret, purposes: tuple[str, ...], data: dict[str, Any]) -> list[str]:
    """:func:`sign` of the same ``data`` for each of ``purposes`` (a mail's links name the
    same customer and mail: the payload is written once)."""
    payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    key = _signing_key(secret)
    return [f"{payload}.{_signature(key, purpose, payload)}" for purpose in purposes]


def verify(secret: Secret, purpose: str, token: str) -> dict[str, Any]:
    """The data of a token made by :func:`sign` for ``purpose`` with any accepted key of
    ``secret``; BadToken otherwise."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise BadToken("malformed token")
    given = signature.encode("utf-8", "surrogatepass")  # bytes: any text compares, no TypeError
    if not any(hmac.compare_digest(given, _signature(key, purpose, payload).encode("ascii"))
               for key in _accepted_keys(secret)):
        raise BadToken("bad signature")
    try:
        data = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise BadToken("malformed token") from None
    if not isinstance(data, dict):
        raise BadToken("malformed token")
    return data


def offer_code(secret: Secret, prefix: str, *parts: object) -> str:
    """A stable, unguessable discount code for one customer and one mail, e.g. ``BACK10-7KQ2MX``
    (from the current key: a rotated key makes new codes for mails made after it)."""
    mac = hmac.new(_signing_key(secret).encode("utf-8"), ":".join(map(str, parts)).encode("utf-8"),
                   hashlib.sha256).digest()
    code = base64.b32encode(mac[:5]).decode("ascii").rstrip("=")
    return f"{prefix}-{code}"


def inbound_key(secret: Secret) -> str:
    """The ``key`` of the Inbound Parse URL (SendGrid does not sign those posts: the URL it is
    given carries this, and a post without it is refused), from the current key."""
    return _signature(_signing_key(secret), "inbound-parse", "v1")


def inbound_key_ok(secret: Secret, given: str) -> bool:
    """Whether ``given`` is the Inbound Parse key of any accepted key of ``secret`` (SendGrid
    keeps posting to the old URL until it is changed there)."""
    typed = given.encode("utf-8", "surrogatepass")
    return any(hmac.compare_digest(typed, _signature(key, "inbound-parse", "v1").encode("ascii"))
               for key in _accepted_keys(secret))
