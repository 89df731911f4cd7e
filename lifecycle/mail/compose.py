"""Build one outbox row's mail: the same parts and headers whichever transport sends it.

:func:`compose` gives an :class:`Outgoing`, which the file and SMTP transports
turn into MIME (:meth:`Outgoing.mime`) and the SendGrid transport into a v3
mail/send payload; both carry the same subject, parts, Reply-To and headers.
"""

from __future__ import annotations

import email.policy
import functools
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from lifecycle.config import Settings, sender_parts
from lifecycle.mail.addresses import address
from lifecycle.mail.context import unsubscribe_link
from lifecycle.mail.templates import Rendered

#: CRLF line ends, and headers not folded below RFC 5322's 998 characters: a folded
#: List-Unsubscribe reads back with a leading space, and some relays mangle it.
MIME_POLICY = email.policy.SMTP.clone(max_line_length=998)
#: The policy the body parts are encoded under: Python's body encoders take their line length
#: from the policy, and RFC 2045 allows quoted-printable lines of at most 76 characters (the
#: soft line break ``=`` included).  The message is written out under :data:`MIME_POLICY`.
BODY_POLICY = email.policy.SMTP.clone(max_line_length=76)
#: Characters kept in a Feedback-ID field; others become ``-``.
_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest Feedback-ID field (four fields and three colons stay below 170 characters).
FEEDBACK_FIELD_MAX = 40
#: Prefix of our ids in SendGrid's ``custom_args`` (they come back on every event).
ARG_PREFIX = "lifecycle_"



def message_id_for(message_id: int, domain: str) -> str:
    """A mail's Message-ID: 128 random bits (from :mod:`secrets`; :func:`email.utils.make_msgid`
    takes 40 from :mod:`random`), then ``lifecycle.<our id>@<domain>``.  A reply matched by it
    must quote it whole (:mod:`lifecycle.mail.inbound`), so the random part must not be
    guessable."""
    return f"<{secrets.token_hex(16)}.lifecycle.{message_id}@{domain}>"


def domain_of(settings: Settings) -> str:
    return _domain(settings.mail_from)


def reply_domain_of(settings: Settings) -> str:
    """The domain of every Reply-To and ``mailto:`` unsubscribe address: LIFECYCLE_REPLY_DOMAIN,
    else the From domain."""
    return settings.reply_domain or domain_of(settings)


@functools.lru_cache(maxsize=8)
def _domain(sender: str) -> str:
    return sender_parts(sender)[1].rpartition("@")[2].lower() or "localhost"


def feedback_field(value: object) -> str:
    """One field of a ``Feedback-ID``: letters, digits, ``.``, ``_`` and ``-`` (anything else,
    a colon first of all, becomes ``-``), at most :data:`FEEDBACK_FIELD_MAX` characters,
    ``none`` when empty."""
    text = _FEEDBACK_UNSAFE.sub("-", str(value or "")).strip("-")[:FEEDBACK_FIELD_MAX]
    return text.strip("-") or "none"


def feedback_id(flow: str, step: str, template: str, sender: str) -> str:
    """Gmail's feedback-loop header: ``<flow>:<step>:<template>:<sender>``; complaint rates are
    reported per field value, so every field names a kind of mail, never one mail, and the
    last one the sender (the From domain)."""
    return ":".join(feedback_field(v) for v in (flow, step, template, sender))


@dataclass(frozen=True)
class Outgoing:
    """A mail ready for any transport."""

    message_id: int
    sender: str  # "Name <address>"
    to: str
    subject: str
    text: str | None
    html: str | None
    reply_to: str
    date: datetime
    #: Extra headers, identical on every transport (List-Unsubscribe, Message-ID, X-Lifecycle-*).
    headers: dict[str, str] = field(default_factory=dict)
    #: Our ids as strings; SendGrid returns them on every event of this mail.
    custom_args: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] = ()

    def mime(self) -> EmailMessage:
        """The MIME message: bodies in quoted-printable wrapped at 76 characters (RFC 2045),
        UTF-8; headers unfolded up to 998 (:data:`MIME_POLICY`)."""
        mail = EmailMessage(policy=BODY_POLICY)
        mail["From"] = self.sender
        mail["To"] = self.to
        mail["Subject"] = self.subject
        mail["Date"] = format_datetime(self.date)
        mail["Reply-To"] = self.reply_to
        for name, value in self.headers.items():
            mail[name] = value
        if self.categories:
            mail["X-Lifecycle-Categories"] = ", ".join(self.categories)
        qp = {"charset": "utf-8", "cte": "quoted-printable"}
        if self.text is not None:
            mail.set_content(self.text, **qp)
        if self.html is not None:
            if self.text is None:
                mail.set_content(self.html, subtype="html", **qp)
            else:
                mail.add_alternative(self.html, subtype="html", **qp)
        mail.policy = MIME_POLICY  # the generator takes the top message's policy for every part
        return mail


def compose(settings: Settings, message: Any, rendered: Rendered, now: datetime,
            local_day: str, unsubscribe_url: str | None = None) -> Outgoing:
    """``message`` is a ``messages`` row; ``local_day`` the customer's date (file layout);
    ``unsubscribe_url`` the mail's one-click unsubscribe link as its context already signed it
    (``links.unsubscribe`` of :func:`lifecycle.mail.context.build_context`: the same token,
    not signed twice per mail), else it is signed here.

    A manager's test send (its context names ``test``, the manager, and
    ``test_flow``) gets test tokens (:func:`lifecycle.mail.context.token_data`)
    in its Reply-To and List-Unsubscribe, and ``X-Lifecycle-Test`` beside the
    flow and step it shows.
    """
    domain = domain_of(settings)
    replies = reply_domain_of(settings)
    context = message.context or {}
    test = bool(context.get("test"))
    if unsubscribe_url is None:
        unsubscribe_url = unsubscribe_link(settings, message.customer_id, message.id, test)
    flow = message.flow or (str(context.get("test_flow") or "") if test else "")
    # ``attempt``: which post of the mail an event is about (outbox: a late event of an
    # attempt whose outcome was unknown, after the mail was sent again, is a duplicate).
    ids = {"message_id": message.id, "customer_id": message.customer_id,
           "flow": flow, "step": message.step or "", "attempt": message.attempts}
    mailto = address(settings.secret_key, "unsubscribe", message.id, replies, test)
    headers = {
        "Message-ID": message_id_for(message.id, domain),
        "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Lifecycle-Message-Id": str(message.id),
        "X-Lifecycle-Customer-Id": str(message.customer_id),
        "X-Lifecycle-Flow": ids["flow"],
        "X-Lifecycle-Step": ids["step"],
        "X-Lifecycle-Template": message.template,
        "X-Lifecycle-Date": local_day,
        # a test send is a kind of its own: its complaints (if any) never mix with the flow's
        "Feedback-ID": feedback_id("test" if test else ids["flow"], ids["step"],
                                   message.template, domain),
    }
    campaign = str(context.get("campaign") or "") if not test else ""
    if campaign:  # a campaign's mail: named as a flow's would be, by the campaign
        headers["X-Lifecycle-Campaign"] = campaign
        headers["Feedback-ID"] = feedback_id(f"campaign-{campaign}", message.variant or "",
                                             message.template, domain)
        ids["campaign"] = campaign
    if test:
        headers["X-Lifecycle-Test"] = "yes"  # its links change nothing for the customer
        ids["test"] = "1"
        categories: tuple[str, ...] = ("test",)
    elif campaign:
        categories = (f"campaign:{campaign}",)
    elif message.flow:
        categories = (f"flow:{message.flow}", f"step:{message.flow}/{message.step}")
    else:
        categories = ("flow:none",)
    return Outgoing(
        message_id=message.id, sender=settings.mail_from, to=message.to_email,
        subject=rendered.subject, text=rendered.text, html=rendered.html,
        reply_to=address(settings.secret_key, "reply", message.id, replies, test), date=now,
        headers=headers,
        custom_args={ARG_PREFIX + key: str(value) for key, value in ids.items()},
        categories=tuple(c[:255] for c in categories))
