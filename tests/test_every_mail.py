"""Every template in every locale, written as a whole .eml by the real sending path (context,
renderer, compose, file transport), checked as a mail client and a spam filter would see it.

Templates and their locale folders are found on disk (``templates/email/<name>/`` and its
``<locale>/`` folders; a template without locale folders is rendered once from its root), so a
template or locale added later is covered without touching this file.  Each mail goes out as
the flow that sends that template would send it (its flow, step and offer from ``flows/``).

SpamAssassin (the Debian package; ``.ci/run`` installs it) scores all of them in one run with
local rules only (``-L``: no network tests), and each must score below :data:`MAX_SCORE`.
Without ``spamassassin`` that check is skipped (with the reason), and fails under ``CI=true``.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows.definitions import Context, Send, load_folder
from lifecycle.flows.engine import offer_context
from lifecycle.links import BadToken, verify
from lifecycle.mail.addresses import read_local_part
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, Order
from lifecycle.segments.definitions import load_definitions
from tests.conftest import IN_CI
from tests.factories import daytime_zone
from tests.mail_checks import check_lines, content

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "email"
PARTS = ("subject.txt", "body.txt", "body.html")
#: A locale folder's name: ``de``, ``nb``, ``de-AT``, ``pt_BR``.
_LOCALE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z]{2,4})?$")
#: Highest SpamAssassin score (local rules) any shipped mail may have.
MAX_SCORE = 1.0

SECRET = "Xk3vQ9pL2mZ8rT5wY7nB4cD6fG1hJ0sA"
BASE_URL = "https://mail.leafandbean.shop"
SHOP_URL = "https://www.leafandbean.shop"
FROM = "Leaf and Bean <hello@leafandbean.shop>"
REPLY_DOMAIN = "reply.leafandbean.shop"
#: Signed links of ours, by the first part of their path, and what they were signed for.
SIGNED = {"u": "unsubscribe", "p": "preferences", "f": "feedback"}


def cases() -> list[tuple[str, str | None]]:
    """(template, locale folder or None for the root parts) for every template on disk."""
    found = []
    for folder in sorted(TEMPLATES.iterdir()):
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        locales = sorted(p.name for p in folder.iterdir()
                         if p.is_dir() and _LOCALE.match(p.name)
                         and any((p / part).is_file() for part in PARTS))
        if locales:
            found += [(folder.name, locale) for locale in locales]
        elif any((folder / part).is_file() for part in PARTS):
            found.append((folder.name, None))
    return found


CASES = cases()


def senders() -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    """For each template a flow sends: (flow, step, the offer as kept in the outbox row)."""
    context = Context.from_folders(TEMPLATES, set(load_definitions(
        ROOT / "flows" / "segments.yaml").all_names()))
    found: dict[str, tuple[str, str, dict[str, Any] | None]] = {}
    for name, flow in sorted(load_folder(ROOT / "flows", context).flows.items()):
        for step in flow.steps:
            if isinstance(step.action, Send):
                offer = offer_context(step.action.offer) if step.action.offer else None
                for variant in step.action.variants:
                    found.setdefault(variant.template, (name, step.id, offer))
    return found


@dataclass
class Written:
    template: str
    locale: str | None
    message_id: int
    raw: bytes
    mail: EmailMessage


@pytest.fixture
def written(fresh_database_url: str, tmp_path: Path) -> Iterator[list[Written]]:
    """Every case sent through the outbox by the file transport, for a shop set up as for
    production (https, its own domains, a postal address)."""
    now = datetime.now(UTC).replace(microsecond=0)  # SpamAssassin compares Date with today
    settings = replace(load_settings({}), database_url=make_url(fresh_database_url),
                       secret_key=SECRET, outbox_dir=tmp_path / "outbox", base_url=BASE_URL,
                       shop_url=SHOP_URL, mail_from=FROM, reply_domain=REPLY_DOMAIN,
                       shop_name="Leaf and Bean", currency="EUR",
                       shop_address="Leaf and Bean GmbH, Teeweg 4, 10115 Berlin, Germany")
    app = App(settings, clock=ManualClock(now))
    flows = senders()
    tz = daytime_zone(now)
    rows = []
    with app.engine.begin() as conn:
        for n, (template, locale) in enumerate(CASES):
            cid = conn.execute(insert(Customer).values(
                external_id=f"c{n}", email=f"zoe.{n}@mail.test", first_name="Zoë",
                last_name="Łukasiewicz", locale=locale or "en", timezone=tz, attributes={},
                marketing_consent=True, created_at=now - timedelta(days=400),
                updated_at=now).returning(Customer.id)).scalar_one()
            conn.execute(insert(Order).values(
                external_id=f"o{n}", customer_id=cid, ordered_at=now - timedelta(days=3),
                total="1234.50", currency="EUR", status="completed",
                items=[{"name": "Sencha Kagoshima", "sku": "TEA-1", "quantity": 2,
                        "price": "12.25", "url": f"{SHOP_URL}/p/sencha",
                        "image_url": f"{SHOP_URL}/img/sencha.jpg"},
                       {"name": "Teekanne „Ōmi“", "sku": "POT-2", "quantity": 1,
                        "price": "1210.00"}],
                created_at=now, updated_at=now))
            flow, step, offer = flows.get(template, (None, None, None))
            context: dict[str, Any] = {"order_id": f"o{n}", "marketing": True, "capped": False}
            if offer is not None:
                context["offer"] = offer
            mid = conn.execute(insert(Message).values(
                idempotency_key=f"every:{n}", customer_id=cid, flow=flow, step=step,
                template=template, to_email=f"zoe.{n}@mail.test", status="scheduled",
                due_at=now, attempts=0, context=context, created_at=now,
                updated_at=now).returning(Message.id)).scalar_one()
            rows.append((template, locale, mid))
    try:
        ids: list[int] = []
        dispatch(app, ids.extend)
        outcomes = send_batch(app, ids, transport=FileTransport(settings.outbox_dir))
        assert outcomes["sent"] == len(CASES), outcomes
        files = {int(p.name.split("-")[0]): p for p in settings.outbox_dir.rglob("*.eml")}
        found = []
        for template, locale, mid in rows:
            raw = files[mid].read_bytes()
            found.append(Written(template, locale, mid, raw, email.message_from_bytes(
                raw, policy=email.policy.default)))  # type: ignore[arg-type]
        yield found
    finally:
        app.close()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and value is not None:
                self.hrefs.append(value)
            elif name == "src" and value is not None:
                self.sources.append(value)


def links_of(mail: EmailMessage) -> tuple[list[str], list[str], list[str]]:
    """(HTML hrefs, HTML image sources, URLs in the text part)."""
    parser = _Links()
    html = mail.get_body(("html",))
    if html is not None:
        parser.feed(content(html))
    plain = mail.get_body(("plain",))
    text_urls = re.findall(r"https?://[^\s<>\"')\]]+", content(plain)) if plain else []
    return parser.hrefs, parser.sources, [u.rstrip(".,;:!?") for u in text_urls]


def check_link(url: str, where: str) -> None:
    """``url`` is absolute, to the shop or to us; ours verify with the key they were signed
    with."""
    if url.startswith("mailto:"):
        domain = url[7:].partition("?")[0].rpartition("@")[2].lower()
        assert domain in ("leafandbean.shop", REPLY_DOMAIN), f"{where}: {url}"
        return
    parts = urlsplit(url)
    assert parts.scheme == "https", f"{where}: {url} is not an absolute https link"
    assert parts.netloc in (urlsplit(BASE_URL).netloc, urlsplit(SHOP_URL).netloc), \
        f"{where}: {url} leads to a host that is neither the shop nor Lifecycle"
    if parts.netloc == urlsplit(BASE_URL).netloc:
        kind, _, rest = parts.path.lstrip("/").partition("/")
        assert kind in SIGNED, f"{where}: {url} is no signed link of ours"
        try:
            data = verify(SECRET, SIGNED[kind], rest.split("/")[0])
        except BadToken:
            pytest.fail(f"{where}: {url} does not verify as a {SIGNED[kind]} link")
        assert data.get("m") and "t" not in data, f"{where}: {url} names no mail, or a test"
    else:
        assert "utm_medium=email" in parts.query, f"{where}: shop link {url} has no UTM"


def test_every_template_and_locale_is_found_on_disk() -> None:
    assert {t for t, _ in CASES} >= {"thank_you", "winback_1", "feedback_request"}
    for template, locale in CASES:
        folder = TEMPLATES / template / (locale or "")
        assert (folder / "subject.txt").is_file() or (TEMPLATES / template / "subject.txt") \
            .is_file(), f"{template}/{locale}: no subject"


def test_every_mail_is_well_formed_mime_with_short_lines_and_standard_headers(
        written: list[Written]) -> None:
    for mail in written:
        where = f"{mail.template}/{mail.locale or '(root)'}"
        parsed = check_lines(mail.raw)
        assert parsed.get_content_type() == "multipart/alternative", where
        parts = [p.get_content_type() for p in parsed.iter_parts()]
        assert parts == ["text/plain", "text/html"], f"{where}: {parts}"
        assert all(p.get_content_charset() == "utf-8" for p in parsed.iter_parts()), where
        assert re.fullmatch(r"<[0-9a-f]{32}\.lifecycle\.\d+@leafandbean\.shop>",
                            parsed["Message-ID"]), where
        assert parseaddr(parsed["From"])[1] == "hello@leafandbean.shop", where
        reply = parseaddr(parsed["Reply-To"])[1]
        assert reply.endswith("@" + REPLY_DOMAIN), where
        local = reply.rpartition("@")[0]
        assert len(local) <= 64 and read_local_part(SECRET, local).message_id == mail.message_id
        unsubscribe = re.findall(r"<([^>]+)>", parsed["List-Unsubscribe"])
        assert len(unsubscribe) == 2 and unsubscribe[0].startswith(BASE_URL + "/u/"), where
        assert read_local_part(SECRET, unsubscribe[1].removeprefix("mailto:")
                               .rpartition("@")[0]).purpose == "unsubscribe", where
        for url in unsubscribe:
            check_link(url, f"{where} List-Unsubscribe")
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", where
        feedback = parsed["Feedback-ID"].split(":")
        assert len(feedback) == 4 and feedback[2] == mail.template[:40] \
            and feedback[3] == "leafandbean.shop", f"{where}: {parsed['Feedback-ID']}"
        assert parsed["Subject"] and len(parsed["Subject"]) <= 255, where


def test_every_link_is_absolute_to_the_shop_or_us_and_our_signed_links_verify(
        written: list[Written]) -> None:
    for mail in written:
        where = f"{mail.template}/{mail.locale or '(root)'}"
        hrefs, sources, text_urls = links_of(mail.mail)
        assert hrefs and text_urls, f"{where}: no links"
        for url in hrefs:
            check_link(url, f"{where} HTML")
        for url in text_urls:
            check_link(url, f"{where} text")
        for url in sources:
            assert urlsplit(url).scheme == "https", f"{where}: image {url} is not https"


#: SpamAssassin's test string (GTUBE): a mail holding it scores 1000, which shows the run scores.
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
#: The id the control mail carries.
CONTROL = 0


def control_mail() -> bytes:
    return (f"From: spam@spam.test\r\nTo: a@mail.test\r\nSubject: control\r\n"
            f"X-Lifecycle-Message-Id: {CONTROL}\r\n\r\n{GTUBE}\r\n").encode()


def spamassassin_scores(written: list[Written], folder: Path) -> dict[int, tuple[float, str]]:
    """Mail id -> (score, rules hit) from one SpamAssassin run over all mails as an mbox (and
    a control mail that must score high, id :data:`CONTROL`)."""
    box = folder / "all.mbox"
    mbox = mailbox.mbox(str(box))
    for raw in [control_mail(), *(mail.raw for mail in written)]:
        message = mailbox.mboxMessage(raw)
        message.set_from("hello@leafandbean.shop", True)  # SpamAssassin needs the date
        mbox.add(message)
    mbox.flush()
    mbox.close()
    home = folder / "sa-home"
    home.mkdir()
    run = subprocess.run(
        ["spamassassin", "--mbox", "-L", "-x", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0",
         "--cf=use_auto_welcomelist 0", "--cf=report_safe 0", "-t", str(box)],
        capture_output=True, timeout=600, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False)
    assert run.returncode in (0, 1), run.stderr.decode(errors="replace")[-2000:]
    out = folder / "scored.mbox"
    out.write_bytes(run.stdout)
    scores: dict[int, tuple[float, str]] = {}
    for message in mailbox.mbox(str(out)):
        status = re.sub(r"\s+", " ", str(message["X-Spam-Status"] or ""))
        found = re.search(r"score=(-?[\d.]+)", status)
        assert found, f"no X-Spam-Status in SpamAssassin's output: {status!r}"
        rules = re.search(r"tests=(\S*)", status)
        scores[int(str(message["X-Lifecycle-Message-Id"]))] = (
            float(found.group(1)), rules.group(1) if rules else "")
    return scores


def test_spamassassin_scores_every_mail_below_one(written: list[Written], tmp_path: Path) -> None:
    if shutil.which("spamassassin") is None:
        reason = ("spamassassin is not installed (Debian package `spamassassin`; .ci/run "
                  "installs it)")
        if IN_CI:
            pytest.fail(f"{reason}, and CI=true requires it", pytrace=False)
        pytest.skip(reason)
    scores = spamassassin_scores(written, tmp_path)
    assert set(scores) == {CONTROL} | {m.message_id for m in written}
    assert scores[CONTROL][0] >= 100, f"the GTUBE control mail scored only {scores[CONTROL]}"
    over = [f"{m.template}/{m.locale or '(root)'}: {scores[m.message_id][0]} "
            f"({scores[m.message_id][1]})" for m in written
            if scores[m.message_id][0] >= MAX_SCORE]
    assert not over, "SpamAssassin scores of 1.0 or more:\n" + "\n".join(over)
