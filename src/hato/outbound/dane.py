"""DANE certificate checks for SMTP (sans-IO): TLSA matching, DANE-TA chains, name checks.

Implements RFC 6698 §2.1 matching (selector 0 full certificate / 1 SubjectPublicKeyInfo,
matching type 0 exact / 1 SHA-256 / 2 SHA-512) and RFC 7672 §3: DANE-EE(3) matched on the
leaf certificate alone, with neither name nor expiry check (§3.1.1, §3.2.1); DANE-TA(2)
(§3.1.2) where a certificate of the presented chain (or, for Full(0) records, the key or
certificate in the record) matching the record is the trust anchor and the server
certificate must chain to it through the presented intermediates: each link checked by
issuer name and signature (RSA PKCS#1 v1.5 / PSS, ECDSA, Ed25519, Ed448), intermediates
must be CAs (RFC 5280 §6.1.4 (k) basicConstraints, (n) keyUsage keyCertSign, (l)/(m) path
length), name constraints of the CAs (RFC 5280 §4.2.1.10, ``hato.outbound.nameconstraints``),
the constraints of a Cert(0) trust anchor applied too (RFC 7672 §3.1.2: SHOULD),
certificates below the anchor within their validity period (RFC 5280 §6.1.3 (a)(2)), and the
name check of §3.2.2/§3.2.3 (DNS-IDs only when the certificate has any, else the CN-ID; a
wildcard only as the whole left-most label, matching exactly one label, RFC 6125 §6.4.3).

Leaves out: PKIX-TA(0)/PKIX-EE(1) (RFC 7672 §3.1.3: unusable for SMTP; ``usable`` drops
them), certificate policies (RFC 5280 §6.1.3 (d)-(f): no initial policy set applies to
SMTP), revocation. Python before 3.13 has no public API for the presented chain:
``peer_chain`` reads it through the ``_ssl`` object's ``get_unverified_chain`` (present since
3.10) and falls back to the leaf alone, with which a DANE-TA chain can only be verified when
the anchor is the leaf or comes from the record.

Security: every input here is chosen by the peer (certificates) or comes from DNS (records):
parsing errors fail the check, the chain search is bounded by ``MAX_DEPTH`` and the number of
presented certificates, and any failure means the host is not used (the caller defers).
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from hato.core.dns import TlsaRecord
from hato.outbound import nameconstraints

DANE_TA = 2  # RFC 7218: DANE-TA
DANE_EE = 3  # RFC 7218: DANE-EE
MAX_DEPTH = 8  # certificates between the leaf and its trust anchor, at most
MAX_CHAIN = 16  # presented certificates looked at, at most
_ENCODING_DER = 2  # _ssl.ENCODING_DER, for the _ssl.Certificate items of Python < 3.13

# what cryptography raises for malformed certificates, now or when a field is first read
BAD_CERTIFICATE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


@dataclass(frozen=True, slots=True)
class DaneVerdict:
    """The outcome of checking a presented chain: ``failure`` is an RFC 8460 §4.3 result
    type ("tlsa-invalid", "certificate-host-mismatch", ...) when not ``ok``."""

    ok: bool
    usage: int | None = None  # the usage of the record that matched
    failure: str = ""
    reason: str = ""


_DIGEST_SIZE = {0: None, 1: 32, 2: 64}  # RFC 6698 §2.1.3: Full, SHA2-256, SHA2-512


def usable(records: Sequence[TlsaRecord]) -> tuple[TlsaRecord, ...]:
    """RFC 7672 §3.1: DANE-TA(2) and DANE-EE(3) with selector 0/1 and matching type 0/1/2
    (RFC 6698 §2.1); PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP (§3.1.3), and so is a
    record whose data cannot be what its matching type says (RFC 7671 §5.1: malformed
    records are unusable)."""
    return tuple(
        r
        for r in records
        if r.usage in (DANE_TA, DANE_EE)
        and r.selector in (0, 1)
        and r.mtype in _DIGEST_SIZE
        and r.data
        and _DIGEST_SIZE[r.mtype] in (None, len(r.data))
    )


def load_certificate(der: bytes) -> x509.Certificate:
    """Parse a peer's DER certificate; BAD_CERTIFICATE errors when malformed. Leniencies
    cryptography only warns about (a non-positive serial number) are not this check's
    business: the signature and the TLSA association decide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_der_x509_certificate(der)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _association(record: TlsaRecord, cert_der: bytes, cert: x509.Certificate | None) -> bool:
    """RFC 6698 §2.1.2/§2.1.3: does ``record`` designate this certificate?"""
    if record.selector == 0:
        data = cert_der
    else:
        if cert is None:
            cert = load_certificate(cert_der)
        data = _spki(cert)
    if record.mtype == 0:
        digest = data
    elif record.mtype == 1:
        digest = hashlib.sha256(data).digest()
    else:
        digest = hashlib.sha512(data).digest()
    return digest == record.data


def _first_match(
    records: Sequence[TlsaRecord], cert_der: bytes, cert: x509.Certificate | None = None
) -> TlsaRecord | None:
    for record in records:
        try:
            if _association(record, cert_der, cert):
                return record
        except BAD_CERTIFICATE:  # an unparsable certificate matches nothing
            return None
    return None


def dane_matches(cert_der: bytes, records: Sequence[TlsaRecord]) -> bool:
    """RFC 6698 §2.1 / RFC 7672 §3.1.1: ``cert_der`` (the leaf) matches one of ``records``
    (their usage is not looked at: the caller passes DANE-EE records)."""
    return _first_match(records, cert_der) is not None


def signed_by(cert: x509.Certificate, key: Any) -> bool:
    """RFC 5280 §6.1.3 (a)(1): the signature of ``cert`` verifies with ``key``."""
    try:
        params = cert.signature_algorithm_parameters
        tbs, signature = cert.tbs_certificate_bytes, cert.signature
        if isinstance(key, rsa.RSAPublicKey):
            algorithm = cert.signature_hash_algorithm
            if not isinstance(params, padding.PKCS1v15 | padding.PSS) or algorithm is None:
                return False
            key.verify(signature, tbs, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, tbs, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, tbs)
        else:
            return False
    except (InvalidSignature, *BAD_CERTIFICATE):
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Anchor:
    """Where a chain ends: a trust-anchor certificate (``cert``) or a bare key from a
    SPKI(1) Full(0) record; ``constrained``: apply the anchor certificate's constraints."""

    cert: x509.Certificate | None
    constrained: bool


def _record_anchors(records: Sequence[TlsaRecord]) -> list[tuple[Any, _Anchor]]:
    """Anchors carried by Full(0) DANE-TA records themselves (RFC 7672 §3.1.2 discourages
    them, but the key or certificate is in the record): (public key, anchor)."""
    out: list[tuple[Any, _Anchor]] = []
    for record in records:
        if record.mtype != 0:
            continue
        try:
            if record.selector == 0:
                cert = load_certificate(record.data)
                out.append((cert.public_key(), _Anchor(cert, constrained=True)))
            else:
                out.append((load_der_public_key(record.data), _Anchor(None, constrained=False)))
        except BAD_CERTIFICATE:
            continue
    return out


def _chain_to_anchor(
    certs: Sequence[x509.Certificate],
    ders: Sequence[bytes],
    records: Sequence[TlsaRecord],
) -> tuple[list[x509.Certificate], _Anchor] | None:
    """The shortest path from the leaf up to (not including) a DANE-TA anchor, and the
    anchor.

    RFC 7672 §3.1.2: the anchor is a presented certificate matching a record (TLS 1.3 lets
    the other certificates come in any order, RFC 8446 §4.4.2, so issuers are looked up by
    name and signature, not position) or a key/certificate carried by a Full(0) record. The
    search is breadth-first and expands each presented certificate once, so a peer's crafted
    chain costs at most ``len(certs)`` squared signature checks."""
    from_records = _record_anchors(records)
    parent: dict[int, int] = {0: -1}
    level = [0]
    for _depth in range(MAX_DEPTH + 1):
        following: list[int] = []
        for index in level:
            cert = certs[index]
            found: _Anchor | None = None
            record = _first_match(records, ders[index], cert)
            if record is not None:
                # the presented certificate is the anchor; SPKI(1): only its key counts
                found = _Anchor(cert, constrained=record.selector == 0)
            else:
                for key, anchor in from_records:
                    if anchor.cert is not None and anchor.cert.subject != cert.issuer:
                        continue
                    if signed_by(cert, key):
                        found = anchor
                        break
            if found is not None:
                path: list[x509.Certificate] = []
                step = index
                while step >= 0:
                    path.append(certs[step])
                    step = parent[step]
                path.reverse()  # leaf first
                if found.cert is cert:
                    path.pop()  # a presented anchor is not part of the path
                return path, found
            for j, issuer in enumerate(certs):
                if j in parent or issuer.subject != cert.issuer:
                    continue
                if signed_by(cert, issuer.public_key()):
                    parent[j] = index
                    following.append(j)
        if not following:
            return None
        level = following
    return None


def _ca_problem(cert: x509.Certificate, below: int, *, required: bool) -> str | None:
    """RFC 5280 §6.1.4: may ``cert`` issue a chain with ``below`` intermediates under it?"""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "issuer is not a CA (no basicConstraints)" if required else None
    if not constraints.ca:
        return "issuer is not a CA"  # §6.1.4 (k)
    if constraints.path_length is not None and below > constraints.path_length:
        return "path length constraint exceeded"  # §6.1.4 (l)/(m)
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return None if usage.key_cert_sign else "issuer may not sign certificates"  # §6.1.4 (n)


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _path_problem(
    path: Sequence[x509.Certificate], anchor: _Anchor, now: datetime.datetime
) -> tuple[str, str] | None:
    """(RFC 8460 result type, reason) when the path breaks a constraint or has expired."""
    for cert in path:  # RFC 5280 §6.1.3 (a)(2): the anchor itself is not checked
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return "certificate-expired", f"certificate {cert.subject.rfc4514_string()} expired"
    # intermediates: path[1:] issue the certificates below them; path length counts the
    # non-self-issued intermediates under each issuer (RFC 5280 §6.1.4 (l))
    below = 0
    for position in range(1, len(path)):
        problem = _ca_problem(path[position], below, required=True)
        if problem is not None:
            return "validation-failure", problem
        if not _self_issued(path[position]):
            below += 1
    if anchor.cert is not None and anchor.constrained and path:
        problem = _ca_problem(anchor.cert, below, required=False)
        if problem is not None:
            return "validation-failure", f"trust anchor: {problem}"
    # RFC 5280 §6.1.3 (b)/(c), §6.1.4 (g): name constraints of the CAs above each
    # certificate, and of a Cert(0) anchor (RFC 7672 §3.1.2: its constraints SHOULD apply)
    problem = nameconstraints.violation(path, anchor.cert if anchor.constrained else None)
    if problem is not None:
        return "validation-failure", problem
    return None


def presented_names(cert: x509.Certificate) -> list[str]:
    """RFC 7672 §3.2.3: the DNS-IDs of the certificate, or its CN-IDs when it has none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_ids = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns_ids = []
    if dns_ids:
        return dns_ids
    return [
        attr.value
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if isinstance(attr.value, str)
    ]


def name_matches(presented: str, reference: str) -> bool:
    """RFC 6125 §6.4 as RFC 7672 §3.2.3 narrows it: case-insensitive A-label comparison; a
    wildcard only as the complete left-most label, standing for exactly one label."""
    pattern = presented.strip().lower().rstrip(".")
    name = reference.strip().lower().rstrip(".")
    if not pattern or not name:
        return False
    if pattern.startswith("*."):
        rest = pattern[2:]
        if "*" in rest or rest.count(".") < 1:  # "*.com" names no single zone's hosts
            return False
        label, dot, parent = name.partition(".")
        return bool(label) and bool(dot) and parent == rest
    return "*" not in pattern and pattern == name


def _name_ok(cert: x509.Certificate, names: Sequence[str]) -> bool:
    presented = presented_names(cert)
    return any(name_matches(p, n) for p in presented for n in names)


def verify(
    chain: Sequence[bytes],
    records: Sequence[TlsaRecord],
    *,
    names: Sequence[str],
    now: float,
) -> DaneVerdict:
    """Check the chain the server presented (leaf first) against usable TLSA ``records``.

    RFC 7672 §3.2: the host is authenticated when the leaf matches a DANE-EE(3) record, or
    when it chains to a DANE-TA(2) anchor and carries one of ``names`` (the reference
    identifiers of §3.2.2: the TLSA base domain first, then the next-hop domain)."""
    records = usable(records)
    if not chain or not chain[0]:
        return DaneVerdict(False, failure="tlsa-invalid", reason="no certificate presented")
    ee = [r for r in records if r.usage == DANE_EE]
    if ee and _first_match(ee, chain[0]) is not None:
        return DaneVerdict(True, usage=DANE_EE)  # §3.1.1, §3.2.1: no name or expiry check
    ta = [r for r in records if r.usage == DANE_TA]
    if not ta:
        return DaneVerdict(False, failure="tlsa-invalid", reason="no TLSA record matches")
    try:
        return _verify_ta(list(chain[:MAX_CHAIN]), ta, names=names, now=now)
    except BAD_CERTIFICATE as exc:
        reason = f"malformed certificate: {type(exc).__name__}"
        return DaneVerdict(False, failure="validation-failure", reason=reason)


def _verify_ta(
    ders: list[bytes], ta: Sequence[TlsaRecord], *, names: Sequence[str], now: float
) -> DaneVerdict:
    """RFC 7672 §3.1.2, §3.2.2: the DANE-TA part of ``verify``."""
    certs = [load_certificate(der) for der in ders]
    found = _chain_to_anchor(certs, ders, ta)
    if found is None:
        return DaneVerdict(
            False, failure="tlsa-invalid", reason="no chain to a DANE-TA trust anchor"
        )
    path, anchor = found
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    problem = _path_problem(path, anchor, moment)
    if problem is not None:
        return DaneVerdict(False, failure=problem[0], reason=problem[1])
    # RFC 7672 §3.2.2: DANE-TA needs a name check against the reference identifiers
    if not _name_ok(certs[0], names):
        return DaneVerdict(
            False,
            failure="certificate-host-mismatch",
            reason=f"certificate names {presented_names(certs[0])[:4]} match none of "
            f"{list(names)}",
        )
    return DaneVerdict(True, usage=DANE_TA)


def peer_chain(sslobj: Any) -> list[bytes]:
    """The certificates the peer presented (DER, leaf first), unverified.

    ``get_unverified_chain`` is public from Python 3.13 (DER bytes); 3.10-3.12 have it on
    the ``_ssl`` object (``_ssl.Certificate`` items). Without either: the leaf alone."""
    method = getattr(sslobj, "get_unverified_chain", None)
    if method is None:
        method = getattr(getattr(sslobj, "_sslobj", None), "get_unverified_chain", None)
    if method is None:
        leaf = sslobj.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    out: list[bytes] = []
    for item in method() or ():
        if isinstance(item, bytes):
            out.append(item)
        else:
            out.append(item.public_bytes(_ENCODING_DER))
    return out
