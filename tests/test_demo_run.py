"""``lifecycle demo`` as a newcomer runs it: a real process on a fresh SQLite file in an empty
folder, mail from the shipped flows in ``outbox/`` within a minute, events, replies, NPS
answers and reviews on the timelines, figures on the pages, links to the port it serves on, Ctrl-C."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli.demo import DEMO_KEY
from lifecycle.config import load_settings
from lifecycle.locales import SHIPPED
from lifecycle.models import ApiKey, Touchpoint
from lifecycle.staff import check_password
from tests.factories import csrf_of
from tests.ports import free_port

pytestmark = pytest.mark.slow

#: What the demo must show within a minute of its start (the README promises it).
MINUTE = 60.0
KINDS = {"order_placed", "email_sent", "email_delivered", "email_opened", "email_clicked",
         "replied", "feedback", "review"}


def clean_env() -> dict[str, str]:
    """The environment of a fresh checkout: no LIFECYCLE_ or SENDGRID_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "SENDGRID_"))}
    return {**env, "PYTHONUNBUFFERED": "1"}


def flows_in(outbox: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in outbox.glob("*/*.eml"):
        with path.open("rb") as handle:
            flow = email.message_from_binary_file(handle, policy=email.policy.default)[
                "X-Lifecycle-Flow"]
        found.setdefault(str(flow), []).append(path)
    return found


def kinds_in(app: App) -> set[str]:
    with app.engine.connect() as conn:
        return set(conn.execute(select(Touchpoint.kind).where(
            Touchpoint.kind.in_(KINDS)).distinct()).scalars())


def links_in(path: Path) -> list[str]:
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text = "\n".join(part.get_content() for part in mail.walk()
                     if part.get_content_type() in ("text/plain", "text/html"))
    return re.findall(r"https?://[^\s\"'<>]+", text + mail["List-Unsubscribe"])


def all_steps(page: str) -> dict[str, int]:
    """The figures of a flow results page's "all steps" row by their column's heading
    (decided, sent, delivered, human opens …)."""
    head = page[page.index('<th scope="col">Step</th>'):]
    names = [unescape(n).replace("\u00ad", "") for n in re.findall(  # soft hyphens: invisible
        r'<th scope="col" class="n">([^<]+)</th>', head[:head.index("</tr>")])]
    row = page[page.index(">all steps<"):]
    row = row[:row.index("</tr>")]
    figures = [int(n.replace(",", "")) for n in re.findall(r'<td class="n">\s*([\d,]+)', row)]
    return dict(zip(names, figures, strict=False))


def test_the_demo_shows_the_shipped_flows_mailing_and_customers_answering_within_a_minute(
        tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "demo", "--customers", "2000", "--port", str(port),
         "--seconds", "240"], env=clean_env(), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    app = App(replace(load_settings({}), database_url=make_url(
        f"sqlite:///{tmp_path / 'lifecycle.db'}")))
    try:
        lines = []
        while process.stdout is not None:  # what it prints before it starts the processes
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            lines.append(line)
            if line.startswith(("Running for", "Press Ctrl-C")):
                break
        said = "".join(lines)
        started = time.monotonic()
        assert "2000 customers" in said and str(tmp_path / "outbox") in said
        assert "a day every 2 s" in said  # says what the clock does
        assert "LIFECYCLE_SHOP_NAME='Leaf & Bean'" in said  # and which settings it sets itself
        assert "LIFECYCLE_SHOP_URL='https://leaf-and-bean.example'" in said
        assert "--speed 0.02" in said  # how to try pausing a scheduled mail
        assert "/insights (repurchase rate, cohorts" in said  # where a manager's figures are
        password = said.split("password ")[1].split()[0]
        while True:
            flows = flows_in(tmp_path / "outbox")
            kinds = kinds_in(app) if (tmp_path / "lifecycle.db").exists() else set()
            if len(flows) >= 5 and kinds == KINDS:
                print(f"mail of {sorted(flows)} and every kind after "
                      f"{time.monotonic() - started:.0f} s")
                break
            assert time.monotonic() - started < MINUTE, \
                f"after a minute: mail of {sorted(flows)}, timeline kinds {sorted(kinds)}"
            time.sleep(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True,
                          timeout=30) as web:
            login = web.get("/login")
            assert web.post("/login", data={"email": "admin@demo.invalid", "password": password,
                                            "csrf": csrf_of(login.text)}).status_code == 200
            steps = all_steps(web.get("/flows/thank_you").text)
            assert steps["decided"] >= steps["sent"] > 0, steps
            assert steps["delivered"] > 0 and steps["human opens"] > 0, steps
            segments = web.get("/segments").text
            promoters = re.search(r"<code class=\"note\">promoter</code></td><td>[^<]*</td>"
                                  r"<td class=\"n\">([\d,]+)", segments)
            assert promoters and int(promoters.group(1)) > 0  # NPS answers moved segments
            reviewers = re.search(r"<code class=\"note\">reviewer</code></td><td>[^<]*</td>"
                                  r"<td class=\"n\">([\d,]+)", segments)
            assert reviewers and int(reviewers.group(1)) > 0  # reviews came in through the API
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        last = ""
        while process.stdout is not None and (line := process.stdout.readline()):
            last = line
        process.wait(timeout=90)
        err = process.stderr.read() if process.stderr else ""
        app.close()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "could not post" not in err  # the audience acted only while the web app listened
    assert last.startswith("Lifecycle stopped.")  # said once everything had stopped
    for paths in flows.values():  # every link of every mail leads to the port it serves on,
        for link in links_in(paths[0]):  # or to the sample shop's example site
            assert link.startswith((f"http://127.0.0.1:{port}",
                                    "https://leaf-and-bean.example")), link
    first = email.message_from_bytes(next(iter(flows.values()))[0].read_bytes(),
                                     policy=email.policy.default)
    assert first["From"] == "Leaf & Bean <hello@leafandbean.example>"  # the sample shop
    mails = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
             for paths in flows.values() for path in paths]
    languages = {html_lang.group(1) for mail in mails
                 if (part := mail.get_body(("html",))) is not None
                 and (html_lang := re.search(r'<html lang="([a-z]+)', part.get_content()))}
    assert set(SHIPPED) <= languages, languages  # customers read each shipped language
    pictures = [link for paths in flows.values() for path in paths for link in links_in(path)
                if link.startswith("https://leaf-and-bean.example/images/products/")]
    assert pictures  # the order lines' products, shown with their pictures
    asks = flows.get("advocacy_ask", [])
    review_links = [link for path in asks for link in links_in(path) if "/reviews" in link]
    assert all(link.startswith("https://leaf-and-bean.example/") for link in review_links)


def test_a_second_start_resumes_the_shop_and_says_how_to_log_in_again(tmp_path: Path) -> None:
    env = clean_env()
    port = free_port()
    first = subprocess.run([sys.executable, "-m", "lifecycle", "demo", "--customers", "300",
                            "--seconds", "1", "--port", str(port)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "300 customers" in first.stdout
    assert str(tmp_path / "lifecycle.db") in first.stdout
    assert f"http://127.0.0.1:{port}/" in first.stdout
    staff_line = next(line for line in first.stdout.splitlines() if line.startswith("Staff:"))
    password = staff_line.split("password ")[1].split()[0]
    demo = App(load_settings({"LIFECYCLE_DATABASE_URL": f"sqlite:///{tmp_path / 'lifecycle.db'}"}))
    with demo.engine.begin() as conn:  # the printed password logs in
        assert check_password(conn, "admin@demo.invalid", password, demo.clock.now()).role \
            == "admin"
    again = subprocess.run([sys.executable, "-m", "lifecycle", "demo", "--seconds", "0",
                            "--port", str(port)], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert re.search(r"already holds 3\d\d customers", again.stdout)  # and no more were loaded
    assert "shop time resumes at" in again.stdout
    command = "lifecycle staff password admin@demo.invalid --generate"
    assert command in again.stdout  # no new password printed, but how to get one
    reset = subprocess.run([sys.executable, "-m", "lifecycle", *command.split()[1:]], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0, reset.stderr
    new_password = reset.stdout.strip().rsplit(" ", 1)[1]
    with demo.engine.begin() as conn:
        assert check_password(conn, "admin@demo.invalid", new_password, demo.clock.now())
        assert check_password(conn, "admin@demo.invalid", password, demo.clock.now()) is None
        live_keys = conn.execute(select(func.count()).select_from(ApiKey).where(
            ApiKey.name == DEMO_KEY, ApiKey.revoked_at.is_(None))).scalar_one()
    assert live_keys == 1  # the first start's key for its audience was revoked by the second
    demo.close()
