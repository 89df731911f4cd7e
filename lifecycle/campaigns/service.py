"""Campaigns' life: every status change goes through :class:`Campaigns`.

::

    draft ──schedule──▶ scheduled ──(starts_at: the scheduler)──▶ sending ──(all settled)──▶ sent
      │                   │    ▲                                    │   ▲
      │                   pause resume                            pause resume
      │                   ▼    │                                    ▼   │
      └──────cancel─────▶ cancelled ◀──────────cancel────────────── paused

**The audience is fixed when the campaign starts**: the scheduler's tick that finds it due
moves it ``scheduled`` → ``sending`` with a conditional update (one scheduler wins, however
many run), and in the same transaction writes the audience (``campaign_members``) and every
outbox row (:mod:`lifecycle.campaigns.audience`).  Customers who join a segment later are not
added; those who leave it, unsubscribe or are suppressed before their mail goes are withheld
by the send-time checks.  A crash before the commit leaves the campaign ``scheduled`` and
nothing written; after it, everything is there.

**Pause** moves the campaign's ``scheduled`` and ``queued`` mails to ``paused`` (a mail a
worker already claimed, ``sending``, finishes: the claim and the pause are conditional
updates of the same row, one of them wins).  **Resume** moves back only the mails the pause
held (``last_error`` :data:`HELD`; a mail support staff paused stays paused), due from now at
the campaign's rate.  **Cancel** withdraws every mail not sent (``cancelled``).  A campaign is
``sent`` once none of its mails is waiting or on its way.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, insert, select, update

from lifecycle.campaigns import audience
from lifecycle.campaigns.audience import Rules
from lifecycle.campaigns.model import Campaign, CampaignChange, CampaignStatus
from lifecycle.campaigns.spec import CampaignSpec, per_hour_for
from lifecycle.mail.outbox import CAMPAIGN_HELD
from lifecycle.models import Message, MessageStatus
from lifecycle.timeutil import as_utc

log = logging.getLogger(__name__)

_S = CampaignStatus
#: ``last_error`` of a mail a campaign's pause holds (resume releases only these).
HELD = CAMPAIGN_HELD
CANCELLED = "the campaign was cancelled"
#: Statuses of a mail still waiting or on its way.
#: How long after a cancel the scheduler still withdraws a mail of the campaign that a worker
#: held at the cancel and put back: far beyond a send lease and the retries of one attempt.
LATE_WINDOW = timedelta(days=1)
UNSETTLED = (MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value,
             MessageStatus.SENDING.value, MessageStatus.PAUSED.value)


def _utc_words(moment: datetime) -> str:
    """A moment as the history shows it: ``2026-05-01 08:00 UTC``."""
    return f"{as_utc(moment):%Y-%m-%d %H:%M} UTC"


class CampaignError(ValueError):
    """What a manager asked cannot be done (in words for them)."""


class Campaigns:
    """Owns every status change of ``campaigns`` rows; methods run in ``conn``'s transaction
    and record who did what in ``campaign_changes``."""

    def __init__(self, conn: Connection, notify_offers: bool = False) -> None:
        self.conn = conn
        #: Whether offer codes are announced to the shop (LIFECYCLE_OFFER_WEBHOOK_URL set).
        self.notify_offers = notify_offers

    # -- reading -------------------------------------------------------------
    def get(self, name: str) -> Any:
        row = self.conn.execute(select(Campaign.__table__).where(Campaign.name == name)).first()
        if row is None:
            raise CampaignError(f"there is no campaign {name!r}")
        return row

    def _record(self, row: Any, action: str, status: str, by: str, now: datetime,
                detail: str | None = None) -> None:
        self.conn.execute(insert(CampaignChange).values(
            campaign_id=row.id, action=action, status=status, changed_by=by, changed_at=now,
            detail=detail))

    def _move(self, row: Any, start: tuple[str, ...], end: str, now: datetime,
              **values: object) -> bool:
        """The conditional update of the campaign from one of ``start`` to ``end``."""
        return self.conn.execute(update(Campaign).where(
            Campaign.id == row.id, Campaign.status.in_(start)).values(
            status=end, updated_at=now, **values)).rowcount == 1

    # -- a manager's actions -------------------------------------------------
    def create(self, spec: CampaignSpec, raw: dict[str, Any], by: str, source: str,
               now: datetime) -> int:
        """A new draft (its name must be free); its id."""
        taken = self.conn.execute(select(Campaign.id).where(Campaign.name == spec.name)).first()
        if taken is not None:
            raise CampaignError(f"a campaign named {spec.name!r} exists already")
        cid = self.conn.execute(insert(Campaign).values(
            name=spec.name, spec=raw, status=_S.DRAFT.value, source=source, created_by=by,
            created_at=now, updated_at=now).returning(Campaign.id)).scalar_one()
        self._record(self.get(spec.name), "create", _S.DRAFT.value, by, now)
        return int(cid)

    def edit(self, name: str, raw: dict[str, Any], by: str, now: datetime) -> None:
        """Change the spec of a draft, or of a campaign paused before it started (as one the
        scheduler could not start is): once started, what it sends stays as it was."""
        row = self.get(name)
        changed = self.conn.execute(update(Campaign).where(
            Campaign.id == row.id, Campaign.started_at.is_(None),
            Campaign.status.in_((_S.DRAFT.value, _S.PAUSED.value))).values(
            spec=raw, updated_at=now)).rowcount == 1
        if not changed:
            raise CampaignError(f"the campaign {name!r} is {row.status}: only a draft or a "
                                "campaign paused before its start can be changed")
        self._record(row, "edit", row.status, by, now)

    def schedule(self, name: str, spec: CampaignSpec, by: str, now: datetime) -> datetime:
        """Draft → scheduled, to start at the schedule's moment (now for ``now`` and
        ``local_time``); when it starts."""
        row = self.get(name)
        starts = spec.schedule.at if spec.schedule.kind == "at" else now
        assert starts is not None
        if spec.schedule.kind == "at" and starts < now - timedelta(minutes=1):
            raise CampaignError(f"the campaign is to start at {starts:%Y-%m-%d %H:%M} UTC, "
                                "which has passed: change its schedule")
        if not self._move(row, (_S.DRAFT.value,), _S.SCHEDULED.value, now, starts_at=starts):
            raise CampaignError(f"the campaign {name!r} is {row.status}: only a draft can be "
                                "scheduled")
        self._record(row, "schedule", _S.SCHEDULED.value, by, now,
                     f"starts {_utc_words(starts)}")
        return starts

    def pause(self, name: str, by: str, now: datetime) -> int:
        """Hold a scheduled or sending campaign; how many of its mails now wait."""
        row = self.get(name)
        # paused_from is the status the update finds (SET uses the row it changes): a pause
        # that waited for the scheduler's start to commit records "sending", not the
        # "scheduled" read before
        if not self._move(row, (_S.SCHEDULED.value, _S.SENDING.value), _S.PAUSED.value, now,
                          paused_from=Campaign.status):
            raise CampaignError(f"the campaign {name!r} is {row.status}: only a scheduled or "
                                "sending campaign can be paused")
        held = self.conn.execute(update(Message).where(
            Message.campaign_id == row.id,
            Message.status.in_((MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value))
        ).values(status=MessageStatus.PAUSED.value, last_error=HELD, lease_expires_at=None,
                 updated_at=now)).rowcount
        self._record(row, "pause", _S.PAUSED.value, by, now, f"{held} mails held")
        log.info("Campaign %s was paused by %s: %d mails wait.", name, by, held)
        return int(held)

    def resume(self, name: str, spec: CampaignSpec, by: str, now: datetime) -> int:
        """Go on where the pause held it: the held mails due from now, at the campaign's
        rate; how many were released."""
        row = self.get(name)
        # back to scheduled only if it never started (whatever paused_from says), else sending
        back = self.conn.execute(update(Campaign).where(
            Campaign.id == row.id, Campaign.status == _S.PAUSED.value).values(
            status=case((Campaign.started_at.is_(None), _S.SCHEDULED.value),
                        else_=_S.SENDING.value), paused_from=None, updated_at=now)
            .returning(Campaign.status)).scalar()
        if back is None:
            raise CampaignError(f"the campaign {name!r} is {row.status}: only a paused "
                                "campaign can be resumed")
        released = _release_held(self.conn, row.id, spec, now, row.audience_size or 0)
        self._record(row, "resume", back, by, now, f"{released} mails released")
        log.info("Campaign %s was resumed by %s: %d mails go on.", name, by, released)
        return released

    def cancel(self, name: str, by: str, now: datetime) -> int:
        """Withdraw the campaign's unsent mails (sent ones stay sent); how many."""
        row = self.get(name)
        if not self._move(row, (_S.DRAFT.value, _S.SCHEDULED.value, _S.SENDING.value,
                                _S.PAUSED.value), _S.CANCELLED.value, now, finished_at=now):
            raise CampaignError(f"the campaign {name!r} is {row.status} already")
        withdrawn = self._withdraw(Message.campaign_id == row.id, now)
        self._record(row, "cancel", _S.CANCELLED.value, by, now, f"{withdrawn} mails withdrawn")
        log.info("Campaign %s was cancelled by %s: %d unsent mails withdrawn.", name, by,
                 withdrawn)
        return int(withdrawn)

    def _withdraw(self, which: Any, now: datetime) -> int:
        """Cancel the unsent mails ``which`` selects (those not on their way): how many."""
        return int(self.conn.execute(update(Message).where(
            which, Message.status.in_((MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value,
                                       MessageStatus.PAUSED.value))
        ).values(status=MessageStatus.CANCELLED.value, last_error=CANCELLED,
                 lease_expires_at=None, updated_at=now)).rowcount)

    def withdraw_late(self, now: datetime) -> int:
        """Cancel the mails of campaigns cancelled in the last :data:`LATE_WINDOW` that came
        back after the cancel: a mail a worker held at that moment and then put back or left to
        be retried (its lease ran out, SendGrid asked for a retry) is ``scheduled`` again, and
        would otherwise wait for ever, listed as upcoming.  How many."""
        recent = select(Campaign.id).where(Campaign.status == _S.CANCELLED.value,
                                           Campaign.finished_at >= now - LATE_WINDOW)
        ids = list(self.conn.execute(recent).scalars())
        if not ids:
            return 0
        withdrawn = self._withdraw(Message.campaign_id.in_(ids), now)
        if withdrawn:
            log.info("%d mails of cancelled campaigns came back after the cancel (a worker held "
                     "them); they are withdrawn too.", withdrawn)
        return withdrawn

    # -- the scheduler -------------------------------------------------------
    def start(self, row: Any, spec: CampaignSpec, rules: Rules, now: datetime) -> int | None:
        """Start a due scheduled campaign: fix its audience and write its outbox rows, in
        this transaction; the mails written, or None if another scheduler started it."""
        if not self._move(row, (_S.SCHEDULED.value,), _S.SENDING.value, now, started_at=now):
            return None
        start = row.starts_at or now
        size, to_mail = audience.fix_audience(self.conn, row.id, spec, now, rules)
        group = "test" if spec.ab_test is not None else "all"
        written = audience.write_mails(self.conn, row.id, spec.name, spec, now, now, rules,
                                       group, per_hour_for(spec, to_mail))
        if spec.send.offer is not None:
            issue_campaign_offers(self.conn, row.id, spec, now, self.notify_offers)
        winner_due = now + spec.ab_test.after if spec.ab_test is not None else None
        self.conn.execute(update(Campaign).where(Campaign.id == row.id).values(
            audience_size=size, mailed=written, winner_due_at=winner_due))
        self._record(row, "start", _S.SENDING.value, "scheduler", now,
                     f"audience {size}, {written} mails written"
                     f" (scheduled for {_utc_words(start)})")
        log.info("Campaign %s started: audience %d customers fixed, %d mails written, %d left "
                 "out.", spec.name, size, written, size - to_mail)
        return written

    def finish_settled(self, now: datetime) -> list[str]:
        """Mark ``sent`` each sending campaign none of whose mails waits or is on its way
        (and whose A/B winner, if any, went out); their names."""
        unsettled = select(Message.id).where(Message.campaign_id == Campaign.id,
                                             Message.status.in_(UNSETTLED)).exists()
        done = self.conn.execute(update(Campaign).where(
            Campaign.status == _S.SENDING.value, Campaign.winner_due_at.is_(None),
            ~unsettled).values(status=_S.SENT.value, finished_at=now, updated_at=now)
            .returning(Campaign.id, Campaign.name)).all()
        for cid, name in done:
            self.conn.execute(insert(CampaignChange).values(
                campaign_id=cid, action="finish", status=_S.SENT.value, changed_by="scheduler",
                changed_at=now, detail=None))
            log.info("Campaign %s is sent: every mail of it is settled.", name)
        return [name for _cid, name in done]


def issue_campaign_offers(conn: Connection, campaign_id: int, spec: CampaignSpec,
                          now: datetime, notify: bool) -> int:
    """A stored code for each mail of the campaign written without one yet (at the start, and
    for the rest once an A/B winner is known): :func:`lifecycle.offers.service.issue_many`,
    expiring ``offer.valid`` after the mail is due; how many."""
    from lifecycle.models import Customer, OfferCode
    from lifecycle.offers.service import issue_many

    assert spec.send.offer is not None
    m, c = Message.__table__, Customer.__table__
    mails = conn.execute(select(m.c.id, m.c.customer_id, m.c.due_at, m.c.context,
                                c.c.external_id, c.c.email).join(c, c.c.id == m.c.customer_id)
                         .where(m.c.campaign_id == campaign_id,
                                ~select(OfferCode.id).where(
                                    OfferCode.message_id == m.c.id).exists())
                         .order_by(m.c.id)).all()
    return issue_many(conn, spec.send.offer, mails, campaign=spec.name, now=now, notify=notify)


def _release_held(conn: Connection, campaign_id: int, spec: CampaignSpec, now: datetime,
                  audience_size: int) -> int:
    """The mails a pause held back to ``scheduled``, each due at the later of its own due time
    (a customer's local time stays theirs) and its place in a spread from now at the
    campaign's rate (in due order); the quiet hours are checked again at send time."""
    per_hour = per_hour_for(spec, audience_size)
    held = and_(Message.campaign_id == campaign_id,
                Message.status == MessageStatus.PAUSED.value, Message.last_error == HELD)
    rows = conn.execute(select(Message.id, Message.due_at).where(held)
                        .order_by(Message.due_at, Message.id)).all()
    step = timedelta(seconds=3600.0 / per_hour) if per_hour else timedelta(0)
    release = update(Message).where(
        Message.id == bindparam("m_id"), Message.status == MessageStatus.PAUSED.value).values(
        status=MessageStatus.SCHEDULED.value, last_error=None, due_at=bindparam("due"),
        updated_at=now)
    for start in range(0, len(rows), 1000):
        conn.execute(release, [
            {"m_id": r.id, "due": max(as_utc(r.due_at), now + step * (start + i))}
            for i, r in enumerate(rows[start:start + 1000])])
    return len(rows)
