"""Segment memberships and flow enrollments: where each customer stands."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class SegmentMembership(IdMixin, Base):
    """One stay of a customer in a segment: open while ``exited_at`` is NULL."""

    __tablename__ = "segment_memberships"
    __table_args__ = (
        # At most one open stay per customer and segment.
        Index("uq_segment_memberships_open", "customer_id", "segment", unique=True,
              sqlite_where=text("exited_at IS NULL"),
              postgresql_where=text("exited_at IS NULL")),
        Index(None, "segment", "exited_at"),
    )

    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"))
    segment: Mapped[str] = mapped_column(String(100))
    entered_at: Mapped[datetime]
    exited_at: Mapped[datetime | None]
    #: Why the customer is in: the scores or values that put them there.
    reason: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"
    FAILED = "failed"


class FlowEnrollment(IdMixin, Base):
    """A customer's passage through one flow."""

    __tablename__ = "flow_enrollments"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in EnrollmentStatus)})",
                        name="status"),
        Index(None, "status", "next_run_at"),
        Index(None, "customer_id", "flow"),
    )

    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"))
    flow: Mapped[str] = mapped_column(String(100))
    #: Unique per re-entry policy (once ever, once per period, every trigger),
    #: so a second scheduler cannot enroll the same customer twice.
    entry_key: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE.value)
    current_step: Mapped[str | None] = mapped_column(String(100))
    next_run_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    exit_reason: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    #: What triggered the enrollment (order id, segment, event) and step state.
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class SegmentCalibration(IdMixin, Base):
    """Population cut points from a full refresh, used to score customers until the next.

    ``cutoffs`` holds the four quintile cut points of recency (days since the
    last order, negated so that higher is better), frequency and monetary
    value, and the VIP spend threshold.
    """

    __tablename__ = "segment_calibrations"

    as_of: Mapped[datetime]
    computed_at: Mapped[datetime]
    customers: Mapped[int]
    cutoffs: Mapped[dict[str, Any]] = mapped_column(JSONType)


class TriggerCursor(Base):
    """How far the flow engine has read a stream of events: the last touchpoint read, and on
    PostgreSQL the transaction that wrote it (empty until the rows without one are read)."""

    __tablename__ = "flow_trigger_cursors"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigIntPK)
    last_txid: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class FlowStatusChange(IdMixin, Base):
    """A manager's switch of a flow's status on its page, kept as history: the newest row of a
    flow is in force.  ``status`` NULL means "follow the file" again (:mod:`lifecycle.flows.
    states`); ``on_pause`` (``wait`` or ``exit``) says what became of the enrolled customers."""

    __tablename__ = "flow_status_changes"
    __table_args__ = (
        CheckConstraint("status IS NULL OR status IN ('draft', 'live', 'paused')",
                        name="status"),
        CheckConstraint("on_pause IS NULL OR on_pause IN ('wait', 'exit')", name="on_pause"),
        Index(None, "flow", "id"),
    )

    flow: Mapped[str] = mapped_column(String(100))
    status: Mapped[str | None] = mapped_column(String(16))
    on_pause: Mapped[str | None] = mapped_column(String(8))
    #: The manager's email address.
    changed_by: Mapped[str] = mapped_column(String(255))
    changed_at: Mapped[datetime]


class ConfigSnapshot(Base):
    """The last valid text of a configuration file (``segments`` / ``policies`` / ``flow``
    and its name), in force while the file on disk is invalid (:mod:`lifecycle.flows.
    snapshots`)."""

    __tablename__ = "config_snapshots"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    #: Hex SHA-256 of ``text`` (UTF-8).
    sha256: Mapped[str] = mapped_column(String(64))
    saved_at: Mapped[datetime]
