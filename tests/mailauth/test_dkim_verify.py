"""DKIM verification rules on messages signed here (RFC 6376, RFC 8301, RFC 8463)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from mailauth_kit import MESSAGE, ed_key, key_zone, rsa_key, sign

from dnsserver import DnsServer
from hato.core.dns import SERVFAIL, TIMEOUT, StaticResolver
from hato.mailauth import dkim
from hato.mailauth.dkim import MAX_SIGNATURES, DkimStatus
from hato.mailauth.resolver import DnsPythonResolver

KEY_NAME = "sel._domainkey.example.com"


def _verify(message: bytes, zone: dict[str, object]) -> dkim.DkimVerification:
    return asyncio.run(dkim.verify(message, resolver=StaticResolver(zone)))  # type: ignore[arg-type]


def _one(message: bytes, record: str) -> dkim.DkimResult:
    result = _verify(message, key_zone(KEY_NAME, record))
    assert len(result.results) == 1
    return result.results[0]


def test_rsa_sha256_passes_with_reported_fields() -> None:
    key = rsa_key(2048)
    signed = sign(MESSAGE, key)
    result = _one(signed, key.record())
    assert result.status is DkimStatus.PASS
    assert (result.domain, result.selector, result.algorithm) == (
        "example.com",
        "sel",
        "rsa-sha256",
    )
    assert result.key_bits == 2048
    b_value = signed.split(b"b=")[-1].split(b";")[0]
    assert result.b == b"".join(b_value.split()).decode()[:8]  # RFC 6008 header.b
    assert result.identity == "@example.com"  # RFC 6376 §6.1.1 default i=


def test_ed25519_passes() -> None:
    """RFC 8463 §3: ed25519-sha256 with a k=ed25519 key record."""
    key = ed_key()
    result = _one(sign(MESSAGE, key), key.record())
    assert result.status is DkimStatus.PASS
    assert result.key_bits == 256


def test_no_signature_is_none() -> None:
    assert _verify(MESSAGE, {}).status is DkimStatus.NONE


def test_body_change_fails() -> None:
    """RFC 6376 §6.1.3 step 3: body hash did not verify → fail."""
    key = rsa_key(2048)
    tampered = sign(MESSAGE, key).replace(b"noon", b"one")
    result = _one(tampered, key.record())
    assert result.status is DkimStatus.FAIL
    assert "body hash" in result.detail


def test_header_change_fails() -> None:
    """RFC 6376 §6.1.3 step 4: signature did not verify → fail."""
    key = rsa_key(2048)
    tampered = sign(MESSAGE, key).replace(b"Subject: lunch", b"Subject: dinner")
    assert _one(tampered, key.record()).status is DkimStatus.FAIL


def test_rsa_key_under_1024_bits_is_permerror() -> None:
    """RFC 8301 §3.2: signatures with RSA keys under 1024 bits are not valid."""
    key = rsa_key(768)
    result = _one(sign(MESSAGE, key), key.record())
    assert result.status is DkimStatus.PERMERROR
    assert "bits is under 1024" in result.detail


def test_1024_bit_key_is_accepted() -> None:
    key = rsa_key(1024)
    assert _one(sign(MESSAGE, key), key.record()).status is DkimStatus.PASS


def test_rsa_sha1_is_permerror_even_with_a_good_key() -> None:
    """RFC 8301 §3.1: rsa-sha1 MUST NOT be used for verifying."""
    key = rsa_key(2048)
    result = _one(sign(MESSAGE, key, algorithm="rsa-sha1"), key.record())
    assert result.status is DkimStatus.PERMERROR
    assert "rsa-sha1" in result.detail


def test_key_flag_t_s_requires_i_domain_equal_to_d() -> None:
    """RFC 6376 §3.6.1 t=s: the i= domain MUST NOT be a subdomain of d=."""
    key = rsa_key(2048)
    sub = sign(MESSAGE, key, identity="alice@mail.example.com")
    same = sign(MESSAGE, key, identity="alice@example.com")
    assert _one(sub, key.record("t=s; ")).status is DkimStatus.PERMERROR
    assert _one(same, key.record("t=s; ")).status is DkimStatus.PASS
    assert _one(sub, key.record()).status is DkimStatus.PASS  # without t=s a subdomain is fine


def test_i_outside_d_is_permerror() -> None:
    """RFC 6376 §6.1.1: d= must be the same as or a parent of the i= domain."""
    key = rsa_key(2048)
    signed = sign(MESSAGE, key, identity="alice@example.com").replace(
        b"i=alice@example.com", b"i=alice@example.org"
    )
    result = _one(signed, key.record())
    assert result.status is DkimStatus.PERMERROR
    assert "domain mismatch" in result.detail


def test_testing_flag_is_reported() -> None:
    key = rsa_key(2048)
    result = _one(sign(MESSAGE, key), key.record("t=y; "))
    assert result.status is DkimStatus.PASS
    assert result.testing


def test_body_length_shorter_than_body_passes_but_is_flagged() -> None:
    """RFC 6376 §3.5 l= / §8.2: content after l= is unsigned; we pass but count it."""
    key = rsa_key(2048)
    signed = sign(MESSAGE, key, length=True) + b"Click here: http://evil.example/\r\n"
    result = _one(signed, key.record())
    assert result.status is DkimStatus.PASS
    assert result.partial_body
    assert result.unsigned_octets == len(b"Click here: http://evil.example/\r\n")
    assert result.body_length == len(b"Shall we meet at noon?\r\n")


def test_body_length_covering_everything_is_not_flagged() -> None:
    key = rsa_key(2048)
    result = _one(sign(MESSAGE, key, length=True), key.record())
    assert result.status is DkimStatus.PASS
    assert not result.partial_body


def test_body_length_longer_than_body_is_permerror() -> None:
    """RFC 6376 §3.5 l=: MUST NOT be larger than the canonical body."""
    key = rsa_key(2048)
    signed = sign(MESSAGE, key, length=True).replace(b"Shall we meet at noon?\r\n", b"")
    result = _one(signed, key.record())
    assert result.status is DkimStatus.PERMERROR
    assert "l=" in result.detail


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ("v=DKIM1; k=rsa; p=", "key revoked"),  # RFC 6376 §6.1.2 step 7
        ("v=DKIM2; k=rsa; p=AAAA", "key version"),  # RFC 6376 §3.6.1 v=
        ("k=rsa; v=DKIM1; p=AAAA", "key version"),  # v= must come first
        ("v=DKIM1; h=sha1; p={p}", "inappropriate hash"),  # RFC 6376 §6.1.2 step 6
        ("v=DKIM1; k=ed25519; p={p}", "inappropriate key algorithm"),  # step 8
        ("v=DKIM1; s=chat; p={p}", "not for email"),  # RFC 6376 §3.6.1 s=
        ("v=DKIM1; k=rsa; t=y; x", "key syntax error"),  # §6.1.2 step 5
        ("v=DKIM1; k=rsa", "no p="),
        ("v=DKIM1; k=rsa; p=bm90IGEga2V5", "key syntax error"),
    ],
)
def test_unusable_key_records_are_permerror(record: str, detail: str) -> None:
    key = rsa_key(2048)
    result = _one(sign(MESSAGE, key), record.format(p=key.public_b64))
    assert result.status is DkimStatus.PERMERROR
    assert detail in result.detail


def test_key_with_sha256_in_h_and_email_service_passes() -> None:
    key = rsa_key(2048)
    record = key.record("h=sha1:sha256; s=email:other; t=s:future; ")
    assert _one(sign(MESSAGE, key), record).status is DkimStatus.PASS


def test_second_key_record_is_tried() -> None:
    """RFC 6376 §6.1.2 step 4: the verifier may cycle through several key records."""
    key = rsa_key(2048)
    zone = {KEY_NAME: {"TXT": ["not a key", key.record()]}}
    assert _verify(sign(MESSAGE, key), zone).status is DkimStatus.PASS


@pytest.mark.parametrize(
    ("entry", "status"),
    [
        ({"TXT": TIMEOUT}, DkimStatus.TEMPERROR),  # RFC 6376 §6.1.2 step 2
        ({"TXT": SERVFAIL}, DkimStatus.TEMPERROR),
        ({"A": ["192.0.2.1"]}, DkimStatus.PERMERROR),  # NODATA: no key (step 3)
    ],
)
def test_dns_problems(entry: dict[str, object], status: DkimStatus) -> None:
    key = rsa_key(2048)
    assert _verify(sign(MESSAGE, key), {KEY_NAME: entry}).results[0].status is status


def test_missing_key_is_permerror() -> None:
    key = rsa_key(2048)
    result = _verify(sign(MESSAGE, key), {}).results[0]
    assert result.status is DkimStatus.PERMERROR
    assert result.detail == "no key for signature"  # RFC 6376 §6.1.2 step 3


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (b"v=1;", b"v=2;", "incompatible version"),  # RFC 6376 §6.1.1
        (b"h=from", b"h=subject", "From field not signed"),  # RFC 6376 §6.1.1
        (b"a=rsa-sha256", b"a=rsa-md5", "unsupported algorithm"),
        (b"c=relaxed/relaxed", b"c=future/relaxed", "canonicalization"),
        (b"q=dns/txt", b"q=http/get", "query method"),
        (b"d=example.com", b"d=exa mple.com", "malformed d="),
        (b"s=sel;", b"s=;", "malformed s="),
    ],
)
def test_signature_tag_errors_are_permerror(old: bytes, new: bytes, detail: str) -> None:
    key = rsa_key(2048)
    signed = sign(MESSAGE, key).replace(old, new, 1)
    assert old not in signed.split(b"\r\n\r\n")[0].split(b"From:")[0]
    result = _one(signed, key.record())
    assert result.status is DkimStatus.PERMERROR
    assert detail in result.detail


def test_missing_required_tag() -> None:
    key = rsa_key(2048)
    signed = sign(MESSAGE, key)
    head, _, rest = signed.partition(b"bh=")
    _, _, after = rest.partition(b";")
    result = _one(head + after.lstrip(), key.record())
    assert result.status is DkimStatus.PERMERROR
    assert result.detail == "missing required tag bh="


def test_each_signature_has_its_own_result() -> None:
    """RFC 6376 §6.1: a good signature next to bad ones; the message passes."""
    key = rsa_key(2048)
    other = rsa_key(1024)
    signed = sign(sign(MESSAGE, key), other, domain="lists.example.org", selector="l1")
    zone = key_zone(KEY_NAME, key.record())  # no key for the lists.example.org signature
    result = _verify(signed, zone)
    assert [(r.domain, r.status) for r in result.results] == [
        ("lists.example.org", DkimStatus.PERMERROR),
        ("example.com", DkimStatus.PASS),
    ]
    assert result.status is DkimStatus.PASS
    assert [r.domain for r in result.passing()] == ["example.com"]


def test_signature_limit() -> None:
    """RFC 6376 §6.1 / §8.4: at most MAX_SIGNATURES are checked; the rest get policy."""
    key = rsa_key(1024)
    message = MESSAGE
    for _ in range(MAX_SIGNATURES + 2):
        message = sign(message, key)
    zone = key_zone(KEY_NAME, key.record())
    resolver = StaticResolver(zone)  # type: ignore[arg-type]
    result = asyncio.run(dkim.verify(message, resolver=resolver))
    statuses = [r.status for r in result.results]
    assert statuses[:MAX_SIGNATURES] == [DkimStatus.PASS] * MAX_SIGNATURES
    assert statuses[MAX_SIGNATURES:] == [DkimStatus.POLICY] * 2
    assert len(resolver.queries) == MAX_SIGNATURES


def test_malformed_header_block_is_permerror_not_a_crash() -> None:
    result = _verify(b"DKIM-Signature: v=1\r\nnot a header line\r\n\r\nbody\r\n", {})
    assert result.status is DkimStatus.PERMERROR


def test_through_the_real_resolver_and_a_loopback_dns_server() -> None:
    key = rsa_key(2048)
    zone = {KEY_NAME: {"TXT": [key.record()]}, "slow._domainkey.example.com": "TIMEOUT"}

    async def run(resolver: DnsPythonResolver) -> tuple[dkim.DkimVerification, ...]:
        good = await dkim.verify(sign(MESSAGE, key), resolver=resolver)
        slow = await dkim.verify(sign(MESSAGE, key, selector="slow"), resolver=resolver)
        return good, slow

    with DnsServer(zone) as server:
        resolver = DnsPythonResolver([server.host], port=server.port, timeout=0.5)
        good, slow = asyncio.run(run(resolver))
    assert good.status is DkimStatus.PASS
    assert slow.status is DkimStatus.TEMPERROR


def test_crypto_and_parsing_run_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """dkimpy is synchronous: its work runs in worker threads (asyncio.to_thread)."""
    seen: list[str] = []
    for name in ("_prepare", "_compute"):
        original = getattr(dkim, name)

        def spy(*args: object, _original: object = original, _name: str = name) -> object:
            seen.append(f"{_name}:{threading.current_thread() is threading.main_thread()}")
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(dkim, name, spy)
    key = rsa_key(2048)
    assert _one(sign(MESSAGE, key), key.record()).status is DkimStatus.PASS
    assert seen == ["_prepare:False", "_compute:False"]
