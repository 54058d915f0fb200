"""DKIM verification (RFC 6376 with RFC 8301 and RFC 8463) on dkimpy, behind Hato's resolver.

Implements the verifier actions of RFC 6376 §6.1: every DKIM-Signature is checked on its own
(§6.1, up to ``MAX_SIGNATURES``) and gets its own result with the RFC 8601 §2.7.1 token.
Hato does the tag validation (§3.5, §6.1.1: required tags, ``v=1``, ``i=`` within ``d=``,
``h=`` covers From, ``q=dns/txt``, ``x=`` expiry against the injected clock) and the key
record checks (§3.6.1, §6.1.2: ``v=DKIM1`` first, ``h=`` hash list, ``k=`` against ``a=``,
``s=`` service type, empty ``p=`` revoked, ``t=s`` strict identity, ``t=y`` testing); the key
record is fetched through the injected async resolver. dkimpy (``DomainSigner.verify_sig_process``)
does the canonicalisation (§3.4), hashing and RSA / Ed25519 signature check (§3.7, §6.1.3),
in a worker thread (``asyncio.to_thread``), never on the event loop.

RFC 8301: rsa-sha1 signatures and RSA keys under 1024 bits are permerror (§3.1, §3.2);
RSA keys above 8192 bits are refused too (CPU bound; §3.2 only requires up to 4096).
RFC 8463: ed25519-sha256 with ``k=ed25519`` keys (pynacl).

Body length (``l=``, RFC 6376 §3.5, §8.2): a signature whose ``l=`` is longer than the
canonical body is permerror (§3.5 "MUST NOT be larger"); one that covers less than the body
verifies normally, but ``unsigned_octets`` counts the trailing octets nobody signed.
``hato.policy.inbound`` does not let such a signature count for DMARC by default (an attacker
can append anything after the signed part); the A-R header still reports the pass.

Left out: DKIM signing (outbound), the obsolete ``g=`` key tag (RFC 4871, removed by
RFC 6376), DomainKeys (RFC 4870; ``DomainKey-Signature`` fields are not DKIM: result none),
caching of key records, and ``t=`` in the future (RFC 6376 §3.5 says "MAY ignore": accepted).

Security: the message, the signature fields and the key records are untrusted; every tag is
validated before use, at most ``MAX_SIGNATURES`` signatures are checked per message (§8.4),
key sizes are bounded, and dkimpy never does its own DNS lookups (its ``dnsfunc`` is unused).
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from hato.core.clock import Clock, SystemClock
from hato.core.dns import DnsError, DnsTemporaryError, Resolver

__all__ = [
    "MAX_SIGNATURES",
    "DkimResult",
    "DkimStatus",
    "DkimVerification",
    "verify",
]

MAX_SIGNATURES = 8  # RFC 6376 §6.1: a Verifier MAY limit the number of signatures it tries
MIN_RSA_BITS = 1024  # RFC 8301 §3.2
MAX_RSA_BITS = 8192  # RFC 8301 §3.2: MUST handle 1024-4096, MAY larger; bounded for CPU
_ALGORITHMS = {"rsa-sha256": ("rsa", "sha256"), "ed25519-sha256": ("ed25519", "sha256")}
_REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")  # RFC 6376 §3.5 / §6.1.1
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DIGITS = re.compile(r"[0-9]{1,76}")  # RFC 6376 §3.5 l=: at most 76 decimal digits
_LABEL = r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?|[^\x00-\x7f]+)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")  # RFC 6376 §3.5 d= / s= (RFC 8616 UTF-8)


class DkimStatus(StrEnum):
    """RFC 8601 §2.7.1 dkim result tokens."""

    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    NONE = "none"


@dataclass(frozen=True)
class DkimResult:
    """The outcome for one DKIM-Signature header field."""

    status: DkimStatus
    domain: str = ""  # d= (SDID), lower-case; RFC 8601 header.d
    selector: str = ""  # s=; RFC 8601 header.s
    b: str = ""  # the first 8 characters of b= (RFC 6008 header.b)
    algorithm: str = ""  # a=; RFC 8601 header.a
    identity: str = ""  # i= (AUID) after dkim-quoted-printable decoding; RFC 8601 header.i
    key_bits: int | None = None
    body_length: int | None = None  # l= when present
    unsigned_octets: int = 0  # canonical body octets after l= that the signature leaves out
    testing: bool = False  # the key has t=y (RFC 6376 §3.6.1)
    detail: str = ""  # for logs: why this result

    @property
    def partial_body(self) -> bool:
        """True when l= leaves part of the body unsigned (RFC 6376 §8.2)."""
        return self.unsigned_octets > 0


# Message-level order: a pass anywhere wins (RFC 6376 §6.1: bad signatures beside a good
# one are ignored); then the results that say most about the message.
_RANK = {
    DkimStatus.PASS: 0,
    DkimStatus.TEMPERROR: 1,
    DkimStatus.FAIL: 2,
    DkimStatus.POLICY: 3,
    DkimStatus.NEUTRAL: 4,
    DkimStatus.PERMERROR: 5,
    DkimStatus.NONE: 6,
}


@dataclass(frozen=True)
class DkimVerification:
    """Every signature's result, in header order (top first)."""

    results: tuple[DkimResult, ...] = ()

    @property
    def status(self) -> DkimStatus:
        """The message-level token: none when unsigned, pass when any signature passes."""
        if not self.results:
            return DkimStatus.NONE
        return min((r.status for r in self.results), key=_RANK.__getitem__)

    def passing(self) -> list[DkimResult]:
        return [r for r in self.results if r.status is DkimStatus.PASS]


@dataclass
class _Candidate:
    """One signature on its way through the checks."""

    index: int  # position among the DKIM-Signature fields
    header: tuple[bytes, bytes]
    result: DkimResult
    tags: dict[bytes, bytes] = field(default_factory=dict)
    key_name: str = ""
    key: Any = None  # dkimpy key object once the record was accepted
    key_type: bytes = b""
    done: bool = False  # result is final (an error before the crypto step)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _unfold(value: bytes) -> bytes:
    return re.sub(rb"\s+", b"", value)


def _decode_qp(value: str) -> str:
    """RFC 6376 §2.11 dkim-quoted-printable: =XX hex octets, whitespace ignored."""
    raw = re.sub(r"[ \t\r\n]", "", value).encode("utf-8", errors="replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"=" and re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", errors="replace")


def _header_b(tags: dict[bytes, bytes]) -> str:
    return _text(_unfold(tags.get(b"b", b"")))[:8]  # RFC 6008 §4: at least 8 characters


def _fail(candidate: _Candidate, status: DkimStatus, detail: str) -> None:
    candidate.result = replace(candidate.result, status=status, detail=detail)
    candidate.done = True


def _check_signature(candidate: _Candidate, *, now: float) -> None:
    """RFC 6376 §3.5 / §6.1.1: validate the tags; a problem is permerror."""
    try:
        tags = parse_tag_value(candidate.header[1])
    except (InvalidTagValueList, ValueError) as exc:
        _fail(candidate, DkimStatus.PERMERROR, f"signature syntax error: {exc}")  # §6.1.1
        return
    candidate.tags = tags
    d_raw = tags.get(b"d", b"").strip()
    domain = _text(d_raw).lower()
    selector = _text(tags.get(b"s", b"").strip()).lower()
    candidate.result = replace(
        candidate.result,
        domain=domain,
        selector=selector,
        b=_header_b(tags),
        algorithm=_text(tags.get(b"a", b"")).lower(),
    )
    missing = [name for name in _REQUIRED if name.encode() not in tags]
    if missing:  # RFC 6376 §6.1.1: signature missing required tag
        _fail(candidate, DkimStatus.PERMERROR, f"missing required tag {missing[0]}=")
        return
    if tags[b"v"].strip() != b"1":  # RFC 6376 §6.1.1: incompatible version
        _fail(candidate, DkimStatus.PERMERROR, "incompatible version")
        return
    algorithm = candidate.result.algorithm
    if algorithm == "rsa-sha1":  # RFC 8301 §3.1: rsa-sha1 MUST NOT be used for verifying
        _fail(candidate, DkimStatus.PERMERROR, "rsa-sha1 is historic (RFC 8301)")
        return
    if algorithm not in _ALGORITHMS:  # RFC 6376 §3.5 a=: unknown algorithm
        _fail(candidate, DkimStatus.PERMERROR, f"unsupported algorithm {algorithm!r}")
        return
    for name in (b"b", b"bh"):
        value = _text(_unfold(tags[name]))
        if not value or not _BASE64.fullmatch(value) or len(value) % 4:
            _fail(candidate, DkimStatus.PERMERROR, f"{name.decode()}= is not base64")
            return
    try:
        CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple").strip())
    except InvalidCanonicalizationPolicyError:  # RFC 6376 §3.5 c=
        _fail(candidate, DkimStatus.PERMERROR, "unsupported canonicalization")
        return
    if not domain or not _DOMAIN.fullmatch(domain):
        _fail(candidate, DkimStatus.PERMERROR, "malformed d=")
        return
    if not selector or not _DOMAIN.fullmatch(selector):
        _fail(candidate, DkimStatus.PERMERROR, "malformed s=")
        return
    identity = _decode_qp(_text(tags[b"i"])) if b"i" in tags else f"@{domain}"  # §6.1.1
    candidate.result = replace(candidate.result, identity=identity)
    _, at, auid_domain = identity.rpartition("@")
    auid_domain = auid_domain.lower()
    if not at or not (auid_domain == domain or auid_domain.endswith("." + domain)):
        _fail(candidate, DkimStatus.PERMERROR, "i= is not within d= (domain mismatch)")  # §6.1.1
        return
    signed = [h.strip().lower() for h in _text(tags[b"h"]).split(":")]
    if "from" not in signed:  # RFC 6376 §6.1.1: From field not signed
        _fail(candidate, DkimStatus.PERMERROR, "From field not signed")
        return
    if b"q" in tags:
        methods = [m.strip().lower() for m in _text(tags[b"q"]).split(":")]
        if "dns/txt" not in methods:  # RFC 6376 §3.5 q=: dns/txt is the only method
            _fail(candidate, DkimStatus.PERMERROR, "unsupported query method")
            return
    if b"l" in tags:
        if not _DIGITS.fullmatch(tags[b"l"].strip().decode("ascii", "replace")):
            _fail(candidate, DkimStatus.PERMERROR, "malformed l=")  # RFC 6376 §3.5 l=
            return
        candidate.result = replace(candidate.result, body_length=int(tags[b"l"].strip()))
    times: dict[str, int] = {}
    for tag in ("t", "x"):
        raw = tags.get(tag.encode())
        if raw is None:
            continue
        text = raw.strip().decode("ascii", "replace")
        if not text.isdigit() or not text.isascii():  # RFC 6376 §3.5 1*12DIGIT
            _fail(candidate, DkimStatus.PERMERROR, f"malformed {tag}=")
            return
        if len(text) <= 12:  # RFC 6376 §3.5: longer values MAY be taken as infinite
            times[tag] = int(text)
    if "x" in times and "t" in times and times["x"] <= times["t"]:
        _fail(candidate, DkimStatus.PERMERROR, "x= is not after t=")  # RFC 6376 §3.5 x=
        return
    if "x" in times and times["x"] < now:  # RFC 6376 §6.1.1: signature expired
        _fail(candidate, DkimStatus.PERMERROR, "signature expired")
        return
    candidate.key_name = f"{selector}._domainkey.{domain}"  # RFC 6376 §3.6.2.1


def _check_key(candidate: _Candidate, record: str) -> str | None:
    """RFC 6376 §3.6.1 / §6.1.2 on one TXT record: None when accepted, else why not."""
    try:
        tags = parse_tag_value(record.encode("utf-8", errors="replace"))
    except (InvalidTagValueList, ValueError):
        return "key syntax error"  # RFC 6376 §6.1.2 step 5
    if b"v" in tags and (next(iter(tags)) != b"v" or tags[b"v"] != b"DKIM1"):
        return "key version not DKIM1"  # RFC 6376 §3.6.1 v=: first, exactly "DKIM1"
    if b"p" not in tags:
        return "key syntax error (no p=)"  # RFC 6376 §3.6.1 p= REQUIRED
    if not _unfold(tags[b"p"]):
        return "key revoked"  # RFC 6376 §6.1.2 step 7
    key_type, hash_name = _ALGORITHMS[candidate.result.algorithm]
    if b"h" in tags:
        hashes = [h.strip().lower() for h in _text(tags[b"h"]).split(":")]
        if hash_name not in hashes:
            return "inappropriate hash algorithm"  # RFC 6376 §6.1.2 step 6
    services = [s.strip().lower() for s in _text(tags.get(b"s", b"*")).split(":")]
    if "*" not in services and "email" not in services:
        return "key not for email"  # RFC 6376 §3.6.1 s=: MUST ignore this record
    k = _text(tags.get(b"k", b"rsa")).strip().lower()
    if k != key_type:
        return "inappropriate key algorithm"  # RFC 6376 §6.1.2 step 8
    flags = [f.strip().lower() for f in _text(tags.get(b"t", b"")).split(":")]
    auid_domain = candidate.result.identity.rpartition("@")[2].lower()
    if "s" in flags and auid_domain != candidate.result.domain:
        return "key requires i= domain equal to d= (t=s)"  # RFC 6376 §3.6.1 t=s
    # dkimpy's key parser knows one s= value only: hand it the tags it needs (s= checked above)
    essential = b"; ".join(b"%s=%s" % (n, tags[n]) for n in (b"v", b"k", b"p") if n in tags)
    try:
        key, bits, ktag, _ = dkimpy.evaluate_pk(candidate.key_name.encode(), essential)
    except (dkimpy.DKIMException, binascii.Error, ValueError, TypeError, KeyError) as exc:
        return f"key syntax error ({type(exc).__name__})"  # RFC 6376 §6.1.2 step 5
    if key is None:
        return "key syntax error"
    if ktag == b"rsa" and bits < MIN_RSA_BITS:  # RFC 8301 §3.2
        return f"RSA key of {bits} bits is under {MIN_RSA_BITS} (RFC 8301)"
    if ktag == b"rsa" and bits > MAX_RSA_BITS:
        return f"RSA key of {bits} bits is over {MAX_RSA_BITS}"
    candidate.key, candidate.key_type = key, ktag
    candidate.result = replace(candidate.result, key_bits=bits, testing="y" in flags)
    return None


async def _fetch_key(resolver: Resolver, candidate: _Candidate) -> None:
    """RFC 6376 §6.1.2: look up and select the key record for one signature."""
    try:
        answer = await resolver.query(candidate.key_name, "TXT")
    except DnsTemporaryError as exc:  # RFC 6376 §6.1.2 step 2: TEMPFAIL (key unavailable)
        _fail(candidate, DkimStatus.TEMPERROR, f"key unavailable: {exc}")
        return
    except DnsError as exc:
        _fail(candidate, DkimStatus.PERMERROR, f"key lookup failed: {exc}")
        return
    records = answer.texts()
    if not records:  # RFC 6376 §6.1.2 step 3: PERMFAIL (no key for signature)
        _fail(candidate, DkimStatus.PERMERROR, "no key for signature")
        return
    first_error = ""
    for record in records:  # RFC 6376 §6.1.2 step 4: cycle through several records
        error = _check_key(candidate, record)
        if error is None:
            return
        first_error = first_error or error
    _fail(candidate, DkimStatus.PERMERROR, first_error)


def _prepare(message: bytes, now: float) -> tuple[list[list[bytes]], bytes, list[_Candidate]]:
    headers, body = dkimpy.rfc822_parse(message)
    fields = [(h[0], h[1]) for h in headers if h[0].lower() == b"dkim-signature"]
    candidates = []
    for index, header in enumerate(fields):
        candidate = _Candidate(index, header, DkimResult(DkimStatus.PERMERROR))
        if index >= MAX_SIGNATURES:
            _fail(candidate, DkimStatus.POLICY, f"over the limit of {MAX_SIGNATURES} signatures")
        else:
            _check_signature(candidate, now=now)
        candidates.append(candidate)
    return headers, body, candidates


def _compute(headers: list[list[bytes]], body: bytes, candidates: Sequence[_Candidate]) -> None:
    """RFC 6376 §6.1.3 for every signature that has its key (blocking: runs in a thread)."""
    verifier = dkimpy.DKIM(minkey=MIN_RSA_BITS)
    verifier.headers, verifier.body = headers, body
    for candidate in candidates:
        if candidate.done:
            continue
        tags = dict(candidate.tags)
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple").strip())
        length = candidate.result.body_length
        if length is not None:
            canonical = len(policy.canonicalize_body(body))
            if length > canonical:  # RFC 6376 §3.5 l=: MUST NOT exceed the canonical body
                _fail(candidate, DkimStatus.PERMERROR, "l= is longer than the body")
                continue
            candidate.result = replace(candidate.result, unsigned_octets=canonical - length)
        signed = [h.strip().lower() for h in re.split(rb"\s*:\s*", tags[b"h"].strip())]
        verifier.pk, verifier.keysize = candidate.key, candidate.result.key_bits or 0
        verifier.ktag, verifier.seqtlsrpt = candidate.key_type, False
        try:
            valid = verifier.verify_sig_process(tags, signed, candidate.header, None)
        except dkimpy.ValidationError as exc:  # body hash mismatch: §6.1.3 step 3
            _fail(candidate, DkimStatus.FAIL, str(exc)[:120])
            continue
        except Exception as exc:  # malformed input dkimpy chokes on: never a crash
            _fail(candidate, DkimStatus.PERMERROR, f"{type(exc).__name__}: {str(exc)[:120]}")
            continue
        if valid:
            candidate.result = replace(candidate.result, status=DkimStatus.PASS, detail="")
        else:  # RFC 6376 §6.1.3 step 4: signature did not verify
            _fail(candidate, DkimStatus.FAIL, "signature did not verify")


async def verify(
    message: bytes, *, resolver: Resolver, clock: Clock | None = None
) -> DkimVerification:
    """Verify every DKIM-Signature of ``message`` (header and body, CRLF or LF lines)."""
    now = (clock or SystemClock()).now()
    try:
        headers, body, candidates = await asyncio.to_thread(_prepare, message, now)
    except (dkimpy.DKIMException, ValueError, IndexError) as exc:  # unparsable header block
        return DkimVerification((DkimResult(DkimStatus.PERMERROR, detail=str(exc)[:120]),))
    await asyncio.gather(
        *(_fetch_key(resolver, c) for c in candidates if not c.done and c.key_name)
    )
    if any(not c.done for c in candidates):
        await asyncio.to_thread(_compute, headers, body, candidates)
    return DkimVerification(tuple(c.result for c in candidates))
