"""Transports: where a composed mail goes.  One interface, three implementations.

* ``file`` (the embedded default): each mail is an ``.eml`` file under
  ``LIFECYCLE_OUTBOX_DIR/<YYYY-MM-DD>/``, named by our message id, written
  atomically (temporary file, then rename).  Writing it again replaces it, so
  the transport is idempotent and a mail abandoned mid-send is simply sent
  again.
* ``smtp``: one kept-open SMTP connection per worker thread (e.g. Mailpit).
* ``sendgrid``: the v3 mail/send API.  The payload is the one the official
  library's mail helpers build (:func:`sendgrid_payload`); it is posted either
  over one keep-alive HTTPS connection per worker thread (``pooled``, the default: the library's own
  HTTP layer opens a new connection for every request) or by the library's
  client (``official``), both with a timeout (the library sets none).

A transport raises :class:`SendError` when it did not take the mail, saying
whether trying again can help, when, and whether the provider *might* have
taken it after all (``ambiguous``: the request went out but no answer came
back).  An ambiguous mail is never sent again blindly: see
:mod:`lifecycle.mail.outbox` for how it is settled.
"""

from __future__ import annotations

import json
import os
import smtplib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.error import URLError
from urllib.parse import urlsplit

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail.validators import ValidateApiKey

from lifecycle.config import Settings, sender_parts
from lifecycle.mail.compose import MIME_POLICY, Outgoing
from lifecycle.mail.keepalive import KeepAlive

#: SendGrid answers that no retry can fix: bad payload, bad key, forbidden, too large.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 413})
#: Wait after a 429 without (usable) rate-limit headers, in seconds.
DEFAULT_RATE_LIMIT_WAIT = 1.0
#: A kept-open connection idle longer than this is replaced before use, in seconds
#: (servers close idle connections; a request on a closed one would be ambiguous).
MAX_IDLE_SECONDS = 20.0


class SendError(Exception):
    """The transport did not (knowingly) take the mail.

    ``permanent``: trying again cannot help (the reason goes on the timeline).
    ``retry_after``: seconds the provider asked us to wait (429), or None.
    ``ambiguous``: the request was sent but no answer came; the provider may
    have accepted it.
    """

    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None,
                 ambiguous: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        self.status = status


class Transport(Protocol):
    #: True when sending the same message twice delivers it once.
    idempotent: bool
    #: True when the provider's events tell us later whether an ambiguous send arrived.
    settles_by_events: bool

    def send(self, mail: Outgoing) -> str:
        """Hand the mail over; return the provider's id for it.  Raise SendError on failure."""
        ...


@dataclass
class FileTransport:
    folder: Path
    idempotent: bool = True
    settles_by_events: bool = False

    def path_for(self, mail: Outgoing) -> Path:
        day = mail.headers.get("X-Lifecycle-Date") or "undated"
        template = mail.headers.get("X-Lifecycle-Template", "mail")
        return self.folder / day / f"{mail.message_id:08d}-{template}.eml"

    def send(self, mail: Outgoing) -> str:
        path = self.path_for(mail)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".sending-")
        except OSError as exc:
            raise SendError(f"cannot write to {path.parent}: {exc}") from exc
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(mail.mime().as_bytes())
            os.replace(temporary, path)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise SendError(f"cannot write {path}: {exc}") from exc
        return f"file:{path.relative_to(self.folder)}"


class SmtpTransport:
    """SMTP with one kept-open connection per thread; ``smtps://`` for TLS."""

    idempotent = False
    settles_by_events = False

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if self.tls else 25)
        self.user, self.password = parts.username, parts.password
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> smtplib.SMTP:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:  # the server may have hung up since the last mail
                if conn.noop()[0] == 250:
                    return conn  # type: ignore[no-any-return]
            except (smtplib.SMTPException, OSError):
                pass
        cls = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        try:
            conn = cls(self.host, self.port, timeout=self.timeout)
            if self.user:
                conn.login(self.user, self.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(f"cannot reach SMTP server {self.host}:{self.port}: {exc}") from exc
        self._local.conn = conn
        return conn

    def send(self, mail: Outgoing) -> str:
        try:  # nothing is sent yet: a mail that cannot be written as MIME fails for good
            # written out under the message's own policy (smtplib's send_message would use a
            # generator that turns a body line "From …" into ">From …"); a non-ASCII address
            # needs SMTPUTF8 and its headers in UTF-8, as send_message does
            sender = sender_parts(mail.sender)[1]
            international = not (sender + mail.to).isascii()
            message = mail.mime().as_bytes(policy=MIME_POLICY.clone(utf8=True)) \
                if international else mail.mime().as_bytes()
        except Exception as exc:  # noqa: BLE001 - the email package raises several kinds
            raise SendError(f"cannot build the MIME message: {type(exc).__name__}: {exc}",
                            permanent=True) from exc
        conn = self._connection()
        try:
            conn.sendmail(sender, [mail.to], message,
                          mail_options=["SMTPUTF8"] if international else ())
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise SendError(f"SMTP {code}: {text.decode(errors='replace')}",
                            permanent=code >= 500, status=code) from exc
        except smtplib.SMTPResponseException as exc:
            detail = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
                else str(exc.smtp_error)
            raise SendError(f"SMTP {exc.smtp_code}: {detail}", permanent=exc.smtp_code >= 500,
                            status=exc.smtp_code) from exc
        except (OSError, smtplib.SMTPException) as exc:  # the line went dead mid-message
            self._local.conn = None
            raise SendError(f"SMTP connection lost while sending: {exc}", ambiguous=True) from exc
        return f"smtp:{mail.headers['Message-ID'].strip('<>')}"


#: The official library's check that no body begins with an API key, which its helpers run.
_API_KEY_CHECK = ValidateApiKey()


def sendgrid_payload(mail: Outgoing) -> dict[str, Any]:
    """The v3 mail/send JSON of ``mail``: the dict the official library's helpers build (their
    order included, and their refusal of a body that begins like an API key), written out
    directly: building the helpers' objects cost a tenth of a worker's CPU per mail."""
    name, address = sender_parts(mail.sender)
    content = []
    for kind, value in (("text/plain", mail.text), ("text/html", mail.html)):
        if value is not None:
            _API_KEY_CHECK.validate_message_text(value)  # ApiKeyIncludedException, as theirs
            content.append({"type": kind, "value": value})
    payload = {
        "from": {"name": name, "email": address} if name else {"email": address},
        "subject": mail.subject,
        "personalizations": [{"to": [{"email": mail.to}]}],
        "content": content,
        # the helpers put each header, category and argument before the ones added earlier
        "headers": dict(reversed(mail.headers.items())),
        "categories": list(reversed(mail.categories)),
        "custom_args": dict(reversed(mail.custom_args.items())),
        "reply_to": {"email": mail.reply_to},
    }
    return {key: value for key, value in payload.items() if value != [] and value != {}}


def _error_text(status: int, body: bytes | str | None) -> str:
    raw = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    try:
        errors = json.loads(raw).get("errors") or []
        detail = "; ".join(
            f"{e.get('message', '')}" + (f" (field {e['field']})" if e.get("field") else "")
            for e in errors)
    except (ValueError, AttributeError):
        detail = raw[:300]
    return f"SendGrid {status}: {detail or 'no detail'}"


def _retry_after(headers: Any) -> float:
    """Seconds to wait after a 429, from X-RateLimit-Reset (unix seconds)."""
    try:
        reset = float(headers.get("X-RateLimit-Reset"))
    except (TypeError, ValueError):
        return DEFAULT_RATE_LIMIT_WAIT
    return max(0.0, min(reset - time.time(), 3600.0)) or DEFAULT_RATE_LIMIT_WAIT


def _classify(status: int, body: bytes | str | None, headers: Any) -> SendError:
    reason = _error_text(status, body)
    if status == 429:
        return SendError(reason, retry_after=_retry_after(headers), status=status)
    return SendError(reason, permanent=status in PERMANENT_STATUSES, status=status)


class SendGridTransport:
    """SendGrid v3 mail/send; ``client`` is ``pooled`` or ``official`` (see the module doc)."""

    idempotent = False
    settles_by_events = True
    PATH = "/v3/mail/send"

    def __init__(self, api_key: str, host: str, timeout: float, client: str = "pooled") -> None:
        self.api_key = api_key
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.client = client
        parts = urlsplit(self.host)
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._headers = {"Authorization": f"Bearer {api_key}",
                         "Content-Type": "application/json", "User-Agent": "lifecycle"}

    def send(self, mail: Outgoing) -> str:
        try:  # nothing is posted yet: a mail the library's helpers refuse fails for good
            payload = sendgrid_payload(mail)
            body = json.dumps(payload).encode() if self.client != "official" else b""
        except Exception as exc:  # noqa: BLE001 - the helpers raise their own kinds
            raise SendError(f"cannot build the SendGrid request: {type(exc).__name__}: {exc}",
                            permanent=True) from exc
        if self.client == "official":
            return self._send_official(payload)
        return self._send_pooled(body)

    # -- the library's own client: a new connection per request
    def _send_official(self, payload: dict[str, Any]) -> str:
        api = getattr(self._local, "api", None)
        if api is None:
            api = SendGridAPIClient(self.api_key, host=self.host)
            api.client.timeout = self.timeout  # the library's default is to wait for ever
            self._local.api = api
        try:
            response = api.client.mail.send.post(request_body=payload)
        except HTTPError as exc:
            raise _classify(exc.status_code, exc.body, exc.headers) from exc
        except URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise SendError(f"SendGrid gave no answer in {self.timeout} s",
                                ambiguous=True) from exc
            raise SendError(f"cannot reach SendGrid: {exc.reason}") from exc
        except TimeoutError as exc:
            raise SendError(f"SendGrid gave no answer in {self.timeout} s", ambiguous=True) \
                from exc
        except OSError as exc:
            raise SendError(f"connection to SendGrid lost: {exc}", ambiguous=True) from exc
        return str(response.headers.get("X-Message-Id") or "")

    # -- one keep-alive connection per thread
    def _connection(self) -> KeepAlive:
        conn: KeepAlive | None = getattr(self._local, "conn", None)
        idle_since = getattr(self._local, "idle_since", 0.0)
        if conn is not None and conn.connected and time.monotonic() - idle_since > \
                MAX_IDLE_SECONDS:
            conn.close()  # the server may be about to drop it: start afresh
        if conn is None:
            conn = self._local.conn = KeepAlive(self.host, timeout=self.timeout)
        if not conn.connected:
            try:
                conn.connect()
            except OSError as exc:  # nothing was sent: safe to try again
                raise SendError(f"cannot reach SendGrid at {self.host}: {exc}") from exc
        return conn

    def _send_pooled(self, body: bytes) -> str:
        conn = self._connection()
        try:
            conn.send(self._prefix + self.PATH, self._headers, body)
        except OSError as exc:  # the request did not get out whole: not accepted
            raise SendError(f"connection to SendGrid failed while sending: {exc}") from exc
        try:
            answer = conn.answer()
        except TimeoutError as exc:
            raise SendError(f"SendGrid gave no answer in {self.timeout} s", ambiguous=True) \
                from exc
        except OSError as exc:
            raise SendError(f"no whole answer from SendGrid: {exc}", ambiguous=True) from exc
        self._local.idle_since = time.monotonic()
        if 200 <= answer.status < 300:
            return answer.get("X-Message-Id") or ""
        raise _classify(answer.status, answer.body, answer)

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def transport_for(settings: Settings) -> Transport:
    if settings.mail_transport == "sendgrid":
        return SendGridTransport(settings.sendgrid_api_key or "", settings.sendgrid_api_host,
                                 settings.send_timeout, settings.sendgrid_client)
    if settings.mail_transport == "smtp":
        return SmtpTransport(settings.smtp_url, settings.send_timeout)
    return FileTransport(settings.outbox_dir)
