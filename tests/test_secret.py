"""One secret key, right everywhere: kept with the data when unset, refused when guessable,
rotated with a grace period."""

from __future__ import annotations

import email
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from lifecycle.app import App
from lifecycle.clock import system_clock
from lifecycle.config import ConfigError, load_settings
from lifecycle.links import BadToken, inbound_key, sign, verify
from lifecycle.mail.context import links
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import InstanceSecret, Message
from lifecycle.secret import SECRET_KEY, shared_key, stored_key
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from tests.factories import account, add_campaign, logged_in

ROOT = Path(__file__).resolve().parent.parent
OLD_KEY = "Ok3vX9mQ2zL7wR4pN8yB1cD6hJ5gS0eT"
NEW_KEY = "Nw8kR2pZ5xM9qT3vL6yC1bF4hJ7dS0gA"
#: The placeholder docker-compose.yml carried until issue 15: anyone could sign with it.
OLD_COMPOSE_PLACEHOLDER = "change-me-to-a-long-random-secret-of-32-chars-or-more"


def environment(database_url: str, tmp_path: Path, **more: str) -> dict[str, str]:
    """A process environment with no Lifecycle variable but the database, outbox and ``more``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "SENDGRID_"))}
    env.update({"LIFECYCLE_DATABASE_URL": database_url,
                "LIFECYCLE_OUTBOX_DIR": str(tmp_path / "outbox"), **more})
    return env


def lifecycle_settings(env: dict[str, str]):  # type: ignore[no-untyped-def]
    return load_settings({k: v for k, v in env.items() if k.startswith("LIFECYCLE_")})


# ------------------------------------------------------------------ refused keys


@pytest.mark.parametrize(("value", "why"), [
    (OLD_COMPOSE_PLACEHOLDER, "placeholder printed in Lifecycle's documentation"),
    ("change-me-please-to-something-long-and-random", "reads like a placeholder"),
    ("your-secret-here-0123456789-abcdefghij", "reads like a placeholder"),
    ("s" * 40, "one short piece repeated"),
    ("ab" * 20, "one short piece repeated"),
    ("aabbaabbaabbaabbaabbaabbaabbaabbccdd", "only 4 different characters"),
    ("Kx7-short", "at least 32 characters (it has 9)"),
    ("qwertyuiopasdfghjklzxcvbnm123456", "guessable patterns"),  # keyboard rows
    ("abcdefghijklmnopqrstuvwxyz012345", "guessable patterns"),  # sequences
    ("passwordpasswordpassword12345678", "guessable patterns"),  # words
    ("lifecycle-lifecycle-lifecycle-2024!", "guessable patterns"),
])
def test_a_short_placeholder_or_regular_key_is_refused_naming_the_setting_and_why(
        value: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"LIFECYCLE_SECRET_KEY": value})
    message = str(refused.value)
    assert message.startswith("LIFECYCLE_SECRET_KEY is refused: ") and why in message
    assert "\n" not in message and value not in message


def test_random_keys_as_the_readme_makes_them_pass() -> None:
    import secrets

    for key in (secrets.token_urlsafe(32), secrets.token_hex(16), secrets.token_urlsafe(24)):
        assert load_settings({"LIFECYCLE_SECRET_KEY": key}).secret_key == key


def test_a_published_key_is_refused_among_the_previous_keys_too() -> None:
    with pytest.raises(ConfigError, match=r"LIFECYCLE_SECRET_KEY_PREVIOUS \(key 2\) is refused"):
        load_settings({"LIFECYCLE_SECRET_KEY": NEW_KEY,
                       "LIFECYCLE_SECRET_KEY_PREVIOUS": f"{OLD_KEY}, {OLD_COMPOSE_PLACEHOLDER}"})


def test_the_old_compose_placeholder_stops_a_command_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "LIFECYCLE_SECRET_KEY": OLD_COMPOSE_PLACEHOLDER,
           "LIFECYCLE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run([sys.executable, "-m", "lifecycle", "web"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "LIFECYCLE_SECRET_KEY is refused" in done.stderr and "Traceback" not in done.stderr


#: ``LIFECYCLE_SECRET_KEY=value``, ``LIFECYCLE_SECRET_KEY: value`` or ``"…": "value"`` in a file.
_ASSIGNED = re.compile(r"""LIFECYCLE_SECRET_KEY(?:_PREVIOUS)?["']?\s*[=:]\s*["']?([^\s"'`,]+)""")


def test_every_secret_key_printed_in_the_readme_or_the_compose_setup_is_refused() -> None:
    files = [ROOT / "README.md", ROOT / "docker-compose.yml", ROOT / "Dockerfile",
             *ROOT.glob("*.env*"), *ROOT.glob("docs/**/*.md")]
    printed = {value for path in files if path.is_file()
               for value in _ASSIGNED.findall(path.read_text(encoding="utf-8"))
               if not value.startswith("$")}  # ${…}, $(…): taken from the environment or made
    assert printed, "the README shows what a refused key looks like"
    for value in printed:
        with pytest.raises(ConfigError, match="LIFECYCLE_SECRET_KEY is refused"):
            load_settings({"LIFECYCLE_SECRET_KEY": value})


def test_the_sendgrid_transport_starts_without_a_secret_key_since_the_database_keeps_one() -> None:
    settings = load_settings({"LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": "SG.x"})
    assert settings.mail_transport == "sendgrid" and settings.secret_key is None


# ------------------------------------------------------------------ the key kept with the data


def _send_one_mail_in_a_process_of_its_own(env: dict[str, str], tmp_path: Path) -> str:
    """``lifecycle run --no-web`` sends one due mail; the List-Unsubscribe path of the .eml."""
    process = subprocess.Popen([sys.executable, "-m", "lifecycle", "run", "--no-web"],
                               env={**env, "LIFECYCLE_TICK_SECONDS": "0.2"}, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "outbox").rglob("*.eml")):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the worker sent nothing within a minute"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    [eml] = list((tmp_path / "outbox").rglob("*.eml"))
    mail = email.message_from_bytes(eml.read_bytes())
    link = re.match(r"<([^>]+)>", mail["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
    return link.split("/u/", 1)[1]


def test_a_link_a_worker_process_signed_works_in_another_web_app_and_after_a_restart(
        fresh_database_url: str, tmp_path: Path) -> None:
    """No LIFECYCLE_SECRET_KEY anywhere: the worker process and both web apps read the key
    kept in the database (each made a random key of its own before, and the link got 400)."""
    env = environment(fresh_database_url, tmp_path, LIFECYCLE_LOG_LEVEL="WARNING")
    setup = App(lifecycle_settings(env))
    with setup.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, system_clock.now())
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    setup.close()
    token = _send_one_mail_in_a_process_of_its_own(env, tmp_path)

    web_app = App(lifecycle_settings(env))
    try:
        answer = TestClient(create_app(web_app)).post(
            f"/u/{token}", content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    finally:
        web_app.close()

    restarted = App(lifecycle_settings(env))
    try:
        web = TestClient(create_app(restarted))
        assert web.get(f"/u/{token}").status_code == 200
        preferences = links(restarted.settings, cid, mid)["preferences"]
        assert web.get(preferences.removeprefix(restarted.settings.base_url)).status_code == 200
        assert restarted.keys.source == "database"
    finally:
        restarted.close()


def test_processes_starting_at_once_on_a_fresh_database_end_up_with_one_key(
        fresh_database_url: str, tmp_path: Path) -> None:
    """Four real processes ask for the key at the same instant: one makes it, all get it."""
    go = time.time() + 4  # every process waits for this moment, then asks at once
    script = ("import sys, time; from datetime import datetime, timezone\n"
              "from lifecycle.db import make_engine; from lifecycle.secret import shared_key\n"
              "engine = make_engine(sys.argv[1]); engine.connect().close()\n"
              "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
              "key, made = shared_key(engine, datetime.now(timezone.utc))\n"
              "print(key, made)\n")
    processes = [subprocess.Popen([sys.executable, "-c", script, fresh_database_url, str(go)],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        answers.append(out.split())
    keys = {key for key, _ in answers}
    assert len(keys) == 1, "processes on one database signed with different keys"
    assert len(next(iter(keys))) >= 43  # token_urlsafe(32): 256 random bits
    assert [made for _, made in answers].count("True") == 1
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": fresh_database_url}))
    try:
        assert app.keys.current == keys.pop()
    finally:
        app.close()


def test_a_process_that_finds_no_key_while_another_inserts_one_takes_the_others(
        fresh_database_url: str) -> None:
    """The race in slow motion, on two connections: one process has inserted its key and not
    committed yet when the other looks; the other must wait and take that key, not its own."""
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": fresh_database_url}))
    got: list[tuple[str, bool]] = []
    try:
        first = app.engine.connect()
        transaction = first.begin()
        first.execute(InstanceSecret.__table__.insert().values(
            name=SECRET_KEY, value="the-first-process-key-" + "Zq8x" * 4,
            created_at=datetime.now(UTC)))
        other = threading.Thread(target=lambda: got.append(shared_key(app.engine,
                                                                      datetime.now(UTC))))
        other.start()
        _wait_until_blocked(app, first, other)
        transaction.commit()
        first.close()
        other.join(60)
        assert got == [("the-first-process-key-" + "Zq8x" * 4, False)]
        with app.engine.connect() as conn:
            assert conn.execute(select(InstanceSecret.value)).scalars().all() == [got[0][0]]
    finally:
        app.close()


def _wait_until_blocked(app: App, holder, other: threading.Thread) -> None:  # type: ignore[no-untyped-def]
    """Until ``other`` waits for ``holder``'s uncommitted insert (PostgreSQL: a lock wait
    in pg_stat_activity; SQLite: the write lock every transaction takes, so a short wait)."""
    if app.engine.dialect.name != "postgresql":
        time.sleep(0.5)
        assert other.is_alive(), "the second process did not wait for the first's write lock"
        return
    deadline = time.monotonic() + 30
    holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
    while True:
        with app.engine.connect() as look:  # a transaction of its own: a fresh view of activity
            waiting = look.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND :holder = ANY(pg_blocking_pids(pid))"),
                {"holder": holder_pid}).scalar_one()
        if waiting:
            return
        assert other.is_alive() and time.monotonic() < deadline, "no process waited"
        time.sleep(0.05)


def test_the_key_from_the_environment_is_used_and_nothing_is_stored(
        fresh_database_url: str) -> None:
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": fresh_database_url,
                             "LIFECYCLE_SECRET_KEY": NEW_KEY}))
    try:
        assert (app.keys.current, app.keys.source) == (NEW_KEY, "environment")
        assert app.settings.secret_key == NEW_KEY
        with app.engine.connect() as conn:
            assert stored_key(conn) is None
    finally:
        app.close()


# ------------------------------------------------------------------ rotation


def test_links_sessions_and_the_inbound_url_of_the_previous_key_work_while_it_is_listed(
        fresh_database_url: str, tmp_path: Path) -> None:
    env = environment(fresh_database_url, tmp_path, LIFECYCLE_SECRET_KEY=OLD_KEY)
    before = App(lifecycle_settings(env))
    with before.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, system_clock.now())
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    ids: list[int] = []
    dispatch(before, ids.extend)
    send_batch(before, ids, transport=FileTransport(before.settings.outbox_dir))
    account(before, "ada@shop.example", "admin")
    session = logged_in(TestClient(create_app(before)), "ada@shop.example").cookies
    assert session, "the login gave no session cookie"
    old_links = links(before.settings, cid, mid)
    old_inbound = inbound_key(before.keys)
    old_reply = sign(before.keys, "reply", {"m": mid})
    before.close()

    def reply_matched(app: App) -> bool:
        """A customer's reply to the ``reply+TOKEN`` address of the mail sent before."""
        answer = TestClient(create_app(app)).post(
            f"/webhooks/sendgrid/inbound?key={inbound_key(NEW_KEY)}",
            data={"from": "b0@example.com", "to": f"reply+{old_reply}@example.com",
                  "subject": "Re: thanks", "text": "Lovely tea."})
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["matched"])

    def pages(app: App) -> tuple[int, int, int]:
        web = TestClient(create_app(app), cookies=dict(session))
        customers = web.get("/customers", follow_redirects=False).status_code
        unsubscribe = web.get(old_links["unsubscribe"].removeprefix(app.settings.base_url))
        inbound = web.post(f"/webhooks/sendgrid/inbound?key={old_inbound}",
                           data={"from": "ada@example.com", "to": "someone@shop.example",
                                 "subject": "hello", "text": "hello"})
        return customers, unsubscribe.status_code, inbound.status_code

    rotating = App(lifecycle_settings({**env, "LIFECYCLE_SECRET_KEY": NEW_KEY,
                                       "LIFECYCLE_SECRET_KEY_PREVIOUS": OLD_KEY}))
    try:
        customers, unsubscribe, inbound = pages(rotating)
        assert (customers, unsubscribe) == (200, 200) and inbound != 403
        new_token = links(rotating.settings, cid, mid)["unsubscribe"].rsplit("/", 1)[1]
        assert verify(NEW_KEY, "unsubscribe", new_token) == {"c": cid, "m": mid}
        with pytest.raises(BadToken):
            verify(OLD_KEY, "unsubscribe", new_token)  # new links: the new key alone
        assert inbound_key(rotating.keys) == inbound_key(NEW_KEY)
        assert reply_matched(rotating)
    finally:
        rotating.close()

    rotated = App(lifecycle_settings({**env, "LIFECYCLE_SECRET_KEY": NEW_KEY}))
    try:  # the grace period is over: what the old key signed is refused
        assert pages(rotated) == (303, 400, 403)
        assert not reply_matched(rotated)
    finally:
        rotated.close()


def unsubscribe_path_signed_with_the_kept_key(env: dict[str, str]) -> str:
    """The unsubscribe link (its path) of a mail, signed by a process without
    LIFECYCLE_SECRET_KEY: with the key kept in the database."""
    kept = App(lifecycle_settings(env))
    try:
        with kept.engine.begin() as conn:
            [mid] = add_campaign(conn, 1, system_clock.now())
            cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
        assert kept.keys.source == "database"
        return links(kept.settings, cid, mid)["unsubscribe"].removeprefix(kept.settings.base_url)
    finally:
        kept.close()


def test_moving_from_the_kept_key_to_an_explicit_one_keeps_old_links_while_database_is_listed(
        fresh_database_url: str, tmp_path: Path) -> None:
    env = environment(fresh_database_url, tmp_path)
    path = unsubscribe_path_signed_with_the_kept_key(env)

    def status(**more: str) -> int:
        app = App(lifecycle_settings({**env, "LIFECYCLE_SECRET_KEY": NEW_KEY, **more}))
        try:
            return TestClient(create_app(app)).get(path).status_code
        finally:
            app.close()

    assert status(LIFECYCLE_SECRET_KEY_PREVIOUS="database") == 200
    assert status() == 400


def test_offer_codes_come_from_the_current_key_during_a_rotation() -> None:
    from lifecycle.links import KeyRing, offer_code

    rotating = KeyRing(NEW_KEY, (OLD_KEY,))
    code = offer_code(rotating, "BACK10", "win_back", 7, "ten")
    assert code == offer_code(NEW_KEY, "BACK10", "win_back", 7, "ten")
    assert code != offer_code(OLD_KEY, "BACK10", "win_back", 7, "ten")


# ------------------------------------------------------------------ keys that disagree


def test_a_process_with_its_own_key_beside_the_kept_one_says_so_and_refused_links_are_logged(
        fresh_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A web process given LIFECYCLE_SECRET_KEY while workers without it sign with the key
    kept in the database: both the start and every refused link say what is wrong, once a
    minute at most for links."""
    env = environment(fresh_database_url, tmp_path)
    path = unsubscribe_path_signed_with_the_kept_key(env)

    app = App(lifecycle_settings({**env, "LIFECYCLE_SECRET_KEY": NEW_KEY}))
    try:
        with caplog.at_level("WARNING"):
            assert app.keys.source == "environment"
        assert any("the database also keeps a generated key" in r.getMessage()
                   for r in caplog.records)
        caplog.clear()
        web = TestClient(create_app(app))
        with caplog.at_level("WARNING", logger="lifecycle.web.linked"):
            assert web.get(path).status_code == 400
            assert web.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 400
        refused = [r.getMessage() for r in caplog.records if "link(s) refused" in r.getMessage()]
        assert len(refused) == 1 and "matches none of this process's secret keys" in refused[0]
    finally:
        app.close()


def test_a_process_with_the_same_key_as_the_kept_one_or_none_kept_says_nothing(
        fresh_database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = App(load_settings({"LIFECYCLE_DATABASE_URL": fresh_database_url,
                             "LIFECYCLE_SECRET_KEY": NEW_KEY}))
    try:
        with caplog.at_level("WARNING"):
            assert app.keys.current == NEW_KEY
        assert not [r for r in caplog.records if "keeps a generated key" in r.getMessage()]
    finally:
        app.close()
