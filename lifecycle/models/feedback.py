"""NPS votes held before they count (see :mod:`lifecycle.feedback`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin

#: Where a vote came from: ``mail`` — a score link of the mail (its page's auto-submit or
#: button); ``page`` — the "choose again" buttons of the thank-you page.
VOTE_SOURCES = ("mail", "page")


class NpsVote(IdMixin, Base):
    """One posted NPS score, held until its group of votes has been quiet for
    ``LIFECYCLE_NPS_HOLD_SECONDS``; then it becomes the answer (a ``feedback`` touchpoint) or
    is voided (a ``feedback_voided`` touchpoint), and the row is deleted."""

    __tablename__ = "nps_votes"
    __table_args__ = (
        CheckConstraint("score BETWEEN 0 AND 10", name="score"),
        CheckConstraint(f"via IN ({', '.join(repr(s) for s in VOTE_SOURCES)})", name="via"),
        Index(None, "answer_key", "received_at"),
    )

    customer_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("customers.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("messages.id"))
    #: The ``source_key`` of the answer's touchpoint (``feedback:<mail id>``): one per mail.
    answer_key: Mapped[str] = mapped_column(String(255))
    score: Mapped[int] = mapped_column(SmallInteger)
    via: Mapped[str] = mapped_column(String(10))
    received_at: Mapped[datetime] = mapped_column(index=True)
    #: The browser's User-Agent (cut short), kept in the trace of a voided burst.
    agent: Mapped[str | None] = mapped_column(String(200))
    #: A comment posted while the vote was held; it goes with the answer.
    comment: Mapped[str | None] = mapped_column(Text)
