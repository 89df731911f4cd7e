"""The ``offers`` table (every code a mail handed out) and ``offer_webhooks`` (its outbox to
the shop).  Registered on :data:`lifecycle.models.Base.metadata` by :mod:`lifecycle.models`."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class OfferKind(enum.StrEnum):
    PERCENT = "percent"
    FIXED = "fixed"
    FREE_SHIPPING = "free_shipping"


class OfferCode(IdMixin, Base):
    """One code a mail hands out, written with the mail's outbox row (never at render time)."""

    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint(f"kind IN ({', '.join(repr(k.value) for k in OfferKind)})",
                        name="kind"),
        Index(None, "flow", "step"),
        Index(None, "created_at"),
        Index(None, "redeemed_at"),
    )

    #: ``<PREFIX>-XXXX-XXXX`` in capitals, unique across the shop.
    code: Mapped[str] = mapped_column(String(40), unique=True)
    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"), index=True)
    flow: Mapped[str | None] = mapped_column(String(100))
    step: Mapped[str | None] = mapped_column(String(100))
    #: The mail that hands the code out (one offer per mail).
    message_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("messages.id"),
                                                   unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: Percent off (``15``) or the amount off (``5.00``, in ``currency``); None for free shipping.
    value: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    redeemed_at: Mapped[datetime | None]
    #: The shop's order id (``orders.external_id``) of the first order that used the code.
    redeemed_order_id: Mapped[str | None] = mapped_column(String(255))


class WebhookStatus(enum.StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or being posted, under a lease)
    DELIVERED = "delivered"  # the shop answered 2xx
    FAILED = "failed"  # given up (the horizon passed or the shop refused for good)


class OfferWebhook(IdMixin, Base):
    """One webhook to the shop, written with its offer and posted by a worker."""

    __tablename__ = "offer_webhooks"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in WebhookStatus)})",
                        name="status"),
        Index(None, "status", "next_attempt_at"),
    )

    offer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("offers.id"), index=True)
    #: The Standard Webhooks ``type``, e.g. ``offer.created``.
    event: Mapped[str] = mapped_column(String(40))
    #: The ``webhook-id`` header: the same on every attempt, so the shop can drop repeats.
    webhook_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: The body, fixed when the row is written (every attempt posts the same bytes).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    #: When delivery was given up (``status`` failed).
    failed_at: Mapped[datetime | None]
