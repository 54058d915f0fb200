"""One socket per session for the line-based servers: input into a sans-IO buffer with flow
control, writes with a timeout, the STARTTLS upgrade, connection limits and an orderly stop.

``Connection`` is the asyncio Protocol of one client: received bytes go into the codec's input
buffer (anything with ``feed``/``pending``/``clear``: ``hato.codec.pop3.LineReader``,
``hato.codec.managesieve.FrameReader``); ``read`` waits for the next item the codec can take
out of it (a line, a command frame) with an idle timeout. ``Acceptor`` binds the listeners,
refuses connections over the total or per-address limit with a protocol-specific last word,
runs one session task per connection and stops them; ``AcceptorService`` gives a service
built on it its ``addresses``, ``start`` and ``stop``. POP3 (RFC 1939, RFC 2595 §4 STLS) and
ManageSieve (RFC 5804, §2.2 STARTTLS) run on it; the protocol logic stays in their sessions.

STARTTLS (RFC 2595 §4, RFC 3207 §4.2, RFC 5804 §2.2): ``start_tls`` stops reading *before* the
go-ahead is written and drops every byte received in the clear, so nothing pipelined after the
command is taken as sent under TLS, and the client's ClientHello stays in the socket for the
TLS layer. Use a context from ``hato.servers.tls.starttls_context`` (no TLS 1.3 session
tickets: see that module).

Adopting it in SMTP (``hato.servers.smtp.Connection`` is the third variant), SMTP would need:
 - its codec buffer to offer ``feed``/``pending``/``clear`` (today ``receive_data``,
   ``buffered``, ``discard_input``), and ``read`` with a ``take`` that runs the codec's
   next-event step (``wait_data`` + ``consumed`` become one call);
 - batched replies: a ``write`` that appends and a ``flush`` that does what ``write`` does
   here (SMTP answers a pipelined group with one segment, RFC 2920 §3.1);
 - its listener role: ``serve`` receives the ``Listener``; SMTP would map it to its
   ``SmtpListener.role`` (listeners are frozen, hashable values);
 - the 421 on stop: ``read`` returns None with ``Connection.stopping`` set once ``Acceptor.stop``
   wakes idle sessions; SMTP's session would answer 421 4.3.2 there, as it does today on
   ``wake``. Its ``stop_plaintext`` + ``start_tls`` pair is this module's ``start_tls``.
The rest (stalled writes aborted, sockets accepted during ``stop`` closed, lingering
transports aborted) is already what ``SmtpService`` does.

Left out: the PROXY protocol, per-listener certificates, output batching (above).

Security: connection counts are checked before a byte is read; unparsed input is bounded by
pausing the socket (``read_high``); a peer that stops reading our output is dropped after the
write timeout (aborted, not left to drain); sockets accepted while stopping are aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from hato.core import log
from hato.core.errors import ListenError
from hato.servers.base import Listener, TlsMode, close_listeners

READ_HIGH = 1 << 18  # pause reading when this much unparsed input is waiting
_STOP_SETTLE_TICKS = 3  # loop turns for an accepted socket to reach connection_made
_LINGER = 1.0  # seconds a closed transport may take to go before it is aborted


class InputBuffer(Protocol):
    """What ``Connection`` needs of a codec's input buffer."""

    def feed(self, data: bytes) -> None: ...

    @property
    def pending(self) -> int: ...

    def clear(self) -> int:
        """Forget buffered input; returns how many octets went."""
        ...


B = TypeVar("B", bound=InputBuffer)
T = TypeVar("T")


class Connection(asyncio.Protocol, Generic[B]):
    """One client socket: bytes into ``buffer`` (with flow control), writes that wait for a
    peer that reads slowly, the STARTTLS upgrade."""

    def __init__(
        self,
        buffer: B,
        on_open: Callable[[Connection[B]], None],
        *,
        write_timeout: float,
        read_high: int = READ_HIGH,
    ) -> None:
        self.buffer = buffer
        self._on_open = on_open
        self.write_timeout = write_timeout
        self._read_high = read_high
        self._read_low = read_high // 2
        self.transport: asyncio.Transport | None = None
        self.closed = False  # EOF or connection lost: ``read`` returns None once drained
        self.stopping = False  # set by ``wake``: the service is stopping
        self.stalled = False  # a write timed out: close without flushing
        self.lost = asyncio.Event()  # the socket is gone
        self._on_lost: Callable[[Connection[B]], None] | None = None
        # Input, EOF or a wake-up arrived since the session last looked: a flag and at most one
        # waiting future (cheaper per command than an Event plus wait_for).
        self._data = False
        self._waiter: asyncio.Future[bool] | None = None
        self._deadline = 0.0  # loop time at which the current wait times out
        self._timer: asyncio.TimerHandle | None = None  # fires at or before _deadline
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        self.buffer.feed(data)
        self._signal()
        if self.buffer.pending > self._read_high and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.closed = True
        self._signal()
        return False  # close our side too

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

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- waking the session ----------------------------------------------------------------
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

    async def _wait(self, deadline: float) -> bool:
        """Wait for input, EOF or ``wake`` until loop time ``deadline``; False on timeout."""
        if self._data:
            return True
        loop = asyncio.get_running_loop()
        # One timer per connection, re-armed lazily: a wait usually moves the deadline later,
        # which costs no new timer.
        self._deadline = deadline
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        try:
            return await waiter
        finally:
            self._waiter = None

    def _resume_if_drained(self) -> None:
        if self._paused and self.buffer.pending < self._read_low and self.transport:
            self._paused = False
            self.transport.resume_reading()

    # -- used by the session ---------------------------------------------------------------
    @property
    def remote_ip(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if peer else ""

    @property
    def tls_version(self) -> str:
        obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        return str(obj.version()) if obj is not None else "?"

    async def read(self, take: Callable[[B], T | None], timeout: float) -> T | None:
        """The next item ``take`` gets out of the buffer; None at end of input, after
        ``timeout`` seconds of silence, or once the service is stopping (``stopping``).

        What ``take`` raises (an over-long line) propagates, its input already consumed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # No await between clearing the flag and looking at the buffer: input that
            # arrives after the look sets the flag again, so no wake-up is lost.
            self._data = False
            try:
                item = take(self.buffer)
            finally:
                self._resume_if_drained()
            if item is not None:
                return item
            if self.closed or self.stopping:
                return None
            if not await self._wait(deadline):
                return None

    def wake(self) -> None:
        """The service is stopping: a session waiting in ``read`` gets None now."""
        self.stopping = True
        self._signal()

    def lost_callback(self, callback: Callable[[Connection[B]], None]) -> None:
        """Call ``callback(self)`` once the socket is closed."""
        self._on_lost = callback

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        if self._writable.is_set():
            return
        try:
            # A client that stops reading is dropped like an idle one (TimeoutError).
            await asyncio.wait_for(self._writable.wait(), self.write_timeout)
        except TimeoutError:
            self.stalled = True
            raise

    async def start_tls(self, context: ssl.SSLContext, *, reply: bytes, timeout: float) -> int:
        """Send ``reply`` (the go-ahead) and run the server side of the TLS handshake.

        Returns how many octets of input received in the clear were discarded. Raises
        ConnectionError, ssl.SSLError or TimeoutError when the handshake fails."""
        assert self.transport is not None
        # RFC 2595 §4, RFC 3207 §4.2, RFC 5804 §2.2: nothing the client sent before the
        # handshake may count as sent under TLS. Stop reading before the go-ahead leaves: what
        # comes after it (the ClientHello) waits in the socket for the TLS layer.
        self.transport.pause_reading()
        dropped = self.buffer.clear()
        await self.write(reply)
        dropped += self.buffer.clear()
        self._paused = False  # loop.start_tls resumes reading on the new transport
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self.transport, self, context, server_side=True, ssl_handshake_timeout=timeout
        )
        if transport is None:
            raise ConnectionResetError("connection closed during TLS handshake")
        self.transport = transport
        return dropped

    def close(self) -> None:
        if self.transport is None:
            return
        if self.stalled:
            self.transport.abort()  # close() would wait for the peer to read the backlog
        elif not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LimitSettings(Protocol):
    """The settings fields ``ConnectionLimits.of`` reads (Pop3Settings, ManageSieveSettings)."""

    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_ip(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def tls_handshake_timeout(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    max_connections_per_ip: int
    write_timeout: float  # seconds a write may wait for a peer that does not read
    tls_handshake_timeout: float

    @classmethod
    def of(cls, settings: LimitSettings) -> ConnectionLimits:
        """The limits of a service's settings; a write may wait as long as a read."""
        return cls(
            max_connections=settings.max_connections,
            max_connections_per_ip=settings.max_connections_per_ip,
            write_timeout=settings.idle_timeout,
            tls_handshake_timeout=settings.tls_handshake_timeout,
        )


class Acceptor(Generic[B]):
    """The listeners of one service: accepts, limits, runs ``serve(conn, listener)`` per
    connection, stops. Logs ``<name>.listening`` and ``<name>.refused``."""

    def __init__(
        self,
        name: str,
        *,
        buffer: Callable[[], B],
        serve: Callable[[Connection[B], Listener], Awaitable[None]],
        refusal: bytes,
        limits: ConnectionLimits,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.name = name
        self._buffer = buffer
        self._serve = serve
        self._refusal = refusal  # the last word to a connection over the limits
        self.limits = limits
        self.tls_context = tls_context  # implicit TLS (RFC 8314 §3)
        self.stopping = False
        self.addresses: list[tuple[Listener, tuple[str, int]]] = []
        self._servers: list[asyncio.Server] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._connections: set[Connection[B]] = set()  # connections with a session
        self._open: set[Connection[B]] = set()  # every accepted socket not yet closed
        self._per_ip: Counter[str] = Counter()

    @property
    def active(self) -> int:
        """How many connections have a session now."""
        return len(self._connections)

    async def start(self, listeners: Iterable[Listener]) -> None:
        """Binds every listener; ListenError naming the address when one cannot be."""
        loop = asyncio.get_running_loop()
        for listener in listeners:
            where = f"{listener.host}:{listener.port}"
            if listener.tls is not TlsMode.NONE and self.tls_context is None:
                raise ListenError(f"{self.name} listener {where} needs a TLS certificate")
            implicit = self.tls_context if listener.tls is TlsMode.IMPLICIT else None
            try:
                server = await loop.create_server(
                    functools.partial(self._protocol, listener),
                    listener.host,
                    listener.port,
                    ssl=implicit,
                    ssl_handshake_timeout=(
                        self.limits.tls_handshake_timeout if implicit else None
                    ),
                )
            except OSError as exc:
                await self.stop(timeout=0)
                raise ListenError(f"{self.name} cannot listen on {where}: {exc.strerror}") from None
            self._servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.addresses.append((listener, (host, port)))
            log.event(
                f"{self.name}.listening",
                host=listener.host,
                port=self.addresses[-1][1][1],
                tls=listener.tls.value,
            )

    def _protocol(self, listener: Listener) -> Connection[B]:
        return Connection(
            self._buffer(),
            lambda conn: self._opened(conn, listener),
            write_timeout=self.limits.write_timeout,
        )

    def _opened(self, conn: Connection[B], listener: Listener) -> None:
        self._open.add(conn)
        conn.lost_callback(self._open.discard)
        if self.stopping:
            # Accepted from the backlog (or out of an implicit-TLS handshake) while stop()
            # runs: close it rather than let it outlive the service.
            conn.abort()
            return
        ip = conn.remote_ip
        if (
            len(self._connections) >= self.limits.max_connections
            or self._per_ip[ip] >= self.limits.max_connections_per_ip
        ):
            log.event(f"{self.name}.refused", remote_ip=ip, reason="too_many_connections")
            assert conn.transport is not None
            conn.transport.write(self._refusal)
            conn.close()
            return
        self._connections.add(conn)
        self._per_ip[ip] += 1
        task = asyncio.get_running_loop().create_task(self._run(conn, listener, ip))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _run(self, conn: Connection[B], listener: Listener, ip: str) -> None:
        try:
            await self._serve(conn, listener)
        finally:
            conn.close()
            self._connections.discard(conn)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    async def stop(self, *, timeout: float) -> None:
        """Stop accepting; sessions waiting for a command end now (``Connection.stopping``),
        busy ones get ``timeout`` seconds; then every socket is closed."""
        self.stopping = True
        for conn in list(self._connections):
            conn.wake()
        await close_listeners(self._servers)  # gh-109564: no accepted socket left unclosed
        # Sockets accepted just before close() are still on their way to connection_made
        # (accept → transport → connection_made): let them arrive, where they are aborted.
        for _ in range(_STOP_SETTLE_TICKS):
            await asyncio.sleep(0)
        pending = set(self._sessions)
        if pending and timeout > 0:
            _done, pending = await asyncio.wait(pending, timeout=timeout)
        for conn in list(self._connections):
            conn.abort()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        # Closed transports go in loop callbacks; abort what lingers (a peer that does not
        # read the last reply), so that nothing outlives the service.
        lingering = [conn for conn in self._open if not conn.lost.is_set()]
        if lingering:
            waiters = [asyncio.ensure_future(conn.lost.wait()) for conn in lingering]
            await asyncio.wait(waiters, timeout=_LINGER)
            for waiter in waiters:
                waiter.cancel()
            for conn in lingering:
                if not conn.lost.is_set():
                    conn.abort()
            await asyncio.sleep(0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()


class AcceptorService(Generic[B]):
    """What a ``hato.servers.base.Service`` built on an ``Acceptor`` shares: the bound
    addresses, start and stop. Subclasses set ``_acceptor`` and ``_listeners``."""

    _acceptor: Acceptor[B]
    _listeners: tuple[Listener, ...]

    @property
    def addresses(self) -> list[tuple[Listener, tuple[str, int]]]:
        """Where each listener is bound (tests bind port 0 and read the port here)."""
        return self._acceptor.addresses

    async def start(self) -> None:
        await self._acceptor.start(self._listeners)

    async def stop(self, *, timeout: float) -> None:
        """Sessions waiting for a command end now, busy ones get ``timeout`` seconds."""
        await self._acceptor.stop(timeout=timeout)
