"""Staff pages: login with a password, sessions, CSRF, roles, customer search and timeline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import insert

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.models import Customer, Touchpoint
from tests.factories import PASSWORD, account, csrf_of, logged_in
from tests.factories import WEB_T0 as T0


def a_customer(app: App) -> int:
    with app.engine.begin() as conn:
        cid = conn.execute(insert(Customer).returning(Customer.id).values(
            external_id="C7", email="ann@example.com", first_name="Ann", last_name="Lee",
            attributes={}, created_at=T0, updated_at=T0)).scalar_one()
        conn.execute(insert(Touchpoint), [
            {"customer_id": cid, "kind": "order_placed", "channel": "shop", "occurred_at": T0,
             "recorded_at": T0, "data": {"order_id": "O9", "total": "12.00", "nth": 1}},
            {"customer_id": cid, "kind": "replied", "channel": "email",
             "occurred_at": T0 + timedelta(hours=1), "recorded_at": T0,
             "data": {"text": "Why did I get this mail?"}}])
    return int(cid)


def test_an_anonymous_visitor_is_sent_to_the_login_page(web: TestClient) -> None:
    answer = web.get("/customers?q=ann", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


def test_a_wrong_password_or_a_missing_login_csrf_is_refused(app: App, web: TestClient) -> None:
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example", "wrong password!")
    assert web.get("/customers", follow_redirects=False).status_code == 303
    answer = web.post("/login", data={"csrf": "forged", "email": "sue@shop.example",
                                      "password": PASSWORD})
    assert answer.status_code == 403


def test_support_finds_a_customer_and_reads_the_timeline(app: App, web: TestClient) -> None:
    account(app, "sue@shop.example", "support")
    cid = a_customer(app)
    logged_in(web, "sue@shop.example")
    for query in ("ann@example.com", "C7", "ann lee", "EXAMPLE"):
        found = web.get("/customers", params={"q": query})
        assert 'href="/customers/C7"' in found.text, query
    page = web.get(f"/customers/{cid}")
    assert page.status_code == 200
    assert page.text.index("Replied: Why did I get this mail?") < page.text.index("Order O9")
    only = web.get(f"/customers/{cid}", params={"kind": "order_placed"})
    assert "Order O9" in only.text and "Replied" not in only.text


def test_support_is_refused_the_flows_page_and_a_manager_is_not(app: App,
                                                                web: TestClient) -> None:
    account(app, "sue@shop.example", "support")
    account(app, "max@shop.example", "manager")
    logged_in(web, "sue@shop.example")
    refused = web.get("/flows")
    assert refused.status_code == 403 and "needs the manager role" in refused.text
    web.cookies.clear()
    logged_in(web, "max@shop.example")
    allowed = web.get("/flows")
    assert allowed.status_code == 200 and "win_back" in allowed.text


def test_logging_out_needs_the_session_csrf_and_ends_the_session(app: App,
                                                                 web: TestClient) -> None:
    account(app, "sue@shop.example", "support")
    logged_in(web, "sue@shop.example")
    assert web.post("/logout", data={"csrf": "nope"}).status_code == 403
    csrf = csrf_of(web.get("/customers").text)
    web.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    web.cookies.clear()  # the browser drops the deleted cookie
    assert web.get("/customers", follow_redirects=False).status_code == 303


def test_staff_add_makes_an_account_and_refuses_a_short_password(
        cli_env: dict[str, str]) -> None:
    ok = CliRunner().invoke(cli, ["db", "upgrade"], env=cli_env)
    assert ok.exit_code == 0, ok.output
    made = CliRunner().invoke(cli, ["staff", "add", "Max@Shop.example", "--role", "manager",
                                    "--password-stdin"], input=PASSWORD + "\n", env=cli_env)
    assert made.exit_code == 0 and "max@shop.example can log in as manager" in made.output
    short = CliRunner().invoke(cli, ["staff", "add", "b@shop.example", "--role", "support",
                                     "--password-stdin"], input="short\n", env=cli_env)
    assert short.exit_code == 2 and "at least 12 characters" in short.output


def test_a_password_is_kept_as_an_argon2id_hash_of_rfc_9106_s_cost() -> None:
    import subprocess
    import sys

    # In a process of its own: this one hashes with argon2's cheap test profile (conftest).
    done = subprocess.run([sys.executable, "-c", "import lifecycle.staff as s; "
                           "print(s._hasher.hash('a long passphrase'))"],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("$argon2id$v=19$m=65536,t=3,p=4$")  # 64 MiB, 3 passes, 4 lanes


def test_support_pauses_resumes_and_cancels_a_scheduled_mail(app: App, web: TestClient) -> None:
    from sqlalchemy import select

    from lifecycle.mail.sending import dispatch
    from lifecycle.models import Message

    account(app, "sue@shop.example", "support")
    cid = a_customer(app)
    with app.engine.begin() as conn:
        mid = conn.execute(insert(Message).returning(Message.id).values(
            idempotency_key="wb", customer_id=cid, flow="win_back", step="miss-you",
            template="winback_1", to_email="ann@example.com", status="scheduled",
            due_at=T0 + timedelta(days=2), attempts=0, context={}, created_at=T0,
            updated_at=T0)).scalar_one()
    logged_in(web, "sue@shop.example")
    page = web.get(f"/customers/{cid}")
    assert "win_back/miss-you (winback_1)" in page.text
    csrf = csrf_of(page.text)
    base = f"/customers/{cid}/mails/{mid}"

    def status() -> str:
        with app.engine.connect() as conn:
            return str(conn.execute(select(Message.status).where(Message.id == mid))
                       .scalar_one())

    assert web.post(f"{base}/pause", data={"csrf": "forged"}).status_code == 403
    assert status() == "scheduled"
    web.post(f"{base}/pause", data={"csrf": csrf}, follow_redirects=False)
    assert status() == "paused"
    app.clock.set(T0 + timedelta(days=3))  # type: ignore[attr-defined]
    assert dispatch(app, lambda _ids: None) == 0  # a paused mail is not handed out
    web.post(f"{base}/resume", data={"csrf": csrf}, follow_redirects=False)
    assert status() == "scheduled"
    web.post(f"{base}/cancel", data={"csrf": csrf}, follow_redirects=False)
    assert status() == "cancelled"
    assert web.post(f"{base}/pause", data={"csrf": csrf}).status_code == 409
    timeline = web.get(f"/customers/{cid}").text
    assert "Scheduled mail paused by sue@shop.example" in timeline
    assert "Scheduled mail cancelled by sue@shop.example" in timeline


def test_support_adds_a_note_that_lands_on_the_timeline(app: App, web: TestClient) -> None:
    account(app, "sue@shop.example", "support")
    cid = a_customer(app)
    logged_in(web, "sue@shop.example")
    csrf = csrf_of(web.get(f"/customers/{cid}").text)
    assert web.post(f"/customers/{cid}/notes", data={"csrf": "forged", "note": "x"}
                    ).status_code == 403
    assert web.post(f"/customers/{cid}/notes", data={"csrf": csrf, "note": "  "}
                    ).status_code == 422
    web.post(f"/customers/{cid}/notes", data={
        "csrf": csrf, "note": "Called about the win-back mail; paused the next one."},
        follow_redirects=False)
    page = web.get(f"/customers/{cid}", params={"kind": "note"}).text
    assert "Note by sue@shop.example: Called about the win-back mail" in page
