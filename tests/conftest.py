"""Test fixtures: real databases and brokers, each test rolled back.

Every database test runs on SQLite and on PostgreSQL, every broker test on
the in-process broker and on Redis.  Schemas are built by the migration chain
(``alembic upgrade head``), never by ``create_all``.

Services are found at LIFECYCLE_TEST_POSTGRES_URL, LIFECYCLE_TEST_REDIS_URL
and LIFECYCLE_TEST_RABBITMQ_URL (defaults: this machine's local servers).
Where one is missing its tests are skipped and the summary says so; with
CI=true a missing service fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from lifecycle.app import App
from lifecycle.config import load_settings
from lifecycle.db import make_engine
from tests.private_redis import PrivateRedis
from tests.services import skipped_services

POSTGRES_ADMIN_URL = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _worker_number() -> int:
    """0 for a plain run or pytest-xdist's first worker (``gw0``), else the worker's number."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name[:2] == "gw" and name[2:].isdigit() else 0


def _own_redis_database(url: str) -> str:
    """``url`` with a Redis database number of this worker's own: the tests flush theirs, so
    parallel workers (pytest-xdist) take the given number, the one below it, and so on."""
    parts = urlsplit(url)
    given = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(given - _worker_number()) % 16}"))


REDIS_URL = _own_redis_database(os.environ.get("LIFECYCLE_TEST_REDIS_URL",
                                               "redis://127.0.0.1:6379/15"))
RABBITMQ_URL = os.environ.get("LIFECYCLE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: Services found missing, by name: their tests were skipped (kept in a module of its own so
#: that ``conftest`` as pytest loads it and ``tests.conftest`` as tests import it share it).
_skipped_services: dict[str, str] = skipped_services


def _reachable(url: str, default_port: int) -> str | None:
    """None if a TCP connection to the URL's host works, else the reason."""
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc.strerror or exc})"


def require_service(name: str, url: str, port: int) -> None:
    """Skip (or, in CI, fail) the current test if the service is not there."""
    reason = _reachable(url, port)
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{name} is required in CI (CI=true) but {reason}", pytrace=False)
    _skipped_services[name] = reason
    pytest.skip(f"{name} not available: {reason}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the shared RabbitMQ server's queues run on one pytest-xdist worker, one at a
    time (``--dist loadgroup``): its queues are the server's, not a worker's own."""
    for item in items:
        if "rabbitmq" in item.nodeid or item.nodeid.startswith("tests/test_broker_namespace.py"):
            item.add_marker(pytest.mark.xdist_group("rabbitmq"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands the services it found missing to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["skipped_services"] = dict(_skipped_services)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # type: ignore[no-untyped-def]
    _skipped_services.update(getattr(node, "workeroutput", {}).get("skipped_services", {}))


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if _skipped_services:
        terminalreporter.section("services not available: their tests were skipped")
        for name, reason in sorted(_skipped_services.items()):
            terminalreporter.write_line(f"{name}: {reason}")


# --------------------------------------------------------------------- databases

BACKENDS = ("sqlite", "postgresql")


class Databases:
    """Creates migrated databases: one shared per backend, fresh ones on demand.

    A PostgreSQL database whose test is done (:meth:`release`) is emptied —
    every table but ``alembic_version`` truncated, its sequences restarted — and
    handed to the next test that asks for a fresh one: the state a copy of the
    migrated template has, for a fraction of the cost (each ``DROP DATABASE``
    waits for a checkpoint: a run's few hundred of them took about 20 seconds).
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = f"lctest_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._pg_admin: Engine | None = None
        self._created: list[str] = []
        self._template: str | None = None
        self._free: list[str] = []

    def pg_admin(self) -> Engine:
        if self._pg_admin is None:
            self._pg_admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        return self._pg_admin

    def _pg_url(self, name: str) -> str:
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def _migrate(self, url: str) -> None:
        app = App(replace(load_settings({}), database_url=make_url(url)))
        try:
            app.upgrade_database()
        finally:
            app.close()

    def new_url(self, backend: str) -> str:
        """A database at the newest migration that no other test uses."""
        if backend == "sqlite":
            url = f"sqlite:///{self.tmp / f'{uuid.uuid4().hex}.db'}"
            self._migrate(url)
            return url
        if self._free:
            return self._pg_url(self._free.pop())
        if self._template is None:
            self._template = f"{self.tag}_template"
            with self.pg_admin().connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self._template}"')
            self._created.append(self._template)
            self._migrate(self._pg_url(self._template))
            # No connection may stay open on a template that is being copied.
        name = f"{self.tag}_{len(self._created)}"
        with self.pg_admin().connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._created.append(name)
        return self._pg_url(name)

    def release(self, url: str) -> None:
        """The test that used ``url`` (from :meth:`new_url`) is done: empty its database for the
        next test (PostgreSQL; SQLite files go with the session's temporary folder).  Anything
        still connected to it (a process the test left behind) is disconnected first."""
        name = make_url(url).database
        if make_url(url).get_backend_name() != "postgresql" or name not in self._created:
            return
        with self.pg_admin().connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %(name)s AND pid <> pg_backend_pid()", {"name": name})
        engine = make_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                tables = conn.execute(text(
                    "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'")).scalars().all()
                conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        finally:
            engine.dispose()
        self._free.append(name)

    def close(self) -> None:
        if self._pg_admin is None:
            return
        with self._pg_admin.connect() as conn:
            for name in reversed(self._created):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._pg_admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Staff passwords hashed with argon2-cffi's profile for tests (``profiles.CHEAPEST``) in
    the test process: the product's costs about 60 ms a hash (more on a busy machine) and the
    page tests make and log in hundreds of accounts.  Processes the tests start keep the
    product's cost, which ``tests/test_staff_pages.py`` checks in one."""
    from argon2 import PasswordHasher, profiles

    import lifecycle.staff

    kept = lifecycle.staff._hasher
    lifecycle.staff._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    yield
    lifecycle.staff._hasher = kept


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.close()


def _require_backend(backend: str) -> None:
    if backend == "postgresql":
        require_service("PostgreSQL", POSTGRES_ADMIN_URL, 5432)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def shared_database_url(backend: str, databases: Databases) -> str:
    _require_backend(backend)
    return databases.new_url(backend)


@pytest.fixture(scope="session")
def engine(shared_database_url: str) -> Iterator[Engine]:
    eng = make_engine(shared_database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def session(conn: Connection) -> Iterator[Session]:
    """An ORM session on ``conn``; its commits become savepoints."""
    with Session(bind=conn, join_transaction_mode="create_savepoint") as s:
        yield s


@pytest.fixture
def fresh_database_url(backend: str, databases: Databases) -> Iterator[str]:
    """A migrated database of its own, for tests of commands and processes (dropped after)."""
    _require_backend(backend)
    url = databases.new_url(backend)
    yield url
    databases.release(url)


@pytest.fixture
def cli_env(fresh_database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running ``lifecycle`` against a fresh database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIFECYCLE_", "SENDGRID_"))}
    env.update({"LIFECYCLE_DATABASE_URL": fresh_database_url,
                "LIFECYCLE_OUTBOX_DIR": str(tmp_path / "outbox"),
                "LIFECYCLE_LOG_LEVEL": "WARNING"})
    return env


def count(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


# ---------------------------------------------------------------------- brokers

BROKERS = ("stub", "redis")


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The in-process broker (None) and Redis, with Lifecycle's keys cleared."""
    if request.param == "stub":
        yield None
        return
    require_service("Redis", REDIS_URL, 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()



@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own (on a free port), which the test may kill."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is required in CI (CI=true)", pytrace=False)
        pytest.skip("redis-server not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


# ---------------------------------------------------------------- an app on a fresh database

@pytest.fixture
def app(fresh_database_url: str, tmp_path: Path) -> Iterator[App]:
    """An App on a fresh database (unless a test module has its own ``app``): secret
    :data:`tests.factories.WEB_SECRET`, clock stopped at :data:`tests.factories.WEB_T0`."""
    from lifecycle.clock import ManualClock
    from tests.factories import WEB_SECRET, WEB_T0

    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key=WEB_SECRET, outbox_dir=tmp_path / "outbox"),
              clock=ManualClock(WEB_T0))
    yield app
    app.close()


@pytest.fixture
def web(app: App):  # type: ignore[no-untyped-def]
    """A test client of ``app``'s web app."""
    from fastapi.testclient import TestClient

    from lifecycle.web.app import create_app

    return TestClient(create_app(app))


@pytest.fixture
def served(app: App) -> Iterator[int]:
    """``app``'s web app under uvicorn on 127.0.0.1 (a real server reads bodies as they come,
    where the test client hands them over whole); its port."""
    import uvicorn

    from lifecycle.web.app import create_app
    from tests.ports import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


# ---------------------------------------------------------------------- a real browser

#: What the machine's closed network needs (see the env notes): no background fetches.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def _install_chromium() -> str | None:
    """The path of Chromium, installing Debian's package if we may; None if there is none."""
    wanted = os.environ.get("LIFECYCLE_TEST_CHROMIUM") or shutil.which("chromium")
    if wanted:
        return wanted
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                         "chromium"]):
            subprocess.run(command, check=False, capture_output=True, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright: one per session (Playwright's sync
    API runs once per thread), for every test module that needs a real browser."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    path = _install_chromium()
    if path is None:
        reason = "no chromium on this machine and it could not be installed (apt, as root)"
        if IN_CI:
            pytest.fail(f"Chromium is required in CI (CI=true): {reason}", pytrace=False)
        _skipped_services["Chromium"] = reason
        pytest.skip(reason)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def raw_post(port: int, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
    """POST ``body`` (perhaps less than its Content-Length) on a socket and wait for the
    answer; its status and how many seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "127.0.0.1", **headers}.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode("ascii") + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started
