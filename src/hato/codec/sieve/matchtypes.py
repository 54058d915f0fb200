"""Sieve match types: :is, :contains, :matches (RFC 5228 §2.7.1), :value and :count (RFC 5231),
:regex (draft-ietf-sieve-regex-01), with match variables (RFC 5229 §3.2).

:matches is matched without backtracking: the pattern is split at its "*" wildcards, the first
piece anchored at the start, the last at the end and each middle piece placed leftmost, which
makes every "*" match as little as possible (RFC 5229 §3.2 non-greedy) in O(n*m) time.
:regex translates POSIX extended syntax (bracket classes such as ``[:alpha:]``, a leading "]"
in a bracket) to Python's engine. Leaves out: POSIX leftmost-longest alternation (Python takes
the first alternative that matches).
Security: patterns come from users; :matches is linear-ish, :regex runs on values capped by the
caller (header values and body text under the script's limits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hato.codec.sieve.comparators import Comparator

RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")  # RFC 5231 §5


@dataclass(frozen=True, slots=True)
class MatchType:
    """A match type and, for :value/:count, its relation."""

    kind: str  # "is", "contains", "matches", "regex", "value", "count"
    relation: str = ""


IS = MatchType("is")


def relation_holds(relation: str, order: int) -> bool:
    """RFC 5231 §5: whether ``order`` (the comparator's -1/0/1) satisfies ``relation``."""
    return {
        "gt": order > 0,
        "ge": order >= 0,
        "lt": order < 0,
        "le": order <= 0,
        "eq": order == 0,
        "ne": order != 0,
    }[relation]


def _glob_tokens(pattern: str) -> list[tuple[str, str]]:
    """``("*", "")``, ``("?", "")`` and ``("c", char)``; "\\" makes the next character literal."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(("c", pattern[i + 1]))
            i += 2
            continue
        out.append((ch, "") if ch in "*?" else ("c", ch))
        i += 1
    return out


def glob_match(pattern: str, text: str, *, comparator: Comparator) -> list[str] | None:
    """The wildcard captures (``[whole, w1, w2, ...]``) when ``text`` matches, else None."""
    segments: list[list[tuple[str, str]]] = [[]]
    for kind, ch in _glob_tokens(pattern):
        if kind == "*":
            segments.append([])
        else:
            segments[-1].append((kind, comparator.fold(ch) if kind == "c" else ""))
    keys = [comparator.fold(c) for c in text]
    n = len(keys)

    def fits(seg: list[tuple[str, str]], at: int) -> bool:
        if at < 0 or at + len(seg) > n:
            return False
        return all(kind == "?" or keys[at + k] == ch for k, (kind, ch) in enumerate(seg))

    def singles(seg: list[tuple[str, str]], at: int) -> list[str]:
        return [text[at + k] for k, (kind, _) in enumerate(seg) if kind == "?"]

    first = segments[0]
    if len(segments) == 1:
        if len(first) != n or not fits(first, 0):
            return None
        return [text, *singles(first, 0)]
    if not fits(first, 0):
        return None
    captures = [text, *singles(first, 0)]
    pos = len(first)
    for seg in segments[1:-1]:
        at = pos
        while at + len(seg) <= n and not fits(seg, at):
            at += 1
        if at + len(seg) > n:
            return None
        captures.append(text[pos:at])
        captures.extend(singles(seg, at))
        pos = at + len(seg)
    last = segments[-1]
    at = n - len(last)
    if at < pos or not fits(last, at):
        return None
    captures.append(text[pos:at])
    captures.extend(singles(last, at))
    return captures


_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}


class RegexError(ValueError):
    """A :regex key is not a valid POSIX extended regular expression."""


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "[":
            j = i + 1
            body: list[str] = []
            if j < n and pattern[j] == "^":
                body.append("^")
                j += 1
            if j < n and pattern[j] == "]":
                body.append(r"\]")
                j += 1
            closed = False
            while j < n:
                c = pattern[j]
                if c == "]":
                    closed = True
                    j += 1
                    break
                if c == "[" and j + 1 < n and pattern[j + 1] in ":.=":
                    kind = pattern[j + 1]
                    end = pattern.find(kind + "]", j + 2)
                    if end < 0:
                        raise RegexError("unmatched [, [^, [:, [., or [=")
                    name = pattern[j + 2 : end]
                    if kind == ":":
                        if name not in _POSIX_CLASSES:
                            raise RegexError("invalid character class")
                        body.append(_POSIX_CLASSES[name])
                    else:
                        body.append(re.escape(name))
                    j = end + 2
                    continue
                body.append("\\\\" if c == "\\" else ("\\[" if c == "[" else c))
                j += 1
            if not closed:
                raise RegexError("unmatched [, [^, [:, [., or [=")
            out.append("[" + "".join(body) + "]")
            i = j
            continue
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            out.append("\\" + nxt if nxt.isalnum() else re.escape(nxt))
            i += 2
            continue
        if ch in "*+?{" and (not out or out[-1] in ("(", "|")):
            raise RegexError("invalid preceding regular expression")
        out.append(ch)
        i += 1
    return "".join(out)


def compile_regex(pattern: str, comparator: Comparator) -> re.Pattern[str]:
    """Compile a :regex key; raises RegexError with a POSIX-style reason."""
    flags = re.DOTALL
    if comparator.name != "i;octet":
        flags |= re.IGNORECASE
    try:
        return re.compile(_translate(pattern), flags)
    except re.error as exc:
        raise RegexError(str(exc)) from None


class Matcher:
    """Evaluates one match type with one comparator over values and keys."""

    def __init__(self, match_type: MatchType, comparator: Comparator) -> None:
        self.match_type = match_type
        self.comparator = comparator
        self._regex: dict[str, re.Pattern[str]] = {}

    def regex(self, key: str) -> re.Pattern[str]:
        compiled = self._regex.get(key)
        if compiled is None:
            compiled = compile_regex(key, self.comparator)
            self._regex[key] = compiled
        return compiled

    def one(self, value: str, key: str) -> list[str] | None:
        """Captures (``[]`` for types without captures) when ``value`` matches ``key``."""
        kind = self.match_type.kind
        cmp = self.comparator
        if kind == "is":
            return [] if cmp.equals(value, key) else None
        if kind == "contains":
            return [] if cmp.fold(key) in cmp.fold(value) else None
        if kind == "matches":
            return glob_match(key, value, comparator=cmp)
        if kind == "regex":
            m = self.regex(key).search(value)
            if m is None:
                return None
            return [m.group(0), *(g or "" for g in m.groups())]
        if kind == "value":
            return [] if relation_holds(self.match_type.relation, cmp.order(value, key)) else None
        raise ValueError(kind)

    def any(self, values: list[str], keys: list[str]) -> list[str] | None:
        """Captures of the first (value, key) pair that matches, or None (RFC 5228 §2.7)."""
        if self.match_type.kind == "count":
            count = str(len(values))
            for key in keys:
                if relation_holds(self.match_type.relation, self.comparator.order(count, key)):
                    return []
            return None
        for value in values:
            for key in keys:
                got = self.one(value, key)
                if got is not None:
                    return got
        return None
