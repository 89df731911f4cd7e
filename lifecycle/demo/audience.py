"""The demo's audience: the sample customers act on the mail they were sent.

For every mail sent (read as it went out, from ``message_contents``) the
audience plans what its reader does, by chance but the same each time for
the same seed and mail (:func:`plan`), and does it when the demo clock gets
there, through the doors the real world uses (:mod:`lifecycle.demo.doors`):

* SendGrid's events — ``delivered`` (or a hard ``bounce`` now and then), Apple
  Mail Privacy Protection's machine ``open``, human ``open`` and ``click`` on a
  link of the mail — posted, signed, to the Event Webhook;
* NPS answers: a click on one of the feedback mail's score links (the link's
  page requested from the web app with a browser's user agent, then the post
  its script makes);
* replies, posted to Inbound Parse as SendGrid would post them, answering the
  mail's ``Reply-To``;
* now and then a one-click unsubscribe (RFC 8058) from ``List-Unsubscribe``;
* an order, a few days after a click on an offer (handed to the live shop),
  which the flow results count as a conversion; it uses the mail's offer code,
  if it had one, so the code is redeemed;
* a product review from some readers of a review ask (template
  ``review_request``) and a referral of a friend from some readers of a referral
  invite (``referral_invite``), posted to the ingest API (``POST /api/v1/reviews``,
  ``/api/v1/referrals``) as the shop's site would: the ``reviewer`` and
  ``referrer`` segments fill.

Only what the web app accepted is counted in :attr:`Audience.done`: a visit that
fails is logged and dropped.

:data:`HABITS` holds the rates per flow; they are roughly what retail mail
sees (opens 40–60 %, clicks a fifth to a third of those who open).
"""

from __future__ import annotations

import html
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, select

from lifecycle.mail.outbox import is_test
from lifecycle.models import Customer, Message, MessageContent, MessageStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Habit:
    """How readers treat the mails of one flow (shares, 0–1)."""

    delivered: float = 0.985  # of mails sent; the rest bounce (hard): the address is suppressed
    opens: float = 0.45  # of mails delivered
    clicks: float = 0.25  # of mails opened
    replies: float = 0.04  # of mails opened
    answers: float = 0.0  # NPS answers, of mails opened (the feedback mail)
    comments: float = 0.0  # of NPS answers, those with a comment (shown on /insights)
    unsubscribes: float = 0.015  # of mails opened (marketing mail only)
    orders: float = 0.0  # orders, of mails clicked
    reviews: float = 0.0  # reviews, of review asks opened (template review_request)
    referrals: float = 0.0  # referrals, of referral invites opened (template referral_invite)


HABITS: dict[str, Habit] = {
    "thank_you": Habit(opens=0.6, clicks=0.1, replies=0.08, unsubscribes=0.0),
    "feedback_request": Habit(opens=0.55, clicks=0.0, replies=0.05, answers=0.65,
                              comments=0.3),
    "second_purchase": Habit(opens=0.45, clicks=0.3, orders=0.35),
    "win_back": Habit(opens=0.35, clicks=0.25, orders=0.3),
    "loyalty_offer": Habit(opens=0.6, clicks=0.35, orders=0.45),
    "advocacy_ask": Habit(opens=0.55, clicks=0.4, replies=0.06, reviews=0.5, referrals=0.3),
}
DEFAULT_HABIT = Habit()
MACHINE_OPENS = 0.15  # Apple Mail Privacy Protection fetches the mail at once
#: NPS scores and how likely each is (about half promoters, a fifth detractors).
SCORES = (10, 9, 8, 7, 6, 5, 3)
SCORE_WEIGHTS = (28, 24, 18, 10, 10, 6, 4)
#: What a reader writes with an NPS answer: by promoters, passives and detractors.
COMMENTS = {
    "promoter": ("Lovely tea, and it came in two days.", "My favourite shop for coffee beans."),
    "passive": ("Good tea, a little pricey.", "Fine, but the tin arrived dented."),
    "detractor": ("The parcel took over a week.", "The grind was wrong for my machine."),
}
REPLIES = {
    "thank_you": ("Thank you! Could you tell me when it ships?",
                  "Lovely, thanks. Is the matcha also available in a bigger tin?",
                  "Thanks! Please send the invoice with my company name on it."),
    "feedback_request": ("The tea was great but the parcel took a week.",
                         "All good, only the grinder was louder than I expected.",
                         "Happy with everything, thanks for asking!"),
    "advocacy_ask": ("Sure, I left a review yesterday.",
                     "My sister might like your teas, I'll forward this."),
}
#: What reviewers write: (stars, text).
REVIEWS = ((5, "Wonderful tea, I order it every month."), (5, "Fresh, fragrant and well packed."),
           (4, "Very good coffee, a little pricey."), (4, "Great taste; the tin could be bigger."),
           (3, "Good, but the delivery took a while."))
#: The products reviews are about.
PRODUCTS = ("Sencha Fukamushi", "Assam Second Flush", "Ethiopia Yirgacheffe", "Matcha Ceremonial")
DEFAULT_REPLIES = ("Thanks for the mail!", "Could you take me off the paper catalogue?")
_LINK = re.compile(r"https?://[^\s<>\"')\]]+")
_HREF = re.compile(r'href="(https?://[^"]+)"')
_SCORE = re.compile(r"/f/[^?\s]+\?score=(\d+)$")
#: An offer code as mails hand them out (:func:`lifecycle.offers.service.new_code`).
_OFFER_CODE = re.compile(r"\b[A-Z0-9]{2,12}-[2-9A-HJKMNP-TW-Z]{4}-[2-9A-HJKMNP-TW-Z]{4}\b")


@dataclass(frozen=True)
class Mail:
    """A sent mail as its reader has it."""

    id: int
    customer: str  # the shop's customer id
    flow: str
    step: str
    to: str
    sender: str
    subject: str
    text: str
    html: str
    reply_to: str
    message_id_header: str
    unsubscribe_url: str | None
    sent_at: datetime
    provider_id: str
    marketing: bool
    template: str = ""

    def links(self) -> list[str]:
        """The links of both parts, each once, in order (the HTML part may have more)."""
        found = _LINK.findall(self.text) + [html.unescape(h) for h in _HREF.findall(self.html)]
        return list(dict.fromkeys(found))


@dataclass(frozen=True, order=True)
class Reaction:
    at: datetime
    mail_id: int
    kind: str  # delivered, bounce, machine_open, open, click, answer, reply, unsubscribe,
    # order, review, referral
    detail: dict[str, Any] = field(default_factory=dict, compare=False)


def _minutes(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(minutes=rng.uniform(low, high))


def plan(mail: Mail, seed: int, habits: dict[str, Habit] | None = None) -> list[Reaction]:
    """What the reader of ``mail`` does, and when (the same for the same seed and mail);
    ``habits`` by flow (default :data:`HABITS`)."""
    rng = random.Random(f"{seed}:{mail.id}")
    habit = (HABITS if habits is None else habits).get(mail.flow, DEFAULT_HABIT)
    out: list[Reaction] = []

    def react(at: datetime, kind: str, **detail: Any) -> None:
        out.append(Reaction(at, mail.id, kind, detail))

    arrived = mail.sent_at + timedelta(seconds=rng.uniform(5, 180))
    if rng.random() >= habit.delivered:
        react(arrived, "bounce")
        return out
    react(arrived, "delivered")
    if rng.random() < MACHINE_OPENS:
        react(arrived + _minutes(rng, 0.5, 5), "machine_open")
    if rng.random() >= habit.opens:
        return out
    opened = arrived + timedelta(hours=min(30.0, rng.lognormvariate(1.0, 1.0)))
    react(opened, "open")
    links = mail.links()
    scores = {int(m.group(1)): link for link in links if (m := _SCORE.search(link))}
    if scores and rng.random() < habit.answers:
        score = rng.choices(SCORES, SCORE_WEIGHTS)[0]
        at = opened + _minutes(rng, 0.5, 10)
        react(at, "click", url=scores[score])
        # a stream of its own, so that the rest of the plan stays as it was without comments
        writes = random.Random(f"{seed}:{mail.id}:comment")
        comment = None
        if writes.random() < habit.comments:
            group = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
            comment = writes.choice(COMMENTS[group])
        react(at, "answer", url=scores[score], score=score, comment=comment)
    plain = [link for link in links if "/u/" not in link and "/p/" not in link
             and link not in scores.values()]
    if plain and rng.random() < habit.clicks:
        clicked = opened + _minutes(rng, 0.5, 20)
        react(clicked, "click", url=rng.choice(plain))
        if rng.random() < habit.orders:
            react(clicked + timedelta(hours=rng.uniform(1, 96)), "order")
    if rng.random() < habit.replies:
        text = rng.choice(REPLIES.get(mail.flow, DEFAULT_REPLIES))
        react(opened + _minutes(rng, 5, 360), "reply", text=text)
    if mail.marketing and mail.unsubscribe_url and rng.random() < habit.unsubscribes:
        react(opened + _minutes(rng, 1, 30), "unsubscribe", url=mail.unsubscribe_url)
    if mail.template == "review_request" and rng.random() < habit.reviews:
        stars, text = rng.choice(REVIEWS)
        react(opened + _minutes(rng, 10, 600), "review", rating=stars, text=text,
              product=rng.choice(PRODUCTS))
    if mail.template == "referral_invite" and rng.random() < habit.referrals:
        react(opened + timedelta(hours=rng.uniform(1, 48)), "referral",
              email=f"friend.of.{mail.customer.lower()}@example.net")
    return sorted(out)


#: Reactions that reach the web app as Event Webhook posts.
SENDGRID_KINDS = ("delivered", "bounce", "machine_open", "open", "click")


class Doors(Protocol):
    """Where the audience's actions go in (the web app, as SendGrid and customers reach it)."""

    def ready(self) -> bool: ...
    def events(self, events: list[dict[str, Any]], at: datetime) -> None: ...
    def inbound(self, form: dict[str, str]) -> None: ...
    def follow(self, url: str) -> None: ...
    def answer(self, url: str, comment: str | None = None) -> None: ...
    def one_click(self, url: str) -> None: ...
    def reviews(self, items: list[dict[str, Any]]) -> None: ...
    def referrals(self, items: list[dict[str, Any]]) -> None: ...


def sendgrid_event(mail: Mail, reaction: Reaction) -> dict[str, Any]:
    """The Event Webhook's JSON for one reaction, with the ids SendGrid returns from our
    ``custom_args``."""
    name = {"delivered": "delivered", "bounce": "bounce", "machine_open": "open",
            "open": "open", "click": "click"}[reaction.kind]
    event: dict[str, Any] = {
        "email": mail.to, "timestamp": int(reaction.at.timestamp()), "event": name,
        "sg_event_id": f"demo-{mail.id}-{reaction.kind}-{reaction.at.timestamp():.3f}",
        "sg_message_id": f"{mail.provider_id}.demo", "lifecycle_message_id": str(mail.id),
        "lifecycle_flow": mail.flow, "lifecycle_step": mail.step}
    if reaction.kind == "bounce":
        event.update(type="bounce", status="5.1.1",
                     reason="550 5.1.1 The email account that you tried to reach does not exist.")
    if reaction.kind in ("open", "click", "machine_open"):
        event.update(useragent="Mozilla/5.0 (demo reader)", ip="192.0.2.10")
    if reaction.kind == "machine_open":
        event["sg_machine_open"] = True
    if reaction.kind == "click":
        event["url"] = reaction.detail["url"]
    return event


def inbound_form(mail: Mail, text: str, at: datetime) -> dict[str, str]:
    """An Inbound Parse post of a reply to ``mail`` (its fields as SendGrid names them)."""
    from email.utils import format_datetime

    quoted = "\n".join("> " + line for line in mail.text.splitlines()[:6])
    own = f"<reply.{mail.id}.{int(at.timestamp())}@{mail.to.rpartition('@')[2]}>"
    headers = (f"Message-ID: {own}\nIn-Reply-To: {mail.message_id_header}\n"
               f"References: {mail.message_id_header}\nFrom: {mail.to}\nTo: {mail.reply_to}\n"
               f"Subject: Re: {mail.subject}\nDate: {format_datetime(at)}\n")
    return {"headers": headers, "from": mail.to, "to": mail.reply_to, "subject": f"Re: {mail.subject}",
            "text": f"{text}\n\nOn {at:%a, %d %b %Y}, {mail.sender} wrote:\n{quoted}\n",
            "envelope": f'{{"to": ["{mail.reply_to}"], "from": "{mail.to}"}}'}


class Audience:
    """Reads the mails sent since it started and does what their readers do, step by step."""

    def __init__(self, doors: Doors, since: datetime, seed: int = 42,
                 order: Callable[..., None] | None = None,
                 habits: dict[str, Habit] | None = None) -> None:
        self.doors = doors
        self.seed = seed
        self.habits = habits
        self.order = order
        self._since = since  # mails sent before this are not ours to read
        self._seen: set[int] = set()
        self._mails: dict[int, Mail] = {}
        self._pending: list[Reaction] = []
        self.done: dict[str, int] = {}

    def read(self, conn: Connection, now: datetime) -> int:
        """Take in the mails sent since the last look; how many were new."""
        messages, contents, customers = (Message.__table__, MessageContent.__table__,
                                         Customer.__table__)
        rows = conn.execute(
            select(messages.c.id, messages.c.flow, messages.c.step, messages.c.to_email,
                   messages.c.sent_at, messages.c.provider_message_id, messages.c.context,
                   messages.c.template,
                   customers.c.external_id, contents.c.subject, contents.c.text,
                   contents.c.html, contents.c.headers)
            .join(contents, contents.c.message_id == messages.c.id)
            .join(customers, customers.c.id == messages.c.customer_id)
            .where(messages.c.status == MessageStatus.SENT.value,
                   messages.c.sent_at >= self._since - timedelta(days=1),
                   messages.c.sent_at <= now)
            .order_by(messages.c.sent_at)).all()
        new = 0
        for row in rows:
            if row.id in self._seen or is_test(row) \
                    or row.sent_at < self._since:
                continue
            self._seen.add(row.id)
            headers = row.headers or {}
            unsubscribe = next(iter(_LINK.findall(headers.get("List-Unsubscribe", ""))), None)
            mail = Mail(id=row.id, customer=row.external_id, flow=row.flow or "",
                        step=row.step or "", to=row.to_email, sender=headers.get("From", ""),
                        subject=row.subject or "", text=row.text or "", html=row.html or "",
                        reply_to=headers.get("Reply-To", ""),
                        message_id_header=headers.get("Message-ID", ""),
                        unsubscribe_url=unsubscribe, sent_at=row.sent_at,
                        provider_id=(row.provider_message_id or f"demo{row.id}"),
                        marketing=bool((row.context or {}).get("marketing")),
                        template=row.template or "")
            self._mails[mail.id] = mail
            self._pending.extend(plan(mail, self.seed, self.habits))
            new += 1
        if rows:  # later looks need not go further back than a day before the newest
            self._since = max(self._since, rows[-1].sent_at - timedelta(days=1))
        self._pending.sort()
        return new

    def act(self, now: datetime) -> int:
        """Do every planned reaction whose time has come; how many the web app accepted
        (only those count in :attr:`done`)."""
        due = [r for r in self._pending if r.at <= now]
        if not due:
            return 0
        self._pending = [r for r in self._pending if r.at > now]
        accepted = 0
        webhook = [r for r in due if r.kind in SENDGRID_KINDS]
        if webhook and self._try("events", lambda: self.doors.events(
                [sendgrid_event(self._mails[r.mail_id], r) for r in webhook], now)):
            for reaction in webhook:
                self._count(reaction.kind)
            accepted += len(webhook)
        for reaction in due:
            mail = self._mails[reaction.mail_id]
            if reaction.kind in SENDGRID_KINDS:
                continue
            if reaction.kind == "answer":
                done = self._try("answer", lambda r=reaction: self.doors.answer(
                    r.detail["url"], r.detail.get("comment")))
            elif reaction.kind == "reply":
                form = inbound_form(mail, reaction.detail["text"], reaction.at)
                done = self._try("reply", lambda f=form: self.doors.inbound(f))
            elif reaction.kind == "unsubscribe":
                done = self._try("unsubscribe",
                                 lambda u=reaction.detail["url"]: self.doors.one_click(u))
            elif reaction.kind == "review":
                item = {"id": f"demo-review-{mail.id}", "customer_id": mail.customer,
                        "product": reaction.detail["product"],
                        "rating": reaction.detail["rating"], "text": reaction.detail["text"],
                        "occurred_at": reaction.at.isoformat()}
                done = self._try("review", lambda i=item: self.doors.reviews([i]))
            elif reaction.kind == "referral":
                item = {"id": f"demo-referral-{mail.id}", "customer_id": mail.customer,
                        "referred_email": reaction.detail["email"],
                        "occurred_at": reaction.at.isoformat()}
                done = self._try("referral", lambda i=item: self.doors.referrals([i]))
            elif reaction.kind == "order" and self.order is not None:
                code = _OFFER_CODE.search(mail.text)  # the order uses the mail's offer code
                self.order(mail.customer, reaction.at, *([code.group(0)] if code else []))
                done = True
            else:
                done = False
            if done:
                self._count(reaction.kind)
                accepted += 1
        for mail_id in {r.mail_id for r in due} - {r.mail_id for r in self._pending}:
            self._mails.pop(mail_id, None)  # nothing more to do with it
        return accepted

    def ready(self) -> bool:
        """Whether the web app answers (its doors are open)."""
        return self.doors.ready()

    def _count(self, kind: str) -> None:
        self.done[kind] = self.done.get(kind, 0) + 1

    @staticmethod
    def _try(what: str, action: Callable[[], None]) -> bool:
        """Whether ``action`` was accepted; a failure is logged and the visit dropped."""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - one failed visit must not stop the demo
            log.warning("The demo audience could not post %s: %s", what, exc)
            return False
        return True
