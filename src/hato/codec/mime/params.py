"""Content-Type and Content-Disposition values: type/subtype and parameters.

Implements RFC 2045 §5.1 (``type "/" subtype *(";" parameter)``, tokens, quoted strings,
comments as CFWS), RFC 2183 §2 (disposition type and parameters) and RFC 2231 §3-§4
(parameter value continuations ``name*0``, ``name*1``..., charset and language in
``name*=charset'lang'%XX`` values, applied to the assembled value of a continued parameter).

Leniency real mail needs, beyond the RFC: whitespace around "/" and "=", a missing ";" between
parameters, unquoted values that hold spaces or encoded words, RFC 2047 encoded words inside
parameter values (Outlook's filenames), unterminated quoted strings. Leaves out: generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from hato.codec.mime import charsets
from hato.codec.mime.headers import decode_words


@dataclass(frozen=True, slots=True)
class MimeValue:
    """A parsed Content-Type or Content-Disposition field body.

    ``params`` are decoded (RFC 2231 continuations joined, charsets applied, RFC 2047 words
    decoded) with lower-cased names in order of first appearance; ``raw_params`` are the
    parameters as written (lower-cased names incl. any ``*`` suffix, values unquoted, nothing
    decoded), for IMAP BODYSTRUCTURE renderers that pass RFC 2231 through to the client.
    """

    type: str  # lower-cased
    subtype: str | None  # lower-cased; None when absent (always so for a disposition)
    params: tuple[tuple[str, str], ...]
    raw_params: tuple[tuple[str, str], ...]
    languages: tuple[tuple[str, str], ...]  # RFC 2231 §5 language tags per parameter

    def param(self, name: str) -> str | None:
        """The decoded value of parameter ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None


_TYPE_STOP = frozenset("/;( \t\r\n")
_SUBTYPE_STOP = frozenset(";( \t\r\n")
_NAME_STOP = frozenset('=;( \t\r\n"')
# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
_PARAM_START = re.compile(r"[^\s()<>@,;:\\\"/\[\]?=]+[ \t\r\n]*=")
_SECTION = re.compile(r"^(.+?)\*(?:(\d{1,9})\*?|)$")
_EXTENDED = re.compile(r"^([^']*)'([^']*)'(.*)$", re.DOTALL)


def parse_mime_value(text: str, *, with_subtype: bool = True) -> MimeValue | None:
    """Parse a Content-Type (``with_subtype``) or Content-Disposition field body.

    Returns None when there is no type at all (an empty value, or one that starts with "/"
    or ";"); a type without a subtype gives ``subtype=None``.
    """
    n = len(text)
    i = _skip_cfws(text, 0)
    start = i
    stop = _TYPE_STOP if with_subtype else _SUBTYPE_STOP
    while i < n and text[i] not in stop:
        i += 1
    ctype = text[start:i].lower()
    if not ctype:
        return None
    subtype: str | None = None
    i = _skip_cfws(text, i)
    if with_subtype and i < n and text[i] == "/":
        i = _skip_cfws(text, i + 1)
        start = i
        while i < n and text[i] not in _SUBTYPE_STOP:
            i += 1
        subtype = text[start:i].lower() or None
    raw = _parse_params(text, i)
    params, languages = _assemble(raw)
    return MimeValue(ctype, subtype, params, tuple(raw), languages)


def _skip_cfws(text: str, i: int) -> int:
    """Skip whitespace and (nested) comments (RFC 5322 §3.2.2)."""
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                c = text[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return min(i, n)


def _parse_params(text: str, i: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    n = len(text)
    while i < n:
        i = _skip_cfws(text, i)
        if i < n and text[i] == ";":
            i += 1
            continue
        start = i
        while i < n and text[i] not in _NAME_STOP:
            i += 1
        name = text[start:i].lower()
        i = _skip_cfws(text, i)
        if i >= n or text[i] != "=":
            if i == start:
                i += 1  # a stray character: step over it
            continue
        i = _skip_cfws(text, i + 1)
        if i < n and text[i] == '"':
            value, i = _quoted(text, i + 1)
            quoted = True
        else:
            value, i = _unquoted(text, i)
            quoted = False
        # RFC 2231 §3: a section marker needs an attribute name before it
        if name and not name.startswith("*") and (value or quoted):
            out.append((name, value))
    return out


def _quoted(text: str, i: int) -> tuple[str, int]:
    """A quoted-string's content from just after the opening DQUOTE (RFC 5322 §3.2.4)."""
    chars: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            chars.append(text[i + 1])  # quoted-pair
            i += 2
            continue
        if c == '"':
            return "".join(chars), i + 1
        if c not in "\r\n":
            chars.append(c)
        i += 1
    return "".join(chars), n  # unterminated: the rest of the field


def _unquoted(text: str, i: int) -> tuple[str, int]:
    """A token value; continues over whitespace unless a comment, ";" or ``name=`` follows."""
    n = len(text)
    start = i
    end = i
    while i < n:
        c = text[i]
        if c == ";":
            break
        if c in " \t\r\n(":
            j = _skip_cfws(text, i)
            if j >= n or text[j] == ";" or text[i] == "(" or _PARAM_START.match(text, j):
                i = j
                break
            i = j
            continue
        i += 1
        end = i
    return text[start:end], i


def _assemble(
    raw: list[tuple[str, str]],
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """Join RFC 2231 §3 continuations and apply §4 charsets; RFC 2231 values win over plain."""
    order: dict[str, None] = {}  # first appearance of each parameter name
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[bool, str]]] = {}
    for name, value in raw:
        m = _SECTION.match(name) if "*" in name else None
        if m is None:
            base = name
            plain[base] = value  # a repeated parameter: the last one wins (as Dovecot does)
        else:
            base = m.group(1)
            index = int(m.group(2)) if m.group(2) is not None else 0
            extended = name.endswith("*")
            sections.setdefault(base, {})[index] = (extended, value)
        order.setdefault(base, None)
    params: list[tuple[str, str]] = []
    languages: list[tuple[str, str]] = []
    for base in order:
        if base in sections:
            value, language = _join_sections(sections[base])
            if language:
                languages.append((base, language))
        else:
            value = plain[base]
            if "=?" in value:
                value = decode_words(value)  # RFC 2047 in a parameter: not allowed, but common
        params.append((base, value))
    return tuple(params), tuple(languages)


def _join_sections(parts: dict[int, tuple[bool, str]]) -> tuple[str, str]:
    charset: str | None = None
    language = ""
    chunks: list[bytes] = []
    for k, index in enumerate(sorted(parts)):
        extended, value = parts[index]
        if extended:
            if k == 0:  # RFC 2231 §4.1: only the first section carries charset'language'
                m = _EXTENDED.match(value)
                if m is not None:
                    charset = m.group(1) or None
                    language = m.group(2)
                    value = m.group(3)
            chunks.append(unquote_to_bytes(value))
        else:
            chunks.append(value.encode("utf-8"))
    data = b"".join(chunks)
    if charset is None:
        if data.isascii():
            return data.decode("ascii"), language
        try:
            return data.decode("utf-8"), language
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace"), language
    return charsets.decode(data, charset)[0], language
