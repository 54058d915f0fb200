"""Who asks and for which name: the Host header's domain, and whether a client is local.

Implements the parts of RFC 9110 §7.2 (Host = uri-host [ ":" port ]) the endpoints need to
pick a domain, and the loopback rule that guards admin endpoints.

Left out: trusting proxies. Hato terminates HTTP(S) itself; a request that carries
``Forwarded`` (RFC 7239) or ``X-Forwarded-For`` came through a proxy, so its loopback peer
address says nothing about the real client and it is not treated as local.

Security: ``is_local_client`` decides access to ``/metrics`` without a token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from hato.core.address import normalize_domain
from hato.core.errors import AddressError

_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def strip_port(host: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:80`` -> ``[::1]`` (RFC 9110 §7.2)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def canonical_domain(name: str) -> str | None:
    """The canonical form of a domain (``normalize_domain``) or None when it is not one;
    a trailing dot (an absolute name in a Host header) is dropped first."""
    try:
        return normalize_domain(name.removesuffix("."))
    except AddressError:
        return None


def host_domain(host: str, *, prefix: str = "") -> str | None:
    """The domain of a Host header value after removing ``prefix`` (e.g. ``"autoconfig."``)
    when present; None when it is no domain name (an IP address literal, garbage)."""
    name = strip_port(host.strip()).lower()
    if prefix and name.startswith(prefix):
        name = name[len(prefix) :]
    if not name or name.startswith("["):
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return canonical_domain(name)
    return None


def is_local_client(client_ip: str | None, headers: Mapping[str, str]) -> bool:
    """True for a loopback peer (IPv4, IPv6 or IPv4-mapped) that is not a forwarding proxy."""
    if not client_ip or any(name in headers for name in _PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
