"""E-mail addresses and domain names: parsing, IDNA and SMTPUTF8.

Implements the RFC 5321 §4.1.2 Mailbox grammar (Dot-string or Quoted-string local part,
Domain or address-literal), extended to UTF-8 by RFC 6531 §3.3, with the length limits of
RFC 5321 §4.5.3.1. Domains are kept in one canonical form: lower-case U-labels (NFC) per
IDNA2008/UTS #46, with ``ascii`` giving the A-label form for DNS and for peers without SMTPUTF8.

Deliberately left out: source routes (RFC 5321 §4.1.2 "A-d-l", which callers strip or refuse),
comments and obsolete RFC 5322 forms (those belong to the message header parser).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeVar

import idna

from hato.core.errors import AddressError

# RFC 5321 §4.1.2 atext plus, per RFC 6531 §3.3, any UTF-8 non-ASCII character.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# RFC 5321 §4.1.2 qtextSMTP (%d32-33 / %d35-91 / %d93-126) and quoted-pairSMTP (%d92 %d32-126).
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LDH_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

_T = TypeVar("_T")

MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH_OCTETS = 256  # RFC 5321 §4.5.3.1.3 (including the angle brackets)


_CACHE_SIZE = 4096  # recent parses kept (a busy MX sees the same few addresses again and again)
_domains: dict[str, str] = {}
_addresses: dict[str, Address] = {}


def _remember(cache: dict[str, _T], key: str, value: _T) -> _T:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()  # bounded; refilled by the next lookups
    cache[key] = value
    return value


def normalize_domain(text: str) -> str:
    """Return the canonical (lower-case U-label) form of a domain name, or raise AddressError.

    Accepts A-labels (``xn--...``) and U-labels; a trailing dot is refused. (Valid names are
    remembered: the answer depends on the text alone.)
    """
    known = _domains.get(text)
    if known is not None:
        return known
    return _remember(_domains, text, _normalize_domain(text))


def _normalize_domain(text: str) -> str:
    if not text or text.endswith(".") or len(text.encode("utf-8")) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"invalid domain {text!r}")
    if text.isascii():
        lowered = text.lower()
        labels = lowered.split(".")
        if all(_LDH_LABEL.fullmatch(lab) for lab in labels):
            if not any(lab.startswith("xn--") for lab in labels):
                return lowered
            try:
                return idna.decode(lowered)
            except idna.IDNAError as exc:
                raise AddressError(f"invalid domain {text!r}: {exc}") from None
        raise AddressError(f"invalid domain {text!r}")
    try:
        ascii_form = idna.encode(text, uts46=True).decode("ascii")
        return idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"invalid domain {text!r}: {exc}") from None


def domain_to_ascii(domain: str) -> str:
    """The A-label form of a canonical domain (what goes into DNS and non-SMTPUTF8 peers)."""
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii")


def _parse_address_literal(text: str) -> str:
    """RFC 5321 §4.1.3 address literals: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise AddressError(f"invalid address literal {text!r}") from None


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox ``local@domain``: local part as written, domain canonical (or a literal)."""

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``local@domain`` (no angle brackets). Raises AddressError naming the problem.
        (Addresses are immutable: a text parsed recently gives the same object again.)"""
        if cls is Address:
            known = _addresses.get(text)
            if known is not None:
                return known
            return _remember(_addresses, text, cls._parse(text))
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Address:
        at = text.rfind("@")
        if at <= 0 or at == len(text) - 1:
            raise AddressError(f"invalid address {text!r}: expected local@domain")
        local, domain = text[:at], text[at + 1 :]
        if not (_DOT_STRING.fullmatch(local) or _QUOTED.fullmatch(local)):
            raise AddressError(f"invalid local part in {text!r}")
        if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
            raise AddressError(f"local part of {text!r} is longer than 64 octets")
        if domain.startswith("[") and domain.endswith("]"):
            return cls(local, _parse_address_literal(domain))
        return cls(local, normalize_domain(domain))

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def needs_smtputf8(self) -> bool:
        """True when the address cannot be written in ASCII (RFC 6531 §3.2)."""
        return not self.local.isascii()

    @property
    def key(self) -> str:
        """The lookup key: local part case-folded (Hato treats local parts case-insensitively)."""
        return f"{self.unquoted_local.lower()}@{self.domain}"

    @property
    def unquoted_local(self) -> str:
        if self.local.startswith('"'):
            return re.sub(r"\\(.)", r"\1", self.local[1:-1])
        return self.local

    def ascii_domain(self) -> str:
        return self.domain if self.is_literal else domain_to_ascii(self.domain)

    def split_detail(self, separator: str = "+") -> tuple[str, str | None]:
        """RFC 5233 subaddress: ``user+detail`` -> ("user", "detail"); no separator -> None."""
        local = self.unquoted_local
        if separator and separator in local:
            user, detail = local.split(separator, 1)
            return user, detail
        return local, None

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def parse_address(text: str) -> Address:
    """Convenience: ``Address.parse`` that also strips surrounding whitespace."""
    return Address.parse(text.strip())
