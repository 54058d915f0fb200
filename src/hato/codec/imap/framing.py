"""Sans-IO framing of the IMAP client stream: lines, literals and their limits.

Splits the bytes a client sends into whole commands (line segments and literals), asks the
server to send a continuation request for each accepted synchronizing literal, and refuses
literals and lines that exceed the configured limits before reading them where possible.

Implements RFC 9051 §4.3 / §7.5 (``{n}`` synchronizing literals and the ``+`` continuation
request), RFC 7888 §3 (``{n+}`` non-synchronizing literals, LITERAL+) and §4 (a too-big
non-synchronizing literal: the tagged BAD is sent before the literal is read, and the literal is
then discarded; beyond a hard cap the connection is closed with BYE), RFC 3516 §4.2 (``~{n}``
literal8, allowed only in APPEND), RFC 4469 ``TOOBIG`` response code.

Left out: nothing of the framing; the command grammar itself is in ``parser.py``.

Security: every line and literal is bounded (``max_line``, ``max_literal``, ``append_limit``,
``max_discard``, and per command ``COMMAND_LITERALS`` times the literal limit); literal bytes
are never interpreted as commands, even when refused.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

COMMAND_LITERALS = 16  # one command holds at most this many maximal literals' worth of data
_LITERAL_MARK = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
# RFC 9051 §9: tag = 1*<any ASTRING-CHAR except "+">
_TAG = rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+'
_TAG_AND_NAME = re.compile(rb"(" + _TAG + rb") ([A-Za-z]+)")
_TAG_ONLY = re.compile(rb"(" + _TAG + rb")(?: |\Z)")


@dataclass(frozen=True, slots=True)
class Literal:
    """The bytes of one literal; ``binary`` for literal8 ``~{n}`` (RFC 3516)."""

    data: bytes
    binary: bool = False


Segment = bytes | Literal


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One complete command: line segments (without CRLF and without the literal marker)
    alternating with the literals that followed them."""

    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """The server must now send ``+ ...`` (RFC 9051 §7.6) so the client sends the literal."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The command was refused by the framer; the server answers ``tag status [code] text``
    (``tag`` None: untagged)."""

    tag: str | None
    status: str  # "BAD" or "NO"
    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream cannot continue: send ``* BYE [code] text`` and close."""

    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """A raw line in line mode (AUTHENTICATE responses, IDLE's DONE), without CRLF."""

    data: bytes


FrameEvent = RawCommand | NeedContinuation | Refused | Fatal | Line


class Mode(enum.Enum):
    COMMAND = "command"
    LINE = "line"


class _State(enum.Enum):
    LINE = "line"  # reading a command line
    LITERAL = "literal"  # reading literal bytes
    DISCARD_LINE = "discard_line"  # skipping to end of line (refused command)
    DISCARD_LITERAL = "discard_literal"  # skipping literal bytes (refused command)
    CLOSED = "closed"


class Framer:
    """Turns the client byte stream into frame events, one at a time (h11 style).

    ``feed`` appends bytes; ``next_event`` returns the next event or None when more bytes
    are needed. The server may switch ``mode`` between events (IDLE, AUTHENTICATE).
    """

    def __init__(
        self,
        *,
        max_line: int = 65536,
        max_literal: int = 65536,
        append_limit: int = 50 * 1024 * 1024,
        max_discard: int = 1024 * 1024,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.append_limit = append_limit
        self.max_discard = max_discard
        self.mode = Mode.COMMAND
        self._buf = bytearray()
        self._state = _State.LINE
        self._segments: list[Segment] = []
        self._literal_left = 0
        self._literal_binary = False
        self._literal_parts: list[bytes] = []
        self._tag: str | None = None
        self._pending_continuation = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_buffered(self) -> bytes:
        """Remove and return the bytes received but not yet framed (the stream underneath
        changes: RFC 4978 COMPRESS hands them to the decompressor)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_event(self) -> FrameEvent | None:
        while True:
            if self._pending_continuation:
                self._pending_continuation = False
                return NeedContinuation()
            if self._state is _State.CLOSED:
                return None
            if self._state is _State.LITERAL:
                if not self._read_literal():
                    return None
                continue
            if self._state is _State.DISCARD_LITERAL:
                take = min(self._literal_left, len(self._buf))
                del self._buf[:take]
                self._literal_left -= take
                if self._literal_left:
                    return None
                self._state = _State.DISCARD_LINE
                continue
            line = self._take_line()
            if line is None:
                if len(self._buf) > self.max_line:
                    return self._overlong()
                return None
            if self._state is _State.DISCARD_LINE:
                self._discard_rest(line)
                continue
            if self.mode is Mode.LINE and not self._segments:
                return Line(line)
            event = self._on_line(line)
            if event is not None:
                return event

    # -- internals -------------------------------------------------------------------------

    def _take_line(self) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _overlong(self) -> FrameEvent | None:
        # RFC 9051 §4: lines are bounded by the server; refuse and skip to the next CRLF,
        # keeping the tail so a literal marker at the end of the line is still seen.
        head = bytes(self._buf[:200])
        tail = bytes(self._buf[-32:])
        self._buf.clear()
        self._buf += tail
        if self._state is _State.DISCARD_LINE:
            return None
        tag = self._tag if self._segments else _peek_tag(head)
        self._segments = []
        self._state = _State.DISCARD_LINE
        return Refused(tag, "BAD", None, "command line too long")

    def _on_line(self, line: bytes) -> FrameEvent | None:
        if len(line) > self.max_line:
            tag = self._tag if self._segments else _peek_tag(line)
            self._segments = []
            self._discard_rest(line)
            return Refused(tag, "BAD", None, "command line too long")
        if not self._segments:
            self._tag = _peek_tag(line)
        match = _LITERAL_MARK.search(line)
        if match is None:
            self._segments.append(line)
            segments = tuple(self._segments)
            self._segments = []
            return RawCommand(segments)
        binary, digits, plus = match.group(1), match.group(2), match.group(3)
        size = int(digits)
        self._segments.append(line[: match.start()])
        if size > self._literal_limit():
            tag = self._tag
            self._segments = []
            if not plus:
                # RFC 9051 §7.6 / RFC 7888 §4: a synchronizing literal is refused instead of
                # the continuation request; the client does not send it.
                self._state = _State.LINE
                return Refused(tag, "NO", "TOOBIG", "literal too large")
            if size > self.max_discard:
                # RFC 7888 §4 option 2: BYE (with TOOBIG, RFC 7888 §5) and close.
                self._state = _State.CLOSED
                return Fatal("TOOBIG", "literal too large")
            # RFC 7888 §4 option 1: tagged BAD now (with TOOBIG, RFC 7888 §5), then read
            # and drop the literal.
            self._literal_left = size
            self._state = _State.DISCARD_LITERAL
            return Refused(tag, "BAD", "TOOBIG", "literal too large")
        self._literal_left = size
        self._literal_binary = bool(binary)
        self._literal_parts = []
        self._state = _State.LITERAL
        if not plus:
            self._pending_continuation = True
        return None

    def _literal_limit(self) -> int:
        """What the next literal may hold: the per-literal limit, and what is left of the
        per-command total (MULTIAPPEND: ``COMMAND_LITERALS`` literals' worth)."""
        per_literal = self.append_limit if self._is_append() else self.max_literal
        received = sum(len(s.data) for s in self._segments if isinstance(s, Literal))
        return min(per_literal, per_literal * COMMAND_LITERALS - received)

    def _is_append(self) -> bool:
        if not self._segments:
            return False
        first = self._segments[0]
        if not isinstance(first, bytes):
            return False
        match = _TAG_AND_NAME.match(first)
        return match is not None and match.group(2).upper() == b"APPEND"

    def _read_literal(self) -> bool:
        take = min(self._literal_left, len(self._buf))
        if take:
            self._literal_parts.append(bytes(self._buf[:take]))
            del self._buf[:take]
            self._literal_left -= take
        if self._literal_left:
            return False
        self._segments.append(Literal(b"".join(self._literal_parts), self._literal_binary))
        self._literal_parts = []
        self._state = _State.LINE
        return True

    def _discard_rest(self, line: bytes) -> None:
        """Skip a refused command: a following non-synchronizing literal is skipped too
        (its bytes must never be read as commands); a synchronizing one is never sent."""
        match = _LITERAL_MARK.search(line[-32:])
        if match is not None and match.group(3):
            self._literal_left = int(match.group(2))
            self._state = _State.DISCARD_LITERAL
        else:
            self._state = _State.LINE


def _peek_tag(line: bytes) -> str | None:
    """The tag of a command line when it is syntactically a tag (for BAD replies)."""
    match = _TAG_ONLY.match(line)
    return match.group(1).decode("ascii") if match else None
