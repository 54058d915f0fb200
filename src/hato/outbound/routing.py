"""Where mail for a domain goes: MX lookup, implicit MX, null MX, transports and a smarthost.

Implements RFC 5321 §5.1 (MX records in preference order, random order among equal
preferences, the implicit MX — the domain's own A/AAAA — when there is no MX record, an
NXDOMAIN is a permanent failure, records naming this host and every less preferred one are
dropped to avoid loops), RFC 7505 §3/§4 (a null MX, "0 .", means the domain accepts no mail:
"556 5.1.10" at once), RFC 3974 §3 style address selection (IPv6 and IPv4 addresses of each
host, IPv6 first by default), per-domain transport overrides (``host:port``) and a smarthost
relaying everything (RFC 6409 submission on 587 or RFC 8314 implicit TLS on 465, with AUTH).

Leaves out: SRV-based submission discovery, source-address selection.

Security: names come from DNS answers (untrusted); they are only used as lookups and as TLS
reference identifiers; the number of hosts and addresses tried is bounded.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hato.core.address import domain_to_ascii
from hato.core.dns import DnsError, DnsTemporaryError, Resolver

MAX_HOSTS = 10  # MX hosts tried per attempt (RFC 5321 §5.1 suggests a configurable limit)
MAX_ADDRESSES = 8  # addresses per host


@dataclass(frozen=True, slots=True)
class Relay:
    """A fixed next hop: ``host`` (name or address) and ``port``; ``implicit_tls`` for 465."""

    host: str
    port: int
    implicit_tls: bool = False
    auth: tuple[str, str] | None = None  # (username, password) for AUTH

    @classmethod
    def parse(cls, text: str, *, default_port: int = 25) -> Relay:
        """``host``, ``host:port``, ``[v6addr]:port``."""
        text = text.strip()
        host, port = text, default_port
        if text.startswith("["):
            end = text.find("]")
            host = text[1:end]
            rest = text[end + 1 :]
            if rest.startswith(":"):
                port = int(rest[1:])
        elif text.count(":") == 1:
            host, _, number = text.partition(":")
            port = int(number)
        if not host or not 0 < port < 65536:
            raise ValueError(f"invalid host:port {text!r}")
        return cls(host, port, implicit_tls=port == 465)


@dataclass(frozen=True, slots=True)
class Hop:
    """One host to try, with its addresses in the order to try them."""

    name: str  # the MX target (or the domain for an implicit MX): the TLS reference id
    preference: int
    addresses: tuple[str, ...]
    port: int
    implicit_tls: bool = False
    auth: tuple[str, str] | None = None
    secure: bool = False  # an address RRset was DNSSEC-authenticated (RFC 7672 §2.2.2)


@dataclass(frozen=True, slots=True)
class Route:
    """The result of routing one domain: hops to try, or why there are none."""

    domain: str
    hops: tuple[Hop, ...] = ()
    via_mx: bool = True  # False: implicit MX, a transport or the smarthost
    relay: bool = False  # a configured transport or smarthost (no MX policy applies)
    error: str | None = None  # "556 5.1.10 ..." and the like
    temporary: bool = False
    mx_names: tuple[str, ...] = field(default=())
    secure: bool = False  # the MX RRset was DNSSEC-authenticated (RFC 7672 §2.2.1)


NULL_MX = "556 5.1.10 Recipient domain has a null MX and accepts no mail"  # RFC 7505 §4.2


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def _addresses(
    resolver: Resolver, name: str, *, prefer_ipv6: bool, ipv4: bool, ipv6: bool
) -> tuple[list[str], bool, bool]:
    """The addresses of ``name``; whether a lookup failed temporarily; whether an answer
    with addresses was authenticated (RFC 7672 §2.2.2: decides the TLSA lookup)."""
    if _is_ip(name):
        return [name], False, False  # RFC 7672 §2.2: DANE does not apply to an address
    found: dict[str, list[str]] = {"A": [], "AAAA": []}
    temporary = secure = False
    kinds = [k for k, on in (("AAAA", ipv6), ("A", ipv4)) if on]
    for kind in kinds:
        try:
            answer = await resolver.query(name, kind)
        except DnsTemporaryError:
            temporary = True
            continue
        except DnsError:
            continue
        found[kind] = answer.texts()[:MAX_ADDRESSES]
        secure = secure or (answer.authenticated and bool(found[kind]))
    order = ("AAAA", "A") if prefer_ipv6 else ("A", "AAAA")
    return found[order[0]] + found[order[1]], temporary, secure


def _shuffle_equal(records: Sequence[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """RFC 5321 §5.1: sort by preference; randomise among equal preferences."""
    keyed = [(pref, rng.random(), name) for pref, name in records]
    keyed.sort()
    return [(pref, name) for pref, _r, name in keyed]


async def resolve_route(
    domain: str,
    *,
    resolver: Resolver,
    port: int = 25,
    transports: Mapping[str, Relay] | None = None,
    smarthost: Relay | None = None,
    local_names: Sequence[str] = (),
    rng: random.Random | None = None,
    prefer_ipv6: bool = True,
    ipv4: bool = True,
    ipv6: bool = True,
) -> Route:
    """Route ``domain`` (canonical form). Never raises for DNS trouble: a temporary DNS
    failure gives ``Route(error=..., temporary=True)``."""
    rng = rng or random.Random()
    relay = (transports or {}).get(domain) or smarthost
    if relay is not None:
        addrs, temp, _secure = await _addresses(
            resolver, relay.host, prefer_ipv6=prefer_ipv6, ipv4=ipv4, ipv6=ipv6
        )
        if not addrs:
            return _fail(domain, f"451 4.4.3 No address for relay {relay.host}", temporary=True)
        hop = Hop(relay.host, 0, tuple(addrs), relay.port, relay.implicit_tls, relay.auth)
        return Route(domain, (hop,), via_mx=False, relay=True)
    ascii_domain = domain_to_ascii(domain)
    try:
        answer = await resolver.query(ascii_domain, "MX")
    except DnsTemporaryError as exc:
        return _fail(domain, f"451 4.4.3 MX lookup failed: {exc.detail}", temporary=True)
    except DnsError as exc:
        return _fail(domain, f"550 5.1.2 MX lookup failed: {exc.detail}", temporary=False)
    if answer.nxdomain:
        # RFC 5321 §5.1: a domain that does not exist cannot receive mail
        return _fail(domain, "550 5.1.2 Recipient domain does not exist", temporary=False)
    records = answer.mx()
    if len(records) == 1 and records[0].exchange in ("", ".") and records[0].preference == 0:
        return _fail(domain, NULL_MX, temporary=False)  # RFC 7505 §3: "0 ."
    records = [r for r in records if r.exchange not in ("", ".")]  # RFC 7505 §3 misuse
    if not records:
        # RFC 5321 §5.1: no MX records: the domain itself is the implicit MX, preference 0
        addrs, temp, secure = await _addresses(
            resolver, ascii_domain, prefer_ipv6=prefer_ipv6, ipv4=ipv4, ipv6=ipv6
        )
        if not addrs:
            if temp:
                return _fail(domain, "451 4.4.3 address lookup failed", temporary=True)
            return _fail(
                domain, "550 5.1.2 Recipient domain has no MX and no address", temporary=False
            )
        hop = Hop(ascii_domain, 0, tuple(addrs), port, secure=secure)
        # RFC 7672 §2.2.2: no MX: the domain is its own server; ``secure``: denial of MX
        return Route(domain, (hop,), via_mx=False, secure=answer.authenticated)
    ordered = _shuffle_equal([(r.preference, r.exchange) for r in records], rng)
    local = {n.lower().rstrip(".") for n in local_names}
    mine = [pref for pref, name in ordered if name in local]
    if mine:
        # RFC 5321 §5.1: this host is an MX: drop it and every record not more preferred
        ordered = [(pref, name) for pref, name in ordered if pref < min(mine)]
        if not ordered:
            return _fail(
                domain, "554 5.4.6 MX points back to this host (mail loop)", temporary=False
            )
    hops: list[Hop] = []
    temp_any = False
    for pref, name in ordered[:MAX_HOSTS]:
        addrs, temp, secure = await _addresses(
            resolver, name, prefer_ipv6=prefer_ipv6, ipv4=ipv4, ipv6=ipv6
        )
        temp_any = temp_any or temp
        if addrs:
            hops.append(Hop(name, pref, tuple(addrs), port, secure=secure))
    mx_names = tuple(name for _p, name in ordered)
    if not hops:
        # RFC 5321 §5.1: an MX whose host has no address is a temporary condition
        return Route(
            domain,
            error="451 4.4.4 No address for any MX host",
            temporary=True,
            mx_names=mx_names,
        )
    return Route(domain, tuple(hops), via_mx=True, mx_names=mx_names, secure=answer.authenticated)


def _fail(domain: str, error: str, *, temporary: bool) -> Route:
    return Route(domain, error=error, temporary=temporary, via_mx=False)
