"""ARC details beyond the suite: oldest-pass, DNS failures, limits, and the trusted-sealer
override of a DMARC failure (RFC 8617 §5.2, §5.2.1, §7.2)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import yaml
from mailauth_kit import VECTORS

from hato.core.dns import SERVFAIL, TIMEOUT, StaticResolver
from hato.mailauth import arc
from hato.mailauth.arc import ArcResult, ArcSeal, ArcStatus, apply_override
from hato.mailauth.dmarc import DmarcResult, DmarcStatus, Policy


def _suite() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    with (VECTORS / "arc" / "arc-draft-validation-tests.yml").open() as handle:
        found = {}
        for scenario in yaml.safe_load_all(handle):
            zone = {n: {"TXT": [v]} for n, v in (scenario.get("txt-records") or {}).items()}
            for test_id, test in scenario["tests"].items():
                found[test_id] = (test, zone)
    return found


SUITE = _suite()


def _run(test_id: str, zone: dict[str, Any] | None = None) -> ArcResult:
    test, suite_zone = SUITE[test_id]
    resolver = StaticResolver(suite_zone if zone is None else zone)
    return asyncio.run(arc.verify(test["message"].encode(), resolver=resolver))


def test_oldest_pass_all_valid_is_zero() -> None:
    """RFC 8617 §5.2 step 5.B: all AMS verify → oldest-pass 0."""
    result = _run("cv_pass_i2_1")
    assert result.status is ArcStatus.PASS
    assert result.oldest_pass == 0
    assert [s.instance for s in result.seals] == [2, 1]


def test_oldest_pass_after_a_broken_older_ams() -> None:
    """RFC 8617 §5.2 step 5.A: AMS(1) fails → oldest-pass 2; the chain still passes."""
    result = _run("cv_pass_i2_1_ams1_invalid")
    assert result.status is ArcStatus.PASS
    assert result.oldest_pass == 2
    assert not result.seals[1].signature_valid


@pytest.mark.parametrize("marker", [TIMEOUT, SERVFAIL])
def test_dns_failure_is_fail(marker: str) -> None:
    """RFC 8617 §5.2.1: all failures, DNS included, are permanent → fail, never an error."""
    _, zone = SUITE["cv_pass_i1_1"]
    broken = {name: {"TXT": marker} for name in zone}
    result = _run("cv_pass_i1_1", broken)
    assert result.status is ArcStatus.FAIL


def test_more_than_fifty_sets_fail_without_lookups() -> None:
    """RFC 8617 §5.2 step 1 / §4.2.1: at most 50 ARC Sets."""
    header = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=example.org; s=dummy; b=AAAA\r\n" % i
        for i in range(51, 0, -1)
    )
    resolver = StaticResolver({})
    result = asyncio.run(
        arc.verify(header + b"From: a@example.org\r\n\r\nhi\r\n", resolver=resolver)
    )
    assert result.status is ArcStatus.FAIL
    assert result.instances == 51
    assert resolver.queries == []


def test_unsealed_message_is_none() -> None:
    result = asyncio.run(
        arc.verify(b"From: a@example.org\r\n\r\nhi\r\n", resolver=StaticResolver({}))
    )
    assert result.status is ArcStatus.NONE
    assert result.sealer is None


def test_remote_ip_from_the_first_aar() -> None:
    """RFC 8617 §7.2.2: the originating IP comes from the first ARC Set's AAR."""
    value = (
        b"i=1; mx.example.org; arc=none smtp.remote-ip=192.0.2.7; spf=pass smtp.mailfrom=a.example"
    )
    assert arc._remote_ip(value) == "192.0.2.7"
    assert arc._remote_ip(b"i=1; mx.example.org; spf=pass smtp.mailfrom=a.example") is None
    assert arc._remote_ip(b"garbage (") is None


PASSING = ArcResult(
    ArcStatus.PASS,
    2,
    0,
    (
        ArcSeal(2, "lists.example.net", "s2", "pass", True, True),
        ArcSeal(1, "fwd.example.org", "s1", "none", True, True),
    ),
    remote_ip="2001:db8::1a",
)


def _dmarc(status: DmarcStatus, policy: Policy | None, *, applied: bool = True) -> DmarcResult:
    return DmarcResult(status, "example.com", "example.com", policy=policy, applied=applied)


def test_report_comment_format() -> None:
    """RFC 8617 §7.2.2 example layout."""
    assert PASSING.report_comment() == (
        "arc=pass as[2].d=lists.example.net as[2].s=s2 as[1].d=fwd.example.org "
        "as[1].s=s1 remote-ip[1]=2001:db8::1a"
    )


def test_trusted_sealer_overrides_a_dmarc_reject() -> None:
    override = apply_override(_dmarc(DmarcStatus.FAIL, Policy.REJECT), PASSING, ["example.net"])
    assert override.overridden
    assert override.disposition is Policy.NONE
    assert override.reason == "local_policy"  # RFC 8617 §7.2.2
    assert override.comment.startswith("arc=pass as[2].d=lists.example.net")


@pytest.mark.parametrize(
    ("dmarc", "chain", "trusted", "disposition"),
    [
        # untrusted sealer: the DMARC disposition stands
        (_dmarc(DmarcStatus.FAIL, Policy.REJECT), PASSING, ["other.example"], Policy.REJECT),
        # only the newest sealer counts, not an older one in the chain
        (_dmarc(DmarcStatus.FAIL, Policy.REJECT), PASSING, ["fwd.example.org"], Policy.REJECT),
        # a failing chain is treated as no chain (RFC 8617 §5.2)
        (
            _dmarc(DmarcStatus.FAIL, Policy.QUARANTINE),
            ArcResult(ArcStatus.FAIL, 2, None, PASSING.seals),
            ["example.net"],
            Policy.QUARANTINE,
        ),
        # nothing to override
        (_dmarc(DmarcStatus.PASS, Policy.REJECT), PASSING, ["example.net"], Policy.NONE),
        (_dmarc(DmarcStatus.FAIL, Policy.NONE), PASSING, ["example.net"], Policy.NONE),
        # pct sampling already lowered reject to quarantine (RFC 7489 §6.6.4)
        (
            _dmarc(DmarcStatus.FAIL, Policy.REJECT, applied=False),
            PASSING,
            [],
            Policy.QUARANTINE,
        ),
    ],
)
def test_no_override(
    dmarc: DmarcResult, chain: ArcResult, trusted: list[str], disposition: Policy
) -> None:
    override = apply_override(dmarc, chain, trusted)
    assert not override.overridden
    assert override.disposition is disposition
    assert override.reason is None


def test_validation_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    original = arc._validate

    def spy(*args: Any) -> Any:
        seen.append(threading.current_thread() is threading.main_thread())
        return original(*args)

    monkeypatch.setattr(arc, "_validate", spy)
    assert _run("cv_pass_i1_1").status is ArcStatus.PASS
    assert seen == [False]
