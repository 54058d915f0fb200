"""Authentication-Results method results (RFC 8601 §2.7) from Hato's verification results.

One builder per method, each with the properties its registration defines: spf with
``smtp.mailfrom`` or ``smtp.helo`` (RFC 8601 §2.7.2; the domain only, as the local-part is
not authenticated), dkim with ``header.d``, ``header.s``, ``header.b`` (RFC 8601 §2.7.1,
§6.3.2; RFC 6008 header.b), dmarc with ``header.from`` (RFC 7489 §11.2) and
``policy.dmarc`` (DMARCbis §9.1), arc with ``smtp.remote-ip`` and ``header.oldest-pass``
(RFC 8617 §6, §10.2) and iprev with ``policy.iprev`` (RFC 8601 §2.7.3).

Left out: the auth method (the submission path writes its own Received line instead).
"""

from __future__ import annotations

from hato.mailauth.arc import ArcResult, ArcStatus
from hato.mailauth.authresults import MethodResult, Property
from hato.mailauth.dkim import DkimResult
from hato.mailauth.dmarc import DmarcResult
from hato.mailauth.iprev import IprevResult
from hato.mailauth.spf import SpfResult

__all__ = ["arc_result", "dkim_result", "dmarc_result", "iprev_result", "spf_result"]


def spf_result(result: SpfResult) -> MethodResult:
    """RFC 8601 §2.7.2: only the identity that produced the result is reported."""
    name = "helo" if result.identity == "helo" else "mailfrom"
    value = result.domain
    return MethodResult("spf", result.status.value, properties=(Property("smtp", name, value),))


def dkim_result(result: DkimResult) -> MethodResult:
    """RFC 8601 §2.7.1 with RFC 6008 header.b; the comment carries key size and l= notes."""
    notes = []
    if result.key_bits:
        notes.append(f"{result.key_bits}-bit key")
    if result.partial_body:
        notes.append(f"{result.unsigned_octets} unsigned body octets")
    if result.testing:
        notes.append("testing key")
    props = []
    if result.domain:
        props.append(Property("header", "d", result.domain))
    if result.selector:
        props.append(Property("header", "s", result.selector))
    if result.b:
        props.append(Property("header", "b", result.b))
    return MethodResult(
        "dkim",
        result.status.value,
        properties=tuple(props),
        comment="; ".join(notes) or None,
    )


def dmarc_result(result: DmarcResult) -> MethodResult:
    """RFC 7489 §11.2 header.from, DMARCbis §9.1 policy.dmarc (the evaluated policy)."""
    props = []
    if result.author_domain:
        props.append(Property("header", "from", result.author_domain))
    comment = None
    if result.policy is not None:
        props.append(Property("policy", "dmarc", result.disposition.value))
        comment = f"p={result.policy.value} dis={result.disposition.value}"
    return MethodResult("dmarc", result.status.value, properties=tuple(props), comment=comment)


def arc_result(result: ArcResult, *, remote_ip: str | None = None) -> MethodResult:
    """RFC 8617 §6: smtp.remote-ip (our client) and header.oldest-pass (on pass)."""
    props = []
    if remote_ip:
        props.append(Property("smtp", "remote-ip", remote_ip))
    if result.status is ArcStatus.PASS and result.oldest_pass is not None:
        props.append(Property("header", "oldest-pass", str(result.oldest_pass)))
    comment = f"i={result.instances}" if result.instances else None
    return MethodResult("arc", result.status.value, properties=tuple(props), comment=comment)


def iprev_result(result: IprevResult) -> MethodResult:
    """RFC 8601 §2.7.3: ptype policy, property iprev; the confirmed name as a comment."""
    return MethodResult(
        "iprev",
        result.status.value,
        properties=(Property("policy", "iprev", result.ip),),
        comment=result.name,
    )
