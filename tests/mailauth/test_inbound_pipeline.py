"""The inbound pipeline (hato.policy.inbound): checks → InboundVerdict per the DMARC policy."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from mailauth_kit import VECTORS, key_zone, rsa_key, sign

from hato.core.clock import FixedClock
from hato.core.dns import TIMEOUT, DnsAnswer, StaticResolver
from hato.core.reply import Reply
from hato.mailauth import authresults as ar
from hato.policy.inbound import (
    JUNK,
    InboundAction,
    InboundFacts,
    InboundReason,
    InboundSettings,
    InboundVerifier,
    prepare_header,
)
from hato.store.sqlite import open_store

CLIENT = "192.0.2.10"
ID = "mx.hato.example"


def _message(author: str, body: bytes = b"Hello there.\r\n") -> bytes:
    return (
        f"From: Sender <{author}>\r\n"
        "To: bob@hato.example\r\n"
        "Subject: test\r\n"
        "Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n"
        "Message-ID: <m1@example.com>\r\n"
        "\r\n"
    ).encode() + body


def _zone(**extra: Any) -> dict[str, Any]:
    key = rsa_key(2048)
    zone: dict[str, Any] = {
        "sender.example": {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]},
        "mail.sender.example": {"TXT": ["v=spf1 a -all"], "A": ["192.0.2.10"]},
        "10.2.0.192.in-addr.arpa": {"PTR": ["mail.sender.example"]},
        "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.com"]},
        "_dmarc.quarantine.example": {"TXT": ["v=DMARC1; p=quarantine"]},
        "_dmarc.relaxed.example": {"TXT": ["v=DMARC1; p=none"]},
        **key_zone("sel._domainkey.example.com", key.record()),
        **key_zone("test._domainkey.example.com", key.record("t=y; ")),
    }
    zone.update(extra)
    return zone


def _run(
    message: bytes,
    zone: dict[str, Any] | None = None,
    *,
    settings: InboundSettings | None = None,
    resolver: Any = None,
    facts: InboundFacts | None = None,
) -> Any:
    verifier = InboundVerifier(
        resolver or StaticResolver(zone if zone is not None else _zone()),
        settings or InboundSettings(ID),
        clock=FixedClock(1_700_000_000),
        rng=random.Random(1),
    )
    facts = facts or InboundFacts(CLIENT, "mail.sender.example", "bounce@sender.example", message)
    return asyncio.run(verifier.evaluate(facts))


def _methods(verdict: Any) -> dict[str, list[str]]:
    name, _, value = verdict.auth_results_header.decode().partition(":")
    assert name == "Authentication-Results"
    parsed = ar.parse(value)
    assert parsed.authserv_id == ID
    found: dict[str, list[str]] = {}
    for result in parsed.results:
        found.setdefault(result.method, []).append(result.result)
    return found


def test_aligned_dkim_pass_is_accepted() -> None:
    verdict = _run(sign(_message("alice@example.com"), rsa_key(2048)))
    assert verdict.action is InboundAction.ACCEPT
    assert verdict.reply is None
    assert verdict.reasons == (InboundReason.DMARC_PASS,)
    assert _methods(verdict) == {
        "spf": ["pass", "pass"],
        "dkim": ["pass"],
        "arc": ["none"],
        "dmarc": ["pass"],
        "iprev": ["pass"],
    }
    assert verdict.checks.dmarc.aligned_dkim_domain == "example.com"


def test_dmarc_reject() -> None:
    """p=reject and no aligned pass → 550 5.7.1 (RFC 7489 §10.3 wording)."""
    verdict = _run(_message("alice@example.com"))
    assert verdict.action is InboundAction.REJECT
    assert verdict.reply == Reply(550, "5.7.1", "Email rejected per DMARC policy for example.com")
    assert InboundReason.DMARC_FAIL_REJECT in verdict.reasons
    assert "policy.dmarc=reject" in verdict.auth_results_header.decode()


def test_dmarc_quarantine_goes_to_junk() -> None:
    verdict = _run(_message("alice@quarantine.example"))
    assert verdict.action is InboundAction.QUARANTINE
    assert verdict.mailbox == JUNK
    assert verdict.reply is None


def test_dmarc_fail_with_policy_none_is_accepted() -> None:
    verdict = _run(_message("alice@relaxed.example"))
    assert verdict.action is InboundAction.ACCEPT
    assert verdict.reasons == (InboundReason.DMARC_FAIL_NONE,)


def test_no_dmarc_record_is_accepted() -> None:
    verdict = _run(_message("alice@nopolicy.example"))
    assert verdict.action is InboundAction.ACCEPT
    assert verdict.reasons == (InboundReason.DMARC_NO_POLICY,)
    assert verdict.evaluation is None  # nothing to report without a record


def test_dns_failure_on_the_dmarc_record_tempfails() -> None:
    """RFC 7489 §6.6.3 fail closed: a 4xy reply (451 4.4.3, RFC 7208 §8.6 / RFC 3463)."""
    zone = _zone(**{"_dmarc.example.com": {"TXT": TIMEOUT}})
    verdict = _run(_message("alice@example.com"), zone)
    assert verdict.action is InboundAction.TEMPFAIL
    assert verdict.reply is not None and verdict.reply.code == 451
    assert verdict.reply.enhanced == "4.4.3"
    assert _methods(verdict)["dmarc"] == ["temperror"]
    open_ = _run(
        _message("alice@example.com"),
        zone,
        settings=InboundSettings(ID, tempfail_on_temperror=False),
    )
    assert open_.action is InboundAction.ACCEPT
    assert InboundReason.DMARC_TEMPERROR in open_.reasons


def test_every_dns_failing_is_temperror_never_a_crash() -> None:
    zone = {name: "SERVFAIL" for name in _zone()}
    verdict = _run(sign(_message("alice@example.com"), rsa_key(2048)), zone)
    methods = _methods(verdict)
    assert methods["dkim"] == ["temperror"]
    assert methods["spf"] == ["temperror", "temperror"]
    assert methods["iprev"] == ["temperror"]
    assert verdict.action is InboundAction.TEMPFAIL


class SlowResolver:
    """Answers from a zone, but never answers for the names in ``slow``."""

    def __init__(self, zone: dict[str, Any], slow: set[str]) -> None:
        self.inner = StaticResolver(zone)
        self.slow = slow

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        if name in self.slow:
            await asyncio.sleep(30)
        return await self.inner.query(name, rdtype)


def test_a_hanging_check_times_out_into_temperror() -> None:
    resolver = SlowResolver(_zone(), {"_dmarc.example.com", "10.2.0.192.in-addr.arpa"})
    verdict = _run(
        _message("alice@example.com"),
        resolver=resolver,
        settings=InboundSettings(ID, timeout=0.2),
    )
    assert InboundReason.CHECK_TIMEOUT in verdict.reasons
    assert verdict.action is InboundAction.TEMPFAIL
    assert _methods(verdict)["iprev"] == ["temperror"]


def test_local_override_by_network_and_by_authenticated_name() -> None:
    for entry in ("192.0.2.0/24", "sender.example"):
        settings = InboundSettings(ID, local_overrides=(entry,))
        verdict = _run(_message("alice@example.com"), settings=settings)
        assert verdict.action is InboundAction.ACCEPT, entry
        assert InboundReason.LOCAL_OVERRIDE in verdict.reasons
        assert verdict.evaluation.reasons == (("trusted_forwarder", "local override list"),)
    other = _run(
        _message("alice@example.com"),
        settings=InboundSettings(ID, local_overrides=("10.0.0.0/8", "x.example")),
    )
    assert other.action is InboundAction.REJECT


def _arc_case() -> tuple[bytes, dict[str, Any]]:
    with (VECTORS / "arc" / "arc-draft-validation-tests.yml").open() as handle:
        for scenario in yaml.safe_load_all(handle):
            if "cv_pass_i2_1" in scenario["tests"]:
                message = scenario["tests"]["cv_pass_i2_1"]["message"].encode()
                zone = {n: {"TXT": [v]} for n, v in scenario["txt-records"].items()}
                zone["_dmarc.d1.example.org"] = {"TXT": ["v=DMARC1; p=reject"]}
                return message, zone
    raise AssertionError("vector missing")


def test_trusted_arc_sealer_overrides_dmarc_reject() -> None:
    """RFC 8617 §7.2.1: a passing chain sealed by a trusted ADMD (example.org)."""
    message, zone = _arc_case()
    trusted = _run(
        message, zone, settings=InboundSettings(ID, trusted_arc_sealers=("example.org",))
    )
    assert trusted.action is InboundAction.ACCEPT
    assert InboundReason.ARC_TRUSTED_SEALER in trusted.reasons
    assert trusted.evaluation.reasons[0][0] == "local_policy"  # RFC 8617 §7.2.2
    assert _methods(trusted)["arc"] == ["pass"]
    untrusted = _run(message, zone)
    assert untrusted.action is InboundAction.REJECT


def test_partial_body_signature_does_not_count_by_default() -> None:
    """RFC 6376 §8.2: content after l= is unsigned; it must not buy a DMARC pass."""
    key = rsa_key(2048)
    message = sign(_message("alice@example.com"), key, length=True) + b"Appended by anyone\r\n"
    verdict = _run(message)
    assert verdict.checks.dkim.results[0].partial_body
    assert verdict.action is InboundAction.REJECT
    assert InboundReason.DKIM_PARTIAL_BODY in verdict.reasons
    lenient = _run(message, settings=InboundSettings(ID, count_partial_body_signatures=True))
    assert lenient.action is InboundAction.ACCEPT


def test_testing_key_counts_as_unsigned() -> None:
    """RFC 6376 §3.6.1 t=y: treat like unsigned mail."""
    verdict = _run(sign(_message("alice@example.com"), rsa_key(2048), selector="test"))
    assert verdict.checks.dkim.results[0].testing
    assert verdict.action is InboundAction.REJECT


def test_message_from_a_file_skipping_our_trace_fields(tmp_path: Path) -> None:
    prefix = b"Received: from mail.sender.example by mx.hato.example; Tue, 14 Nov 2023\r\n"
    path = tmp_path / "spool"
    path.write_bytes(prefix + sign(_message("alice@example.com"), rsa_key(2048)))
    facts = InboundFacts(
        CLIENT,
        "mail.sender.example",
        "bounce@sender.example",
        message_path=path,
        offset=len(prefix),
    )
    assert _run(b"", facts=facts).action is InboundAction.ACCEPT


def test_prepare_header_replaces_forged_results() -> None:
    """RFC 8601 §5 then §4.1: forged fields with our id go, ours is prepended."""
    forged = b"Authentication-Results: mx.hato.example; dmarc=pass\r\n" + _message(
        "alice@example.com"
    )
    verdict = _run(forged)
    header = prepare_header(forged.split(b"\r\n\r\n")[0] + b"\r\n\r\n", verdict, ID)
    assert header.startswith(verdict.auth_results_header)
    assert header.count(b"Authentication-Results:") == 1
    assert b"dmarc=fail" in header


def test_evaluation_is_recorded_for_reports(tmp_path: Path) -> None:
    async def run() -> list[Any]:
        store = await open_store(tmp_path / "data", clock=FixedClock(1_700_000_000))
        try:
            verifier = InboundVerifier(
                StaticResolver(_zone()),
                InboundSettings(ID),
                clock=FixedClock(1_700_000_000),
                reports=store,
            )
            facts = InboundFacts(
                CLIENT,
                "mail.sender.example",
                "bounce@sender.example",
                _message("alice@example.com"),
                recipient_domain="hato.example",
            )
            await verifier.evaluate(facts)
            return await store.dmarc_evaluations(since=0, until=2_000_000_000)
        finally:
            await store.close()

    (row,) = asyncio.run(run())
    assert (row.policy_domain, row.header_from, row.source_ip) == (
        "example.com",
        "example.com",
        CLIENT,
    )
    assert (row.disposition, row.dkim_aligned, row.spf_aligned) == ("reject", "fail", "fail")
    assert row.spf == (("sender.example", "mfrom", "pass"),)
    assert row.envelope_to == "hato.example"
    assert row.record.startswith("v=DMARC1; p=reject")


@pytest.mark.parametrize("mail_from", ["", "bounce@sender.example"])
def test_null_sender_uses_helo_identity(mail_from: str) -> None:
    verdict = _run(
        _message("alice@relaxed.example"),
        facts=InboundFacts(
            CLIENT, "mail.sender.example", mail_from, _message("alice@relaxed.example")
        ),
    )
    spf = verdict.checks.spf_mailfrom
    assert spf.domain == ("mail.sender.example" if not mail_from else "sender.example")
    assert spf.status.value == "pass"
