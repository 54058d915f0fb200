"""ManageSieve wire codec, sans-IO: bytes in, typed commands out; responses rendered to bytes.

Implements RFC 5804 §4 (formal syntax): commands as an atom followed by strings and numbers
(§1.2), quoted strings of at most 1024 octets and literals ``{n+}`` (literal-c2s; ``{n}`` is
accepted from clients too, without a continuation, as Dovecot does), 32-bit numbers, the
states and the commands valid in each as one table (§2: only AUTHENTICATE, CAPABILITY,
STARTTLS, LOGOUT and NOOP before authentication; §2.14.1 UNAUTHENTICATE only after it),
OK/NO/BYE responses with response codes (§1.3) and human-readable strings, capability
listings (§1.7), LISTSCRIPTS lines (§2.7), SASL exchange strings and the "*" cancel (§2.1).

Left out: SASL security layers (none of our mechanisms negotiates one), the REFERRAL
response code (one server holds every user's scripts), LANGUAGE (messages are i-default).

Security: every line and literal is bounded; input over a bound is consumed and discarded up
to the end of its command (never buffered) and reported as one error, so a client cannot make
the server hold more than ``max_line`` + ``max_literal`` octets of one command.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from hato.core.errors import ProtocolError

CRLF = b"\r\n"
MAX_QUOTED = 1024  # RFC 5804 §4: quoted = DQUOTE *1024QUOTED-CHAR DQUOTE
MAX_ATOM = 1024  # RFC 5804 §4: atom = 1*1024ATOM-CHAR
MAX_NUMBER = 0xFFFFFFFF  # RFC 5804 §4: a 32-bit unsigned number
DEFAULT_MAX_LINE = 8192  # one line of a command (literals excluded); our bound
_LITERAL = re.compile(rb"\{([0-9]{1,20})(\+?)\}$")
_TAIL = 24  # octets kept of an over-long line: enough for its literal marker
# RFC 5804 §4: ATOM-SPECIALS = "(" / ")" / "{" / SP / CTL / QUOTED-SPECIALS
_ATOM = re.compile(rb"[!#-'*-\[\]-z|-~]+")
_NUMBER = re.compile(rb"0|[1-9][0-9]*")


class State(enum.Enum):
    NONAUTH = "nonauth"  # RFC 5804 §2: before AUTHENTICATE
    AUTH = "auth"  # after a successful AUTHENTICATE


class Arg(enum.Enum):
    STRING = "string"
    NAME = "name"  # RFC 5804 §4 sieve-name: a string, never empty
    ACTIVE_NAME = "active-name"  # RFC 5804 §4 active-sieve-name: may be empty
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    states: frozenset[State]
    args: tuple[Arg, ...] = ()
    optional: int = 0  # how many of the trailing ``args`` may be left out


_ANY = frozenset(State)
_NONAUTH = frozenset({State.NONAUTH})
_AUTHED = frozenset({State.AUTH})

# RFC 5804 §4 command-any / command-auth / command-nonauth: arguments and valid states.
COMMANDS: dict[str, CommandSpec] = {
    "CAPABILITY": CommandSpec(_ANY),
    "LOGOUT": CommandSpec(_ANY),
    "NOOP": CommandSpec(_ANY, (Arg.STRING,), optional=1),
    "AUTHENTICATE": CommandSpec(_NONAUTH, (Arg.STRING, Arg.STRING), optional=1),
    "STARTTLS": CommandSpec(_NONAUTH),
    "HAVESPACE": CommandSpec(_AUTHED, (Arg.NAME, Arg.NUMBER)),
    "PUTSCRIPT": CommandSpec(_AUTHED, (Arg.NAME, Arg.STRING)),
    "CHECKSCRIPT": CommandSpec(_AUTHED, (Arg.STRING,)),
    "LISTSCRIPTS": CommandSpec(_AUTHED),
    "SETACTIVE": CommandSpec(_AUTHED, (Arg.ACTIVE_NAME,)),
    "GETSCRIPT": CommandSpec(_AUTHED, (Arg.NAME,)),
    "DELETESCRIPT": CommandSpec(_AUTHED, (Arg.NAME,)),
    "RENAMESCRIPT": CommandSpec(_AUTHED, (Arg.NAME, Arg.NAME)),
    "UNAUTHENTICATE": CommandSpec(_AUTHED),
}


@dataclass(frozen=True, slots=True)
class Code:
    """A response code (RFC 5804 §1.3): a hierarchical atom, optionally one string."""

    name: str
    arg: str | None = None


class ManageSieveError(ProtocolError):
    """A command the codec refuses; ``response`` is the NO line to send."""

    def __init__(self, detail: str, *, code: Code | None = None) -> None:
        super().__init__(detail)
        self.response = no(detail, code=code)


class InputTooLong(ManageSieveError):
    """A line or literal went over its bound; the whole command was consumed and dropped.
    ``literal_size`` is the size the client announced when a literal was too large, and
    ``command`` the command's name (upper-case) when its first line was read whole."""

    def __init__(
        self, detail: str, *, literal_size: int | None = None, command: str | None = None
    ) -> None:
        super().__init__(detail)
        self.literal_size = literal_size
        self.command = command


@dataclass(frozen=True, slots=True)
class Segment:
    """One line of a command (without CRLF, including any ``{n+}``) and the literal it
    announced, if any."""

    text: bytes
    literal: bytes | None = None


Frame = tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # upper-case
    args: tuple[str | int, ...] = ()


# -- framing -------------------------------------------------------------------------------


class FrameReader:
    """Splits the byte stream into commands: lines, each possibly announcing a literal whose
    octets follow, until a line that announces none (RFC 5804 §1.1: "either reading a line or
    reading a sequence of octets with a known count followed by a line"). A bare LF also
    ends a line."""

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_literal: int = 1 << 20) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self._buf = bytearray()
        self._segments: list[Segment] = []
        self._need: int | None = None  # octets of the announced literal still to arrive
        self._skip = 0  # octets of a dropped literal still to throw away
        self._dropping: InputTooLong | None = None  # the command being dropped, if any
        self._long = False  # inside an over-long line
        self._tail = b""  # last octets of the over-long line (to see a literal marker)

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        return len(self._buf)

    def clear(self) -> int:
        """Forget buffered input (after STARTTLS); returns how many octets went."""
        dropped = len(self._buf)
        self._buf.clear()
        self._segments.clear()
        self._need = None
        self._skip = 0
        self._dropping = None
        self._long = False
        self._tail = b""
        return dropped

    def next_frame(self) -> Frame | None:
        """The next complete command, or None until more input arrives.

        Raises InputTooLong once per command that broke a bound, after consuming all of it."""
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buf))
                del self._buf[:taken]
                self._skip -= taken
                if self._skip:
                    return None
            if self._need is not None:
                if len(self._buf) < self._need:
                    return None
                literal = bytes(self._buf[: self._need])
                del self._buf[: self._need]
                self._segments.append(Segment(self._segments.pop().text, literal))
                self._need = None
            taken_line = self._take_line()
            if taken_line is None:
                return None
            line, too_long = taken_line
            match = _LITERAL.search(line)
            size = int(match.group(1)) if match else None
            if too_long and self._dropping is None:
                self._dropping = InputTooLong(f"line longer than {self.max_line} octets")
            if self._dropping is not None:
                self._segments.clear()
                if size is not None:
                    self._skip = size  # the dropped command goes on after its literal
                    continue
                error, self._dropping = self._dropping, None
                raise error
            if size is None:
                self._segments.append(Segment(line))
                frame = tuple(self._segments)
                self._segments.clear()
                return frame
            if size > self.max_literal:
                first = self._segments[0].text if self._segments else line
                name = _ATOM.match(first)
                self._segments.clear()
                self._dropping = InputTooLong(
                    f"literal of {size} octets is larger than {self.max_literal}",
                    literal_size=size,
                    command=name.group().decode("ascii").upper() if name else None,
                )
                self._skip = size
                continue
            self._segments.append(Segment(line))
            self._need = size

    def _take_line(self) -> tuple[bytes, bool] | None:
        """(line without its line end, too long); for an over-long line only its tail."""
        end = self._buf.find(b"\n")
        if self._long:
            if end < 0:
                self._tail = (self._tail + bytes(self._buf))[-_TAIL:]
                self._buf.clear()
                return None
            tail = (self._tail + bytes(self._buf[:end]))[-_TAIL:]
            del self._buf[: end + 1]
            self._long, self._tail = False, b""
            return tail.removesuffix(b"\r"), True
        if end < 0:
            if len(self._buf) > self.max_line:
                self._long = True
                self._tail = bytes(self._buf[-_TAIL:])
                self._buf.clear()
            return None
        line = bytes(self._buf[:end]).removesuffix(b"\r")
        del self._buf[: end + 1]
        if len(line) > self.max_line:
            return line[-_TAIL:], True
        return line, False


# -- tokens and commands --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Atom:
    text: bytes


Token = _Atom | bytes  # an atom (command names, numbers) or a string's octets


def _quoted(text: bytes, pos: int) -> tuple[bytes, int]:
    """The quoted string starting at ``text[pos] == '"'``; returns (octets, next position)."""
    out = bytearray()
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == 0x22:
            return bytes(out), i + 1
        if ch == 0x5C:  # RFC 5804 §4: "\" QUOTED-SPECIALS
            if i + 1 >= len(text) or text[i + 1] not in b'"\\':
                raise ManageSieveError("bad escape in quoted string")
            ch = text[i + 1]
            i += 1
        elif ch in (0x00, 0x0A, 0x0D):  # RFC 5804 §4: SAFE-CHAR excludes NUL, CR, LF
            raise ManageSieveError("control character in quoted string")
        out.append(ch)
        if len(out) > MAX_QUOTED:  # RFC 5804 §4: at most 1024 octets between the quotes
            raise ManageSieveError("quoted string longer than 1024 octets; use a literal")
        i += 1
    raise ManageSieveError("unterminated quoted string")


def tokenize(frame: Frame) -> list[Token]:
    """Atoms and strings of a command (strings from quotes or literals), in order; one SP
    between them (RFC 5804 §4)."""
    tokens: list[Token] = []
    for segment in frame:
        body = segment.text
        if segment.literal is not None:
            marker = _LITERAL.search(body)
            assert marker is not None
            if not _NUMBER.fullmatch(marker.group(1)) or int(marker.group(1)) > MAX_NUMBER:
                raise ManageSieveError("bad literal length")  # RFC 5804 §4 number
            body = body[: marker.start()]
        pos = 0
        while pos < len(body):
            if tokens:
                if body[pos] != 0x20:
                    raise ManageSieveError("expected a space between arguments")
                pos += 1
                if pos == len(body):
                    if segment.literal is not None:
                        break  # the space before the literal
                    raise ManageSieveError("trailing space")
            if body[pos] == 0x22:
                value, pos = _quoted(body, pos)
                tokens.append(value)
                continue
            atom = _ATOM.match(body, pos)
            if atom is None:
                raise ManageSieveError("unexpected character")
            if atom.end() - atom.start() > MAX_ATOM:
                raise ManageSieveError("atom longer than 1024 characters")
            tokens.append(_Atom(atom.group()))
            pos = atom.end()
        if segment.literal is not None:
            if tokens and not body.endswith(b" "):
                raise ManageSieveError("expected a space before a literal")
            tokens.append(segment.literal)
    return tokens


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")  # RFC 5804 §4: strings are UTF-8 (SAFE-UTF8-CHAR)
    except UnicodeDecodeError:
        raise ManageSieveError(f"{what} is not valid UTF-8") from None


def _argument(kind: Arg, token: Token, index: int) -> str | int:
    if kind is Arg.NUMBER:
        if isinstance(token, bytes) or not _NUMBER.fullmatch(token.text):
            raise ManageSieveError(f"argument {index} must be a number")
        number = int(token.text)
        if number > MAX_NUMBER:  # RFC 5804 §4: 0 <= n < 4,294,967,296
            raise ManageSieveError(f"argument {index} is larger than a 32-bit number")
        return number
    if not isinstance(token, bytes):
        raise ManageSieveError(f"argument {index} must be a string")
    value = _text(token, f"argument {index}")
    if kind is Arg.NAME and not value:
        raise ManageSieveError("a script name must not be empty")  # RFC 5804 §4 sieve-name
    return value


def parse_command(frame: Frame, state: State) -> Command:
    """A typed command valid in ``state``; ManageSieveError (a NO response) otherwise."""
    tokens = tokenize(frame)
    if not tokens or not isinstance(tokens[0], _Atom):
        raise ManageSieveError("expected a command name")
    name = tokens[0].text.decode("ascii").upper()  # RFC 5804 §4: case-insensitive
    spec = COMMANDS.get(name)
    if spec is None:
        raise ManageSieveError(f"unknown command {name[:40]}")
    if state not in spec.states:
        # RFC 5804 §2: "Servers MUST reject all other commands with a NO response."
        if state is State.NONAUTH:
            raise ManageSieveError(f"{name} needs authentication")
        raise ManageSieveError(f"{name} is not valid after authentication")
    given = tokens[1:]
    least = len(spec.args) - spec.optional
    if not least <= len(given) <= len(spec.args):
        raise ManageSieveError(f"wrong number of arguments for {name}")
    args = tuple(
        _argument(kind, token, i + 1)
        for i, (kind, token) in enumerate(zip(spec.args[: len(given)], given, strict=True))
    )
    return Command(name, args)


def parse_sasl_response(frame: Frame) -> bytes | None:
    """A client's SASL response (RFC 5804 §2.1): one string holding base64; None for "*"."""
    tokens = tokenize(frame)
    if len(tokens) != 1 or not isinstance(tokens[0], bytes):
        raise ManageSieveError("expected one string as SASL response")
    return decode_sasl(tokens[0])


def decode_sasl(data: bytes | str) -> bytes | None:
    """Strict base64 of a SASL message; None for the "*" cancel (RFC 5804 §2.1)."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    if raw == b"*":
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ManageSieveError("invalid base64 in SASL data") from None


# -- output ---------------------------------------------------------------------------------


def string(value: str | bytes) -> bytes:
    """A string for the wire: quoted when it can be (RFC 5804 §4 quoted), else a literal-s2c."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= MAX_QUOTED and not any(b in data for b in (0, 10, 13)):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data  # RFC 5804 §4 literal-s2c


def _code(code: Code) -> bytes:
    out = b"(" + code.name.encode("ascii")
    if code.arg is not None:
        out += b" " + string(code.arg)
    return out + b")"


def response(kind: str, text: str | None = None, *, code: Code | None = None) -> bytes:
    """``OK``/``NO``/``BYE`` [SP "(" code ")"] [SP string] CRLF (RFC 5804 §4 response-ok)."""
    out = kind.encode("ascii")
    if code is not None:
        out += b" " + _code(code)
    if text is not None:
        out += b" " + string(text)
    return out + CRLF


def ok(text: str | None = None, *, code: Code | None = None) -> bytes:
    return response("OK", text, code=code)


def no(text: str | None = None, *, code: Code | None = None) -> bytes:
    return response("NO", text, code=code)


def bye(text: str | None = None, *, code: Code | None = None) -> bytes:
    return response("BYE", text, code=code)


def challenge(data: bytes) -> bytes:
    """A server SASL challenge: a string holding base64, then CRLF (RFC 5804 §2.1)."""
    return string(base64.b64encode(data)) + CRLF


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What CAPABILITY lists (RFC 5804 §1.7); None/empty entries are left out."""

    implementation: str
    sasl: tuple[str, ...]
    sieve: tuple[str, ...]
    starttls: bool = False
    maxredirects: int | None = None
    notify: tuple[str, ...] = ()
    extlists: tuple[str, ...] = ()
    owner: str | None = None
    unauthenticate: bool = True
    version: str = "1.0"

    def render(self) -> bytes:
        lines: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", self.implementation),  # RFC 5804 §1.7: MUST always be returned
            ("SASL", " ".join(self.sasl)),  # empty only when STARTTLS is offered
            ("SIEVE", " ".join(self.sieve)),  # RFC 5804 §1.7: MUST always be returned
        ]
        if self.starttls:
            lines.append(("STARTTLS", None))
        if self.maxredirects is not None:
            lines.append(("MAXREDIRECTS", str(self.maxredirects)))
        if self.notify:  # RFC 5804 §1.7: MUST be listed when "enotify" is supported
            lines.append(("NOTIFY", " ".join(self.notify)))
        if self.extlists:  # RFC 6134 §2.8: with "extlists", the URI schemes of its lists
            lines.append(("EXTLISTS", " ".join(self.extlists)))
        if self.owner is not None:  # RFC 5804 §1.7: never before authentication
            lines.append(("OWNER", self.owner))
        if self.unauthenticate:
            lines.append(("UNAUTHENTICATE", None))  # RFC 5804 §2.14
        lines.append(("VERSION", self.version))  # RFC 5804 §1.7: MUST be returned
        return capability_lines(lines) + ok()


def capability_lines(entries: Iterable[tuple[str, str | None]]) -> bytes:
    """RFC 5804 §4 single-capability: capability-name [SP string] CRLF."""
    out = bytearray()
    for name, value in entries:
        out += string(name)
        if value is not None:
            out += b" " + string(value)
        out += CRLF
    return bytes(out)


def script_line(name: str, *, active: bool) -> bytes:
    """One LISTSCRIPTS line (RFC 5804 §2.7): the name, then " ACTIVE" for the active one."""
    return string(name) + (b" ACTIVE" if active else b"") + CRLF


def script_body(content: str) -> bytes:
    """GETSCRIPT data (RFC 5804 §2.9): the script as a string, then CRLF (before the OK)."""
    return string(content) + CRLF


def error_text(errors: Iterable[tuple[int, str]]) -> str:
    """Script errors for a NO response: "line N: message", one per line (RFC 5804 §2.6)."""
    return "\r\n".join(f"line {line}: {message}" for line, message in errors)
