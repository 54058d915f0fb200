"""DANE-TA(2) (RFC 7672 §3.1.2, §3.2.2) end to end against a loopback TLS server with a chain
made in the test (root CA, intermediate CA, leaf), and the chain checks of
``hato.outbound.dane`` on their own: anchors, signatures, CA constraints, expiry, names."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from dane_certs import NOW, Issued, Pki, issue, make_pki, server_context
from hypothesis import given, settings
from hypothesis import strategies as st
from outbound_kit import World, open_world, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.core.dns import StaticResolver, TlsaRecord
from hato.outbound import dane
from hato.outbound.tlspolicy import Requirement, host_policy
from hato.store.queue import QueueState

HOST = "127.0.0.3"
NOW_TS = NOW.timestamp()


def rec(t: tuple[int, int, int, bytes]) -> TlsaRecord:
    return TlsaRecord(*t)


def run(
    tmp_path: Path,
    body: Callable[[World, int], Awaitable[Any]],
    zone: dict[str, Any] | None = None,
) -> Any:
    port = shared_port([HOST])
    base = {
        "dane.test": {"MX": [(10, "mx.dane.test")]},
        "mx.dane.test": {"A": [HOST]},
    }

    async def main() -> Any:
        with DnsServer({**base, **(zone or {})}, authenticated=True) as dns:
            world = await open_world(tmp_path, dns, port=port, mta_sts=False)
            try:
                return await body(world, port)
            finally:
                await world.store.close()

    return asyncio.run(main())


async def attempt(world: World, tls: Any, port: int) -> tuple[QueueState, Sink, Any]:
    sink = await Sink(HOST, port, tls=tls).start()
    try:
        (eid,) = await world.queue(["x@dane.test"])
        runner = world.make_runner()
        await runner.run_once()
        entry = await world.store.get_queue_entry(eid)
        assert entry is not None
        return entry.state, sink, runner
    finally:
        await sink.stop()


def test_matching_trust_anchor_delivers(tmp_path: Path) -> None:
    pki = make_pki()
    leaf = pki.leaf("mx.dane.test")

    async def body(world: World, port: int) -> None:
        # RFC 7672 §3.1: "DANE-TA(2) Cert(0) SHA2-256(1)", the root presented last
        world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [pki.root.tlsa(2, 0, 1)])
        tls = server_context(tmp_path, leaf, pki.intermediate, pki.root)
        state, sink, runner = await attempt(world, tls, port)
        assert state is QueueState.DELIVERED
        assert sink.delivered and sink.delivered[0].tls
        assert runner.tls_results[("dane.test", "success")] == 1
        # the intermediate as anchor (SPKI(1) SHA2-512(2)) works as well
        world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [pki.intermediate.tlsa(2, 1, 2)])
        state, sink, _ = await attempt(world, tls, port)
        assert state is QueueState.DELIVERED and sink.delivered[0].tls

    run(tmp_path, body)


def test_wrong_trust_anchor_defers_and_never_sends_in_the_clear(tmp_path: Path) -> None:
    pki, other = make_pki(), make_pki("Other")
    leaf = pki.leaf("mx.dane.test")

    async def body(world: World, port: int) -> None:
        world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [other.root.tlsa(2, 0, 1)])
        tls = server_context(tmp_path, leaf, pki.intermediate, pki.root)
        state, sink, runner = await attempt(world, tls, port)
        assert state is QueueState.DEFERRED
        (entry,) = await world.store.list_queue()
        assert entry.recipients[0].reply is not None and "4.7.10" in entry.recipients[0].reply
        assert not sink.transactions
        assert all("MAIL" not in " ".join(s.commands) for s in sink.sessions)
        assert sink.sessions and all(s.tls for s in sink.sessions)  # only TLS, then QUIT
        assert runner.tls_results[("dane.test", "tlsa-invalid")] >= 1

    run(tmp_path, body)


def test_name_mismatch_defers(tmp_path: Path) -> None:
    pki = make_pki()
    leaf = pki.leaf("elsewhere.test")  # chains to the anchor, names another host

    async def body(world: World, port: int) -> None:
        world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [pki.root.tlsa(2, 0, 1)])
        tls = server_context(tmp_path, leaf, pki.intermediate, pki.root)
        state, sink, runner = await attempt(world, tls, port)
        assert state is QueueState.DEFERRED and not sink.transactions
        assert runner.tls_results[("dane.test", "certificate-host-mismatch")] >= 1

    run(tmp_path, body)


def test_next_hop_domain_is_a_reference_identifier(tmp_path: Path) -> None:
    pki = make_pki()
    leaf = pki.leaf("dane.test")  # RFC 7672 §3.2.2: the next-hop domain, secure MX

    async def body(world: World, port: int) -> None:
        world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [pki.root.tlsa(2, 0, 1)])
        tls = server_context(tmp_path, leaf, pki.intermediate, pki.root)
        state, _sink, _ = await attempt(world, tls, port)
        assert state is QueueState.DELIVERED

    run(tmp_path, body)


def test_cname_expanded_mx_is_the_tlsa_base_domain(tmp_path: Path) -> None:
    pki = make_pki()
    leaf = pki.leaf("*.hosting.test")  # RFC 7672 §3.2.3: a wildcard for one label
    seen_sni: list[str | None] = []

    async def body(world: World, port: int) -> None:
        world.dns.set(f"_{port}._tcp.real.hosting.test", "TLSA", [pki.root.tlsa(2, 0, 1)])
        tls = server_context(tmp_path, leaf, pki.intermediate, pki.root)
        tls.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)  # type: ignore[assignment]
        state, sink, _ = await attempt(world, tls, port)
        assert state is QueueState.DELIVERED and sink.delivered[0].tls
        assert seen_sni == ["real.hosting.test"]  # RFC 7672 §8.1: SNI is the base domain

    run(
        tmp_path,
        body,
        {
            "mx.dane.test": {"CNAME": ["real.hosting.test"]},
            "real.hosting.test": {"A": [HOST]},
        },
    )


def test_host_policy_names_and_usable_records() -> None:
    zone = {
        "_25._tcp.mx.d.test": {
            "TLSA": [TlsaRecord(2, 0, 1, b"\x01" * 32), TlsaRecord(1, 0, 1, b"\x02" * 32)]
        },
        "_25._tcp.mx.u.test": {"TLSA": [TlsaRecord(0, 0, 1, b"\x01" * 32)]},
    }
    resolver = StaticResolver(zone, secure=list(zone))

    async def decide(host: str, domain: str) -> Any:
        return await host_policy(
            host,
            resolver=resolver,
            port=25,
            mx_secure=True,
            sts=None,
            via_mx=True,
            requiretls=False,
            tls_optional=False,
            domain=domain,
        )

    policy = asyncio.run(decide("mx.d.test", "d.test"))
    assert policy.requirement is Requirement.DANE
    assert [r.usage for r in policy.tlsa] == [2]  # RFC 7672 §3.1.3: PKIX-EE unusable
    assert policy.names == ("mx.d.test", "d.test") and policy.base_domain == "mx.d.test"
    # only unusable records: TLS is mandatory but unauthenticated (RFC 7672 §2.2.3)
    assert asyncio.run(decide("mx.u.test", "u.test")).requirement is Requirement.ENCRYPT


# -- the chain checks on their own ---------------------------------------------------------


def check(chain: list[Issued], records: list[TlsaRecord], names: tuple[str, ...] = ("mx.test",)):  # type: ignore[no-untyped-def]
    return dane.verify([c.der for c in chain], records, names=names, now=NOW_TS)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def test_dane_ee_ignores_names_and_expiry(pki: Pki) -> None:
    expired = issue("old", pki.intermediate, ca=False, names=("nothing.test",),
                    not_before=NOW - datetime.timedelta(days=9),
                    not_after=NOW - datetime.timedelta(days=1))  # fmt: skip
    verdict = check([expired], [rec(expired.tlsa(3, 1, 1))])
    assert verdict.ok and verdict.usage == 3  # RFC 7672 §3.1.1, §3.2.1


def test_trust_anchor_variants(pki: Pki) -> None:
    leaf = pki.leaf("mx.test")
    full = [leaf, pki.intermediate, pki.root]
    assert check(full, [rec(pki.root.tlsa(2, 0, 1))]).ok
    assert check(full, [rec(pki.root.tlsa(2, 1, 1))]).ok
    # TLS 1.3 allows any order after the leaf (RFC 8446 §4.4.2)
    assert check([leaf, pki.root, pki.intermediate], [rec(pki.root.tlsa(2, 0, 2))]).ok
    # the anchor not presented: only a Full(0) record can stand for it
    assert not check([leaf, pki.intermediate], [rec(pki.root.tlsa(2, 0, 1))]).ok
    assert check([leaf, pki.intermediate], [rec(pki.root.tlsa(2, 0, 0))]).ok
    assert check([leaf, pki.intermediate], [rec(pki.root.tlsa(2, 1, 0))]).ok
    # the leaf alone, its issuer named by the record
    assert check([leaf], [rec(pki.intermediate.tlsa(2, 1, 0))]).ok
    # a DANE-TA record matching the leaf itself: still a name check
    assert check([leaf], [rec(leaf.tlsa(2, 0, 1))]).ok
    assert not check([leaf], [rec(leaf.tlsa(2, 0, 1))], names=("other.test",)).ok
    # a DANE-EE record for another certificate does not help
    assert not check(full, [rec(pki.root.tlsa(3, 0, 1))]).ok


def test_forged_and_broken_chains_fail(pki: Pki) -> None:
    other = make_pki("Evil")
    forged = other.leaf("mx.test")
    # the attacker presents the real root next to its own chain: no signature links them
    verdict = check([forged, other.intermediate, pki.root], [rec(pki.root.tlsa(2, 0, 1))])
    assert not verdict.ok and verdict.failure == "tlsa-invalid"
    # an intermediate renamed to look like the real one: the signature still fails
    fake = issue("Test Intermediate CA", other.root, ca=True)
    leaf = issue("mx.test", fake, ca=False, names=("mx.test",))
    assert not check([leaf, fake, pki.root], [rec(pki.root.tlsa(2, 0, 1))]).ok


def test_ca_constraints_and_expiry(pki: Pki) -> None:
    anchor = [rec(pki.root.tlsa(2, 0, 1))]
    not_ca = issue("Not A CA", pki.root, ca=False)
    leaf = issue("mx.test", not_ca, ca=False, names=("mx.test",))
    verdict = check([leaf, not_ca, pki.root], anchor)
    assert not verdict.ok and verdict.failure == "validation-failure"  # RFC 5280 §6.1.4 (k)
    no_sign = issue("No Sign CA", pki.root, ca=True, key_cert_sign=False)
    leaf = issue("mx.test", no_sign, ca=False, names=("mx.test",))
    assert not check([leaf, no_sign, pki.root], anchor).ok  # §6.1.4 (n)
    # pathlen 0 on the intermediate: one more CA below it breaks the constraint
    sub = issue("Sub CA", pki.intermediate, ca=True)
    leaf = issue("mx.test", sub, ca=False, names=("mx.test",))
    assert not check([leaf, sub, pki.intermediate, pki.root], anchor).ok  # §6.1.4 (l)
    # a Cert(0) anchor's own path length applies (RFC 7672 §3.1.2)
    tight = issue("Tight Root", None, ca=True, path_length=0)
    mid = issue("Mid", tight, ca=True)
    leaf = issue("mx.test", mid, ca=False, names=("mx.test",))
    assert check([leaf, mid, tight], [rec(tight.tlsa(2, 1, 1))]).ok  # SPKI(1): key only
    assert not check([leaf, mid, tight], [rec(tight.tlsa(2, 0, 1))]).ok
    expired = pki.leaf("mx.test", not_after=NOW - datetime.timedelta(hours=1))
    verdict = check([expired, pki.intermediate, pki.root], anchor)
    assert not verdict.ok and verdict.failure == "certificate-expired"


def test_crafted_chain_search_is_bounded(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # sixteen certificates with one name and one key all "issue" each other: a depth-first
    # search over them would try millions of paths; each is expanded once instead
    shared = issue("Loop CA", None, ca=True).key
    same_key = [issue("Loop CA", None, ca=True, key=shared) for _ in range(dane.MAX_CHAIN - 1)]
    leaf = issue("mx.test", same_key[0], ca=False, names=("mx.test",))
    calls = 0
    real = dane.signed_by

    def counting(cert, key):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(cert, key)

    monkeypatch.setattr(dane, "signed_by", counting)
    verdict = check([leaf, *same_key], [rec(pki.root.tlsa(2, 0, 1))])
    assert not verdict.ok
    assert calls <= dane.MAX_CHAIN**2


@pytest.mark.parametrize(
    ("presented", "reference", "matches"),
    [
        ("mx.example.com", "MX.Example.COM.", True),
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "a.b.example.com", False),  # exactly one label
        ("*.example.com", "example.com", False),
        ("smtp*.example.com", "smtp1.example.com", False),  # RFC 7672 §3.2.3
        ("*smtp.example.com", "xsmtp.example.com", False),
        ("*.com", "example.com", False),
        ("mx.example.com", "mx.example.org", False),
    ],
)
def test_name_matching(presented: str, reference: str, matches: bool) -> None:
    assert dane.name_matches(presented, reference) is matches


def test_cn_only_when_no_dns_id(pki: Pki) -> None:
    cn_only = issue("mx.test", pki.intermediate, ca=False)  # no SAN: the CN-ID counts
    assert check([cn_only, pki.intermediate, pki.root], [rec(pki.root.tlsa(2, 0, 1))]).ok
    san = issue("mx.test", pki.intermediate, ca=False, names=("other.test",))
    assert not check([san, pki.intermediate, pki.root], [rec(pki.root.tlsa(2, 0, 1))]).ok


@settings(max_examples=200, deadline=None)
@given(
    junk=st.lists(st.binary(max_size=300), min_size=0, max_size=4),
    usage=st.sampled_from([2, 3]),
    selector=st.sampled_from([0, 1]),
    mtype=st.sampled_from([0, 1, 2]),
    data=st.binary(max_size=80),
)
def test_fuzz_peer_chains_never_crash(
    junk: list[bytes], usage: int, selector: int, mtype: int, data: bytes
) -> None:
    # peer-chosen certificates and DNS-chosen record data: a verdict, never an exception
    verdict = dane.verify(junk, [TlsaRecord(usage, selector, mtype, data)], names=("a.b",),
                          now=NOW_TS)  # fmt: skip
    if verdict.ok:  # junk can only match a record that holds the very same octets
        assert (usage, selector, mtype) == (3, 0, 0) and junk[0] == data
    else:
        assert verdict.failure


@pytest.fixture(scope="module")
def real_chain() -> tuple[list[bytes], TlsaRecord]:
    pki = make_pki("Fuzz")
    chain = [pki.leaf("mx.test"), pki.intermediate, pki.root]
    return [c.der for c in chain], rec(pki.root.tlsa(2, 0, 1))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_mutated_chains(
    real_chain: tuple[list[bytes], TlsaRecord], data: st.DataObject
) -> None:
    ders, record = real_chain
    which = data.draw(st.integers(0, len(ders) - 1))
    der = bytearray(ders[which])
    position = data.draw(st.integers(0, len(der) - 1))
    der[position] ^= data.draw(st.integers(1, 255))
    chain = [*ders[:which], bytes(der), *ders[which + 1 :]]
    # a flipped octet anywhere: a verdict, never an exception; a change to the signed
    # part of any certificate never verifies (a signature or the anchor's digest breaks;
    # outside it, a re-encoding of the same signature may still verify, harmlessly)
    verdict = dane.verify(chain, [record], names=("mx.test",), now=NOW_TS)
    tbs = dane.load_certificate(ders[which]).tbs_certificate_bytes
    start = ders[which].index(tbs)
    if start <= position < start + len(tbs):
        assert not verdict.ok


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_fuzz_name_matching(presented: str, reference: str) -> None:
    result = dane.name_matches(presented, reference)
    if result and not presented.strip().startswith("*."):
        assert presented.strip().lower().rstrip(".") == reference.strip().lower().rstrip(".")
