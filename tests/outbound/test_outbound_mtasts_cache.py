"""The MTA-STS policy cache kept in the store (RFC 8461 §5.1, §3.2 max_age): the store
contract, the cache's use of it, and a restarted queue runner that still enforces a policy
while the policy host is unreachable and the MX offers no STARTTLS (a downgrade attempt)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from outbound_kit import World, ca_bundle, certificate, open_world, server_tls, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.core.clock import FixedClock
from hato.core.dns import StaticResolver
from hato.outbound.mtasts import RETRY_FETCH, MtaStsError, PolicyCache, parse_policy
from hato.store.api import CachedStsPolicy, StsPolicyStore
from hato.store.queue import QueueState
from hato.store.sqlite import open_store, schema

MX = "127.0.0.5"
POLICY = "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n"


def test_duplicated_fields_keep_the_first() -> None:
    # RFC 8461 §3.2: a repeated non-repeated field: all entries except the first ignored
    policy = parse_policy(
        "version: STSv1\nmode: enforce\nmode: none\nmx: a.test\nmax_age: 60\n"
        "max_age: 999999\nmx: *.b.test\n"
    )
    assert policy.mode == "enforce" and policy.max_age == 60
    assert policy.mx == ("a.test", "*.b.test")  # mx repeats by design


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_policy_text(text: str) -> None:
    # the text comes from the policy host and from the store: parsed or refused, no crash
    try:
        policy = parse_policy(text)
    except MtaStsError:
        return
    assert policy.mode in ("enforce", "testing", "none") and 0 <= policy.max_age <= 31_557_600


def test_store_contract(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            assert isinstance(store, StsPolicyStore)
            assert await store.get_sts_policy("d.test") is None
            first = CachedStsPolicy("d.test", "1", POLICY, 100.0, 200.0)
            await store.put_sts_policy(first)
            assert await store.get_sts_policy("d.test") == first
            second = CachedStsPolicy("d.test", "2", POLICY.replace("86400", "5"), 150.0, 155.0)
            await store.put_sts_policy(second)  # replaces: one entry per domain
            assert await store.get_sts_policy("d.test") == second
            await store.put_sts_policy(CachedStsPolicy("e.test", "9", POLICY, 100.0, 500.0))
            assert await store.purge_sts_policies(before=156.0) == 1  # d.test expired
            assert await store.get_sts_policy("d.test") is None
            assert await store.get_sts_policy("e.test") is not None
            await store.delete_sts_policy("e.test")
            await store.delete_sts_policy("e.test")  # deleting nothing is no error
            assert await store.get_sts_policy("e.test") is None
        finally:
            await store.close()
        reopened = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            await reopened.put_sts_policy(CachedStsPolicy("f.test", "3", POLICY, 1.0, 2e9))
        finally:
            await reopened.close()
        again = await open_store(tmp_path / "data", clock=FixedClock())
        try:  # durable across a close and reopen
            assert await again.get_sts_policy("f.test") == CachedStsPolicy(
                "f.test", "3", POLICY, 1.0, 2e9
            )
        finally:
            await again.close()

    asyncio.run(main())


def test_migration_adds_the_table_to_an_older_database(tmp_path: Path) -> None:
    async def touch() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        await store.put_sts_policy(CachedStsPolicy("d.test", "1", POLICY, 1.0, 2e9))
        await store.close()

    asyncio.run(touch())
    names = [m.__name__ for m in schema.MIGRATIONS]
    step = names.index("migrate_mtasts_cache")
    after = ["migrate_scram_sha1", "migrate_blob_log", "migrate_blob_bodies"]
    assert names[step + 1 :] == after  # the steps after it
    db = tmp_path / "data" / "hato.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE mta_sts_policies")  # as a database of the step before
    conn.execute("ALTER TABLE accounts DROP COLUMN scram_sha1")
    conn.execute("DROP TABLE blob_log")
    conn.execute("DROP TABLE blob_bodies")  # empty: no message was stored
    conn.execute(f"PRAGMA user_version = {step:d}")
    conn.close()
    asyncio.run(touch())  # reopening migrates forward; the table works again
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    assert conn.execute("SELECT domain FROM mta_sts_policies").fetchall() == [("d.test",)]
    conn.close()


def test_cache_reads_back_expires_and_rate_limits_fetches(tmp_path: Path) -> None:
    resolver = StaticResolver({"_mta-sts.d.test": {"TXT": ["v=STSv1; id=1"]}})
    fetched: list[str] = []
    answers = [POLICY.replace("86400", "1000")]

    async def fetch(domain: str) -> str:
        fetched.append(domain)
        if not answers:
            raise OSError("unreachable")
        return answers.pop(0)

    async def main() -> None:
        clock = FixedClock()
        store = await open_store(tmp_path / "data", clock=clock)
        try:
            first = PolicyCache(resolver, fetch, clock, store=store)
            policy = await first.policy("d.test")
            assert policy is not None and policy.mode == "enforce" and len(fetched) == 1
            row = await store.get_sts_policy("d.test")
            assert row is not None and row.expires == clock.now() + 1000
            # a new cache (a restart) uses the stored policy without fetching
            second = PolicyCache(resolver, fetch, clock, store=store)
            assert await second.policy("d.test") == policy and len(fetched) == 1
            # the TXT record is gone: the unexpired cached policy still applies (§5.1)
            resolver.zone = {}
            resolver.__post_init__()
            third = PolicyCache(resolver, fetch, clock, store=store)
            assert await third.policy("d.test") == policy
            # a new id whose fetch fails: the cached policy stays, and no second fetch for
            # that id within five minutes (RFC 8461 §3.3)
            resolver.zone = {"_mta-sts.d.test": {"TXT": ["v=STSv1; id=2"]}}
            resolver.__post_init__()
            assert await third.policy("d.test") == policy and len(fetched) == 2
            assert await third.policy("d.test") == policy and len(fetched) == 2
            clock.advance(RETRY_FETCH)
            assert await third.policy("d.test") == policy and len(fetched) == 3
            # max_age over: the policy no longer applies and leaves the store
            clock.advance(1000)
            assert await third.policy("d.test") is None
            assert await store.get_sts_policy("d.test") is None
        finally:
            await store.close()

    asyncio.run(main())


def test_purge_forgets_expired_policies(tmp_path: Path) -> None:
    resolver = StaticResolver({"_mta-sts.d.test": {"TXT": ["v=STSv1; id=1"]}})

    async def fetch(domain: str) -> str:
        return POLICY.replace("86400", "60")

    async def main() -> None:
        clock = FixedClock()
        store = await open_store(tmp_path / "data", clock=clock)
        try:
            cache = PolicyCache(resolver, fetch, clock, store=store)
            assert await cache.policy("d.test") is not None
            assert await cache.purge() == 0
            clock.advance(61)
            assert await cache.purge() == 1
            assert await store.get_sts_policy("d.test") is None
        finally:
            await store.close()

    asyncio.run(main())


async def policy_server(tmp_path: Path) -> asyncio.Server:
    """HTTPS on 127.0.0.1 serving the policy of secure.test."""
    ctx = server_tls(tmp_path, "mta-sts.secure.test")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = POLICY.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


def test_restarted_runner_still_enforces(tmp_path: Path) -> None:
    port = shared_port([MX])
    certificate(tmp_path, "mta-sts.secure.test")
    ca = ca_bundle(tmp_path, ["mta-sts.secure.test", "mx.secure.test"])
    zone: dict[str, Any] = {
        "secure.test": {"MX": [(10, "mx.secure.test")]},
        "mx.secure.test": {"A": [MX]},
        "_mta-sts.secure.test": {"TXT": ["v=STSv1; id=20240101;"]},
        "mta-sts.secure.test": {"A": ["127.0.0.1"]},
    }

    async def downgraded_attempt(world: World, recipient: str) -> tuple[QueueState, Sink]:
        # the attacker: the policy host unreachable, an MX without STARTTLS
        sink = await Sink(MX, port).start()
        try:
            (eid,) = await world.queue([recipient])
            await world.make_runner().run_once()
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None
            return entry.state, sink
        finally:
            await sink.stop()

    async def main() -> None:
        server = await policy_server(tmp_path)
        https_port = server.sockets[0].getsockname()[1]
        with DnsServer(zone) as dns:
            world = await open_world(
                tmp_path / "a", dns, port=port, ca_file=ca, mta_sts_port=https_port
            )
            sink = await Sink(MX, port, tls=server_tls(tmp_path, "mx.secure.test")).start()
            try:
                await world.queue(["x@secure.test"])
                await world.make_runner().run_once()
                assert sink.delivered and sink.delivered[0].tls  # policy fetched, enforced
            finally:
                await sink.stop()
            server.close()
            await server.wait_closed()
            await world.store.close()
            # restart: a new store object and runner on the same data directory
            world.store = await open_store(tmp_path / "a" / "data", clock=world.clock)
            try:
                state, sink = await downgraded_attempt(world, "y@secure.test")
                assert state is QueueState.DEFERRED
                assert not sink.transactions  # nothing sent in the clear
                # once max_age is over the stored policy lapses (RFC 8461 §3.2)
                world.clock.advance(86400 + 1)
                state, sink = await downgraded_attempt(world, "z@secure.test")
                assert state is QueueState.DELIVERED and not sink.delivered[0].tls
            finally:
                await world.store.close()
            # the control: a runner that never saw the policy is downgraded at once,
            # which is what the persisted policy prevented above
            fresh = await open_world(
                tmp_path / "b", dns, port=port, ca_file=ca, mta_sts_port=https_port
            )
            try:
                state, sink = await downgraded_attempt(fresh, "y@secure.test")
                assert state is QueueState.DELIVERED and not sink.delivered[0].tls
            finally:
                await fresh.store.close()

    asyncio.run(main())
