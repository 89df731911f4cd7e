"""Secrets of this installation, kept with its data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base


class InstanceSecret(Base):
    """A secret made once for the whole installation: ``secret_key`` is the key that signs
    links and sessions when ``LIFECYCLE_SECRET_KEY`` is unset (see :mod:`lifecycle.secret`).
    Every process on the database reads the same row."""

    __tablename__ = "instance_secrets"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
