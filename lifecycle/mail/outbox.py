"""The outbox: every status change of a mail, each one a conditional update.

A mail is a ``messages`` row written by the flow engine in the transaction
that decided to send it.  From there::

    scheduled --dispatch--> queued --claim--> sending --sent--> sent
        ^                     |                  |--failed--> failed
        |                     | lease expired:   |--suppressed / cancelled
        +--- quiet hours,  ---+ handed out again +--no answer: stays sending,
             retry, 429                             settled (below)

Every transition names the status it leaves (``WHERE status = …``), so two
schedulers or two workers can never both move one mail, and each runs in a
short transaction of its own.  Each attempt's outcome is appended to the
row's ``attempt_log``.

Crash windows, and what closes each:

1. The scheduler dies after marking rows ``queued`` but before (or while)
   putting their ids on the broker, or the broker loses them (Redis
   restarted): the queue lease (``lease_expires_at``) runs out and the next
   dispatch hands them out again.  Sooner where the scheduler sees it
   (:class:`lifecycle.scheduler.MailJob`): ids the broker refuses are
   released at once (:meth:`Outbox.release`); while the broker does not
   answer nothing is handed out; when it answers again, or as a new server,
   every ``queued`` row is handed out again at once.  A worker that gets a
   duplicate id finds the row no longer ``queued`` and does nothing.
2. A worker dies after its claim (``sending``) and before, during or after the
   transport call, before the outcome is committed: the row stays
   ``sending`` until its send lease runs out; :meth:`Outbox.settle` then
   decides by transport:

   * file (idempotent: the same file name again): queued again at once;
   * SendGrid: never resent blindly.  Our message id and the attempt number
     (``attempts`` after the claim) ride in the mail's ``custom_args``, so
     every SendGrid event names both.  An event for the mail (``processed``,
     ``delivered``, …) settles it as ``sent`` (``sent_attempt``: the event's
     attempt).  It is queued again (``resent_at``) only when no event for it
     came ``LIFECYCLE_SETTLE_SECONDS`` after its lease ended *and* the webhook
     has delivered an event of something that happened after that end
     (:meth:`Outbox.events_caught_up_to`): while SendGrid's events lag, however
     far, its event may still be on the way, and it waits.  With the webhook
     silent, it waits; after a day (SendGrid's retry horizon) it is failed as
     "outcome unknown".  Left open: an event that comes after newer ones (a
     post SendGrid retries while later ones went through).  The mail has then
     gone twice, and when that event comes :meth:`Outbox.duplicates` records
     it — ``duplicate_at``, "sent twice" in the attempt log, an
     ``email_sent_twice`` touchpoint — for flow results and ``/healthz``.
   * SMTP (neither): failed as "outcome unknown", on the timeline, so that
     support staff decide; a blind resend could deliver it twice.
3. The transport's request went out but no answer came (timeout, connection
   lost mid-answer): the same as 2 — the row stays ``sending`` with its
   lease ended now (:meth:`Outbox.unanswered`).
4. The worker dies after committing ``sent``: nothing left to do; the
   ``email_sent`` touchpoint is in the same transaction.
5. The worker lives on past its lease (a slow batch, a long wait for the send
   rate): the scheduler may settle its rows as in 2, and another worker send
   them, while it still holds them.  So a worker starts no transport call
   later than ``LIFECYCLE_SEND_TIMEOUT`` before its lease ends and puts the
   rest of its batch back, ``scheduled`` and due at once, the attempt not
   counted.  The timeout bounds each wait of a call (connecting, each read),
   not the call as a whole: a SendGrid post, one request and one answer, ends
   while the lease holds; an SMTP send waits up to the timeout for each of its
   commands (connecting, EHLO, login, MAIL, RCPT, DATA, the end of the
   message), so it can outlast the lease, as can a server answering byte by
   byte.  Such a mail is settled as in 2 while its call is under way: SMTP
   fails it as "outcome unknown" (the worker's ``sent`` then finds it no
   longer ``sending`` and changes nothing: staff see it, nothing goes twice);
   SendGrid finds it sent by its event, and sends it again only after
   ``LIFECYCLE_SETTLE_SECONDS`` more with no event for it, so only a post
   still unanswered that much after the lease's end could go twice.  Left
   open as well: a worker whose outcome commit itself comes after its lease
   ended (a database stalled for longer than the rest of the lease) moves the
   rows as it finds them, by status — for SendGrid, whose settlement waits
   ``LIFECYCLE_SETTLE_SECONDS`` more, that needs a stall of that length too.
6. The worker fails after its claim but before a mail's transport call starts
   (the send rate's store in Redis unreachable while it waits for a place in
   the second's window, the database while rendering; an unreadable 429
   pause is not a failure: :mod:`lifecycle.mail.rate`): it records the
   outcomes of the calls it made and puts every mail it had not posted back,
   ``scheduled``, the attempt not counted, the error in its attempt log —
   due at once after a Redis error, after one ``LIFECYCLE_RETRY_BASE_SECONDS``
   (jittered) after any other — not left ``sending``, where a SendGrid mail
   that was never posted would wait for an event that cannot come.  Only a
   mail whose call had started (an error raised by the transport itself)
   stays ``sending``, settled as in 3.  If the database fails for that too,
   the worker tries again until the rows' lease ends; after that, or if the
   worker dies, window 2 applies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, bindparam, case, func, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.db import among, dumps_json, insert_new, pg_json_array
from lifecycle.models import Message, MessageContent, MessageStatus, ProviderEvent, Touchpoint
from lifecycle.timeutil import as_utc

log = logging.getLogger(__name__)

#: How long a queued mail may wait for a worker, and a worker may take to send a
#: batch, before the mail is handed out again or settled (LIFECYCLE_SEND_LEASE_SECONDS).
SEND_LEASE = timedelta(minutes=2)
QUEUE_LEASE = SEND_LEASE
#: An unsettled SendGrid mail with no event for this long is failed as unknown.
GIVE_UP_SETTLING = timedelta(days=1)
#: Events that mean SendGrid accepted the mail.
ACCEPTED_EVENTS = ("processed", "delivered", "deferred", "bounce", "dropped", "open", "click",
                   "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe")

_messages = Message.__table__
_touchpoints = Touchpoint.__table__
_events = ProviderEvent.__table__
_contents = MessageContent.__table__
_S = MessageStatus


def is_test(message: Any) -> bool:
    """Whether ``message`` (a ``messages`` row, with its context) is a manager's test send
    (:mod:`lifecycle.web.manage`): addressed to the manager, rendered for a customer whose
    timeline, subscriptions and feedback it never touches."""
    return bool((message.context or {}).get("test"))


def log_entry(now: datetime, outcome: str, detail: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": now.isoformat(), "outcome": outcome}
    if detail:
        entry["detail"] = detail[:500]
    return entry


def _logged(row: Any, now: datetime, outcome: str, detail: str | None = None) -> list[Any]:
    """``row``'s attempt log with one more entry."""
    return [*(row.attempt_log or []), log_entry(now, outcome, detail)]


#: ``last_error`` of a mail a campaign's pause holds (:mod:`lifecycle.campaigns.service`):
#: only the campaign's resume releases it, not support staff's resume of the one mail.
CAMPAIGN_HELD = "the campaign is paused"


def _campaign_of(message: Any) -> dict[str, str]:
    """``{"campaign": name}`` for a campaign's mail (its timeline entries name it), else {}."""
    name = (message.context or {}).get("campaign") if hasattr(message, "context") else None
    return {"campaign": name} if name else {}


class Outbox:
    """Owns every status transition of ``messages`` rows; methods run in ``conn``'s transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"

    # -- handing out -------------------------------------------------------
    def due(self, now: datetime, limit: int, lease: timedelta = QUEUE_LEASE,
            every_queued: bool = False) -> list[int]:
        """Hand out due mails: scheduled ones, and queued ones whose lease ran out (every queued
        one with ``every_queued``: the broker may have lost their ids)."""
        queued = _messages.c.status == _S.QUEUED.value
        if not every_queued:
            queued = queued & (_messages.c.lease_expires_at < now)
        # A campaign's mail put back by its worker (its claim ending) after the campaign was
        # paused or cancelled is not handed out again: it waits for the resume, or never goes.
        from lifecycle.campaigns.model import Campaign

        stopped = select(Campaign.id).where(Campaign.id == _messages.c.campaign_id,
                                            Campaign.status.in_(("paused", "cancelled")))
        query = (select(_messages.c.id)
                 .where(((_messages.c.status == _S.SCHEDULED.value) & (_messages.c.due_at <= now))
                        | queued, ~stopped.exists())
                 .order_by(_messages.c.due_at, _messages.c.id).limit(limit))
        if self.pg:
            query = query.with_for_update(skip_locked=True)
        ids = list(self.conn.execute(query).scalars())
        if ids:
            self.conn.execute(update(Message).where(among(self.conn, Message.id, ids)).values(
                status=_S.QUEUED.value, lease_expires_at=now + lease, updated_at=now))
        return ids

    def release(self, message_ids: list[int], now: datetime) -> int:
        """End the queue lease of ``message_ids`` still ``queued`` (the broker refused their
        ids): the next dispatch hands them out again; how many."""
        if not message_ids:
            return 0
        return self.conn.execute(update(Message).where(
            Message.id.in_(message_ids), Message.status == _S.QUEUED.value).values(
            lease_expires_at=now, updated_at=now)).rowcount

    def claim(self, message_ids: Iterable[int], now: datetime,
              lease: timedelta = SEND_LEASE) -> list[Any]:
        """Take queued mails for sending: the rows this worker got, as they are now (``sending``),
        in id order; others have, or had, the rest."""
        ids = list(message_ids)
        if not ids:
            return []
        return sorted(self.conn.execute(update(_messages).where(
            among(self.conn, _messages.c.id, ids), _messages.c.status == _S.QUEUED.value).values(
            status=_S.SENDING.value, attempts=_messages.c.attempts + 1,
            lease_expires_at=now + lease, updated_at=now).returning(*_messages.c)).all(),
            key=lambda row: row.id)

    # -- leaving `sending` ---------------------------------------------------
    def _leave_sending(self, message: Any, now: datetime, outcome: str, detail: str | None,
                       **values: object) -> bool:
        return self.conn.execute(update(Message).where(
            Message.id == message.id, Message.status == _S.SENDING.value).values(
            lease_expires_at=None, updated_at=now,
            attempt_log=_logged(message, now, outcome, detail), **values)).rowcount == 1

    def sent(self, done: list[tuple[Any, datetime, str, Any]], note: str | None = None) -> int:
        """Mails the provider took: ``(row, at, provider id, mail)`` each, in one round trip
        (a batch); how many are ``sent`` now.  Each gets one ``email_sent`` on the timeline
        and, where ``mail`` (an :class:`~lifecycle.mail.compose.Outgoing`) is given, its
        content in ``message_contents``; a mail settled by the provider's events has none."""
        if not done:
            return 0
        params = [{"m_id": row.id, "at": at, "provider_id": provider_id,
                   "log": _logged(row, at, "sent", note or provider_id)}
                  for row, at, provider_id, _mail in done]
        # The update is conditional: only rows it made `sent` get their timeline entry.
        if self.pg:  # one statement for the batch, its columns as four arrays
            confirmed = set(self.conn.execute(_SENT_PG, {
                "ids": [p["m_id"] for p in params], "ats": [p["at"] for p in params],
                "provider_ids": [p["provider_id"] for p in params],
                "logs": Jsonb([p["log"] for p in params], dumps=dumps_json)}).scalars())
        else:  # SQLite has no arrays: one UPDATE per mail, then which are sent now
            self.conn.execute(_SENT, params)
            confirmed = set(self.conn.execute(select(_messages.c.id).where(
                _messages.c.id.in_([row.id for row, *_ in done]),
                _messages.c.status == _S.SENT.value)).scalars())
        touches = [item for item in done if item[0].id in confirmed]
        if not touches:
            return 0
        entries = [
            {"customer_id": row.customer_id, "kind": "email_sent", "channel": "email",
             "occurred_at": at, "recorded_at": at, "message_id": row.id,
             "source_key": f"email_sent:{row.id}",
             "data": {"flow": row.flow, "step": row.step, "template": row.template,
                      **_campaign_of(row), "provider_message_id": provider_id,
                      "subject": mail.subject if mail is not None else None}}
            for row, at, provider_id, mail in touches
            if not is_test(row)]  # a manager's test send: not the customer's
        insert_new(self.conn, _touchpoints, entries, ("source_key",))
        contents = [{"message_id": row.id, "subject": mail.subject, "text": mail.text,
                     "html": mail.html, "headers": {"From": mail.sender, "To": mail.to,
                                                    "Reply-To": mail.reply_to, **mail.headers}}
                    for row, _at, _provider_id, mail in touches if mail is not None]
        insert_new(self.conn, _contents, contents, ("message_id",))
        return len(confirmed)

    def failed(self, message: Any, now: datetime, reason: str) -> bool:
        """Given up for good; the reason goes on the customer's timeline."""
        done = self._leave_sending(message, now, "failed", reason,
                                   status=_S.FAILED.value, last_error=reason)
        if done:
            self.touch(message, "email_failed", now, reason=reason)
        return done

    def withheld(self, message: Any, now: datetime, status: MessageStatus,
                 reason: str) -> bool:
        """Not sent after all: suppressed (address, cap) or cancelled (the flow ended)."""
        return self._leave_sending(message, now, status.value, reason,
                                   status=status.value, last_error=reason)

    def later(self, message: Any, now: datetime, due: datetime, reason: str,
              refund: bool = False) -> bool:
        """Back to scheduled for ``due`` (quiet hours, a retry, a 429).

        ``refund``: this attempt does not count towards the limit (nothing was
        tried, or the provider only asked us to slow down).
        """
        values: dict[str, object] = {"status": _S.SCHEDULED.value, "due_at": due,
                                     "last_error": reason}
        if refund:
            values["attempts"] = Message.attempts - 1
        return self._leave_sending(message, now, "later", reason, **values)

    def unanswered(self, message: Any, now: datetime, reason: str) -> bool:
        """The request went out, no answer came: stays ``sending``, its lease ended, to settle."""
        return self.conn.execute(update(Message).where(
            Message.id == message.id, Message.status == _S.SENDING.value).values(
            lease_expires_at=now, updated_at=now, last_error=reason,
            attempt_log=_logged(message, now, "no answer", reason))).rowcount == 1

    # -- settling abandoned and unanswered mails ----------------------------
    def settle(self, now: datetime, transport: Any, settle_after: timedelta) -> dict[str, int]:
        """Decide every ``sending`` row whose lease ran out (see the module doc), then record
        the duplicates late events revealed (:meth:`duplicates`); counts."""
        counts = {"requeued": 0, "sent": 0, "failed": 0, "duplicates": 0}
        stale = self.conn.execute(select(_messages).where(
            _messages.c.status == _S.SENDING.value, _messages.c.lease_expires_at < now)
            .order_by(_messages.c.id).limit(5000)).all()
        if stale and transport.idempotent:
            for row in stale:
                counts["requeued"] += self._requeue(row, now, "a worker stopped while sending; "
                                                              "sent again (the transport is idempotent)")
        elif stale and not transport.settles_by_events:
            for row in stale:
                counts["failed"] += self.failed(
                    row, now, "outcome unknown: the worker stopped or lost the connection while "
                              "the SMTP server had the mail; not resent, to avoid a duplicate")
        elif stale:
            self._settle_by_events(stale, now, settle_after, counts)
        if transport.settles_by_events:
            counts["duplicates"] = self.duplicates(now)
        return counts

    def _settle_by_events(self, stale: list[Any], now: datetime, settle_after: timedelta,
                          counts: dict[str, int]) -> None:
        seen = {mid: (provider_id, attempt) for mid, provider_id, attempt in self.conn.execute(
            select(_events.c.message_id, func.max(_events.c.provider_message_id),
                   func.min(_events.c.attempt))
            .where(_events.c.message_id.in_([r.id for r in stale]),
                   _events.c.event.in_(ACCEPTED_EVENTS))
            .group_by(_events.c.message_id)).all()}
        caught_up = self.events_caught_up_to(min(as_utc(r.lease_expires_at) for r in stale))
        for row in stale:
            ended = as_utc(row.lease_expires_at)
            if row.id in seen:
                provider_id = (seen[row.id][0] or "").split(".")[0]
                if self.sent([(row, now, provider_id, None)],
                             note=f"settled by SendGrid's event: {provider_id}"):
                    counts["sent"] += 1
                    self.conn.execute(update(Message).where(Message.id == row.id).values(
                        sent_attempt=seen[row.id][1]))
            elif ended < now - GIVE_UP_SETTLING:
                counts["failed"] += self.failed(
                    row, now, "outcome unknown: SendGrid sent no event for this mail in a day; "
                              "not resent, to avoid a duplicate")
            elif ended < now - settle_after and caught_up is not None and caught_up >= ended:
                counts["requeued"] += self._requeue(
                    row, now, f"SendGrid reported no event for attempt {row.attempts} of this "
                              "mail while it reported later ones: it never arrived there; sent "
                              "again", resent=True)

    def events_caught_up_to(self, since: datetime) -> datetime | None:
        """How far SendGrid's events have come: the latest time (SendGrid's ``timestamp``, or
        when we received it if that is earlier: a clock running ahead moves nothing) of the
        events the webhook delivered since ``since``; None if none came.  A mail whose
        outcome is unknown is sent again only once this passed the end of its lease: while
        the webhook lags, its event may still be on the way however long the settle window
        was."""
        e = _events
        found = self.conn.execute(select(func.max(case(
            (e.c.occurred_at < e.c.recorded_at, e.c.occurred_at), else_=e.c.recorded_at)))
            .where(e.c.recorded_at >= since)).scalar()
        return as_utc(found) if found is not None else None

    def duplicates(self, now: datetime) -> int:
        """Record every mail sent again after an unknown outcome (``resent_at``) for which an
        event of another attempt than the one recorded as sent has come: SendGrid took it
        twice.  Each gets ``duplicate_at``, a "sent twice" entry in its attempt log and an
        ``email_sent_twice`` touchpoint, once; how many were found now.  Late events come for a
        day (SendGrid's retries), so mails resent up to two days ago are watched."""
        m, e = _messages, _events
        others = dict(self.conn.execute(
            select(m.c.id, func.min(e.c.attempt)).join(e, e.c.message_id == m.c.id)
            .where(m.c.resent_at >= now - 2 * GIVE_UP_SETTLING, m.c.duplicate_at.is_(None),
                   m.c.status == _S.SENT.value, m.c.sent_attempt.is_not(None),
                   e.c.event.in_(ACCEPTED_EVENTS), e.c.attempt.is_not(None),
                   e.c.attempt != m.c.sent_attempt)
            .group_by(m.c.id)).all())
        found = self.conn.execute(select(_messages).where(_messages.c.id.in_(list(others)))
                                  .order_by(_messages.c.id)).all() if others else []
        recorded = 0
        for row in found:
            attempts = sorted({row.sent_attempt, others[row.id]})
            detail = (f"SendGrid took attempts {attempts[0]} and {attempts[1]} of this mail: an "
                      "event came late, after it was sent again")
            if self.conn.execute(update(Message).where(
                    Message.id == row.id, Message.duplicate_at.is_(None)).values(
                    duplicate_at=now, updated_at=now,
                    attempt_log=_logged(row, now, "sent twice", detail))).rowcount != 1:
                continue
            recorded += 1
            self.touch(row, "email_sent_twice", now, attempts=attempts,
                       provider_message_id=row.provider_message_id)
            log.error("Mail %d was sent twice: %s.", row.id, detail)
        return recorded

    def _requeue(self, row: Any, now: datetime, reason: str, resent: bool = False) -> int:
        values: dict[str, object] = {"resent_at": now} if resent else {}
        return self.conn.execute(update(Message).where(
            Message.id == row.id, Message.status == _S.SENDING.value).values(
            # the lease it had ran out: the next dispatch (this one too) hands it out
            status=_S.QUEUED.value, lease_expires_at=row.lease_expires_at, updated_at=now,
            last_error=reason, attempt_log=_logged(row, now, "requeued", reason),
            **values)).rowcount

    # -- support staff -----------------------------------------------------
    def hold(self, message_id: int, action: str, now: datetime, staff: str) -> bool:
        """``pause`` a scheduled mail, ``resume`` a paused one, or ``cancel`` either, for a
        staff member; False if the mail is no longer in a state that allows it (it went out,
        or someone else changed it first)."""
        start, end = {"pause": ((_S.SCHEDULED,), _S.PAUSED),
                      "resume": ((_S.PAUSED,), _S.SCHEDULED),
                      "cancel": ((_S.SCHEDULED, _S.PAUSED), _S.CANCELLED)}[action]
        done = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]
        row = self.conn.execute(select(_messages).where(_messages.c.id == message_id)).first()
        held_by_campaign = _messages.c.last_error.is_not(None) & (
            _messages.c.last_error == CAMPAIGN_HELD)
        if row is None or self.conn.execute(update(_messages).where(
                _messages.c.id == message_id,
                ~held_by_campaign if action == "resume" else true(),
                _messages.c.status.in_([s.value for s in start])).values(
                status=end.value, updated_at=now,
                last_error=f"{done} by {staff}" if action != "resume" else None,
                attempt_log=_logged(row, now, done, staff))).rowcount != 1:
            return False
        self.conn.execute(_touchpoints.insert().values(
            customer_id=row.customer_id, kind=f"mail_{done}", channel="support",
            occurred_at=now, recorded_at=now, message_id=row.id,
            data={"by": staff, "flow": row.flow, "step": row.step, "template": row.template,
                  **_campaign_of(row),
                  "due_at": row.due_at.isoformat() if row.due_at else None}))
        return True

    # -- the timeline ---------------------------------------------------------
    def touch(self, message: Any, kind: str, now: datetime, **data: object) -> None:
        """Record ``kind`` (email_sent, email_failed, …) on the customer's timeline, once
        (never for a test send: it is not the customer's mail)."""
        if is_test(message):
            return
        insert = pg_insert if self.pg else sqlite_insert
        self.conn.execute(insert(Touchpoint).values(
            customer_id=message.customer_id, kind=kind, channel="email",
            occurred_at=now, recorded_at=now, message_id=message.id,
            source_key=f"{kind}:{message.id}",
            data={"flow": message.flow, "step": message.step, "template": message.template,
                  **_campaign_of(message), **data}).on_conflict_do_nothing(
                index_elements=["source_key"]))


#: `sent` for a batch on PostgreSQL: the server plans one UPDATE, not one per mail.
_SENT_PG = text(
    "UPDATE messages SET status = 'sent', sent_at = v.at, updated_at = v.at, "
    "provider_message_id = v.provider_id, last_error = NULL, lease_expires_at = NULL, "
    "attempt_log = v.log, sent_attempt = messages.attempts "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[]), "
    f"CAST(:provider_ids AS varchar[]), {pg_json_array('logs')}) AS v(id, at, provider_id, log) "
    "WHERE messages.id = v.id AND messages.status = 'sending' RETURNING messages.id")
_SENT = update(_messages).where(
    _messages.c.id == bindparam("m_id"), _messages.c.status == _S.SENDING.value).values(
    status=_S.SENT.value, sent_at=bindparam("at"), updated_at=bindparam("at"),
    provider_message_id=bindparam("provider_id"), last_error=None, lease_expires_at=None,
    attempt_log=bindparam("log", type_=_messages.c.attempt_log.type),
    sent_attempt=_messages.c.attempts)
