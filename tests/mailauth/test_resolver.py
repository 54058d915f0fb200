"""The dnspython resolver against tests/dnsserver.py on loopback, and the StaticResolver fake."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dnsserver import SERVFAIL, TIMEOUT, DnsServer
from hato.core.dns import (
    DnsAnswer,
    DnsError,
    DnsTemporaryError,
    MxRecord,
    StaticResolver,
    TlsaRecord,
)
from hato.mailauth.dmarc import DmarcStatus, Identifier, Policy, verify
from hato.mailauth.resolver import DnsPythonResolver
from hato.mailauth.spf import SpfStatus, verify_mailfrom

ZONE: dict[str, Any] = {
    "example.test": {
        "MX": [(20, "mx2.example.test"), (10, "mx.example.test")],
        "TXT": ["v=spf1 mx -all", ["split ", "string"]],
    },
    "mx.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
    "_25._tcp.mx.example.test": {"TLSA": [(3, 1, 1, bytes.fromhex("ab" * 32))]},
    "2.0.0.127.in-addr.arpa": {"PTR": ["mx.example.test"]},
    "www.example.test": {"CNAME": ["mx.example.test"]},
    "*.wild.example.test": {"A": ["127.0.0.9"]},
    "deep.ent.example.test": {"A": ["127.0.0.3"]},
    "big.example.test": {"TXT": ["x" * 250 + str(i) for i in range(12)]},
    "slow.example.test": TIMEOUT,
    "broken.example.test": {"TXT": SERVFAIL, "A": ["127.0.0.4"]},
    "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:d@example.test"]},
}


def query(server: DnsServer, name: str, rdtype: str, **kw: Any) -> DnsAnswer:
    resolver = DnsPythonResolver([server.host], port=server.port, timeout=kw.get("timeout", 2.0))
    return asyncio.run(resolver.query(name, rdtype))


@pytest.fixture(scope="module")
def server() -> Any:
    with DnsServer(ZONE) as srv:
        yield srv


def test_record_shapes(server: DnsServer) -> None:
    assert query(server, "mx.example.test", "A").rrs == ("127.0.0.2",)
    assert query(server, "MX.Example.Test.", "AAAA").rrs == ("::1",)
    assert sorted(query(server, "example.test", "MX").mx()) == [
        MxRecord(10, "mx.example.test"),
        MxRecord(20, "mx2.example.test"),
    ]
    # RFC 7208 §3.3: the strings of one TXT record are joined without separator.
    assert sorted(query(server, "example.test", "TXT").texts()) == [
        "split string",
        "v=spf1 mx -all",
    ]
    assert query(server, "2.0.0.127.in-addr.arpa", "PTR").rrs == ("mx.example.test",)
    tlsa = query(server, "_25._tcp.mx.example.test", "TLSA").tlsa()
    assert tlsa == [TlsaRecord(3, 1, 1, bytes.fromhex("ab" * 32))]
    assert query(server, "www.example.test", "CNAME").rrs == ("mx.example.test",)
    assert query(server, "www.example.test", "A").rrs == ("127.0.0.2",)  # CNAME followed
    assert query(server, "anything.wild.example.test", "A").rrs == ("127.0.0.9",)


def test_nxdomain_and_nodata_are_told_apart(server: DnsServer) -> None:
    missing = query(server, "missing.example.test", "A")
    assert (missing.rrs, missing.nxdomain, missing.void) == ((), True, True)
    nodata = query(server, "mx.example.test", "MX")
    assert (nodata.rrs, nodata.nxdomain, nodata.void) == ((), False, True)
    ent = query(server, "ent.example.test", "A")  # RFC 8020: an empty non-terminal exists
    assert (ent.rrs, ent.nxdomain) == ((), False)


def test_timeout_and_servfail_are_temporary(server: DnsServer) -> None:
    started = time.monotonic()
    with pytest.raises(DnsTemporaryError) as info:
        query(server, "slow.example.test", "A", timeout=0.3)
    assert info.value.temporary
    assert time.monotonic() - started < 2.0
    with pytest.raises(DnsTemporaryError):
        query(server, "broken.example.test", "TXT")
    assert query(server, "broken.example.test", "A").rrs == ("127.0.0.4",)


def test_large_answers_fall_back_to_tcp(server: DnsServer) -> None:
    answer = query(server, "big.example.test", "TXT")
    assert len(answer.texts()) == 12
    asked = [(t, n) for t, n, r in server.queries if n == "big.example.test"]
    assert ("udp", "big.example.test") in asked and ("tcp", "big.example.test") in asked


def test_bad_questions_are_permanent_errors(server: DnsServer) -> None:
    with pytest.raises(DnsError) as info:
        query(server, "a" * 64 + ".example.test", "A")  # RFC 1035 §2.3.4: 63-octet labels
    assert not info.value.temporary
    with pytest.raises(DnsError):
        query(server, "example.test", "SOA")


def test_ad_bit_and_live_zone_changes() -> None:
    with DnsServer({"secure.test": {"A": ["127.0.0.5"]}}, authenticated=True) as srv:
        assert query(srv, "secure.test", "A").authenticated
        srv.set("new.secure.test", "A", ["127.0.0.6"])
        assert query(srv, "new.secure.test", "A").rrs == ("127.0.0.6",)
        srv.set_servfail("new.secure.test")
        with pytest.raises(DnsTemporaryError):
            query(srv, "new.secure.test", "A")
        srv.remove("new.secure.test")
        assert query(srv, "new.secure.test", "A").nxdomain
        srv.authenticated = False
        assert not query(srv, "secure.test", "A").authenticated


def test_ipv6_loopback_server() -> None:
    with DnsServer({"six.test": {"AAAA": ["::1"]}}, host="::1") as srv:
        assert query(srv, "six.test", "AAAA").rrs == ("::1",)


def test_spf_and_dmarc_end_to_end(server: DnsServer) -> None:
    async def main() -> tuple[Any, Any, Any]:
        resolver = DnsPythonResolver([server.host], port=server.port, timeout=2.0)
        good = await verify_mailfrom(
            resolver, "127.0.0.2", mailfrom="a@example.test", helo="mx.example.test"
        )
        bad = await verify_mailfrom(
            resolver, "127.0.0.7", mailfrom="a@example.test", helo="x.example.test"
        )
        dmarc = await verify(resolver, "example.test", spf=Identifier(bad.status.value, bad.domain))
        return good, bad, dmarc

    good, bad, dmarc = asyncio.run(main())
    assert good.status is SpfStatus.PASS
    assert bad.status is SpfStatus.FAIL
    assert (dmarc.status, dmarc.policy, dmarc.reject) == (DmarcStatus.FAIL, Policy.REJECT, True)


def test_static_resolver_conventions() -> None:
    resolver = StaticResolver(
        {
            "a.test": {"A": ["192.0.2.1"], "TXT": TIMEOUT},
            "b.test": {"*": SERVFAIL, "MX": [MxRecord(1, "a.test")]},
            "c.test": TIMEOUT,
            "x.y.test": {"CNAME": ["a.test"]},
            "loop1.test": {"CNAME": ["loop2.test"]},
            "loop2.test": {"CNAME": ["loop1.test"]},
        },
        secure=["a.test"],
        cname_depth=4,
    )

    async def main() -> None:
        assert (await resolver.query("A.test.", "a")).rrs == ("192.0.2.1",)
        assert (await resolver.query("a.test", "A")).authenticated
        assert (await resolver.query("x.y.test", "A")).rrs == ("192.0.2.1",)
        assert (await resolver.query("b.test", "MX")).mx() == [MxRecord(1, "a.test")]
        assert not (await resolver.query("y.test", "A")).nxdomain  # empty non-terminal
        assert (await resolver.query("z.test", "A")).nxdomain
        assert (await resolver.query("loop1.test", "A")).rrs == ()  # bounded, no hang
        for name, rdtype in (("a.test", "TXT"), ("b.test", "A"), ("c.test", "AAAA")):
            with pytest.raises(DnsTemporaryError):
                await resolver.query(name, rdtype)
        with pytest.raises(DnsError):
            await resolver.query("x" * 64 + ".test", "A")

    asyncio.run(main())
    assert resolver.queries[0] == ("A.test.", "A")
