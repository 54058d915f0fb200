"""ARC chain validation against the ValiMail suite (vectors README §2) and Stalwart's messages.

The suite's ``cv`` is compared lower-cased; its empty value ("no ARC result") is expected for
the three chains whose seals carry cv=fail: we report status fail (RFC 8617 §5.2 step 2 /
3.C) with ``terminated`` set, and the runner maps that to "".
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from mailauth_kit import VECTORS, split_stalwart

from hato.core.dns import StaticResolver
from hato.mailauth import arc
from hato.mailauth.arc import ArcStatus

SUITE = VECTORS / "arc"


def _cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    with (SUITE / "arc-draft-validation-tests.yml").open() as handle:
        scenarios = list(yaml.safe_load_all(handle))
    cases = []
    for scenario in scenarios:
        zone = {n: {"TXT": [v]} for n, v in (scenario.get("txt-records") or {}).items()}
        for test_id, test in scenario["tests"].items():
            cases.append((test_id, test, zone))
    return cases


CASES = _cases()


def test_suite_size() -> None:
    assert len(CASES) == 171
    expected = [str(t["cv"] or "").strip().lower() for _, t, _ in CASES]
    assert (expected.count("pass"), expected.count("fail"), expected.count("none")) == (54, 109, 5)


@pytest.mark.parametrize(("test_id", "test", "zone"), CASES, ids=[c[0] for c in CASES])
def test_validation_suite(test_id: str, test: dict[str, Any], zone: dict[str, Any]) -> None:
    result = asyncio.run(arc.verify(test["message"].encode(), resolver=StaticResolver(zone)))
    got = "" if result.terminated else result.status.value
    assert got == str(test["cv"] or "").strip().lower(), result.detail
    if result.terminated:
        assert result.status is ArcStatus.FAIL  # RFC 8617 §5.2 step 2
    if result.status is ArcStatus.PASS:
        assert result.oldest_pass is not None
        assert result.sealer == result.seals[0].domain


def _stalwart(name: str) -> arc.ArcResult:
    zone, message = split_stalwart((SUITE / "stalwart-mail-auth" / name).read_bytes())
    return asyncio.run(arc.verify(message, resolver=StaticResolver(zone)))


def test_stalwart_real_world_chain_passes() -> None:
    result = _stalwart("001.txt")
    assert result.status is ArcStatus.PASS
    assert result.instances >= 1
    assert result.oldest_pass == 0


def test_stalwart_ed25519_seal_fails() -> None:
    """RFC 8617 defines rsa-sha256 sealing only ([ARC-MULTI] left out): ed25519 fails."""
    result = _stalwart("002.txt")
    assert result.status is ArcStatus.FAIL
