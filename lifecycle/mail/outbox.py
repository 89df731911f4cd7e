"""The outbox: every status change of a mail, each one a conditional update.

A mail is a ``messages`` row written by the flow engine in the transaction
that decided to send it.  From there::

    scheduled --dispatch--> queued --claim--> sending --sent--> sent
        ^                     |                  |--failed--> failed
        |                     | lease expired:   |--suppressed / cancelled
        +--- quiet hours -----+ handed out again +--retry--> scheduled (later)

Every transition names the status it leaves (``WHERE status = …``), so two
schedulers or two workers can never both move one mail, and each runs in its
own short transaction.  Crash windows:

* scheduler dies after marking rows ``queued`` but before (or while) putting
  their ids on the broker, or the broker loses them: the lease
  (``lease_expires_at``) runs out and the next dispatch hands them out again;
  a worker that then gets a duplicate id finds the row no longer ``queued``
  and does nothing.
* worker dies after ``claim`` and before the transport call: the row stays
  ``sending`` until its lease expires.  What happens then depends on the
  transport (``Transport.idempotent``): the file transport writes the same
  file name again, so the row goes back to ``queued``; for a provider that
  may already have accepted the mail the row is left for settlement by the
  provider's own events (issue 5), never resent blindly.
* worker dies after the transport accepted the mail but before ``sent`` is
  committed: the same window as above, handled the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update

from lifecycle.models import Message, MessageStatus, Touchpoint

#: How long a queued mail may wait for a worker before it is handed out again.
QUEUE_LEASE = timedelta(minutes=5)
#: How long a worker may take to send one mail before the row counts as abandoned.
SEND_LEASE = timedelta(minutes=2)

_messages = Message.__table__
_S = MessageStatus


class Outbox:
    """Owns every status transition of ``messages`` rows; methods run in ``conn``'s transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def due(self, now: datetime, limit: int) -> list[int]:
        """Hand out due mails: scheduled ones, and queued ones whose lease ran out."""
        query = (select(_messages.c.id)
                 .where(((_messages.c.status == _S.SCHEDULED.value) & (_messages.c.due_at <= now))
                        | ((_messages.c.status == _S.QUEUED.value)
                           & (_messages.c.lease_expires_at < now)))
                 .order_by(_messages.c.due_at, _messages.c.id).limit(limit))
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(self.conn.execute(query).scalars())
        if ids:
            self.conn.execute(update(Message).where(Message.id.in_(ids)).values(
                status=_S.QUEUED.value, lease_expires_at=now + QUEUE_LEASE, updated_at=now))
        return ids

    def recover(self, now: datetime, idempotent: bool) -> int:
        """Rows abandoned in ``sending``: queued again when resending is harmless."""
        if not idempotent:
            return 0
        return self.conn.execute(update(Message).where(
            Message.status == _S.SENDING.value, Message.lease_expires_at < now).values(
            status=_S.QUEUED.value, lease_expires_at=now, updated_at=now,
            last_error="a worker stopped while sending; sent again")).rowcount

    def claim(self, message_id: int, now: datetime) -> bool:
        """Take a queued mail for sending; False if another worker has (or had) it."""
        return self.conn.execute(update(Message).where(
            Message.id == message_id, Message.status == _S.QUEUED.value).values(
            status=_S.SENDING.value, attempts=Message.attempts + 1,
            lease_expires_at=now + SEND_LEASE, updated_at=now)).rowcount == 1

    def _leave_sending(self, message_id: int, now: datetime, **values: object) -> bool:
        return self.conn.execute(update(Message).where(
            Message.id == message_id, Message.status == _S.SENDING.value).values(
            lease_expires_at=None, updated_at=now, **values)).rowcount == 1

    def sent(self, message_id: int, now: datetime, provider_id: str) -> bool:
        return self._leave_sending(message_id, now, status=_S.SENT.value, sent_at=now,
                                   provider_message_id=provider_id, last_error=None)

    def failed(self, message_id: int, now: datetime, reason: str) -> bool:
        return self._leave_sending(message_id, now, status=_S.FAILED.value, last_error=reason)

    def withheld(self, message_id: int, now: datetime, status: MessageStatus,
                 reason: str) -> bool:
        """Not sent after all: suppressed (address) or cancelled (the flow ended)."""
        return self._leave_sending(message_id, now, status=status.value, last_error=reason)

    def later(self, message_id: int, now: datetime, due: datetime, reason: str) -> bool:
        """Back to scheduled for ``due`` (quiet hours at send time, a retry)."""
        return self._leave_sending(message_id, now, status=_S.SCHEDULED.value, due_at=due,
                                   last_error=reason)

    def touch(self, message: object, kind: str, now: datetime, **data: object) -> None:
        """Record ``kind`` (email_sent, email_failed, …) on the customer's timeline, once."""
        self.conn.execute(Touchpoint.__table__.insert().values(
            customer_id=message.customer_id, kind=kind, channel="email",  # type: ignore[attr-defined]
            occurred_at=now, recorded_at=now, message_id=message.id,  # type: ignore[attr-defined]
            source_key=f"{kind}:{message.id}",  # type: ignore[attr-defined]
            data={"flow": message.flow, "step": message.step,  # type: ignore[attr-defined]
                  "template": message.template, **data}))  # type: ignore[attr-defined]

