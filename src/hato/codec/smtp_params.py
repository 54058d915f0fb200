"""SMTP MAIL/RCPT arguments: reverse- and forward-paths and their ESMTP parameters, sans-IO.

Implements the path grammar of RFC 5321 §4.1.2 (source routes recognised and stripped per
§4.1.1.3, ``<Postmaster>`` per §4.1.1.3, path length per §4.5.3.1.3), the parameter syntax of
RFC 5321 §4.1.2 (esmtp-keyword / esmtp-value, extended to UTF-8 by RFC 6531 §3.3) and these
parameters: SIZE (RFC 1870 §3), BODY=7BIT/8BITMIME (RFC 6152 §2) and BINARYMIME (RFC 3030
§3), SMTPUTF8 (RFC 6531 §3.4), RET, ENVID, NOTIFY, ORCPT with xtext (RFC 3461 §4) including
the RFC 6533 "utf-8" address type, AUTH (RFC 4954 §5) and REQUIRETLS (RFC 8689 §2).
Errors carry the reply of RFC 5321 §4.1.1.11: 555 for a parameter not recognised or not
offered, 501 for a bad value or a repeated parameter (RFC 3461 §4.1-4.4).

Leaves out: FUTURERELEASE, MT-PRIORITY, DELIVERBY and other parameters Hato does not offer
(they get 555).

Security: all limits are checked before values are decoded; decoded values are bounded.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hato.core.address import MAX_PATH_OCTETS, Address, normalize_domain
from hato.core.errors import AddressError, ProtocolError
from hato.core.reply import Reply

MAX_ENVID = 100  # RFC 3461 §4.4: ENVID MAY be up to 100 characters
MAX_ORCPT = 500  # RFC 3461 §5.4 (c): ORCPT parameter, 500 characters
MAX_SIZE_DIGITS = 20  # RFC 1870 §3: size-value ::= 1*20DIGIT

# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# RFC 5321 §4.1.2: esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 per RFC 6531 §3.3
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
# RFC 3461 §4: xtext = *( xchar / hexchar ), hexchar = "+" 2(upper-case HEX)
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_XHEX = re.compile(r"\+([0-9A-F]{2})")
# RFC 6533 §3: utf-8-addr-xtext escapes non-ASCII scalar values as \x{HEXPOINT}
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-F]{2,6})\}")
# RFC 5321 §4.1.2: A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain
_AT_DOMAIN = r"@(?:\[[^\]\s]*\]|[^\s,:@\[\]<>]+)"
_ADL = re.compile(rf"{_AT_DOMAIN}(?:,{_AT_DOMAIN})*:")

INVALID_ARGS = "5.5.4"  # RFC 3463: Invalid command arguments


class ParameterError(ProtocolError):
    """A MAIL or RCPT argument the server refuses; ``smtp_reply`` is what the peer gets."""

    def __init__(self, detail: str, smtp_reply: Reply) -> None:
        super().__init__(detail, reply=smtp_reply.text)
        self.smtp_reply = smtp_reply


def _bad(code: int, enhanced: str, text: str) -> ParameterError:
    return ParameterError(text, Reply(code, enhanced, text))


class Body(enum.Enum):
    SEVEN_BIT = "7BIT"
    EIGHT_BIT = "8BITMIME"  # RFC 6152 §2
    BINARY = "BINARYMIME"  # RFC 3030 §3


class Ret(enum.Enum):
    FULL = "FULL"  # RFC 3461 §4.3
    HDRS = "HDRS"


class Notify(enum.Enum):
    SUCCESS = "SUCCESS"  # RFC 3461 §4.1
    FAILURE = "FAILURE"
    DELAY = "DELAY"


@dataclass(frozen=True, slots=True)
class OriginalRecipient:
    """RFC 3461 §4.2 ORCPT: the address type and the decoded address."""

    addr_type: str
    address: str


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: Body = Body.SEVEN_BIT
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None
    auth: str | None = None  # RFC 4954 §5, decoded; "<>" when the client sent that
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: frozenset[Notify] | None = None  # None: no NOTIFY; empty: NOTIFY=NEVER
    orcpt: OriginalRecipient | None = None


@dataclass(frozen=True, slots=True)
class ParamOffer:
    """Which parameter-bearing extensions the server advertised on this connection."""

    binarymime: bool = True
    smtputf8: bool = True
    dsn: bool = True
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed reverse- or forward-path: the mailbox (None: the null path ``<>``)."""

    address: Address | None
    postmaster: bool = False  # RCPT TO:<Postmaster> without a domain (RFC 5321 §4.1.1.3)

    @property
    def needs_smtputf8(self) -> bool:
        return self.address is not None and not str(self.address).isascii()


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 §4 xtext; ParameterError (501) when malformed."""
    if not _XTEXT.fullmatch(text):
        raise _bad(501, INVALID_ARGS, "malformed xtext value")
    return _XHEX.sub(lambda m: chr(int(m.group(1), 16)), text)


def xtext_encode(text: str) -> str:
    """Encode to RFC 3461 §4 xtext: "+", "=" and characters outside 33-126 become +HH."""
    out = []
    for ch in text:
        if 33 <= ord(ch) <= 126 and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def split_path(text: str) -> tuple[str, str]:
    """Split ``<path> params`` into the bracketed path (with brackets) and the rest.

    Quoted strings inside the path may contain ">"; a missing ">" is a 501 error."""
    text = text.lstrip(" ")  # lenient: "MAIL FROM: <a@b>" is common (RFC 5321 §4.1.2 has none)
    if not text.startswith("<"):
        raise _bad(501, INVALID_ARGS, "path must be enclosed in <>")
    quoted = escaped = False
    for i, ch in enumerate(text[1:], start=1):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return text[: i + 1], text[i + 1 :]
    raise _bad(501, INVALID_ARGS, "path must be enclosed in <>")


def parse_path(bracketed: str, *, sender: bool) -> Path:
    """Parse ``<...>``: the null path (MAIL only), ``<Postmaster>`` (RCPT only), a source
    route (recognised, checked, stripped), then the mailbox."""
    enhanced = "5.1.7" if sender else "5.1.3"  # RFC 3463: bad sender's / destination syntax
    if len(bracketed.encode("utf-8")) > MAX_PATH_OCTETS:  # RFC 5321 §4.5.3.1.3: 256 octets
        raise _bad(501, enhanced, "path too long")
    inner = bracketed[1:-1]
    if inner == "":
        if sender:
            return Path(None)  # RFC 5321 §4.5.5: the null reverse-path
        raise _bad(501, enhanced, "empty forward-path")
    if not sender and inner.lower() == "postmaster":
        return Path(None, postmaster=True)  # RFC 5321 §4.1.1.3: "<Postmaster>" is accepted
    route = _ADL.match(inner)
    if route is not None:
        # RFC 5321 §4.1.1.3: recognise the source route, then strip it.
        for hop in route.group(0)[:-1].split(","):
            _check_route_domain(hop[1:], enhanced)
        inner = inner[route.end() :]
    try:
        address = Address.parse(inner)
    except AddressError:
        raise _bad(501, enhanced, "syntax error in mailbox address") from None
    return Path(address)


def _check_route_domain(domain: str, enhanced: str) -> None:
    if domain.startswith("[") and domain.endswith("]"):
        try:
            Address.parse(f"x@{domain}")
        except AddressError:
            raise _bad(501, enhanced, "invalid source route") from None
        return
    try:
        normalize_domain(domain)
    except AddressError:
        raise _bad(501, enhanced, "invalid source route") from None


def _split_params(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for token in text.split():
        keyword, eq, value = token.partition("=")
        if not _KEYWORD.fullmatch(keyword) or (eq and not _VALUE.fullmatch(value)):
            raise _bad(501, INVALID_ARGS, "syntax error in parameters")
        upper = keyword.upper()
        if upper in seen:  # RFC 3461 §4.1-4.4: a repeated parameter is a 501 error
            raise _bad(501, INVALID_ARGS, f"duplicate {upper} parameter")
        seen.add(upper)
        out.append((upper, value if eq else None))
    return out


def _need_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise _bad(501, INVALID_ARGS, f"{keyword} needs a value")
    return value


def _no_value(keyword: str, value: str | None) -> None:
    if value is not None:
        raise _bad(501, INVALID_ARGS, f"{keyword} takes no value")


def _unrecognised(keyword: str) -> ParameterError:
    # RFC 5321 §4.1.1.11: 555 for parameters not recognised or not implemented
    return _bad(555, INVALID_ARGS, f"{keyword} parameter not recognised")


def parse_mail_params(text: str, offer: ParamOffer) -> MailParams:
    """The parameters after ``MAIL FROM:<path>``; ParameterError with the reply to send."""
    size: int | None = None
    body = Body.SEVEN_BIT
    smtputf8 = requiretls = False
    ret: Ret | None = None
    envid: str | None = None
    auth: str | None = None
    for keyword, value in _split_params(text):
        if keyword == "SIZE":
            value = _need_value(keyword, value)
            if not value.isascii() or not value.isdigit() or len(value) > MAX_SIZE_DIGITS:
                raise _bad(501, INVALID_ARGS, "SIZE must be 1 to 20 digits")  # RFC 1870 §3
            size = int(value)
        elif keyword == "BODY":
            try:
                body = Body(_need_value(keyword, value).upper())
            except ValueError:
                raise _bad(501, INVALID_ARGS, "BODY must be 7BIT or 8BITMIME") from None
            if body is Body.BINARY and not offer.binarymime:
                raise _unrecognised("BODY=BINARYMIME")
        elif keyword == "SMTPUTF8" and offer.smtputf8:
            _no_value(keyword, value)  # RFC 6531 §3.4: no value
            smtputf8 = True
        elif keyword == "REQUIRETLS" and offer.requiretls:
            _no_value(keyword, value)  # RFC 8689 §2: no esmtp-value
            requiretls = True
        elif keyword == "RET" and offer.dsn:
            try:
                ret = Ret(_need_value(keyword, value).upper())  # RFC 3461 §4.3
            except ValueError:
                raise _bad(501, INVALID_ARGS, "RET must be FULL or HDRS") from None
        elif keyword == "ENVID" and offer.dsn:
            raw = _need_value(keyword, value)
            if len(raw) > 3 * MAX_ENVID:
                raise _bad(501, INVALID_ARGS, "ENVID too long")
            envid = xtext_decode(raw)
            # RFC 3461 §4.4: at most 100 characters of printable ASCII
            if len(envid) > MAX_ENVID or not all(32 <= ord(c) <= 126 for c in envid):
                raise _bad(501, INVALID_ARGS, "ENVID too long or not printable")
        elif keyword == "AUTH":
            # RFC 4954 §5: AUTH=mailbox or AUTH=<>, xtext-encoded; recognised always, trusted
            # only by the server's policy (never from an unauthenticated client).
            auth = xtext_decode(_need_value(keyword, value))
        else:
            raise _unrecognised(keyword)
    return MailParams(size, body, smtputf8, ret, envid, auth, requiretls)


def parse_rcpt_params(text: str, offer: ParamOffer, *, smtputf8: bool) -> RcptParams:
    """The parameters after ``RCPT TO:<path>``; ParameterError with the reply to send."""
    notify: frozenset[Notify] | None = None
    orcpt: OriginalRecipient | None = None
    for keyword, value in _split_params(text):
        if keyword == "NOTIFY" and offer.dsn:
            notify = _parse_notify(_need_value(keyword, value))
        elif keyword == "ORCPT" and offer.dsn:
            orcpt = _parse_orcpt(_need_value(keyword, value), smtputf8=smtputf8)
        else:
            raise _unrecognised(keyword)
    return RcptParams(notify, orcpt)


def _parse_notify(value: str) -> frozenset[Notify]:
    """RFC 3461 §4.1: "NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY")."""
    items = [item.upper() for item in value.split(",")]
    if items == ["NEVER"]:
        return frozenset()
    try:
        parsed = [Notify(item) for item in items]
    except ValueError:
        raise _bad(501, INVALID_ARGS, "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY") from None
    if len(set(parsed)) != len(parsed):
        raise _bad(501, INVALID_ARGS, "NOTIFY repeats a value")
    return frozenset(parsed)


def _unescape_scalar(match: re.Match[str]) -> str:
    value = int(match.group(1), 16)
    # RFC 6533 §3: the escape names a Unicode scalar value (no surrogates, at most 10FFFF)
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF or value < 0x80:
        raise _bad(501, INVALID_ARGS, "invalid \\x{} escape in ORCPT")
    return chr(value)


def _parse_orcpt(value: str, *, smtputf8: bool) -> OriginalRecipient:
    """RFC 3461 §4.2: ORCPT=addr-type ";" xtext (RFC 6533 §3 adds the "utf-8" type)."""
    if len(value) > MAX_ORCPT:  # RFC 3461 §5.4 (c)
        raise _bad(501, INVALID_ARGS, "ORCPT too long")
    addr_type, semi, encoded = value.partition(";")
    if not semi or not addr_type or not encoded:
        raise _bad(501, INVALID_ARGS, "ORCPT must be addr-type;address")
    kind = addr_type.lower()
    if kind == "rfc822":
        address = xtext_decode(encoded)
    elif kind == "utf-8":
        if not encoded.isascii() and not smtputf8:
            # RFC 6533 §3: raw UTF-8 (utf-8-addr-unitext) only with SMTPUTF8
            raise _bad(501, INVALID_ARGS, "UTF-8 in ORCPT needs SMTPUTF8")
        address = xtext_decode(encoded) if encoded.isascii() else encoded
        address = _UTF8_ESCAPE.sub(_unescape_scalar, address)
    else:
        raise _bad(501, INVALID_ARGS, f"unknown ORCPT address type {addr_type!r}")
    if "@" not in address or any(ord(c) < 32 for c in address):
        raise _bad(501, INVALID_ARGS, "ORCPT address is malformed")
    return OriginalRecipient(kind, address)
