"""Replies in: SendGrid Inbound Parse posts, matched to our mail and put on the timeline.

Every mail goes out with ``Reply-To: r-<id>-<mac>@<reply domain>`` (a signed
local part naming the mail, see :mod:`lifecycle.mail.addresses`).  A reply is
matched by that address in its recipients; failing that, by our Message-ID in
its ``In-Reply-To`` / ``References`` headers (some clients reply to From).
A mail to ``u-<id>-<mac>@<reply domain>`` — the ``mailto:`` of
``List-Unsubscribe`` — unsubscribes the customer from marketing mail.  The
long addresses of mails sent before those (``reply+<token>@``,
``unsubscribe+<token>@``) are still matched for
:data:`~lifecycle.mail.addresses.LEGACY_GRACE` after their mail was sent.

Matching by Message-ID is only as good as what a sender cannot make up, and
anyone can write any ``In-Reply-To``: so it needs the id to be ours (our
domain, the domain of ``LIFECYCLE_MAIL_FROM``; the whole Message-ID the mail
went out with, random part included: a mail without its kept copy — settled
from SendGrid's events after a crash — matches nothing this way), the mail it
names to have been sent (status ``sent``: the provider accepted it), and the
sender — the
one address of the ``From`` header and, when SendGrid's ``envelope`` names
one, the envelope sender too — to be the address that mail went to (compared
on the address alone, case-insensitively; display names are ignored).
Anything else matches nothing and is dropped like any unmatched mail.  A
reply token is signed and reaches only whoever got the mail, so it needs none
of that.

A matched reply becomes a ``replied`` touchpoint with the sender, the subject
and the text with the quoted history cut off (HTML-only mail is reduced to
text: no markup is kept).  Automatic answers — ``Auto-Submitted``,
``X-Autoreply``, ``Precedence: auto_reply``, out-of-office subjects — are
kept as ``auto_reply`` and do not count as replies.  SendGrid retries a post
that failed, so each reply is kept once (by its own Message-ID).

A reply to a manager's test mail, or a mail to its unsubscribe address,
is matched (``Matched.test``: its signed token says so, or the mail it names is
a test send) and then dropped: it reaches no timeline and suppresses nobody.
A reply to a mail of an erased customer (:mod:`lifecycle.privacy`) is dropped
as well (``Matched.erased``): nothing of it — address, subject, text — is kept.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any

from sqlalchemy import Connection, select

from lifecycle.links import BadToken, Secret, verify
from lifecycle.mail.addresses import LEGACY_GRACE, read_local_part
from lifecycle.mail.events import ERASED_ADDRESS
from lifecycle.mail.outbox import is_test
from lifecycle.models import Message, MessageContent, MessageStatus, Touchpoint

MAX_TEXT = 20_000
#: The long addresses of mails sent before the short ones (accepted for LEGACY_GRACE).
_TOKEN = re.compile(r"^(reply|unsubscribe)\+([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)@", re.I)
#: Our Message-ID (``<…lifecycle.ID@domain>``, see :mod:`lifecycle.mail.compose`): the mail's id
#: (at most 18 digits: a database bigint) and the domain.
_OUR_ID = re.compile(r"(<(?:[^<>@\s]*\.)?lifecycle\.(\d{1,18})@([^<>@\s]+)>)", re.I)
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|"
    r"abwesenheitsnotiz|autosvar|r[ée]ponse automatique|absence|vacation)", re.I)
_QUOTE_START = re.compile(
    r"^(On .{3,200}(wrote|schrieb|a écrit|escribió)\s*:\s*$|-{2,} ?Original Message ?-{2,}|"
    r"_{10,}|From: .+|Am .{3,200} schrieb .*:$|Le .{3,200} a écrit ?:$)", re.I)


@dataclass
class Inbound:
    """One posted mail, as Inbound Parse gives it."""

    sender: str
    recipients: list[str]
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    #: The one address of the From header (None if it has none, or several), and the
    #: envelope sender SendGrid reports ("" if none): what a Message-ID match must agree with.
    from_address: str | None = None
    envelope_from: str = ""

    @classmethod
    def from_form(cls, form: dict[str, str]) -> Inbound:
        raw_headers = email.message_from_string(form.get("headers", "") + "\n\n",
                                                policy=email.policy.compat32)
        headers = {k.lower(): str(v) for k, v in raw_headers.items()}
        to = [form.get("to", ""), form.get("cc", "")]
        envelope_from = ""
        try:
            envelope = json.loads(form.get("envelope") or "{}")
        except ValueError:
            envelope = None
        if isinstance(envelope, dict):
            given_to = envelope.get("to") or []
            to += [str(a) for a in (given_to if isinstance(given_to, list) else [given_to])]
            envelope_from = _one_address(envelope.get("from")) or ""
        recipients = [addr for _name, addr in getaddresses(to) if addr]
        return cls(sender=parseaddr(form.get("from", ""))[1] or form.get("from", ""),
                   recipients=recipients, subject=form.get("subject", ""),
                   text=form.get("text", ""), html=form.get("html", ""), headers=headers,
                   from_address=_one_address(form.get("from")), envelope_from=envelope_from)

    def is_automatic(self) -> bool:
        auto = self.headers.get("auto-submitted", "no").strip().lower()
        precedence = self.headers.get("precedence", "").strip().lower()
        return (auto not in ("", "no") or "x-autoreply" in self.headers
                or "x-autorespond" in self.headers
                or precedence in ("auto_reply", "bulk", "junk")
                or bool(_AUTO_SUBJECT.match(self.subject)))


def _one_address(value: Any) -> str | None:
    """The address part of ``value`` (``Name <a@b>`` or ``a@b``), or None when it is not a
    string holding exactly one address."""
    if not isinstance(value, str) or not value.strip():
        return None
    found = [addr for _name, addr in getaddresses([value]) if addr]
    return found[0].strip() if len(found) == 1 and "@" in found[0] else None


class _Text(HTMLParser):
    """Text of an HTML mail: tags, scripts and styles dropped, block ends as line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "blockquote"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip()


def new_text(text: str) -> str:
    """``text`` without the quoted history: up to the first ``>`` block or "On … wrote:"."""
    kept: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith(">") or _QUOTE_START.match(line.strip()):
            break
        kept.append(line)
    return "\n".join(kept).strip()[:MAX_TEXT]


@dataclass
class Matched:
    purpose: str  # reply or unsubscribe
    message: Any  # messages row
    how: str  # reply-to token, or in-reply-to
    #: An answer to a manager's test mail: nothing is recorded for the customer.
    test: bool = False

    @property
    def erased(self) -> bool:
        """The mail's customer was erased: nothing of this answer may be kept."""
        return self.message.to_email == ERASED_ADDRESS


def _answers(message: Any, inbound: Inbound) -> bool:
    """Whether ``inbound`` may answer ``message`` by Message-ID: the mail was sent, and the sender
    (From, and the envelope's when given) is the address it went to."""
    if message.status != MessageStatus.SENT.value:
        return False
    if message.to_email == ERASED_ADDRESS:
        return True  # matched only to be dropped (Matched.erased): the address is gone
    recipient = (message.to_email or "").strip().casefold()
    return (inbound.from_address is not None and inbound.from_address.casefold() == recipient
            and (not inbound.envelope_from or inbound.envelope_from.casefold() == recipient))


def _by_address(secret: Secret, address: str) -> tuple[str, int, bool, bool] | None:
    """(purpose, mail id, test, legacy) named by a recipient ``address``, if it is one of ours
    and verifies."""
    local = address.rpartition("@")[0]
    try:
        found = read_local_part(secret, local)
        return found.purpose, found.message_id, found.test, False
    except BadToken:
        pass
    legacy = _TOKEN.match(address)
    if not legacy:
        return None
    purpose, token = legacy.group(1).lower(), legacy.group(2)
    try:
        data = verify(secret, purpose, token)
        return purpose, int(data.get("m") or 0), bool(data.get("t")), True
    except (BadToken, TypeError, ValueError):
        return None


def _within_grace(message: Any, now: datetime | None) -> bool:
    """Whether a long (legacy) address of ``message`` is still accepted at ``now``."""
    if now is None:
        return True
    since = message.sent_at or message.created_at
    return since is None or now - _aware(since) <= LEGACY_GRACE


def _aware(instant: datetime) -> datetime:
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def match(conn: Connection, secret: Secret, inbound: Inbound, domain: str,
          now: datetime | None = None) -> Matched | None:
    """Our mail that ``inbound`` answers, by its address first, then by Message-ID
    (``domain``: the domain of our Message-IDs, :func:`lifecycle.mail.compose.domain_of`).
    ``now``: an old long address counts only within LEGACY_GRACE of its mail's sending
    (None: always)."""
    for address in inbound.recipients:
        named = _by_address(secret, address)
        if named is None:
            continue
        purpose, message_id, test, legacy = named
        row = conn.execute(select(Message.__table__).where(Message.id == message_id)).first()
        if row is not None and (not legacy or _within_grace(row, now)):
            return Matched(purpose, row, "reply-to token", test or is_test(row))
    for header in ("in-reply-to", "references"):
        for whole, our, its_domain in _OUR_ID.findall(inbound.headers.get(header, ""))[:20]:
            if its_domain.casefold() != domain.casefold():
                continue
            row = conn.execute(select(Message.__table__).where(Message.id == int(our))).first()
            if row is None or not _answers(row, inbound):
                continue
            kept = conn.execute(select(MessageContent.headers).where(
                MessageContent.message_id == row.id)).scalar_one_or_none()
            sent_as = (kept or {}).get("Message-ID")
            if not sent_as or sent_as.strip().casefold() != whole.casefold():
                # our id, but not the one that went out (its random part is not known); or a
                # mail settled from SendGrid's events, whose Message-ID was never kept: what
                # could be checked is guessable (ids run in order), so it matches nothing
                continue
            return Matched("reply", row, header, is_test(row))
    return None


def record_reply(conn: Connection, matched: Matched, inbound: Inbound, now: datetime) -> bool:
    """A ``replied`` (or ``auto_reply``) touchpoint for ``matched``; False if kept before, or
    if ``matched`` is a mail of an erased customer (nothing is kept)."""
    if matched.erased:
        return False
    own_id = inbound.headers.get("message-id", "").strip()
    key = "inbound:" + (own_id or hashlib.sha256(
        f"{inbound.sender}|{inbound.subject}|{inbound.text}".encode()).hexdigest())
    if conn.execute(select(Touchpoint.id).where(Touchpoint.source_key == key[:255])).first():
        return False
    body = inbound.text or html_to_text(inbound.html)
    automatic = inbound.is_automatic()
    conn.execute(Touchpoint.__table__.insert().values(
        customer_id=matched.message.customer_id, kind="auto_reply" if automatic else "replied",
        channel="email", occurred_at=now, recorded_at=now, message_id=matched.message.id,
        source_key=key[:255],
        data={"from": inbound.sender[:320], "subject": inbound.subject[:500],
              "text": new_text(body), "matched_by": matched.how, "flow": matched.message.flow,
              "step": matched.message.step}))
    return True
