"""POP3 wire codec, sans-IO: command lines in, typed commands out; replies rendered to bytes.

Implements the command grammar and limits of RFC 1939 §3 and RFC 2449 §3-4 (255-octet
commands, keywords 3-4 characters, case-insensitive), the states and the commands allowed in
each (RFC 1939 §4-6, RFC 2449 §5 CAPA, RFC 2595 §4 STLS, RFC 5034 §4 AUTH) as one table,
multi-line responses with byte-stuffing and CRLF line ends (RFC 1939 §3), TOP (RFC 1939 §7),
unique-id listings (RFC 1939 §7 UIDL: 1-70 characters 0x21-0x7E), extended response codes
(RFC 2449 §8, RFC 3206), SASL continuation lines and strict base64 (RFC 5034 §4), and the
maildrop snapshot arithmetic of STAT/LIST/DELE/RSET/UIDL (RFC 1939 §5).

Left out: APOP (RFC 1939 §7; it needs the plaintext password stored), SASL security layers
(none of our mechanisms negotiates one). Parameters may be UTF-8, not only the printable ASCII
of RFC 2449 §3 (user names of internationalised addresses); control characters are refused.
Sizes (LIST, STAT) are the stored octets: for a message stored with bare LFs they undercount
the CRLF form sent (RFC 1939 §11 would count each LF as two octets).

Security: input lines are bounded (255 octets for commands; SASL responses 16 KiB); an
over-long line is discarded up to its CRLF and reported, never processed.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from hato.core.errors import ProtocolError

MAX_COMMAND_LINE = 255  # RFC 2449 §4: 255 octets including the CRLF
MAX_SASL_LINE = 16384  # RFC 5034 §4: responses may be longer than commands; our bound
MAX_REPLY_LINE = 512  # RFC 2449 §4: first line of a response, including the CRLF
CRLF = b"\r\n"


class State(enum.Enum):
    AUTHORIZATION = "authorization"  # RFC 1939 §4
    TRANSACTION = "transaction"  # RFC 1939 §5
    UPDATE = "update"  # RFC 1939 §6


@dataclass(frozen=True, slots=True)
class CommandSpec:
    states: frozenset[State]
    min_args: int
    max_args: int
    rest_of_line: bool = False  # the argument is the rest of the line (PASS: spaces allowed)


_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS

# RFC 1939 §4-7, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4: which command is valid in which state.
COMMANDS: dict[str, CommandSpec] = {
    "USER": CommandSpec(_AUTH, 1, 1),
    "PASS": CommandSpec(_AUTH, 1, 1, rest_of_line=True),
    "APOP": CommandSpec(_AUTH, 2, 2),
    "AUTH": CommandSpec(_AUTH, 0, 2),
    "STLS": CommandSpec(_AUTH, 0, 0),
    "CAPA": CommandSpec(_BOTH, 0, 0),
    "QUIT": CommandSpec(_BOTH, 0, 0),
    "STAT": CommandSpec(_TRANS, 0, 0),
    "LIST": CommandSpec(_TRANS, 0, 1),
    "RETR": CommandSpec(_TRANS, 1, 1),
    "DELE": CommandSpec(_TRANS, 1, 1),
    "NOOP": CommandSpec(_TRANS, 0, 0),
    "RSET": CommandSpec(_TRANS, 0, 0),
    "TOP": CommandSpec(_TRANS, 2, 2),
    "UIDL": CommandSpec(_TRANS, 0, 1),
}


class Pop3Error(ProtocolError):
    """A command the codec refuses; ``line`` is the -ERR reply to send."""

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.line = err(detail, code=code)


class LineTooLong(Pop3Error):
    """The client sent a line longer than allowed; it was discarded."""


@dataclass(frozen=True, slots=True)
class Command:
    keyword: str  # upper-case
    args: tuple[str, ...] = ()


# -- input ---------------------------------------------------------------------------------


class LineReader:
    """Splits the byte stream into CRLF-terminated lines (a bare LF also ends a line)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> int:
        """Forget buffered input (after STLS, RFC 2595 §4); returns how many octets went."""
        dropped = len(self._buf)
        self._buf.clear()
        self._discarding = False
        return dropped

    @property
    def pending(self) -> int:
        return len(self._buf)

    def next_line(self, limit: int = MAX_COMMAND_LINE) -> bytes | None:
        """The next line without its line end, or None when no full line is buffered.

        Raises LineTooLong once per over-long line (its rest is skipped up to the LF)."""
        while True:
            end = self._buf.find(b"\n")
            if self._discarding:
                if end < 0:
                    self._buf.clear()
                    return None
                del self._buf[: end + 1]
                self._discarding = False
                continue
            if end < 0:
                if len(self._buf) >= limit:
                    self._buf.clear()
                    self._discarding = True
                    raise LineTooLong("line too long")
                return None
            if end + 1 > limit:
                del self._buf[: end + 1]
                raise LineTooLong("line too long")
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            return line[:-1] if line.endswith(b"\r") else line


def parse_command(line: bytes, state: State) -> Command:
    """Parse one command line (without CRLF) valid in ``state``; Pop3Error otherwise."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise Pop3Error("command is not UTF-8") from None
    keyword, _, rest = text.partition(" ")
    keyword = keyword.upper()
    # RFC 2449 §3: keyword = 3*4VCHAR
    if not 3 <= len(keyword) <= 4 or not keyword.isascii() or not keyword.isalpha():
        raise Pop3Error("unknown command")
    spec = COMMANDS.get(keyword)
    if spec is None:
        raise Pop3Error("unknown command")
    if state not in spec.states:
        raise Pop3Error(f"{keyword} not allowed now")
    if spec.rest_of_line:
        args: tuple[str, ...] = (rest,) if rest else ()
    else:
        args = tuple(rest.split(" ")) if rest else ()
        # RFC 2449 §3: param = 1*VCHAR, separated by single spaces
        if any(not a or not a.isprintable() for a in args):
            raise Pop3Error("malformed arguments")
    if not spec.min_args <= len(args) <= spec.max_args:
        raise Pop3Error(f"wrong number of arguments for {keyword}")
    return Command(keyword, args)


def parse_number(text: str, *, minimum: int) -> int:
    """A decimal argument (RFC 1939 §3: message numbers; TOP line counts) or Pop3Error."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise Pop3Error("invalid number")
    value = int(text)
    if value < minimum:
        raise Pop3Error("invalid number")
    return value


def decode_sasl(text: str) -> bytes:
    """RFC 5034 §4 strict base64 (no stray characters, '=' only as final padding)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise Pop3Error("invalid base64") from None


def parse_initial_response(text: str) -> bytes:
    """RFC 5034 §4: the AUTH initial-response; "=" is a present but empty response."""
    return b"" if text == "=" else decode_sasl(text)


def parse_sasl_response(line: bytes) -> bytes | None:
    """A client line during AUTH: decoded bytes, or None for the "*" cancel (RFC 5034 §4)."""
    text = line.decode("ascii", errors="replace")
    if text == "*":
        return None
    return decode_sasl(text)


# -- output --------------------------------------------------------------------------------


def _status(status: str, text: str, code: str | None) -> bytes:
    body = f"[{code}] {text}" if code else text
    line = f"{status} {body}".encode() if body else status.encode()
    return line[: MAX_REPLY_LINE - 2] + CRLF  # RFC 2449 §4: 512 octets with CRLF


def ok(text: str = "", *, code: str | None = None) -> bytes:
    return _status("+OK", text, code)


def err(text: str, *, code: str | None = None) -> bytes:
    """``-ERR [code] text``; codes from RFC 2449 §8 and RFC 3206 (AUTH, SYS/TEMP, ...)."""
    return _status("-ERR", text, code)


def challenge(data: bytes) -> bytes:
    """RFC 5034 §4: "+" SP base64; an empty challenge is "+ " alone."""
    return b"+ " + base64.b64encode(data) + CRLF


def multiline(first: bytes, lines: Iterable[str]) -> bytes:
    """``first`` (a rendered +OK line), the byte-stuffed lines, and the "." terminator."""
    out = bytearray(first)
    for line in lines:
        encoded = line.encode("utf-8")
        out += (b"." + encoded if encoded.startswith(b".") else encoded) + CRLF
    out += b"." + CRLF
    return bytes(out)


class DotStuffer:
    """Byte-stuffs a message for a multi-line response, chunk by chunk (RFC 1939 §3):
    every line starting with "." gets another "."; every line ends with CRLF (a bare LF in
    the stored message becomes CRLF); ``finish`` ends an unterminated last line with CRLF and
    adds the ".CRLF" terminator, so the response always ends with the five octets CRLF.CRLF."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._last = b""  # the last octet sent

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        # RFC 1939 §3: "each terminated by a CRLF pair". Stored messages are CRLF (SMTP), but
        # one appended over IMAP may use bare LFs; counting first keeps the usual case cheap.
        if chunk.count(b"\n") != chunk.count(b"\r\n"):
            head = b""
            if chunk.startswith(b"\n") and self._last == b"\r":
                head, chunk = b"\n", chunk[1:]  # the CR came at the end of the last chunk
            chunk = head + chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        stuffed = chunk.replace(b"\n.", b"\n..")
        if self._at_line_start and chunk.startswith(b"."):
            stuffed = b"." + stuffed
        self._at_line_start = chunk.endswith(b"\n")
        self._last = chunk[-1:]
        return stuffed

    def finish(self) -> bytes:
        if self._last and self._last != b"\n":
            return CRLF + b"." + CRLF
        return b"." + CRLF


class TopFilter:
    """Passes the header section, the blank line and ``lines`` body lines (RFC 1939 §7 TOP).

    Feed raw message chunks; ``done`` tells when the rest of the message is not needed."""

    def __init__(self, lines: int) -> None:
        self._remaining = lines
        self._in_body = False
        self._line_has_text = False  # the current line has a character other than CR
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(chunk) and not self.done:
            if self._in_body and self._remaining <= 0:
                self.done = True
                break
            end = chunk.find(b"\n", pos)
            piece = chunk[pos:] if end < 0 else chunk[pos : end + 1]
            out += piece
            pos += len(piece)
            if piece.rstrip(b"\r\n"):
                self._line_has_text = True
            if end < 0:
                break
            if self._in_body:
                self._remaining -= 1
            elif not self._line_has_text:  # the empty line that ends the header section
                self._in_body = True
            self._line_has_text = False
        if self._in_body and self._remaining <= 0:
            self.done = True
        return bytes(out)


# -- the maildrop snapshot ----------------------------------------------------------------


def unique_id(uidvalidity: int, uid: int) -> str:
    """The UIDL of a message: IMAP UID and UIDVALIDITY as 8+8 hex digits (Dovecot's default
    format "%08Xu%08Xv"), so the same message keeps one identity over POP3 and IMAP.
    RFC 1939 §7: 1-70 characters in 0x21-0x7E."""
    return f"{uid:08X}{uidvalidity:08X}"


@dataclass(frozen=True, slots=True)
class DropEntry:
    uid: int
    size: int  # octets as stored (CRLF line ends), RFC 1939 §5 "exact size"
    unique_id: str


@dataclass(slots=True)
class Maildrop:
    """The messages of one POP3 session, fixed when it entered TRANSACTION (RFC 1939 §8),
    with the set of messages marked deleted (removed only in UPDATE, RFC 1939 §6)."""

    entries: tuple[DropEntry, ...]
    deleted: set[int] = field(default_factory=set)  # message numbers, 1-based

    def _entry(self, number_text: str) -> tuple[int, DropEntry]:
        number = parse_number(number_text, minimum=1)
        if number > len(self.entries):
            raise Pop3Error("no such message")
        if number in self.deleted:  # RFC 1939 §5: deleted messages may not be referenced
            raise Pop3Error("message already deleted")
        return number, self.entries[number - 1]

    def live(self) -> list[tuple[int, DropEntry]]:
        return [(n, e) for n, e in enumerate(self.entries, 1) if n not in self.deleted]

    def totals(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(e.size for _, e in live)

    def stat(self) -> bytes:
        count, size = self.totals()
        return ok(f"{count} {size}")  # RFC 1939 §5 STAT: "+OK nn mm"

    def listing(self, arg: str | None) -> bytes:
        if arg is not None:
            number, entry = self._entry(arg)
            return ok(f"{number} {entry.size}")
        count, size = self.totals()
        lines = (f"{n} {e.size}" for n, e in self.live())
        return multiline(ok(f"{count} messages ({size} octets)"), lines)

    def uid_listing(self, arg: str | None) -> bytes:
        if arg is not None:
            number, entry = self._entry(arg)
            return ok(f"{number} {entry.unique_id}")
        return multiline(
            ok("unique-id listing follows"), (f"{n} {e.unique_id}" for n, e in self.live())
        )

    def select(self, arg: str) -> tuple[int, DropEntry]:
        """The message for RETR/TOP; Pop3Error when missing or deleted."""
        return self._entry(arg)

    def delete(self, arg: str) -> bytes:
        number, _ = self._entry(arg)
        self.deleted.add(number)
        return ok(f"message {number} deleted")

    def reset(self) -> bytes:
        self.deleted.clear()
        count, size = self.totals()
        return ok(f"maildrop has {count} messages ({size} octets)")

    def deleted_uids(self) -> list[int]:
        return sorted(self.entries[n - 1].uid for n in self.deleted)
