"""A small SMTP server on 127.0.0.1 for the ``smtp`` transport's tests (asyncio, RFC 5321 subset).

It speaks EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT, keeps each message
it accepts, and can be told to refuse recipients (550) or to answer DATA with
a temporary failure (451).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class FakeSmtp:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    busy: bool = False  # DATA answered 451
    connections: int = 0

    def start(self) -> FakeSmtp:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(asyncio.start_server(
                self._session, self.host, self.port))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="fake-smtp", daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        async def cancel() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(cancel(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1

        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 fake-smtp ready")
        sender, recipients = "", []
        try:
            while True:
                line = (await reader.readline()).decode(errors="replace").rstrip("\r\n")
                if not line:
                    return
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    say("250-fake-smtp" if verb == "EHLO" else "250 fake-smtp")
                    if verb == "EHLO":
                        say("250 8BITMIME")
                elif verb == "MAIL":
                    sender, recipients = line.split(":", 1)[1].strip().strip("<>").split(">")[0], []
                    say("250 OK")
                elif verb == "RCPT":
                    address = line.split(":", 1)[1].strip().strip("<>")
                    if address in self.refuse:
                        say("550 5.1.1 no such user here")
                    else:
                        recipients.append(address)
                        say("250 OK")
                elif verb == "DATA":
                    say("354 go ahead")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    if self.busy:
                        say("451 4.3.0 try again later")
                    else:
                        # undo the client's dot-stuffing (RFC 5321 4.5.2), as a server does
                        body = b"\r\n" + data[:-5]
                        body = body.replace(b"\r\n..", b"\r\n.")[2:]
                        self.messages.append(Received(sender, recipients, body))
                        say("250 OK queued")
                elif verb == "RSET":
                    sender, recipients = "", []
                    say("250 OK")
                elif verb == "NOOP":
                    say("250 OK")
                elif verb == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    return
                else:
                    say("502 not implemented")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()
