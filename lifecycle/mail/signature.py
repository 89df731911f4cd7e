"""The signature check of SendGrid's Signed Event Webhook.

SendGrid signs ``timestamp + body`` (the raw bytes as posted) with ECDSA P-256
and SHA-256, and sends the base64 DER signature and the timestamp in the
headers :data:`SIGNATURE_HEADER` and :data:`TIMESTAMP_HEADER`.  The check is
made over the bytes as received: JSON parsed and written again would not
match.  (sendgrid-python's ``EventWebhook.verify_signature`` takes the body as
text and encodes it again; this takes the bytes, so no decoding can alter
them.)  A post older than ``max_age`` seconds by its signed timestamp is
refused too, so a captured post cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class BadSignature(ValueError):
    """A webhook post that is not signed by the configured key (the text says why)."""


class WebhookVerifier:
    """Checks posts against the base64 public key that SendGrid shows for the webhook."""

    def __init__(self, public_key: str, max_age: float) -> None:
        try:
            key = load_der_public_key(base64.b64decode(public_key, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic-curve key")
        self.key = key
        #: Seconds; 0 accepts any age.
        self.max_age = max_age

    def check(self, body: bytes, signature: str | None, timestamp: str | None,
              now: datetime) -> None:
        """Return if ``body`` is signed with ``timestamp`` by our key and recent; else
        :class:`BadSignature`."""
        if not signature or not timestamp:
            raise BadSignature(f"the {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are "
                               "required")
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise BadSignature("the signature is not base64") from None
        try:
            self.key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise BadSignature("the signature does not match the body") from None
        if self.max_age:
            if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
                raise BadSignature("the timestamp is not a number of seconds")
            age = now.timestamp() - int(timestamp)
            if abs(age) > self.max_age:
                raise BadSignature(f"the post is {age:.0f} s old; at most {self.max_age:.0f} s "
                                   "are accepted (LIFECYCLE_WEBHOOK_MAX_AGE)")
