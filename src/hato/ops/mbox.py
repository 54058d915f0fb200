"""The mboxrd format, streamed: separator lines, reversible ">From " quoting, line endings.

Implements the mbox family of RFC 4155 (application/mbox: each message starts with a
``From <sender> <asctime date>`` line and ends with an empty line) in its mboxrd variant: on
writing, a line matching ``^>*From `` gets one more ``>``; on reading, one ``>`` is removed
from a line matching ``^>+From ``, so any message survives a round trip. mbox files use LF
line endings (RFC 4155 §2: "the local system's line-ending convention"): messages are stored
with CRLF, so the writer turns each CRLF into LF and the reader turns each LF back into CRLF.
A file whose first line ends in CRLF is read as a CRLF file (lines are kept as they are).

Memory stays bounded: lines are handled in pieces of at most ``CHUNK`` bytes, so one huge line
is never held whole.

Leaves out: mboxo/mboxcl/mboxcl2 (a ``Content-Length:`` header is not trusted; an unquoted
``From `` body line that does not parse as a separator is read as text, an mboxo file is
therefore read as well as it can be), and the envelope sender, which the store does not keep:
the writer takes it from the message's ``Return-Path:`` header (RFC 5321 §4.4, the envelope
sender recorded at final delivery), MAILER-DAEMON when there is none or it is ``<>``.

Security: reads and writes files the operator names; bodies are never logged.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from hato.core.errors import UsageError
from hato.store.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

CHUNK = 64 * 1024
MAX_HEADER_SCAN = 256 * 1024  # how far the writer looks for Return-Path:
DEFAULT_SENDER = "MAILER-DAEMON"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 4155 §2: "From " sender SP date in asctime format; zone forms seen in the wild accepted.
_SEPARATOR = re.compile(
    rb"From (\S*) +(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +)?"
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) +"
    rb"(\d{1,2}):(\d{2})(?::(\d{2}))? +(?:([A-Za-z]{1,5}|[+-]\d{4}) +)?(\d{4})"
    rb"(?: +([+-]\d{4}))?[ \t]*\r?\n?"
)
_QUOTED_FROM = re.compile(rb">*From ")
_RETURN_PATH = re.compile(rb"Return-Path:[ \t]*<([^<>\s]*)>", re.IGNORECASE)
# Status:/X-Status: headers written by mutt, Thunderbird and Dovecot's mbox driver.
_STATUS_FLAGS = {b"R": SEEN}
_X_STATUS_FLAGS = {b"A": ANSWERED, b"F": FLAGGED, b"T": DRAFT, b"D": DELETED}


# -- separator lines ---------------------------------------------------------------------------


def format_separator(sender: str, internal_date: float) -> bytes:
    """``From <sender> <asctime date in UTC>\\n``."""
    t = time.gmtime(int(internal_date))
    date = (
        f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}"
    )
    return f"From {sender} {date}\n".encode()


@dataclass(frozen=True, slots=True)
class Separator:
    sender: str
    date: float


def parse_separator(line: bytes) -> Separator | None:
    """The sender and date of a ``From `` line; None when the line is not a separator."""
    match = _SEPARATOR.fullmatch(line)
    if match is None:
        return None
    sender, month, day, hour, minute, second, zone, year, zone2 = match.groups()
    offset = 0
    for z in (zone, zone2):
        if z is not None and z[:1] in (b"+", b"-"):
            sign = -1 if z[:1] == b"-" else 1
            offset = sign * (int(z[1:3]) * 3600 + int(z[3:5]) * 60)
    try:
        parts = (int(year), _MONTHS.index(month.decode()) + 1, int(day))
        clock = (int(hour), int(minute), int(second or b"0"))
        if not (1 <= parts[2] <= calendar.monthrange(parts[0], parts[1])[1]):
            return None
        if clock[0] > 23 or clock[1] > 59 or clock[2] > 60:
            return None
    except ValueError:
        return None
    stamp = calendar.timegm((*parts, *clock, 0, 0, 0)) - offset
    return Separator(sender.decode("utf-8", "replace") or DEFAULT_SENDER, float(stamp))


def envelope_sender(head: bytes) -> str:
    """The sender for the separator line, from the first ``Return-Path:`` in the header."""
    end = head.find(b"\r\n\r\n")
    header = head if end < 0 else head[: end + 2]
    for line in header.split(b"\r\n"):
        match = _RETURN_PATH.match(line)
        if match is not None:
            sender = match.group(1).decode("utf-8", "replace")
            return sender or DEFAULT_SENDER
        if not line:
            break
    return DEFAULT_SENDER


# -- lines in bounded pieces --------------------------------------------------------------------


class _Line:
    """The start of one line: its run of leading ``>`` (counted, never buffered) and ``head``,
    the bytes after that run (at least 5 of them unless the line ends sooner)."""

    __slots__ = ("complete", "gt", "head")

    def __init__(self, gt: int, head: bytes) -> None:
        self.gt = gt
        self.head = head
        self.complete = head.endswith(b"\n")

    @property
    def from_quoted(self) -> bool:
        """The line matches ``^>*From `` (RFC 4155 mboxrd quoting)."""
        return self.head.startswith(b"From ")


class _LineSource:
    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self._in_line = False

    def next_line(self) -> _Line | None:
        """The start of the next line, None at the end of the file."""
        if self._in_line:
            raise RuntimeError("the rest of the previous line was not consumed")
        piece = self._fp.readline(CHUNK)
        if not piece:
            return None
        gt = 0
        while True:
            rest = piece.lstrip(b">")
            gt += len(piece) - len(rest)
            if rest or piece.endswith(b"\n"):
                break
            piece = self._fp.readline(CHUNK)
            if not piece:
                break
        while len(rest) < 5 and not rest.endswith(b"\n"):
            more = self._fp.readline(CHUNK)
            if not more:
                break
            rest += more  # at most 4 + CHUNK bytes
        line = _Line(gt, rest)
        self._in_line = not line.complete
        return line

    def more(self) -> bytes:
        """The next piece of the current line (ending with its LF when it is the last), or
        b"" when the line is complete or the file ends."""
        if not self._in_line:
            return b""
        piece = self._fp.readline(CHUNK)
        if not piece or piece.endswith(b"\n"):
            self._in_line = False
        return piece


# -- writing -----------------------------------------------------------------------------------


def write_message(src: BinaryIO, out: BinaryIO, *, sender: str, internal_date: float) -> None:
    """Append one stored (CRLF) message to an mboxrd file: separator, quoted LF lines, and
    the empty line that ends it. A last line without CRLF gets a line end (mbox cannot
    represent a message that does not end in one)."""
    out.write(format_separator(sender, internal_date))
    lines = _LineSource(src)
    ended = True
    while (line := lines.next_line()) is not None:
        # RFC 4155 mboxrd: a line matching ^>*From  gets one more ">".
        out.write(b">" * (line.gt + line.from_quoted))
        ended = False
        carry = b""
        piece = line.head
        while piece:
            piece = carry + piece
            carry = b""
            if piece.endswith(b"\r\n"):
                out.write(piece[:-2] + b"\n")  # stored CRLF -> LF in the file
            elif piece.endswith(b"\r"):
                out.write(piece[:-1])
                carry = b"\r"  # maybe the first half of a CRLF split between pieces
            else:
                out.write(piece)
            ended = piece.endswith(b"\n")
            piece = lines.more()
        if carry:
            out.write(carry)
            ended = False
    if not ended:
        out.write(b"\n")
    out.write(b"\n")  # RFC 4155: an empty line ends each message


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One message read from an mbox: the line of its separator and what that said."""

    line: int
    sender: str
    date: float
    flags: frozenset[str]


class Reader:
    """Reads an mboxrd file one message at a time, streaming each into a sink.

    ``next_message(write)`` feeds the message bytes (CRLF line ends, one ``>`` removed from
    quoted ``From `` lines) to ``write`` and returns its Entry, or None at the end of the
    file. The empty line before each separator (and at the end of the file) belongs to the
    mbox, not to the message. Blocking: run it in a thread from the event loop.
    """

    def __init__(self, fp: BinaryIO, *, name: str = "mbox") -> None:
        self._lines = _LineSource(fp)
        self._name = name
        self._line_no = 0
        self._next: tuple[int, Separator] | None = None
        self._crlf = False
        self._started = False

    def _first_separator(self) -> None:
        first = self._lines.next_line()
        if first is None:
            return  # an empty file is an empty mbox
        self._line_no = 1
        separator = None
        if first.gt == 0 and first.complete:
            separator = parse_separator(first.head)
        if separator is None:
            shown = (b">" * min(first.gt, 60) + first.head[:60]).decode("utf-8", "replace")
            raise UsageError(
                f"{self._name}: line 1 is not an mbox 'From ' separator line: "
                f"{shown.rstrip(chr(13) + chr(10))!r}"
            )
        # A file whose first line ends in CRLF is a CRLF file: its lines are kept as they are.
        self._crlf = first.head.endswith(b"\r\n")
        self._next = (1, separator)

    @property
    def line(self) -> int:
        """The number of the line read last (1-based; 0 before reading)."""
        return self._line_no

    def next_message(self, write: Callable[[bytes], None]) -> Entry | None:
        if not self._started:
            self._started = True
            self._first_separator()
        if self._next is None:
            return None
        start_line, separator = self._next
        self._next = None
        flags: set[str] = set()
        in_header = True
        pending_blank = False  # an empty line: the mbox's own if a separator or EOF follows
        while (line := self._lines.next_line()) is not None:
            self._line_no += 1
            if line.gt == 0 and line.from_quoted and line.complete:
                found = parse_separator(line.head)
                if found is not None:
                    self._next = (self._line_no, found)
                    break
            blank = line.head == b"\n" or (self._crlf and line.head == b"\r\n")
            if line.gt == 0 and blank:
                in_header = False
                if pending_blank:
                    write(b"\r\n")
                pending_blank = True
                continue
            if pending_blank:
                write(b"\r\n")
                pending_blank = False
            if in_header and line.gt == 0 and line.complete:
                flags.update(_status_flags(line.head))
            # RFC 4155 mboxrd: a line matching ^>+From  loses one ">".
            write(b">" * (line.gt - (line.gt > 0 and line.from_quoted)))
            self._copy_line(line, write)
        return Entry(start_line, separator.sender, separator.date, frozenset(flags))

    def _copy_line(self, line: _Line, write: Callable[[bytes], None]) -> None:
        previous_cr = False
        piece = line.head
        while True:
            if piece.endswith(b"\n"):
                if self._crlf and (piece.endswith(b"\r\n") or (piece == b"\n" and previous_cr)):
                    write(piece)
                else:
                    write(piece[:-1] + b"\r\n")  # LF in the file -> stored CRLF
                return
            write(piece)
            previous_cr = piece.endswith(b"\r")
            piece = self._lines.more()
            if not piece:
                write(b"\r\n")  # the file's last line lacks its line end
                return


def _status_flags(line: bytes) -> set[str]:
    name, _, value = line.partition(b":")
    lowered = name.lower()
    if lowered == b"status":
        table = _STATUS_FLAGS
    elif lowered == b"x-status":
        table = _X_STATUS_FLAGS
    else:
        return set()
    return {flag for letter, flag in table.items() if letter in value.strip()}


def count_messages(fp: BinaryIO) -> int:
    """How many separator lines the file holds (a streaming pre-pass for progress)."""
    count = 0
    lines = _LineSource(fp)
    while (line := lines.next_line()) is not None:
        if line.gt == 0 and line.complete and line.from_quoted and parse_separator(line.head):
            count += 1
        while lines.more():
            pass
    return count
