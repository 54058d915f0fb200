"""Lexical layer of the IMAP response checker: the primitives of RFC 9051 §4 and §9 as a
server sends them (atoms, numbers, quoted strings, literals and literal8, flags, text, sequence
sets, date-time) and the generic ``tagged-ext`` value shape of extension data.

Used by ``grammar.py``; ``Incomplete`` signals that the data ended inside a response.

Left out: nothing of those productions.
"""

from __future__ import annotations

import re

from hato.codec.imap.scanner import ASTRING_CHARS, ATOM_CHARS
from hato.core.errors import ProtocolError

ATOM = ATOM_CHARS  # RFC 9051 §9 ATOM-CHAR, as the command parser uses it
ASTRING = ASTRING_CHARS
DIGITS = frozenset(b"0123456789")
SEQ = frozenset(b"0123456789:*,")
# RFC 9051 §9 date-time: date-day-fixed "-" date-month "-" date-year SP time SP zone
DATE_TIME = re.compile(
    rb"[ 0-9][0-9]-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-[0-9]{4} "
    rb"[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"
)
# Loose token characters for extension data (generic tagged-ext values).
LOOSE = frozenset(b for b in range(0x21, 0x100) if b not in b'()"{}[] ') | frozenset(b"\\%*")


class ResponseSyntaxError(ProtocolError):
    """A server response that the RFC 9051 grammar does not allow."""

    reply = "invalid server response"


class Incomplete(Exception):
    """The data ended inside a response."""


class Lexer:
    """A cursor over server bytes with the RFC 9051 §4 primitives."""

    def __init__(self, data: bytes, *, strict: bool, utf8: bool = False) -> None:
        self.d = data
        self.p = 0
        self.strict = strict
        self.utf8 = utf8  # RFC 6855 §3: uQUOTED-CHAR (UTF8-2 / UTF8-3 / UTF8-4) allowed

    # -- primitives ---------------------------------------------------------------------
    def fail(self, what: str) -> ResponseSyntaxError:
        line_start = self.d.rfind(b"\n", 0, self.p) + 1
        context = self.d[line_start : self.p + 20]
        return ResponseSyntaxError(f"{what} at offset {self.p - line_start}: {context!r}")

    def peek(self) -> int:
        if self.p >= len(self.d):
            raise Incomplete
        return self.d[self.p]

    def lit(self, token: bytes) -> None:
        """A case-insensitive literal token (RFC 9051 §9 note 1)."""
        chunk = self.d[self.p : self.p + len(token)]
        if len(chunk) < len(token) and token.upper().startswith(chunk.upper()):
            raise Incomplete
        if chunk.upper() != token.upper():
            raise self.fail(f"expected {token!r}")
        self.p += len(token)

    def try_lit(self, token: bytes) -> bool:
        chunk = self.d[self.p : self.p + len(token)]
        if chunk.upper() == token.upper():
            self.p += len(token)
            return True
        if len(chunk) < len(token) and token.upper().startswith(chunk.upper()) and chunk:
            raise Incomplete
        return False

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.fail("expected SP")
        self.p += 1

    def run(self, chars: frozenset[int], what: str) -> bytes:
        start = self.p
        while self.p < len(self.d) and self.d[self.p] in chars:
            self.p += 1
        if self.p == len(self.d):
            raise Incomplete
        if self.p == start:
            raise self.fail(f"expected {what}")
        return self.d[start : self.p]

    def crlf(self) -> None:
        self.lit(b"\r\n")

    def number(self, *, nonzero: bool = False, bits: int = 32) -> int:
        raw = self.run(DIGITS, "number")
        value = int(raw)
        if value >= 2**bits or (nonzero and (value == 0 or raw[:1] == b"0")):
            raise self.fail("number out of range")
        return value

    def atom(self) -> bytes:
        return self.run(ATOM, "atom")

    def quoted(self) -> bytes:
        self.lit(b'"')
        out = bytearray()
        while True:
            b = self.peek()
            if b == 0x22:
                self.p += 1
                return bytes(out)
            if b == 0x5C:
                self.p += 1
                if self.peek() not in (0x22, 0x5C):
                    raise self.fail("invalid escape in quoted")
            elif b in (0x00, 0x0D, 0x0A):
                raise self.fail("invalid character in quoted")
            elif b >= 0x80 and self.utf8:
                self._utf8_char(out)
                continue
            elif b >= 0x80 and self.strict:
                raise self.fail("invalid character in quoted")
            out.append(self.peek())
            self.p += 1

    def _utf8_char(self, out: bytearray) -> None:
        """One RFC 3629 §4 UTF8-2 / UTF8-3 / UTF8-4 sequence (valid UTF-8, no surrogates)."""
        lead = self.d[self.p]
        size = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else \
            4 if 0xF0 <= lead <= 0xF4 else 0
        if size == 0:
            raise self.fail("invalid UTF-8 in quoted")
        if self.p + size > len(self.d):
            raise Incomplete
        chunk = self.d[self.p : self.p + size]
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8 in quoted") from None
        out += chunk
        self.p += size

    def literal(self, *, binary: bool = False) -> bytes:
        if binary and self.try_lit(b"~"):
            pass
        self.lit(b"{")
        size = self.number(bits=63)
        if self.try_lit(b"+"):
            raise self.fail("non-synchronizing literal from a server")
        self.lit(b"}")
        self.crlf()
        if self.p + size > len(self.d):
            raise Incomplete
        data = self.d[self.p : self.p + size]
        if 0 in data and not binary:
            raise self.fail("NUL in literal")
        self.p += size
        return data

    def string(self) -> bytes:
        b = self.peek()
        if b == 0x22:
            return self.quoted()
        if b == 0x7B:
            return self.literal()
        raise self.fail("expected string")

    def nstring(self) -> bytes | None:
        if self.try_lit(b"NIL"):
            return None
        return self.string()

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.run(ASTRING, "astring")

    def flag(self, *, perm: bool = False) -> None:
        if self.try_lit(b"\\"):
            if perm and self.try_lit(b"*"):
                return
            self.atom()
        else:
            self.atom()

    def flag_list(self, *, perm: bool = False) -> None:
        self.lit(b"(")
        if self.peek() != 0x29:
            self.flag(perm=perm)
            while self.peek() == 0x20:
                self.sp()
                self.flag(perm=perm)
        self.lit(b")")

    def text(self) -> None:
        start = self.p
        while self.p < len(self.d) and self.d[self.p] not in (0x0D, 0x0A):
            b = self.d[self.p]
            if b == 0 or (b >= 0x80 and self.strict):
                raise self.fail("invalid character in text")
            self.p += 1
        if self.p == start and self.p < len(self.d):
            raise self.fail("expected text")

    def seqset(self) -> None:
        raw = self.run(SEQ, "sequence set")
        for item in raw.split(b","):
            for number in item.split(b":"):
                if number != b"*" and (not number.isdigit() or number.startswith(b"0")):
                    raise self.fail("invalid sequence set")

    def date_time(self) -> None:
        raw = self.quoted()
        if not DATE_TIME.fullmatch(raw):
            raise self.fail("invalid date-time")

    # -- generic extension data ---------------------------------------------------------
    def generic(self, depth: int = 0) -> None:
        """One tagged-ext-val / body-extension-like value."""
        if depth > 50:
            raise self.fail("nested too deeply")
        b = self.peek()
        if b == 0x28:
            self.p += 1
            first = True
            while self.peek() != 0x29:
                if not first and self.peek() == 0x20:
                    self.sp()
                first = False
                self.generic(depth + 1)
            self.p += 1
        elif b == 0x22:
            self.quoted()
        elif b == 0x7B or (b == 0x7E and self.d[self.p + 1 : self.p + 2] == b"{"):
            self.literal(binary=True)
        elif b == 0x5B:  # bracketed data in extension responses (e.g. MODSEQ in codes)
            self.p += 1
            while self.peek() != 0x5D:
                self.generic(depth + 1) if self.peek() != 0x20 else self.sp()
            self.p += 1
        else:
            self.run(LOOSE, "value")

    def generic_rest(self) -> None:
        while self.peek() in (0x20, 0x28):
            if self.peek() == 0x20:
                self.sp()
            self.generic()

    # -- responses -----------------------------------------------------------------------
