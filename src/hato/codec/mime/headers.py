"""Header fields of a message or MIME part: splitting, unfolding and RFC 2047 encoded words.

Implements RFC 5322 §2.2 (header fields: name ":" body; §2.2.3 unfolding), §3.2.2 / §4.2
(obsolete folding: whitespace-only continuation lines), RFC 6532 §3.2 (UTF-8 in field bodies),
RFC 2047 §2-§6 (encoded words in B and Q encodings, whitespace between adjacent encoded words
ignored, multi-byte characters split across adjacent words of one charset) and RFC 2231 §5
(``charset*language`` in encoded words). Works on bytes with ``find`` and regexes; never raises.

Leaves out: encoding (RFC 2047 generation). Lenient beyond the RFC where real mail needs it:
encoded words touching other text, inside quoted strings, or containing folding whitespace
are decoded too (RFC 2047 §5 forbids them but mailers send them).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from hato.codec.mime import charsets


@dataclass(frozen=True, slots=True)
class Header:
    """One header field as it appears: ``name`` as written, ``raw`` the field body bytes after
    the colon up to (not including) the line break that ends the field, folding kept."""

    name: str
    raw: bytes
    start: int  # offset of the field name in the message
    end: int  # offset just after the field's final line break
    key: str  # the name lower-cased, for case-insensitive lookups (RFC 5322 §1.2.2)

    def unfolded(self) -> bytes:
        """The field body with every CRLF/LF of a fold removed (RFC 5322 §2.2.3), trimmed."""
        return unfold(self.raw).strip(b" \t\r\n")

    def text(self, *, fallback_charset: str | None = None) -> str:
        """The field body as decoded unstructured text (RFC 2047 words, RFC 6532 UTF-8)."""
        return decode_unstructured(self.raw, fallback_charset=fallback_charset)


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """The result of splitting a header block: fields, where the block ends, problems seen."""

    headers: tuple[Header, ...]
    end: int  # offset after the blank line (or where the block was cut short)
    complete: bool  # a blank line ended the block
    cut: bool  # a boundary delimiter line ended the block (the entity has no body)
    problems: tuple[str, ...]


_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §2.2: printable ASCII, not ":"


def split_headers(
    data: bytes, start: int, *, end: int | None = None, stop: tuple[bytes, ...] = ()
) -> HeaderBlock:
    """Split the header block that begins at ``start`` (bounded by ``end``).

    The block ends after the first empty line (RFC 5322 §2.1), at ``end``, or at a line that
    is a delimiter of one of the enclosing multipart boundaries ``stop``. Lines without a colon
    are skipped with a problem noted; when no line at all is a header field and no blank line
    follows, there is no header block: the body starts at ``start`` (a part whose blank line
    is missing). An mbox ``From `` first line is skipped.
    """
    if end is None:
        end = len(data)
    headers: list[Header] = []
    problems: list[str] = []
    pos = start
    cur_name: str | None = None
    cur_start = cur_value = 0

    def close(line_end: int, value_end: int) -> None:
        if cur_name is not None:
            headers.append(
                Header(cur_name, data[cur_value:value_end], cur_start, line_end, cur_name.lower())
            )

    def unended(block_end: int, *, cut: bool) -> HeaderBlock:
        if not headers and block_end > start:
            problems.append("no header fields and no blank line: all of it is body")
            return HeaderBlock((), start, False, False, tuple(problems))
        if not cut and headers:
            problems.append("header block not ended by a blank line")
        return HeaderBlock(tuple(headers), block_end, False, cut, tuple(problems))

    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        content_end = line_end
        if data[content_end - 1 : content_end] == b"\n":
            content_end -= 1
            if content_end > pos and data[content_end - 1 : content_end] == b"\r":
                content_end -= 1
        if content_end == pos:  # RFC 5322 §2.1: an empty line ends the header block
            close(pos, pos)
            return HeaderBlock(tuple(headers), line_end, True, False, tuple(problems))
        if stop and is_delimiter(data, pos, boundaries=stop):
            cut = _before_break(data, pos, floor=start)
            close(pos, cut)
            return unended(cut, cut=True)
        if data[pos] in (0x20, 0x09) and cur_name is not None:
            pos = line_end  # RFC 5322 §2.2.3: a line starting with WSP continues the field
            continue
        close(pos, _before_break(data, pos, floor=cur_value))
        cur_name = None
        colon = data.find(b":", pos, content_end)
        name_end = colon
        while name_end > pos and data[name_end - 1] in (0x20, 0x09):
            name_end -= 1  # RFC 5322 §4.5: obsolete WSP between field name and colon
        if colon < 0 or name_end == pos or not _FIELD_NAME.fullmatch(data, pos, name_end):
            if pos == start and data.startswith(b"From ", pos):
                problems.append("mbox From_ line skipped")
            else:
                problems.append("header line without a colon ignored")
            pos = line_end
            continue
        cur_name = data[pos:name_end].decode("ascii")
        cur_start = pos
        cur_value = colon + 1
        pos = line_end
    close(end, _before_break(data, end, floor=cur_value))
    return unended(end, cut=False)


def is_delimiter(data: bytes, pos: int, *, boundaries: tuple[bytes, ...]) -> bool:
    """True when the line at ``pos`` is ``--`` followed by one of ``boundaries``: RFC 2046
    §5.1.1 "an exact match of the entire candidate line is not required" (prefix match)."""
    return data.startswith(b"--", pos) and any(data.startswith(b, pos + 2) for b in boundaries)


def _before_break(data: bytes, pos: int, *, floor: int) -> int:
    """``pos`` moved back over the line break that precedes it (never below ``floor``)."""
    if pos > floor and data[pos - 1] == 0x0A:
        pos -= 1
        if pos > floor and data[pos - 1] == 0x0D:
            pos -= 1
    return pos


_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_FOLD_RUN = re.compile(rb"[ \t]*\r?\n[ \t]+")
_LINE_BREAKS = re.compile(rb"\r?\n")


def unfold(raw: bytes) -> bytes:
    """RFC 5322 §2.2.3: unfolding is removing every CRLF immediately followed by WSP."""
    return _FOLD.sub(b"", raw)


def field_body(text: bytes) -> bytes:
    """The field body at the start of ``text``: cut at the first line break not followed by WSP
    (the end of the field, RFC 5322 §2.2) - for callers holding a field plus what follows."""
    pos = 0
    while True:
        m = _LINE_BREAKS.search(text, pos)
        if m is None:
            return text
        if m.end() >= len(text) or text[m.end()] not in (0x20, 0x09):
            return text[: m.start()]
        pos = m.end()


def header_bytes_to_str(raw: bytes, *, fallback_charset: str | None = None) -> str:
    """Field body bytes as ``str``: ASCII, RFC 6532 UTF-8, or (8-bit legacy mail) the given
    fallback charset (the part's charset), else Windows-1252 - never raises."""
    if raw.isascii():
        if b"\x1b" in raw:  # raw ISO-2022-JP in a header (old Japanese mailers)
            return charsets.decode_iso2022jp(raw)[0]
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if fallback_charset is not None:
        text, ok = charsets.decode(raw, fallback_charset)
        if ok:
            return text
    return raw.decode("cp1252", "replace")


def decode_unstructured(raw: bytes, *, fallback_charset: str | None = None) -> str:
    """An unstructured field body (RFC 5322 §3.2.5) as display text: unfolded with each fold
    shown as one space, RFC 2047 encoded words decoded, surrounding whitespace trimmed."""
    if b"\n" in raw:
        raw = field_body(raw)
        # a fold inside an encoded word (broken mailers) is removed, elsewhere it is one space
        raw = _WORD_BYTES.sub(lambda m: _FOLD_RUN.sub(b"", m.group(0)), raw)
        raw = _FOLD_RUN.sub(b" ", raw)
    text = header_bytes_to_str(raw, fallback_charset=fallback_charset)
    return decode_words(text).strip(" \t\r\n")


# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="; the text may not
# hold "?". Spaces inside are tolerated (broken mailers): dropped in B, kept as spaces in Q.
_WORD = re.compile(r"=\?([^?\s\"()<>,;:]+)\?([bBqQ])\?([^?]*)\?=")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_WSP = re.compile(r"[ \t\r\n]+")
_WORD_BYTES = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?]*\?=")


def decode_words(text: str) -> str:
    """Decode every RFC 2047 encoded word in ``text``; other text is kept as it is.

    Whitespace between two adjacent encoded words is dropped (RFC 2047 §6.2); adjacent words in
    the same charset are decoded together so a character split between them survives.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pos = 0
    pending_charset: str | None = None
    pending: list[bytes] = []

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(charsets.decode(b"".join(pending), pending_charset)[0])
            pending.clear()
            pending_charset = None

    for m in _WORD.finditer(text):
        between = text[pos : m.start()]
        decoded = _decode_word(m.group(2), m.group(3))
        if between and (pending_charset is None or between.strip(" \t\r\n")):
            flush()
            out.append(between)
        charset = m.group(1).lower()
        star = charset.find("*")
        if star >= 0:
            charset = charset[:star]  # RFC 2231 §5: language suffix
        if pending_charset is not None and charset != pending_charset:
            flush()
        pending_charset = charset
        pending.append(decoded)
        pos = m.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _decode_word(encoding: str, encoded: str) -> bytes:
    if encoding in "bB":
        return decode_base64(_WSP.sub("", encoded).encode("ascii", "replace"))
    payload = encoded.replace("\r", "").replace("\n", "").encode("utf-8", "replace")
    # RFC 2047 §4.2: "_" is SPACE (0x20); "=" XX is an octet
    return _Q_HEX.sub(lambda h: bytes((int(h.group(1), 16),)), payload.replace(b"_", b" "))


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")


def decode_base64(data: bytes) -> bytes:
    """Forgiving base64 (RFC 2045 §6.8, RFC 4648 §4): characters outside the alphabet are
    ignored, missing padding is supplied, data after the padding is ignored."""
    data = _B64_JUNK.sub(b"", data)
    pad = data.find(b"=")
    if pad >= 0:
        data = data[:pad]  # RFC 2045 §6.8: "=" may be taken as the end of the data
    if len(data) % 4 == 1:
        data = data[:-1]  # a lone 6-bit group cannot carry a byte
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""
