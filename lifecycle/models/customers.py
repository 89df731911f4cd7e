"""Customers and their orders: the purchase history everything else is computed from."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class OrderStatus(enum.StrEnum):
    """Only ``completed`` orders count towards purchase metrics."""

    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class Customer(IdMixin, Base):
    __tablename__ = "customers"

    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    #: IANA zone name; None means "the shop's zone" (LIFECYCLE_TIMEZONE).
    timezone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(35))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    marketing_consent: Mapped[bool] = mapped_column(default=True)
    #: When the customer became a customer at the shop (not when imported).
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    orders: Mapped[list[Order]] = relationship(back_populates="customer", lazy="raise")


class Order(IdMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in OrderStatus)})",
                        name="status"),
        CheckConstraint("total >= 0", name="total_not_negative"),
        Index(None, "customer_id", "ordered_at"),
    )

    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"))
    ordered_at: Mapped[datetime]
    total: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.COMPLETED.value)
    #: Line items: ``[{"sku", "name", "category", "quantity", "price"}, …]``.
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    customer: Mapped[Customer] = relationship(back_populates="orders", lazy="raise")
