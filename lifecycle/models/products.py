"""Products seen in order items, how often two of them were bought by the same customer, and
what that suggests to each customer.

All three tables are derived data: the full segment refresh replaces their contents
(see :mod:`lifecycle.recommendations.compute`); nothing else writes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK


class Product(Base):
    """A SKU as its latest completed order line described it."""

    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    #: The unit price of that line, a decimal string in ``currency`` (None if it had none).
    price: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(3))
    url: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    #: Distinct customers with a completed order of it (the best-seller order).
    buyers: Mapped[int]
    #: 1 for the product with the most buyers, and so on (ties by SKU in byte order).
    best_seller: Mapped[int] = mapped_column(index=True)
    last_ordered_at: Mapped[datetime]


class CoPurchase(Base):
    """``customers`` distinct customers bought both ``sku`` and ``other_sku`` (each pair is
    kept both ways round; per ``sku`` only its strongest partners)."""

    __tablename__ = "co_purchases"
    sku: Mapped[str] = mapped_column(Text, primary_key=True)
    other_sku: Mapped[str] = mapped_column(Text, primary_key=True)
    customers: Mapped[int]


class CustomerSuggestion(Base):
    """The products bought most often with what a customer had bought at the last full
    refresh, not among those: ``rank`` 1 first."""

    __tablename__ = "customer_suggestions"

    #: (No foreign key: customers are never deleted — erasure keeps the row — and checking
    #: one for every row the refresh writes cost it a fifth of its time.)
    customer_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    rank: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    sku: Mapped[str] = mapped_column(Text)
    #: The sum of the co-purchase counts of ``sku`` with what the customer had bought.
    score: Mapped[int]
