"""One HTTP/1.1 keep-alive connection for posting JSON and reading short answers.

The SendGrid transport posts one small request per mail.  ``http.client``
parses every answer's headers with the e-mail package's feed parser, which
was the largest single cost of a send in the delivery benchmark (about an
eighth of a worker's CPU per mail); this connection writes the request in one
``sendall`` and reads the status line, headers and body itself.  It speaks
just what the transport needs: ``POST`` with a body, answers framed by
``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the
connection, interim ``1xx`` answers skipped, TLS for ``https``.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Longest status or header line accepted (bytes), as http.client.
MAX_LINE = 65536
#: Most header lines accepted in one answer.
MAX_HEADERS = 100


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as expected (or the connection ended inside it)."""


@dataclass
class Answer:
    status: int
    reason: str
    #: Header names in lower case; repeated headers joined with ", ".
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: The server ends the connection after this answer: do not reuse it.
    will_close: bool = False

    def get(self, name: str, default: str | None = None) -> str | None:
        """Header ``name`` in any case (as ``http.client``'s headers)."""
        return self.headers.get(name.lower(), default)


class KeepAlive:
    """A connection to the server of ``base_url`` (TLS for https) reused for request after
    request.

    Not thread safe: one per thread.  ``timeout`` (seconds) bounds connecting
    and each wait for the server.  Any error leaves the connection closed.
    """

    def __init__(self, base_url: str, *, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.netloc = parts.netloc
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.https:
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def send(self, path: str, headers: dict[str, str], body: bytes) -> None:
        """Write a ``POST`` of ``body`` (connecting first if needed); OSError if it did not go
        out whole."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.netloc}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        try:
            self._sock.sendall(request)
        except BaseException:
            self.close()
            raise

    def answer(self) -> Answer:
        """Read the answer to the request just sent (interim 1xx answers skipped)."""
        try:
            while True:
                answer = self._read_head()
                if answer.status >= 200:
                    break
            answer.body = self._read_body(answer)
        except BaseException:
            self.close()
            raise
        if answer.will_close:
            self.close()
        return answer

    def _line(self) -> bytes:
        assert self._file is not None
        line = self._file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("a header line of the answer is too long")
        if not line:
            raise ProtocolError("the server closed the connection without an answer")
        return line

    def _read_head(self) -> Answer:
        version, _, rest = self._line().decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {version} {rest}"[:200])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise ProtocolError(f"not a header line: {line[:100]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        else:
            raise ProtocolError(f"more than {MAX_HEADERS} header lines in the answer")
        connection = headers.get("connection", "").lower()
        will_close = "close" in connection or (version == "HTTP/1.0"
                                               and "keep-alive" not in connection)
        return Answer(int(code), reason, headers, will_close=will_close)

    def _read_body(self, answer: Answer) -> bytes:
        assert self._file is not None
        if answer.status in (204, 304):
            return b""
        if "chunked" in answer.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = answer.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length: {length[:50]}")
            return self._exactly(int(length))
        answer.will_close = True  # the body runs to the end of the connection
        return self._file.read()

    def _exactly(self, size: int) -> bytes:
        assert self._file is not None
        data = self._file.read(size)
        if len(data) < size:
            raise ProtocolError(f"the connection ended {size - len(data)} bytes before the "
                                f"end of the answer")
        return data

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_text[:50]!r}") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n"):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._exactly(2)  # the CRLF after the chunk
