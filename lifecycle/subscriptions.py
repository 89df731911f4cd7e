"""What marketing mail a customer wants: unsubscribe, preferences, resubscribe.

A customer's choices are suppressions of their address (by its hash, so they
outlive an erased customer): scope ``marketing`` for all marketing mail, or
``flow:<name>`` for one marketing flow.  The send-time check of
:mod:`lifecycle.mail.sending` honours both.  Only what the customer chose
themselves (reason ``unsubscribe``) can be lifted here; a hard bounce or a
spam report stays.

Each change lands once on the timeline (``unsubscribed`` / ``resubscribed``):
unsubscribing twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from lifecycle.db import insert_new
from lifecycle.models import Customer, Suppression, SuppressionReason, Touchpoint, email_hash

MARKETING = "marketing"


def flow_scope(flow: str) -> str:
    return f"flow:{flow}"


@dataclass(frozen=True)
class Choice:
    """One thing a customer can opt out of: ``scope`` and how the page names it."""

    scope: str
    label: str


def choices(marketing_flows: dict[str, str]) -> list[Choice]:
    """All marketing mail, then each marketing flow (name -> description)."""
    return [Choice(MARKETING, "All marketing mail: offers, reminders, requests for reviews"),
            *(Choice(flow_scope(name), description or name)
              for name, description in sorted(marketing_flows.items()))]


def customer_of(conn: Connection, customer_id: int) -> Any | None:
    return conn.execute(select(Customer.__table__).where(Customer.id == customer_id)).first()


def opted_out(conn: Connection, customer: Any) -> dict[str, str]:
    """The customer's suppressions: scope -> reason."""
    return dict(conn.execute(select(Suppression.scope, Suppression.reason).where(
        Suppression.email_hash == email_hash(customer.email))).all())


def unsubscribe(conn: Connection, customer: Any, scope: str, now: datetime, *, via: str,
                message_id: int | None = None) -> bool:
    """Stop ``scope`` for ``customer``; False if it was stopped already (nothing changes)."""
    if not insert_new(conn, Suppression.__table__, [{
            "email_hash": email_hash(customer.email), "email": customer.email, "scope": scope,
            "reason": SuppressionReason.UNSUBSCRIBE.value, "source": via, "created_at": now}],
            ("email_hash", "scope"), "id"):
        return False  # stopped already (two clicks at once included)
    _touch(conn, customer, "unsubscribed", scope, via, now, message_id)
    return True


def resubscribe(conn: Connection, customer: Any, scope: str, now: datetime, *, via: str,
                message_id: int | None = None) -> bool:
    """Lift the customer's own unsubscribe of ``scope``; False if there was none."""
    lifted = conn.execute(delete(Suppression).where(
        Suppression.email_hash == email_hash(customer.email), Suppression.scope == scope,
        Suppression.reason == SuppressionReason.UNSUBSCRIBE.value)).rowcount
    if lifted:
        _touch(conn, customer, "resubscribed", scope, via, now, message_id)
    return bool(lifted)


def _touch(conn: Connection, customer: Any, kind: str, scope: str, via: str, now: datetime,
           message_id: int | None) -> None:
    conn.execute(insert(Touchpoint).values(
        customer_id=customer.id, kind=kind, channel="email", occurred_at=now, recorded_at=now,
        message_id=message_id, data={"scope": scope, "via": via}))
