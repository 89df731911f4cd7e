"""A campaign's A/B test: which variant won, whether the difference is significant, and the
rest of the audience mailed with the winner — exactly once.

The test group (``ab_test.share`` of the mailed audience) gets the variants at the start.
``ab_test.after`` later the scheduler's tick (:func:`lifecycle.campaigns.jobs.tick`) calls
:func:`release_winner`: the variant with the highest rate of ``winner_by`` among the test
group's mails sent — human opens (privacy-proxy opens are not counted), clicks, or
conversions (mails credited with an order, last touch across flows and campaigns, as the
results count them) — is written to the rest's outbox rows in one ``INSERT … SELECT``.  A
tie goes to the variant listed first.  A manager may choose a winner by hand before then.
A paused campaign's winner waits for its resume.

The release is a conditional update of the campaign (its winner still unset, its release
still due), in the transaction that writes the rest's mails: however many schedulers run,
and however often a tick repeats, the rest is mailed once.

**Significance** is a two-proportion z-test of the leader against the runner-up (with more
than two variants, the two best), two-sided, at 95 %: with the pooled rate
p = (x₁ + x₂) / (n₁ + n₂), z = (x₁/n₁ − x₂/n₂) / √(p (1 − p) (1/n₁ + 1/n₂)) and the
p-value erfc(|z| / √2).  The test leans on the normal approximation, which holds when each
variant expects at least :data:`MIN_EXPECTED` successes and as many failures (n·p and
n·(1 − p), the textbook condition); below that the page says there were too few mails to
tell.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, select, update

from lifecycle.campaigns import audience
from lifecycle.campaigns.audience import Rules
from lifecycle.campaigns.model import Campaign, CampaignChange, CampaignMember, CampaignStatus
from lifecycle.campaigns.results import span, templates_of
from lifecycle.campaigns.service import CampaignError
from lifecycle.campaigns.spec import CampaignSpec, per_hour_for
from lifecycle.models import Message
from lifecycle.results import Row, tally

log = logging.getLogger(__name__)

#: Successes and failures each variant must expect for the z-test's normal approximation.
MIN_EXPECTED = 5
#: The confidence at which a difference is called significant.
LEVEL = 0.95
#: ``winner_by`` -> the results column it counts (per mail sent) and its words.
METRICS = {"opens": ("opened", "human opens"), "clicks": ("clicked", "clicks"),
           "conversions": ("converted", "conversions")}
#: Attribution window for ``winner_by: conversions`` when none is given (days).
DEFAULT_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Significance:
    """The outcome of :func:`significance`: ``z`` and the two-sided ``p_value`` (None when
    nothing was sent), whether there were ``enough`` mails to tell, and whether the
    difference is ``significant`` at :data:`LEVEL`."""

    z: float | None
    p_value: float | None
    enough: bool
    significant: bool

    @property
    def text(self) -> str:
        if not self.enough:
            return (f"too few mails to tell (each variant needs at least {MIN_EXPECTED} "
                    f"expected successes and {MIN_EXPECTED} failures)")
        level = f"{LEVEL * 100:g} %"
        if self.significant:
            return f"significant at {level} (p = {self.p_value:.3f})"
        return (f"not significant at {level} (p = {self.p_value:.3f}): the difference may "
                "be chance")

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Rate:
    """A variant's successes among its test mails sent."""

    variant: str
    successes: int
    mails: int

    @property
    def rate(self) -> float | None:
        """Successes per mail sent (0–1); None before a mail was sent."""
        return self.successes / self.mails if self.mails else None

    def __str__(self) -> str:
        shown = f" ({self.rate * 100:.1f} %)" if self.rate is not None else ""
        return f"{self.variant} {self.successes} of {self.mails}{shown}"


@dataclass(frozen=True)
class Release:
    """A winner released to the rest: by whom, the rates it was chosen on, the mails
    written."""

    winner: str
    rates: dict[str, Rate]
    significance: Significance
    written: int
    by: str


def significance(a_successes: int, a_n: int, b_successes: int, b_n: int) -> Significance:
    """The two-proportion z-test of ``a_successes`` of ``a_n`` against ``b_successes`` of
    ``b_n`` (see the module doc)."""
    for name, value in (("a_successes", a_successes), ("a_n", a_n),
                        ("b_successes", b_successes), ("b_n", b_n)):
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value}")
    if a_successes > a_n or b_successes > b_n:
        raise ValueError("successes cannot outnumber the mails")
    if not a_n or not b_n:
        return Significance(None, None, False, False)
    pooled = (a_successes + b_successes) / (a_n + b_n)
    enough = min(n * share for n in (a_n, b_n) for share in (pooled, 1 - pooled)) \
        >= MIN_EXPECTED
    spread = math.sqrt(pooled * (1 - pooled) * (1 / a_n + 1 / b_n))
    if spread == 0:  # both all or both none: no difference at all
        return Significance(0.0, 1.0, enough, False)
    z = (a_successes / a_n - b_successes / b_n) / spread
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return Significance(z, p_value, enough, enough and p_value < 1 - LEVEL)


def test_group(campaign_id: int) -> ColumnElement[bool]:
    """The condition on ``messages`` of the campaign's mails to its A/B ``test`` group."""
    m, cm = Message.__table__, CampaignMember.__table__
    return and_(m.c.campaign_id == campaign_id, m.c.customer_id.in_(
        select(cm.c.customer_id).where(cm.c.campaign_id == campaign_id, cm.c.grp == "test")))


def choose_winner(conn: Connection, campaign_id: int, by: str, *,
                  window: timedelta = DEFAULT_WINDOW, variants: Sequence[str] | None = None
                  ) -> tuple[str, dict[str, Rate], Significance]:
    """The leading variant by ``by`` (opens, clicks or conversions — within ``window`` of a
    mail) among the test group's mails sent, every variant's rate in the campaign's order
    (``variants``, else its stored spec's), and the significance of the leader against the
    runner-up."""
    if by not in METRICS:
        raise ValueError(f"a winner is chosen by opens, clicks or conversions, not {by!r}")
    if variants is None:
        variants = templates_of(conn.execute(select(Campaign.spec).where(
            Campaign.id == campaign_id)).scalar_one())
    variants = list(variants)
    if len(variants) < 2:
        raise CampaignError("the campaign has no A/B test: it sends one template")
    m = Message.__table__
    rows = {v: Row(v, v) for v in variants}
    cohort = test_group(campaign_id)
    start, end = span(conn, cohort)
    if start is not None and end is not None:
        tally(conn, cohort, (m.c.variant,),
              lambda v: rows.setdefault(v or "", Row(v or "", v)), start, end, window, "")
    column = METRICS[by][0]
    rates = {v: Rate(v, rows[v].counts[column], rows[v].counts["sent"]) for v in variants}
    ranked = sorted(variants, key=lambda v: (-(rates[v].rate or 0.0), variants.index(v)))
    leader, runner_up = rates[ranked[0]], rates[ranked[1]]
    return ranked[0], rates, significance(leader.successes, leader.mails,
                                          runner_up.successes, runner_up.mails)


def describe(rates: dict[str, Rate], found: Significance, by: str) -> str:
    """The rates and their significance in words, e.g. ``clicks: a 3 of 50 (6.0 %), b 9 of
    50 (18.0 %); not significant at 95 % (p = 0.061): …``."""
    return (f"{METRICS[by][1]}: " + ", ".join(str(r) for r in rates.values())
            + f"; {found.text}")


def release_winner(conn: Connection, campaign_row: Any, spec: CampaignSpec, rules: Rules,
                   now: datetime, winner: str | None = None, by: str = "scheduler", *,
                   window: timedelta = DEFAULT_WINDOW,
                   notify_offers: bool = False) -> Release | None:
    """Mail the rest of the audience with ``winner`` (None: the leader by the test's
    ``winner_by``), in this transaction, once: set ``campaigns.winner``, clear
    ``winner_due_at``, write the rest's outbox rows, record who chose and on what rates.
    The scheduler (``by`` ``scheduler``) gets None when there is nothing to release (done
    already, the campaign not sending); a manager's choice raises :class:`CampaignError`
    saying why."""
    manual = by != "scheduler"
    row = conn.execute(select(Campaign.__table__).where(
        Campaign.id == campaign_row.id)).one()

    def refuse(why: str) -> None:
        if manual:
            raise CampaignError(f"the campaign {row.name!r} {why}")

    if spec.ab_test is None:
        refuse("has no A/B test")
        return None
    if row.winner is not None or row.winner_due_at is None:
        refuse(f"has its winner already: {row.winner}" if row.winner
               else "has not started its A/B test yet")
        return None
    if row.status != CampaignStatus.SENDING.value:
        refuse(f"is {row.status}: a winner goes out only while it is sending"
               + (" (resume it first)" if row.status == CampaignStatus.PAUSED.value else ""))
        return None
    leader, rates, found = choose_winner(conn, row.id, spec.ab_test.winner_by, window=window,
                                         variants=[v.template for v in spec.send.variants])
    chosen = winner or leader
    if chosen not in rates:
        raise CampaignError(f"the campaign {row.name!r} has no variant {chosen!r}; its "
                            f"variants are {', '.join(rates)}")
    if not conn.execute(update(Campaign).where(
            Campaign.id == row.id, Campaign.status == CampaignStatus.SENDING.value,
            Campaign.winner.is_(None), Campaign.winner_due_at.is_not(None)).values(
            winner=chosen, winner_due_at=None, updated_at=now)).rowcount:
        refuse("has its winner already")  # another scheduler or manager was first
        return None
    cm = CampaignMember.__table__
    rest = conn.execute(select(func.count()).where(
        cm.c.campaign_id == row.id, cm.c.grp == "rest", cm.c.left_out.is_(None))).scalar_one()
    written = audience.write_mails(conn, row.id, row.name, spec, now, now, rules, "rest",
                                   per_hour_for(spec, int(rest)), winner=chosen)
    if spec.send.offer is not None:  # the rest's mails hand out their codes too
        from lifecycle.campaigns.service import issue_campaign_offers

        issue_campaign_offers(conn, row.id, spec, now, notify_offers)
    conn.execute(update(Campaign).where(Campaign.id == row.id).values(
        mailed=func.coalesce(Campaign.mailed, 0) + written))
    how = "chosen by hand" if manual else "the leader"
    conn.execute(insert(CampaignChange).values(
        campaign_id=row.id, action="winner", status=row.status, changed_by=by, changed_at=now,
        detail=f"winner {chosen} ({how}); {describe(rates, found, spec.ab_test.winner_by)}; "
               f"{written} mails written to the rest"))
    log.info("Campaign %s: the winner %s (%s, %s) goes to the rest of the audience: %d "
             "mails written.", row.name, chosen, how, found.text, written)
    return Release(chosen, rates, found, written, by)
