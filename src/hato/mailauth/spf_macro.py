"""SPF macro strings (RFC 7208 §7): parse once into parts, expand per check.

Implements the macro-string / domain-spec / explain-string grammar of RFC 7208 §7.1 and
§4.6.1 (including the domain-end rule), the macro letters of §7.2 (``c``, ``r``, ``t`` only
in explanations), the transformers and delimiters of §7.3, URL escaping for upper-case
letters (§7.3), and the 253-octet left truncation of expanded domain names (§7.3).

Left out: nothing of §7; the ``p`` macro's DNS work is done by the caller (``spf.py``), which
passes the validated name in. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote

from hato.core.errors import HatoError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpfSyntaxError(HatoError):
    """An SPF record, macro string or domain-spec violates the RFC 7208 ABNF (permerror)."""

    reply = "SPF record syntax error"


# RFC 7208 §7.1: macro-letter; c, r and t are allowed only in "exp" text (§7.2).
_LETTERS = frozenset("slodiphcrtv")
_EXP_ONLY = frozenset("crt")
_DELIMITERS = frozenset(".-+,/_=")  # RFC 7208 §7.1 delimiter
# RFC 7208 §7.1: macro-literal = %x21-24 / %x26-7E (visible characters except "%").
_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]+")
_EXPAND = re.compile(r"%\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}", re.IGNORECASE)
# RFC 7208 §7.1 toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" )
# alphanum ): not all-numeric, no leading or trailing hyphen.
_TOPLABEL = re.compile(
    r"(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]+"  # *alphanum ALPHA *alphanum
    r"|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9]"  # 1*alphanum "-" *( alphanum / "-" ) alphanum
)
MAX_DOMAIN = 253  # RFC 7208 §7.3 (octets, in text form without trailing dot)


@dataclass(frozen=True)
class Macro:
    """One ``%{...}`` expansion."""

    letter: str  # lower-case
    keep: int | None  # the DIGIT transformer: right-hand parts kept
    reverse: bool
    delimiters: str  # empty means "."
    url_escape: bool  # upper-case letter (RFC 7208 §7.3)


MacroPart = str | Macro


@dataclass(frozen=True)
class MacroString:
    """A parsed macro-string: literal text and macros, in order."""

    parts: tuple[MacroPart, ...]
    source: str
    ends_in_macro: bool = False  # the last token is a macro-expand (RFC 7208 §7.1)

    @property
    def uses_ptr(self) -> bool:
        """True when expansion needs the validated client name (``%{p}``, RFC 7208 §7.3)."""
        return any(isinstance(p, Macro) and p.letter == "p" for p in self.parts)


@dataclass(frozen=True)
class MacroContext:
    """The values macros expand to (RFC 7208 §7.2)."""

    sender: str  # s: <sender>
    local_part: str  # l
    sender_domain: str  # o
    ip: IPAddress  # i, c, v
    helo: str  # h
    receiver: str = "unknown"  # r
    timestamp: int = 0  # t
    upper_hex: bool = False  # the client IPv6 address was written with upper-case hex digits


def parse_macro_string(text: str, *, explain: bool = False) -> MacroString:
    """Parse a macro-string (``explain=True``: an explain-string, where SP and c/r/t are legal)."""
    parts: list[MacroPart] = []
    pos = 0
    last_macro = -1  # text position just after the last macro-expand
    while pos < len(text):
        char = text[pos]
        if char == "%":
            last_macro = pos + 2
            pair = text[pos : pos + 2]
            if pair == "%%":
                parts.append("%")
                pos += 2
                continue
            if pair == "%_":
                parts.append(" ")
                pos += 2
                continue
            if pair == "%-":
                parts.append("%20")
                pos += 2
                continue
            match = _EXPAND.match(text, pos)
            if match is None:
                raise SpfSyntaxError(f"bad macro at {text[pos:pos + 12]!r}")  # RFC 7208 §7.1
            letter, digits, reverse, delimiters = match.groups()
            lower = letter.lower()
            if lower not in _LETTERS:
                raise SpfSyntaxError(f"unknown macro letter {letter!r}")  # RFC 7208 §7.1
            if lower in _EXP_ONLY and not explain:
                raise SpfSyntaxError(f"macro {letter!r} only allowed in exp")  # RFC 7208 §7.2
            keep = None
            if digits:
                keep = int(digits)
                if keep == 0:
                    raise SpfSyntaxError("macro DIGIT transformer must be nonzero")  # §7.3
            parts.append(
                Macro(lower, keep, bool(reverse), delimiters, url_escape=letter.isupper())
            )
            pos = last_macro = match.end()
            continue
        if explain and char == " ":  # RFC 7208 §7.1 explain-string = *( macro-string / SP )
            parts.append(" ")
            pos += 1
            continue
        match = _LITERAL.match(text, pos)
        if match is None:
            raise SpfSyntaxError(f"illegal character {char!r} in macro string")  # §7.1
        parts.append(match.group())
        pos = match.end()
    return MacroString(tuple(parts), text, ends_in_macro=bool(text) and last_macro == len(text))


def parse_domain_spec(text: str) -> MacroString:
    """Parse a domain-spec: a macro-string ending in a macro or ``.toplabel[.]`` (§7.1)."""
    parsed = parse_macro_string(text)
    if not parsed.parts:
        raise SpfSyntaxError("empty domain-spec")
    if parsed.ends_in_macro:  # RFC 7208 §7.1 domain-end = ... / macro-expand
        return parsed
    body = text[:-1] if text.endswith(".") else text
    head, dot, last = body.rpartition(".")
    # RFC 7208 §7.1 domain-end = ( "." toplabel [ "." ] ): at least one dot before the label.
    if not dot or not head or not _TOPLABEL.fullmatch(last):
        raise SpfSyntaxError(f"domain-spec {text!r} does not end in a valid top label")
    return parsed


def ip_macro_value(ip: IPAddress, *, upper_hex: bool = False) -> str:
    """The ``i`` macro: dotted quad, or dot-separated nibbles for IPv6 (RFC 7208 §7.3).

    The RFC leaves the case of hex nibbles open (DNS names compare case-insensitively); we
    keep the case the address was given in, as the openspf suite expects.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    nibbles = ".".join(ip.exploded.replace(":", ""))
    return nibbles.upper() if upper_hex else nibbles


def expand(
    macro: MacroString, context: MacroContext, *, domain: str, ptr_name: str | None = None
) -> str:
    """Expand ``macro`` with ``domain`` as ``%{d}``; ``ptr_name`` is the ``%{p}`` value."""
    out: list[str] = []
    for part in macro.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = _letter_value(part.letter, context, domain=domain, ptr_name=ptr_name)
        value = _transform(value, part)
        if part.url_escape:
            value = quote(value, safe="-._~")  # RFC 7208 §7.3: RFC 3986 unreserved kept
        out.append(value)
    return "".join(out)


def _letter_value(letter: str, ctx: MacroContext, *, domain: str, ptr_name: str | None) -> str:
    if letter == "s":
        return ctx.sender
    if letter == "l":
        return ctx.local_part
    if letter == "o":
        return ctx.sender_domain
    if letter == "d":
        return domain
    if letter == "i":
        return ip_macro_value(ctx.ip, upper_hex=ctx.upper_hex)
    if letter == "p":
        return ptr_name or "unknown"
    if letter == "v":
        return "in-addr" if isinstance(ctx.ip, ipaddress.IPv4Address) else "ip6"
    if letter == "h":
        return ctx.helo
    if letter == "c":
        return str(ctx.ip)
    if letter == "r":
        return ctx.receiver
    return str(ctx.timestamp)  # "t"


def _transform(value: str, macro: Macro) -> str:
    """RFC 7208 §7.3: split on delimiters, optionally reverse, keep the right-most N, join "."."""
    if macro.keep is None and not macro.reverse and not macro.delimiters:
        return value
    delimiters = macro.delimiters or "."
    pattern = "[" + re.escape(delimiters) + "]"
    labels = re.split(pattern, value)
    if macro.reverse:
        labels.reverse()
    if macro.keep is not None:
        labels = labels[-macro.keep :]
    return ".".join(labels)


def truncate_domain(name: str) -> str:
    """RFC 7208 §7.3: drop left-most labels until the name is at most 253 characters."""
    while len(name) > MAX_DOMAIN and "." in name:
        name = name.split(".", 1)[1]
    return name
