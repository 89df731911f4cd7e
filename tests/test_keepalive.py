"""The keep-alive HTTP connection of the SendGrid transport, against a scripted server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lifecycle.mail.keepalive import KeepAlive, ProtocolError

HEADERS = {"Authorization": "Bearer SG.x", "Content-Type": "application/json"}


class Scripted:
    """A TCP server on 127.0.0.1 that answers each request with the next scripted bytes.

    ``None`` in the script closes the connection instead of answering, and
    ``(CLOSE, answer)`` closes it after answering.  It records each request
    (head and body) and counts connections.
    """

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    self.requests.append((head, reader.read(length)))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    if isinstance(answer, tuple):
                        conn.sendall(answer[1])
                        break
                    conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def script() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for server in made:
        server.close()


CLOSE = "close"


def serve(script: list[Scripted], *answers: Any) -> Scripted:
    server = Scripted(list(answers))
    script.append(server)
    return server


ACCEPTED = b"HTTP/1.1 202 Accepted\r\nX-Message-Id: abc\r\nContent-Length: 0\r\n\r\n"


def test_two_requests_share_one_connection(script: list[Scripted]) -> None:
    server = serve(script, ACCEPTED, ACCEPTED)
    conn = KeepAlive(server.url, timeout=5)
    for body in (b'{"a": 1}', b'{"b": 2}'):
        conn.send("/v3/mail/send", HEADERS, body)
        answer = conn.answer()
        assert (answer.status, answer.get("x-message-id"), answer.body) == (202, "abc", b"")
    assert server.connections == 1
    head, body = server.requests[1]
    assert head.startswith(b"POST /v3/mail/send HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in head
    assert b"Authorization: Bearer SG.x" in head and b"Content-Length: 8" in head
    assert body == b'{"b": 2}'


def test_a_chunked_answer_is_read_whole_and_repeated_headers_are_joined(
        script: list[Scripted]) -> None:
    server = serve(script, b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n"
                           b"Vary: A\r\nvary: B\r\n\r\n"
                           b"5;ext=1\r\n{\"err\r\n7\r\nors\": 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n"
                   + ACCEPTED)
    conn = KeepAlive(server.url, timeout=5)
    conn.send("/", HEADERS, b"{}")
    answer = conn.answer()
    assert (answer.status, answer.body, answer.get("Vary")) == (400, b'{"errors": 1}', "A, B")
    conn.send("/", HEADERS, b"{}")  # the connection is still in step
    assert conn.answer().status == 202
    assert server.connections == 1


def test_an_interim_100_continue_is_skipped(script: list[Scripted]) -> None:
    server = serve(script, b"HTTP/1.1 100 Continue\r\n\r\n" + ACCEPTED)
    conn = KeepAlive(server.url, timeout=5)
    conn.send("/", HEADERS, b"{}")
    assert conn.answer().status == 202


def test_connection_close_makes_the_next_request_connect_again(script: list[Scripted]) -> None:
    server = serve(script, b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0"
                           b"\r\n\r\n", ACCEPTED)
    conn = KeepAlive(server.url, timeout=5)
    conn.send("/", HEADERS, b"{}")
    assert conn.answer().will_close and not conn.connected
    conn.send("/", HEADERS, b"{}")
    assert conn.answer().status == 202
    assert server.connections == 2


def test_an_answer_without_length_runs_to_the_end_of_the_connection(
        script: list[Scripted]) -> None:
    server = serve(script, (CLOSE, b"HTTP/1.0 500 Oops\r\n\r\nsomething broke"))
    conn = KeepAlive(server.url, timeout=5)
    conn.send("/", HEADERS, b"{}")
    answer = conn.answer()
    assert (answer.status, answer.reason, answer.body) == (500, "Oops", b"something broke")
    assert not conn.connected


def test_a_server_that_hangs_up_without_answering_is_an_error(script: list[Scripted]) -> None:
    server = serve(script, None)
    conn = KeepAlive(server.url, timeout=5)
    conn.send("/", HEADERS, b"{}")
    with pytest.raises(ProtocolError, match="closed the connection without an answer"):
        conn.answer()
    assert not conn.connected


@pytest.mark.parametrize(("raw", "problem"), [
    (b"SMTP 220 hello\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2x2 Odd\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 202 Accepted\r\nno colon here\r\n\r\n", "not a header line"),
    (b"HTTP/1.1 202 Accepted\r\nContent-Length: -4\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\nshort", "bytes before the end"),
    (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
])
def test_a_malformed_answer_is_a_protocol_error_naming_the_fault(
        script: list[Scripted], raw: bytes, problem: str) -> None:
    server = serve(script, (CLOSE, raw))
    conn = KeepAlive(server.url, timeout=5)
    conn.send("/", HEADERS, b"{}")
    with pytest.raises(ProtocolError, match=problem):
        conn.answer()
    assert not conn.connected


def test_no_answer_within_the_timeout_raises_timeout(script: list[Scripted]) -> None:
    server = serve(script, b"HTTP/1.1 202 Accepted\r\n", None)  # the head never ends
    conn = KeepAlive(server.url, timeout=0.3)
    conn.send("/", HEADERS, b"{}")
    with pytest.raises(TimeoutError):
        conn.answer()
    assert not conn.connected


def test_nobody_listening_fails_at_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening
        conn = KeepAlive(f"http://127.0.0.1:{port}", timeout=2)
        with pytest.raises(ConnectionRefusedError):
            conn.connect()
        assert not conn.connected


def test_the_port_defaults_by_scheme() -> None:
    assert (KeepAlive("https://api.sendgrid.com", timeout=1).port,
            KeepAlive("http://localhost", timeout=1).port,
            KeepAlive("http://[::1]:8080", timeout=1).host) == (443, 80, "::1")
