"""Warnings at start for settings that are fine on a laptop and wrong for real mail.

With the ``sendgrid`` or ``smtp`` transport every process (``web``, ``worker``, ``scheduler``,
``run``) logs one warning per finding when it starts (:func:`warn_at_start`); the ``file``
transport, which sends nothing, is not warned about.  The findings:

* ``LIFECYCLE_BASE_URL`` (unsubscribe, preference and feedback links) or ``LIFECYCLE_SHOP_URL``
  on ``http://``: mailbox providers and link scanners distrust plain-http links, and RFC 8058's
  one-click unsubscribe wants HTTPS;
* a sender (``LIFECYCLE_MAIL_FROM``) or reply domain (``LIFECYCLE_REPLY_DOMAIN``) that no real
  mail can use: ``example.com``, ``example.org``, ``example.net`` (and their subdomains), the
  reserved ``.example``, ``.test``, ``.invalid`` and ``.localhost`` names, ``localhost``;
* no postal address (``LIFECYCLE_SHOP_ADDRESS``): CAN-SPAM and many European laws require one
  in marketing mail, and its absence counts against a mail's reputation.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from lifecycle.config import Settings
from lifecycle.mail.compose import domain_of, reply_domain_of

log = logging.getLogger(__name__)

#: Transports that send real mail.
REAL_TRANSPORTS = ("sendgrid", "smtp")
#: Domains reserved for documentation (RFC 2606, RFC 6761), with their subdomains.
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "localhost")
PLACEHOLDER_TLDS = ("example", "test", "invalid", "localhost")


def placeholder_domain(domain: str) -> bool:
    """Whether ``domain`` is reserved for examples or the local machine (module doc)."""
    name = domain.strip().rstrip(".").lower()
    return (not name or name.rpartition(".")[2] in PLACEHOLDER_TLDS
            or any(name == d or name.endswith("." + d) for d in PLACEHOLDER_DOMAINS))


def findings(settings: Settings) -> list[str]:
    """One sentence per setting that a real mail should not go out with (none for the ``file``
    transport)."""
    if settings.mail_transport not in REAL_TRANSPORTS:
        return []
    found = []
    for name, url in (("LIFECYCLE_BASE_URL", settings.base_url),
                      ("LIFECYCLE_SHOP_URL", settings.shop_url)):
        if urlsplit(url).scheme.lower() == "http":
            found.append(f"{name} is {url}, plain http: the links in every mail should be "
                         "https (mail providers distrust http links, and one-click "
                         "unsubscribe expects https).")
    sender = domain_of(settings)
    if placeholder_domain(sender):
        found.append(f"LIFECYCLE_MAIL_FROM is on {sender}, a domain reserved for examples or "
                     "this machine: real mail from it fails SPF, DKIM and DMARC. Set your own "
                     "sender address.")
    replies = reply_domain_of(settings)
    if settings.reply_domain and placeholder_domain(replies):
        found.append(f"LIFECYCLE_REPLY_DOMAIN is {replies}, a domain reserved for examples or "
                     "this machine: replies and mailto unsubscribes to it reach no one.")
    if not settings.shop_address.strip():
        found.append("LIFECYCLE_SHOP_ADDRESS is empty: marketing mail must show the shop's "
                     "postal address (CAN-SPAM, EU law), and mail without one looks like spam.")
    return found


def warn_at_start(settings: Settings, process: str) -> list[str]:
    """Log each finding as a warning naming ``process``; the findings."""
    found = findings(settings)
    for finding in found:
        log.warning("%s starts with the %s transport, but %s", process,
                    settings.mail_transport, finding)
    return found
