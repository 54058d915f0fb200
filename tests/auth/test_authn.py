"""Authentication policy (hato.policy.authn): credentials, TLS rule, SASL exchanges, lock-out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from hato.codec import sasl
from hato.core.clock import FixedClock
from hato.core.errors import AuthError
from hato.core.passwords import needs_rehash, verify_password
from hato.policy.authn import (
    Authenticator,
    AuthLockedOut,
    LockoutPolicy,
    SaslStep,
    allow_plaintext,
    make_credentials,
)
from hato.store.model import Account, Credentials
from hato.store.sqlite import SqliteStore, open_store

USER = "Alice@Example.ORG"
KEY = "alice@example.org"
PASSWORD = "correct horse ☃"
TLS: dict[str, Any] = {"remote_ip": "192.0.2.7", "secure": True}


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


class CountingStore:
    """The real store, counting account lookups (to show when a password was never checked)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.lookups = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_account(self, address: str) -> Account | None:
        self.lookups += 1
        return await self._store.get_account(address)


@contextlib.asynccontextmanager
async def alice_store(
    tmp_path: Path, credentials: Credentials | None = None
) -> AsyncIterator[tuple[Any, Account]]:
    """A real SQLite store with the account alice@example.org."""
    store = await open_store(tmp_path / "data")
    try:
        await store.add_domain("example.org")
        alice = await store.add_account(KEY, credentials or make_credentials(PASSWORD))
        yield CountingStore(store), alice
    finally:
        await store.close()


async def sasl_login(
    auth: Authenticator,
    mechanism: str,
    username: str,
    password: str,
    *,
    remote_ip: str = "192.0.2.7",
    secure: bool = True,
) -> SaslStep:
    client = sasl.client_mechanism(mechanism, username, password)
    exchange = auth.start(mechanism, remote_ip=remote_ip, secure=secure)
    step = await exchange.step(client.initial())
    while not step.done:
        assert step.challenge is not None
        step = await exchange.step(client.respond(step.challenge))
    if isinstance(client, sasl.ScramClient):
        assert client.verified
    return step


def test_make_credentials() -> None:
    creds = make_credentials(PASSWORD)
    assert creds.password_hash.startswith("$argon2id$")
    assert verify_password(creds.password_hash, PASSWORD)
    assert creds.scram_sha256 is not None
    keys = sasl.ScramSecrets.parse(creds.scram_sha256)
    assert keys.iterations >= 4096  # RFC 7677 §4
    assert len(keys.salt) == 16
    assert keys == sasl.ScramSecrets.from_password(PASSWORD, salt=keys.salt, iterations=4096)
    assert make_credentials(PASSWORD).scram_sha256 != creds.scram_sha256  # random salt
    assert creds.scram_sha1 is not None  # RFC 5804 §2.1 (ManageSieve) needs SCRAM-SHA-1
    sha1 = sasl.ScramSecrets.parse(creds.scram_sha1, digest="sha1")
    assert len(sha1.stored_key) == 20 and sha1.salt != keys.salt
    assert sha1 == sasl.ScramSecrets.from_password(
        PASSWORD, salt=sha1.salt, iterations=4096, digest="sha1"
    )
    with pytest.raises(ValueError):
        make_credentials(PASSWORD, scram_iterations=1000)


def test_allow_plaintext() -> None:
    assert allow_plaintext(secure=True, remote_ip="192.0.2.1", demo=False)
    assert not allow_plaintext(secure=False, remote_ip="127.0.0.1", demo=False)
    for ip in ["127.0.0.1", "127.0.0.9", "::1", "::ffff:127.0.0.1"]:
        assert allow_plaintext(secure=False, remote_ip=ip, demo=True), ip
    for ip in ["192.0.2.1", "2001:db8::1", "not-an-ip", ""]:
        assert not allow_plaintext(secure=False, remote_ip=ip, demo=True), ip


def test_mechanisms(tmp_path: Path) -> None:
    async def main() -> None:
        async with alice_store(tmp_path) as (store, _):
            auth = Authenticator(store)
            assert auth.mechanisms(secure=True) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
            assert auth.mechanisms(secure=False) == []
            assert auth.mechanisms(secure=False, remote_ip="127.0.0.1") == []
            demo = Authenticator(store, plaintext_on_loopback=True)
            loopback = demo.mechanisms(secure=False, remote_ip="127.0.0.1")
            assert loopback == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
            assert demo.mechanisms(secure=False, remote_ip="192.0.2.1") == []
            sieve = auth.mechanisms(secure=True, scram_sha1=True)
            assert sieve == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"]

    run(main)


def test_check_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hato")

    async def main() -> None:
        async with alice_store(tmp_path) as (store, alice):
            auth = Authenticator(store)
            assert await auth.check_password(USER, PASSWORD, **TLS) == alice
            for username, password in [
                (USER, "wrong"),
                ("bob@example.org", PASSWORD),
                ("not an address", PASSWORD),
                ("", ""),
            ]:
                with pytest.raises(AuthError):
                    await auth.check_password(username, password, **TLS)
            await store.set_enabled(KEY, False)
            # A disabled account fails like a wrong password.
            with pytest.raises(AuthError) as info:
                await auth.check_password(USER, PASSWORD, **TLS)
            assert type(info.value) is AuthError

    run(main)
    assert "event=auth.failed" in caplog.text and "event=auth.succeeded" in caplog.text
    assert PASSWORD not in caplog.text and "wrong" not in caplog.text


def test_plaintext_requires_tls_except_demo_loopback(tmp_path: Path) -> None:
    async def main() -> None:
        async with alice_store(tmp_path) as (store, alice):
            auth = Authenticator(store)
            for ip in ["127.0.0.1", "192.0.2.1"]:
                with pytest.raises(AuthError):
                    await auth.check_password(USER, PASSWORD, remote_ip=ip, secure=False)
                with pytest.raises(AuthError):
                    auth.start("PLAIN", remote_ip=ip, secure=False)
            demo = Authenticator(store, plaintext_on_loopback=True)
            assert await demo.check_password(USER, PASSWORD, remote_ip="::1", secure=False) == alice
            with pytest.raises(AuthError):
                await demo.check_password(USER, PASSWORD, remote_ip="192.0.2.1", secure=False)
            step = await sasl_login(
                demo, "SCRAM-SHA-256", USER, PASSWORD, remote_ip="127.0.0.1", secure=False
            )
            assert step.account == alice

    run(main)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_sasl_success_and_failure(tmp_path: Path, mechanism: str) -> None:
    async def main() -> None:
        async with alice_store(tmp_path) as (store, alice):
            auth = Authenticator(store)
            step = await sasl_login(auth, mechanism, USER, PASSWORD)
            assert step == SaslStep(challenge=None, done=True, account=alice)
            with pytest.raises(AuthError):
                await sasl_login(auth, mechanism, USER, "wrong")
            with pytest.raises(AuthError):
                await sasl_login(auth, mechanism, "nobody@example.org", PASSWORD)
            await store.set_enabled(KEY, False)
            with pytest.raises(AuthError) as info:
                await sasl_login(auth, mechanism, USER, PASSWORD)
            if mechanism.startswith("SCRAM-"):
                # Disabled accounts fail at the proof, exactly like a wrong password.
                assert isinstance(info.value, sasl.SaslError)
                assert info.value.server_error == "invalid-proof"

    run(main)


def test_sasl_refuses_proxy_authorisation(tmp_path: Path) -> None:
    async def main() -> None:
        async with alice_store(tmp_path) as (store, _):
            await store.add_account("bob@example.org", make_credentials("bob pw"))
            auth = Authenticator(store)
            # RFC 4616 §2: an authzid naming the same user (any case) is fine...
            exchange = auth.start("PLAIN", **TLS)
            step = await exchange.step(f"{KEY}\x00{USER}\x00{PASSWORD}".encode())
            assert step.account is not None and step.account.address == KEY
            # ...another user is proxy authorisation, which Hato refuses.
            exchange = auth.start("PLAIN", **TLS)
            with pytest.raises(AuthError):
                await exchange.step(f"bob@example.org\x00{USER}\x00{PASSWORD}".encode())
            client = sasl.ScramSha256Client(USER, PASSWORD, authzid="bob@example.org")
            exchange = auth.start("SCRAM-SHA-256", **TLS)
            with pytest.raises(AuthError):
                await exchange.step(client.initial())

    run(main)


def test_exchange_cannot_continue_after_it_ended(tmp_path: Path) -> None:
    async def main() -> None:
        async with alice_store(tmp_path) as (store, _):
            auth = Authenticator(store)
            exchange = auth.start("PLAIN", **TLS)
            assert (await exchange.step(f"\x00{USER}\x00{PASSWORD}".encode())).done
            with pytest.raises(AuthError):
                await exchange.step(b"\x00x\x00y")
            with pytest.raises(AuthError):
                auth.start("CRAM-MD5", **TLS)

    run(main)


def test_lockout_refuses_without_checking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hato")
    clock = FixedClock()
    policy = LockoutPolicy(max_failures=3, window=60.0, lockout=300.0)

    async def main() -> None:
        async with alice_store(tmp_path) as (store, alice):
            auth = Authenticator(store, clock=clock, lockout=policy)
            for _ in range(3):
                with pytest.raises(AuthError):
                    await auth.check_password(USER, "guess", **TLS)
            lookups = store.lookups
            with pytest.raises(AuthLockedOut):
                await auth.check_password(USER, PASSWORD, **TLS)
            with pytest.raises(AuthLockedOut):
                auth.start("SCRAM-SHA-256", **TLS)
            assert store.lookups == lookups  # refused without looking at the account
            # Another address is not affected.
            other = await auth.check_password(USER, PASSWORD, remote_ip="192.0.2.8", secure=True)
            assert other == alice
            clock.advance(299)
            with pytest.raises(AuthLockedOut):
                await auth.check_password(USER, PASSWORD, **TLS)
            clock.advance(2)
            assert await auth.check_password(USER, PASSWORD, **TLS) == alice

    run(main)
    assert "event=auth.lockout" in caplog.text
    assert "guess" not in caplog.text


def test_failures_outside_the_window_do_not_lock(tmp_path: Path) -> None:
    clock = FixedClock()
    policy = LockoutPolicy(max_failures=3, window=60.0, lockout=300.0)

    async def main() -> None:
        async with alice_store(tmp_path) as (store, alice):
            auth = Authenticator(store, clock=clock, lockout=policy)
            for _ in range(5):
                exchange = auth.start("PLAIN", **TLS)
                with pytest.raises(AuthError):
                    await exchange.step(b"garbage")  # malformed exchanges count as failures too
                clock.advance(31)
            assert await auth.check_password(USER, PASSWORD, **TLS) == alice
            clock.advance(60)
            for _ in range(3):
                exchange = auth.start("PLAIN", **TLS)
                with pytest.raises(AuthError):
                    await exchange.step(b"garbage")
            with pytest.raises(AuthLockedOut):
                auth.start("PLAIN", **TLS)

    run(main)


def test_ipv6_failures_count_per_slash_64(tmp_path: Path) -> None:
    policy = LockoutPolicy(max_failures=2, window=60.0, lockout=300.0)

    async def main() -> None:
        async with alice_store(tmp_path) as (store, alice):
            auth = Authenticator(store, clock=FixedClock(), lockout=policy)
            for ip in ["2001:db8::1", "2001:db8::2"]:
                with pytest.raises(AuthError):
                    await auth.check_password(USER, "guess", remote_ip=ip, secure=True)
            with pytest.raises(AuthLockedOut):
                await auth.check_password(USER, PASSWORD, remote_ip="2001:db8::ffff", secure=True)
            ok = await auth.check_password(USER, PASSWORD, remote_ip="2001:db8:1::1", secure=True)
            assert ok == alice

    run(main)


def test_login_upgrades_old_credentials(tmp_path: Path) -> None:
    old = Credentials(password_hash=_weak_hash(PASSWORD), scram_sha256=None)
    assert needs_rehash(old.password_hash)

    async def main() -> None:
        async with alice_store(tmp_path, old) as (store, _):
            auth = Authenticator(store)
            await auth.check_password(USER, PASSWORD, **TLS)
            upgraded = (await store.get_account(KEY)).credentials
            assert upgraded.scram_sha256 is not None and not needs_rehash(upgraded.password_hash)
            # SCRAM now works for an account created without SCRAM keys.
            step = await sasl_login(auth, "SCRAM-SHA-256", USER, PASSWORD)
            assert step.account is not None and step.account.address == KEY

    run(main)


def test_login_adds_scram_sha1_keys_to_accounts_made_before_them(tmp_path: Path) -> None:
    fresh = make_credentials(PASSWORD)
    old = Credentials(password_hash=fresh.password_hash, scram_sha256=fresh.scram_sha256)

    async def main() -> None:
        async with alice_store(tmp_path, old) as (store, _):
            auth = Authenticator(store)
            with pytest.raises(sasl.SaslError):  # no SHA-1 keys yet: fails like a bad proof
                await sasl_login(auth, "SCRAM-SHA-1", USER, PASSWORD)
            await auth.check_password(USER, PASSWORD, **TLS)
            assert (await store.get_account(KEY)).credentials.scram_sha1 is not None
            step = await sasl_login(auth, "SCRAM-SHA-1", USER, PASSWORD)
            assert step.account is not None and step.account.address == KEY

    run(main)


def _weak_hash(password: str) -> str:
    return PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(password)
