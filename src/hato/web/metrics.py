"""``/metrics``: Prometheus text exposition of process, store, queue and event-counter metrics.

Exports, into a ``CollectorRegistry`` passed in (never prometheus_client's global one):
process metrics (``process_*``: CPU, memory, open files), Python platform and GC metrics,
gauges read from the store at scrape time (``hato_store_up``, ``hato_domains``,
``hato_accounts``, ``hato_messages`` and ``hato_stored_bytes`` per domain, summed from
``list_accounts``; ``hato_queue_entries`` per live queue state, counted from ``list_queue``
because the store offers no count query), and the event counters of ``hato.core.metrics``
(why they live in ``core`` is explained there), each as ``<name>_total``.

Left out: histograms (latencies), per-account series (unbounded cardinality), final queue
entries (DELIVERED/BOUNCED wait only to be purged).

Security: the exposition names domains, never addresses; access control is ``hato.web.app``'s
(loopback clients or the bearer token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hato.core import log
from hato.core.errors import StoreError
from hato.core.metrics import Counters
from hato.store.api import MailStore
from hato.store.queue import LIVE_STATES, QueueState

MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4


@dataclass(frozen=True, slots=True)
class DomainTotals:
    accounts: int = 0
    messages: int = 0
    stored_bytes: int = 0


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What the store said at one scrape; ``up`` is False when it failed to answer."""

    up: bool
    domains: dict[str, DomainTotals] = field(default_factory=dict)
    queue: dict[QueueState, int] = field(default_factory=dict)


async def take_snapshot(store: MailStore) -> StoreSnapshot:
    """Read the store's counts (one pass over accounts and over live queue entries)."""
    try:
        names = [d.name for d in await store.list_domains()]
        accounts = await store.list_accounts()
        entries = await store.list_queue(LIVE_STATES)
    except StoreError as exc:
        log.event("http.metrics.store_failed", error=exc.detail)
        return StoreSnapshot(up=False)
    totals: dict[str, list[int]] = {name: [0, 0, 0] for name in names}
    for account in accounts:
        row = totals.setdefault(account.domain, [0, 0, 0])
        row[0] += 1
        row[1] += account.message_count
        row[2] += account.used_bytes
    queue = dict.fromkeys(LIVE_STATES, 0)
    for entry in entries:
        queue[entry.state] = queue.get(entry.state, 0) + 1
    return StoreSnapshot(
        up=True,
        domains={name: DomainTotals(*row) for name, row in sorted(totals.items())},
        queue=queue,
    )


class HatoCollector:
    """A prometheus_client collector of the latest store snapshot and the event counters."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.snapshot = StoreSnapshot(up=False)

    def describe(self) -> Iterable[Metric]:
        return []  # names are dynamic only in labels; nothing to reserve in the registry

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily(
            "hato_store_up", "1 when the store answered the last scrape.", value=int(snap.up)
        )
        if snap.up:
            yield GaugeMetricFamily("hato_domains", "Local domains.", value=len(snap.domains))
            per_domain = (
                ("hato_accounts", "Accounts per domain.", "accounts"),
                ("hato_messages", "Stored messages per domain.", "messages"),
                ("hato_stored_bytes", "Bytes of stored messages per domain.", "stored_bytes"),
            )
            for name, doc, attr in per_domain:
                gauge = GaugeMetricFamily(name, doc, labels=["domain"])
                for domain, totals in snap.domains.items():
                    gauge.add_metric([domain], getattr(totals, attr))
                yield gauge
            queue = GaugeMetricFamily(
                "hato_queue_entries", "Outbound queue entries per state.", labels=["state"]
            )
            for state, count in snap.queue.items():
                queue.add_metric([state.value], count)
            yield queue
        for spec in self.counters.specs():
            counter = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
            for labels, value in sorted(self.counters.values(spec.name).items()):
                counter.add_metric(list(labels), value)
            yield counter


class MetricsExporter:
    """Renders ``/metrics``: refreshes the store snapshot, then the registry's exposition."""

    def __init__(self, registry: CollectorRegistry, counters: Counters) -> None:
        self.registry = registry
        self.collector = HatoCollector(counters)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(self.collector)
        self._lock = asyncio.Lock()

    async def render(self, store: MailStore) -> bytes:
        async with self._lock:  # one snapshot per exposition, even with concurrent scrapes
            self.collector.snapshot = await take_snapshot(store)
            return generate_latest(self.registry)
