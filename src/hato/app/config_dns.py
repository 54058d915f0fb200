"""The ``[dns]`` configuration section: which resolver Hato asks.

Every DNS question Hato has (MX routing, SPF, DKIM keys, DMARC, MTA-STS, DANE, iprev) goes
through one injected resolver (``hato.core.dns.Resolver``); this section says where it sends
its queries. Tests and isolated set-ups point it at a DNS server on loopback.

Security: DANE (RFC 7672) trusts the AD bit only from a validating resolver the host trusts,
normally one on the same host; a remote nameserver here makes DANE as weak as that path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hato.app.confkinds import Count, Duration, Kind, fail, setting
from hato.mailauth.resolver import DnsPythonResolver


@dataclass(frozen=True)
class Addresses(Kind):
    """A list of IP addresses."""

    label = "list of IP addresses"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, list):
            raise fail(path, 'a list of IP addresses like ["127.0.0.1"]', got=value)
        out: list[str] = []
        for i, item in enumerate(value):
            try:
                out.append(str(ipaddress.ip_address(item)))
            except (ValueError, TypeError):
                raise fail(f"{path}[{i}]", "an IP address", got=item) from None
        return tuple(out)

    def render(self, value: Any) -> str:
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """DNS resolution for routing and sender authentication."""

    nameservers: tuple[str, ...] = setting(
        (),
        Addresses(),
        doc="Recursive resolvers to query; empty means those of /etc/resolv.conf. Use a "
        "local validating resolver for DANE.",
    )
    port: int = setting(53, Count(minimum=1), doc="UDP/TCP port of the nameservers.")
    timeout: float = setting(
        5.0, Duration(minimum=0.1), doc="Time limit of one lookup, retries included."
    )


def make_resolver(config: DnsConfig) -> DnsPythonResolver:
    """The resolver this section describes."""
    if config.nameservers:
        return DnsPythonResolver(config.nameservers, port=config.port, timeout=config.timeout)
    return DnsPythonResolver.from_system(timeout=config.timeout)
