"""Fixtures for the IMAP tests: a running server on loopback (ephemeral ports) over a real
SQLite store, driven from blocking clients (imaplib, mutt, mbsync) while its event loop runs in
a background thread; every imaplib client's transcript is grammar-checked at teardown.
Also puts ``tests/`` on ``sys.path`` (``starttls_kit``)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_harness import ALICE, BOB, PASSWORD, VECTORS, EnvFactory, ImapEnv

from hato.core.clock import FixedClock
from hato.ops.tls import make_self_signed
from hato.policy.authn import Authenticator, make_credentials
from hato.servers.base import Listener, TlsMode
from hato.servers.imap import ImapService, ImapSettings
from hato.store.sqlite import open_store

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def vectors() -> Path:
    return VECTORS


@pytest.fixture
def imap_env(tmp_path: Path) -> Iterator[EnvFactory]:
    """``imap_env(demo=True, **settings)`` starts a server; stopped (and every client's
    transcript grammar-checked) at teardown."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="imap-test-loop", daemon=True)
    thread.start()
    envs: list[ImapEnv] = []

    def start(*, demo: bool = True, **settings: Any) -> ImapEnv:
        async def work() -> ImapEnv:
            base = tmp_path / f"env{len(envs)}"
            cert, key = base / "cert.pem", base / "key.pem"
            make_self_signed(cert, key, hostnames=["localhost"], loopback=True)
            store = await open_store(base / "data", clock=FixedClock())
            await store.add_domain("example.org")
            alice = await store.add_account(ALICE, make_credentials(PASSWORD))
            bob = await store.add_account(BOB, make_credentials(PASSWORD))
            auth = Authenticator(store, clock=FixedClock(), plaintext_on_loopback=demo)
            listeners = tuple(
                Listener("127.0.0.1", 0, mode)
                for mode in (TlsMode.NONE, TlsMode.STARTTLS, TlsMode.IMPLICIT)
            )
            service = ImapService(
                ImapSettings(hostname="imap.example.org", listeners=listeners,
                             cert_file=cert, key_file=key, **settings),
                store, auth,
            )
            await service.start()
            ports = {listener.tls: address[1] for listener, address in service.bound}
            return ImapEnv(loop, store, service, alice, bob, cert, ports)

        env = asyncio.run_coroutine_threadsafe(work(), loop).result(timeout=60)
        envs.append(env)
        return env

    try:
        yield start
        for env in envs:
            env.check_grammar()
    finally:
        for env in envs:
            for client in env.clients:
                try:
                    client.shutdown()
                except OSError:
                    pass
            env.call(env.service.stop(timeout=2))
            env.call(env.store.close())
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
