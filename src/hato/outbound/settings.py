"""What the outbound queue runner is configured with: its settings, retry backoff, PKIX context.

Implements the retry schedule of RFC 5321 §4.5.4.1 (retries at intervals of at least 30
minutes are suggested; here 5 minutes doubling up to 4 hours, giving up after 5 days) and
the delay-notice threshold of RFC 3461 §4.1 (DELAY); the app maps the ``[outbound]``
configuration onto ``OutboundSettings``.

Leaves out: per-destination retry schedules.

Security: ``verify_context`` is the PKIX verification (RFC 6125 host names) used wherever a
certificate must be valid (MTA-STS, REQUIRETLS, MTA-STS policy fetches).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hato.outbound.client import Timeouts
from hato.outbound.routing import Relay

Signer = Callable[[bytes, str], bytes]  # (message, sender domain) -> header fields to prepend


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """What the queue runner needs; the app maps the ``[outbound]`` config onto it."""

    hostname: str
    port: int = 25  # RFC 5321 §4.5.4: SMTP relays use port 25
    transports: dict[str, Relay] = field(default_factory=dict)
    smarthost: Relay | None = None
    retry_base: float = 300.0  # first retry after 5 minutes, doubling
    retry_max: float = 4 * 3600.0  # at most 4 hours between attempts
    expire_after: float = 5 * 86400.0  # RFC 5321 §4.5.4.1: give up after 4-5 days
    delay_warning: float = 4 * 3600.0  # delay DSN after 4 hours (RFC 3461 §4.1 DELAY)
    max_connections: int = 50
    per_destination: int = 4
    batch: int = 200
    lease: float = 3600.0
    poll_interval: float = 5.0
    keep_final: float = 86400.0  # DELIVERED/BOUNCED entries kept for ``hato queue list``
    ca_file: Path | None = None  # trust anchors for MTA-STS / REQUIRETLS (system store: None)
    mta_sts: bool = True
    mta_sts_port: int = 443
    dane: bool = True
    prefer_ipv6: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)


def backoff(attempts: int, settings: OutboundSettings) -> float:
    """5 minutes, 10, 20, ... capped at 4 hours: the delay after ``attempts`` failures."""
    exponent = max(0, min(attempts - 1, 30))
    return float(min(settings.retry_base * (2**exponent), settings.retry_max))


def verify_context(ca_file: Path | None) -> ssl.SSLContext:
    """PKIX verification (RFC 6125 host names) for MTA-STS, REQUIRETLS and smarthosts."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
