"""iprev (RFC 8601 §3): forward-confirmed reverse DNS of the SMTP client's address.

The client address I is looked up as PTR (``in-addr.arpa`` / ``ip6.arpa``, RFC 1035 §3.5,
RFC 3596 §2.5) giving the names N; each name (at most ``MAX_NAMES``, RFC 8601 §3 "MUST be
limited", 10 as RFC 7208 §4.6.4) is looked up as A (IPv4 client) or AAAA (IPv6 client); the
test passes when I is among the addresses. Result tokens per RFC 8601 §2.7.3: pass, fail
(forward lookups answered but none matched, or answered NXDOMAIN/NODATA), temperror (a DNS
error kept us from a pass), permerror (no PTR data). IPv4-mapped IPv6 clients are checked
as IPv4.

Left out: caching; the RFC 8601 §3 caveat applies — iprev is a weak signal, used for
reputation and the Authentication-Results header, never alone to reject.

Security: PTR answers are untrusted; the number of forward lookups is bounded by
``MAX_NAMES`` and the lookups for one client run concurrently under the caller's timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from hato.core.dns import DnsAnswer, DnsError, DnsTemporaryError, Resolver

__all__ = ["MAX_NAMES", "IprevResult", "IprevStatus", "verify"]

MAX_NAMES = 10  # RFC 8601 §3, the limit RFC 7208 §4.6.4 chose

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IprevStatus(StrEnum):
    """RFC 8601 §2.7.3 iprev result tokens (there is no "none")."""

    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class IprevResult:
    """The outcome for one client address; ``name`` is the confirmed host name on pass."""

    status: IprevStatus
    ip: str
    names: tuple[str, ...] = ()  # the PTR names looked at
    name: str | None = None
    detail: str = ""


def _client(ip: str) -> Address:
    address = ipaddress.ip_address(ip.strip().strip("[]").removeprefix("IPv6:"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def _forward(resolver: Resolver, name: str, rdtype: str) -> DnsAnswer | Exception:
    try:
        return await resolver.query(name, rdtype)
    except DnsError as exc:
        return exc


async def verify(resolver: Resolver, ip: str) -> IprevResult:
    """RFC 8601 §3 for the client address ``ip`` (text)."""
    try:
        client = _client(ip)
    except ValueError:
        return IprevResult(IprevStatus.PERMERROR, ip, detail="not an IP address")
    text = str(client)
    try:
        answer = await resolver.query(client.reverse_pointer, "PTR")
    except DnsTemporaryError as exc:  # RFC 8601 §2.7.3 temperror: e.g. SERVFAIL
        return IprevResult(IprevStatus.TEMPERROR, text, detail=f"PTR: {exc}")
    except DnsError as exc:
        return IprevResult(IprevStatus.PERMERROR, text, detail=f"PTR: {exc}")
    names = tuple(dict.fromkeys(n for n in answer.texts() if n))[:MAX_NAMES]  # RFC 8601 §3
    if not names:  # RFC 8601 §2.7.3 permerror: no PTR data (NXDOMAIN or NODATA)
        return IprevResult(IprevStatus.PERMERROR, text, detail="no PTR record")
    rdtype = "A" if client.version == 4 else "AAAA"
    answers = await asyncio.gather(*(_forward(resolver, n, rdtype) for n in names))
    temporary = False
    for name, forward in zip(names, answers, strict=True):
        if isinstance(forward, DnsTemporaryError):
            temporary = True
            continue
        if isinstance(forward, Exception):
            continue
        for rr in forward.texts():
            try:
                if _client(rr) == client:
                    return IprevResult(IprevStatus.PASS, text, names, name)
            except ValueError:
                continue
    if temporary:  # RFC 8601 §2.7.3 temperror: the evaluation could not be completed
        return IprevResult(IprevStatus.TEMPERROR, text, names, detail="forward lookup failed")
    # RFC 8601 §2.7.3 fail: forward answers (or NXDOMAIN/NODATA) without the address
    return IprevResult(IprevStatus.FAIL, text, names, detail="no forward match")
