"""Staff users, API keys and process heartbeats."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class StaffRole(enum.StrEnum):
    SUPPORT = "support"  # read customers and timelines, pause mails, add notes
    MANAGER = "manager"  # also flows, segments, previews, test sends
    ADMIN = "admin"  # also staff and API keys


class StaffUser(IdMixin, Base):
    __tablename__ = "staff_users"
    __table_args__ = (
        CheckConstraint(f"role IN ({', '.join(repr(r.value) for r in StaffRole)})", name="role"),
    )

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    #: Raised by logout, a password change and deactivation; a session cookie carries the
    #: value it was issued under and is refused once they differ.
    session_epoch: Mapped[int] = mapped_column(default=0, server_default="0")


class LoginThrottle(Base):
    """Recent login attempts of one account name or one client address (see
    :mod:`lifecycle.throttle`): in the database, so every web process counts them."""

    __tablename__ = "login_throttle"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "account" / "address"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    blocks: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime]
    blocked_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(index=True)


class ApiKey(IdMixin, Base):
    """An ingest API key. Only a hash is stored; the prefix finds the row."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_by_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("staff_users.id"))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ProcessHeartbeat(Base):
    """Last sign of life of each scheduler and worker process (shown on /healthz)."""

    __tablename__ = "process_heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    info: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
