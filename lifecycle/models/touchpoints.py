"""Touchpoints (the customer's timeline) and suppressions (who must not be mailed)."""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class Touchpoint(IdMixin, Base):
    """One thing that happened between the shop and a customer."""

    __tablename__ = "touchpoints"
    __table_args__ = (
        Index(None, "customer_id", "occurred_at"),
        Index(None, "kind", "occurred_at"),
        Index(None, "txid", "id"),
    )

    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"))
    #: order, email_sent, email_delivered, email_opened, replied, feedback, support, …
    kind: Mapped[str] = mapped_column(String(40))
    #: email, shop, web, support, system
    channel: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    message_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("messages.id"), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: Identity of the source event (e.g. ``sendgrid:<sg_event_id>``) so a
    #: redelivered event lands once.
    source_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    #: PostgreSQL: the id of the transaction that wrote the row (its default,
    #: ``pg_current_xact_id()``); flow triggers read in this order (see
    #: :mod:`lifecycle.flows.triggers`).  Empty on SQLite and for rows before revision 0008.
    txid: Mapped[int | None] = mapped_column(BigInteger)


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    HARD_BOUNCE = "hard_bounce"
    SPAM_REPORT = "spam_report"
    INVALID = "invalid"
    MANUAL = "manual"
    ERASED = "erased"


def email_hash(email: str) -> str:
    """SHA-256 of the normalised address: suppressions outlive erased customers."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


class Suppression(IdMixin, Base):
    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("email_hash", "scope"),
        CheckConstraint(f"reason IN ({', '.join(repr(s.value) for s in SuppressionReason)})",
                        name="reason"),
    )

    email_hash: Mapped[str] = mapped_column(String(64))
    #: The plain address, dropped when the person is erased.
    email: Mapped[str | None] = mapped_column(String(320))
    #: ``all`` for every mail, ``marketing``, or ``category:<name>``.
    scope: Mapped[str] = mapped_column(String(100), default="all")
    reason: Mapped[str] = mapped_column(String(20))
    #: Where it came from: sendgrid, unsubscribe-link, staff:<id>, import.
    source: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
