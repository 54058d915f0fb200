"""A running ManageSieve server on loopback (ephemeral ports) over a real SQLite store, for
blocking clients (raw sockets, sievelib, sieve-connect): its event loop runs in a thread."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hato.core.clock import FixedClock
from hato.ops.tls import make_self_signed
from hato.policy.authn import Authenticator, LockoutPolicy, make_credentials
from hato.servers.base import Listener, TlsMode
from hato.servers.managesieve import ManageSieveServer, ManageSieveSettings
from hato.servers.tls import server_context, starttls_context
from hato.store.model import Account, SieveScript
from hato.store.sqlite import SqliteStore, open_store

T = TypeVar("T")
ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "s3cret pass"


@dataclass
class SieveEnv:
    """Handles to the server under test; ``call`` runs a coroutine on the server's loop."""

    loop: asyncio.AbstractEventLoop
    store: SqliteStore
    server: ManageSieveServer
    alice: Account
    bob: Account
    cert_file: Path
    ports: dict[TlsMode, int]
    password = PASSWORD

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def scripts(self, account: Account | None = None) -> list[SieveScript]:
        return self.call(self.store.list_scripts((account or self.alice).id))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))

    def connect(self, mode: TlsMode = TlsMode.NONE) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.ports[mode]), timeout=10)


class Conversation:
    """A raw client: send bytes, read CRLF lines (and literals) back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.reader.readline()

    def read(self, size: int) -> bytes:
        return self.reader.read(size)

    def until_status(self) -> list[bytes]:
        """Lines up to and including the next OK/NO/BYE line."""
        lines = []
        while True:
            line = self.line()
            if not line:
                raise ConnectionError(f"closed after {lines!r}")
            lines.append(line)
            if line.split(b" ", 1)[0].rstrip(b"\r\n") in (b"OK", b"NO", b"BYE"):
                return lines

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


EnvFactory = Callable[..., SieveEnv]


def sieve_env_factory(tmp_path: Path) -> Iterator[EnvFactory]:
    """``start(demo=False, lockout=None, **settings)`` starts a server; all stopped at the end."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="managesieve-test-loop", daemon=True)
    thread.start()
    envs: list[SieveEnv] = []

    def start(
        *, demo: bool = False, lockout: LockoutPolicy | None = None, **settings: Any
    ) -> SieveEnv:
        async def work() -> SieveEnv:
            base = tmp_path / f"env{len(envs)}"
            cert, key = base / "cert.pem", base / "key.pem"
            make_self_signed(cert, key, hostnames=["localhost"], loopback=True)
            store = await open_store(base / "data")
            await store.add_domain("example.org")
            alice = await store.add_account(ALICE, make_credentials(PASSWORD))
            bob = await store.add_account(BOB, make_credentials(PASSWORD))
            auth = Authenticator(
                store, clock=FixedClock(), plaintext_on_loopback=demo, lockout=lockout
            )
            listeners = tuple(
                Listener("127.0.0.1", 0, mode)
                for mode in (TlsMode.NONE, TlsMode.STARTTLS, TlsMode.IMPLICIT)
            )
            server = ManageSieveServer(
                ManageSieveSettings(hostname="sieve.example.org", listeners=listeners, **settings),
                store=store,
                authenticator=auth,
                tls_context=server_context(cert, key),
                starttls_context=starttls_context(cert, key),
            )
            await server.start()
            ports = {listener.tls: addr[1] for listener, addr in server.addresses}
            return SieveEnv(loop, store, server, alice, bob, cert, ports)

        env = asyncio.run_coroutine_threadsafe(work(), loop).result(timeout=60)
        envs.append(env)
        return env

    try:
        yield start
    finally:
        for env in envs:
            env.call(env.server.stop(timeout=2))
            env.call(env.store.close())
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
