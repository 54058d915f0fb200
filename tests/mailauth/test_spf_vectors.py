"""The openspf RFC 7208 (203 cases) and RFC 4408 (191 cases) suites, run on our check_host().

Zone conventions copied from ../shared/vectors/README.md §1: an SPF record is also served as
TXT unless the name lists a TXT record; ``TXT: NONE`` only suppresses that; a bare TIMEOUT
makes every type without records time out, ``TYPE: TIMEOUT`` just that type; absent names
are NXDOMAIN except ``error.*`` names, which time out; labels over 63 octets are a DNS error;
CNAMEs are followed one level; ``explanation: DEFAULT`` means our default explanation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hato.core.dns import TIMEOUT, DnsAnswer, DnsRecord, DnsTemporaryError, MxRecord, StaticResolver
from hato.mailauth.spf import DEFAULT_EXPLANATION, verify_mailfrom

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "spf"
SUITES = {"rfc7208-tests.yml": 203, "rfc4408-tests.yml": 191}


class SuiteResolver(StaticResolver):
    """StaticResolver plus the suite's ``error.`` rule (absent names starting so time out)."""

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        answer = await super().query(name, rdtype)
        if answer.nxdomain and name.lower().startswith("error."):
            raise DnsTemporaryError(f"{name}: timeout (suite convention)")
        return answer


def build_zone(zonedata: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    zone: dict[str, dict[str, Any]] = {}
    for name, rrs in zonedata.items():
        entry: dict[str, Any] = {}
        spf: list[str] = []
        has_txt = False
        for rr in rrs:
            if rr == "TIMEOUT":
                entry["*"] = TIMEOUT
                continue
            ((rdtype, value),) = rr.items()
            if value == "TIMEOUT":
                entry[rdtype] = TIMEOUT
                continue
            if rdtype == "SPF":
                spf.append(_txt(value))
                continue
            if rdtype == "TXT":
                has_txt = True
                if value == "NONE":
                    continue
            records: list[DnsRecord] = entry.setdefault(rdtype, [])
            if rdtype == "TXT":
                records.append(_txt(value))
            elif rdtype == "MX":
                records.append(MxRecord(int(value[0]), str(value[1]).rstrip(".").lower()))
            elif rdtype in ("PTR", "CNAME"):
                records.append(str(value).rstrip(".").lower())
            else:
                records.append(str(value))
        if spf and not has_txt:
            entry.setdefault("TXT", []).extend(spf)
        zone[name] = entry
    return zone


def _txt(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def cases() -> Iterator[Any]:
    for filename in SUITES:
        for scenario in yaml.safe_load_all((VECTORS / filename).read_text()):
            zone = build_zone(scenario["zonedata"])
            for test_id, test in scenario["tests"].items():
                spec = test.get("spec")
                yield pytest.param(filename, zone, test, id=f"{filename[:7]}:{test_id}:{spec}")


def test_suite_sizes() -> None:
    for filename, expected in SUITES.items():
        scenarios = list(yaml.safe_load_all((VECTORS / filename).read_text()))
        assert sum(len(s["tests"]) for s in scenarios) == expected


@pytest.mark.parametrize(("suite", "zone", "test"), list(cases()))
def test_spf_vector(suite: str, zone: dict[str, Any], test: dict[str, Any]) -> None:
    resolver = SuiteResolver(zone, cname_depth=1)
    result = asyncio.run(
        verify_mailfrom(resolver, test["host"], mailfrom=test["mailfrom"], helo=test["helo"])
    )
    expected = test["result"]
    allowed = expected if isinstance(expected, list) else [expected]
    assert result.status in allowed, f"{result.status} not in {allowed}: {result.detail}"
    if "explanation" in test:
        want = test["explanation"]
        want = DEFAULT_EXPLANATION if want == "DEFAULT" else want
        assert result.explanation == want
