"""The IMAP Service: listeners (plaintext + STARTTLS on 143, implicit TLS on 993), one Session
per connection, orderly shutdown.

Implements RFC 8314 §3 (implicit TLS port) and RFC 9051 §6.2.1 (STARTTLS on the plaintext
port), on top of the sans-IO codec in ``hato.codec.imap`` and the session in ``session.py``.

Left out: the PROXY protocol, per-IP connection limits (``max_connections`` is global).

Security: TLS contexts come from ``hato.servers.tls.server_context`` (TLS 1.2+); bytes
received before a STARTTLS handshake are dropped from every buffer (the framer's and the
stream reader's), so nothing sent in the clear is taken as sent under TLS.

STARTTLS connections get no TLS 1.3 session tickets (RFC 8446 §4.6.1: the server MAY send
them, so zero is allowed). Tickets are the only bytes a server sends after the handshake and
before the client's first command, and a client that reads and writes one TLS connection from
two threads at once (imaplib2, used by offlineimap: a reader thread in SSL_read beside a writer
thread in SSL_write; OpenSSL objects are not thread-safe) was then processing the tickets in
its reader while its writer sent the CAPABILITY that follows STARTTLS: about one connection in
500 under load, the command never left the client (the server saw the handshake end and then
nothing until the client gave up) or failed with SSL UNEXPECTED_MESSAGE; with no tickets, none
in 3,000 (``tests/imap/test_imap_starttls_stress.py``). Implicit TLS keeps its tickets: there the
greeting comes after them, so a client reads both before it first writes. The cost: no
resumption of TLS 1.3 sessions on port 143.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from hato.core import log
from hato.core.clock import Clock, SystemClock
from hato.core.errors import ListenError
from hato.policy.authn import Authenticator
from hato.servers.base import Listener, TlsMode, close_listeners
from hato.servers.imap.cache import ContentCache
from hato.servers.imap.dispatch import HANDLERS
from hato.servers.imap.recent import RecentClaims
from hato.servers.imap.session import Session
from hato.servers.imap.settings import ImapSettings
from hato.servers.tls import server_context, starttls_context
from hato.store.api import MailStore

_READ_CHUNK = 65536


class _StreamAdapter:
    """``session.Stream`` over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        return await self._reader.read(_READ_CHUNK)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        await self._writer.drain()
        # Plaintext the client sent after STARTTLS must not survive the handshake. No await
        # separates this from the transport pausing its reads inside start_tls.
        buffer = getattr(self._reader, "_buffer", None)
        if isinstance(buffer, bytearray):
            buffer.clear()
        await self._writer.start_tls(context)


class ImapService:
    """``hato.servers.base.Service`` for IMAP."""

    name = "imap"

    def __init__(
        self,
        settings: ImapSettings,
        store: MailStore,
        authenticator: Authenticator,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.authenticator = authenticator
        self.clock = clock or SystemClock()
        self._tls: ssl.SSLContext | None = None
        self._starttls: ssl.SSLContext | None = None
        if settings.cert_file is not None and settings.key_file is not None:
            self._tls = server_context(settings.cert_file, settings.key_file)
            # No session tickets after a STARTTLS handshake (module docstring).
            self._starttls = starttls_context(settings.cert_file, settings.key_file)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self.recent = RecentClaims()  # RFC 3501 §2.3.2 \Recent, shared by all sessions
        self.content_cache = ContentCache()  # rendered ENVELOPE/BODYSTRUCTURE, shared too
        self.bound: list[tuple[Listener, tuple[str, int]]] = []

    async def start(self) -> None:
        for listener in self.settings.listeners:
            if listener.tls is not TlsMode.NONE and self._tls is None:
                raise ListenError(f"imap listener {listener.host}:{listener.port} needs TLS "
                                  "but no certificate is configured")
            implicit = self._tls if listener.tls is TlsMode.IMPLICIT else None

            async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                 _listener: Listener = listener) -> None:
                await self._serve(reader, writer, _listener)

            try:
                server = await asyncio.start_server(
                    on_connect, listener.host, listener.port, ssl=implicit,
                    limit=self.settings.max_line)
            except OSError as exc:
                await self.stop(timeout=0)
                raise ListenError(f"imap: cannot listen on {listener.host}:{listener.port}: "
                                  f"{exc.strerror}") from None
            self._servers.append(server)
            for sock in server.sockets:
                address = sock.getsockname()
                self.bound.append((listener, (address[0], address[1])))
                log.event("imap.listening", host=address[0], port=address[1],
                          tls=listener.tls.value)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        log.new_connection_id()
        peer = writer.get_extra_info("peername")
        remote_ip = str(peer[0]) if peer else "unknown"
        log.event("imap.connect", remote_ip=remote_ip, tls=listener.tls.value)
        try:
            if len(self._tasks) > self.settings.max_connections:
                writer.write(b"* BYE too many connections\r\n")
                await writer.drain()
                return
            session = Session(
                settings=self.settings, store=self.store, authenticator=self.authenticator,
                stream=_StreamAdapter(reader, writer), remote_ip=remote_ip,
                secure=listener.tls is TlsMode.IMPLICIT,
                tls_context=self._starttls if listener.tls is TlsMode.STARTTLS else None,
                clock=self.clock, handlers=HANDLERS, recent=self.recent,
                content_cache=self.content_cache,
            )
            await session.run()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.event("imap.disconnect", reason=type(exc).__name__)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await writer.wait_closed()

    async def stop(self, *, timeout: float) -> None:
        await close_listeners(self._servers)  # gh-109564: no accepted socket left unclosed
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
