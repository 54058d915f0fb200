"""A scriptable SMTP sink for the outbound tests: an asyncio server on a chosen loopback
address that records every transaction and answers as told.

It speaks enough SMTP for a client under test (EHLO with a configurable capability list,
STARTTLS with a given certificate, MAIL/RCPT with parameters recorded, DATA with
dot-unstuffing, BDAT, RSET, QUIT). ``rcpt_replies`` maps a recipient address to the reply
its RCPT gets (a list is consumed one reply per attempt, its last item repeating);
``data_reply`` is the reply to the end of data.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field


@dataclass
class Transaction:
    sender: str
    mail_params: list[str]
    rcpts: list[tuple[str, list[str]]] = field(default_factory=list)
    data: bytes = b""
    tls: bool = False
    command: str = ""


@dataclass
class Session:
    tls: bool = False
    helo: str = ""
    commands: list[str] = field(default_factory=list)


class Sink:
    def __init__(
        self,
        host: str,
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        capabilities: tuple[str, ...] = ("PIPELINING", "8BITMIME", "DSN", "SMTPUTF8", "SIZE 0"),
        rcpt_replies: dict[str, str | list[str]] | None = None,
        data_reply: str = "250 2.0.0 Ok: queued",
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.capabilities = capabilities
        self.rcpt_replies = rcpt_replies or {}
        self.data_reply = data_reply
        self.auth = auth
        self.transactions: list[Transaction] = []
        self.sessions: list[Session] = []
        self.authenticated: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Sink:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    @property
    def delivered(self) -> list[Transaction]:
        return [t for t in self.transactions if t.data]

    def _reply_for(self, address: str) -> str:
        reply = self.rcpt_replies.get(address.lower(), "250 2.1.5 Ok")
        if isinstance(reply, list):
            return reply.pop(0) if len(reply) > 1 else reply[0]
        return reply

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session()
        self.sessions.append(session)
        try:
            await self._session(reader, writer, session)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError, OSError):
                pass

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: Session
    ) -> None:
        def send(text: str) -> None:
            writer.write(text.encode() + b"\r\n")

        send("220 sink.test ESMTP test sink")
        txn: Transaction | None = None
        while True:
            await writer.drain()
            line = await reader.readline()
            if not line:
                return
            command = line.decode("utf-8", errors="replace").rstrip("\r\n")
            session.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                session.helo = command[5:]
                caps = list(self.capabilities)
                if self.tls is not None and not session.tls:
                    caps.append("STARTTLS")
                if self.auth is not None:
                    caps.append("AUTH PLAIN LOGIN")
                lines = ["sink.test hello", *caps]
                for text in lines[:-1]:
                    send(f"250-{text}")
                send(f"250 {lines[-1]}")
            elif verb == "STARTTLS" and self.tls is not None and not session.tls:
                send("220 2.0.0 Ready to start TLS")
                await writer.drain()
                await writer.start_tls(self.tls)
                session.tls = True
                txn = None
            elif verb == "AUTH":
                token = command.split()[2] if len(command.split()) > 2 else ""
                parts = base64.b64decode(token).split(b"\0") if token else []
                if (
                    self.auth
                    and len(parts) == 3
                    and (
                        parts[1].decode(),
                        parts[2].decode(),
                    )
                    == self.auth
                ):
                    self.authenticated.append(parts[1].decode())
                    send("235 2.7.0 Authentication successful")
                else:
                    send("535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL":
                path, _, params = command[10:].partition(">")
                txn = Transaction(path.lstrip("<"), params.split(), tls=session.tls)
                self.transactions.append(txn)
                send("250 2.1.0 Ok")
            elif verb == "RCPT" and txn is not None:
                path, _, params = command[8:].partition(">")
                address = path.lstrip("<")
                reply = self._reply_for(address)
                if reply.startswith("2"):
                    txn.rcpts.append((address, params.split()))
                send(reply)
            elif verb == "DATA" and txn is not None:
                if not txn.rcpts:
                    send("554 5.5.1 No valid recipients")
                    continue
                send("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                body = b""
                while True:
                    chunk = await reader.readline()
                    if chunk == b".\r\n" or not chunk:
                        break
                    body += chunk[1:] if chunk.startswith(b".") else chunk
                txn.command = "DATA"
                if self.data_reply.startswith("2"):
                    txn.data = body
                send(self.data_reply)
                txn = None
            elif verb == "BDAT" and txn is not None:
                parts = command.split()
                size = int(parts[1])
                chunk = await reader.readexactly(size)
                txn.command = "BDAT"
                txn.data += chunk
                if len(parts) > 2:
                    if not self.data_reply.startswith("2"):
                        txn.data = b""
                    send(self.data_reply)
                    txn = None
                else:
                    send(f"250 2.0.0 {size} octets received")
            elif verb == "RSET":
                txn = None
                send("250 2.0.0 Ok")
            elif verb == "NOOP":
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                await writer.drain()
                return
            else:
                send("502 5.5.2 Error: command not recognized")
