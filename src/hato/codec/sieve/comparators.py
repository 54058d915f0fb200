"""Sieve comparators: how two strings compare for equality, substrings and order (RFC 4790).

Implements i;octet (RFC 4790 §9.3), i;ascii-casemap (§9.2), i;ascii-numeric (§9.1, RFC 5228
§2.7.3, Sieve extension "comparator-i;ascii-numeric") and i;unicode-casemap (RFC 5051, Sieve
extension "comparator-i;unicode-casemap": NFKD plus full case folding, an approximation of the
RFC's titlecase-then-decompose). Leaves out: other registered collations (none is required).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_DIGITS = re.compile(r"[0-9]*")


def _ascii_fold(text: str) -> str:
    # RFC 4790 §9.2: only US-ASCII letters are folded
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _unicode_fold(text: str) -> str:
    # RFC 5051 §2: titlecase each character, then NFKD; casefold() after NFKD is our stand-in
    return unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())


@dataclass(frozen=True, slots=True)
class Comparator:
    """A comparator: ``fold`` maps a string to its comparison key (per character when
    ``per_char`` holds, so match positions map back to the original string)."""

    name: str
    substring: bool  # supports :contains / :matches / :regex (RFC 4790 §4.2.3)

    def fold(self, text: str) -> str:
        if self.name == "i;ascii-casemap":
            return _ascii_fold(text)
        if self.name == "i;unicode-casemap":
            return _unicode_fold(text)
        return text

    def fold_char(self, ch: str) -> str:
        return self.fold(ch)

    def equals(self, a: str, b: str) -> bool:
        if self.name == "i;ascii-numeric":
            return _numeric(a) == _numeric(b)
        return self.fold(a) == self.fold(b)

    def order(self, a: str, b: str) -> int:
        """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` (RFC 5231 §4)."""
        if self.name == "i;ascii-numeric":
            x, y = _numeric(a), _numeric(b)
            if x is None or y is None:  # RFC 4790 §9.1.1: no leading digit = positive infinity
                return 0 if x is y else (1 if x is None else -1)
            return (x > y) - (x < y)
        fa = self.fold(a).encode("utf-8")
        fb = self.fold(b).encode("utf-8")
        return (fa > fb) - (fa < fb)


def _numeric(text: str) -> int | None:
    """RFC 4790 §9.1.1: the value of the leading digits, or None (infinity) when none."""
    digits = _DIGITS.match(text)
    assert digits is not None
    if not digits.group(0):
        return None
    return int(digits.group(0))


COMPARATORS: dict[str, Comparator] = {
    "i;octet": Comparator("i;octet", substring=True),
    "i;ascii-casemap": Comparator("i;ascii-casemap", substring=True),
    "i;ascii-numeric": Comparator("i;ascii-numeric", substring=False),
    "i;unicode-casemap": Comparator("i;unicode-casemap", substring=True),
}

# the capability that must be required before a comparator may be named (RFC 5228 §2.7.3)
CAPABILITY: dict[str, str | None] = {
    "i;octet": None,
    "i;ascii-casemap": None,
    "i;ascii-numeric": "comparator-i;ascii-numeric",
    "i;unicode-casemap": "comparator-i;unicode-casemap",
}

DEFAULT = COMPARATORS["i;ascii-casemap"]  # RFC 5228 §2.7.3: the default comparator
