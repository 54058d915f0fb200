"""SPF (RFC 7208): our own asynchronous check_host() on the injected resolver.

Implements record lookup and selection (§4.3-§4.5), the record grammar (§4.6, §12 ABNF) with
every mechanism (§5: all, include, a, mx, ptr, ip4, ip6, exists) and modifier (§6: redirect,
exp, unknown modifiers), macros (§7, in ``spf_macro``) including ``exp=`` explanations, the
processing limits of §4.6.4 (10 DNS-querying terms, 2 void lookups, 10 MX names, 10 PTR
names), temperror/permerror (§2.6), IPv4-mapped IPv6 clients treated as IPv4, and the HELO
and MAIL FROM identities (§2.3, §2.4). Results carry the RFC 8601 token.

Left out: the obsolete SPF RR type 99 (RFC 7208 §3.1 says TXT only), Received-SPF header
rendering (the Authentication-Results writer renders results), local whitelists and
"best guess" records (policy decides what to do with a result).

Security: record text and macro expansions come from untrusted DNS; every lookup is bounded
by the limits above, the recursion depth by the 10-term limit, and names by 253 octets.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from hato.core.clock import Clock, SystemClock
from hato.core.dns import DnsAnswer, DnsError, DnsTemporaryError, Resolver
from hato.mailauth.spf_macro import (
    IPAddress,
    MacroContext,
    MacroString,
    SpfSyntaxError,
    expand,
    parse_domain_spec,
    parse_macro_string,
    truncate_domain,
)

__all__ = [
    "DEFAULT_EXPLANATION",
    "Mechanism",
    "SpfRecord",
    "SpfResult",
    "SpfStatus",
    "SpfSyntaxError",
    "check_host",
    "parse_record",
    "verify_helo",
    "verify_mailfrom",
]

DEFAULT_EXPLANATION = "SPF fail - not authorized"
MAX_DNS_TERMS = 10  # RFC 7208 §4.6.4
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4
MAX_MX_NAMES = 10  # RFC 7208 §4.6.4
MAX_PTR_NAMES = 10  # RFC 7208 §4.6.4


class SpfStatus(StrEnum):
    """RFC 7208 §2.6 results, spelled as the RFC 8601 §2.7.2 tokens."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


_QUALIFIERS = {  # RFC 7208 §4.6.2
    "+": SpfStatus.PASS,
    "-": SpfStatus.FAIL,
    "~": SpfStatus.SOFTFAIL,
    "?": SpfStatus.NEUTRAL,
}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_DNS_TERMS = frozenset({"include", "a", "mx", "ptr", "exists"})  # + redirect, §4.6.4
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)", re.DOTALL)  # RFC 7208 §12 name
_VERSION = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)  # RFC 7208 §4.5
# RFC 7208 §12 ip4-network = qnum "." qnum "." qnum "." qnum (no leading zeros).
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
_IP4 = re.compile(rf"{_QNUM}(?:\.{_QNUM}){{3}}")
_CIDR = re.compile(r"0|[1-9][0-9]{0,2}")  # RFC 7208 §12 ip4/ip6-cidr-length digits
_DUAL_CIDR = re.compile(r"(.*?)(?:/([0-9]+))?(?://([0-9]+))?", re.DOTALL)


@dataclass(frozen=True)
class Mechanism:
    """One directive: qualifier, mechanism name and its parsed argument."""

    qualifier: str
    name: str
    domain_spec: MacroString | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""


@dataclass(frozen=True)
class SpfRecord:
    """A parsed "v=spf1" record (RFC 7208 §4.6)."""

    mechanisms: tuple[Mechanism, ...]
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    text: str = ""

    @property
    def has_all(self) -> bool:
        """RFC 7208 §6.1: a record with "all" ignores redirect=."""
        return any(m.name == "all" for m in self.mechanisms)


@dataclass(frozen=True)
class SpfResult:
    """The outcome of one SPF check; ``status`` is the RFC 8601 token."""

    status: SpfStatus
    domain: str  # the domain evaluated (RFC 7208 §4.1 <domain>)
    identity: str  # "mailfrom" or "helo" (RFC 8601 §2.7.2 smtp.mailfrom / smtp.helo)
    sender: str  # the <sender> used (postmaster@ for null paths and HELO)
    explanation: str | None = None  # for "fail" only (RFC 7208 §6.2)
    mechanism: str | None = None  # the matching directive, or "redirect"/"default"
    detail: str = ""  # for logs: why this result


def is_spf_record(text: str) -> bool:
    """RFC 7208 §4.5: "v=spf1" (case-insensitive) followed by SP or the end."""
    return _VERSION.match(text) is not None


def parse_record(text: str) -> SpfRecord:
    """Parse a whole record; any syntax error anywhere raises SpfSyntaxError (§4.6)."""
    if not is_spf_record(text):
        raise SpfSyntaxError("record does not start with v=spf1")
    if not text.isascii():
        raise SpfSyntaxError("non-ASCII character in record")  # RFC 7208 §3.1: ASCII only
    mechanisms: list[Mechanism] = []
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    for term in text[6:].split(" "):  # RFC 7208 §4.6.1: terms are separated by SP only
        if not term:
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name == "redirect":
                if redirect is not None:
                    raise SpfSyntaxError("redirect= given twice")  # RFC 7208 §6
                redirect = parse_domain_spec(value)
            elif name == "exp":
                if explanation is not None:
                    raise SpfSyntaxError("exp= given twice")  # RFC 7208 §6
                explanation = parse_domain_spec(value)
            else:
                parse_macro_string(value)  # RFC 7208 §6: unknown-modifier = name "=" macro-string
            continue
        mechanisms.append(_parse_mechanism(term))
    return SpfRecord(tuple(mechanisms), redirect, explanation, text)


def _parse_mechanism(term: str) -> Mechanism:
    qualifier = "+"
    body = term
    if body[0] in _QUALIFIERS:
        qualifier, body = body[0], body[1:]
    match = re.match(r"[A-Za-z0-9]+", body)
    if match is None:
        raise SpfSyntaxError(f"bad term {term!r}")
    name = match.group().lower()
    rest = body[match.end() :]
    if name not in _MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {name!r}")  # RFC 7208 §5
    if name == "all":
        if rest:
            raise SpfSyntaxError(f"'all' takes no argument: {term!r}")
        return Mechanism(qualifier, name, text=term)
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{name} needs an address: {term!r}")
        network = _parse_network(name, rest[1:])
        return Mechanism(qualifier, name, network=network, text=term)
    if name in ("include", "exists", "ptr"):
        if not rest:
            if name == "ptr":
                return Mechanism(qualifier, name, text=term)
            raise SpfSyntaxError(f"{name} needs a domain-spec: {term!r}")
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"bad term {term!r}")
        return Mechanism(qualifier, name, domain_spec=parse_domain_spec(rest[1:]), text=term)
    # "a" and "mx": [ ":" domain-spec ] [ dual-cidr-length ] (RFC 7208 §5.3, §5.4)
    dual = _DUAL_CIDR.fullmatch(rest)
    assert dual is not None  # the pattern matches every string
    spec_text, c4, c6 = dual.groups()
    cidr4 = _cidr(c4, 32) if c4 is not None else 32
    cidr6 = _cidr(c6, 128) if c6 is not None else 128
    spec: MacroString | None = None
    if spec_text:
        if not spec_text.startswith(":"):
            raise SpfSyntaxError(f"bad term {term!r}")
        spec = parse_domain_spec(spec_text[1:])
    return Mechanism(qualifier, name, domain_spec=spec, cidr4=cidr4, cidr6=cidr6, text=term)


def _cidr(text: str, limit: int) -> int:
    if not _CIDR.fullmatch(text) or int(text) > limit:
        raise SpfSyntaxError(f"bad CIDR length /{text}")  # RFC 7208 §5.6
    return int(text)


def _parse_network(name: str, arg: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address, slash, length = arg.partition("/")
    if name == "ip4":
        if not _IP4.fullmatch(address):
            raise SpfSyntaxError(f"bad IPv4 address {address!r}")  # RFC 7208 §5.6
        prefix = _cidr(length, 32) if slash else 32
        return ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    if not re.fullmatch(r"[0-9A-Fa-f:.]+", address):
        raise SpfSyntaxError(f"bad IPv6 address {address!r}")  # RFC 7208 §5.6
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        raise SpfSyntaxError(f"bad IPv6 address {address!r}") from None
    prefix = _cidr(length, 128) if slash else 128
    return ipaddress.IPv6Network(f"{parsed}/{prefix}", strict=False)


class _Abort(Exception):
    """Ends evaluation with a permerror or temperror."""

    def __init__(self, status: SpfStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Outcome:
    status: SpfStatus
    explanation: str | None = None
    mechanism: str | None = None
    detail: str = ""


@dataclass
class _Check:
    """State shared by one top-level check_host() and all its include/redirect recursion."""

    resolver: Resolver
    ip: IPAddress
    context: MacroContext
    dns_terms: int = 0
    voids: int = 0
    validated: list[str] | None = None  # RFC 7208 §5.5 names, looked up once per check

    async def query(self, name: str, rdtype: str, *, count_void: bool = True) -> DnsAnswer:
        """Query; temporary errors abort with temperror (RFC 7208 §5), voids are counted."""
        try:
            answer = await self.resolver.query(name, rdtype)
        except DnsTemporaryError as exc:
            raise _Abort(SpfStatus.TEMPERROR, f"DNS error for {name} {rdtype}: {exc}") from None
        except DnsError:
            answer = DnsAnswer(name, rdtype, nxdomain=True)  # malformed name: no such domain
        if count_void and answer.void:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:  # RFC 7208 §4.6.4
                raise _Abort(SpfStatus.PERMERROR, "more than 2 void lookups")
        return answer

    def count_term(self, what: str) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:  # RFC 7208 §4.6.4
            raise _Abort(SpfStatus.PERMERROR, f"more than 10 DNS-querying terms at {what}")

    async def expand_domain(self, spec: MacroString, domain: str) -> str:
        ptr_name = await self.validated_name(domain) if spec.uses_ptr else None
        name = expand(spec, self.context, domain=domain, ptr_name=ptr_name)
        return truncate_domain(name.rstrip(".") if name.endswith(".") else name)

    async def validated_names(self) -> list[str]:
        """RFC 7208 §5.5: PTR names of the client whose A/AAAA records lead back to it."""
        if self.validated is not None:
            return self.validated
        validated: list[str] = []
        try:
            answer = await self.resolver.query(_reverse_name(self.ip), "PTR")
        except DnsError:  # RFC 7208 §5.5: a DNS error in the PTR lookup means no match
            answer = DnsAnswer("", "PTR")
        rdtype = "A" if isinstance(self.ip, ipaddress.IPv4Address) else "AAAA"
        for name in answer.texts()[:MAX_PTR_NAMES]:  # RFC 7208 §4.6.4: first 10 names only
            try:
                addresses = await self.resolver.query(name, rdtype)
            except DnsError:  # RFC 7208 §5.5: skip names whose lookup fails
                continue
            if any(_same_ip(text, self.ip) for text in addresses.texts()):
                validated.append(name.lower().rstrip("."))
        self.validated = validated
        return validated

    async def validated_name(self, domain: str) -> str:
        """RFC 7208 §7.3 ``p``: a validated name, preferring <domain> and its subdomains."""
        names = await self.validated_names()
        for name in names:
            if name == domain.lower():
                return name
        for name in names:
            if name.endswith("." + domain.lower()):
                return name
        return names[0] if names else "unknown"


def _same_ip(text: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def _reverse_name(ip: IPAddress) -> str:
    return ip.reverse_pointer


def _valid_domain(domain: str) -> bool:
    """RFC 7208 §4.3: a multi-label name, no empty or over-long labels."""
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) < 2:
        return False
    return all(0 < len(label) <= 63 for label in labels)


def _client_ip(ip: str | IPAddress) -> IPAddress:
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # RFC 4408 §5 / RFC 7208 §5: IPv4-mapped IPv6 is IPv4
    return address


async def _check_host(check: _Check, domain: str, *, explain: bool) -> _Outcome:
    """RFC 7208 §4: evaluate <domain>'s record; raise _Abort for perm/temp errors."""
    domain = domain[:-1] if domain.endswith(".") else domain
    if not _valid_domain(domain):  # RFC 7208 §4.3
        return _Outcome(SpfStatus.NONE, detail=f"malformed domain {domain!r}")
    answer = await check.query(domain, "TXT", count_void=False)
    if answer.nxdomain:  # RFC 7208 §4.3: Name Error → none
        return _Outcome(SpfStatus.NONE, detail=f"{domain} does not exist")
    records = [text for text in answer.texts() if is_spf_record(text)]  # RFC 7208 §4.5
    if not records:
        return _Outcome(SpfStatus.NONE, detail=f"no SPF record at {domain}")
    if len(records) > 1:
        raise _Abort(SpfStatus.PERMERROR, f"several SPF records at {domain}")  # RFC 7208 §4.5
    try:
        record = parse_record(records[0])
    except SpfSyntaxError as exc:
        raise _Abort(SpfStatus.PERMERROR, f"{domain}: {exc.detail}") from None  # §4.6
    for mechanism in record.mechanisms:
        if await _matches(check, mechanism, domain):
            status = _QUALIFIERS[mechanism.qualifier]
            text = None
            if status is SpfStatus.FAIL and explain:
                text = await _explanation(check, record, domain)
            return _Outcome(status, text, mechanism.text, f"{domain}: matched {mechanism.text}")
    if record.redirect is not None and not record.has_all:  # RFC 7208 §6.1
        check.count_term("redirect")
        target = await check.expand_domain(record.redirect, domain)
        if not _valid_domain(target):
            raise _Abort(SpfStatus.PERMERROR, f"bad redirect target {target!r}")  # §6.1
        outcome = await _check_host(check, target, explain=explain)
        if outcome.status is SpfStatus.NONE:  # RFC 7208 §6.1: no record → permerror
            raise _Abort(SpfStatus.PERMERROR, f"redirect to {target}: {outcome.detail}")
        return outcome
    return _Outcome(SpfStatus.NEUTRAL, mechanism="default", detail=f"{domain}: no match")


async def _matches(check: _Check, mech: Mechanism, domain: str) -> bool:
    """RFC 7208 §5: does ``mech`` match the client?"""
    ip = check.ip
    if mech.name == "all":  # RFC 7208 §5.1
        return True
    if mech.name in ("ip4", "ip6"):  # RFC 7208 §5.6
        assert mech.network is not None
        return ip.version == mech.network.version and ip in mech.network
    check.count_term(mech.name)
    target = domain
    if mech.domain_spec is not None:
        target = await check.expand_domain(mech.domain_spec, domain)
    if mech.name == "include":  # RFC 7208 §5.2
        if not _valid_domain(target):
            raise _Abort(SpfStatus.PERMERROR, f"bad include target {target!r}")
        outcome = await _check_host(check, target, explain=False)
        if outcome.status is SpfStatus.PASS:
            return True
        if outcome.status in (SpfStatus.FAIL, SpfStatus.SOFTFAIL, SpfStatus.NEUTRAL):
            return False
        if outcome.status is SpfStatus.TEMPERROR:
            raise _Abort(SpfStatus.TEMPERROR, outcome.detail)
        raise _Abort(SpfStatus.PERMERROR, f"include:{target}: {outcome.detail or 'none'}")
    if mech.name == "exists":  # RFC 7208 §5.7: an A query whatever the client's IP version
        answer = await check.query(target, "A")
        return bool(answer.texts())
    if mech.name == "ptr":  # RFC 7208 §5.5
        target = target.lower()
        for name in await check.validated_names():
            if name == target or name.endswith("." + target):
                return True
        return False
    cidr = mech.cidr4 if ip.version == 4 else mech.cidr6
    rdtype = "A" if ip.version == 4 else "AAAA"
    if mech.name == "a":  # RFC 7208 §5.3
        answer = await check.query(target, rdtype)
        return _any_in(answer.texts(), ip, cidr)
    # "mx", RFC 7208 §5.4
    answer = await check.query(target, "MX")
    exchanges = answer.mx()
    if len(exchanges) > MAX_MX_NAMES:  # RFC 7208 §4.6.4
        raise _Abort(SpfStatus.PERMERROR, f"more than 10 MX names at {target}")
    for exchange in sorted(exchanges):
        # The void-lookup limit counts terms (RFC 7208 §4.6.4, §11.1): an MX host without an
        # address of the client's family is not a void term (IPv6 clients of IPv4-only MXs).
        addresses = await check.query(exchange.exchange, rdtype, count_void=False)
        if _any_in(addresses.texts(), ip, cidr):
            return True
    return False


def _any_in(texts: list[str], ip: IPAddress, cidr: int) -> bool:
    network = ipaddress.ip_network(f"{ip}/{cidr}", strict=False)
    for text in texts:
        try:
            if ipaddress.ip_address(text) in network:
                return True
        except ValueError:
            continue
    return False


async def _explanation(check: _Check, record: SpfRecord, domain: str) -> str:
    """RFC 7208 §6.2: expand the exp= TXT record; any problem gives the default text."""
    if record.explanation is None:
        return DEFAULT_EXPLANATION
    try:
        target = await check.expand_domain(record.explanation, domain)
        if not _valid_domain(target):
            return DEFAULT_EXPLANATION
        answer = await check.resolver.query(target, "TXT")
        texts = answer.texts()
        if len(texts) != 1 or not texts[0].isascii():
            return DEFAULT_EXPLANATION
        macro = parse_macro_string(texts[0], explain=True)
        ptr_name = await check.validated_name(domain) if macro.uses_ptr else None
        return expand(macro, check.context, domain=domain, ptr_name=ptr_name)
    except (DnsError, SpfSyntaxError, _Abort):
        return DEFAULT_EXPLANATION


async def check_host(
    resolver: Resolver,
    ip: str | IPAddress,
    *,
    domain: str,
    sender: str,
    helo: str = "",
    identity: str = "mailfrom",
    receiver: str = "unknown",
    clock: Clock | None = None,
) -> SpfResult:
    """RFC 7208 §4 check_host(<ip>, <domain>, <sender>) as a frozen result value."""
    client = _client_ip(ip)
    local, _, sender_domain = sender.rpartition("@")
    local = local or "postmaster"  # RFC 7208 §4.3: no local-part → "postmaster"
    context = MacroContext(
        sender=f"{local}@{sender_domain}",
        local_part=local,
        sender_domain=sender_domain,
        ip=client,
        helo=helo,
        receiver=receiver,
        timestamp=int((clock or SystemClock()).now()),
        upper_hex=isinstance(ip, str) and any(c in "ABCDEF" for c in ip),
    )
    check = _Check(resolver, client, context)
    try:
        outcome = await _check_host(check, domain, explain=True)
    except _Abort as abort:
        outcome = _Outcome(abort.status, detail=abort.detail)
    return SpfResult(
        status=outcome.status,
        domain=domain.rstrip(".").lower(),
        identity=identity,
        sender=context.sender,
        explanation=outcome.explanation,
        mechanism=outcome.mechanism,
        detail=outcome.detail,
    )


async def verify_mailfrom(
    resolver: Resolver,
    ip: str | IPAddress,
    *,
    mailfrom: str,
    helo: str,
    receiver: str = "unknown",
    clock: Clock | None = None,
) -> SpfResult:
    """The MAIL FROM identity (RFC 7208 §2.4); a null path checks postmaster@<helo>."""
    sender = mailfrom if mailfrom else f"postmaster@{helo}"
    if "@" not in sender:
        sender = f"postmaster@{sender}"
    domain = sender.rpartition("@")[2]
    return await check_host(
        resolver, ip, domain=domain, sender=sender, helo=helo, receiver=receiver, clock=clock
    )


async def verify_helo(
    resolver: Resolver,
    ip: str | IPAddress,
    *,
    helo: str,
    receiver: str = "unknown",
    clock: Clock | None = None,
) -> SpfResult:
    """The HELO identity (RFC 7208 §2.3): check_host with <sender> postmaster@<helo>."""
    return await check_host(
        resolver,
        ip,
        domain=helo,
        sender=f"postmaster@{helo}",
        helo=helo,
        identity="helo",
        receiver=receiver,
        clock=clock,
    )
