"""Checks of a written mail that more than one test makes: line lengths, encodings, parts."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

#: RFC 5322: a line of a message is at most 998 octets (CRLF excluded).
MAX_LINE = 998
#: RFC 2045: a quoted-printable line is at most 76 characters (the soft break included).
MAX_QP_LINE = 76


def content(part: Any) -> str:
    """A text part decoded, its line ends (CRLF on the wire, RFC 2046) as ``\\n``."""
    return str(part.get_content()).replace("\r\n", "\n")


def check_lines(raw: bytes) -> EmailMessage:
    """``raw`` parsed, after checking every line is at most 998 octets and every body part is
    UTF-8 quoted-printable with lines of at most 76 characters."""
    longest = max(len(line) for line in raw.split(b"\r\n"))
    assert longest <= MAX_LINE, f"a line of {longest} octets"
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    for part in parsed.walk():
        if part.is_multipart():
            continue
        assert part["Content-Transfer-Encoding"] == "quoted-printable", part["Content-Type"]
        assert part.get_content_charset() == "utf-8"
        body = part.get_payload(decode=False)
        widest = max(len(line) for line in body.splitlines())
        assert widest <= MAX_QP_LINE, f"a quoted-printable line of {widest} characters"
    return parsed  # type: ignore[return-value]
