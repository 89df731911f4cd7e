"""A customer's timeline: every touchpoint, newest first, in pages, with a line for people.

Pages are keyset pages on ``(occurred_at, id)`` — the index
``(customer_id, occurred_at)`` serves them however long the timeline is — and
``before`` is the cursor of the last entry shown (:meth:`Entry.cursor`).
:func:`summary` says each touchpoint in one line for support staff; the
terminal (``lifecycle timeline``) and the web page use the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from lifecycle.models import Touchpoint
from lifecycle.money import FALLBACK_LOCALE, money
from lifecycle.segments.definitions import segment_words
from lifecycle.timeutil import as_utc, parse_instant

PAGE = 50
MAX_PAGE = 500
#: The kinds a page offers to filter by, in the order people think of them.
TIMELINE_KINDS = ("order_placed", "order_status_changed", "email_sent", "email_delivered", "email_opened",
                  "email_clicked", "email_bounced", "replied", "feedback", "feedback_voided",
                  "support", "note",
                  "unsubscribed", "mail_paused", "mail_cancelled", "segment_entered",
                  "segment_exited", "review", "referral", "offer_redeemed",
                  "offer_redemption_undone")


@dataclass(frozen=True)
class Entry:
    id: int
    kind: str
    channel: str
    occurred_at: datetime
    message_id: int | None
    data: dict[str, Any]

    @property
    def summary(self) -> str:
        return summary(self.kind, self.data)

    def said(self, locale: Any) -> str:
        """:attr:`summary` with amounts formatted for ``locale``."""
        return summary(self.kind, self.data, locale)

    @property
    def cursor(self) -> str:
        """Where the next page starts: ``<ISO time>~<id>``."""
        return f"{self.occurred_at.isoformat()}~{self.id}"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "channel": self.channel,
                "occurred_at": self.occurred_at.isoformat(), "message_id": self.message_id,
                "summary": self.summary, "data": self.data}


def page(conn: Connection, customer_id: int, *, kinds: Sequence[str] = (),
         before: str | None = None, limit: int = PAGE,
         message: int | None = None, after: str | None = None) -> list[Entry]:
    """Up to ``limit`` entries older than the cursor ``before`` (newest first); only those
    of one mail if ``message`` is given.  With ``after`` instead: the ``limit`` entries
    just newer than that cursor (the page before; still newest first)."""
    t = Touchpoint.__table__
    query = select(t.c.id, t.c.kind, t.c.channel, t.c.occurred_at, t.c.message_id,
                   t.c.data).where(t.c.customer_id == customer_id)
    if kinds:
        query = query.where(t.c.kind.in_(list(kinds)))
    if message is not None:
        query = query.where(t.c.message_id == message)
    if before:
        at, row_id = parse_cursor(before)
        query = query.where(or_(t.c.occurred_at < at,
                                and_(t.c.occurred_at == at, t.c.id < row_id)))
    ordering = (t.c.occurred_at.desc(), t.c.id.desc())
    if after:
        at, row_id = parse_cursor(after)
        query = query.where(or_(t.c.occurred_at > at,
                                and_(t.c.occurred_at == at, t.c.id > row_id)))
        ordering = (t.c.occurred_at.asc(), t.c.id.asc())  # nearest the cursor first
    rows = list(conn.execute(query.order_by(*ordering).limit(max(1, min(limit, MAX_PAGE)))))
    if after:
        rows.reverse()
    return [Entry(r.id, r.kind, r.channel, as_utc(r.occurred_at), r.message_id, r.data or {})
            for r in rows]


def next_cursor(entries: Sequence[Entry], limit: int) -> str | None:
    """The cursor of the page after ``entries``, a page of ``limit``: None when it was the
    last (not full)."""
    return entries[-1].cursor if entries and len(entries) == limit else None


#: The largest row id a BIGINT holds: a larger one in a forged cursor or address is refused.
MAX_ROW_ID = 2**63 - 1


def parse_cursor(cursor: str) -> tuple[datetime, int]:
    """``<ISO time>~<id>`` as (time, id); ValueError naming the problem."""
    at, sep, row_id = cursor.rpartition("~")
    # ASCII digits of a row id that fits a BIGINT ("²" is a digit to str.isdigit, int() refuses it)
    if not sep or not (row_id.isascii() and row_id.isdigit()) or len(row_id) > 19 \
            or int(row_id) > MAX_ROW_ID:
        raise ValueError(f"not a timeline cursor: {cursor!r} (expected TIME~ID)")
    return parse_instant(at), int(row_id)


def summary(kind: str, data: dict[str, Any], locale: Any = FALLBACK_LOCALE) -> str:
    """One line for people (amounts with their currency, as ``locale`` writes them)."""
    d = data
    if d.get("erased"):
        return f"{kind.replace('_', ' ')} (personal data erased)"
    mail = f" — {d['flow']}/{d['step']}" if d.get("flow") and d.get("step") else (
        f" — campaign {d['campaign']}" if d.get("campaign") else "")
    lines = {
        "order_placed": lambda: f"Order {d.get('order_id')}: {_amount(d, locale)} "
                                f"(order no. {d.get('nth')})",
        "order_status_changed": lambda: f"Order {d.get('order_id')} is now {d.get('status')} "
                                        f"(was {d.get('was')}): {_amount(d, locale)}",
        "email_sent": lambda: f"Mail sent: “{d.get('subject') or ''}”{mail}",
        "email_sent_twice": lambda: "Mail sent twice: SendGrid took attempts "
                                    + " and ".join(str(a) for a in d.get("attempts") or ())
                                    + f" (an event came late, after it was sent again){mail}",
        "email_failed": lambda: f"Mail failed: {d.get('reason', '')}",
        "email_processed": lambda: f"Mail accepted by SendGrid{mail}",
        "email_delivered": lambda: f"Mail delivered{mail}",
        "email_deferred": lambda: f"Delivery delayed: {d.get('response', '')}{mail}",
        "email_dropped": lambda: f"Mail dropped by SendGrid: {d.get('reason', '')}{mail}",
        "email_bounced": lambda: f"Mail {'blocked' if d.get('type') == 'blocked' else 'bounced'}:"
                                 f" {d.get('reason', '')}{mail}",
        "email_opened": lambda: f"Mail opened{mail}",
        "email_machine_opened": lambda: f"Mail opened by a mail client's privacy proxy{mail}",
        "email_clicked": lambda: f"Clicked {d.get('url', 'a link')}{mail}",
        "email_spam_report": lambda: f"Marked the mail as spam{mail}",
        "email_unsubscribed": lambda: f"Unsubscribed through SendGrid{mail}",
        "email_group_unsubscribed": lambda: f"Unsubscribed from a SendGrid group{mail}",
        "email_group_resubscribed": lambda: f"Subscribed again to a SendGrid group{mail}",
        "replied": lambda: f"Replied: {_first_line(d.get('text', ''))}",
        "auto_reply": lambda: f"Automatic answer: {d.get('subject', '')}",
        "feedback": lambda: f"Feedback: {d.get('score')}/10"
                            + (f" — {_first_line(d['comment'])}" if d.get("comment") else ""),
        "feedback_voided": lambda: f"NPS scores not counted: {d.get('votes')} posted within "
                                   f"{d.get('seconds')} s ("
                                   + ", ".join(str(n) for n in d.get("scores") or ())
                                   + "), a link scanner's",
        "support": lambda: f"Support {d.get('type', 'contact')}: {_first_line(d.get('summary', ''))}",
        "event": lambda: f"Event {d.get('name', '')}",
        "review": lambda: f"Reviewed {d.get('product') or d.get('sku') or 'the shop'}: "
                          f"{d.get('rating')}/5"
                          + (f" — {_first_line(d['text'])}" if d.get("text") else ""),
        "referral": lambda: "Referred "
                            + (d.get("referred_customer_id") or d.get("referred_email") or "someone"),
        "unsubscribed": lambda: f"Unsubscribed ({d.get('scope')}, via {d.get('via')})",
        "resubscribed": lambda: f"Subscribed again ({d.get('scope')}, via {d.get('via')})",
        "mail_paused": lambda: f"Scheduled mail paused by {d.get('by')}{mail}",
        "mail_resumed": lambda: f"Paused mail released by {d.get('by')}{mail}",
        "mail_cancelled": lambda: f"Scheduled mail cancelled by {d.get('by')}{mail}",
        "note": lambda: f"Note by {d.get('by')}: {_first_line(d.get('text', ''))}",
        "offer_redeemed": lambda: f"Used the offer code {d.get('code')} "
                                  f"({_offer_words(d, locale)}) in order {d.get('order_id')}"
                                  + (" after it had expired" if d.get("late") else "") + mail,
        "offer_redemption_undone": lambda: f"The offer code {d.get('code')} is open again: "
                                           f"order {d.get('order_id')} was cancelled or "
                                           "refunded" + mail,
        "segment_entered": lambda: f"Entered segment “{segment_words(str(d.get('segment')))}”",
        "segment_exited": lambda: f"Left segment “{segment_words(str(d.get('segment')))}”",
    }
    make = lines.get(kind)
    return make() if make else kind.replace("_", " ")


def _amount(d: dict[str, Any], locale: Any) -> str:
    """An order's total with its currency; the bare figure when the entry names none."""
    total, currency = d.get("total"), d.get("currency")
    if total is None or not currency:
        return str(total)
    try:
        return money(total, str(currency), locale)
    except (ArithmeticError, ValueError):
        return f"{total} {currency}"


def _offer_words(d: dict[str, Any], locale: Any) -> str:
    """What an offer gave: ``15% off``, ``€5.00 off``, ``free shipping``."""
    if d.get("kind") == "free_shipping":
        return "free shipping"
    if d.get("kind") == "fixed":
        return f"{_amount({'total': d.get('value'), 'currency': d.get('currency')}, locale)} off"
    return f"{d.get('value')}% off"


def _first_line(text: str, width: int = 120) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= width else line[:width - 1] + "…"
