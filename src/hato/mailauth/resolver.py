"""The real DNS resolver: ``hato.core.dns.Resolver`` on dnspython's asyncio stub resolver.

Sends recursive queries (RD) with the AD bit set (RFC 6840 §5.7, so a validating upstream
reports authenticated data) to the configured nameservers, over UDP with TCP fallback on
truncation (RFC 1035 §4.2.1, RFC 7766), with a per-query timeout. CNAME chains are followed by
the upstream and dnspython; answers are converted to the shapes documented in
``hato.core.dns``. NXDOMAIN and NODATA become empty answers (``nxdomain`` tells them apart);
timeouts, SERVFAIL and unreachable servers raise ``DnsTemporaryError``; a malformed name or a
server that refuses the question raises ``DnsError``.

Left out: caching (the upstream recursive resolver caches), DNSSEC validation of its own
(trusts the AD bit, so point it only at a trusted local validator), EDNS client subnet.

Security: this module sends queries to the network; names come from mail (untrusted) and are
length-checked by dnspython before they go out. Only the configured servers are contacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver

from hato.core.dns import (
    RDTYPES,
    DnsAnswer,
    DnsError,
    DnsRecord,
    DnsTemporaryError,
    MxRecord,
    TlsaRecord,
    canonical_name,
)


class DnsPythonResolver:
    """Resolver over UDP/TCP to ``nameservers`` (addresses) on ``port``.

    ``timeout`` bounds one query, retries included. Built with ``from_system()`` it reads
    ``/etc/resolv.conf`` instead.
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        *,
        port: int = 53,
        timeout: float = 5.0,
    ) -> None:
        if not nameservers:
            raise DnsError("no nameserver configured")
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._configure(timeout)

    @classmethod
    def from_system(cls, *, timeout: float = 5.0) -> DnsPythonResolver:
        """The resolver of ``/etc/resolv.conf``."""
        self = cls.__new__(cls)
        self._resolver = dns.asyncresolver.Resolver(configure=True)
        self._configure(timeout)
        return self

    def _configure(self, timeout: float) -> None:
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 2.0)
        # RFC 6840 §5.7: set AD in queries to learn whether the upstream validated the data.
        self._resolver.flags = dns.flags.RD | dns.flags.AD
        self._resolver.use_edns(0, 0, 1232)
        self._resolver.retry_servfail = False

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        rdtype = rdtype.upper()
        if rdtype not in RDTYPES:
            raise DnsError(f"unsupported record type {rdtype}")
        qname = canonical_name(name)
        try:
            dname = dns.name.from_text(qname or ".")
        except (dns.exception.DNSException, UnicodeError) as exc:
            raise DnsError(f"malformed name {name!r}: {exc}") from None
        try:
            answer = await self._resolver.resolve(
                dname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(qname, rdtype, nxdomain=True)
        except dns.resolver.YXDOMAIN as exc:
            raise DnsError(f"{qname} {rdtype}: {exc}") from None
        except (dns.resolver.LifetimeTimeout, dns.exception.Timeout) as exc:
            raise DnsTemporaryError(f"{qname} {rdtype}: timeout ({exc})") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsTemporaryError(f"{qname} {rdtype}: {exc}") from None
        except (dns.exception.DNSException, EOFError, OSError) as exc:
            raise DnsTemporaryError(f"{qname} {rdtype}: {exc!r}") from None
        records: list[DnsRecord] = []
        if answer.rrset is not None:
            records = [_convert(rdata) for rdata in answer.rrset]
        authenticated = bool(answer.response.flags & dns.flags.AD)
        return DnsAnswer(qname, rdtype, tuple(records), authenticated=authenticated)


def _convert(rdata: Any) -> DnsRecord:
    kind = dns.rdatatype.to_text(rdata.rdtype)
    if kind in ("A", "AAAA"):
        return str(rdata.address)
    if kind == "TXT":
        # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: the strings of one record are concatenated.
        raw = b"".join(rdata.strings)
        return raw.decode("utf-8", errors="replace")
    if kind == "MX":
        exchange = canonical_name(rdata.exchange.to_text())
        return MxRecord(int(rdata.preference), exchange)
    if kind in ("PTR", "CNAME"):
        return canonical_name(rdata.target.to_text())
    if kind == "TLSA":
        return TlsaRecord(
            int(rdata.usage),
            int(rdata.selector),
            int(rdata.mtype),
            bytes(rdata.cert),
        )
    raise DnsError(f"unexpected record type {kind}")
