"""Part contents: transfer decoding, charset conversion to text, and text for search/indexing.

Implements RFC 2045 §6 (Content-Transfer-Encoding: 7bit/8bit/binary identity, §6.7
quoted-printable decoding incl. soft line breaks and trailing-whitespace removal, §6.8 base64
ignoring characters outside the alphabet), the ``x-uuencode`` encoding old mailers use,
RFC 2046 §4.1.2 (charset parameter, US-ASCII default) and RFC 6657 §3 (text/* charset rules).
HTML is reduced to its text (tags, scripts, styles and comments dropped, entities decoded).

Leaves out: RFC 3676 format=flowed reflowing (text is returned as sent) and RFC 1741
BinHex; encrypted or signed content is returned as it is.
Security: bodies come from untrusted mail; decoding is linear-time regex/bytes work with no
recursion beyond the part tree, and HTML is never rendered, only stripped.
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Iterator

from hato.codec.mime import charsets
from hato.codec.mime.headers import decode_base64, decode_unstructured
from hato.codec.mime.structure import Part, parse_message

_QP_TRAILING = re.compile(rb"[ \t]+(?=\r?\n|$)")
_QP_SOFT = re.compile(rb"=[ \t]*\r?\n")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_body(part: Part, data: bytes) -> bytes:
    """The part's body with its Content-Transfer-Encoding undone (IMAP BINARY[section])."""
    body = data[part.body_start : part.body_end]
    cte = part.transfer_encoding
    if cte == "base64":
        return decode_base64(body)
    if cte == "quoted-printable":
        return decode_quoted_printable(body)
    if cte in ("x-uuencode", "x-uue", "uuencode", "x-uuencoded"):
        return _decode_uuencode(body)
    return body  # 7bit, 8bit, binary and unknown encodings (RFC 2045 §6.4: treat as such)


def decode_quoted_printable(body: bytes) -> bytes:
    """RFC 2045 §6.7: trailing whitespace on a line is removed (rule 3), "=" at a line end is a
    soft line break (rule 5), "=XX" is an octet (rule 1); a malformed "=" is kept as it is."""
    body = _QP_TRAILING.sub(b"", body)
    body = _QP_SOFT.sub(b"", body)
    if body.endswith(b"="):
        body = body[:-1]  # soft break at the very end of the part
    return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), body)


def _decode_uuencode(body: bytes) -> bytes:
    out: list[bytes] = []
    started = False
    for line in body.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            if line.strip() == b"end":
                break
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            continue
    return b"".join(out)


def decode_encapsulated(part: Part, data: bytes) -> tuple[Part, bytes] | None:
    """The encapsulated message of a message/rfc822 or message/global part whose body is
    transfer-encoded (so :attr:`Part.message` is None): (its part tree, the decoded bytes the
    tree's offsets refer to). None for other parts. RFC 6532 §3.5 allows message/global to
    be encoded; RFC 2046 §5.2.1 forbids it for message/rfc822, but it is met in practice."""
    if part.content_type != "message" or part.subtype not in ("rfc822", "global"):
        return None
    if part.message is not None or part.transfer_encoding in ("7bit", "8bit", "binary"):
        return None
    decoded = decode_body(part, data)
    return parse_message(decoded), decoded


def text_and_problems(part: Part, data: bytes) -> tuple[str, tuple[str, ...]]:
    """The decoded text of a text/* part and the decoding problems met (unknown charset,
    bytes invalid in the charset, transfer-encoding damage)."""
    raw = decode_body(part, data)
    label = part.param("charset")
    text, ok = charsets.decode(raw, label)
    problems: list[str] = []
    if not ok:
        known = charsets.canonical_charset(label) is not None
        problems.append(f"text invalid in charset {label}" if known else f"unknown charset {label}")
    if part.transfer_encoding == "base64":
        content = re.sub(rb"[\s]", b"", data[part.body_start : part.body_end])
        if re.search(rb"[^A-Za-z0-9+/=]", content) or len(content.rstrip(b"=")) % 4 == 1:
            problems.append("invalid base64")
    return text, tuple(problems)


def text_content(part: Part, data: bytes) -> str:
    """The decoded text of a text/* part, converted from its charset to ``str``."""
    return text_and_problems(part, data)[0]


_HTML_DROP = re.compile(
    r"<(script|style|head|title)\b[^>]*>.*?</\1\s*>|<!--.*?-->|<!\[CDATA\[.*?\]\]>",
    re.IGNORECASE | re.DOTALL,
)
_HTML_BLOCK = re.compile(
    r"</?(?:br|p|div|li|ul|ol|tr|table|h[1-6]|hr|blockquote|pre|section|article|header|"
    r"footer|dd|dt|dl)\b[^>]*>",
    re.IGNORECASE,
)
_HTML_CELL = re.compile(r"</?t[dh]\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]*>")
_BLANKS = re.compile(r"[ \t\r\f\v]+")
_LINES = re.compile(r" *\n[\s]*")


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document: a tag stripper for search, not a renderer. Block
    elements become line breaks, table cells spaces, other tags nothing."""
    text = _HTML_DROP.sub(" ", markup)
    text = _HTML_BLOCK.sub("\n", text)
    text = _HTML_CELL.sub(" ", text)
    text = _HTML_TAG.sub("", text)
    text = html.unescape(text)
    text = _BLANKS.sub(" ", text)
    return _LINES.sub("\n", text).strip()


def iter_text(root: Part, data: bytes) -> Iterator[str]:
    """All searchable text of a message: every header field value decoded (of the message
    and of encapsulated messages), then the text of each text/* part (HTML stripped of tags)
    and the file names of attachments. Non-text bodies are skipped."""
    messages = {id(root)} | {id(p.message) for p in root.walk() if p.message is not None}
    for part in root.walk():
        if id(part) in messages:
            fallback = part.param("charset")
            for field in part.headers:
                value = decode_unstructured(field.raw, fallback_charset=fallback)
                if value:
                    yield value
        if part.children or part.message is not None:
            continue
        inner = decode_encapsulated(part, data)
        if inner is not None:
            yield from iter_text(inner[0], inner[1])
            continue
        filename = _filename(part)
        if filename:
            yield filename
        if part.content_type != "text":
            continue
        text = text_content(part, data)
        if part.subtype == "html":
            text = html_to_text(text)
        if text:
            yield text


def _filename(part: Part) -> str | None:
    for key, value in part.disposition_params:
        if key == "filename":
            return value
    return part.param("name")
