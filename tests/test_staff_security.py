"""Staff accounts as a careful shop expects: login attempts throttled per account and per
client address across web processes, sessions that logout, a new password and deactivation
end at once, and passwords that are not easy to guess."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.models import LoginThrottle, Touchpoint
from lifecycle.staff import add_staff, password_problem
from lifecycle.web.app import create_app
from lifecycle.web.staff import SESSION_COOKIE
from tests.factories import PASSWORD, account, csrf_of, logged_in
from tests.factories import WEB_T0 as T0
from tests.test_staff_pages import a_customer

OFFICE = ("198.51.100.7", 50000)
HOME = ("203.0.113.9", 50000)


@pytest.fixture
def other(app: App) -> Iterator[App]:
    """A second App on the same database, as another web process is: its own engine, its own
    clock (stopped at the same instant)."""
    second = App(replace(app.settings), clock=ManualClock(T0))
    yield second
    second.close()


def client(app: App, address: tuple[str, int] = OFFICE) -> TestClient:
    return TestClient(create_app(app), client=address)


def attempt(web: httpx.Client, email: str, password: str) -> httpx.Response:
    return web.post("/login", data={"csrf": csrf_of(web.get("/login").text), "email": email,
                                    "password": password, "next": "/customers"},
                    follow_redirects=False)


def advance(apps: list[App], delta: timedelta) -> None:
    for each in apps:
        each.clock.advance(delta)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- throttling


def test_five_wrong_passwords_in_two_processes_block_the_account_and_the_right_one_is_refused(
        app: App, other: App) -> None:
    account(app, "sue@shop.example", "support")
    one, two = client(app), client(other)
    for n in range(4):
        assert attempt((one, two)[n % 2], "sue@shop.example", f"wrong guess {n}"
                       ).status_code == 401
    blocking = attempt(two, "sue@shop.example", "wrong guess 4")
    assert blocking.status_code == 429
    refused = attempt(one, "Sue@shop.example", PASSWORD)  # the right password, the other process
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert "Too many failed logins" in refused.text and "Try again in 1 minute." in refused.text
    assert SESSION_COOKIE not in refused.cookies
    advance([app, other], timedelta(seconds=30))
    later = attempt(two, "sue@shop.example", PASSWORD)
    assert later.status_code == 429 and "Try again in 30 seconds." in later.text
    advance([app, other], timedelta(seconds=31))
    assert attempt(two, "sue@shop.example", PASSWORD).status_code == 303


def test_each_further_block_of_an_account_is_twice_as_long(app: App, other: App) -> None:
    account(app, "sue@shop.example", "support")
    one, two = client(app), client(other)
    for block, minutes in enumerate((1, 2, 4)):
        for n in range(5):
            attempt((one, two)[n % 2], "sue@shop.example", f"wrong {block} {n}")
        refused = attempt(one, "sue@shop.example", PASSWORD)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(minutes * 60), block
        advance([app, other], timedelta(minutes=minutes, seconds=1))
    assert attempt(two, "sue@shop.example", PASSWORD).status_code == 303


def test_a_successful_login_starts_the_account_afresh(app: App) -> None:
    account(app, "sue@shop.example", "support")
    web = client(app)
    for _round in range(3):
        for n in range(4):
            assert attempt(web, "sue@shop.example", f"wrong {n}").status_code == 401
        assert attempt(web, "sue@shop.example", PASSWORD).status_code == 303
    for n in range(4):
        assert attempt(web, "sue@shop.example", f"wrong {n}").status_code == 401
    assert attempt(web, "sue@shop.example", "wrong 4").status_code == 429  # the limit holds


def test_an_unknown_account_is_throttled_exactly_like_a_real_one(app: App) -> None:
    account(app, "sue@shop.example", "support")
    answers = {}
    for email in ("sue@shop.example", "nobody@shop.example"):
        web = client(app, (f"192.0.2.{len(answers) + 1}", 50000))
        answers[email] = [(r.status_code, r.headers.get("retry-after"),
                           r.text.split('role="alert">')[1].split("</p>")[0])
                          for r in (attempt(web, email, f"wrong {n}") for n in range(7))]
    assert answers["sue@shop.example"] == answers["nobody@shop.example"]
    assert [status for status, _, _ in answers["nobody@shop.example"]] == [401] * 4 + [429] * 3


def test_twenty_failures_from_one_address_block_it_for_every_account_in_every_process(
        app: App, other: App) -> None:
    account(app, "sue@shop.example", "support")
    one, two = client(app, OFFICE), client(other, OFFICE)
    for n in range(20):  # a different name each time: no account is blocked
        answer = attempt((one, two)[n % 2], f"guess{n}@shop.example", "wrong password")
        assert answer.status_code == (429 if n == 19 else 401), n
    assert attempt(two, "sue@shop.example", PASSWORD).status_code == 429
    assert attempt(client(other, HOME), "sue@shop.example", PASSWORD).status_code == 303
    advance([app, other], timedelta(minutes=1, seconds=1))
    assert attempt(one, "sue@shop.example", PASSWORD).status_code == 303


def test_logins_that_succeed_do_not_count_against_a_shared_address(app: App) -> None:
    account(app, "sue@shop.example", "support")
    office = client(app, OFFICE)
    for n in range(21):  # more than the address may fail
        assert attempt(office, "sue@shop.example", PASSWORD).status_code == 303, n
    for n in range(20):  # while failures still count
        answer = attempt(office, f"guess{n}@shop.example", "wrong password")
        assert answer.status_code == (429 if n == 19 else 401), n


def test_a_burst_of_parallel_attempts_cannot_run_past_the_limit(app: App, other: App) -> None:
    from concurrent.futures import ThreadPoolExecutor

    account(app, "sue@shop.example", "support")
    webs = [client(app), client(other)]
    forms = [(web, csrf_of(web.get("/login").text)) for web in webs]

    def one(n: int) -> int:
        web, csrf = forms[n % 2]
        return web.post("/login", data={"csrf": csrf, "email": "sue@shop.example",
                                        "password": f"wrong {n}"},
                        follow_redirects=False).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(16)))
    assert statuses.count(401) <= 4 and statuses.count(401) + statuses.count(429) == 16


def test_the_throttle_forgets_quiet_rows(app: App) -> None:
    account(app, "sue@shop.example", "support")
    web = client(app)
    for n in range(5):
        attempt(web, f"guess{n}@shop.example", "wrong password")  # five names, one address
    for n in range(5):
        attempt(web, "sue@shop.example", f"wrong {n}")  # blocks sue

    def rows() -> int:
        with app.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(LoginThrottle))
                       .scalar_one())

    assert rows() == 7
    advance([app], timedelta(minutes=16))  # never-blocked rows are forgotten after the window
    attempt(client(app, HOME), "nobody@shop.example", "wrong password")
    assert rows() == 1 + 2  # sue's name, blocked once; the new name and address
    advance([app], timedelta(hours=25))
    attempt(client(app, HOME), "nobody@shop.example", "wrong password")
    assert rows() == 2


def test_pruning_skips_a_row_another_login_attempt_holds_instead_of_waiting_for_it(
        app: App) -> None:
    """Two attempts pruning and locking each other's rows must not deadlock (a 500)."""
    if app.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's BEGIN IMMEDIATE admits one writer: nothing to wait for")
    from lifecycle.throttle import keys_of, prune

    web = client(app)
    attempt(web, "held@shop.example", "wrong password")
    attempt(web, "loose@shop.example", "wrong password")
    later = app.clock.now() + timedelta(minutes=16)  # both names are quiet rows now
    held = keys_of("held@shop.example", None)[0]
    t = LoginThrottle.__table__
    with app.engine.connect() as holder:
        holder.execute(select(t).where(t.c.kind == held[0], t.c.key == held[1])
                       .with_for_update())  # another attempt's transaction holds this row
        with app.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")  # a wait would fail here
            assert prune(conn, later) == 2  # the loose name and the address; not the held row
        holder.rollback()
    with app.engine.connect() as conn:
        left = conn.execute(select(t.c.kind, t.c.key).where(t.c.kind == "account")).all()
    assert [tuple(row) for row in left] == [held]


def test_an_ipv6_client_counts_by_its_64_network_and_a_mapped_ipv4_as_ipv4() -> None:
    from lifecycle.throttle import client_key

    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.7") == client_key("198.51.100.7") == "198.51.100.7"
    assert client_key(None) == "unknown"


# ---------------------------------------------------------------- sessions end


def _session(web: TestClient) -> str:
    cookie = web.cookies.get(SESSION_COOKIE)
    assert cookie, "not logged in"
    return cookie


def _with(app: App, cookie: str) -> TestClient:
    return TestClient(create_app(app), cookies={SESSION_COOKIE: cookie})


def test_an_old_cookie_reads_nothing_and_writes_no_note_after_logout_in_any_process(
        app: App, other: App) -> None:
    account(app, "sue@shop.example", "support")
    cid = a_customer(app)
    web = logged_in(client(app), "sue@shop.example")
    old = _session(web)
    elsewhere = _session(logged_in(client(other, HOME), "sue@shop.example"))  # another device
    csrf = csrf_of(web.get(f"/customers/{cid}").text)
    web.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    for process, cookie in ((app, old), (other, old), (other, elsewhere)):
        replayed = _with(process, cookie)
        assert replayed.get(f"/customers/{cid}", follow_redirects=False).status_code == 303
        wrote = replayed.post(f"/customers/{cid}/notes", data={"csrf": csrf, "note": "forged"},
                              follow_redirects=False)
        assert wrote.status_code == 303 and wrote.headers["location"].startswith("/login")
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Touchpoint).where(
            Touchpoint.kind == "note")).scalar_one() == 0


def test_a_new_password_from_the_command_line_ends_that_accounts_sessions_only(
        app: App, other: App, cli_env: dict[str, str], fresh_database_url: str) -> None:
    account(app, "sue@shop.example", "support")
    account(app, "max@shop.example", "support")
    sue = _session(logged_in(client(app), "sue@shop.example"))
    max_ = _session(logged_in(client(other), "max@shop.example"))
    for n in range(5):
        attempt(client(other, HOME), "sue@shop.example", f"wrong {n}")
    assert attempt(client(app), "sue@shop.example", PASSWORD).status_code == 429
    done = CliRunner().invoke(cli, ["staff", "password", "sue@shop.example", "--password-stdin"],
                              input="plum tractor velvet orbit\n",
                              env={**cli_env, "LIFECYCLE_DATABASE_URL": fresh_database_url})
    assert done.exit_code == 0, done.output
    for process in (app, other):
        assert _with(process, sue).get("/customers", follow_redirects=False).status_code == 303
        assert _with(process, max_).get("/customers", follow_redirects=False).status_code == 200
    # the new password lifts the block of the name at once
    assert attempt(client(app), "sue@shop.example", "plum tractor velvet orbit"
                   ).status_code == 303


def test_an_admin_deactivating_or_setting_a_password_ends_that_accounts_sessions(
        app: App, other: App) -> None:
    account(app, "ada@shop.example", "admin")
    sue_id = account(app, "sue@shop.example", "support")
    max_id = account(app, "max@shop.example", "support")
    admin = logged_in(client(app), "ada@shop.example")
    csrf = csrf_of(admin.get("/admin/staff").text)
    sue = _session(logged_in(client(other), "sue@shop.example"))
    max_ = _session(logged_in(client(other), "max@shop.example"))
    changed = admin.post(f"/admin/staff/{sue_id}", data={
        "csrf": csrf, "password": "plum tractor velvet orbit"}, follow_redirects=False)
    assert changed.status_code == 303
    assert _with(other, sue).get("/customers", follow_redirects=False).status_code == 303
    assert _with(other, max_).get("/customers", follow_redirects=False).status_code == 200
    admin.post(f"/admin/staff/{max_id}", data={"csrf": csrf, "active": "no"})
    admin.post(f"/admin/staff/{max_id}", data={"csrf": csrf, "active": "yes"})
    assert _with(other, max_).get("/customers", follow_redirects=False).status_code == 303
    assert admin.get("/admin/staff").status_code == 200  # the admin's own session lives on
    assert attempt(client(other), "sue@shop.example", "plum tractor velvet orbit"
                   ).status_code == 303


# ---------------------------------------------------------------- password rules


@pytest.mark.parametrize(("password", "why"), [
    ("aaaaaaaaaaaa", 'Repeats like "aaa" are easy to guess'),
    ("password1234", "This is a very common password"),
    ("zxcvbnm,./asd1", "Straight rows of keys are easy to guess"),
    ("suelee@shop.example is me", "must not contain the account's email address"),
    ("suelee.shop.2026", "must not contain the account's email address"),
    ("Sue Leeson 2026", "must not contain the account's name"),
    ("Leeson!2345678", "It contains the account's email address or name"),
])
def test_guessable_passwords_are_refused_with_the_reason(password: str, why: str) -> None:
    problem = password_problem(password, "suelee@shop.example", "Sue Leeson")
    assert problem is not None and why in problem, problem


def test_a_long_passphrase_is_accepted() -> None:
    assert password_problem("plum tractor velvet orbit", "sue@shop.example", "Sue Lee") is None


def test_the_command_line_and_the_admin_form_say_why_a_password_is_refused(
        app: App, cli_env: dict[str, str], fresh_database_url: str) -> None:
    runner = CliRunner()
    env = {**cli_env, "LIFECYCLE_DATABASE_URL": fresh_database_url}
    refused = runner.invoke(cli, ["staff", "add", "bo@shop.example", "--role", "support",
                                  "--password-stdin"], input="aaaaaaaaaaaa\n", env=env)
    assert refused.exit_code == 2
    assert 'too easy to guess (strength 0 of 4, at least 3 needed): Repeats like "aaa"' \
        in refused.output
    with app.engine.begin() as conn:
        add_staff(conn, "sue@shop.example", "support", PASSWORD, T0)
    again = runner.invoke(cli, ["staff", "password", "sue@shop.example", "--password-stdin"],
                          input="password1234\n", env=env)
    assert again.exit_code == 2 and (
        "the password is too easy to guess (strength 1 of 4, at least 3 needed): This is a very "
        "common password. Add another word or two. Uncommon words are better.") in again.output
    account(app, "ada@shop.example", "admin")
    admin = logged_in(client(app), "ada@shop.example")
    csrf = csrf_of(admin.get("/admin/staff").text)
    added = admin.post("/admin/staff", data={"csrf": csrf, "email": "bo@shop.example",
                                             "role": "support", "password": "password1234"})
    assert added.status_code == 422 and "This is a very common password" in added.text
    with app.engine.connect() as conn:
        from lifecycle.models import StaffUser

        sue_id = conn.execute(select(StaffUser.id).where(
            StaffUser.email == "sue@shop.example")).scalar_one()
    changed = admin.post(f"/admin/staff/{sue_id}", data={"csrf": csrf,
                                                         "password": "aaaaaaaaaaaa"})
    assert changed.status_code == 422 and "Repeats like" in changed.text
    assert attempt(client(app, HOME), "sue@shop.example", PASSWORD).status_code == 303


def test_behind_a_trusted_proxy_the_forwarded_client_address_is_counted(app: App,
                                                                         served: int) -> None:
    """uvicorn (as ``lifecycle web`` runs it) takes the client's address from
    X-Forwarded-For when the peer is in FORWARDED_ALLOW_IPS (default 127.0.0.1)."""
    account(app, "sue@shop.example", "support")

    def through_proxy(address: str) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{served}",
                            headers={"X-Forwarded-For": address}, timeout=30)

    attacker, colleague = through_proxy("198.51.100.7"), through_proxy("203.0.113.9")
    for n in range(20):
        answer = attempt(attacker, f"guess{n}@shop.example", "wrong password")
        assert answer.status_code == (429 if n == 19 else 401), n
    assert attempt(attacker, "sue@shop.example", PASSWORD).status_code == 429
    assert attempt(colleague, "sue@shop.example", PASSWORD).status_code == 303
    with app.engine.connect() as conn:
        assert set(conn.execute(select(LoginThrottle.key).where(
            LoginThrottle.kind == "address")).scalars()) == {"198.51.100.7", "203.0.113.9"}


def test_a_block_is_logged_with_the_address_and_never_the_name_typed(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    web = client(app, OFFICE)
    with caplog.at_level("WARNING", logger="lifecycle.throttle"):
        for n in range(5):
            attempt(web, "secret.name@shop.example", f"wrong {n}")
        for n in range(15):
            attempt(web, f"guess{n}@shop.example", "wrong password")
    said = [r.getMessage() for r in caplog.records if r.name == "lifecycle.throttle"]
    assert len(said) == 2 and said[0].startswith("Logins as the account name hashed ")
    assert said[0].endswith("are blocked for 60 seconds after 5 failures (block 1 in a row).")
    assert said[1] == ("Logins from 198.51.100.7 are blocked for 60 seconds after 20 failures "
                       "(block 1 in a row).")
    assert not any("secret.name" in line for line in said)
