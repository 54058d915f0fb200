"""The TLS requirement for one delivery attempt to one host: opportunistic, MTA-STS, DANE,
REQUIRETLS; and the DANE certificate check.

Implements opportunistic STARTTLS (RFC 3207, RFC 7435: TLS when offered, plaintext
otherwise), MTA-STS enforcement (RFC 8461 §4.2: in "enforce" mode an MX host not matching
the policy is not used and delivery needs a PKIX-valid certificate for the MX name; in
"testing" mode failures are only reported), DANE for SMTP (RFC 7672 §2.2: with an
authenticated MX and authenticated TLSA RRset at ``_25._tcp.<mx>``, TLS is mandatory and
the certificate must match a usable TLSA record; §3.1.1 DANE-EE(3) matched on the leaf
certificate or its SubjectPublicKeyInfo with SHA-256/SHA-512/exact matching per RFC 6698
§2.1; unusable records only make TLS mandatory, RFC 7672 §2.2), DANE taking precedence over
MTA-STS (RFC 8461 §2), REQUIRETLS (RFC 8689 §4.2.1: a validated certificate through DANE or
MTA-STS/PKIX and a REQUIRETLS capability, else 5.7.10/5.7.30) and "TLS-Required: No"
(RFC 8689 §4.2.2: policies are followed but failures do not stop delivery).

Leaves out: DANE-TA(2) chain matching (Python's ssl does not expose the chain before 3.13:
such records make TLS mandatory without authentication), PKIX-TA/PKIX-EE (0/1, which
RFC 7672 §3.1.3 says SMTP clients should treat as unusable).

Security: decisions here decide whether mail may go out in the clear; every "required"
outcome makes the client refuse plaintext and unverified peers.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hato.core.dns import DnsError, DnsTemporaryError, Resolver, TlsaRecord
from hato.outbound.mtasts import StsPolicy


class Requirement(enum.Enum):
    OPPORTUNISTIC = "opportunistic"  # TLS when offered, plaintext otherwise
    ENCRYPT = "encrypt"  # TLS required, certificate not checked
    PKIX = "pkix"  # TLS required, certificate valid for the host name (MTA-STS, REQUIRETLS)
    DANE = "dane"  # TLS required, certificate matches a TLSA record


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """What one connection to ``host`` must achieve."""

    requirement: Requirement
    tlsa: tuple[TlsaRecord, ...] = ()
    source: str = "opportunistic"  # "dane", "mta-sts", "requiretls", "relay", ...
    usable: bool = True  # False: this host may not be used at all (MTA-STS mx mismatch)
    error: str | None = None  # why not usable / temporary DNS trouble
    report_only: bool = False  # MTA-STS testing: failures are logged, not enforced

    @property
    def required(self) -> bool:
        return self.requirement is not Requirement.OPPORTUNISTIC


OPPORTUNISTIC = HostPolicy(Requirement.OPPORTUNISTIC)


def usable_tlsa(records: Sequence[TlsaRecord]) -> tuple[TlsaRecord, ...]:
    """RFC 7672 §3.1: for SMTP, DANE-EE(3) records with selector 0/1, mtype 0/1/2 (RFC 6698)."""
    return tuple(
        r for r in records if r.usage == 3 and r.selector in (0, 1) and r.mtype in (0, 1, 2)
    )


async def host_policy(
    host: str,
    *,
    resolver: Resolver,
    port: int,
    mx_secure: bool,
    sts: StsPolicy | None,
    via_mx: bool,
    requiretls: bool,
    tls_optional: bool,
    dane: bool = True,
) -> HostPolicy:
    """Decide the requirement for ``host``. ``mx_secure``: the MX answer was authenticated."""
    if dane and mx_secure and not tls_optional:
        try:
            answer = await resolver.query(f"_{port}._tcp.{host}", "TLSA")
        except DnsTemporaryError as exc:
            # RFC 7672 §2.2: a failed TLSA lookup of a secure zone: do not fall back
            return HostPolicy(
                Requirement.DANE, source="dane", usable=False, error=f"TLSA lookup: {exc.detail}"
            )
        except DnsError:
            answer = None
        if answer is not None and answer.authenticated and answer.tlsa():
            records = usable_tlsa(answer.tlsa())
            if records:
                return HostPolicy(Requirement.DANE, records, source="dane")
            # RFC 7672 §2.2: only unusable records: mandatory, unauthenticated TLS
            return HostPolicy(Requirement.ENCRYPT, source="dane")
    if sts is not None and sts.mode != "none" and via_mx:
        matched = sts.matches(host)
        if sts.mode == "enforce" and not tls_optional:
            if not matched:
                # RFC 8461 §4.2: do not deliver to an MX host not matching the policy
                return HostPolicy(
                    Requirement.PKIX,
                    source="mta-sts",
                    usable=False,
                    error=f"MX {host} not in the MTA-STS policy",
                )
            return HostPolicy(Requirement.PKIX, source="mta-sts")
        if sts.mode == "testing" and not requiretls:
            return HostPolicy(Requirement.OPPORTUNISTIC, source="mta-sts", report_only=True)
    if requiretls:
        # RFC 8689 §4.2.1 steps 2 and 4: the server name validated through MTA-STS (PKIX)
        if via_mx and (sts is None or not sts.matches(host)):
            return HostPolicy(
                Requirement.PKIX,
                source="requiretls",
                usable=False,
                error="550 5.7.10 REQUIRETLS: MX host not validated by DNSSEC or MTA-STS",
            )
        return HostPolicy(Requirement.PKIX, source="requiretls")
    return OPPORTUNISTIC


def dane_matches(cert_der: bytes, records: Sequence[TlsaRecord]) -> bool:
    """RFC 6698 §2.1 / RFC 7672 §3.1.1: DANE-EE matching on the leaf certificate."""
    spki: bytes | None = None
    for record in records:
        if record.selector == 0:
            data = cert_der
        else:
            if spki is None:
                cert = x509.load_der_x509_certificate(cert_der)
                spki = cert.public_key().public_bytes(
                    Encoding.DER, PublicFormat.SubjectPublicKeyInfo
                )
            data = spki
        if record.mtype == 0:
            digest = data
        elif record.mtype == 1:
            digest = hashlib.sha256(data).digest()
        else:
            digest = hashlib.sha512(data).digest()
        if digest == record.data:
            return True
    return False
