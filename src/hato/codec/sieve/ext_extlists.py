"""Sieve "extlists" (RFC 6134): externally stored lists, queried through an injected provider.

Implements RFC 6134 §2.2 (the :list match type on address, envelope, header and string: true
when a tested value is a member of one of the named lists; ${0} is the list value that matched;
a comparator with :list is an error; a list the engine cannot query is a runtime error), §2.3
(redirect :list: one redirect per member of an enumerable list, else a runtime error), §2.5
(list names are absolute URIs; a leading ":" stands for "urn:ietf:params:sieve:"; the name
"default" is case-insensitive after percent-decoding), §2.6 (addrbook URNs: one segment, no
URN extensions - none are defined), §2.7 (valid_ext_list: the same validation as :list plus
"does the provider know the list"). Without a provider only :addrbook:default exists and it is
empty (§2.5 allows this as a last resort). ``StaticLists`` is a provider over in-memory
members compared without regard to case (§2.5: address book queries SHOULD ignore case).
Leaves out: list-specific ${1}... match variables (MAY, §2.2).
Security: list contents come from the host; redirect :list stays under the redirect limit.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error

SIEVE_URN = "urn:ietf:params:sieve:"
ADDRBOOK_DEFAULT = SIEVE_URN + "addrbook:default"
# RFC 3986 §3.1 scheme, then the characters of hier-part / query (no fragment: absolute-URI)
_ABSOLUTE_URI = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*\Z"
)
# RFC 3986 §3.3 segment characters (pchar without ":" as the addrbook name is one segment)
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=@]|%[0-9A-Fa-f]{2})+\Z")


class ExternalLists(Protocol):
    """The host's externally stored lists, by normalized name (see ``normalize_list_name``)."""

    def has_list(self, name: str) -> bool:
        """Whether the list exists and can be queried (RFC 6134 §2.7)."""
        ...

    def lookup(self, name: str, values: Sequence[str]) -> str | None:
        """The list member equal to one of ``values`` (RFC 6134 §2.2), or None."""
        ...

    def members(self, name: str) -> Sequence[str] | None:
        """The list's members for redirect :list (RFC 6134 §2.3); None: not enumerable."""
        ...


class StaticLists:
    """Lists held in memory: ``{normalized name: members}``; matching ignores case."""

    def __init__(self, lists: Mapping[str, Iterable[str]]) -> None:
        self._lists: dict[str, tuple[str, ...]] = {}
        for name, members in lists.items():
            key = normalize_list_name(name)
            if key is None:
                raise ValueError(f"invalid external list name {name!r}")
            self._lists[key] = tuple(members)
        self._folded = {
            name: {m.casefold(): m for m in members} for name, members in self._lists.items()
        }

    def has_list(self, name: str) -> bool:
        return name in self._lists

    def lookup(self, name: str, values: Sequence[str]) -> str | None:
        folded = self._folded.get(name, {})
        for value in values:
            found = folded.get(value.casefold())
            if found is not None:
                return found
        return None

    def members(self, name: str) -> Sequence[str] | None:
        return self._lists.get(name)


def normalize_list_name(text: str) -> str | None:
    """The canonical form of an external list name, or None when it is not valid."""
    if text.startswith(":"):  # RFC 6134 §2.5: the shorthand for a Sieve URN parameter
        text = SIEVE_URN + text[1:]
    if not _ABSOLUTE_URI.match(text):
        return None  # RFC 6134 §2.5: always an absolute URI
    if text[: len(SIEVE_URN)].lower() != SIEVE_URN:
        return text
    param, _, rest = text[len(SIEVE_URN) :].partition(":")
    if param.lower() != "addrbook":
        return None  # RFC 6134 §4.3: addrbook is the only registered Sieve URN parameter
    if "?" in rest:
        return None  # RFC 6134 §2.6: "There are no extensions defined at this time"
    if not _SEGMENT.match(rest):
        return None  # RFC 6134 §2.6: addrbook = segment
    book = urllib.parse.unquote(rest, errors="surrogateescape")
    if book.lower() == "default":  # RFC 6134 §2.5: "default" is case-insensitive
        return ADDRBOOK_DEFAULT
    return SIEVE_URN + "addrbook:" + urllib.parse.quote(book, safe="", errors="surrogateescape")


_EMPTY_DEFAULT = StaticLists({ADDRBOOK_DEFAULT: ()})


def provider(rt: Runtime) -> ExternalLists:
    lists = rt.ext_lists
    return lists if lists is not None else _EMPTY_DEFAULT


def list_match(rt: Runtime, cmd: Cmd, values: list[str], names: list[str]) -> str | None:
    """RFC 6134 §2.2: the list value one of ``values`` matched in one of the ``names``."""
    lists = provider(rt)
    values = [v.strip() for v in values]  # §2.2: leading and trailing whitespace ignored
    for text in names:
        name = normalize_list_name(text)
        if name is None:
            raise runtime_error(cmd, f"invalid external list name '{text}' for :list match")
        if not lists.has_list(name):
            # RFC 6134 §2.2: a list that cannot be queried is a runtime error
            raise runtime_error(cmd, f"unknown external list '{text}' for :list match")
        found = lists.lookup(name, values)
        if found is not None:
            return found
    return None


def list_members(rt: Runtime, cmd: Cmd, text: str) -> Sequence[str]:
    """RFC 6134 §2.3: the addresses redirect :list sends to (runtime error if unknown)."""
    name = normalize_list_name(text)
    lists = provider(rt)
    if name is None or not lists.has_list(name):
        raise runtime_error(cmd, f"redirect :list: unknown external list '{text}'")
    members = lists.members(name)
    if members is None:
        raise runtime_error(cmd, f"redirect :list: external list '{text}' cannot be enumerated")
    return members


def _valid_ext_list(rt: Runtime, cmd: Cmd) -> bool:
    lists = provider(rt)
    for text in rt.expand_all(cmd.strings(0)):
        name = normalize_list_name(text)
        if name is None or not lists.has_list(name):  # RFC 6134 §2.7
            return False
    return True


COMMANDS: dict[str, CommandFn] = {}
TESTS: dict[str, TestFn] = {"valid_ext_list": _valid_ext_list}
