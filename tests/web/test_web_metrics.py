"""/metrics: Prometheus text with process, store, queue and counter metrics, for loopback
clients or a bearer token (RFC 6750); the event counters of hato.core.metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from web_harness import ALICE, CREDS, DOMAIN, settings, web_env

from hato.core.metrics import CATALOG, Counters, CounterSpec
from hato.store.model import DeliveryTarget
from hato.store.queue import NewQueueEntry, QueueRecipient

TOKEN = "s3cret-scrape-token"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_expose_process_store_queue_and_counters(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client() as c:
            store = env.store
            await store.add_domain("second.test")
            await store.add_account(f"bob@{DOMAIN}", CREDS)
            alice = await store.get_account(ALICE)
            assert alice is not None
            writer = store.blobs.writer()
            writer.write(b"Subject: hi\r\n\r\nhello\r\n")
            blob = await asyncio.to_thread(writer.commit)
            await store.deliver(blob, [DeliveryTarget(alice.id)])
            await store.enqueue(
                [NewQueueEntry(blob=blob, sender=ALICE, expires=time.time() + 86400,
                               recipients=(QueueRecipient("x@remote.test"),))]
            )
            env.counters.inc("hato_auth_attempts", protocol="imap", result="failure")

            r = await c.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert r.headers["cache-control"] == "no-store"
            samples = _samples(r.text)
            names = {name for name, _labels in samples}
            assert "process_cpu_seconds_total" in names
            assert "python_info" in names
            assert samples[("hato_store_up", ())] == 1
            assert samples[("hato_domains", ())] == 2
            assert samples[("hato_accounts", (("domain", DOMAIN),))] == 2
            assert samples[("hato_accounts", (("domain", "second.test"),))] == 0
            assert samples[("hato_messages", (("domain", DOMAIN),))] == 1
            assert samples[("hato_stored_bytes", (("domain", DOMAIN),))] > 0
            assert samples[("hato_queue_entries", (("state", "queued"),))] == 1
            assert samples[("hato_queue_entries", (("state", "deferred"),))] == 0
            key = (("protocol", "imap"), ("result", "failure"))
            assert samples[("hato_auth_attempts_total", key)] == 1
            # The first scrape counted itself after answering; the second one sees it.
            r = await c.get("/metrics")
            samples = _samples(r.text)
            assert samples[("hato_http_requests_total",
                            (("code", "200"), ("endpoint", "/metrics")))] == 1
        # A registry passed in, never prometheus_client's global one.
        assert REGISTRY.get_sample_value("hato_store_up") is None
        assert env.registry.get_sample_value("hato_store_up") == 1

    asyncio.run(scenario())


def test_metrics_are_for_loopback_clients_without_a_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env:
            for ip in ("127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"):
                async with env.client(ip=ip) as c:
                    assert (await c.get("/metrics")).status_code == 200, ip
            for ip in ("192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"):
                async with env.client(ip=ip) as c:
                    assert (await c.get("/metrics")).status_code == 403, ip
            async with env.client() as c:
                # A proxy on loopback forwards someone else: not a local client.
                for header in ("X-Forwarded-For", "Forwarded"):
                    r = await c.get("/metrics", headers={header: "for=192.0.2.7"})
                    assert r.status_code == 403, header

    asyncio.run(scenario())


def test_metrics_with_a_bearer_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path, settings(metrics_token=TOKEN)) as env:
            async with env.client(ip="192.0.2.7") as c:
                r = await c.get("/metrics")
                assert r.status_code == 401
                # RFC 6750 §3: the 401 carries a Bearer challenge.
                assert r.headers["www-authenticate"] == 'Bearer realm="hato"'
                r = await c.get("/metrics", headers={"Authorization": "Bearer wrong"})
                assert r.status_code == 401
                assert 'error="invalid_token"' in r.headers["www-authenticate"]  # §3.1
                r = await c.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
                assert r.status_code == 401
                for scheme in ("Bearer", "bearer"):  # RFC 9110 §11.1: case-insensitive
                    r = await c.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
                    assert r.status_code == 200
                    assert "hato_store_up 1.0" in r.text
            async with env.client() as c:  # loopback still needs no token
                assert (await c.get("/metrics")).status_code == 200

    asyncio.run(scenario())


def test_counters_follow_their_catalog() -> None:
    counters = Counters()
    assert {s.name for s in counters.specs()} == {s.name for s in CATALOG}
    counters.inc("hato_connections", protocol="smtp")
    counters.inc("hato_connections", 2, protocol="smtp")
    counters.inc("hato_connections", protocol="imap")
    assert counters.values("hato_connections") == {("smtp",): 3.0, ("imap",): 1.0}
    with pytest.raises(KeyError):
        counters.inc("hato_unknown")
    with pytest.raises(ValueError, match="labels"):
        counters.inc("hato_connections", role="mx")
    with pytest.raises(ValueError, match="decrease"):
        counters.inc("hato_connections", -1, protocol="smtp")
    with pytest.raises(ValueError, match="duplicate"):
        Counters([CounterSpec("a", "x"), CounterSpec("a", "y")])
    with pytest.raises(ValueError, match="invalid counter name"):
        Counters([CounterSpec("a_total", "x")])
