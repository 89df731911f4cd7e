"""NPS answers from the feedback mail: a person's click counts, a link scanner's do not.

The feedback mail links eleven scores, ``/f/<token>?score=0`` … ``10``.  Link
scanners fetch every link of a mail within seconds, so nothing here acts on a
fetch (see :mod:`lifecycle.web.feedback` and :mod:`lifecycle.scanners`): the
link's page *posts* the score (its script does at once; without script, its
button), and a posted score is first a **held vote** (a row of ``nps_votes``,
:func:`hold_vote`).

The votes of one mail that follow each other within ``hold`` seconds
(``LIFECYCLE_NPS_HOLD_SECONDS``, 120 by default) form a group; once a group has
been quiet that long it is **settled** (:func:`settle`, by the scheduler's
``feedback.settle`` job, :func:`settle_due`, or by the mail's next vote):

* If the votes from the mail's links carry :data:`LINK_BURST` (three) or more
  different scores, the links were fetched one after another by a machine:
  they count as none.  A ``feedback_voided`` touchpoint keeps the scores, how
  many, over how many seconds and the user agents, and a log line says so.  A
  score chosen again on the thank-you page (``via="page"``) in that group
  counts only if it is the group's one page post (a sandbox pressing a button
  on every thank-you page posts many: then the whole group counts as none).
* If the votes from the thank-you page carry :data:`PAGE_BURST` or more
  different scores, a machine pressed every button: the whole group counts as
  none (traced the same way).
* A group of :data:`MAX_HELD` votes counts as none (a flood; further posts are
  not even stored while the mail holds that many).
* Once a mail's votes were voided so (a later group of the same mail, or after
  an earlier settling), only a score chosen on the thank-you page counts: the
  page asks for it (:func:`needs_confirming`).
* Otherwise the group's last vote is the answer — with two different link
  scores too: a person who clicks 8 and then 9 in the mail corrected a slip.

A scanner that runs the page's script would have to wait longer than the hold
between two links of one mail to escape this — over 20 minutes for the eleven.

The answer is one ``feedback`` touchpoint per mail (source key
``feedback:<mail>``): a later answer replaces the score of the same
touchpoint (keeping ``changed_from``), so the timeline shows one answer per
mail and the segments read the latest.  The customer's segments are refreshed
in the transaction that records it, so a new promoter enters the advocacy
segment (and its flow) within seconds instead of after the nightly refresh —
and no flow ever reads a held or voided vote.  An optional comment is kept on
the same touchpoint (on the held vote until it settles).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from lifecycle.clock import Clock
from lifecycle.models import NpsVote, Touchpoint
from lifecycle.models.feedback import VOTE_SOURCES
from lifecycle.segments.compute import refresh_customer
from lifecycle.segments.definitions import Definitions

log = logging.getLogger(__name__)

SCORES = range(11)
MAX_COMMENT = 4000
#: Longest User-Agent kept with a held vote (and in the trace of a voided burst).
MAX_AGENT = 200
#: Most mails one run of :func:`settle_due` settles (the rest wait for the next tick).
SETTLE_BATCH = 500

#: Different scores chosen on the thank-you page within the hold that count as none: a
#: person may correct a slip once; a machine pressing every button gives many.
PAGE_BURST = 3
#: Different scores from one mail's links within the hold that count as none: a person may
#: click one and then correct it with another (the last counts); a scanner fetches them all.
LINK_BURST = 3
#: Most votes one mail holds: further posts are only counted in a log line, and a group that
#: reached it counts as none (no person or scanner posts that many; it bounds every settling).
MAX_HELD = 30

#: Where segment definitions come from when an answer is recorded (None: not now).
DefinitionsOf = Callable[[], Definitions | None]


def _key(customer_id: int, message_id: int | None) -> str:
    return f"feedback:{message_id}" if message_id else f"feedback:customer:{customer_id}"


@dataclass
class Settled:
    """What settling one mail's held votes did."""

    customer_id: int
    message_id: int | None
    #: The score recorded as the answer (None: no vote counted).
    counted: int | None = None
    #: Votes that counted as none (a scanner's burst), in groups.
    voided: list[list[int]] = field(default_factory=list)
    entered: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def hold_vote(conn: Connection, customer_id: int, message_id: int | None, score: int, via: str,
              now: datetime, hold: float, definitions: DefinitionsOf, *, agent: str = "",
              clock: Clock | None = None) -> Settled | None:
    """Hold ``score`` as a vote for mail ``message_id`` (``via`` ``mail`` or ``page``).  The
    mail's earlier votes are settled first if their group has closed (what that did, else
    None), so a vote never joins a group that is already over.  Past :data:`MAX_HELD` held
    votes for the mail the vote is only counted (in a log line), not stored: that group is
    voided when it settles."""
    if score not in SCORES:
        raise ValueError(f"a score is a whole number from 0 to 10, not {score!r}")
    if via not in VOTE_SOURCES:
        raise ValueError(f"a vote comes from one of {', '.join(VOTE_SOURCES)}, not {via!r}")
    key = _key(customer_id, message_id)
    settled = settle(conn, key, now, hold, definitions, clock=clock)
    if _held_count(conn, key) >= MAX_HELD:
        _OVERFLOW.note(customer_id, message_id)
        return settled
    conn.execute(insert(NpsVote).values(
        customer_id=customer_id, message_id=message_id, answer_key=key, score=score, via=via,
        received_at=now, agent=agent[:MAX_AGENT] or None))
    return settled


def _held_count(conn: Connection, key: str) -> int:
    """How many votes mail ``key`` holds, counted up to :data:`MAX_HELD` (no further)."""
    some = select(NpsVote.id).where(NpsVote.answer_key == key).limit(MAX_HELD).subquery()
    return int(conn.execute(select(func.count()).select_from(some)).scalar_one())


class _Overflow:
    """Counts the votes not stored because their mail held :data:`MAX_HELD` already; logs at
    once for the first, then at most once a minute with how many came meanwhile."""

    def __init__(self) -> None:
        self._count = 0
        self._logged_at: float | None = None
        self._lock = threading.Lock()

    def note(self, customer_id: int, message_id: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += 1
            if self._logged_at is not None and now - self._logged_at < 60.0:
                return
            count, self._count, self._logged_at = self._count, 0, now
        log.warning("%d NPS vote(s) not stored: their mail already held %d votes (the latest: "
                    "customer %d, mail %s); that group counts as none.", count, MAX_HELD,
                    customer_id, message_id)


_OVERFLOW = _Overflow()


def settle(conn: Connection, key: str, now: datetime, hold: float, definitions: DefinitionsOf,
           *, clock: Clock | None = None) -> Settled | None:
    """Settle the held votes of one mail (``key``: the answer's source key) if the last came
    ``hold`` seconds or more before ``now``; None if there are none or they are not quiet yet.

    The mail's latest vote is locked (``FOR UPDATE`` on PostgreSQL; SQLite writes one at a
    time) — every settler and every new vote of the mail locks it first — so two settlers
    never both count them: the second finds none left.  At most :data:`MAX_HELD` + 1 votes are
    read, and they are deleted by key and id range, however many there are."""
    latest = conn.execute(select(NpsVote.id, NpsVote.received_at)
                          .where(NpsVote.answer_key == key)
                          .order_by(NpsVote.received_at.desc(), NpsVote.id.desc())
                          .limit(1).with_for_update()).first()
    if latest is None or now - latest.received_at < timedelta(seconds=hold):
        return None
    votes = conn.execute(select(*NpsVote.__table__.c).where(NpsVote.answer_key == key)
                         .order_by(NpsVote.received_at, NpsVote.id).limit(MAX_HELD + 1)).all()
    top = conn.execute(select(func.max(NpsVote.id)).where(NpsVote.answer_key == key)).scalar_one()
    gone = conn.execute(delete(NpsVote).where(NpsVote.answer_key == key,
                                              NpsVote.id <= top)).rowcount
    if not votes or gone < len(votes):  # the lock above makes this impossible; never count twice
        raise RuntimeError(f"the held votes of {key} changed while they were settled")
    first = votes[0]
    out = Settled(first.customer_id, first.message_id)
    groups: list[list[Any]] = []
    if gone > MAX_HELD:  # written around the cap: one flood, whenever its votes came
        groups.append(list(votes))
    else:
        for vote in votes:
            if groups and (vote.received_at - groups[-1][-1].received_at).total_seconds() <= hold:
                groups[-1].append(vote)
            else:
                groups.append([vote])
    traces: list[dict[str, Any]] = []
    scanned = scanned_before(conn, out.customer_id, out.message_id)
    for group in groups:
        from_mail = [v for v in group if v.via == "mail"]
        from_page = [v for v in group if v.via == "page"]
        counting = group
        if len(group) >= MAX_HELD:  # far more posts than a person or a scanner makes
            traces.append(_void(out, group, hold, votes_count=max(gone, len(group)), why="flood"))
            counting = []
        elif len({v.score for v in from_page}) >= PAGE_BURST:  # every button pressed
            traces.append(_void(out, group, hold))
            counting = []
        elif len({v.score for v in from_mail}) >= LINK_BURST:  # every link fetched
            if len(from_page) == 1:  # one score chosen again on the thank-you page: a person's
                traces.append(_void(out, from_mail, hold))
                counting = from_page
            else:  # a machine pressing a button on every thank-you page
                traces.append(_void(out, group, hold))
                counting = []
        if traces:
            scanned = True
        elif scanned:  # after a scanner's burst only a score pressed on the thank-you page counts
            counting = from_page
            if from_mail and not from_page:
                log.info("NPS vote of customer %d to mail %s not counted: the mail's links were "
                         "fetched by a scanner before, and the score was not confirmed on the "
                         "thank-you page.", out.customer_id, out.message_id)
        if counting:  # one score, or two: a person correcting a slip, the last counts
            last = counting[-1]
            _record(conn, out.customer_id, out.message_id, last.score, last.received_at, now)
            out.counted = last.score
    comment = next((v.comment for v in reversed(votes) if v.comment is not None), None)
    if comment is not None and not add_comment(conn, out.customer_id, out.message_id, comment,
                                               now) and traces:
        traces[-1]["data"]["comment"] = comment  # no answer to keep it with: kept in the trace
    for trace in traces:
        conn.execute(insert(Touchpoint).values(recorded_at=now, **trace))
    if out.counted is not None:
        defs = definitions()
        if defs is not None:
            out.entered, out.left = refresh_customer(conn, defs, out.customer_id, now, now,
                                                     clock=clock)
        if out.entered:
            log.info("Customer %d entered %s after a feedback answer.", out.customer_id,
                     ", ".join(out.entered))
    return out


def _void(out: Settled, votes: list[Any], hold: float, *, votes_count: int | None = None,
          why: str = "burst") -> dict[str, Any]:
    """The ``feedback_voided`` touchpoint of a burst of different scores, or of a flood of
    votes (logged too)."""
    scores = [v.score for v in votes]
    count = votes_count or len(votes)
    seconds = round((votes[-1].received_at - votes[0].received_at).total_seconds(), 1)
    agents = list(dict.fromkeys(v.agent for v in votes if v.agent))[:3]
    out.voided.append(scores)
    if why == "flood":
        log.warning("NPS answer of customer %d to mail %s not counted: %d votes came (more than "
                    "%d are never held); user agents: %s.", out.customer_id, out.message_id,
                    count, MAX_HELD, "; ".join(agents) or "none")
    else:
        log.info("NPS answer of customer %d to mail %s not counted: %d votes with %d different "
                 "scores came within %s s (a link scanner fetching every link or pressing every "
                 "button); user agents: %s.", out.customer_id, out.message_id, count,
                 len(set(scores)), seconds, "; ".join(agents) or "none")
    data = {"question": "nps", "scores": scores, "votes": count,
            "from_page": sum(v.via == "page" for v in votes), "seconds": seconds,
            "hold_seconds": hold, "agents": agents}
    if why == "flood":
        data["flood"] = True
    return {"customer_id": out.customer_id, "kind": "feedback_voided", "channel": "email",
            "occurred_at": votes[0].received_at, "message_id": out.message_id,
            "source_key": f"feedback_voided:{votes[0].id}", "data": data}


def settle_due(engine: Any, now: datetime, hold: float, definitions: DefinitionsOf, *,
               clock: Clock | None = None) -> list[Settled]:
    """Settle every mail whose held votes have been quiet for ``hold`` seconds, each in its own
    transaction (at most :data:`SETTLE_BATCH` per call); what each settling did.  A mail whose
    settling fails is logged (with the error) and skipped — its votes stay held and are tried
    again next time — and the others settle; only if the database does not answer at all does
    the error reach the caller (the scheduler reports that as an outage)."""
    cutoff = now - timedelta(seconds=hold)
    with engine.connect() as conn:
        keys = conn.execute(select(NpsVote.answer_key).group_by(NpsVote.answer_key)
                            .having(func.max(NpsVote.received_at) <= cutoff)
                            .order_by(func.min(NpsVote.id)).limit(SETTLE_BATCH)).scalars().all()
    done: list[Settled] = []
    for key in keys:
        try:
            with engine.begin() as conn:
                settled = settle(conn, key, now, hold, definitions, clock=clock)
        except Exception:
            if not _answers(engine):
                raise
            log.exception("The held NPS votes of %s could not be settled; they stay held and "
                          "are tried again at the next run. The other mails' votes settle.", key)
            continue
        if settled is not None:
            done.append(settled)
    return done


def _answers(engine: Any) -> bool:
    """Whether the database answers a query now."""
    try:
        with engine.connect() as conn:
            conn.execute(select(1))
    except Exception:  # noqa: BLE001 - any failure here means it does not
        return False
    return True


def definitions_of(app: Any) -> DefinitionsOf:
    """The segment definitions of ``app``, read when an answer is recorded; None (logged) while
    ``segments.yaml`` has problems: the answer is kept, the segments follow at the next
    refresh."""
    from lifecycle.segments.service import definitions
    from lifecycle.yamlfile import InvalidFile

    def read() -> Definitions | None:
        try:
            return definitions(app)
        except InvalidFile as exc:
            log.error("Segments are not refreshed after a feedback answer: %s has problems:\n%s",
                      app.settings.segments_file, exc)
            return None

    return read


def settle_held(app: Any) -> list[Settled]:
    """:func:`settle_due` for ``app`` now (the scheduler's ``feedback.settle`` job)."""
    return settle_due(app.engine, app.clock.now(), app.settings.nps_hold_seconds,
                      definitions_of(app), clock=app.clock)


def _record(conn: Connection, customer_id: int, message_id: int | None, score: int,
            occurred_at: datetime, now: datetime) -> None:
    if score not in SCORES:
        raise ValueError(f"a score is a whole number from 0 to 10, not {score!r}")
    found = _answer(conn, customer_id, message_id)
    if found is None:
        conn.execute(insert(Touchpoint).values(
            customer_id=customer_id, kind="feedback", channel="email", occurred_at=occurred_at,
            recorded_at=now, message_id=message_id, source_key=_key(customer_id, message_id),
            data={"score": score, "question": "nps"}))
    elif found.data.get("score") != score:
        conn.execute(update(Touchpoint).where(Touchpoint.id == found.id).values(
            occurred_at=occurred_at, recorded_at=now,
            data={**found.data, "score": score, "changed_from": found.data.get("score")}))


def _held(conn: Connection, customer_id: int, message_id: int | None) -> Any | None:
    """The latest held vote (id, score, comment) of mail ``message_id``, if there is one."""
    return conn.execute(select(NpsVote.id, NpsVote.score, NpsVote.comment).where(
        NpsVote.answer_key == _key(customer_id, message_id))
        .order_by(NpsVote.received_at.desc(), NpsVote.id.desc()).limit(1)).first()


def add_comment(conn: Connection, customer_id: int, message_id: int | None, comment: str,
                now: datetime) -> bool:
    """Keep ``comment`` with the answer to mail ``message_id`` (with its latest held vote while
    one waits, which carries it to the answer); False if there is neither."""
    text = comment.strip()[:MAX_COMMENT]
    held = _held(conn, customer_id, message_id)
    if held is not None:
        conn.execute(update(NpsVote).where(NpsVote.id == held.id).values(comment=text))
        return True
    found = _answer(conn, customer_id, message_id)
    if found is None:
        return False
    conn.execute(update(Touchpoint).where(Touchpoint.id == found.id).values(
        recorded_at=now, data={**found.data, "comment": text}))
    return True


def answer_of(conn: Connection, customer_id: int, message_id: int | None) -> dict[str, Any] | None:
    """The answer (score, comment) to mail ``message_id`` as its page shows it: the latest held
    vote's score if one waits, else the recorded answer's; None if there is neither."""
    found = _answer(conn, customer_id, message_id)
    data = {} if found is None else dict(found.data)
    held = _held(conn, customer_id, message_id)
    if held is not None:
        data["score"] = held.score
        if held.comment is not None:
            data["comment"] = held.comment
    return data or None


def scanned_before(conn: Connection, customer_id: int, message_id: int | None) -> bool:
    """Whether votes for mail ``message_id`` were voided before (a ``feedback_voided``
    touchpoint): then an answer counts only once confirmed on the thank-you page."""
    return conn.execute(select(Touchpoint.id).where(
        Touchpoint.customer_id == customer_id, Touchpoint.kind == "feedback_voided",
        Touchpoint.message_id == message_id if message_id else Touchpoint.message_id.is_(None))
        .limit(1)).first() is not None


def needs_confirming(conn: Connection, customer_id: int, message_id: int | None) -> bool:
    """Whether a score from the mail's links would not count unless chosen again on the
    thank-you page: the mail was scanned before, or its held votes already show a burst."""
    if scanned_before(conn, customer_id, message_id):
        return True
    scores = conn.execute(select(NpsVote.score).where(
        NpsVote.answer_key == _key(customer_id, message_id), NpsVote.via == "mail")
        .limit(MAX_HELD)).scalars().all()
    return len(set(scores)) >= LINK_BURST


def _answer(conn: Connection, customer_id: int, message_id: int | None) -> Any | None:
    """The ``feedback`` touchpoint (id, data) of mail ``message_id``, if there is one."""
    return conn.execute(select(Touchpoint.id, Touchpoint.data).where(
        Touchpoint.source_key == _key(customer_id, message_id))).first()
