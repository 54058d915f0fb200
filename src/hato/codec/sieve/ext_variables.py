"""Sieve "variables" (RFC 5229): the set command with its modifiers and the string test.

Implements RFC 5229 §4 (set; modifiers :lower, :upper, :lowerfirst, :upperfirst,
:quotewildcard, :length applied by precedence, largest first, §4.1), §5 (string; with :count
an empty string counts 0, others 1), the :quoteregex modifier of draft-ietf-sieve-regex §5 and
:encodeurl of RFC 5435 §6. Reference expansion and storage are in ``runtime``.
"""

from __future__ import annotations

import urllib.parse

from hato.codec.sieve.language import MODIFIER_PRECEDENCE, Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error
from hato.codec.sieve.strings import Ref

_REGEX_SPECIAL = set("\\*?.+[](){}^$|")


def _quote(text: str, special: set[str]) -> str:
    return "".join("\\" + c if c in special else c for c in text)


def _modify(name: str, value: str) -> str:
    if name == "lower":
        return value.lower()
    if name == "upper":
        return value.upper()
    if name == "lowerfirst":
        return value[:1].lower() + value[1:]
    if name == "upperfirst":
        return value[:1].upper() + value[1:]
    if name == "quotewildcard":
        return _quote(value, {"*", "?", "\\"})
    if name == "quoteregex":
        return _quote(value, _REGEX_SPECIAL)
    if name == "encodeurl":
        # RFC 5435 §6: percent-encode everything but RFC 3986 unreserved characters
        return urllib.parse.quote(value.encode("utf-8", "surrogateescape"), safe="-._~")
    if name == "length":
        return str(len(value))
    return value


def apply_modifiers(cmd: Cmd, value: str) -> str:
    """RFC 5229 §4.1: apply the command's modifiers, highest precedence first."""
    names = [n for n in MODIFIER_PRECEDENCE if n in cmd.tags]
    for name in sorted(names, key=lambda n: -MODIFIER_PRECEDENCE[n]):
        value = _modify(name, value)
    return value


def escapes_of(cmd: Cmd) -> str:
    """The escapes the last applied modifier leaves in the value (for cutting it whole)."""
    if "length" in cmd.tags:
        return ""
    if "encodeurl" in cmd.tags:
        return "%"
    return "\\" if "quotewildcard" in cmd.tags or "quoteregex" in cmd.tags else ""


def _set(rt: Runtime, cmd: Cmd) -> None:
    target = cmd.extra.get("target")
    if not isinstance(target, Ref):
        raise runtime_error(cmd, "set: invalid variable")
    rt.assign(target, apply_modifiers(cmd, rt.expand(cmd.string(1))), escapes=escapes_of(cmd))


def _string(rt: Runtime, cmd: Cmd) -> bool:
    values = rt.expand_all(cmd.strings(0))
    if cmd.match is not None and cmd.match.kind == "count":
        values = [v for v in values if v != ""]  # RFC 5229 §5: "" counts 0
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(1)))


COMMANDS: dict[str, CommandFn] = {"set": _set}
TESTS: dict[str, TestFn] = {"string": _string}
