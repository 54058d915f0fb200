"""SMTP message bodies on the wire: the DATA dot-reader and the BDAT chunk reader, sans-IO.

Implements RFC 5321 §4.1.1.4 (the body ends at the first <CRLF>.<CRLF>), §4.5.2
(transparency: a leading "." is removed from every line), §2.3.8 (lines end in CRLF only: a
bare CR or LF anywhere in the body is refused, which is the SMTP-smuggling defence — no body
ever ends at ``<LF>.<LF>``, ``<CR>.<CR>`` or similar, so one DATA never yields two messages),
§4.5.3.1.6 (text lines at most 1000 octets including CRLF, the transparency dot not counted),
and RFC 3030 §2 (BDAT chunks are exact octet counts, read whatever the reply will be).

Leaves out: everything about content; the reader only frames, unstuffs and measures.

Security: memory is bounded: a line without CRLF is never kept beyond the line limit, and
once a problem is found the rest of the body is scanned for the terminator and dropped.
"""

from __future__ import annotations

import enum

MAX_TEXT_LINE = 1000  # RFC 5321 §4.5.3.1.6: 1000 octets incl. CRLF
MAX_LINE_CONTENT = MAX_TEXT_LINE - 2  # octets before the CRLF
_TERMINATOR = b"\r\n.\r\n"


class DataProblem(enum.Enum):
    """Why a received body is refused (the server maps each to a reply)."""

    BARE_LINE_END = "bare CR or LF"  # RFC 5321 §2.3.8
    LINE_TOO_LONG = "line too long"  # RFC 5321 §4.5.3.1.6
    TOO_BIG = "message too big"  # RFC 1870 §6.3


def has_long_line(text: bytes) -> bool:
    """Whether a line of ``text`` (whole lines, each ending in CRLF, no bare CR or LF) has
    more than ``MAX_LINE_CONTENT`` octets before its CRLF (RFC 5321 §4.5.3.1.6).

    Looks at windows of ``MAX_LINE_CONTENT + 2`` octets rather than at every line: the last
    LF in a window ends every line that lies in it, and a window without an LF holds part of
    a line too long. About one ``rfind`` per kilobyte instead of one object per line."""
    window = MAX_LINE_CONTENT + 2  # the content, its CR and its LF
    start, size = 0, len(text)
    while size - start > window:
        lf = text.rfind(b"\n", start, start + window)
        if lf < 0:
            return True
        start = lf + 1
    # the rest is at most one window: only an unterminated last piece can still be too long
    return size - max(start, text.rfind(b"\n", start) + 1) > MAX_LINE_CONTENT


def has_bare_line_end(region: bytes) -> bool:
    """Whether ``region`` (whole lines: it ends in CRLF) has a CR or an LF that is not part
    of a CRLF (RFC 5321 §2.3.8). ``splitlines`` breaks at CRLF, CR and LF alike, once per
    CRLF: with as many CRs as LFs, it finds as many lines as LFs only if every CR is right
    before an LF (a CR elsewhere, or an LF before its CR, makes two breaks of one pair).
    Deleting a single octet is a ``memchr`` loop, faster than counting it."""
    size = len(region)
    crs = size - len(region.replace(b"\r", b""))
    lfs = size - len(region.replace(b"\n", b""))
    return crs != lfs or len(region.splitlines()) != lfs


class DotReader:
    """Reads one DATA body out of a connection buffer.

    ``read(buffer)`` consumes what it can from the front of ``buffer`` and returns the
    unstuffed body octets found (possibly empty); ``done`` turns True after the terminator,
    whose following bytes (pipelined commands) stay in the buffer.
    """

    def __init__(self, *, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0  # body octets after unstuffing, counted even when dropped
        self.problem: DataProblem | None = None
        self.done = False
        self._bol = True  # the buffer's first byte starts a line

    def _flag(self, problem: DataProblem) -> None:
        if self.problem is None:
            self.problem = problem

    def read(self, buffer: bytearray) -> bytes:
        if self.done or not buffer:
            return b""
        if self._bol and buffer.startswith(b".\r\n"):
            # RFC 5321 §4.1.1.4: a line holding only "." ends the body
            del buffer[:3]
            self.done = True
            return b""
        stuffed = True  # lines of the region may start with a transparency dot
        if buffer.endswith(_TERMINATOR) and buffer.count(b"\r\n.") == 1:
            # The usual end (a client waits for our reply after it): the buffer ends with
            # the terminator and holds no other CRLF ".", so no earlier end and no line to
            # unstuff (but a first line's dot, below): one pass instead of a find and a
            # replace over the whole body.
            end, consumed = len(buffer) - 3, len(buffer)
            stuffed = False
            self.done = True
        else:
            term = buffer.find(_TERMINATOR)
            if term >= 0:
                end, consumed = term + 2, term + 5
                self.done = True
            else:
                last = buffer.rfind(b"\r\n")
                if last < 0:
                    self._check_partial(buffer)
                    return b""
                end = consumed = last + 2
        with memoryview(buffer) as view:
            region = bytes(view[:end])  # one copy (a bytearray slice would be a second)
        del buffer[:consumed]
        leading_dot = self._bol and region.startswith(b".")
        self._bol = True
        if has_bare_line_end(region):
            self._flag(DataProblem.BARE_LINE_END)  # RFC 5321 §2.3.8
        # RFC 5321 §4.5.2: delete the first character of a line that starts with "."
        body = region.replace(b"\r\n.", b"\r\n") if stuffed else region
        if leading_dot:
            body = body[1:]
        if self.problem is None and has_long_line(body):
            self._flag(DataProblem.LINE_TOO_LONG)  # RFC 5321 §4.5.3.1.6
        self.size += len(body)
        if self.size > self.max_size:
            self._flag(DataProblem.TOO_BIG)
        return b"" if self.problem is not None else body

    def _check_partial(self, buffer: bytearray) -> None:
        """A line with no CRLF yet: drop it once it cannot be a valid line any more."""
        allowance = 1 if self._bol and buffer.startswith(b".") else 0  # the stuffed dot
        if len(buffer) - allowance < MAX_TEXT_LINE:
            return
        self._flag(DataProblem.LINE_TOO_LONG)
        if b"\r" in buffer[:-1] or b"\n" in buffer:
            self._flag(DataProblem.BARE_LINE_END)
        self.size += len(buffer) - 1
        keep = buffer[-1:]  # a trailing CR may begin the terminator's CRLF
        del buffer[:]
        buffer += keep
        self._bol = False


class ChunkReader:
    """Reads the octets of one BDAT chunk (RFC 3030 §2); ``discard`` drops them all."""

    def __init__(self, size: int, *, last: bool, discard: bool, max_size: int, base: int) -> None:
        self.remaining = size
        self.last = last
        self.discard = discard
        self.max_size = max_size
        self.size = base  # message octets so far, across chunks
        self.problem: DataProblem | None = None

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def read(self, buffer: bytearray) -> bytes:
        take = min(self.remaining, len(buffer))
        if take == 0:
            return b""
        data = bytes(buffer[:take])
        del buffer[:take]
        self.remaining -= take
        if self.discard:
            return b""
        self.size += take
        if self.size > self.max_size:
            self.problem = DataProblem.TOO_BIG  # RFC 1870 §6.3 / RFC 3030 §2
        return b"" if self.problem is not None else data
