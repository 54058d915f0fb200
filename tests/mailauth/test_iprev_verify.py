"""iprev (RFC 8601 §3, results of §2.7.3) on a dict resolver and on the loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest

from dnsserver import DnsServer
from hato.core.dns import SERVFAIL, TIMEOUT, StaticResolver
from hato.mailauth import iprev
from hato.mailauth.iprev import MAX_NAMES, IprevStatus
from hato.mailauth.resolver import DnsPythonResolver

V4_PTR = "7.2.0.192.in-addr.arpa"
V6 = "2001:db8::25"
V6_PTR = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"


def _check(zone: dict[str, object], ip: str = "192.0.2.7") -> iprev.IprevResult:
    return asyncio.run(iprev.verify(StaticResolver(zone), ip))  # type: ignore[arg-type]


def test_ipv4_pass() -> None:
    zone = {V4_PTR: {"PTR": ["mx.example.com"]}, "mx.example.com": {"A": ["192.0.2.7"]}}
    result = _check(zone)
    assert result.status is IprevStatus.PASS
    assert result.name == "mx.example.com"


def test_ipv6_pass_uses_aaaa() -> None:
    zone = {
        V6_PTR: {"PTR": ["mx6.example.com"]},
        "mx6.example.com": {"A": ["192.0.2.7"], "AAAA": ["2001:db8:0::25"]},
    }
    assert _check(zone, V6).status is IprevStatus.PASS


def test_ipv4_mapped_client_is_checked_as_ipv4() -> None:
    zone = {V4_PTR: {"PTR": ["mx.example.com"]}, "mx.example.com": {"A": ["192.0.2.7"]}}
    result = _check(zone, "::ffff:192.0.2.7")
    assert result.status is IprevStatus.PASS
    assert result.ip == "192.0.2.7"


def test_one_of_several_names_matches() -> None:
    zone = {
        V4_PTR: {"PTR": ["a.example.com", "b.example.com"]},
        "a.example.com": {"A": ["192.0.2.99"]},
        "b.example.com": {"A": ["192.0.2.7"]},
    }
    assert _check(zone).name == "b.example.com"


def test_forward_mismatch_is_fail() -> None:
    """RFC 8601 §2.7.3 fail: both lookups answered but disagree."""
    zone = {V4_PTR: {"PTR": ["mx.example.com"]}, "mx.example.com": {"A": ["192.0.2.8"]}}
    assert _check(zone).status is IprevStatus.FAIL


def test_forward_nxdomain_is_fail() -> None:
    """RFC 8601 §2.7.3 fail: the forward query produced no result (NXDOMAIN)."""
    assert _check({V4_PTR: {"PTR": ["gone.example.com"]}}).status is IprevStatus.FAIL


def test_no_ptr_is_permerror() -> None:
    """RFC 8601 §2.7.3 permerror: no PTR data published."""
    assert _check({}).status is IprevStatus.PERMERROR
    assert _check({V4_PTR: {"TXT": ["x"]}}).status is IprevStatus.PERMERROR


@pytest.mark.parametrize("marker", [TIMEOUT, SERVFAIL])
def test_ptr_dns_error_is_temperror(marker: str) -> None:
    assert _check({V4_PTR: {"PTR": marker}}).status is IprevStatus.TEMPERROR


def test_forward_error_without_match_is_temperror_but_a_match_still_passes() -> None:
    zone: dict[str, object] = {
        V4_PTR: {"PTR": ["slow.example.com", "mx.example.com"]},
        "slow.example.com": TIMEOUT,
        "mx.example.com": {"A": ["192.0.2.99"]},
    }
    assert _check(zone).status is IprevStatus.TEMPERROR
    zone["mx.example.com"] = {"A": ["192.0.2.7"]}
    assert _check(zone).status is IprevStatus.PASS


def test_number_of_forward_lookups_is_limited() -> None:
    """RFC 8601 §3: the number of names evaluated MUST be limited (10)."""
    names = [f"h{i}.example.com" for i in range(MAX_NAMES + 5)]
    zone: dict[str, object] = {V4_PTR: {"PTR": names}}
    zone[names[-1]] = {"A": ["192.0.2.7"]}  # only the 15th name would match
    resolver = StaticResolver(zone)  # type: ignore[arg-type]
    result = asyncio.run(iprev.verify(resolver, "192.0.2.7"))
    assert result.status is IprevStatus.FAIL
    assert len(result.names) == MAX_NAMES
    assert len([q for q in resolver.queries if q[1] == "A"]) == MAX_NAMES


def test_not_an_ip_is_permerror() -> None:
    assert _check({}, "mx.example.com").status is IprevStatus.PERMERROR


def test_on_the_loopback_dns_server() -> None:
    zone = {
        "1.0.0.127.in-addr.arpa": {"PTR": ["localhost.example.test"]},
        "localhost.example.test": {"A": ["127.0.0.1"]},
        "2.0.0.127.in-addr.arpa": "SERVFAIL",
    }

    async def run(resolver: DnsPythonResolver) -> tuple[iprev.IprevResult, ...]:
        return await asyncio.gather(
            iprev.verify(resolver, "127.0.0.1"), iprev.verify(resolver, "127.0.0.2")
        )

    with DnsServer(zone) as server:
        resolver = DnsPythonResolver([server.host], port=server.port, timeout=1.0)
        good, broken = asyncio.run(run(resolver))
    assert good.status is IprevStatus.PASS
    assert broken.status is IprevStatus.TEMPERROR
