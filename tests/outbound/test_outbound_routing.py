"""MX routing (RFC 5321 §5.1, RFC 7505 null MX) on the StaticResolver, and MTA-STS parsing
and matching against the shared vectors (RFC 8461 §3.1, §3.2, §4.1)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from hato.core.dns import SERVFAIL, MxRecord, StaticResolver
from hato.outbound.mtasts import MtaStsError, PolicyCache, mx_matches, parse_policy, parse_record
from hato.outbound.routing import Relay, resolve_route
from hato.outbound.tlspolicy import Requirement, host_policy

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "mta-sts"
DATA = json.loads((VECTORS / "mta-sts-vectors.json").read_text())

ZONE = {
    "multi.test": {"MX": [MxRecord(20, "c.test"), MxRecord(10, "a.test"), MxRecord(10, "b.test")]},
    "a.test": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "b.test": {"A": ["192.0.2.2"]},
    "c.test": {"A": ["192.0.2.3"]},
    "null.test": {"MX": [MxRecord(0, "")]},
    "implicit.test": {"A": ["192.0.2.9"]},
    "self.test": {"MX": [MxRecord(10, "out.example.test"), MxRecord(5, "a.test")]},
    "loop.test": {"MX": [MxRecord(10, "out.example.test"), MxRecord(20, "a.test")]},
    "broken.test": {"MX": SERVFAIL},
    "noaddr.test": {"MX": [MxRecord(10, "ghost.test")]},
}


def route(domain: str, **kw: object):  # type: ignore[no-untyped-def]
    return asyncio.run(resolve_route(domain, resolver=StaticResolver(ZONE), **kw))  # type: ignore[arg-type]


def test_preference_order_random_among_equals_and_ipv6_first() -> None:
    firsts = set()
    for seed in range(20):
        r = route("multi.test", rng=random.Random(seed))
        assert [h.preference for h in r.hops] == [10, 10, 20]
        assert r.hops[2].name == "c.test"
        firsts.add(r.hops[0].name)
        a = next(h for h in r.hops if h.name == "a.test")
        assert a.addresses == ("2001:db8::1", "192.0.2.1")
    assert firsts == {"a.test", "b.test"}  # RFC 5321 §5.1: randomised among equals
    v4 = route("multi.test", prefer_ipv6=False, rng=random.Random(1))
    assert next(h for h in v4.hops if h.name == "a.test").addresses[0] == "192.0.2.1"


def test_null_mx_nxdomain_implicit_mx_and_temporary_errors() -> None:
    null = route("null.test")
    assert null.error is not None and null.error.startswith("556 5.1.10") and not null.temporary
    missing = route("missing.test")
    assert missing.error is not None and missing.error.startswith("550") and not missing.temporary
    implicit = route("implicit.test")
    assert implicit.hops[0].name == "implicit.test" and not implicit.via_mx
    broken = route("broken.test")
    assert broken.temporary and broken.error is not None and broken.error.startswith("451")
    ghost = route("noaddr.test")
    assert ghost.temporary and not ghost.hops


def test_own_host_and_less_preferred_records_are_dropped() -> None:
    ok = route("self.test", local_names=("out.example.test",))
    assert [h.name for h in ok.hops] == ["a.test"]
    loop = route("loop.test", local_names=("out.example.test",))
    assert loop.error is not None and "5.4.6" in loop.error


def test_transport_override_and_smarthost() -> None:
    relay = Relay.parse("192.0.2.50:2525")
    r = route("multi.test", transports={"multi.test": relay})
    assert r.relay and r.hops[0].addresses == ("192.0.2.50",) and r.hops[0].port == 2525
    assert Relay.parse("smtp.provider.test:465").implicit_tls
    assert Relay.parse("[2001:db8::5]:587").host == "2001:db8::5"
    with pytest.raises(ValueError):
        Relay.parse("host:0")


@pytest.mark.parametrize("case", DATA["record_cases"], ids=lambda c: repr(c["txt"]))
def test_mta_sts_record_vectors(case: dict) -> None:  # type: ignore[type-arg]
    if case["valid"]:
        record = parse_record(case["txt"])
        assert record.id == case["expected"]["id"]
        assert [list(e) for e in record.extensions] == case["expected"]["ext"]
    else:
        with pytest.raises(MtaStsError):
            parse_record(case["txt"])


@pytest.mark.parametrize("case", DATA["policy_cases"], ids=lambda c: repr(c["policy"])[:40])
def test_mta_sts_policy_vectors(case: dict) -> None:  # type: ignore[type-arg]
    if case["valid"]:
        policy = parse_policy(case["policy"])
        expected = case["expected"]
        assert policy.mode == expected["mode"] and policy.max_age == expected["max_age"]
        assert list(policy.mx) == expected["mx"]
        assert [list(e) for e in policy.extensions] == expected["ext"]
    else:
        with pytest.raises(MtaStsError):
            parse_policy(case["policy"])


def test_mta_sts_mx_match_vectors() -> None:
    policy = parse_policy(DATA["mx_match_cases"]["policy"])
    for case in DATA["mx_match_cases"]["cases"]:
        assert policy.matches(case["mx_host"]) is case["matches"], case
    assert mx_matches("*.example.com", "MX.Example.com.")


def test_policy_cache_refreshes_on_new_id_and_keeps_policy_when_fetch_fails() -> None:
    from hato.core.clock import FixedClock

    zone = {"_mta-sts.d.test": {"TXT": ["v=STSv1; id=1"]}}
    resolver = StaticResolver(zone)
    fetched: list[str] = []
    answers = ["version: STSv1\nmode: enforce\nmx: mx.d.test\nmax_age: 100\n"]

    async def fetch(domain: str) -> str:
        fetched.append(domain)
        if not answers:
            raise OSError("unreachable")
        return answers.pop(0)

    clock = FixedClock()
    cache = PolicyCache(resolver, fetch, clock)

    async def main() -> None:
        first = await cache.policy("d.test")
        assert first is not None and first.mode == "enforce"
        assert await cache.policy("d.test") == first and len(fetched) == 1  # same id: cached
        resolver.zone = {"_mta-sts.d.test": {"TXT": ["v=STSv1; id=2"]}}
        resolver.__post_init__()
        assert await cache.policy("d.test") == first and len(fetched) == 2  # refresh failed
        clock.advance(101)
        assert await cache.policy("d.test") is None  # expired and not refetchable

    asyncio.run(main())


def test_host_policy_precedence() -> None:
    sts = parse_policy("version: STSv1\nmode: testing\nmx: mx.d.test\nmax_age: 100\n")

    async def decide(**kw: object):  # type: ignore[no-untyped-def]
        base = dict(
            resolver=StaticResolver({}),
            port=25,
            mx_secure=False,
            sts=sts,
            via_mx=True,
            requiretls=False,
            tls_optional=False,
        )
        base.update(kw)
        return await host_policy("mx.d.test", **base)  # type: ignore[arg-type]

    testing = asyncio.run(decide())
    assert testing.requirement is Requirement.OPPORTUNISTIC and testing.report_only
    enforce = parse_policy("version: STSv1\nmode: enforce\nmx: mx.d.test\nmax_age: 100\n")
    assert asyncio.run(decide(sts=enforce)).requirement is Requirement.PKIX
    # RFC 8689 §4.2.2: TLS-Required: No ignores the policy
    assert (
        asyncio.run(decide(sts=enforce, tls_optional=True)).requirement is Requirement.OPPORTUNISTIC
    )
