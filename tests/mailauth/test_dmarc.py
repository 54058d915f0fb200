"""DMARC unit tests beyond the vectors: t/pct, np/sp, PSD walk, temperror, fuzzing."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.core.dns import SERVFAIL, StaticResolver
from hato.mailauth.dmarc import (
    DmarcRecord,
    DmarcRecordError,
    DmarcStatus,
    Identifier,
    Policy,
    parse_record,
    verify,
    verify_authors,
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def resolver(records: dict[str, str], **extra: Any) -> StaticResolver:
    zone: dict[str, Any] = {f"_dmarc.{name}": {"TXT": [text]} for name, text in records.items()}
    zone.update(extra)
    return StaticResolver(zone)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=150))
def test_fuzz_record_parser(text: str) -> None:
    for candidate in (text, "v=DMARC1; " + text, "v=DMARC1; p=none; " + text):
        try:
            record = parse_record(candidate)
        except DmarcRecordError as exc:  # the permerror / not-a-record outcome
            assert exc.kind in ("not-dmarc", "syntax", "no-policy")
            continue
        assert isinstance(record, DmarcRecord)


_TAG = st.sampled_from(
    [
        "p=reject",
        "p=none",
        "sp=quarantine",
        "np=reject",
        "adkim=s",
        "aspf=x",
        "pct=50",
        "t=y",
        "psd=y",
        "rua=mailto:a@b.example!10m",
        "ruf=bogus",
        "fo=1:d",
        "ri=",
        "x=y",
        "p",
        "=",
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TAG, max_size=8))
def test_fuzz_record_parser_structured(tags: list[str]) -> None:
    try:
        parse_record("v=DMARC1;" + ";".join(tags))
    except DmarcRecordError as exc:
        assert exc.kind in ("syntax", "no-policy")


def test_invalid_values_fall_back_to_defaults() -> None:
    record = parse_record("v=DMARC1; p=Reject; adkim=x; pct=101; t=maybe; psd=q; fo=9")
    assert (record.policy, record.adkim, record.pct, record.testing, record.psd, record.fo) == (
        Policy.REJECT,
        "r",
        100,
        False,
        "u",
        ("0",),
    )  # DMARCbis §4.8: syntax errors in the remainder fall back to defaults


def test_malformed_tag_list_is_a_syntax_error() -> None:
    for text in (
        "v=DMARC1; p=none; bogus",
        "v=DMARC1; p=none;; sp=none",
        "v=DMARC1; p=none; p=none",
    ):
        with pytest.raises(DmarcRecordError) as info:
            parse_record(text)
        assert info.value.kind == "syntax"  # RFC 6376 §3.2 tag-list


def test_testing_flag_lowers_the_policy() -> None:
    res = resolver({"example.com": "v=DMARC1; p=reject; t=y"})
    result = run(verify(res, "example.com"))
    assert result.status is DmarcStatus.FAIL and result.reject
    assert not result.applied
    assert result.disposition is Policy.QUARANTINE  # DMARCbis §4.7 t=y: one level below


@pytest.mark.parametrize(("seed_value", "applied"), [(0.10, True), (0.60, False)])
def test_pct_sampling_uses_the_injected_random(seed_value: float, applied: bool) -> None:
    class Fixed(random.Random):
        def random(self) -> float:
            return seed_value

    res = resolver({"example.com": "v=DMARC1; p=quarantine; pct=50"})
    result = run(verify(res, "example.com", rng=Fixed()))
    assert result.applied is applied  # RFC 7489 §6.6.4
    assert result.disposition is (Policy.QUARANTINE if applied else Policy.NONE)


def test_pass_by_aligned_dkim_and_spf_modes() -> None:
    res = resolver({"example.com": "v=DMARC1; p=reject; aspf=s"})
    spf = Identifier("pass", "bounce.example.com")
    result = run(verify(res, "example.com", spf=spf))
    assert result.status is DmarcStatus.FAIL and result.spf_alignment == "fail"  # strict
    dkim = [Identifier("fail", "example.com"), Identifier("pass", "mail.example.com")]
    result = run(verify(res, "example.com", spf=spf, dkim=dkim))
    assert result.status is DmarcStatus.PASS
    assert result.aligned_dkim_domain == "mail.example.com"


def test_np_needs_a_nonexistent_domain() -> None:
    res = resolver(
        {"example.com": "v=DMARC1; p=none; sp=quarantine; np=reject"},
        **{"real.example.com": {"MX": []}, "deep.real.example.com": {"A": ["192.0.2.1"]}},
    )
    assert run(verify(res, "ghost.example.com")).policy is Policy.REJECT
    # An empty non-terminal exists (NOERROR/NODATA, DMARCbis §A.4): sp applies.
    assert run(verify(res, "real.example.com")).policy is Policy.QUARANTINE
    assert run(verify(res, "example.com")).policy is Policy.NONE


def test_psd_record_applies_below_a_public_suffix_domain() -> None:
    res = resolver(
        {"bank.example": "v=DMARC1; p=reject; psd=y; np=quarantine"},
        **{"giant.bank.example": {"A": ["192.0.2.1"]}},
    )
    result = run(verify(res, "giant.bank.example"))
    assert (result.policy_domain, result.organizational_domain) == (
        "bank.example",
        "giant.bank.example",
    )
    assert result.policy is Policy.REJECT and result.status is DmarcStatus.FAIL
    assert run(verify(res, "tiny.bank.example")).policy is Policy.QUARANTINE


def test_public_suffix_record_without_psd_does_not_join_organizations() -> None:
    # Under DMARCbis §4.10.2 step 3 alone, both would take "com" (fewest labels) as their
    # organizational domain and align; a public suffix never is one without psd=y.
    res = resolver({"com": "v=DMARC1; p=reject", "example.com": "v=DMARC1; p=reject"})
    spf = Identifier("pass", "evil.com")
    result = run(verify(res, "example.com", spf=spf))
    assert result.organizational_domain == "example.com"
    assert (result.spf_alignment, result.status) == ("fail", DmarcStatus.FAIL)


def test_dns_errors_give_temperror() -> None:
    res = StaticResolver({"_dmarc.example.com": {"TXT": SERVFAIL}})
    result = run(verify(res, "example.com"))
    assert (result.status, result.error) == (DmarcStatus.TEMPERROR, "dns")


def test_several_author_domains_keep_the_most_severe() -> None:
    res = resolver({"a.example": "v=DMARC1; p=none", "b.example": "v=DMARC1; p=quarantine"})
    dkim = [Identifier("pass", "a.example")]
    result = run(verify_authors(res, ["a.example", "b.example"], dkim=dkim))
    assert (result.author_domain, result.status, result.policy) == (
        "b.example",
        DmarcStatus.FAIL,
        Policy.QUARANTINE,
    )
    none = run(verify_authors(res, []))
    assert (none.status, none.error) == (DmarcStatus.PERMERROR, "no-author-domain")
