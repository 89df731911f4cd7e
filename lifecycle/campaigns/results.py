"""Campaign results: what a campaign's mails did, variant by variant, as flow results count.

The cohort is every mail of the campaign (``messages.campaign_id``; a manager's test sends
are not the campaign's).  :func:`campaign_results` counts them with the flows' own
machinery (:func:`lifecycle.results.tally`): decided, sent, failed, skipped, and once per
mail delivered, opened by a person (privacy-proxy opens are not counted), clicked, replied
to, unsubscribed from, bounced and reported as spam; conversions and revenue by last touch
— an order counts once in all of Lifecycle, credited to the customer's latest mail of any
flow or campaign sent or clicked within ``window`` before it — in the reporting currency,
other currencies apart; offer codes redeemed.

An A/B campaign has a row per variant from the start; once the winner is chosen, the rest
of the audience's mails are counted under the winner's row.  :attr:`CampaignResults.daily`
holds mails sent, conversions and revenue per UTC day, from the day the campaign's first
mail was decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from lifecycle.campaigns.model import Campaign
from lifecycle.models import Message, Touchpoint
from lifecycle.results import Day, Row, days_from, tally, total_of
from lifecycle.timeutil import as_utc

#: The columns a campaign's results show, in order, and their headings.
HEADINGS = {
    "decided": "decided", "sent": "sent", "failed": "failed", "skipped": "skipped",
    "delivered": "delivered", "opened": "human opens", "clicked": "clicks",
    "replied": "replies", "unsubscribed": "unsubscribes", "bounced": "bounces",
    "spam_reports": "spam reports", "conversions": "conversions", "redeemed": "redeemed",
}
COLUMNS = tuple(HEADINGS)


@dataclass
class CampaignResults:
    campaign: str
    campaign_id: int
    #: From the first mail decided to the last sent or clicked (None: no mail yet).
    start: datetime | None
    end: datetime | None
    window: timedelta
    #: One per variant (``step`` the template, ``variant`` None without an A/B test).
    rows: list[Row]
    total: Row
    daily: list[Day]
    #: The reporting currency of every ``revenue``.
    currency: str
    #: The A/B test's winner, once chosen.
    winner: str | None = None

    @property
    def has_variants(self) -> bool:
        return any(r.variant for r in self.rows)


def templates_of(spec: Mapping[str, Any]) -> list[str]:
    """The templates of a stored campaign spec (:mod:`lifecycle.campaigns.spec`), in order."""
    send = spec.get("send") if isinstance(spec, Mapping) else None
    if not isinstance(send, Mapping):
        return []
    if isinstance(send.get("template"), str):
        return [send["template"]]
    return [v["template"] for v in send.get("variants") or ()
            if isinstance(v, Mapping) and isinstance(v.get("template"), str)]


def campaign_results(conn: Connection, campaign_id: int, window: timedelta, currency: str,
                     *, now: datetime | None = None) -> CampaignResults:
    """The results of the campaign ``campaign_id`` (see the module doc); revenue in
    ``currency``, other currencies apart.  The daily series runs from the first mail's day
    to the last day with a mail sent or an order credited, or, given ``now``, to ``now``'s
    day (no further than ``window`` after the last mail was sent or clicked)."""
    c, m = Campaign.__table__, Message.__table__
    campaign = conn.execute(select(c.c.name, c.c.spec, c.c.winner).where(
        c.c.id == campaign_id)).one()
    cohort = m.c.campaign_id == campaign_id
    templates = templates_of(campaign.spec)
    ab = len(templates) > 1
    rows: dict[tuple[str, str | None], Row] = {}

    def row(template: str, variant: str | None) -> Row:
        if (template, variant) not in rows:
            rows[template, variant] = Row(template, variant)
        return rows[template, variant]

    for template in templates:
        row(template, template if ab else None)
    start, end = span(conn, cohort)
    daily: list[Day] = []
    if start is not None and end is not None:
        found = tally(conn, cohort, (m.c.template, m.c.variant), row, start, end, window,
                      currency)
        last = max([start.date(), *found])
        if now is not None:
            last = max(last, min(as_utc(now), end + window).date())
        daily = [found.get(d, Day(d)) for d in days_from(start.date(), last)]
    order = {t: i for i, t in enumerate(templates)}
    ordered = sorted(rows.values(), key=lambda r: (order.get(r.step, len(order)), r.step))
    return CampaignResults(campaign.name, campaign_id, start, end, window, ordered,
                           total_of(ordered, "total"), daily, currency, campaign.winner)


def span(conn: Connection, cohort: ColumnElement[bool]) -> tuple[datetime | None,
                                                              datetime | None]:
    """From the first mail of the cohort decided to just after the last sent or clicked:
    the period whose orders :func:`lifecycle.results.tally` looks at (None, None: no mail)."""
    m, t = Message.__table__, Touchpoint.__table__
    first, last_sent = conn.execute(select(func.min(m.c.created_at),
                                           func.max(m.c.sent_at)).where(cohort)).one()
    if first is None:
        return None, None
    last_click = conn.execute(select(func.max(t.c.occurred_at)).select_from(
        t.join(m, m.c.id == t.c.message_id)).where(
        cohort, t.c.kind == "email_clicked")).scalar()
    last = max(as_utc(x) for x in (first, last_sent, last_click) if x is not None)
    return as_utc(first), last + timedelta(microseconds=1)
