"""The injected DNS resolver: a Protocol, its answer and error types, and a dict-backed fake.

Every module that looks something up in the DNS takes a ``Resolver`` argument
(CONVENTIONS.md §6); the real one (``hato.mailauth.resolver.DnsPythonResolver``) sits on
dnspython, tests pass a ``StaticResolver`` or point the real one at ``tests/dnsserver.py``.

Answer shapes, per record type:

* ``A`` / ``AAAA``: the address as text (``"192.0.2.1"``, ``"2001:db8::1"``);
* ``TXT``: the character-strings of one record joined without separator (RFC 7208 §3.3,
  RFC 6376 §3.6.2.2), decoded as UTF-8 with undecodable octets replaced;
* ``MX``: ``MxRecord(preference, exchange)``; ``PTR`` / ``CNAME``: the target name;
* ``TLSA``: ``TlsaRecord(usage, selector, mtype, data)`` (RFC 6698 §2.1).

Names in answers are lower-case, without the trailing dot. ``nxdomain`` distinguishes
"Name Error" (RCODE 3) from NODATA (RCODE 0, no records; RFC 2308 §2.1/§2.2), which SPF's
void-lookup limit (RFC 7208 §4.6.4) and DMARC's domain-existence test need.
``authenticated`` mirrors the AD bit (RFC 4035 §3.2.3), for DANE (RFC 7672).

Left out: no I/O here (pure types), no caching, no other record types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from hato.core.errors import HatoError

RDTYPES = frozenset({"A", "AAAA", "MX", "TXT", "PTR", "TLSA", "CNAME"})


class MxRecord(NamedTuple):
    """One MX record (RFC 1035 §3.3.9)."""

    preference: int
    exchange: str


class TlsaRecord(NamedTuple):
    """One TLSA record (RFC 6698 §2.1)."""

    usage: int
    selector: int
    mtype: int
    data: bytes


DnsRecord = str | MxRecord | TlsaRecord


@dataclass(frozen=True)
class DnsAnswer:
    """The records of one (name, type) query; empty with ``nxdomain`` False means NODATA."""

    name: str
    rdtype: str
    rrs: tuple[DnsRecord, ...] = ()
    nxdomain: bool = False
    authenticated: bool = False

    @property
    def void(self) -> bool:
        """True for NXDOMAIN or NODATA: the "void lookup" of RFC 7208 §4.6.4."""
        return not self.rrs

    def texts(self) -> list[str]:
        """The A/AAAA/TXT/PTR/CNAME values (strings) of this answer."""
        return [rr for rr in self.rrs if isinstance(rr, str)]

    def mx(self) -> list[MxRecord]:
        """The MX records of this answer."""
        return [rr for rr in self.rrs if isinstance(rr, MxRecord)]

    def tlsa(self) -> list[TlsaRecord]:
        """The TLSA records of this answer."""
        return [rr for rr in self.rrs if isinstance(rr, TlsaRecord)]


class DnsError(HatoError):
    """A lookup failed permanently (malformed name, server refused the question)."""

    reply = "DNS lookup failed"


class DnsTemporaryError(DnsError):
    """A lookup may succeed later: timeout, SERVFAIL, no server reachable."""

    temporary = True
    reply = "temporary DNS failure"


class Resolver(Protocol):
    """What every DNS consumer in Hato is given."""

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up ``rdtype`` records at ``name``; raises DnsTemporaryError or DnsError."""
        ...


def canonical_name(name: str) -> str:
    """Lower-case, without the trailing dot: the form names take in zones and answers."""
    return name.rstrip(".").lower() if name != "." else ""


TIMEOUT = "TIMEOUT"
SERVFAIL = "SERVFAIL"

ZoneValue = str | Sequence[DnsRecord]


@dataclass
class StaticResolver:
    """A dict-backed resolver for unit tests.

    ``zone`` maps a name to ``{rdtype: [records...]}``; a record list may be replaced by the
    marker ``TIMEOUT`` or ``SERVFAIL`` (raises DnsTemporaryError) for that type, under the key
    ``"*"`` for every type not listed, and the whole per-name mapping may be such a marker.
    A name that is absent, with no name below it in the zone, is NXDOMAIN; a present name (or
    an empty non-terminal) without the asked type is NODATA. CNAMEs are followed (up to 8
    links) unless CNAME itself is asked.
    ``secure`` names answer with ``authenticated`` set. ``queries`` logs every question asked.
    """

    zone: Mapping[str, Mapping[str, ZoneValue] | str] = field(default_factory=dict)
    secure: Iterable[str] = ()
    cname_depth: int = 8
    queries: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._zone = {canonical_name(k): v for k, v in self.zone.items()}
        self._secure = {canonical_name(n) for n in self.secure}

    def _exists(self, name: str) -> bool:
        if name in self._zone:
            return True
        suffix = "." + name
        return any(other.endswith(suffix) for other in self._zone)

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        rdtype = rdtype.upper()
        self.queries.append((name, rdtype))
        current = canonical_name(name)
        hops = 0
        while True:
            if any(len(label) > 63 for label in current.split(".")):
                raise DnsError(f"label too long in {name!r}")  # RFC 1035 §2.3.4
            entry = self._zone.get(current)
            if isinstance(entry, str):
                raise DnsTemporaryError(f"{entry} for {current} {rdtype}")
            if entry is None:
                if self._exists(current):
                    return DnsAnswer(current, rdtype)
                return DnsAnswer(current, rdtype, nxdomain=True)
            value = entry.get(rdtype, entry.get("*"))
            if isinstance(value, str):
                raise DnsTemporaryError(f"{value} for {current} {rdtype}")
            secure = current in self._secure
            if value:
                return DnsAnswer(current, rdtype, tuple(value), authenticated=secure)
            cname = entry.get("CNAME")
            if rdtype == "CNAME" or not cname or isinstance(cname, str):
                return DnsAnswer(current, rdtype, authenticated=secure)
            if hops >= self.cname_depth or not isinstance(cname[0], str):
                return DnsAnswer(current, rdtype, authenticated=secure)
            current = canonical_name(cname[0])
            hops += 1
