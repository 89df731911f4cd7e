"""Reply-To and ``mailto:`` unsubscribe addresses: short signed local parts on the reply domain.

Every mail's ``Reply-To`` is ``r-<id>-<mac>@<reply domain>`` and the ``mailto:`` of its
``List-Unsubscribe`` is ``u-<id>-<mac>@<reply domain>`` (``rt-`` / ``ut-`` for a manager's
test send), where

* ``<id>`` is the mail's id (``messages.id``, a database bigint: below 2^63) in lower-case
  base32 (RFC 4648 alphabet ``a``–``z``, ``2``–``7``), at most 13 characters, no leading
  ``a`` (zero) so each id has one spelling;
* ``<mac>`` is the first :data:`MAC_BITS` (80) bits of HMAC-SHA256, keyed with the secret key,
  over ``address.<kind>.<id>`` (``kind`` is ``r``, ``rt``, ``u`` or ``ut``: a reply address is
  no unsubscribe address, a test address no real one), in the same base32: 16 characters.

The longest local part is ``ut-`` + 13 + ``-`` + 16 = 33 octets, within RFC 5321's 64 at any
id.  Base32 has one case, so an address lower- or upper-cased on the way back (some servers
do) still verifies.  80 bits: a forger who could try a billion addresses a second against the
Inbound Parse webhook would need about 19 million years on average to hit one that verifies,
and a hit names one mail (one reply, or one unsubscribe).  The ring's previous keys
(``LIFECYCLE_SECRET_KEY_PREVIOUS``) verify too, as for every signed link.

The reply domain is ``LIFECYCLE_REPLY_DOMAIN`` (default: the domain of ``LIFECYCLE_MAIL_FROM``):
its MX points at SendGrid's Inbound Parse, so the shop's own mailbox can stay on the From
domain.

Mails sent before these addresses carried ``reply+<token>@`` / ``unsubscribe+<token>@``
(a token of :func:`lifecycle.links.sign`, up to about 90 octets at large ids); those are still
accepted for :data:`LEGACY_GRACE` after their mail was sent (:mod:`lifecycle.mail.inbound`).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import timedelta

from lifecycle.links import BadToken, Secret, _accepted_keys, _keyed, _signing_key

#: Bits of the MAC kept in a local part (16 base32 characters).
MAC_BITS = 80
#: Octets a local part may have (RFC 5321, 4.5.3.1.1).
MAX_LOCAL_PART = 64
#: How long a mail's old ``reply+TOKEN`` / ``unsubscribe+TOKEN`` addresses stay accepted after
#: it was sent (replies come weeks later; a year covers nearly all of them).
LEGACY_GRACE = timedelta(days=365)

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_MAC_CHARS = MAC_BITS // 5
_LOCAL = re.compile(rf"^(r|u)(t?)-([a-z2-7]{{1,13}})-([a-z2-7]{{{_MAC_CHARS}}})$")
#: Purposes by the first letter of a local part.
PURPOSES = {"r": "reply", "u": "unsubscribe"}


@dataclass(frozen=True)
class Address:
    """What a verified local part names."""

    purpose: str  # reply or unsubscribe
    message_id: int
    test: bool


def _b32(number: int) -> str:
    if number < 0:
        raise ValueError("an id is not negative")
    digits = []
    while True:
        number, digit = divmod(number, 32)
        digits.append(_ALPHABET[digit])
        if not number:
            return "".join(reversed(digits))


def _unb32(text: str) -> int:
    number = 0
    for char in text:
        number = number * 32 + _VALUE[char]
    return number


def _mac(key: str, kind: str, message_id: int) -> str:
    mac = _keyed(key).copy()
    mac.update(f"address.{kind}.{message_id}".encode("ascii"))
    bits = int.from_bytes(mac.digest()[:10], "big")  # 80 bits
    return _b32(bits).rjust(_MAC_CHARS, "a")


def local_part(secret: Secret, purpose: str, message_id: int, test: bool = False) -> str:
    """The signed local part naming mail ``message_id`` for ``purpose`` (reply, unsubscribe)."""
    if purpose not in ("reply", "unsubscribe"):
        raise ValueError(f"no address for {purpose!r}")
    kind = purpose[0] + ("t" if test else "")
    if not 0 <= message_id < 2 ** 63:
        raise ValueError(f"mail id {message_id} is out of range")
    return f"{kind}-{_b32(message_id)}-{_mac(_signing_key(secret), kind, message_id)}"


def address(secret: Secret, purpose: str, message_id: int, domain: str,
            test: bool = False) -> str:
    return f"{local_part(secret, purpose, message_id, test)}@{domain}"


def read_local_part(secret: Secret, local: str) -> Address:
    """What ``local`` (made by :func:`local_part`, in any case) names; BadToken if it is not one
    of ours or its MAC does not verify with any accepted key."""
    found = _LOCAL.match(local.lower()) if len(local) <= MAX_LOCAL_PART else None
    if found is None:
        raise BadToken("not one of our addresses")
    letter, test, encoded, given = found.groups()
    if len(encoded) > 1 and encoded[0] == "a":
        raise BadToken("not one of our addresses")
    message_id = _unb32(encoded)
    if message_id >= 2 ** 63:
        raise BadToken("not one of our addresses")
    kind = letter + test
    typed = given.encode("ascii")
    if not any(hmac.compare_digest(typed, _mac(key, kind, message_id).encode("ascii"))
               for key in _accepted_keys(secret)):
        raise BadToken("bad signature")
    return Address(PURPOSES[letter], message_id, bool(test))
