"""The proactive refresh of cached MTA-STS policies (RFC 8461 §3.3, §10.2): policies fetched a
day ago or more are fetched again before they expire, whether mail goes to their domain or
not and whatever the TXT record says; failures keep the cached policy and warn; the queue
runner's housekeeping starts it in the background and its stop ends it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from outbound_kit import open_world, shared_port

from dnsserver import DnsServer
from hato.core.clock import FixedClock
from hato.core.dns import StaticResolver
from hato.outbound.mtasts import (
    REFRESH_AFTER,
    REFRESH_PARALLEL,
    RETRY_FETCH,
    PolicyCache,
)
from hato.store.api import CachedStsPolicy
from hato.store.sqlite import SqliteStore, open_store

DAY = 86400.0
WEEK = "version: STSv1\nmode: enforce\nmx: mx.{d}\nmax_age: 604800\n"
NONE = "version: STSv1\nmode: none\nmax_age: 604800\n"


class Fetcher:
    """The policy host of each domain: answers with ``policies[domain]`` or fails."""

    def __init__(self, policies: dict[str, str]) -> None:
        self.policies = policies
        self.calls: list[str] = []
        self.running = 0
        self.most = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, domain: str) -> str:
        self.calls.append(domain)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            if domain not in self.policies:
                raise OSError("connection refused")
            return self.policies[domain]
        finally:
            self.running -= 1


def records(*domains: str, rid: str = "1") -> StaticResolver:
    return StaticResolver({f"_mta-sts.{d}": {"TXT": [f"v=STSv1; id={rid}"]} for d in domains})


async def with_store(tmp_path: Path, clock: FixedClock) -> SqliteStore:
    return await open_store(tmp_path / "data", clock=clock)


def test_store_lists_due_policies_oldest_first(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FixedClock()
        store = await with_store(tmp_path, clock)
        try:
            for domain, fetched, expires in [
                ("a.test", 100.0, 9e9),
                ("b.test", 50.0, 9e9),
                ("c.test", 300.0, 9e9),  # fetched too recently
                ("d.test", 10.0, 150.0),  # expired at now=200
            ]:
                await store.put_sts_policy(CachedStsPolicy(domain, "1", "x", fetched, expires))
            due = await store.due_sts_policies(fetched_before=200.0, now=200.0, limit=10)
            assert [p.domain for p in due] == ["b.test", "a.test"]
            one = await store.due_sts_policies(fetched_before=200.0, now=200.0, limit=1)
            assert [p.domain for p in one] == ["b.test"]
        finally:
            await store.close()

    asyncio.run(main())


def test_refresh_fetches_day_old_policies_and_extends_them(tmp_path: Path) -> None:
    fetch = Fetcher({d: WEEK.format(d=d) for d in ("a.test", "b.test")})

    async def main() -> None:
        clock = FixedClock()
        store = await with_store(tmp_path, clock)
        try:
            cache = PolicyCache(records("a.test", "b.test"), fetch, clock, store=store)
            assert await cache.policy("a.test") is not None
            clock.advance(DAY / 2)
            assert await cache.policy("b.test") is not None
            assert fetch.calls == ["a.test", "b.test"]
            # nothing is a day old yet
            assert await cache.refresh_due() == 0 and len(fetch.calls) == 2
            # a.test is: it is fetched again although no mail goes to it
            clock.advance(DAY / 2 + 1)
            assert await cache.refresh_due() == 1 and fetch.calls[2:] == ["a.test"]
            row = await store.get_sts_policy("a.test")
            assert row is not None and row.fetched == clock.now()
            assert row.expires == clock.now() + 604800  # max_age counted from the refresh
        finally:
            await store.close()

    asyncio.run(main())


def test_restarted_cache_refreshes_from_the_store_and_keeps_the_id(tmp_path: Path) -> None:
    fetch = Fetcher({"a.test": WEEK.format(d="a.test")})

    async def main() -> None:
        clock = FixedClock()
        store = await with_store(tmp_path, clock)
        try:
            await PolicyCache(records("a.test"), fetch, clock, store=store).policy("a.test")
            clock.advance(DAY + 1)
            # a restart: a new, empty cache; the TXT record is gone meanwhile
            cache = PolicyCache(StaticResolver({}), fetch, clock, store=store)
            # RFC 8461 §10.2: refresh "regardless of the state of the _mta-sts TXT record"
            assert await cache.refresh_due() == 1
            row = await store.get_sts_policy("a.test")
            assert row is not None and row.record_id == "1" and row.fetched == clock.now()
            # a new record id: the refreshed entry is stored under it
            clock.advance(DAY + 1)
            cache = PolicyCache(records("a.test", rid="2"), fetch, clock, store=store)
            assert await cache.refresh_due() == 1
            row = await store.get_sts_policy("a.test")
            assert row is not None and row.record_id == "2"
            assert (await cache.policy("a.test")) is not None and len(fetch.calls) == 3
        finally:
            await store.close()

    asyncio.run(main())


def test_failed_refresh_keeps_the_policy_warns_and_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fetch = Fetcher({"a.test": WEEK.format(d="a.test"), "n.test": NONE})

    async def main() -> None:
        clock = FixedClock()
        store = await with_store(tmp_path, clock)
        try:
            cache = PolicyCache(records("a.test", "n.test"), fetch, clock, store=store)
            enforce = await cache.policy("a.test")
            assert enforce is not None and await cache.policy("n.test") is not None
            fetch.policies.clear()  # the policy hosts go away (or are blocked)
            clock.advance(DAY + 1)
            with caplog.at_level(logging.WARNING, logger="hato"):
                assert await cache.refresh_due() == 0
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            # RFC 8461 §3.3: alert administrators, unless the cached mode is "none"
            assert len(warnings) == 1
            assert "event=outbound.mtasts.refresh_failed" in warnings[0]
            assert "domain=a.test" in warnings[0] and "mode=enforce" in warnings[0]
            # the cached policy still applies, and stays in the store
            assert await cache.policy("a.test") == enforce
            row = await store.get_sts_policy("a.test")
            assert row is not None and row.expires > clock.now()
            # no new attempt for the same id within five minutes (§3.3)
            calls = len(fetch.calls)
            assert await cache.refresh_due() == 0 and len(fetch.calls) == calls
            clock.advance(RETRY_FETCH)
            fetch.policies["a.test"] = WEEK.format(d="a.test")
            assert await cache.refresh_due() == 1  # a.test is back; n.test still fails
        finally:
            await store.close()

    asyncio.run(main())


def test_expired_policies_are_not_refreshed() -> None:
    fetch = Fetcher({"a.test": "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 1000\n"})

    async def main() -> None:
        clock = FixedClock()
        cache = PolicyCache(records("a.test"), fetch, clock)  # memory only, no store
        assert await cache.policy("a.test") is not None
        clock.advance(REFRESH_AFTER + 1)
        # max_age is over: the refresh does not bring back a lapsed policy by itself
        assert await cache.refresh_due() == 0 and fetch.calls == ["a.test"]

    asyncio.run(main())


@settings(max_examples=10, deadline=None)
@given(count=st.integers(min_value=1, max_value=30), limit=st.integers(min_value=1, max_value=12))
def test_fuzz_rounds_are_bounded_and_oldest_first(count: int, limit: int) -> None:
    domains = [f"d{i:02d}.test" for i in range(count)]
    fetch = Fetcher({d: WEEK.format(d=d) for d in domains})

    async def main() -> None:
        clock = FixedClock()
        cache = PolicyCache(records(*domains), fetch, clock)
        for domain in domains:
            await cache.policy(domain)
            clock.advance(1)
        clock.advance(REFRESH_AFTER)
        fetch.calls.clear()
        refreshed = await cache.refresh_due(limit=limit)
        assert refreshed == min(count, limit) == len(fetch.calls)
        assert sorted(fetch.calls) == domains[: min(count, limit)]  # the oldest fetches
        assert fetch.most <= REFRESH_PARALLEL

    asyncio.run(main())


# -- in the queue runner -------------------------------------------------------------------


def runner_world(tmp_path: Path, body: Any) -> Any:
    port = shared_port(["127.0.0.2"])
    zone = {"_mta-sts.a.test": {"TXT": ["v=STSv1; id=1"]}}

    async def main() -> Any:
        with DnsServer(zone) as dns:
            world = await open_world(tmp_path, dns, port=port, poll_interval=0.05)
            try:
                return await body(world)
            finally:
                await world.store.close()

    return asyncio.run(main())


def test_runner_housekeeping_refreshes_in_the_background(tmp_path: Path) -> None:
    async def body(world: Any) -> None:
        old = world.clock.now() - REFRESH_AFTER - 60
        text = WEEK.format(d="a.test")
        await world.store.put_sts_policy(CachedStsPolicy("a.test", "1", text, old, old + 604800))
        runner = world.make_runner()
        fetch = Fetcher({"a.test": text})
        runner.sts.fetch = fetch
        await runner.start()
        try:
            for _ in range(200):
                row = await world.store.get_sts_policy("a.test")
                if row is not None and row.fetched == world.clock.now():
                    break
                await asyncio.sleep(0.01)
            assert fetch.calls == ["a.test"]
            assert row is not None and row.fetched == world.clock.now()
        finally:
            await runner.stop(timeout=5.0)

    runner_world(tmp_path, body)


def test_runner_stop_ends_a_hanging_refresh(tmp_path: Path) -> None:
    async def body(world: Any) -> None:
        old = world.clock.now() - REFRESH_AFTER - 60
        text = WEEK.format(d="a.test")
        await world.store.put_sts_policy(CachedStsPolicy("a.test", "1", text, old, old + 604800))
        runner = world.make_runner()
        fetch = Fetcher({"a.test": text})
        fetch.gate = asyncio.Event()  # the policy host never answers
        runner.sts.fetch = fetch
        await runner.start()
        for _ in range(200):
            if fetch.calls:
                break
            await asyncio.sleep(0.01)
        assert fetch.calls == ["a.test"] and fetch.running == 1
        # the loop was not held up by the hanging fetch: it still polls the queue
        assert not runner.sts.refresh_in_background()  # one round at a time
        await runner.stop(timeout=5.0)
        assert fetch.running == 0  # cancelled, not left behind
        row = await world.store.get_sts_policy("a.test")
        assert row is not None and row.fetched == old  # nothing was half-written

    runner_world(tmp_path, body)
