"""The scheduler's campaign job: start the campaigns that are due, send the A/B test's winner
to the rest of the audience when it is due (:mod:`lifecycle.campaigns.winner`; a paused
campaign's waits), mark finished ones sent.

Each due campaign starts in a transaction of its own (:meth:`Campaigns.start`), so one that
cannot start — its stored spec no longer valid: a template or a segment removed since —
does not hold up the others: it is paused with the problem in its history, for a manager to
see on its page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from lifecycle.app import App
from lifecycle.campaigns.audience import Rules
from lifecycle.campaigns.model import Campaign, CampaignChange, CampaignStatus
from lifecycle.campaigns.service import Campaigns
from lifecycle.campaigns.spec import CampaignSpec, parse_spec
from lifecycle.campaigns.winner import release_winner
from lifecycle.flows.definitions import Context
from lifecycle.models import Message, MessageStatus
from lifecycle.yamlfile import InvalidFile, Located

log = logging.getLogger(__name__)

#: Campaigns started by one run of the job at most (the rest on the next tick).
STARTS_PER_RUN = 5


def rules_of(app: App) -> Rules:
    """The policies and settings that decide who of an audience is left out."""
    from lifecycle.flows.service import policies_of

    policies = policies_of(app)
    window = policies.cap_window
    if not hasattr(window, "total_seconds"):  # months or years: from now
        now = app.clock.now()
        window = (now + window) - now
    return Rules(policies.cap, window, policies.one_per_day, policies.quiet,
                 app.settings.timezone, app.settings.currency)


def context_of(app: App) -> Context:
    """The templates and segments a campaign may name: those in force (as for flows)."""
    from lifecycle.flows.service import configuration

    found = configuration(app)
    return Context.from_folders(app.settings.templates_dir, set(found.segments))


def spec_of(row: Any, context: Context) -> CampaignSpec:
    """The stored campaign, parsed again (the templates and segments it names may be gone)."""
    return parse_spec(Located(f"campaign {row.name}", row.spec, {}), row.name, context)


def tick(app: App) -> int:
    """Start what is due, finish what is settled; the campaigns started."""
    now = app.clock.now()
    started = 0
    with app.engine.connect() as conn:
        due = conn.execute(select(Campaign.__table__).where(
            Campaign.status == CampaignStatus.SCHEDULED.value, Campaign.starts_at <= now)
            .order_by(Campaign.starts_at, Campaign.id).limit(STARTS_PER_RUN)).all()
    if due:
        context, rules = context_of(app), rules_of(app)
        for row in due:
            try:
                spec = spec_of(row, context)
            except InvalidFile as exc:
                _cannot_start(app, row, exc)
                continue
            def start(row: Any = row, spec: CampaignSpec = spec) -> bool:
                with app.engine.begin() as conn:
                    notify = app.settings.offer_webhook_url is not None
                    return Campaigns(conn, notify).start(row, spec, rules, now) is not None

            started += bool(_apart(row.name, "start", start))
    release_winners(app, now)
    with app.engine.begin() as conn:
        Campaigns(conn).finish_settled(now)
        Campaigns(conn).withdraw_late(now)
    return started


def release_winners(app: App, now: datetime) -> int:
    """Send the winner of each sending campaign whose A/B test is due, each in a transaction
    of its own; how many were released."""
    with app.engine.connect() as conn:
        due = conn.execute(select(Campaign.__table__).where(
            Campaign.status == CampaignStatus.SENDING.value, Campaign.winner.is_(None),
            Campaign.winner_due_at <= now).order_by(Campaign.winner_due_at, Campaign.id)
            .limit(STARTS_PER_RUN)).all()
    if not due:
        return 0
    context, rules = context_of(app), rules_of(app)
    window = timedelta(days=app.settings.attribution_days)
    released = 0
    for row in due:
        try:
            spec = spec_of(row, context)
        except InvalidFile as exc:
            problems = "; ".join(p.message for p in exc.problems)
            log.error("Campaign %s cannot send its A/B test's winner: %s. Put back what it "
                      "names: the winner waits until then.", row.name, problems)
            continue
        def release(row: Any = row, spec: CampaignSpec = spec) -> bool:
            with app.engine.begin() as conn:
                if conn.execute(select(Message.id).where(
                        Message.campaign_id == row.id,
                        Message.status == MessageStatus.SENT.value).limit(1)).first() is None:
                    return False  # no test mail has gone yet: a winner now would be a guess
                return release_winner(
                    conn, row, spec, rules, now, window=window,
                    notify_offers=app.settings.offer_webhook_url is not None) is not None

        released += bool(_apart(row.name, "send its A/B test's winner", release))
    return released


def _apart(name: str, what: str, work: Callable[[], Any]) -> Any:
    """``work()`` for one campaign; a failure of its own is logged and the others go on (the
    next tick tries it again).  An outage of the database goes up to the scheduler, which
    reports it once."""
    try:
        return work()
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        log.exception("Campaign %s could not %s; the other campaigns go on, and the next tick "
                      "tries again.", name, what)
        return None


def _cannot_start(app: App, row: Any, exc: InvalidFile) -> None:
    now = app.clock.now()
    problems = "; ".join(p.message for p in exc.problems)
    with app.engine.begin() as conn:
        if conn.execute(update(Campaign).where(
                Campaign.id == row.id, Campaign.status == CampaignStatus.SCHEDULED.value)
                .values(status=CampaignStatus.PAUSED.value, paused_from="scheduled",
                        updated_at=now)).rowcount:
            conn.execute(CampaignChange.__table__.insert().values(
                campaign_id=row.id, action="pause", status=CampaignStatus.PAUSED.value,
                changed_by="scheduler", changed_at=now,
                detail=f"it cannot start: {problems}"))
            log.error("Campaign %s cannot start and was paused: %s. Fix it and resume it.",
                      row.name, problems)
