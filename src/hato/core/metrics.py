"""Event counters every layer may increment, exported in Prometheus format by ``hato.web``.

Why here: the servers, delivery and outbound layers sit below ``web`` (where the Prometheus
exposition lives, ``hato.web.metrics``) and may not import it, and ``prometheus_client`` is a
dependency of the HTTP service only. So counters are plain values in ``Counters``: a fixed
catalog of names with their label names (``CATALOG``), created once by the composition root
(``hato.app.wiring``) and injected like the clock (CONVENTIONS.md §6) into whatever counts.
Names follow Prometheus conventions (``hato_`` prefix, snake case); the exporter adds the
``_total`` suffix of the text format.

Left out: gauges and histograms (gauges are read from the store at scrape time), label
cardinality limits (callers pass values from closed sets: roles, results, protocols).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One counter: its name (without ``_total``), help text and label names."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


CATALOG: tuple[CounterSpec, ...] = (
    CounterSpec("hato_http_requests", "HTTP requests answered.", ("endpoint", "code")),
    CounterSpec("hato_connections", "Connections accepted.", ("protocol",)),
    CounterSpec(
        "hato_auth_attempts", "Authentication attempts.", ("protocol", "result")
    ),
    CounterSpec(
        "hato_smtp_messages_accepted", "Messages accepted over SMTP (2yz to DATA/BDAT).", ("role",)
    ),
    CounterSpec("hato_smtp_rejections", "SMTP commands rejected by policy.", ("stage",)),
    CounterSpec("hato_local_deliveries", "Copies delivered to local mailboxes.", ("result",)),
    CounterSpec("hato_outbound_attempts", "Outbound delivery attempts.", ("result",)),
)


class Counters:
    """Monotonic counters of a fixed catalog; safe to increment from any thread."""

    def __init__(self, specs: Iterable[CounterSpec] = CATALOG) -> None:
        self._specs: dict[str, CounterSpec] = {}
        for spec in specs:
            if not _NAME.fullmatch(spec.name) or spec.name.endswith("_total"):
                raise ValueError(f"invalid counter name {spec.name!r}")
            if spec.name in self._specs:
                raise ValueError(f"duplicate counter {spec.name!r}")
            if len(set(spec.labels)) != len(spec.labels) or not all(
                _NAME.fullmatch(label) for label in spec.labels
            ):
                raise ValueError(f"invalid label names for {spec.name!r}")
            self._specs[spec.name] = spec
        self._values: dict[str, dict[tuple[str, ...], float]] = {n: {} for n in self._specs}
        self._lock = threading.Lock()

    def specs(self) -> tuple[CounterSpec, ...]:
        return tuple(self._specs.values())

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the counter ``name`` with exactly its declared labels.

        Raises KeyError for a name outside the catalog, ValueError for wrong labels or a
        negative amount (a counter never goes down)."""
        spec = self._specs[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {tuple(labels)}")
        if amount < 0:
            raise ValueError(f"{name}: a counter cannot decrease")
        key = tuple(str(labels[label]) for label in spec.labels)
        with self._lock:
            values = self._values[name]
            values[key] = values.get(key, 0.0) + amount

    def values(self, name: str) -> dict[tuple[str, ...], float]:
        """A copy of the counter's values by label values (in the order of ``labels``)."""
        with self._lock:
            return dict(self._values[name])
