"""Sieve string values: encoded characters (RFC 5228 §2.4.2.4) and variable references
(RFC 5229 §3) parsed into templates at compile time.

A string argument becomes a ``Template``: literal text and references (``${name}``,
``${1}``, ``${global.name}``). A reference that is not well formed stays literal text
(RFC 5229 §3: "... the string is not a variable reference"). Octets from ``${hex:...}`` that
do not form UTF-8 are carried as surrogate escapes, so checks such as "invalid utf-8" in a
mailbox name see them. Leaves out: nothing of the two grammars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_MATCH_INDEX = 32  # Pigeonhole's limit on ${n}
MAX_NAME = 64  # Pigeonhole's limit on variable name length

_ENCODED = re.compile(r"\$\{(hex|unicode):([^{}$]*)\}", re.IGNORECASE)
_BLANK_SPLIT = re.compile(r"(?:[ \t]|\r\n)+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_REF = re.compile(r"\$\{([^${}]*)\}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUM = re.compile(r"[0-9]+\Z")


def decode_encoded(text: str, errors: list[str]) -> str:
    """RFC 5228 §2.4.2.4: replace ``${hex:..}`` and ``${unicode:..}``; bad code points are
    reported into ``errors`` (and the reference left as it is)."""

    def sub(m: re.Match[str]) -> str:
        kind = m.group(1).lower()
        items = [t for t in _BLANK_SPLIT.split(m.group(2)) if t]
        if not items or not all(_HEX.fullmatch(t) for t in items):
            return m.group(0)  # not an encoded character: kept as written
        if kind == "hex":
            if any(len(t) > 2 for t in items):  # hex-pair = 1*2HEXDIG
                return m.group(0)
            return bytes(int(t, 16) for t in items).decode("utf-8", "surrogateescape")
        out = []
        for t in items:
            value = int(t, 16)
            # RFC 5228 §2.4.2.4: only 0-D7FF and E000-10FFFF are characters
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                errors.append(
                    "invalid unicode character "
                    f"0x{value & 0xFFFFFFFF:08x} in encoded character substitution"
                )
                return m.group(0)
            out.append(chr(value))
        return "".join(out)

    return _ENCODED.sub(sub, text)


def has_bad_utf8(text: str) -> bool:
    """Whether ``text`` carries octets that were not UTF-8 (surrogate escapes)."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def shown(text: str) -> str:
    """``text`` for a message, octets that were not UTF-8 shown as "?"."""
    return "".join("?" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


@dataclass(frozen=True, slots=True)
class Ref:
    """A variable reference: ``namespace`` is () for plain and match variables; ``index`` is set
    for match variables; ``scope`` ("local"/"global"/a namespace name) is filled in by the
    validator."""

    namespace: tuple[str, ...]
    name: str
    index: int | None = None
    scope: str = "local"


@dataclass(frozen=True, slots=True)
class Template:
    """A string argument: literal pieces and references, in order."""

    parts: tuple[str | Ref, ...]

    @property
    def constant(self) -> str | None:
        """The text when there are no references, else None."""
        if all(isinstance(p, str) for p in self.parts):
            return "".join(p for p in self.parts if isinstance(p, str))
        return None

    @staticmethod
    def literal(text: str) -> Template:
        return Template((text,) if text else ())


def parse_name(text: str) -> tuple[tuple[str, ...], str] | None:
    """``a.b.name`` split into namespace and name when well formed (RFC 5229 §3), else None."""
    pieces = text.split(".")
    if not all(p and (_IDENT.match(p) or _NUM.match(p)) for p in pieces):
        return None
    if len(pieces) > 1 and not _IDENT.match(pieces[0]):
        return None  # a namespace starts with an identifier
    return tuple(pieces[:-1]), pieces[-1]


def parse_template(text: str) -> Template:
    """Split ``text`` into literal text and well-formed ``${...}`` references."""
    parts: list[str | Ref] = []
    pos = 0
    literal: list[str] = []
    for m in _REF.finditer(text):
        split = parse_name(m.group(1))
        if split is None:
            continue
        namespace, name = split
        literal.append(text[pos : m.start()])
        pos = m.end()
        if literal and "".join(literal):
            parts.append("".join(literal))
        literal = []
        if not namespace and _NUM.match(name):
            parts.append(Ref((), name, index=int(name)))
        else:
            parts.append(Ref(namespace, name.lower()))
    literal.append(text[pos:])
    if "".join(literal):
        parts.append("".join(literal))
    return Template(tuple(parts))
