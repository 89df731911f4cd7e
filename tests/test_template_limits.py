"""A runaway template fails alone: on the managers' preview page (the web app answering other
requests meanwhile) and in a worker's batch (its batch-mates sent)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

import lifecycle.mail.templates as templates
from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.models import Customer, Message, Touchpoint
from lifecycle.processes import prepare, running_worker
from lifecycle.scheduler import mail_job
from tests.factories import WEB_SECRET, WEB_T0, account, add_campaign, logged_in

ROOT = Path(__file__).resolve().parent.parent
#: Runs for minutes without writing anything (10^8 loop turns): only the time limit stops it.
LOOPS = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
#: A 2 GB string, unless refused before it is made.
HUGE = "{{ 'a' * 2000000000 }}"
SECONDS = 2.0


@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        broker_url: str | None) -> Iterator[App]:
    """An App whose thank-you mail runs away for customers named Loop (time) or Huge (size)."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates" / "email", folder)
    body = folder / "thank_you" / "en" / "body.txt"
    body.write_text("{% if customer.first_name == 'Loop' %}" + LOOPS + "{% endif %}"
                    "{% if customer.first_name == 'Huge' %}" + HUGE + "{% endif %}\n"
                    + body.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(templates, "RENDER_SECONDS", SECONDS)
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key=WEB_SECRET, outbox_dir=tmp_path / "outbox",
                      templates_dir=folder, broker_url=broker_url, worker_threads=2),
              clock=ManualClock(WEB_T0))
    yield app
    app.close()


def named(app: App, names: list[str]) -> list[int]:
    """One customer per name with a thank-you mail due now; the mails' ids."""
    with app.engine.begin() as conn:
        ids = add_campaign(conn, len(names), WEB_T0)
        for mid, name in zip(ids, names, strict=True):
            cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
            conn.execute(update(Customer).where(Customer.id == cid).values(first_name=name))
    return list(ids)


@pytest.mark.parametrize("broker_url", ["stub"], indirect=True)
def test_a_runaway_preview_fails_naming_its_template_while_the_web_app_answers_other_pages(
        app: App, served: int) -> None:
    named(app, ["Loop", "Huge"])
    account(app, "max@shop.example", "manager")
    base = f"http://127.0.0.1:{served}"
    with httpx.Client(base_url=base, timeout=60) as manager:
        logged_in(manager, "max@shop.example")
        answers: dict[str, tuple[httpx.Response, float]] = {}

        def preview(customer: str) -> None:
            started = time.monotonic()
            page = manager.get("/flows/thank_you/preview", params={"customer": customer})
            answers[customer] = (page, time.monotonic() - started)

        runaway = threading.Thread(target=preview, args=("b0",))
        runaway.start()
        time.sleep(0.5)  # the preview is rendering now
        started = time.monotonic()
        other = httpx.get(f"{base}/login", timeout=10)
        other_took = time.monotonic() - started
        still_running = runaway.is_alive()
        runaway.join(30)
        preview("b1")
    assert other.status_code == 200 and other_took < 1.0 and still_running
    page, took = answers["b0"]
    assert page.status_code == 200 and SECONDS <= took < 60  # processor time: longer when busy
    assert ("This template does not render: thank_you/en/body.txt:1: stopped at a rendering limit: "
            f"rendering used more than {SECONDS:g} seconds of processor time") in page.text
    page, took = answers["b1"]
    assert page.status_code == 200 and took < 10
    assert ("thank_you/en/body.txt:1: stopped at a rendering limit: repeating a value would make "
            "2,000,000,000 characters") in page.text


def test_a_runaway_mail_fails_alone_with_its_reason_and_its_batch_mates_are_sent(
        app: App) -> None:
    ids = named(app, ["Sam", "Loop", "Ann", "Huge"])
    broker = prepare(app)
    started = time.monotonic()
    with running_worker(app, broker):
        mail_job(app)  # the scheduler's dispatch: the four mails to the broker
        statuses: dict[int, str] = {}
        while time.monotonic() - started < 30:
            with app.engine.connect() as conn:
                statuses = dict(conn.execute(select(Message.id, Message.status)).all())
            if all(s in ("sent", "failed") for s in statuses.values()):
                break
            time.sleep(0.1)
    took = time.monotonic() - started
    sam, loop, ann, huge = ids
    assert statuses == {sam: "sent", loop: "failed", ann: "sent", huge: "failed"}
    assert took < 60
    with app.engine.connect() as conn:
        errors = dict(conn.execute(select(Message.id, Message.last_error)).all())
        failed = dict(conn.execute(select(Touchpoint.message_id, Touchpoint.data).where(
            Touchpoint.kind == "email_failed")).all())
    assert errors[loop] == ("template: thank_you/en/body.txt:1: stopped at a rendering limit: "
                            f"rendering used more than {SECONDS:g} seconds of processor time, "
                            "the limit for one mail")
    assert errors[huge].startswith("template: thank_you/en/body.txt:1: stopped at a rendering "
                                   "limit: repeating a value would make 2,000,000,000")
    assert {mid: data["reason"] for mid, data in failed.items()} == {
        loop: errors[loop], huge: errors[huge]}
    assert len(list((app.settings.outbox_dir).rglob("*.eml"))) == 2
