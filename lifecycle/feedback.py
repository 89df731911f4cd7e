"""NPS answers from the feedback mail: one answer per mail, the latest click wins.

The feedback mail links eleven scores, ``/f/<token>?score=0`` … ``10``.
A click records a ``feedback`` touchpoint (source key ``feedback:<mail>``):
clicking another score later replaces the score of the same touchpoint, so
the timeline shows one answer per mail and the segments read the latest.
The customer's segments are refreshed at once, in the same transaction, so a
new promoter enters the advocacy segment (and its flow) the same day instead
of after the nightly refresh.  An optional comment is kept on the same
touchpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from lifecycle.clock import Clock
from lifecycle.models import Touchpoint
from lifecycle.segments.compute import refresh_customer
from lifecycle.segments.definitions import Definitions

SCORES = range(11)
MAX_COMMENT = 4000


def _key(customer_id: int, message_id: int | None) -> str:
    return f"feedback:{message_id}" if message_id else f"feedback:customer:{customer_id}"


def record_answer(conn: Connection, customer: Any, message_id: int | None, score: int,
                  now: datetime, defs: Definitions | None,
                  clock: Clock | None = None) -> tuple[list[str], list[str]]:
    """Keep ``score`` as the customer's answer to mail ``message_id``; refresh their segments
    (``defs`` None: not now); the segments entered and left.  ``clock``: read again once the
    refresh holds its locks, so a refresh that waited for the nightly one never ends a stay
    before it began (see :func:`refresh_customers`)."""
    if score not in SCORES:
        raise ValueError(f"a score is a whole number from 0 to 10, not {score!r}")
    found = _answer(conn, customer, message_id)
    if found is None:
        conn.execute(insert(Touchpoint).values(
            customer_id=customer.id, kind="feedback", channel="email", occurred_at=now,
            recorded_at=now, message_id=message_id, source_key=_key(customer.id, message_id),
            data={"score": score, "question": "nps"}))
    elif found.data.get("score") != score:
        conn.execute(update(Touchpoint).where(Touchpoint.id == found.id).values(
            occurred_at=now, recorded_at=now,
            data={**found.data, "score": score, "changed_from": found.data.get("score")}))
    if defs is None:
        return [], []
    return refresh_customer(conn, defs, customer.id, now, now, clock=clock)


def add_comment(conn: Connection, customer: Any, message_id: int | None, comment: str,
                now: datetime) -> bool:
    """Keep ``comment`` with the answer to mail ``message_id``; False if there is no answer."""
    found = _answer(conn, customer, message_id)
    if found is None:
        return False
    conn.execute(update(Touchpoint).where(Touchpoint.id == found.id).values(
        recorded_at=now, data={**found.data, "comment": comment.strip()[:MAX_COMMENT]}))
    return True


def answer_of(conn: Connection, customer: Any, message_id: int | None) -> dict[str, Any] | None:
    """The answer (score, comment) kept for mail ``message_id``, if any."""
    found = _answer(conn, customer, message_id)
    return None if found is None else dict(found.data)


def _answer(conn: Connection, customer: Any, message_id: int | None) -> Any | None:
    """The ``feedback`` touchpoint (id, data) of mail ``message_id``, if there is one."""
    return conn.execute(select(Touchpoint.id, Touchpoint.data).where(
        Touchpoint.source_key == _key(customer.id, message_id))).first()
