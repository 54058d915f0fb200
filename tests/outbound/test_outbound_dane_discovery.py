"""DANE discovery (RFC 7672 §2.2): which DNSSEC status of the MX, CNAME and address answers
leads to a TLSA lookup, which candidate base domains are asked, what lookup errors and
unusable TLSA RRsets mean, and the DANE-TA reference identifiers (§3.2.2); unit tests on
``host_policy`` with a static zone, then deliveries through the queue runner against a DNS
server on loopback whose answers a validating resolver would mark secure or not."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dane_certs import make_pki, server_context
from hypothesis import given, settings
from hypothesis import strategies as st
from outbound_kit import World, open_world, server_tls, shared_port
from outbound_sink import Sink

from dnsserver import SERVFAIL as SRV_SERVFAIL
from dnsserver import DnsServer
from hato.core.dns import (
    SERVFAIL,
    TIMEOUT,
    DnsAnswer,
    MxRecord,
    Resolver,
    StaticResolver,
    TlsaRecord,
)
from hato.mailauth.resolver import DnsPythonResolver
from hato.outbound.queue import QueueRunner
from hato.outbound.routing import resolve_route
from hato.outbound.tlspolicy import HostPolicy, Requirement, host_policy
from hato.store.queue import QueueState

EE = TlsaRecord(3, 1, 1, b"\x11" * 32)
EE2 = TlsaRecord(3, 1, 1, b"\x22" * 32)
TA = TlsaRecord(2, 0, 1, b"\x33" * 32)


def decide(
    resolver: Resolver,
    host: str = "mx.d.test",
    *,
    addresses_secure: bool = True,
    mx_secure: bool = True,
    domain: str = "d.test",
) -> HostPolicy:
    return asyncio.run(
        host_policy(
            host,
            resolver=resolver,
            port=25,
            mx_secure=mx_secure,
            sts=None,
            via_mx=True,
            requiretls=False,
            tls_optional=False,
            domain=domain,
            addresses_secure=addresses_secure,
        )
    )


def tlsa_asked(resolver: StaticResolver) -> list[str]:
    return [name for name, kind in resolver.queries if kind == "TLSA"]


# -- §2.2.1 / §2.2.2: when TLSA is asked at all -------------------------------------------


def test_insecure_mx_asks_no_tlsa() -> None:
    zone = {"_25._tcp.mx.d.test": {"TLSA": [EE]}, "mx.d.test": {"A": ["192.0.2.1"]}}
    resolver = StaticResolver(zone, secure=list(zone))
    policy = decide(resolver, mx_secure=False)
    # RFC 7672 §2.2.1: DANE authenticates the next-hop domain only behind a secure MX
    assert policy.requirement is Requirement.OPPORTUNISTIC and resolver.queries == []


def test_insecure_address_records_skip_the_tlsa_lookup() -> None:
    # a signed MX RRset pointing into an unsigned zone whose nameservers fail TLSA queries
    zone: dict[str, Any] = {
        "mx.d.test": {"A": ["192.0.2.1"]},
        "_25._tcp.mx.d.test": {"TLSA": SERVFAIL},
    }
    resolver = StaticResolver(zone)
    policy = decide(resolver, addresses_secure=False)
    # RFC 7672 §2.2.2 "Non-CNAME": insecure addresses: SHOULD NOT search for TLSA records
    assert policy.requirement is Requirement.OPPORTUNISTIC and policy.usable
    assert tlsa_asked(resolver) == []
    # the same host with secure addresses: the failing lookup now means "do not use"
    secure = StaticResolver(zone, secure=["mx.d.test"])
    failed = decide(secure)
    assert not failed.usable and failed.source == "dane" and "TLSA" in (failed.error or "")
    assert tlsa_asked(secure) == ["_25._tcp.mx.d.test"]


def test_secure_cname_tries_the_expanded_name_first_then_the_initial() -> None:
    zone: dict[str, Any] = {
        "mx.d.test": {"CNAME": ["mid.d.test"]},
        "mid.d.test": {"CNAME": ["real.hoster.test"]},
        "real.hoster.test": {"A": ["192.0.2.1"]},
        "_25._tcp.real.hoster.test": {"TLSA": [EE]},
        "_25._tcp.mid.d.test": {"TLSA": [EE2]},  # an intermediate name: never a candidate
        "_25._tcp.mx.d.test": {"TLSA": [EE2]},
    }
    resolver = StaticResolver(zone, secure=list(zone))
    policy = decide(resolver)
    # RFC 7672 §2.2.2 "Secure CNAME", §2.2.3: the fully expanded name first
    assert policy.requirement is Requirement.DANE and policy.tlsa == (EE,)
    assert policy.base_domain == "real.hoster.test"
    assert tlsa_asked(resolver) == ["_25._tcp.real.hoster.test"]
    # no secure TLSA at the expanded name: the initial name is the second candidate
    zone["_25._tcp.real.hoster.test"] = {"TLSA": []}
    resolver = StaticResolver(zone, secure=list(zone))
    policy = decide(resolver)
    assert policy.base_domain == "mx.d.test" and policy.tlsa == (EE2,)
    assert tlsa_asked(resolver) == ["_25._tcp.real.hoster.test", "_25._tcp.mx.d.test"]
    # an insecure TLSA RRset at the expanded name counts as none (§2.2.3)
    zone["_25._tcp.real.hoster.test"] = {"TLSA": [EE]}
    secure = [n for n in zone if n != "_25._tcp.real.hoster.test"]
    policy = decide(StaticResolver(zone, secure=secure))
    assert policy.base_domain == "mx.d.test" and policy.tlsa == (EE2,)


def test_insecure_cname_behind_a_secure_first_link_asks_only_the_initial_name() -> None:
    zone: dict[str, Any] = {
        "mx.d.test": {"CNAME": ["mx.hoster.test"]},
        "mx.hoster.test": {"A": ["192.0.2.1"]},
        "_25._tcp.mx.hoster.test": {"TLSA": [EE2]},
        "_25._tcp.mx.d.test": {"TLSA": [EE]},
    }
    # the customer zone is signed, the hoster's is not (RFC 7672 §2.2.3, last paragraph)
    resolver = StaticResolver(zone, secure=["mx.d.test", "_25._tcp.mx.d.test"])
    policy = decide(resolver, addresses_secure=False)
    assert policy.requirement is Requirement.DANE and policy.base_domain == "mx.d.test"
    assert tlsa_asked(resolver) == ["_25._tcp.mx.d.test"]
    # the first CNAME insecure as well: DANE TLS does not apply, nothing is asked
    resolver = StaticResolver(zone, secure=["_25._tcp.mx.d.test"])
    policy = decide(resolver, addresses_secure=False)
    assert policy.requirement is Requirement.OPPORTUNISTIC and tlsa_asked(resolver) == []


@pytest.mark.parametrize(
    "zone",
    [
        {"mx.d.test": {"A": ["192.0.2.1"]}, "_25._tcp.mx.d.test": {"TLSA": SERVFAIL}},
        {"mx.d.test": {"A": ["192.0.2.1"]}, "_25._tcp.mx.d.test": {"TLSA": TIMEOUT}},
        {"mx.d.test": {"A": ["192.0.2.1"], "CNAME": SERVFAIL}},
        {"mx.d.test": {"CNAME": ["a.d.test"]}, "a.d.test": {"CNAME": ["mx.d.test"]}},
        {f"c{i}.d.test": {"CNAME": [f"c{i + 1}.d.test"]} for i in range(12)},
    ],
    ids=["tlsa-servfail", "tlsa-timeout", "cname-servfail", "cname-loop", "cname-too-long"],
)
def test_lookup_errors_make_the_host_unusable(zone: dict[str, Any]) -> None:
    host = "c0.d.test" if "c0.d.test" in zone else "mx.d.test"
    policy = decide(StaticResolver(zone, secure=list(zone)), host)
    # RFC 7672 §2.1.1, §2.2.1: any error in the process: the host is not used, no fallback
    assert not policy.usable and policy.requirement is Requirement.DANE


# -- §2.2 / RFC 7671: unusable records ------------------------------------------------------

UNUSABLE = [
    TlsaRecord(0, 0, 1, b"\x01" * 32),  # PKIX-TA: unusable for SMTP (RFC 7672 §3.1.3)
    TlsaRecord(1, 1, 1, b"\x01" * 32),  # PKIX-EE
    TlsaRecord(4, 1, 1, b"\x01" * 32),  # an unknown usage
    TlsaRecord(3, 2, 1, b"\x01" * 32),  # an unknown selector
    TlsaRecord(3, 1, 3, b"\x01" * 32),  # an unknown matching type
    TlsaRecord(3, 1, 1, b"\x01" * 31),  # SHA2-256 data of the wrong length (RFC 7671 §5.1)
    TlsaRecord(2, 0, 2, b"\x01" * 32),  # SHA2-512 data of the wrong length
    TlsaRecord(3, 1, 0, b""),  # Full(0) without data
]


@pytest.mark.parametrize("record", UNUSABLE)
def test_only_unusable_records_mean_encryption_without_authentication(
    record: TlsaRecord,
) -> None:
    zone = {"mx.d.test": {"A": ["192.0.2.1"]}, "_25._tcp.mx.d.test": {"TLSA": [record]}}
    policy = decide(StaticResolver(zone, secure=list(zone)))
    # RFC 7672 §2.2: a secure non-empty RRset, all unusable: TLS mandatory, no auth
    assert policy.requirement is Requirement.ENCRYPT and policy.required and policy.usable
    assert policy.tlsa == () and policy.source == "dane"
    # one usable record next to them: authentication is required again
    zone["_25._tcp.mx.d.test"] = {"TLSA": [record, EE]}
    assert decide(StaticResolver(zone, secure=list(zone))).requirement is Requirement.DANE


def test_requiretls_never_settles_for_unauthenticated_tls_from_unusable_records() -> None:
    zone = {"mx.d.test": {"A": ["192.0.2.1"]}, "_25._tcp.mx.d.test": {"TLSA": [UNUSABLE[0]]}}

    def decide_requiretls(zone: dict[str, Any], *, mx_secure: bool = True) -> HostPolicy:
        return asyncio.run(
            host_policy(
                "mx.d.test",
                resolver=StaticResolver(zone, secure=list(zone)),
                port=25,
                mx_secure=mx_secure,
                sts=None,
                via_mx=True,
                requiretls=True,
                tls_optional=False,
                domain="d.test",
            )
        )

    # RFC 8689 §4.2.1 step 4: the certificate must be authenticated (RFC 6125 or RFC
    # 7672): records that cannot authenticate leave the PKIX check of the MX host name
    policy = decide_requiretls(zone)
    assert policy.requirement is Requirement.PKIX and policy.usable
    assert policy.source == "requiretls" and policy.base_domain is None  # SNI: the MX name
    # usable records: DANE authenticates, as without REQUIRETLS
    zone["_25._tcp.mx.d.test"] = {"TLSA": [EE]}
    assert decide_requiretls(zone).requirement is Requirement.DANE
    # RFC 8689 §4.2.1 step 2: a DNSSEC-signed MX validates the name, no TLSA: PKIX
    del zone["_25._tcp.mx.d.test"]
    policy = decide_requiretls(zone)
    assert policy.requirement is Requirement.PKIX and policy.usable
    # an unsigned MX without MTA-STS: the name is not validated, the host is not used
    policy = decide_requiretls(zone, mx_secure=False)
    assert not policy.usable and "5.7.10" in (policy.error or "")


# -- §3.2.2: reference identifiers --------------------------------------------------------


def test_reference_identifiers_include_the_secure_expansion_of_the_next_hop() -> None:
    zone: dict[str, Any] = {
        "exchange.org.test": {"CNAME": ["mail.org.test"]},
        "mail.org.test": {"CNAME": ["com.test"]},
        "com.test": {"MX": [MxRecord(10, "mx10.com.test")]},
        "mx10.com.test": {"A": ["192.0.2.10"]},
        "_25._tcp.mx10.com.test": {"TLSA": [TA]},
    }
    policy = decide(
        StaticResolver(zone, secure=list(zone)), "mx10.com.test", domain="exchange.org.test"
    )
    # RFC 7672 §3.2.2: base domain, original next-hop domain, its full CNAME expansion
    assert policy.names == ("mx10.com.test", "exchange.org.test", "com.test")
    # an insecure link in the expansion: the expanded name is not an identifier
    secure = [n for n in zone if n != "mail.org.test"]
    policy = decide(
        StaticResolver(zone, secure=secure), "mx10.com.test", domain="exchange.org.test"
    )
    assert policy.names == ("mx10.com.test", "exchange.org.test")
    # a failing expansion leaves the third name out, never the check itself
    zone["exchange.org.test"] = {"CNAME": SERVFAIL}
    policy = decide(
        StaticResolver(zone, secure=list(zone)), "mx10.com.test", domain="exchange.org.test"
    )
    assert policy.requirement is Requirement.DANE
    assert policy.names == ("mx10.com.test", "exchange.org.test")


def test_secure_cname_mx_host_names_the_base_domain_not_the_alias() -> None:
    zone: dict[str, Any] = {
        "mx.d.test": {"CNAME": ["mx.hoster.test"]},
        "mx.hoster.test": {"A": ["192.0.2.1"]},
        "_25._tcp.mx.hoster.test": {"TLSA": [TA]},
    }
    policy = decide(StaticResolver(zone, secure=list(zone)))
    # RFC 7672 §3.2.2: the TLSA base domain and the next-hop domain, not the MX alias
    assert policy.names == ("mx.hoster.test", "d.test")
    # DANE-EE(3) only: names are not checked (§3.2.1), nothing more is asked
    zone["_25._tcp.mx.hoster.test"] = {"TLSA": [EE]}
    resolver = StaticResolver(zone, secure=list(zone))
    assert decide(resolver).names == ("mx.hoster.test",)
    assert ("d.test", "CNAME") not in resolver.queries


# -- routing: the DNSSEC status it hands on ------------------------------------------------


def test_route_carries_the_status_of_mx_denial_and_address_records() -> None:
    zone: dict[str, Any] = {
        "d.test": {"MX": [MxRecord(10, "mx1.d.test"), MxRecord(20, "mx2.other.test")]},
        "mx1.d.test": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
        "mx2.other.test": {"A": ["192.0.2.2"]},
        "nomx.test": {"A": ["192.0.2.3"]},
        "literal.test": {"MX": [MxRecord(10, "192.0.2.9")]},
    }
    resolver = StaticResolver(zone, secure=["d.test", "mx1.d.test", "nomx.test"])

    async def main() -> None:
        route = await resolve_route("d.test", resolver=resolver)
        assert route.secure and route.via_mx
        assert {h.name: h.secure for h in route.hops} == {
            "mx1.d.test": True,
            "mx2.other.test": False,
        }
        # RFC 7672 §2.2.2: no MX records, a secure denial: the domain is its own server
        implicit = await resolve_route("nomx.test", resolver=resolver)
        assert implicit.secure and not implicit.via_mx and implicit.hops[0].secure
        # RFC 7672 §2.2: an address in an MX record: DANE does not apply
        literal = await resolve_route("literal.test", resolver=resolver)
        assert not literal.hops[0].secure

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.sampled_from(["a.t", "b.t", "c.t", "d.t"]), min_size=1, max_size=6),
    secure=st.sets(st.sampled_from(["a.t", "b.t", "c.t", "d.t", "_25._tcp.a.t"])),
    addresses_secure=st.booleans(),
)
def test_fuzz_cname_graphs_never_crash(
    names: list[str], secure: set[str], addresses_secure: bool
) -> None:
    # arbitrary CNAME graphs (chains, loops, self-references) under any DNSSEC status
    zone: dict[str, Any] = {}
    for source, target in zip(["a.t", *names], names, strict=False):
        zone.setdefault(source, {"CNAME": [target]})
    zone.setdefault(names[-1], {})["A"] = ["192.0.2.1"]
    zone["_25._tcp.a.t"] = {"TLSA": [EE]}
    resolver = StaticResolver(zone, secure=secure)
    policy = decide(resolver, "a.t", addresses_secure=addresses_secure)
    if policy.requirement is Requirement.DANE and policy.usable:
        assert policy.base_domain is not None and policy.tlsa
    if not addresses_secure and "a.t" not in secure:
        # an insecure address RRset, or an insecure first CNAME: TLSA is never asked
        assert tlsa_asked(resolver) == []
        assert policy.requirement is not Requirement.ENCRYPT


# -- deliveries through the queue runner ---------------------------------------------------


@dataclass
class Validator:
    """What a validating resolver reports: the loopback server's answers carry AD, except
    for names of ``unsigned`` zones (RFC 4035 §3.2.3: AD only for validated data)."""

    inner: Resolver
    unsigned: set[str] = field(default_factory=set)

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        answer = await self.inner.query(name, rdtype)
        if any(answer.name == z or answer.name.endswith("." + z) for z in self.unsigned):
            return dataclasses.replace(answer, authenticated=False)
        return answer


HOST = "127.0.0.3"


def run(
    tmp_path: Path,
    body: Callable[[World, int, Callable[..., QueueRunner]], Awaitable[Any]],
    zone: dict[str, Any],
    *,
    unsigned: Iterable[str] = (),
) -> Any:
    port = shared_port([HOST])

    async def main() -> Any:
        with DnsServer(zone, authenticated=True) as dns:
            world = await open_world(tmp_path, dns, port=port, mta_sts=False)

            def runner() -> QueueRunner:
                real = DnsPythonResolver([dns.host], port=dns.port, timeout=5.0)
                validator = Validator(real, set(unsigned))
                return QueueRunner(
                    world.settings, store=world.store, resolver=validator, clock=world.clock
                )

            try:
                return await body(world, port, runner)
            finally:
                await world.store.close()

    return asyncio.run(main())


async def deliver(world: World, runner: Callable[..., QueueRunner], rcpt: str) -> QueueState:
    (eid,) = await world.queue([rcpt])
    await runner().run_once()
    entry = await world.store.get_queue_entry(eid)
    assert entry is not None
    return entry.state


def test_unsigned_mx_host_with_broken_tlsa_answers_still_gets_mail(tmp_path: Path) -> None:
    zone: dict[str, Any] = {
        "d.test": {"MX": [(10, "mx.hoster.test")]},
        "mx.hoster.test": {"A": [HOST]},
    }

    async def body(world: World, port: int, runner: Callable[..., QueueRunner]) -> None:
        world.dns.set(f"_{port}._tcp.mx.hoster.test", "TLSA", SRV_SERVFAIL)
        sink = await Sink(HOST, port).start()  # no STARTTLS: opportunistic goes plaintext
        try:
            assert await deliver(world, runner, "x@d.test") is QueueState.DELIVERED
            assert sink.delivered and not sink.delivered[0].tls
            # RFC 7672 §2.2.2: insecure address records: no TLSA query was sent at all
            assert not [q for q in world.dns.queries if q[2] == "TLSA"]
        finally:
            await sink.stop()

    run(tmp_path, body, zone, unsigned=["hoster.test"])


def test_tlsa_servfail_in_a_signed_zone_defers_without_connecting(tmp_path: Path) -> None:
    zone: dict[str, Any] = {"d.test": {"MX": [(10, "mx.d.test")]}, "mx.d.test": {"A": [HOST]}}

    async def body(world: World, port: int, runner: Callable[..., QueueRunner]) -> None:
        world.dns.set(f"_{port}._tcp.mx.d.test", "TLSA", SRV_SERVFAIL)
        sink = await Sink(HOST, port).start()
        try:
            assert await deliver(world, runner, "x@d.test") is QueueState.DEFERRED
            # RFC 7672 §2.2.1: the host is treated as unreachable: not even a connection
            assert not sink.sessions
            (entry,) = await world.store.list_queue()
            assert entry.recipients[0].reply == "451 4.4.3 DANE: TLSA lookup for mx.d.test failed"
        finally:
            await sink.stop()

    run(tmp_path, body, zone)


# (dnspython refuses answers with data of the wrong length: a lookup error, unit-tested)
@pytest.mark.parametrize("record", [UNUSABLE[0], UNUSABLE[1], UNUSABLE[2], UNUSABLE[4]])
def test_unusable_records_deliver_over_unauthenticated_tls_only(
    tmp_path: Path, record: TlsaRecord
) -> None:
    zone: dict[str, Any] = {"d.test": {"MX": [(10, "mx.d.test")]}, "mx.d.test": {"A": [HOST]}}

    async def body(world: World, port: int, runner: Callable[..., QueueRunner]) -> None:
        world.dns.set(f"_{port}._tcp.mx.d.test", "TLSA", [tuple(record)])
        # a self-signed certificate no CA and no record vouches for: TLS is enough
        tls = server_tls(tmp_path, "unrelated.test")
        sink = await Sink(HOST, port, tls=tls).start()
        try:
            assert await deliver(world, runner, "x@d.test") is QueueState.DELIVERED
            assert sink.delivered[0].tls
        finally:
            await sink.stop()
        plain = await Sink(HOST, port).start()  # no STARTTLS offered
        try:
            assert await deliver(world, runner, "y@d.test") is QueueState.DEFERRED
            # RFC 7672 §2.2: "MUST be made via TLS": never in the clear
            assert not plain.transactions
            assert all("MAIL" not in " ".join(s.commands) for s in plain.sessions)
            entries = [e for e in await world.store.list_queue() if e.state is QueueState.DEFERRED]
            assert entries and "4.7.10" in (entries[0].recipients[0].reply or "")
        finally:
            await plain.stop()

    run(tmp_path, body, zone)


def test_requiretls_mail_is_not_sent_over_tls_that_unusable_records_leave_unchecked(
    tmp_path: Path,
) -> None:
    zone: dict[str, Any] = {"d.test": {"MX": [(10, "mx.d.test")]}, "mx.d.test": {"A": [HOST]}}

    async def body(world: World, port: int, runner: Callable[..., QueueRunner]) -> None:
        world.dns.set(f"_{port}._tcp.mx.d.test", "TLSA", [tuple(UNUSABLE[0])])
        tls = server_tls(tmp_path, "unrelated.test")  # no CA, no record vouches for it
        caps = ("PIPELINING", "8BITMIME", "DSN", "SMTPUTF8", "SIZE 0", "REQUIRETLS")
        sink = await Sink(HOST, port, tls=tls, capabilities=caps).start()
        try:
            (eid,) = await world.queue(["x@d.test"], requiretls=True)
            await runner().run_once()
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.BOUNCED
            # RFC 8689 §4.2.1: an unauthenticated certificate: the message is not sent
            assert not sink.transactions
            assert all("MAIL" not in " ".join(s.commands) for s in sink.sessions)
            assert ".7.10" in (entry.recipients[0].reply or "")  # X.7.10: encryption needed
        finally:
            await sink.stop()

    run(tmp_path, body, zone)


def test_domain_without_mx_uses_its_own_tlsa_records(tmp_path: Path) -> None:
    pki = make_pki()
    leaf = pki.leaf("nomx.test")
    tls = server_context(tmp_path, leaf, pki.intermediate)
    spki = hashlib.sha256(leaf.spki).digest()
    zone: dict[str, Any] = {"nomx.test": {"A": [HOST]}}

    async def body(world: World, port: int, runner: Callable[..., QueueRunner]) -> None:
        world.dns.set(f"_{port}._tcp.nomx.test", "TLSA", [(3, 1, 1, b"\x00" * 32)])
        sink = await Sink(HOST, port, tls=tls).start()
        try:
            # RFC 7672 §2.2.2: no MX records: the domain is the server name, DANE applies
            assert await deliver(world, runner, "x@nomx.test") is QueueState.DEFERRED
            assert not sink.transactions and sink.sessions and all(s.tls for s in sink.sessions)
            world.dns.set(f"_{port}._tcp.nomx.test", "TLSA", [(3, 1, 1, spki)])
            assert await deliver(world, runner, "y@nomx.test") is QueueState.DELIVERED
        finally:
            await sink.stop()

    run(tmp_path, body, zone)


def test_cname_expanded_recipient_domain_is_a_reference_identifier(tmp_path: Path) -> None:
    pki = make_pki()
    leaf = pki.leaf("mail.example-real.test")  # names only the expanded next-hop domain
    tls = server_context(tmp_path, leaf, pki.intermediate, pki.root)
    zone: dict[str, Any] = {
        "alias.test": {"CNAME": ["mail.example-real.test"]},
        "mail.example-real.test": {"MX": [(10, "mx.example-real.test")]},
        "mx.example-real.test": {"A": [HOST]},
    }

    async def body(world: World, port: int, runner: Callable[..., QueueRunner]) -> None:
        world.dns.set(f"_{port}._tcp.mx.example-real.test", "TLSA", [pki.root.tlsa(2, 0, 1)])
        sink = await Sink(HOST, port, tls=tls).start()
        try:
            # RFC 7672 §2.2.1 / §3.2.2: the MX lookup follows the CNAME, and the expanded
            # next-hop domain is the third reference identifier
            assert await deliver(world, runner, "x@alias.test") is QueueState.DELIVERED
            assert sink.delivered[0].tls
        finally:
            await sink.stop()

    run(tmp_path, body, zone)
