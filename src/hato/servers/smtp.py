"""The SMTP service: MX, submission (STARTTLS) and submissions (implicit TLS) listeners.

Implements the listener side of RFC 5321 (MX, port 25), RFC 6409 (submission, port 587 with
STARTTLS, RFC 3207) and RFC 8314 §3 (submissions, implicit TLS on port 465), connection
limits in total and per client address (421 4.7.0, RFC 5321 §3.8 / RFC 3463 X.7.0) and read
flow control; each connection runs one ``hato.servers.smtp_session.SmtpSession`` over the
sans-IO codec ``hato.codec.smtp``.

Leaves out: the PROXY protocol, per-listener certificates (one TLS context for all), privilege
dropping (the app layer binds, then drops).

Security: connection counts are bounded before any byte is read; unparsed input is bounded by
pausing the socket; bytes received before a STARTTLS handshake are dropped before it starts
(RFC 3207 §4.2); failed TLS handshakes only close that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hato.codec.smtp import Limits, ServerConnection
from hato.core import log
from hato.core.clock import Clock, SystemClock
from hato.core.errors import ConfigError, ListenError
from hato.core.reply import Reply
from hato.delivery.recipients import RecipientResolver
from hato.outbound.settings import OutboundSettings
from hato.policy.authn import Authenticator
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode, close_listeners
from hato.servers.smtp_session import SmtpSession, make_codec
from hato.store.api import MailStore

_READ_HIGH = 1 << 18  # pause reading when this much input waits unparsed
_READ_LOW = 1 << 16
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")


class OutboundQueue(Protocol):
    """What sessions need of the outbound queue (hato.outbound.queue.QueueRunner, or in an
    SMTP worker the main process's runner behind the worker channel)."""

    settings: OutboundSettings

    def wake(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpListener:
    """One listening socket and what it is for."""

    listener: Listener
    role: Role


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Everything the SMTP service needs; the app layer maps the ``[smtp]`` config onto it."""

    hostname: str
    listeners: tuple[SmtpListener, ...]
    limits: Limits = field(default_factory=Limits)
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: server timeout at least 5 minutes
    session_timeout: float = 3600.0
    max_connections: int = 500
    max_connections_per_ip: int = 20
    max_received: int = 100  # RFC 5321 §6.3: loop detection by counting Received fields
    quota_permanent: bool = False  # over quota: 552 5.2.2 instead of 452 4.2.2
    postmaster: str | None = None  # where RCPT TO:<Postmaster> goes; None: postmaster@hostname
    tls_handshake_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_ip < 1:
            raise ConfigError("smtp: connection limits must be positive")
        if self.idle_timeout <= 0 or self.session_timeout <= 0:
            raise ConfigError("smtp: timeouts must be positive")

    @property
    def postmaster_address(self) -> str:
        return self.postmaster or f"postmaster@{self.hostname}"


class Connection(asyncio.Protocol):
    """One socket: input goes straight into the codec's buffer (with flow control), output
    is batched; the STARTTLS upgrade drops anything received before the handshake."""

    def __init__(
        self,
        on_open: Callable[[Connection], None],
        codec: ServerConnection,
        *,
        write_timeout: float,
    ) -> None:
        self._on_open = on_open
        self.codec = codec
        self.write_timeout = write_timeout
        self.lost = asyncio.Event()  # the transport is gone (socket closed)
        self._on_lost: Callable[[Connection], None] | None = None
        self.stalled = False  # a write timed out: close without flushing
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # Input (or EOF, or a wake-up) arrived since the session last waited: a flag and at
        # most one waiting future, cheaper per command than an Event plus wait_for.
        self._data = False
        self._waiter: asyncio.Future[bool] | None = None
        self._deadline = 0.0  # loop time at which the current wait times out
        self._timer: asyncio.TimerHandle | None = None  # fires at or before _deadline
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False
        self._out: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        self.codec.receive_data(data)
        self._signal()
        if self.codec.buffered > _READ_HIGH and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.closed = True
        self._signal()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._signal()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._writable.set()
        self.lost.set()
        if self._on_lost is not None:
            self._on_lost(self)

    def _signal(self) -> None:
        self._data = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _on_timer(self) -> None:
        """The idle timer: time out the waiter, or re-arm for a deadline moved meanwhile."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_result(False)
        else:
            self._timer = loop.call_at(self._deadline, self._on_timer)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- used by the session -----------------------------------------------------------------
    @property
    def remote_ip(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if peer else ""

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    def consumed(self) -> None:
        """The codec took input out of its buffer: resume reading once it is low."""
        if self._paused and self.codec.buffered < _READ_LOW and self.transport:
            self._paused = False
            self.transport.resume_reading()

    async def wait_data(self, timeout: float) -> bool:
        """Wait for more input, EOF or ``wake``; False after ``timeout`` seconds of silence."""
        if self.closed:
            return True
        self.consumed()
        # Input that arrived while the session was busy (e.g. awaiting a flush or a store
        # commit) has already set the flag: never clear it before waiting, or that wake-up
        # is lost and pipelined bytes sit in the codec's buffer until the peer sends more.
        if not self._data:
            loop = asyncio.get_running_loop()
            # One timer per connection, re-armed lazily: a wait only moves the deadline
            # later (the usual case), so it costs no timer of its own.
            self._deadline = loop.time() + timeout
            if self._timer is not None and self._timer.when() > self._deadline:
                self._timer.cancel()
                self._timer = None
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._on_timer)
            waiter = self._waiter = loop.create_future()
            try:
                if not await waiter:
                    return False
            finally:
                self._waiter = None
        self._data = False
        return True

    def lost_callback(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(self)`` once the socket is closed."""
        self._on_lost = callback

    def wake(self) -> None:
        """Interrupt ``wait_data`` (the service is stopping)."""
        self._signal()

    def write(self, data: bytes) -> None:
        self._out.append(data)

    async def flush(self) -> None:
        if not self._out:
            return
        data, self._out = b"".join(self._out), []
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if self._writable.is_set():
            return
        try:
            # a peer that stops reading our replies cannot hold the session forever
            await asyncio.wait_for(self._writable.wait(), self.write_timeout)
        except TimeoutError:
            self.stalled = True
            raise

    def stop_plaintext(self) -> None:
        """Before the 220 to STARTTLS leaves: stop reading, and drop every byte received so
        far (RFC 3207 §4.2: input pipelined after STARTTLS is discarded). What the client
        sends from now on stays in the socket until the TLS layer reads it."""
        assert self.transport is not None
        self.transport.pause_reading()
        self.codec.discard_input()

    async def start_tls(self, context: ssl.SSLContext, *, timeout: float) -> None:
        """Upgrade the connection (after ``stop_plaintext`` and the 220 reply)."""
        assert self.transport is not None
        self.codec.discard_input()
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self.transport, self, context, server_side=True, ssl_handshake_timeout=timeout
        )
        if transport is None:
            raise ConnectionResetError("connection closed during TLS handshake")
        self.transport = transport

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is None:
            return
        if self.stalled:
            self.transport.abort()  # close() would wait for the peer to read the backlog
        elif not self.transport.is_closing():
            self.transport.close()


class SmtpService:
    """The SMTP ``Service`` (hato.servers.base): all listeners of one configuration."""

    name = "smtp"

    def __init__(
        self,
        settings: SmtpSettings,
        store: MailStore,
        authenticator: Authenticator,
        *,
        tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        clock: Clock | None = None,
        outbound: OutboundQueue | None = None,
    ) -> None:
        self.settings = settings
        self.outbound = outbound  # remote recipients are queued only when a runner exists
        self.store = store
        self.authenticator = authenticator
        self.tls = tls  # implicit TLS (and STARTTLS when ``starttls`` is not given)
        # STARTTLS upgrades: a context without TLS 1.3 session tickets (hato.servers.tls)
        self.starttls = starttls if starttls is not None else tls
        self.clock = clock or SystemClock()
        self.cipher_ids: dict[str, int] = (
            {c["name"]: c["id"] for c in tls.get_ciphers()} if tls is not None else {}
        )
        self.resolver = RecipientResolver(store, clock=self.clock)
        self._servers: list[tuple[SmtpListener, asyncio.Server]] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[str] = Counter()
        self._total = 0
        self.stopping = False
        self._connections: set[Connection] = set()
        self._open: set[Connection] = set()  # every accepted socket not yet closed

    @property
    def addresses(self) -> list[tuple[SmtpListener, str, int]]:
        """Where each listener is bound (tests bind port 0 and read the port here)."""
        out = []
        for spec, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((spec, str(host), int(port)))
        return out

    def port_for(self, role: Role, tls: TlsMode) -> int:
        for spec, _host, port in self.addresses:
            if spec.role is role and spec.listener.tls is tls:
                return port
        raise LookupError(f"no {role.value} listener with TLS mode {tls.value}")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for spec in self.settings.listeners:
            lst = spec.listener
            if lst.tls is not TlsMode.NONE and self.tls is None:
                raise ListenError(f"smtp listener {lst.host}:{lst.port} needs a TLS certificate")
            implicit = self.tls if lst.tls is TlsMode.IMPLICIT else None
            try:
                server = await loop.create_server(
                    lambda spec=spec: self._protocol(spec),
                    lst.host,
                    lst.port,
                    ssl=implicit,
                    ssl_handshake_timeout=(
                        self.settings.tls_handshake_timeout if implicit else None
                    ),
                    reuse_address=True,
                )
            except OSError as exc:
                await self.stop(timeout=0)
                raise ListenError(f"cannot listen on {lst.host}:{lst.port}: {exc}") from None
            self._servers.append((spec, server))
            log.event("smtp.listening", host=lst.host, port=lst.port, role=spec.role.value)

    async def adopt(
        self, sock: socket.socket, spec: SmtpListener, on_end: Callable[[], None]
    ) -> None:
        """Run a session on a connection accepted elsewhere (by the main process, for an SMTP
        worker: hato.servers.smtp_workers), as if one of our listeners had accepted it;
        ``on_end`` is called once when it is over (handshake failures included)."""
        loop = asyncio.get_running_loop()
        implicit = self.tls if spec.listener.tls is TlsMode.IMPLICIT else None
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                on_end()

        sock.setblocking(False)
        try:
            transport, conn = await loop.connect_accepted_socket(
                lambda: self._protocol(spec, on_end=end),
                sock,
                ssl=implicit,
                ssl_handshake_timeout=self.settings.tls_handshake_timeout if implicit else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.event("smtp.tls.failed", error=type(exc).__name__)
            sock.close()
            end()
            return
        del transport, conn  # the session (or the refusal in ``opened``) calls ``end``

    def _protocol(
        self, spec: SmtpListener, *, on_end: Callable[[], None] | None = None
    ) -> Connection:
        codec = make_codec(self, spec)

        def opened(conn: Connection) -> None:
            ip = conn.remote_ip
            self._open.add(conn)
            conn.lost_callback(self._open.discard)
            if self.stopping:
                # accepted from the backlog while stop() runs: close it (stop() waits for it)
                assert conn.transport is not None
                conn.transport.abort()
                if on_end is not None:
                    on_end()
                return
            if (
                self._total >= self.settings.max_connections
                or self._per_ip[ip] >= self.settings.max_connections_per_ip
            ):
                log.event("smtp.connection.refused", remote_ip=ip, reason="limit")
                assert conn.transport is not None
                conn.transport.write(TOO_MANY_CONNECTIONS.to_bytes())
                conn.close()
                if on_end is not None:
                    on_end()
                return
            self._total += 1
            self._per_ip[ip] += 1
            session = SmtpSession(self, spec, conn)
            task = asyncio.get_running_loop().create_task(session.run())
            self._sessions.add(task)
            self._connections.add(conn)
            task.add_done_callback(lambda t: self._ended(t, conn, ip))
            if on_end is not None:
                task.add_done_callback(lambda _t: on_end())

        return Connection(opened, codec, write_timeout=self.settings.idle_timeout)

    def _ended(self, task: asyncio.Task[None], conn: Connection, ip: str) -> None:
        self._sessions.discard(task)
        self._connections.discard(conn)
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    async def stop(self, *, timeout: float) -> None:
        self.stopping = True  # idle sessions say 421 and close; busy ones finish their message
        for conn in list(self._connections):
            conn.wake()
        await close_listeners(server for _spec, server in self._servers)  # gh-109564
        self._servers = []
        # Sockets accepted just before close() are still being set up in loop callbacks
        # (accept task → transport → connection_made): let them get there, where they are
        # aborted now that we are stopping, instead of outliving the service unclosed.
        for _ in range(3):
            await asyncio.sleep(0)
        pending = set(self._sessions)
        if pending and timeout > 0:
            _done, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Sockets close in loop callbacks: let them run, abort what still lingers (a peer
        # that does not read the last reply), so nothing outlives the service.
        lingering = [conn for conn in self._open if not conn.lost.is_set()]
        if lingering:
            waiters = [asyncio.ensure_future(c.lost.wait()) for c in lingering]
            await asyncio.wait(waiters, timeout=1)
            for waiter in waiters:
                waiter.cancel()
            for conn in lingering:
                if not conn.lost.is_set():
                    conn.abort()
            await asyncio.sleep(0)
