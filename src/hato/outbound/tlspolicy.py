"""The TLS requirement for one delivery attempt to one host: opportunistic, MTA-STS, DANE,
REQUIRETLS.

Implements opportunistic STARTTLS (RFC 3207, RFC 7435: TLS when offered, plaintext
otherwise), MTA-STS enforcement (RFC 8461 §4.2: in "enforce" mode an MX host not matching
the policy is not used and delivery needs a PKIX-valid certificate for the MX name; in
"testing" mode failures are only reported), DANE for SMTP (RFC 7672): §2.2.1, DANE only for
MX hosts from a "secure" MX RRset (the recursive resolver's AD bit, which covers any CNAME
of the recipient domain the MX lookup went through) or, with no MX, a secure denial of MX
(§2.2.2: the domain is its own server); §2.2.2, TLSA is only asked when the host's address
RRset is secure, or when the host is an alias whose first CNAME is secure, and the four
cases (non-CNAME, insecure CNAME, secure CNAME) give the candidate TLSA base domains: the
fully expanded name then the initial one; §2.2.3, the first candidate with a secure TLSA
RRset is the base domain; with at least one usable DANE-TA(2)/DANE-EE(3) record TLS is
mandatory and the chain is checked by ``hato.outbound.dane``; a secure RRset of unusable
records only (PKIX-TA/PKIX-EE, unknown parameters, malformed data: RFC 7671 §4/§5.1) makes
TLS mandatory without authentication; any lookup error in the process (SERVFAIL, timeout,
a CNAME loop) makes the host unusable, never a fallback (§2.1.1, §2.2.1); §3.2.2, the
DANE-TA reference identifiers are the TLSA base domain, the next-hop domain and its secure
CNAME expansion. DANE takes precedence over MTA-STS (RFC 8461 §2). REQUIRETLS (RFC 8689
§4.2.1: an MX name validated by DNSSEC or MTA-STS, a certificate authenticated through DANE
or PKIX -- never the unauthenticated TLS of unusable TLSA records -- and a REQUIRETLS
capability, else 5.7.10/5.7.30) and "TLS-Required: No" (RFC 8689 §4.2.2: policies are followed but
failures do not stop delivery).

Leaves out: PKIX-TA/PKIX-EE (0/1, which RFC 7672 §3.1.3 lets SMTP clients treat as
unusable), DANE behind an insecure MX RRset (a MAY of §2.2.1), mandatory DANE for chosen
destinations (§6), DANE for configured relays and smarthosts (a relay that is given AUTH
credentials is held to PKIX by the queue, ``queue._open``; one without them gets
opportunistic TLS, as any next hop without a published policy).

Security: decisions here decide whether mail may go out in the clear; every "required"
outcome makes the client refuse plaintext and unverified peers.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from hato.core import log
from hato.core.address import domain_to_ascii
from hato.core.dns import DnsAnswer, DnsError, DnsTemporaryError, Resolver, TlsaRecord
from hato.outbound.dane import DANE_TA, dane_matches, usable
from hato.outbound.mtasts import StsPolicy

__all__ = [
    "OPPORTUNISTIC",
    "HostPolicy",
    "Requirement",
    "dane_matches",
    "host_policy",
    "usable_tlsa",
]

MAX_CNAME = 8  # CNAME links followed when expanding a name (RFC 7672 §2.2.1, §2.2.2)


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
    # RFC 7672 §3.2.2: DANE-TA reference identifiers, the TLSA base domain first
    names: tuple[str, ...] = ()
    # RFC 7672 §8.1: the SNI name for DANE (the TLSA base domain); None: the host name
    base_domain: str | None = None

    @property
    def required(self) -> bool:
        return self.requirement is not Requirement.OPPORTUNISTIC


OPPORTUNISTIC = HostPolicy(Requirement.OPPORTUNISTIC)


def usable_tlsa(records: Sequence[TlsaRecord]) -> tuple[TlsaRecord, ...]:
    """RFC 7672 §3.1: DANE-TA(2)/DANE-EE(3) with selector 0/1, mtype 0/1/2 (RFC 6698)."""
    return usable(records)


@dataclass(frozen=True, slots=True)
class _Expansion:
    """The CNAME chain of a name (RFC 7672 §2.2.2): where it ends and how secure it was."""

    target: str  # the fully expanded name; the name itself when it is no alias
    alias: bool = False
    first_secure: bool = False  # the first CNAME answer was authenticated
    all_secure: bool = False  # every CNAME answer of the chain was authenticated


async def _expand(resolver: Resolver, name: str) -> _Expansion:
    """Follow the CNAME chain of ``name`` one link at a time, noting each link's DNSSEC
    status (RFC 7672 §2.2.2, §2.2.3). DnsError passes through, and a loop or a chain
    longer than ``MAX_CNAME`` raises DnsTemporaryError: §2.1.1, errors delay delivery."""
    current, seen = name, {name}
    first_secure = all_secure = True
    for hop in range(MAX_CNAME + 1):
        answer = await resolver.query(current, "CNAME")
        targets = answer.texts()
        if not targets:
            if hop == 0:
                return _Expansion(name)
            return _Expansion(current, True, first_secure, all_secure)
        if hop == 0:
            first_secure = answer.authenticated
        all_secure = all_secure and answer.authenticated
        current = targets[0].rstrip(".").lower()
        if current in seen:
            raise DnsTemporaryError(f"CNAME loop at {current}")
        seen.add(current)
    raise DnsTemporaryError(f"CNAME chain of {name} longer than {MAX_CNAME}")


def _candidates(host: str, expansion: _Expansion, *, addresses_secure: bool) -> list[str]:
    """RFC 7672 §2.2.2 (the four cases) and §2.2.3: the candidate TLSA base domains."""
    if not expansion.alias:
        # "Non-CNAME": TLSA only when the address RRset is secure; an insecure one means
        # an unsigned zone, whose TLSA queries some nameservers mishandle (SHOULD NOT)
        return [host] if addresses_secure else []
    if addresses_secure and expansion.all_secure:
        # "Secure CNAME": the fully expanded name first, the initial name second
        return [expansion.target, host]
    if expansion.first_secure:
        # "Insecure CNAME" behind a secure first link: the initial name only
        return [host]
    return []  # "Insecure CNAME" from the start: DANE TLS does not apply


async def _tlsa(resolver: Resolver, base: str, port: int) -> DnsAnswer | None:
    """The TLSA RRset of one candidate base domain; None when there is none (insecure
    answers count as none, RFC 7672 §2.2.3, and so does a name too long to ask);
    DnsTemporaryError passes through."""
    try:
        answer = await resolver.query(f"_{port}._tcp.{base}", "TLSA")
    except DnsTemporaryError:
        raise
    except DnsError:
        return None
    if answer.authenticated and answer.tlsa():
        return answer
    return None


async def _reference_names(resolver: Resolver, base: str, domain: str | None) -> tuple[str, ...]:
    """RFC 7672 §3.2.2, for a secure MX (or no MX): the TLSA base domain first, the original
    next-hop domain second, its secure CNAME expansion third when it differs. A failed
    expansion only leaves the third name out: fewer names can only fail a check."""
    names = [base]
    if domain:
        original = domain_to_ascii(domain).rstrip(".").lower()
        names.append(original)
        try:
            expansion = await _expand(resolver, original)
        except DnsError:
            expansion = _Expansion(original)
        if expansion.alias and expansion.all_secure:
            names.append(expansion.target)
    return tuple(dict.fromkeys(names))


async def _dane_policy(
    host: str, *, resolver: Resolver, port: int, domain: str | None, addresses_secure: bool
) -> HostPolicy | None:
    """RFC 7672 §2.2.2/§2.2.3: the DANE requirement for ``host``, None when DANE does not
    apply (no secure TLSA RRset at any candidate base domain)."""
    host = host.rstrip(".").lower()
    try:
        expansion = await _expand(resolver, host)
        for base in _candidates(host, expansion, addresses_secure=addresses_secure):
            answer = await _tlsa(resolver, base, port)
            if answer is not None:
                break
        else:
            return None
    except DnsError as exc:
        # RFC 7672 §2.2.1, §2.1.1: a failed lookup in the process: this host is not used
        # (X.4.3: a directory server failure, RFC 3463; the details stay in the log)
        log.event("outbound.dane.lookup_failed", host=host, error=exc.detail)
        return HostPolicy(
            Requirement.DANE,
            source="dane",
            usable=False,
            error=f"451 4.4.3 DANE: TLSA lookup for {host} failed",
        )
    records = usable_tlsa(answer.tlsa())
    if not records:
        # RFC 7672 §2.2, §2.2.3: a secure RRset of unusable records (PKIX-TA/PKIX-EE,
        # unknown selector or matching type, malformed data): TLS is mandatory, without
        # authentication
        return HostPolicy(Requirement.ENCRYPT, source="dane", base_domain=base)
    names: tuple[str, ...] = (base,)
    if any(r.usage == DANE_TA for r in records):  # only DANE-TA(2) checks names (§3.2.2)
        names = await _reference_names(resolver, base, domain)
    return HostPolicy(Requirement.DANE, records, source="dane", names=names, base_domain=base)


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
    domain: str | None = None,
    addresses_secure: bool = True,
) -> HostPolicy:
    """Decide the requirement for ``host``. ``mx_secure``: the MX answer (or, with no MX,
    its denial) was authenticated; ``addresses_secure``: an address answer of ``host`` was
    (RFC 7672 §2.2.2); ``domain``: the next-hop (recipient) domain, a DANE-TA reference
    identifier."""
    # RFC 7672 §2.2.1: DANE only for MX hosts obtained securely (the MAY of using it behind
    # an insecure MX is not taken: the host name itself would then be attacker-chosen)
    if dane and mx_secure and not tls_optional:
        decided = await _dane_policy(
            host, resolver=resolver, port=port, domain=domain, addresses_secure=addresses_secure
        )
        if decided is not None:
            if not (requiretls and decided.usable and decided.requirement is Requirement.ENCRYPT):
                return decided
            # RFC 8689 §4.2.1 step 4: REQUIRETLS needs the certificate authenticated
            # (RFC 6125 or RFC 7672); TLSA records that cannot authenticate leave PKIX
            return HostPolicy(Requirement.PKIX, source="requiretls")
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
        # RFC 8689 §4.2.1 steps 2 and 4: the server name validated by a DNSSEC-signed MX
        # RRset or through MTA-STS, then its certificate through PKIX
        if via_mx and not mx_secure and (sts is None or not sts.matches(host)):
            return HostPolicy(
                Requirement.PKIX,
                source="requiretls",
                usable=False,
                error="550 5.7.10 REQUIRETLS: MX host not validated by DNSSEC or MTA-STS",
            )
        return HostPolicy(Requirement.PKIX, source="requiretls")
    return OPPORTUNISTIC
