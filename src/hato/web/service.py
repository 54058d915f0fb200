"""The HTTP(S) Service: uvicorn serving ``hato.web.app`` inside Hato's event loop.

We bind every listener's socket ourselves (so a taken port raises ``ListenError`` naming the
address before anything serves) and hand them to ``uvicorn.Server.serve``: one server for the
plaintext sockets, one with the shared TLS context for the HTTPS sockets. HTTP/1.1 framing is
uvicorn's h11 protocol (RFC 9112), with limits on header size, concurrent connections and
keep-alive time. ``stop(timeout=...)`` stops accepting, closes idle keep-alive connections,
lets in-flight requests finish for ``timeout`` seconds, then cancels them.

Left out: HTTP/2, WebSockets, the ASGI lifespan protocol (nothing needs start-up hooks),
uvicorn's own logging configuration and signal handling (Hato's runtime owns both).

Security: HTTPS uses the one TLS context of ``hato.servers.tls`` (TLS 1.2+); proxy headers
are not trusted (``proxy_headers=False``): the peer address is the TCP peer's; no ``Server``
header names the software.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CollectorRegistry

from hato.core import log
from hato.core.errors import ListenError
from hato.core.metrics import Counters
from hato.servers.base import Listener, TlsMode
from hato.store.api import MailStore
from hato.web.app import build_app
from hato.web.metrics import MetricsExporter
from hato.web.settings import WebSettings

_BACKLOG = 128


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's Server without its signal handlers: ``hato serve`` installs its own and
    stops services through ``stop``; uvicorn's would replace them while it runs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _where(listener: Listener) -> str:
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    return f"{host}:{listener.port}"


def _bind(listener: Listener) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]:443" next to "0.0.0.0:443" must not claim the IPv4 port too.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.host, listener.port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ListenError(f"http cannot listen on {_where(listener)}: {reason}") from None
    return sock


class WebService:
    """The HTTP Service (hato.servers.base.Service)."""

    name = "http"

    def __init__(
        self,
        settings: WebSettings,
        *,
        store: MailStore,
        tls_context: ssl.SSLContext | None,
        counters: Counters | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tls_context = tls_context
        self.counters = counters if counters is not None else Counters()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.app = build_app(
            settings,
            store=store,
            counters=self.counters,
            exporter=MetricsExporter(self.registry, self.counters),
        )
        self.addresses: list[tuple[Listener, tuple[str, int]]] = []
        self._servers: list[tuple[_EmbeddedServer, asyncio.Task[None]]] = []

    def _config(self, *, tls: bool) -> uvicorn.Config:
        context = self.tls_context
        factory: Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None
        factory = (lambda _config, _default: context) if tls and context is not None else None
        s = self.settings
        return uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            limit_concurrency=s.max_connections,
            timeout_keep_alive=s.keep_alive,
            h11_max_incomplete_event_size=s.max_header_bytes,
            ssl_context_factory=factory,
        )

    async def start(self) -> None:
        plain: list[socket.socket] = []
        secure: list[socket.socket] = []
        try:
            for listener in self.settings.listeners:
                if listener.tls is TlsMode.IMPLICIT and self.tls_context is None:
                    raise ListenError(
                        f"http listener {_where(listener)} needs a TLS certificate"
                    )
                if listener.tls is TlsMode.STARTTLS:
                    raise ListenError(f"http listener {_where(listener)}: HTTP has no STARTTLS")
                sock = _bind(listener)
                (secure if listener.tls is TlsMode.IMPLICIT else plain).append(sock)
                host, port = sock.getsockname()[:2]
                self.addresses.append((listener, (host, port)))
                log.event("http.listening", host=host, port=port, tls=listener.tls.value)
        except ListenError:
            for sock in plain + secure:
                sock.close()
            self.addresses.clear()
            raise
        if plain:
            try:
                await self._serve(plain, tls=False)
            except ListenError:
                for sock in secure:
                    sock.close()
                raise
        if secure:
            await self._serve(secure, tls=True)

    async def _serve(self, sockets: list[socket.socket], *, tls: bool) -> None:
        server = _EmbeddedServer(self._config(tls=tls))
        task = asyncio.get_running_loop().create_task(server.serve(sockets=sockets))
        self._servers.append((server, task))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if not server.started:
            await self.stop(timeout=0)
            error = task.exception() if not task.cancelled() else None
            raise ListenError(f"http server did not start: {error!r}")

    async def stop(self, *, timeout: float) -> None:
        for server, _task in self._servers:
            # uvicorn waits this long for in-flight requests, then cancels them.
            server.config.timeout_graceful_shutdown = max(0, math.ceil(timeout))
            server.should_exit = True
        results = await asyncio.gather(*(t for _s, t in self._servers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.event("http.stop.error", error=repr(result))
        self._servers.clear()
        self.addresses.clear()
