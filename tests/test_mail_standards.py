"""Mail standards: quoted-printable at 76 characters, short signed reply and unsubscribe
addresses on the reply domain, Feedback-ID, UTM parameters on shop links, and the warnings a
production transport gets at start for placeholder settings."""

from __future__ import annotations

import email
import email.policy
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from lifecycle.app import App
from lifecycle.config import ConfigError, load_settings
from lifecycle.flows.definitions import Context, load_flow
from lifecycle.flows.engine import Policies, advance, enroll
from lifecycle.links import BadToken, KeyRing, inbound_key, sign
from lifecycle.mail.addresses import (
    LEGACY_GRACE,
    MAX_LOCAL_PART,
    local_part,
    read_local_part,
)
from lifecycle.mail.compose import Outgoing, compose, feedback_id
from lifecycle.mail.context import build_context
from lifecycle.mail.readiness import findings, placeholder_domain
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.templates import Rendered
from lifecycle.mail.transports import FileTransport, SmtpTransport, sendgrid_payload
from lifecycle.mail.utm import tag, tag_value, utm_for
from lifecycle.models import Customer, Message, Suppression
from lifecycle.yamlfile import InvalidFile
from tests.factories import WEB_SECRET as SECRET
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign, add_customer, add_order, daytime_zone
from tests.fake_smtp import FakeSmtp
from tests.mail_checks import check_lines, content
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
OTHER_KEY = "p" * 20 + "Q7zX2kV9mN4bL8wR1tY6"
#: A text part whose lines are far over 76 characters, with non-ASCII, a lone dot, trailing
#: spaces and a line starting "From " (which some relays mangle).
LONG_TEXT = ("Grüße, Zoë! " * 40 + "\n.\nFrom here on   \n" + "€" * 300 + "\nend\n")
LONG_HTML = "<p>" + " ".join(f'<a href="https://shop.example/p/{n}?x=1&amp;y=2">Tee {n} ✓</a>'
                             for n in range(60)) + "</p>"


def outgoing(text: str | None = LONG_TEXT, html: str | None = LONG_HTML) -> Outgoing:
    return Outgoing(message_id=7, sender="Leaf and Bean <shop@leaf.example>",
                    to="ann@example.com", subject="Danke für Ihre Bestellung " * 6,
                    text=text, html=html, reply_to="r-h-aaaaaaaaaaaaaaaa@reply.leaf.example",
                    date=T0, headers={"Message-ID": "<x.lifecycle.7@leaf.example>",
                                      "List-Unsubscribe": "<https://l.example/u/" + "t" * 120
                                                          + ">, <mailto:u-h-x@leaf.example>"})


# ------------------------------------------------------------------ quoted-printable

def test_the_eml_file_wraps_bodies_at_76_in_quoted_printable_and_decodes_to_the_rendered_text(
        tmp_path: Path) -> None:
    mail = outgoing()
    path = FileTransport(tmp_path).path_for(mail)
    FileTransport(tmp_path).send(mail)
    raw = path.read_bytes()
    parsed = check_lines(raw)
    text, html = (p for p in parsed.walk() if not p.is_multipart())
    assert content(text) == LONG_TEXT and content(html) == LONG_HTML + "\n"
    # headers are not folded below 998: List-Unsubscribe reads back on one line
    assert b"List-Unsubscribe: <https://l.example/u/" + b"t" * 120 + b">, <mailto:" in raw


def test_a_short_ascii_part_and_an_html_only_mail_are_quoted_printable_too(tmp_path: Path) -> None:
    for mail in (outgoing(text="Thanks!\n", html=None), outgoing(text=None)):
        FileTransport(tmp_path).send(mail)
        parsed = check_lines(FileTransport(tmp_path).path_for(mail).read_bytes())
        assert content(parsed).rstrip("\n") in ("Thanks!", LONG_HTML)


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp().start()
    yield server
    server.stop()


def test_smtp_sends_the_same_76_character_quoted_printable(smtp: FakeSmtp) -> None:
    SmtpTransport(smtp.url, timeout=5).send(outgoing())
    parsed = check_lines(smtp.messages[0].data)
    assert content(next(p for p in parsed.walk() if not p.is_multipart())) == LONG_TEXT


def test_sendgrid_gets_the_parts_themselves_and_builds_its_own_mime() -> None:
    payload = sendgrid_payload(outgoing())
    assert [c["value"] for c in payload["content"]] == [LONG_TEXT, LONG_HTML]


# ------------------------------------------------------------------ addresses

def test_local_parts_stay_within_64_octets_at_any_id_and_name_their_mail() -> None:
    for message_id in (0, 1, 31, 32, 10**6, 2**31, 2**63 - 1):
        for purpose in ("reply", "unsubscribe"):
            for test in (False, True):
                local = local_part(SECRET, purpose, message_id, test)
                assert len(local.encode()) <= 33 <= MAX_LOCAL_PART
                assert local.startswith(purpose[0] + ("t" if test else "") + "-")
                found = read_local_part(SECRET, local)
                assert (found.purpose, found.message_id, found.test) == (purpose, message_id, test)
                assert read_local_part(SECRET, local.upper()) == found  # case is not kept
    with pytest.raises(ValueError):
        local_part(SECRET, "reply", 2**63)


def test_a_local_part_altered_in_any_way_or_made_with_another_key_is_refused() -> None:
    local = local_part(SECRET, "reply", 4242)
    kind, encoded, mac = local.split("-")
    forged = [
        f"u-{encoded}-{mac}",  # a reply address is no unsubscribe address
        f"rt-{encoded}-{mac}",  # nor a test one
        f"r-{encoded[:-1]}{'b' if encoded[-1] == 'a' else 'a'}-{mac}",  # another mail
        f"r-a{encoded}-{mac}",  # the same id spelt with a leading zero
        f"r-{encoded}-{mac[:-1]}{'b' if mac[-1] == 'a' else 'a'}",
        f"r-{encoded}-{mac[:-1]}",
        local_part(OTHER_KEY, "reply", 4242),
        "r-" + "7" * 13 + "-" + mac,  # past 2^63
        "reply+" + local,
    ]
    for candidate in forged:
        with pytest.raises(BadToken):
            read_local_part(SECRET, candidate)


def test_an_address_signed_with_the_previous_key_verifies_during_a_rotation() -> None:
    old = local_part(OTHER_KEY, "unsubscribe", 99)
    assert read_local_part(KeyRing(SECRET, (OTHER_KEY,)), old).message_id == 99
    with pytest.raises(BadToken):
        read_local_part(KeyRing(SECRET), old)


def composed(settings: Any, message_id: int = 12, context: dict[str, Any] | None = None,
             flow: str | None = "win_back", step: str | None = "first") -> Outgoing:
    row = SimpleNamespace(id=message_id, customer_id=3, flow=flow, step=step,
                          template="winback_1", to_email="ann@example.com", attempts=1,
                          context=context or {})
    return compose(settings, row, Rendered("winback_1", "Hi", "Hi", None), T0, "2026-06-03")


def settings_with(**values: str) -> Any:
    env = {"LIFECYCLE_MAIL_FROM": "Leaf <shop@Leaf.example>", **values}
    return replace(load_settings(env), secret_key=SECRET)


def test_reply_and_unsubscribe_addresses_are_on_the_reply_domain_and_message_ids_on_the_from_domain(
        ) -> None:
    mail = composed(settings_with(LIFECYCLE_REPLY_DOMAIN="Reply.Leaf.example"))
    local, _, domain = mail.reply_to.partition("@")
    assert domain == "reply.leaf.example" and read_local_part(SECRET, local).message_id == 12
    mailto = mail.headers["List-Unsubscribe"].split("<mailto:")[1].rstrip(">")
    assert mailto.endswith("@reply.leaf.example")
    assert read_local_part(SECRET, mailto.partition("@")[0]).purpose == "unsubscribe"
    assert mail.headers["Message-ID"].endswith(".lifecycle.12@leaf.example>")
    default = composed(settings_with())
    assert default.reply_to.endswith("@leaf.example")
    test_mail = composed(settings_with(), context={"test": True, "test_flow": "win_back"})
    assert read_local_part(SECRET, test_mail.reply_to.partition("@")[0]).test is True


def test_a_reply_domain_that_is_no_domain_name_is_refused_naming_the_variable() -> None:
    for bad in ("reply_leaf.example", "-x.example", "a..b", "x" * 64 + ".example", "a b"):
        with pytest.raises(ConfigError, match="LIFECYCLE_REPLY_DOMAIN"):
            settings_with(LIFECYCLE_REPLY_DOMAIN=bad)


def our_sent_mail(app: App) -> tuple[int, dict[str, str]]:
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    path = next(app.settings.outbox_dir.rglob("*.eml"))
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return mid, {k: str(v) for k, v in mail.items()}


def post(web: TestClient, to: str, subject: str = "Re: Thanks") -> dict[str, Any]:
    answer = web.post(f"/webhooks/sendgrid/inbound?key={inbound_key(SECRET)}",
                      files={name: (None, value) for name, value in {
                          "from": "Sam <b0@example.com>", "to": to, "subject": subject,
                          "text": "Lovely, thanks", "headers": f"Message-ID: <{to}.r@x>\n"}.items()})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_reply_and_a_mailto_unsubscribe_to_the_short_addresses_are_matched(
        app: App, web: TestClient) -> None:
    mid, headers = our_sent_mail(app)
    assert headers["Reply-To"].startswith("r-") and len(headers["Reply-To"].split("@")[0]) <= 64
    assert post(web, headers["Reply-To"].upper())["message_id"] == mid
    mailto = headers["List-Unsubscribe"].split("<mailto:")[1].rstrip(">")
    assert post(web, mailto, "unsubscribe")["unsubscribed"] is True


def test_the_old_long_addresses_of_mails_already_out_are_matched_for_a_year_after_sending(
        app: App, web: TestClient) -> None:
    mid, _headers = our_sent_mail(app)
    old_reply = f"reply+{sign(SECRET, 'reply', {'m': mid})}@example.com"
    old_unsubscribe = f"unsubscribe+{sign(SECRET, 'unsubscribe', {'c': 1, 'm': mid})}@example.com"
    assert post(web, old_reply)["message_id"] == mid
    with app.engine.begin() as conn:  # the same mail, sent just over a year ago
        conn.execute(update(Message).where(Message.id == mid).values(
            sent_at=T0 - LEGACY_GRACE - timedelta(minutes=1)))
    assert post(web, old_reply) == {"matched": False}
    assert post(web, old_unsubscribe, "unsubscribe") == {"matched": False}
    with app.engine.begin() as conn:
        conn.execute(update(Message).where(Message.id == mid).values(
            sent_at=T0 - LEGACY_GRACE + timedelta(minutes=1)))
    assert post(web, old_unsubscribe, "unsubscribe")["unsubscribed"] is True
    with app.engine.connect() as conn:
        assert conn.execute(select(Suppression.scope)).scalar_one() == "marketing"


# ------------------------------------------------------------------ Feedback-ID

def test_the_feedback_id_names_flow_step_template_and_sender_sanitised_and_bounded() -> None:
    assert composed(settings_with()).headers["Feedback-ID"] == \
        "win_back:first:winback_1:leaf.example"
    assert composed(settings_with(), flow=None, step=None).headers["Feedback-ID"] == \
        "none:none:winback_1:leaf.example"
    assert composed(settings_with(), context={"test": True, "test_flow": "win_back"}) \
        .headers["Feedback-ID"] == "test:first:winback_1:leaf.example"
    odd = feedback_id("a:b c\r\nX-Evil: 1", "ü" * 5, "t" * 300, "")
    fields = odd.split(":")
    assert len(fields) == 4 and fields[0] == "a-b-c-X-Evil-1" and fields[1] == "none"
    assert len(fields[2]) == 40 and fields[3] == "none"
    assert all(c.isascii() and c.isprintable() for c in odd)


# ------------------------------------------------------------------ UTM

UTM = utm_for("win_back", "first")


def test_tagging_keeps_query_and_fragment_adds_what_is_missing_and_is_idempotent() -> None:
    url = "https://shop.example/c/tea?sort=new&q=gr%C3%BCn%20tee#reviews"
    tagged = tag(url, UTM)
    assert tagged == ("https://shop.example/c/tea?sort=new&q=gr%C3%BCn%20tee&utm_source=lifecycle"
                      "&utm_medium=email&utm_campaign=win_back&utm_content=first#reviews")
    assert tag(tagged, UTM) == tagged
    assert tag("https://shop.example/?utm_campaign=mine", UTM) == (
        "https://shop.example/?utm_campaign=mine&utm_source=lifecycle&utm_medium=email"
        "&utm_content=first")
    assert tag("https://shop.example", {"campaign": "spring sale"}) == \
        "https://shop.example/?utm_campaign=spring%20sale"  # a bare origin gets its "/"
    for untouched in ("mailto:shop@example.com", "/relative", "", None):
        assert tag(untouched, UTM) == untouched
    assert tag(url, {}) == url


def test_a_per_customer_value_is_tagged_as_its_whole_url_would_be() -> None:
    shops = ("https://shop.example", "https://shop.example/", "https://shop.example?x=1",
             "https://shop.example#top", "https://shop.example/?utm_source=mine", "ftp://shop",
             "", "https://shop.example?x=a&")
    values = ("eyJjIjo3fQ.Ab-_~9", "utm_source", "a&b", "a=b", "a#b", "LIFECYCLEVALUEMARK")
    for shop in shops:
        for value in values:
            for utm in (UTM, {"campaign": "spring sale"}, {}):
                assert tag_value(f"{shop}/?ref=", value, utm) == \
                    tag(f"{shop}/?ref={value}", utm), (shop, value, utm)
    assert tag_value("https://shop.example/?ref=", "eyJjIjo3fQ.Ab", UTM) == (
        "https://shop.example/?ref=eyJjIjo3fQ.Ab&utm_source=lifecycle&utm_medium=email"
        "&utm_campaign=win_back&utm_content=first")


def test_a_flow_file_turns_utm_off_or_overrides_fields() -> None:
    assert utm_for("f", "s", False) == {}
    assert utm_for("f", "s", {"campaign": "spring", "content": False}) == {
        "source": "lifecycle", "medium": "email", "campaign": "spring"}
    assert utm_for(None, None) == {"source": "lifecycle", "medium": "email"}


def flow_file(tmp_path: Path, utm: str) -> Path:
    path = tmp_path / "spring.yaml"
    path.write_text("trigger:\n  first_order: {}\n" + utm + "steps:\n  - id: hello\n"
                    "    send: winback_1\n", encoding="utf-8")
    return path


CONTEXT = Context.from_folders(ROOT / "templates" / "email", set())


def test_utm_in_a_flow_file_is_parsed_and_bad_values_are_named_with_their_line(
        tmp_path: Path) -> None:
    assert load_flow(flow_file(tmp_path, ""), CONTEXT).utm is None
    assert load_flow(flow_file(tmp_path, "utm: false\n"), CONTEXT).utm is False
    assert load_flow(flow_file(tmp_path, "utm: true\n"), CONTEXT).utm is None
    assert load_flow(flow_file(tmp_path, "utm: {campaign: spring, content: false}\n"),
                     CONTEXT).utm == {"campaign": "spring", "content": False}
    for text, message in (("utm: 3\n", "utm takes false"),
                          ("utm: {campain: x}\n", "unknown setting 'campain'"),
                          ("utm: {campaign: ''}\n", "utm campaign must be text"),
                          ("utm: {source: [a]}\n", "utm source must be text")):
        with pytest.raises(InvalidFile) as caught:
            load_flow(flow_file(tmp_path, text), CONTEXT)
        [problem] = caught.value.problems
        assert message in str(problem) and "spring.yaml:3" in str(problem)


def test_shop_links_carry_utm_and_our_own_links_do_not(app: App) -> None:
    with app.engine.begin() as conn:
        cid = add_customer(conn, "ann", T0)
        customer = conn.execute(select(Customer.__table__).where(Customer.id == cid)).one()
        context = build_context(conn, app.settings, customer, as_of=T0, message_id=5,
                                flow="win_back", step="first")
        off = build_context(conn, app.settings, customer, as_of=T0, message_id=5,
                            flow="win_back", step="first", utm=False)
    links = context["links"]
    for url in (links["shop"], links["review"], links["referral"], context["shop"]["url"]):
        assert "utm_source=lifecycle&utm_medium=email&utm_campaign=win_back&utm_content=first" \
            in url
    for url in (links["unsubscribe"], links["preferences"], *links["nps"]):
        assert "utm_" not in url
    assert off["links"]["shop"] == app.settings.shop_url and "utm_" not in off["links"]["review"]


def test_a_flows_utm_choice_rides_on_its_outbox_row_into_the_mail(app: App,
                                                                   tmp_path: Path) -> None:
    flow = load_flow(flow_file(tmp_path, "kind: transactional\nutm: {campaign: spring}\n"),
                     CONTEXT)
    with app.engine.begin() as conn:
        cid = add_customer(conn, "ann", T0, timezone=daytime_zone(T0))
        add_order(conn, cid, T0 - timedelta(days=1), 30)
        enroll(conn, flow, cid, "order:o1", T0)
        advance(conn, {"spring": flow}, T0, policies=Policies(), default_tz="UTC")
        assert conn.execute(select(Message.context)).scalar_one()["utm"] == {"campaign": "spring"}
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))["sent"] == 1
    raw = next(app.settings.outbox_dir.rglob("*.eml")).read_bytes()
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    text = content(mail.get_body(("plain",)))
    assert "utm_source=lifecycle&utm_medium=email&utm_campaign=spring&utm_content=hello" in text


# ------------------------------------------------------------------ warnings at start

def test_a_production_transport_is_warned_about_http_placeholder_domains_and_no_address() -> None:
    base = {"LIFECYCLE_MAIL_TRANSPORT": "smtp", "LIFECYCLE_BASE_URL": "https://lc.leaf.shop",
            "LIFECYCLE_SHOP_URL": "https://leaf.shop", "LIFECYCLE_SHOP_ADDRESS": "1 Tea Lane",
            "LIFECYCLE_MAIL_FROM": "Leaf <hello@leaf.shop>"}
    assert findings(load_settings(base)) == []
    found = findings(load_settings({**base, "LIFECYCLE_BASE_URL": "http://lc.leaf.shop",
                                    "LIFECYCLE_REPLY_DOMAIN": "reply.example.org",
                                    "LIFECYCLE_SHOP_ADDRESS": "",
                                    "LIFECYCLE_MAIL_FROM": "Leaf <shop@mail.example.com>"}))
    assert [f.split(" ")[0] for f in found] == ["LIFECYCLE_BASE_URL", "LIFECYCLE_MAIL_FROM",
                                                "LIFECYCLE_REPLY_DOMAIN",
                                                "LIFECYCLE_SHOP_ADDRESS"]
    assert [f.split(" ")[0] for f in findings(load_settings(
        {**base, "LIFECYCLE_SHOP_URL": "http://leaf.shop"}))] == ["LIFECYCLE_SHOP_URL"]
    sendgrid = load_settings({**base, "LIFECYCLE_MAIL_TRANSPORT": "sendgrid",
                              "SENDGRID_API_KEY": "SG.x", "LIFECYCLE_MAIL_FROM": "A <a@localhost>"})
    assert [f.split(" ")[0] for f in findings(sendgrid)] == ["LIFECYCLE_MAIL_FROM"]
    assert findings(load_settings({**base, "LIFECYCLE_MAIL_TRANSPORT": "file",
                                   "LIFECYCLE_BASE_URL": "http://x"})) == []
    for placeholder in ("example.com", "EXAMPLE.net", "shop.example", "a.test", "localhost",
                        "x.localhost", "mail.example.org."):
        assert placeholder_domain(placeholder), placeholder
    for real in ("leaf.shop", "example.com.leaf.shop", "myexample.com"):
        assert not placeholder_domain(real), real


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lifecycle", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def warnings_of(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """What ``lifecycle <args>`` logs until it is up (its web app listens, or its worker
    started), then stops it with SIGTERM."""
    process = start(args, {**env, "LIFECYCLE_LOG_LEVEL": "INFO"}, cwd)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "listens on" in line or ("--no-web" in args and "worker started" in line):
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(60), "".join(lines)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=10)
    assert process.returncode == 0, "".join(lines)
    return "".join(lines)


@pytest.mark.parametrize("command", [["web"], ["run"], ["run", "--no-web"]])
def test_the_processes_warn_at_start_with_smtp_and_not_with_the_file_transport(
        cli_env: dict[str, str], tmp_path: Path, command: list[str]) -> None:
    env = {**cli_env, "LIFECYCLE_TICK_SECONDS": "0.2"}
    args = command + ([] if "--no-web" in command else ["--port", str(free_port())])
    err = warnings_of(args, {**env, "LIFECYCLE_MAIL_TRANSPORT": "smtp"}, tmp_path)
    for name in ("LIFECYCLE_BASE_URL is http://127.0.0.1:8000", "LIFECYCLE_MAIL_FROM is on "
                 "example.com", "LIFECYCLE_SHOP_ADDRESS is empty"):
        assert name in err, err
    assert "starts with the smtp transport" in err
    args = command + ([] if "--no-web" in command else ["--port", str(free_port())])
    assert "transport, but" not in warnings_of(args, env, tmp_path)


def test_worker_and_scheduler_warn_at_start_too(app: App, caplog: pytest.LogCaptureFixture) -> None:
    from lifecycle import runtime
    from lifecycle.processes import prepare

    app.settings = replace(app.settings, mail_transport="smtp")  # type: ignore[misc]
    with caplog.at_level(logging.WARNING, logger="lifecycle.mail.readiness"):
        try:
            prepare(app, "The worker")
        finally:
            runtime.set_app(None)
    assert any("The worker starts with the smtp transport, but LIFECYCLE_SHOP_ADDRESS" in r.message
               for r in caplog.records)

