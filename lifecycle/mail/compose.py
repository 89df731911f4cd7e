"""Build the MIME message of one outbox row: the same parts and headers for every transport."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from lifecycle.config import Settings
from lifecycle.links import sign
from lifecycle.mail.templates import Rendered


def domain_of(settings: Settings) -> str:
    return parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"


def compose(settings: Settings, message: Any, rendered: Rendered, now: datetime,
            local_day: str) -> EmailMessage:
    """``message`` is a ``messages`` row; ``local_day`` the customer's date (file layout)."""
    domain = domain_of(settings)
    data = {"c": message.customer_id, "m": message.id}
    unsubscribe = sign(settings.secret_key, "unsubscribe", data)
    reply = sign(settings.secret_key, "reply", {"m": message.id})
    mail = EmailMessage()
    mail["From"] = settings.mail_from
    mail["To"] = message.to_email
    mail["Subject"] = rendered.subject
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = make_msgid(idstring=f"lifecycle.{message.id}", domain=domain)
    mail["Reply-To"] = f"reply+{reply}@{domain}"
    mail["List-Unsubscribe"] = (f"<{settings.base_url}/u/{unsubscribe}>, "
                                f"<mailto:unsubscribe+{unsubscribe}@{domain}>")
    mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for header, value in (("X-Lifecycle-Message-Id", message.id),
                          ("X-Lifecycle-Customer-Id", message.customer_id),
                          ("X-Lifecycle-Flow", message.flow or ""),
                          ("X-Lifecycle-Step", message.step or ""),
                          ("X-Lifecycle-Template", message.template),
                          ("X-Lifecycle-Date", local_day)):
        mail[header] = str(value)
    if rendered.text is not None:
        mail.set_content(rendered.text)
    if rendered.html is not None:
        if rendered.text is None:
            mail.set_content(rendered.html, subtype="html")
        else:
            mail.add_alternative(rendered.html, subtype="html")
    return mail
