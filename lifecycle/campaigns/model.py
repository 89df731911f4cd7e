"""The tables of campaigns: ``campaigns`` (one row each, its status in force),
``campaign_members`` (the audience, fixed when the campaign starts) and
``campaign_changes`` (every status change: who, when).  Registered on
:data:`lifecycle.models.Base.metadata` by :mod:`lifecycle.models`."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin, JSONType


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"  # being written: nothing is fixed, nobody is mailed
    SCHEDULED = "scheduled"  # waits for starts_at
    SENDING = "sending"  # audience fixed, outbox rows written, mails going out
    PAUSED = "paused"  # its unsent mails wait (before the start: the start waits)
    SENT = "sent"  # every mail settled (sent, failed, withheld)
    CANCELLED = "cancelled"  # its unsent mails withdrawn


class Campaign(IdMixin, Base):
    """A one-off mail to an audience.  ``spec`` is the campaign as written (a file's YAML,
    the web form or the command line: :mod:`lifecycle.campaigns.spec`); the columns beside
    it are what the service fixed on the way (:mod:`lifecycle.campaigns.service`)."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in CampaignStatus)})",
                        name="status"),
        Index(None, "status", "starts_at"),
    )

    name: Mapped[str] = mapped_column(String(100), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT.value)
    #: Where the status was before a pause (``scheduled`` or ``sending``): resume goes back.
    paused_from: Mapped[str | None] = mapped_column(String(16))
    #: When it starts (UTC): the audience is fixed then.  Set when it is scheduled.
    starts_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: When the rest of the audience gets the A/B test's winner (None: no test, or sent).
    winner_due_at: Mapped[datetime | None]
    winner: Mapped[str | None] = mapped_column(String(100))
    #: Customers the audience had when it was fixed, and of them mailed (given outbox rows).
    audience_size: Mapped[int | None]
    mailed: Mapped[int | None]
    #: ``web``, ``cli`` or ``file:<path>``.
    source: Mapped[str] = mapped_column(String(300))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CampaignMember(Base):
    """One customer of a campaign's audience as fixed at its start: the A/B ``grp`` (``all``
    without a test, else ``test`` or ``rest``), the variant they get (None: the rest, until
    the winner is known), and why they were left out (None: they are mailed)."""

    __tablename__ = "campaign_members"
    __table_args__ = (
        CheckConstraint("grp IN ('all', 'test', 'rest')", name="grp"),
        Index(None, "campaign_id", "left_out"),
    )

    campaign_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("campaigns.id"),
                                             primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"),
                                             primary_key=True)
    grp: Mapped[str] = mapped_column(String(8))
    variant: Mapped[str | None] = mapped_column(String(100))
    left_out: Mapped[str | None] = mapped_column(String(100))


class CampaignChange(IdMixin, Base):
    """A change of a campaign's status (or its winner), kept as history."""

    __tablename__ = "campaign_changes"
    __table_args__ = (Index(None, "campaign_id", "id"),)

    campaign_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("campaigns.id"))
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    #: The staff member's email, ``scheduler`` or ``cli``.
    changed_by: Mapped[str] = mapped_column(String(255))
    changed_at: Mapped[datetime]
    detail: Mapped[str | None] = mapped_column(Text)
