"""ARC chain validation (RFC 8617 §5.2) on dkimpy, and the trusted-sealer DMARC override.

Validation: the ARC Sets are collected and checked by dkimpy's ``ARC.verify`` (structure of
§5.2 step 3, newest AMS (step 4), every AS (step 6), relaxed canonicalisation only, §4.1.3),
in a worker thread; the key records it asks for are fetched beforehand through Hato's
injected resolver and handed over by a ``dnsfunc`` that only reads the prefetched answers.
Hato adds: more than 50 sets is fail (§5.2 step 1, §4.2.1), a chain whose seals carry
``cv=fail`` is fail (§5.2 step 2 / 3.C; ``terminated`` tells it apart for the ValiMail
suite, which expects no result there), every failure — DNS errors included — is fail
(§5.2.1), the oldest-pass value (§5.2 step 5), the sealer of each set, and the originating
IP from the first set's AAR (§7.2.2). RSA keys under 1024 bits fail (RFC 8301 §3.2).

Override: ``apply_override`` lets a passing chain sealed by a configured trusted ADMD turn a
DMARC fail into disposition none (§7.2.1), with the RFC 7489 Appendix C reason
``local_policy`` and the §7.2.2 comment for the aggregate report.

Left out: ARC sealing (outbound), multiple signing algorithms per instance ([ARC-MULTI];
ed25519 seals fail), and the ``t=`` future check, which dkimpy makes against the wall clock.

Security: headers and key records are untrusted; at most ``MAX_INSTANCES`` sets (two key
lookups each) are looked at, and dkimpy never touches the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value

from hato.core.dns import DnsError, DnsTemporaryError, Resolver
from hato.mailauth.authresults import AuthResultsSyntaxError, parse_arc
from hato.mailauth.dmarc import DmarcResult, DmarcStatus, Policy

__all__ = [
    "MAX_INSTANCES",
    "ArcOverride",
    "ArcResult",
    "ArcSeal",
    "ArcStatus",
    "apply_override",
    "verify",
]

MAX_INSTANCES = 50  # RFC 8617 §4.2.1 / §5.2 step 1
MIN_RSA_BITS = 1024  # RFC 8301 §3.2 (RFC 8617 §5.2 imports RFC 6376 verification)


class ArcStatus(StrEnum):
    """RFC 8617 §4.4 chain validation status, the RFC 8601 "arc" tokens (§10.1)."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class ArcSeal:
    """One ARC Set as validated: its sealer (AS d=/s=), the cv it claims and what verified."""

    instance: int
    domain: str
    selector: str
    cv: str
    seal_valid: bool
    signature_valid: bool  # the AMS of this instance


@dataclass(frozen=True)
class ArcResult:
    """The chain validation outcome; ``seals`` newest first."""

    status: ArcStatus
    instances: int = 0  # N, the highest instance
    oldest_pass: int | None = None  # RFC 8617 §5.2 step 5 (pass only): 0 when all AMS pass
    seals: tuple[ArcSeal, ...] = ()
    remote_ip: str | None = None  # smtp.remote-ip / client IP in the AAR of i=1 (§7.2.2)
    terminated: bool = False  # a seal said cv=fail: the chain ended upstream (§5.2 step 2)
    detail: str = ""

    @property
    def sealer(self) -> str | None:
        """The d= of the newest ARC-Seal (the ADMD that handed us the message)."""
        return self.seals[0].domain if self.seals else None

    def report_comment(self) -> str:
        """RFC 8617 §7.2.2 comment for a DMARC report reason."""
        parts = [f"arc={self.status.value}"]
        parts += [
            f"as[{s.instance}].d={s.domain} as[{s.instance}].s={s.selector}" for s in self.seals
        ]
        if self.remote_ip:
            parts.append(f"remote-ip[1]={self.remote_ip}")
        return " ".join(parts)


def _key_names(arc: Any) -> tuple[int, list[str]]:
    """N and the key record names of every AMS and AS (``s._domainkey.d``)."""
    count, headers = arc.sorted_arc_headers()
    names: list[str] = []
    for _, (name, value) in headers:
        if name.lower() not in (b"arc-seal", b"arc-message-signature"):
            continue
        try:
            tags = parse_tag_value(value)
        except (InvalidTagValueList, ValueError):
            continue
        selector, domain = tags.get(b"s"), tags.get(b"d")
        if selector and domain:
            names.append(
                f"{selector.decode('utf-8', 'replace')}._domainkey."
                f"{domain.decode('utf-8', 'replace')}".lower()
            )
    return count, list(dict.fromkeys(names))


async def _fetch(resolver: Resolver, name: str) -> str | Exception | None:
    try:
        answer = await resolver.query(name, "TXT")
    except DnsError as exc:
        return exc
    texts = answer.texts()
    return texts[0] if texts else None


def _validate(arc: Any, keys: dict[str, str | Exception | None]) -> tuple[Any, list[Any], str]:
    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        found = keys.get(text.rstrip(".").lower())
        if isinstance(found, DnsTemporaryError):
            # RFC 8617 §5.2.1: a DNS failure is permanent for ARC; dkimpy turns it into fail
            raise dkimpy.DnsTimeoutError(str(found))
        if found is None or isinstance(found, Exception):
            return None
        return found.encode("utf-8", "replace")

    return arc.verify(dnsfunc=dnsfunc)  # type: ignore[no-any-return]


def _remote_ip(aar: bytes | None) -> str | None:
    if not aar:
        return None
    try:
        _, results = parse_arc(aar.decode("utf-8", "replace"))
    except AuthResultsSyntaxError:
        return None
    for result in results.results:
        for prop in result.properties:
            if prop.ptype == "smtp" and prop.name in ("remote-ip", "client-ip"):
                return prop.value
            if prop.ptype == "policy" and prop.name == "iprev":
                return prop.value
    return None


def _seals(data: list[dict[Any, Any]]) -> tuple[ArcSeal, ...]:
    seals = []
    for entry in data:
        if "as-domain" not in entry:
            continue
        seals.append(
            ArcSeal(
                instance=int(entry["instance"]),
                domain=entry["as-domain"].decode("utf-8", "replace").lower(),
                selector=entry["as-selector"].decode("utf-8", "replace").lower(),
                cv=entry.get("cv", b"").decode("utf-8", "replace").lower(),
                seal_valid=bool(entry.get("as-valid")),
                signature_valid=bool(entry.get("ams-valid")),
            )
        )
    return tuple(seals)


def _oldest_pass(data: list[dict[Any, Any]]) -> int:
    """RFC 8617 §5.2 step 5: from N-1 down, the instance above the first failing AMS."""
    for entry in data[1:]:
        if not entry.get("ams-valid"):
            return int(entry["instance"]) + 1
    return 0


def _parse(message: bytes) -> tuple[Any, int, list[str]]:
    arc = dkimpy.ARC(message, minkey=MIN_RSA_BITS)
    count, names = _key_names(arc)
    return arc, count, names


async def verify(message: bytes, *, resolver: Resolver) -> ArcResult:
    """Validate the ARC chain of ``message`` (header and body, CRLF or LF lines)."""
    try:
        arc, count, names = await asyncio.to_thread(_parse, message)
    except Exception as exc:  # RFC 8617 §5.2.1: any error validating the chain is fail
        return ArcResult(ArcStatus.FAIL, detail=f"malformed message: {str(exc)[:120]}")
    if count == 0:
        return ArcResult(ArcStatus.NONE)  # RFC 8617 §5.2 step 1: no ARC Sets
    if count > MAX_INSTANCES:  # RFC 8617 §5.2 step 1: more than 50 sets
        return ArcResult(ArcStatus.FAIL, count, detail=f"more than {MAX_INSTANCES} ARC Sets")
    fetched = await asyncio.gather(*(_fetch(resolver, n) for n in names))
    keys = dict(zip(names, fetched, strict=True))
    try:
        cv, data, reason = await asyncio.to_thread(_validate, arc, keys)
    except Exception as exc:  # dkimpy on hostile input; RFC 8617 §5.2.1: fail
        return ArcResult(ArcStatus.FAIL, count, detail=f"{type(exc).__name__}: {str(exc)[:120]}")
    seals = _seals(data)
    remote_ip = (
        _remote_ip(data[-1].get("aar-value")) if data and data[-1].get("instance") == 1 else None
    )
    if cv == dkimpy.CV_Pass:
        return ArcResult(ArcStatus.PASS, count, _oldest_pass(data), seals, remote_ip, detail=reason)
    if cv == dkimpy.CV_None:
        return ArcResult(ArcStatus.NONE, count, detail=reason)
    # dkimpy answers None when a seal carries cv=fail: RFC 8617 §5.2 step 2 / 3.C says fail
    return ArcResult(
        ArcStatus.FAIL, count, None, seals, remote_ip, terminated=cv is None, detail=reason
    )


@dataclass(frozen=True)
class ArcOverride:
    """The DMARC disposition after the local ARC rule, with the RFC 7489 Appendix C reason."""

    disposition: Policy
    overridden: bool
    reason: str | None = None  # PolicyOverrideType: "local_policy" when ARC decided
    comment: str = ""


def _trusted(sealer: str | None, trusted: Collection[str]) -> bool:
    if not sealer:
        return False
    sealer = sealer.rstrip(".").lower()
    for entry in trusted:
        entry = entry.strip().rstrip(".").lower()
        if entry and (sealer == entry or sealer.endswith("." + entry)):
            return True
    return False


def apply_override(dmarc: DmarcResult, arc: ArcResult, trusted: Collection[str]) -> ArcOverride:
    """RFC 8617 §7.2.1: a DMARC fail is overridden when the chain passes and the newest seal
    comes from a trusted ADMD (``trusted`` lists domains; subdomains match)."""
    disposition = dmarc.disposition
    if dmarc.status is not DmarcStatus.FAIL or disposition is Policy.NONE:
        return ArcOverride(disposition, overridden=False)
    if arc.status is not ArcStatus.PASS or not _trusted(arc.sealer, trusted):
        return ArcOverride(disposition, overridden=False)
    # RFC 8617 §7.2.2: report the influence as local_policy with the chain's details
    return ArcOverride(
        Policy.NONE, overridden=True, reason="local_policy", comment=arc.report_comment()
    )
