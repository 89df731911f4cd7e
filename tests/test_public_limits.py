"""Every POST route bounds its body while reading it (lifecycle.web.limits): a 200 MB body,
declared or chunked, gets 413 long before it is all sent, and the serving process's memory
stays flat; a body that comes too slowly gets 408."""

from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.apikeys import create_key
from lifecycle.app import App
from lifecycle.links import inbound_key
from lifecycle.web import limits
from lifecycle.web.app import create_app
from tests.conftest import raw_post
from tests.factories import WEB_SECRET, WEB_T0
from tests.ports import free_port

BODY = 200 * 1024 * 1024  # what an attacker offers
CHUNK = 64 * 1024

SERVER = """
import sys
from dataclasses import replace
import uvicorn
from sqlalchemy.engine import make_url
from lifecycle.apikeys import create_key
from lifecycle.app import App
from lifecycle.config import load_settings
from lifecycle.web.app import create_app
url, secret, port = sys.argv[1:4]
app = App(replace(load_settings({}), database_url=make_url(url), secret_key=secret))
uvicorn.run(create_app(app), host="127.0.0.1", port=int(port), log_level="warning",
            lifespan="off")
"""


def post_routes(app: App) -> list[str]:
    """Every POST route of the app, its path parameters filled in (``1``)."""
    paths = create_app(app).openapi()["paths"]
    return sorted(re.sub(r"\{[^}]+\}", "1", path) for path, ops in paths.items()
                  if "post" in ops)


def target(path: str) -> str:
    """The URL path to post to: the inbound webhook with its key, so the body is read."""
    return f"{path}?key={inbound_key(WEB_SECRET)}" if path.endswith("/inbound") else path


def content_type(path: str) -> str:
    if path.startswith(("/api/", "/webhooks/sendgrid/events")):
        return "application/json"
    return "multipart/form-data; boundary=XyZ"  # Inbound Parse's, and a browser's with a file


FIRST = {"application/json": b"[" + b" " * 100,
         "multipart/form-data; boundary=XyZ":
             b'--XyZ\r\nContent-Disposition: form-data; name="attachment1"; '
             b'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'}


def offer(port: int, path: str, *, chunked: bool) -> tuple[int, int]:
    """POST a body of :data:`BODY` bytes (declared, or chunked without a length), sending it
    until the server answers; the status, and how many body bytes were sent by then."""
    kind = content_type(path)
    head = {"Host": "127.0.0.1", "Content-Type": kind,
            **({"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(BODY)})}
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {target(path)} HTTP/1.1\r\n".encode("ascii")
                     + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode("ascii")
                     + b"\r\n")
        piece = FIRST[kind] + b"a" * (CHUNK - len(FIRST[kind]))
        while sent < BODY:
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            data = piece if sent == 0 else b"a" * CHUNK
            try:
                sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
        deadline = time.monotonic() + 30
        while b"\r\n" not in answer and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 "), (path, chunked, sent, answer[:200])
    return int(answer.split(b" ", 2)[1]), sent


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.fixture
def server(app: App, fresh_database_url: str) -> Iterator[tuple[int, int]]:
    """The web app served by uvicorn in a process of its own (whose memory can be read); its
    port and pid."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, fresh_database_url, WEB_SECRET,
                                str(port)])
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.1)
    yield port, process.pid
    process.terminate()
    process.wait(20)


def test_every_post_route_refuses_a_200_mb_body_with_413_while_memory_stays_flat(
        app: App, server: tuple[int, int]) -> None:
    port, pid = server
    routes = post_routes(app)
    assert {"/login", "/logout", "/u/1", "/p/1", "/f/1", "/webhooks/sendgrid/events",
            "/webhooks/sendgrid/inbound", "/api/v1/orders", "/customers/1/notes",
            "/admin/staff"} <= set(routes)
    for path in routes:  # warm up: every route's code and parser loaded once
        small = b"[]" if content_type(path) == "application/json" else b"--XyZ--\r\n"
        raw_post(port, target(path), {"Content-Type": content_type(path),
                                      "Content-Length": str(len(small))}, small)
    before = peak_rss(pid)
    for path in routes:
        limit = limits.limit_for(path).size
        for chunked in (False, True):
            status, sent = offer(port, path, chunked=chunked)
            # the API refuses a keyless post before its body (a declared length before that)
            keyless = 401 if path.startswith("/api/") and chunked else 413
            assert status == keyless, (path, chunked, status)
            # refused once past its limit (declared: before the body), far from the whole
            # body (what the sockets' buffers hold is sent too: a few MB on loopback)
            assert sent <= (limit if chunked else 0) + 16 * 1024 * 1024, (path, chunked, sent)
    grown = peak_rss(pid) - before
    assert grown < 48 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"


def test_every_route_has_a_limit_and_an_unlisted_one_gets_the_small_default(
        app: App) -> None:
    for path in post_routes(app):
        assert limits.limit_for(path).size <= 32 * 1024 * 1024, path
    assert limits.limit_for("/admin/staff") == limits.DEFAULT
    assert limits.limit_for("/anything/new") == limits.DEFAULT
    assert limits.DEFAULT.size <= 64 * 1024
    assert limits.limit_for("/login").size <= 16 * 1024


@pytest.mark.parametrize("path", ["/login", "/u/1", "/f/1", "/webhooks/sendgrid/events",
                                  "/webhooks/sendgrid/inbound", "/api/v1/orders",
                                  "/customers/1/notes", "/admin/apikeys"])
def test_a_body_that_comes_too_slowly_is_refused_with_408_in_bounded_time(
        app: App, served: int, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = {}
    if path.startswith("/api/"):
        with app.engine.begin() as conn:
            keyed = {"Authorization": f"Bearer {create_key(conn, 'k', ['orders:write'], WEB_T0)}"}
    for prefix, limit in list(limits.LIMITS.items()):
        monkeypatch.setitem(limits.LIMITS, prefix, limits.Limit(limit.size, 0.5))
    monkeypatch.setattr(limits, "DEFAULT", limits.Limit(limits.DEFAULT.size, 0.5))
    status, seconds = raw_post(served, target(path), {"Content-Type": content_type(path),
                                                      "Content-Length": "1000", **keyed},
                               FIRST[content_type(path)])  # the start of a body, no more
    assert status == 408 and seconds < 10, (path, status, seconds)


def test_an_api_post_without_a_key_is_refused_before_its_body_is_read(
        server: tuple[int, int]) -> None:
    """FastAPI parses a JSON body before the route's key check: 16 MiB of ``[]`` items was
    some 300 MB of Python objects per post, for anyone."""
    port, pid = server
    raw_post(port, "/api/v1/orders", {"Content-Type": "application/json",
                                      "Content-Length": "2"}, b"[]")  # warm up
    before = peak_rss(pid)
    body = b"[" + b"[]," * (16 * 1024 * 1024 // 3 - 1) + b"[]]"
    assert len(body) <= limits.limit_for("/api/v1/orders").size
    for key in (None, "lc_00000000_unknown"):
        head = {"Host": "127.0.0.1", "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                **({"Authorization": f"Bearer {key}"} if key else {})}
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"POST /api/v1/orders HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in head.items()).encode("ascii") + b"\r\n")
            for at in range(0, len(body), CHUNK):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered
                try:
                    sock.sendall(body[at:at + CHUNK])
                except (BrokenPipeError, ConnectionResetError):
                    break
            answer = b""
            try:  # the server closes the connection, perhaps with a reset (body unread)
                while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
                    answer += chunk
            except ConnectionResetError:
                pass
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b"www-authenticate: bearer" in answer.lower()
    grown = peak_rss(pid) - before
    assert grown < 48 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"
