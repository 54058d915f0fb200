"""Lexical layer of the IMAP command parser: atoms, strings, literals, numbers, flags.

Implements the RFC 9051 §4 data formats and §9 lexical rules as the client sends them: atom
(ATOM-CHAR), astring (ASTRING-CHAR adds "]"), quoted (with ``\\`` escapes of DQUOTE and
backslash only; UTF-8 allowed per RFC 9051 §9 QUOTED-CHAR), literal and literal8 (framed by
``framing.py``), number (32-bit) and number64 (63-bit), list-mailbox (adds ``%`` and ``*``),
flags and flag lists, sequence sets.

Left out: nothing of those productions.
"""

from __future__ import annotations

from hato.codec.imap.framing import Literal, Segment
from hato.codec.imap.sequence import MAX_NUMBER, SequenceSet, SequenceSetError
from hato.core.errors import ProtocolError

MAX_NUMBER64 = 9_223_372_036_854_775_807  # RFC 9051 §9 number64

_CTL = frozenset(range(0x00, 0x20)) | {0x7F}
# RFC 9051 §9 atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials
# / resp-specials; ATOM-CHAR is any CHAR (7-bit) except those.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | _CTL
ATOM_CHARS = frozenset(b for b in range(0x01, 0x80) if b not in _ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS | {0x5D}  # "]" (resp-specials)
LIST_CHARS = ASTRING_CHARS | {0x25, 0x2A}  # "%" and "*" (list-wildcards)
TAG_CHARS = ASTRING_CHARS - {0x2B}  # tag: ASTRING-CHAR except "+"
_SEQ_CHARS = frozenset(b"0123456789:*,$")
_WORD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.+-")


class CommandSyntaxError(ProtocolError):
    """A command that does not parse: answered with ``tag BAD text`` (or ``* BAD``), or with
    ``status`` and ``code`` when the grammar asks for something else (BADCHARSET)."""

    reply = "syntax error"

    def __init__(
        self, detail: str, *, tag: str | None, status: str = "BAD", code: str | None = None
    ) -> None:
        super().__init__(detail, reply=detail)
        self.tag = tag
        self.status = status
        self.code = code


class Scanner:
    """A cursor over the segments of one command (line bytes alternating with literals)."""

    def __init__(self, segments: tuple[Segment, ...]) -> None:
        self._segs = segments
        self._i = 0
        self._pos = 0
        self.tag_value: str | None = None

    # -- positions ---------------------------------------------------------------------

    def _line(self) -> bytes:
        seg = self._segs[self._i]
        return seg if isinstance(seg, bytes) else b""

    def peek(self) -> int | None:
        line = self._line()
        return line[self._pos] if self._pos < len(line) else None

    def literal_next(self) -> bool:
        return self._pos >= len(self._line()) and self._i + 1 < len(self._segs)

    def error(self, detail: str, *, status: str = "BAD", code: str | None = None
              ) -> CommandSyntaxError:
        return CommandSyntaxError(detail, tag=self.tag_value, status=status, code=code)

    def end(self) -> None:
        if self._pos != len(self._line()) or self._i != len(self._segs) - 1:
            raise self.error("unexpected characters at end of command")

    def expect(self, token: bytes) -> None:
        line = self._line()
        if line[self._pos : self._pos + len(token)] != token:
            raise self.error(f"expected {token.decode('ascii')!r}")
        self._pos += len(token)

    def sp(self) -> None:
        # RFC 9051 §9 note 2: SP is exactly one space.
        if self.peek() != 0x20:
            raise self.error("expected a space")
        self._pos += 1

    def _run(self, allowed: frozenset[int]) -> bytes:
        line = self._line()
        start = pos = self._pos
        while pos < len(line) and line[pos] in allowed:
            pos += 1
        self._pos = pos
        return line[start:pos]

    # -- atoms and words -----------------------------------------------------------------

    def tag(self) -> str:
        raw = self._run(TAG_CHARS)
        if not raw:
            raise self.error("missing or invalid tag")
        return raw.decode("ascii")

    def atom(self) -> str:
        raw = self._run(ATOM_CHARS)
        if not raw:
            raise self.error("expected an atom")
        return raw.decode("ascii")

    def keyword(self) -> str:
        return self.atom().upper()

    def try_keyword(self, word: str) -> bool:
        line = self._line()
        end = self._pos + len(word)
        if line[self._pos : end].upper() == word.encode("ascii") and (
            end == len(line) or line[end] not in ATOM_CHARS
        ):
            self._pos = end
            return True
        return False

    def peek_word(self) -> str:
        line = self._line()
        pos = self._pos
        while pos < len(line) and line[pos] in ATOM_CHARS:
            pos += 1
        return line[self._pos : pos].decode("ascii")

    def fetch_name(self) -> str:
        raw = self._run(_WORD_CHARS)
        if not raw:
            raise self.error("expected a data item name")
        return raw.decode("ascii").upper()

    def section_word(self) -> str:
        raw = self._run(_WORD_CHARS - {0x2B, 0x2D})
        if not raw:
            raise self.error("invalid section")
        return raw.decode("ascii").upper()

    # -- numbers -------------------------------------------------------------------------

    def _digits(self) -> int:
        raw = self._run(frozenset(b"0123456789"))
        if not raw or len(raw) > 19:
            raise self.error("expected a number")
        return int(raw)

    def number(self) -> int:
        value = self._digits()
        if value > MAX_NUMBER:  # RFC 9051 §9: number is 32-bit
            raise self.error("number out of range")
        return value

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise self.error("number must be non-zero")
        return value

    def number64(self) -> int:
        value = self._digits()
        if value > MAX_NUMBER64:  # RFC 9051 §9: number64 is 63-bit
            raise self.error("number out of range")
        return value

    def sequence_set(self, *, allow_saved: bool = True) -> SequenceSet:
        raw = self._run(_SEQ_CHARS).decode("ascii")
        if raw == "$" and not allow_saved:
            raise self.error("$ not allowed here")
        try:
            return SequenceSet.parse(raw)
        except SequenceSetError as exc:
            raise self.error(str(exc)) from None

    # -- strings -------------------------------------------------------------------------

    def literal(self) -> Literal:
        if not self.literal_next():
            raise self.error("expected a literal")
        seg = self._segs[self._i + 1]
        assert isinstance(seg, Literal)
        self._i += 2
        self._pos = 0
        return seg

    def quoted(self) -> bytes:
        self.expect(b'"')
        line = self._line()
        out = bytearray()
        pos = self._pos
        while True:
            if pos >= len(line):
                raise self.error("unterminated quoted string")
            byte = line[pos]
            if byte == 0x22:
                break
            if byte == 0x5C:
                # RFC 9051 §9 QUOTED-CHAR: "\" quoted-specials only
                if pos + 1 >= len(line) or line[pos + 1] not in (0x22, 0x5C):
                    raise self.error("invalid escape in quoted string")
                out.append(line[pos + 1])
                pos += 2
                continue
            if byte == 0x00 or byte in (0x0D, 0x0A):
                raise self.error("invalid character in quoted string")
            out.append(byte)
            pos += 1
        self._pos = pos + 1
        return bytes(out)

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        literal = self.literal()
        if literal.binary or 0 in literal.data:
            # RFC 9051 §9: literal = *CHAR8 (no NUL); literal8 only where the grammar says.
            raise self.error("NUL or literal8 not allowed here")
        return literal.data

    def astring(self, chars: frozenset[int] = ASTRING_CHARS) -> bytes:
        if self.peek() == 0x22 or self.literal_next():
            return self.string()
        raw = self._run(chars)
        if not raw:
            raise self.error("expected a string")
        return raw

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("invalid UTF-8 in string") from None

    def astring_text(self) -> str:
        return self._text(self.astring())

    def string_text(self) -> str:
        return self._text(self.string())

    def quoted_text(self) -> str:
        return self._text(self.quoted())

    def nstring_text(self) -> str | None:
        if self.try_keyword("NIL"):
            return None
        return self.string_text()

    def mailbox(self) -> str:
        name = self.astring_text()
        if "\x00" in name or "\r" in name or "\n" in name:
            raise self.error("invalid mailbox name")
        return name

    def list_mailbox(self) -> str:
        return self._text(self.astring(LIST_CHARS))

    # -- flags ---------------------------------------------------------------------------

    def flag(self) -> str:
        """flag = "\\" atom (system flags, flag-extension) / atom (keyword)."""
        if self.peek() == 0x5C:
            self._pos += 1
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(")
        flags: list[str] = []
        while self.peek() != 0x29:
            if flags:
                self.sp()
            flags.append(self.flag())
        self.expect(b")")
        return tuple(flags)
