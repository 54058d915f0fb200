"""Sieve lexer: script text in, tokens with line numbers out (RFC 5228 §2.2-§2.4, §8.1).

Implements the lexical grammar of RFC 5228 §8.1: hash and bracket comments, identifiers and
tags, numbers with the K/M/G quantifiers (§2.4.1), quoted strings with the ``\\"``/``\\\\``
escapes and undefined escapes read as the bare character (§2.4.2), and ``text:`` multi-line
strings with dot-unstuffing (§2.4.2). Line breaks inside strings are normalised to CRLF, the
canonical form of the grammar. Leaves out: nothing of the grammar; limits follow Pigeonhole
(identifiers of at most 32 characters, numbers up to 2^64 - 1) so the same scripts fail.
Security: scripts come from users; the lexer is one linear pass and never raises except
through the error list it returns.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_IDENTIFIER = 32  # Pigeonhole's limit; RFC 5228 sets none
MAX_NUMBER = 2**64 - 1


class Kind(enum.Enum):
    """Token kinds of RFC 5228 §8.1."""

    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"  # quoted-string or multi-line (text:)
    LBRACKET = "["
    RBRACKET = "]"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    SEMICOLON = ";"
    COMMA = ","
    GARBAGE = "garbage"  # characters outside the grammar (already reported)
    EOF = "end of script"


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, its value (name, decoded string, or number) and its line."""

    kind: Kind
    value: str | int
    line: int


_PUNCT = {
    "[": Kind.LBRACKET,
    "]": Kind.RBRACKET,
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "{": Kind.LBRACE,
    "}": Kind.RBRACE,
    ";": Kind.SEMICOLON,
    ",": Kind.COMMA,
}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+([KkMmGg])?")
_QUANT = {"k": 2**10, "m": 2**20, "g": 2**30}  # RFC 5228 §2.4.1
_WHITE = re.compile(r"[ \t\r\n]+")
_TEXT_START = re.compile(r"text:[ \t]*(#[^\n]*)?\r?\n")
_LINE_END = re.compile(r"\r?\n")


def _crlf(text: str) -> str:
    """Line breaks as CRLF (RFC 5228 §2.2: the script's line ends are CRLF)."""
    return _LINE_END.sub("\r\n", text.replace("\r\n", "\n"))


def tokenize(text: str) -> tuple[list[Token], list[tuple[int, str]]]:
    """All tokens of ``text`` (ending with EOF) and the lexical errors found on the way."""
    tokens: list[Token] = []
    errors: list[tuple[int, str]] = []
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        ch = text[pos]
        m = _WHITE.match(text, pos)
        if m:
            line += text.count("\n", pos, m.end())
            pos = m.end()
            continue
        if ch == "#":  # RFC 5228 §2.3 hash-comment, up to the end of the line
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        if text.startswith("/*", pos):  # RFC 5228 §2.3 bracket-comment, not nested
            end = text.find("*/", pos + 2)
            if end < 0:
                errors.append((line, "end of file before end of bracket comment ('*/')"))
                line += text.count("\n", pos)
                pos = n
                continue
            line += text.count("\n", pos, end)
            pos = end + 2
            continue
        if ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, line))
            pos += 1
            continue
        if ch == '"':
            pos, line = _quoted(text, pos, line=line, tokens=tokens, errors=errors)
            continue
        if ch == ":":
            m = _IDENT.match(text, pos + 1)
            if m is None:
                errors.append((line, "unexpected character(s) starting with ':'"))
                tokens.append(Token(Kind.GARBAGE, ":", line))
                pos += 1
                continue
            name = m.group(0)
            if len(name) > MAX_IDENTIFIER:
                errors.append(
                    (line, f"encountered impossibly long tag identifier ':{name[:29]}...'")
                )
            tokens.append(Token(Kind.TAG, name.lower(), line))
            pos = m.end()
            continue
        if ch.isdigit() and ch.isascii():
            m = _NUMBER.match(text, pos)
            assert m is not None
            digits = m.group(0).rstrip("KkMmGg")
            value = int(digits) * _QUANT.get((m.group(1) or "").lower(), 1)
            if value > MAX_NUMBER:
                errors.append((line, f"number exceeds integer limits (max {MAX_NUMBER})"))
                value = MAX_NUMBER
            tokens.append(Token(Kind.NUMBER, value, line))
            pos = m.end()
            continue
        m = _IDENT.match(text, pos)
        if m:
            name = m.group(0)
            if name == "text":
                t = _TEXT_START.match(text, pos)
                if t is not None:
                    pos, line = _multiline(text, t.end(), line=line, tokens=tokens, errors=errors)
                    continue
            if len(name) > MAX_IDENTIFIER:
                errors.append((line, f"encountered impossibly long identifier '{name[:29]}...'"))
            tokens.append(Token(Kind.IDENTIFIER, name.lower(), line))
            pos = m.end()
            continue
        # a run of characters outside the grammar is one error (as Pigeonhole reports it)
        start = pos
        while pos < n and not (
            text[pos] in _PUNCT or text[pos] in ' \t\r\n"#:' or text[pos].isalnum()
        ):
            pos += 1
        pos = max(pos, start + 1)
        shown = text[start]
        errors.append((line, f"unexpected character(s) starting with '{shown}'"))
        tokens.append(Token(Kind.GARBAGE, text[start:pos], line))
    tokens.append(Token(Kind.EOF, "", line))
    return tokens, errors


def _quoted(
    text: str, pos: int, *, line: int, tokens: list[Token], errors: list[tuple[int, str]]
) -> tuple[int, int]:
    """RFC 5228 §2.4.2: a quoted string; ``\\`` escapes the next character, whatever it is."""
    start_line = line
    out: list[str] = []
    i = pos + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            tokens.append(Token(Kind.STRING, _crlf("".join(out)), start_line))
            return i + 1, line
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "\n":
                line += 1
            out.append(nxt)  # RFC 5228 §2.4.2: undefined escapes are the bare character
            i += 2
            continue
        if ch == "\n":
            line += 1
        out.append(ch)
        i += 1
    errors.append((start_line, "end of file before end of quoted string"))
    tokens.append(Token(Kind.GARBAGE, "", start_line))
    return n, line


def _multiline(
    text: str, pos: int, *, line: int, tokens: list[Token], errors: list[tuple[int, str]]
) -> tuple[int, int]:
    """RFC 5228 §2.4.2 multi-line: lines up to a lone ".", a leading ".." read as "."."""
    start_line = line
    line += 1
    out: list[str] = []
    n = len(text)
    while pos < n:
        end = text.find("\n", pos)
        raw = text[pos:] if end < 0 else text[pos:end]
        if raw.endswith("\r"):
            raw = raw[:-1]
        if raw == ".":
            tokens.append(Token(Kind.STRING, "".join(out), start_line))
            return (n if end < 0 else end + 1), line + (0 if end < 0 else 1)
        if end < 0:
            break
        out.append((raw[1:] if raw.startswith("..") else raw) + "\r\n")
        line += 1
        pos = end + 1
    errors.append((start_line, "end of file before end of multi-line string"))
    tokens.append(Token(Kind.GARBAGE, "", start_line))
    return n, line
