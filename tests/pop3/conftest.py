"""A running POP3 server on loopback (ephemeral ports) over a real SQLite store, for blocking
clients (poplib, fetchmail, getmail): the server's event loop runs in a background thread.
Also puts ``tests/`` on ``sys.path`` (``starttls_kit``)."""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hato.core.clock import FixedClock
from hato.ops.tls import make_self_signed
from hato.policy.authn import Authenticator, LockoutPolicy, make_credentials
from hato.servers.base import Listener, TlsMode
from hato.servers.pop3 import Pop3Server, Pop3Settings
from hato.servers.tls import server_context, starttls_context
from hato.store.model import Account, DeliveryTarget
from hato.store.sqlite import SqliteStore, open_store

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

T = TypeVar("T")
ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "s3cret pass"
BOB_PASSWORD = "bob's password"


@dataclass
class Pop3Env:
    """Handles to the server under test; ``call`` runs a coroutine on the server's loop."""

    loop: asyncio.AbstractEventLoop
    store: SqliteStore
    server: Pop3Server
    alice: Account
    bob: Account
    cert_file: Path
    ports: dict[TlsMode, int]
    password = PASSWORD
    bob_password = BOB_PASSWORD

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def deliver(self, message: bytes, account: Account | None = None) -> int:
        async def work() -> int:
            writer = self.store.blobs.writer()
            writer.write(message)
            ref = await asyncio.to_thread(writer.commit)
            appended = await self.store.deliver(ref, [DeliveryTarget((account or self.alice).id)])
            return appended[0].uid

        return self.call(work())

    def inbox_uids(self, account: Account | None = None) -> list[int]:
        async def work() -> list[int]:
            mailbox = await self.store.get_mailbox((account or self.alice).id, "INBOX")
            assert mailbox is not None
            return [m.uid for m in await self.store.list_messages(mailbox.id)]

        return self.call(work())

    def seen_uids(self) -> list[int]:
        async def work() -> list[int]:
            mailbox = await self.store.get_mailbox(self.alice.id, "INBOX")
            assert mailbox is not None
            messages = await self.store.list_messages(mailbox.id)
            return [m.uid for m in messages if "\\Seen" in m.flags]

        return self.call(work())

    def uidvalidity(self) -> int:
        async def work() -> int:
            mailbox = await self.store.get_mailbox(self.alice.id, "INBOX")
            assert mailbox is not None
            return mailbox.uidvalidity

        return self.call(work())

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))

    @staticmethod
    def message(subject: str, body: str = "Hello.\r\n") -> bytes:
        return (
            f"From: sender@example.net\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\n{body}"
        ).encode()


EnvFactory = Callable[..., Pop3Env]


@pytest.fixture
def pop3_env(tmp_path: Path) -> Iterator[EnvFactory]:
    """``pop3_env(demo=False, lockout=None, **settings)`` starts a server; stopped at teardown."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pop3-test-loop", daemon=True)
    thread.start()
    envs: list[Pop3Env] = []

    def start(
        *, demo: bool = False, lockout: LockoutPolicy | None = None, **settings: Any
    ) -> Pop3Env:
        async def work() -> Pop3Env:
            base = tmp_path / f"env{len(envs)}"
            cert, key = base / "cert.pem", base / "key.pem"
            make_self_signed(cert, key, hostnames=["localhost"], loopback=True)
            store = await open_store(base / "data")
            await store.add_domain("example.org")
            alice = await store.add_account(ALICE, make_credentials(PASSWORD))
            bob = await store.add_account(BOB, make_credentials(BOB_PASSWORD))
            auth = Authenticator(
                store, clock=FixedClock(), plaintext_on_loopback=demo, lockout=lockout
            )
            listeners = tuple(
                Listener("127.0.0.1", 0, mode)
                for mode in (TlsMode.NONE, TlsMode.STARTTLS, TlsMode.IMPLICIT)
            )
            server = Pop3Server(
                Pop3Settings(hostname="pop.example.org", listeners=listeners, **settings),
                store=store,
                authenticator=auth,
                tls_context=server_context(cert, key),
                starttls_context=starttls_context(cert, key),
            )
            await server.start()
            ports = {listener.tls: addr[1] for listener, addr in server.addresses}
            return Pop3Env(loop, store, server, alice, bob, cert, ports)

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
