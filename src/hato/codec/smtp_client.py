"""The client side of SMTP, sans-IO: reply parsing, EHLO capabilities, commands, body framing.

Implements RFC 5321 §4.2 (replies: ``code SP text`` and ``code "-" text`` continuation lines,
§4.2.1 classes), §4.1.1 (command syntax, CRLF), §4.5.2 (transparency: dot-stuffing; the body
ends with CRLF "." CRLF), §4.5.3.1.5 (reply lines of at most 512 octets; we accept more but
bound them), the enhanced status codes of RFC 2034 §4 / RFC 3463 §2, the EHLO keywords of
RFC 1870 (SIZE), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING, BINARYMIME), RFC 3207
(STARTTLS), RFC 3461 (DSN: RET, ENVID, NOTIFY, ORCPT with xtext), RFC 4954 (AUTH), RFC 6152
(8BITMIME), RFC 6531 (SMTPUTF8) and RFC 8689 (REQUIRETLS), and BDAT chunk framing (RFC 3030
§2).

Leaves out: I/O and policy (``hato.outbound.client`` drives these pieces), the server side
(``hato.codec.smtp``), SASL mechanisms other than PLAIN and LOGIN framing.

Security: reply lines and multi-line replies are bounded (``MAX_REPLY_LINE``,
``MAX_REPLY_LINES``) so a hostile server cannot make the client buffer without limit;
addresses and parameter values are checked for CR, LF and spaces before they are rendered,
so nothing from a message can inject a command.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from hato.core.address import MAX_DOMAIN_OCTETS, MAX_LOCAL_OCTETS, Address
from hato.core.errors import ProtocolError, UsageError

MAX_REPLY_LINE = 4096  # RFC 5321 §4.5.3.1.5 says 512; real servers exceed it a little
MAX_REPLY_LINES = 200
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
_CODES = {str(n).encode(): n for n in range(200, 600)}  # RFC 5321 §4.2.1: 2yz to 5yz
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"  # RFC 5321 §4.1.2 atext (ASCII)
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"  # a lower-case LDH label
_PLAIN_PATH = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:{_LABEL}\.)*{_LABEL}")


@dataclass(frozen=True, slots=True)
class ServerReply:
    """One complete reply from the server: code, enhanced status (when sent), text lines."""

    code: int
    lines: tuple[str, ...]
    enhanced: str | None = None

    @property
    def positive(self) -> bool:
        return self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def text(self) -> str:
        """The lines joined by spaces, without the repeated enhanced codes."""
        return " ".join(self.lines).strip()

    def __str__(self) -> str:
        status = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{status} {self.text}".rstrip()


class ReplyParser:
    """Feed bytes from the server; ``replies()`` returns every complete reply."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[int, str]] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_REPLY_LINE and self._buffer.find(b"\n", 0, MAX_REPLY_LINE) < 0:
            raise ProtocolError("reply line too long")

    def replies(self) -> list[ServerReply]:
        """The replies completed by the bytes fed so far (in order); a partial line waits."""
        buffer = self._buffer
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        out: list[ServerReply] = []
        for raw in complete.split(b"\n")[:-1]:
            raw = raw.rstrip(b"\r")
            if len(raw) > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            # RFC 5321 §4.2: Reply-code [ SP / "-" textstring ] CRLF, code 2yz-5yz
            code = _CODES.get(raw[:3])
            sep = raw[3:4]
            if code is None or sep not in (b"", b" ", b"-"):
                raise ProtocolError(f"malformed reply line {raw[:60]!r}")
            text = raw[4:].decode("utf-8", errors="replace")
            lines = self._lines
            if not lines and sep != b"-":
                out.append(_build(code, [text]))  # a one-line reply: the common case
                continue
            if lines and lines[0][0] != code:
                # RFC 5321 §4.2.1: every line of a multi-line reply has the same code
                raise ProtocolError("reply code changed inside a multi-line reply")
            lines.append((code, text))
            if len(lines) > MAX_REPLY_LINES:
                raise ProtocolError("too many reply lines")
            if sep == b"-":
                continue  # RFC 5321 §4.2.1: "-" continues the reply
            self._lines = []
            out.append(_build(code, [t for _c, t in lines]))
        return out

    @property
    def pending(self) -> bool:
        """True while a reply has started but not ended (or bytes wait unparsed)."""
        return bool(self._lines) or bool(self._buffer)


def _build(code: int, texts: list[str]) -> ServerReply:
    first = texts[0]
    # RFC 2034 §4: the status code's class agrees with the reply code's first digit
    if first[:1] != _CLASS[code // 100]:
        return ServerReply(code, tuple(texts))
    found = _ENHANCED.match(first)
    if found is None:
        return ServerReply(code, tuple(texts))
    klass, subject, detail = found.groups()
    enhanced = f"{klass}.{int(subject)}.{int(detail)}"
    cut = found.end()
    if len(texts) == 1:
        return ServerReply(code, (first[cut:],), enhanced)
    prefix = found.group(0)
    return ServerReply(code, tuple(t[cut:] if t.startswith(prefix) else t for t in texts), enhanced)


_CLASS = {2: "2", 3: "3", 4: "4", 5: "5"}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an EHLO reply advertised (keywords upper-case; RFC 5321 §4.1.1.1)."""

    keywords: frozenset[str] = frozenset()
    size: int | None = None  # RFC 1870: SIZE 0 or no value means "no fixed limit"
    auth: tuple[str, ...] = ()
    extended: bool = True  # False after a HELO fallback

    @classmethod
    def parse(cls, reply: ServerReply) -> Capabilities:
        keywords: set[str] = set()
        size: int | None = None
        auth: tuple[str, ...] = ()
        for line in reply.lines[1:]:  # the first line is the greeting
            parts = line.split()
            if not parts:
                continue
            keyword = parts[0].upper()
            keywords.add(keyword)
            if keyword == "SIZE" and len(parts) > 1 and parts[1].isdigit():
                size = int(parts[1]) or None
            elif keyword == "AUTH":
                auth = tuple(p.upper() for p in parts[1:])
        return cls(frozenset(keywords), size, auth)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.keywords  # RFC 2920 §3

    @property
    def chunking(self) -> bool:
        return "CHUNKING" in self.keywords  # RFC 3030 §2

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.keywords  # RFC 6531 §3.1

    @property
    def eightbit(self) -> bool:
        return "8BITMIME" in self.keywords  # RFC 6152 §2

    @property
    def binarymime(self) -> bool:
        return "BINARYMIME" in self.keywords and self.chunking  # RFC 3030 §3 needs CHUNKING

    @property
    def dsn(self) -> bool:
        return "DSN" in self.keywords  # RFC 3461 §4

    @property
    def starttls(self) -> bool:
        return "STARTTLS" in self.keywords  # RFC 3207 §4

    @property
    def requiretls(self) -> bool:
        return "REQUIRETLS" in self.keywords  # RFC 8689 §2


# -- commands --------------------------------------------------------------------------------


def _safe(value: str, what: str) -> str:
    if not value or _UNSAFE.search(value):
        raise UsageError(f"{what} contains spaces or control characters")
    return value


def xtext(text: str) -> str:
    """RFC 3461 §4: "+", "=" and characters outside 33-126 become +HH (per UTF-8 octet)."""
    out = []
    for ch in text:
        if 33 <= ord(ch) <= 126 and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def path(address: str, *, utf8: bool) -> str:
    """``<local@domain>`` for MAIL/RCPT; "" is the null reverse-path. Without SMTPUTF8 the
    domain goes out as A-labels and a non-ASCII local part is refused (RFC 6531 §3.2)."""
    if address == "":
        return "<>"  # RFC 5321 §4.5.5
    if _PLAIN_PATH.fullmatch(address) and "xn--" not in address:
        # A Dot-string local part and a lower-case LDH domain (RFC 5321 §4.1.2): already
        # in the canonical form ``_parsed_path`` would give, in ASCII.
        at = address.rfind("@")
        if at <= MAX_LOCAL_OCTETS and len(address) - at - 1 <= MAX_DOMAIN_OCTETS:
            return f"<{address}>"
    return _parsed_path(address, utf8=utf8)


@functools.lru_cache(maxsize=1024)  # a queue run sends from few senders: parse each once
def _parsed_path(address: str, *, utf8: bool) -> str:
    parsed = Address.parse(address)
    if utf8:
        text = f"{parsed.local}@{parsed.domain}"
    else:
        if not parsed.local.isascii():
            raise UsageError(f"{address} needs SMTPUTF8")
        text = f"{parsed.local}@{parsed.ascii_domain()}"
    if any(ch in text for ch in "\r\n\x00"):  # Address.parse already refuses these
        raise UsageError("address contains characters not allowed in a path")
    return f"<{text}>"


def ehlo(name: str) -> bytes:
    return f"EHLO {_safe(name, 'EHLO name')}\r\n".encode("ascii")  # RFC 5321 §4.1.1.1


def helo(name: str) -> bytes:
    return f"HELO {_safe(name, 'HELO name')}\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class MailOptions:
    """The MAIL FROM parameters to send (each only when the server offers its extension)."""

    size: int | None = None
    body: str = "7BIT"  # "7BIT" / "8BITMIME" / "BINARYMIME"
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    requiretls: bool = False
    auth: str | None = None  # RFC 4954 §5 AUTH=; "" renders AUTH=<>
    extra: tuple[str, ...] = field(default=())


def mail_from(sender: str, options: MailOptions, caps: Capabilities) -> bytes:
    """``MAIL FROM:<path> params``; UsageError when the message needs an extension the
    server lacks (the caller turns that into a clear bounce)."""
    params: list[str] = []
    if options.smtputf8:
        if not caps.smtputf8:
            raise UsageError("the message needs SMTPUTF8 and the server does not offer it")
        params.append("SMTPUTF8")  # RFC 6531 §3.4
    if options.size is not None and caps.has("SIZE"):
        params.append(f"SIZE={options.size:d}")  # RFC 1870 §4
    if options.body == "8BITMIME":
        if caps.eightbit:
            params.append("BODY=8BITMIME")  # RFC 6152 §3
        # else: sent as is; RFC 6152 §3 lets a relay do this when it cannot downgrade
    elif options.body == "BINARYMIME":
        if not caps.binarymime:
            raise UsageError("the message is binary and the server does not offer BINARYMIME")
        params.append("BODY=BINARYMIME")  # RFC 3030 §3
    if caps.dsn:
        if options.ret:
            params.append(f"RET={_safe(options.ret, 'RET')}")  # RFC 3461 §4.3
        if options.envid:
            params.append(f"ENVID={xtext(options.envid)}")  # RFC 3461 §4.4
    if options.requiretls:
        if not caps.requiretls:
            raise UsageError("REQUIRETLS was requested and the server does not offer it")
        params.append("REQUIRETLS")  # RFC 8689 §4.2.1
    if options.auth is not None and caps.has("AUTH"):
        params.append(f"AUTH={xtext(options.auth) if options.auth else '<>'}")  # RFC 4954 §5
    params.extend(_safe(p, "parameter") for p in options.extra)
    tail = "".join(" " + p for p in params)
    return f"MAIL FROM:{path(sender, utf8=options.smtputf8)}{tail}\r\n".encode()


def rcpt_to(
    address: str,
    *,
    notify: frozenset[str] | None = None,
    orcpt: str | None = None,
    caps: Capabilities,
    utf8: bool,
) -> bytes:
    """``RCPT TO:<path>`` with NOTIFY and ORCPT when the server offers DSN (RFC 3461 §4.1,
    §4.2); otherwise they are dropped, as RFC 3461 §4 lets a relay do."""
    params = ""
    if caps.dsn:
        if notify is not None:
            value = ",".join(sorted(notify)) if notify else "NEVER"
            params += f" NOTIFY={value}"
        if orcpt:
            addr_type, _, original = orcpt.partition(";")
            if addr_type.lower() == "rfc822" and not original.isascii():
                addr_type = "utf-8"  # RFC 6533 §3
            if addr_type.lower() == "utf-8":
                encoded = "".join(ch if ch.isascii() else f"\\x{{{ord(ch):X}}}" for ch in original)
                params += f" ORCPT={addr_type};{xtext(encoded)}"
            else:
                params += f" ORCPT={addr_type};{xtext(original)}"
    return f"RCPT TO:{path(address, utf8=utf8)}{params}\r\n".encode()


DATA = b"DATA\r\n"
RSET = b"RSET\r\n"
QUIT = b"QUIT\r\n"
NOOP = b"NOOP\r\n"
STARTTLS = b"STARTTLS\r\n"


def bdat(size: int, *, last: bool) -> bytes:
    return f"BDAT {size:d}{' LAST' if last else ''}\r\n".encode("ascii")  # RFC 3030 §2


def auth_plain(username: str, password: str) -> bytes:
    """``AUTH PLAIN`` with an initial response (RFC 4954 §4, RFC 4616 §2)."""
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    return f"AUTH PLAIN {token}\r\n".encode("ascii")


def auth_login_steps(username: str, password: str) -> tuple[bytes, bytes, bytes]:
    """``AUTH LOGIN`` then the base64 user name and password lines."""
    return (
        b"AUTH LOGIN\r\n",
        base64.b64encode(username.encode()) + b"\r\n",
        base64.b64encode(password.encode()) + b"\r\n",
    )


# -- bodies ----------------------------------------------------------------------------------


class DotStuffer:
    """Turns a message (CRLF lines) into a DATA body: RFC 5321 §4.5.2 doubles a leading ".",
    then ``finish`` makes sure the body ends in CRLF and appends ".CRLF" (§4.1.1.4)."""

    def __init__(self) -> None:
        self._bol = True
        self._last = b"\n"

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\n.", b"\n..")
        if self._bol and data.startswith(b"."):
            out = b"." + out
        self._bol = data.endswith(b"\n")
        self._last = data[-1:]
        return out

    def finish(self) -> bytes:
        tail = b"" if self._last == b"\n" else b"\r\n"
        return tail + b".\r\n"


def bdat_chunks(data: bytes, *, chunk_size: int) -> Iterator[bytes]:
    """The whole message as BDAT commands with their octets (RFC 3030 §2): the last one
    carries LAST (an empty ``BDAT 0 LAST`` for an empty message)."""
    if chunk_size <= 0:
        raise UsageError("chunk_size must be positive")
    if not data:
        yield bdat(0, last=True)
        return
    for start in range(0, len(data), chunk_size):
        piece = data[start : start + chunk_size]
        yield bdat(len(piece), last=start + chunk_size >= len(data)) + piece
