"""The web app's public doors, as SendGrid and the customers walk through them.

:class:`HttpDoors` sends the demo audience's actions to the running web app
over HTTP: signed Event Webhook posts (ECDSA P-256 over timestamp and body,
with the demo's own key pair: :func:`webhook_key`), Inbound Parse posts as
``multipart/form-data`` with the URL key, a GET of a link from a mail, an NPS
answer as a browser gives it (the score link's page, then the post its script
makes), a one-click unsubscribe POST (RFC 8058), and reviews and referrals posted to the
ingest API with the demo's own API key, as the shop's site would.  Links from mails are followed on the
local server whatever their host (``LIFECYCLE_BASE_URL`` may name a public
one): only their path and query are used.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lifecycle.links import inbound_key
from lifecycle.mail.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER

#: Seconds a visit may take before it counts as failed.
TIMEOUT = 30.0
#: The browser the demo's customers answer NPS links with (a library's own would be taken for
#: a link scanner: :mod:`lifecycle.scanners`).
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36")
_SEND_FORM = re.compile(r'<form id="nps-send" method="post" action="(?P<action>[^"]+)">'
                        r'(?P<body>.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def webhook_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A new P-256 key pair: the private key, and the base64 public key as SendGrid shows it
    (the value of ``SENDGRID_WEBHOOK_PUBLIC_KEY``)."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """``fields`` as a ``multipart/form-data`` body, and its content type."""
    boundary = "demo" + secrets.token_hex(12)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
             f"Content-Type: text/plain; charset=utf-8\r\n\r\n{value}\r\n"
             for name, value in fields.items()]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8")
    return body, f"multipart/form-data; boundary={boundary}"


class HttpDoors:
    """The audience's way in: the web app at ``server`` (``http://host:port``)."""

    def __init__(self, server: str, secret_key: str, signing_key: ec.EllipticCurvePrivateKey,
                 api_key: str = "") -> None:
        self.server = server.rstrip("/")
        self.secret_key = secret_key
        self.signing_key = signing_key
        self.api_key = api_key

    def _send(self, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(self.server + path, data=body, headers=headers or {},
                                         method="POST" if body is not None else "GET")
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - our server
            return answer.read()

    def ready(self) -> bool:
        """Whether the web app answers (``/healthz``, whatever it says of the processes)."""
        try:
            self._send("/healthz")
        except urllib.error.HTTPError:
            return True  # it answered: unhealthy processes are news, not a closed door
        except OSError:
            return False
        return True

    @staticmethod
    def _local(url: str) -> str:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def events(self, events: list[dict[str, Any]], at: datetime) -> None:
        body = json.dumps(events).encode("utf-8")
        stamp = str(int(at.timestamp()))
        signature = self.signing_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        self._send("/webhooks/sendgrid/events", body, {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json"})

    def inbound(self, form: dict[str, str]) -> None:
        body, content_type = multipart(form)
        self._send(f"/webhooks/sendgrid/inbound?key={inbound_key(self.secret_key)}", body,
                   {"Content-Type": content_type})

    def follow(self, url: str) -> None:
        self._send(self._local(url))

    def answer(self, url: str, comment: str | None = None) -> None:
        """A person's click on an NPS score link: the link's page (a GET records nothing), then
        the post its script makes at once, from a browser (:mod:`lifecycle.web.feedback`);
        with ``comment``, then the thank-you page's comment form."""
        page = self._send(self._local(url), headers={"User-Agent": BROWSER}).decode("utf-8")
        form = _SEND_FORM.search(page)
        if form is None:
            raise ValueError(f"the page of {self._local(url)} has no form that sends the score")
        fields = dict(_HIDDEN.findall(form.group("body")))
        self._send(html.unescape(form.group("action")), urlencode(fields).encode("ascii"),
                   {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER})
        if comment:
            self._send(html.unescape(form.group("action")),
                       urlencode({"comment": comment}).encode("utf-8"),
                       {"Content-Type": "application/x-www-form-urlencoded",
                        "User-Agent": BROWSER})

    def one_click(self, url: str) -> None:
        self._send(self._local(url), b"List-Unsubscribe=One-Click",
                   {"Content-Type": "application/x-www-form-urlencoded"})

    def reviews(self, items: list[dict[str, Any]]) -> None:
        self._api("/api/v1/reviews", items)

    def referrals(self, items: list[dict[str, Any]]) -> None:
        self._api("/api/v1/referrals", items)

    def _api(self, path: str, items: list[dict[str, Any]]) -> None:
        self._send(path, json.dumps(items).encode("utf-8"), {
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
