"""The outbox: one row per email, written in the transaction that decided to send it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class MessageStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waiting for due_at
    QUEUED = "queued"  # handed to the broker, lease running
    SENDING = "sending"  # claimed by a worker, provider call in flight
    SENT = "sent"  # provider accepted it
    FAILED = "failed"  # given up, reason in last_error
    SUPPRESSED = "suppressed"  # not sent: unsubscribed, bounced, capped
    PAUSED = "paused"  # held by support staff
    CANCELLED = "cancelled"  # withdrawn by staff or because the flow ended


class Message(IdMixin, Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in MessageStatus)})",
                        name="status"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        Index(None, "status", "due_at"),
        Index(None, "customer_id", "created_at"),
        # Set on few mails: indexed only where set, so that the three status changes of every
        # mail do not each add an entry for its NULL (no index of provider_message_id either:
        # events find their mail by our id, which SendGrid hands back).
        Index(None, "resent_at", sqlite_where=text("resent_at IS NOT NULL"),
              postgresql_where=text("resent_at IS NOT NULL")),
        Index(None, "duplicate_at", sqlite_where=text("duplicate_at IS NOT NULL"),
              postgresql_where=text("duplicate_at IS NOT NULL")),
    )

    #: Deterministic key of the decision to send (see lifecycle.keys); unique,
    #: so deciding twice cannot create a second mail.
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"))
    enrollment_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("flow_enrollments.id"), index=True)
    flow: Mapped[str | None] = mapped_column(String(100))
    #: The campaign that decided the mail (:mod:`lifecycle.campaigns`); None for flows.
    campaign_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("campaigns.id"), index=True)
    step: Mapped[str | None] = mapped_column(String(100))
    template: Mapped[str] = mapped_column(String(100))
    variant: Mapped[str | None] = mapped_column(String(50))
    to_email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.SCHEDULED.value)
    due_at: Mapped[datetime]
    #: A queued or sending row whose lease has run out is handed out again.
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None]
    #: The attempt (``attempts`` when it was claimed) SendGrid took, as recorded: from its 202,
    #: or from the event that settled the mail.
    sent_attempt: Mapped[int | None]
    #: When the scheduler queued the mail again because no SendGrid event came for an attempt
    #: whose outcome was unknown (a late event for that attempt is then a duplicate).
    resent_at: Mapped[datetime | None]
    #: When an event for another attempt than ``sent_attempt`` showed SendGrid took it twice.
    duplicate_at: Mapped[datetime | None]
    #: Template variables fixed at decision time (order id, offer code, …).
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: Every send attempt's outcome: ``[{"at", "outcome", "detail"}, …]``.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ProviderEvent(IdMixin, Base):
    """One event the mail provider reported (SendGrid's Event Webhook), kept as received.

    ``event_id`` (SendGrid's ``sg_event_id``) is unique: SendGrid retries a
    batch for a day, and a duplicate is dropped on insert.  ``message_id`` is
    our mail, from the ``custom_args`` we sent; None for mail we do not know.
    """

    __tablename__ = "provider_events"
    __table_args__ = (Index(None, "recorded_at"), Index(None, "email", "event"))

    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("messages.id"), index=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: Our attempt number of the mail (``lifecycle_attempt``); None for mail sent without one.
    attempt: Mapped[int | None]


class MessageContent(Base):
    """A sent mail as it went out: subject, both parts and the extra headers.

    Written in the transaction that marks the mail ``sent`` (so support can open
    exactly what the customer got, whatever the templates say today).  A mail
    settled from the provider's events after a crash has none: its rendering
    was lost with the worker.
    """

    __tablename__ = "message_contents"

    message_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("messages.id"), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
