"""Sieve "body" (RFC 5173): matching the message body, raw, by content type, or as text.

Implements RFC 5173 §5 (the body transforms :raw, :content and :text), §5.2 (:content
searches every part, descending into multiparts and message/rfc822; "" matches every type,
"type" matches all subtypes, "type/subtype" exactly; text parts are transfer-decoded and
converted to UTF-8; a matching multipart contributes its prologue and epilogue as two
strings without the delimiter lines; a message/rfc822 part its nested header) and §5.3
(:text: the text parts, HTML reduced to its text). Leaves out: nothing.
"""

from __future__ import annotations

from hato.codec.mime import Part, decode_body, html_to_text, text_content
from hato.codec.mime.content import decode_encapsulated
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn

_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})


def _type_matches(part: Part, wanted: str) -> bool:
    if wanted == "":
        return True
    if "/" in wanted:
        kind, _, sub = wanted.partition("/")
        if "/" in sub:
            return False
        return part.content_type == kind.lower() and part.subtype == sub.lower()
    return part.content_type == wanted.lower()


def _walk(part: Part, data: bytes) -> list[tuple[Part, bytes]]:
    out = [(part, data)]
    for child in part.children:
        out.extend(_walk(child, data))
    if part.message is not None:
        out.extend(_walk(part.message, data))
    elif part.mime_type == "message/rfc822":
        inner = decode_encapsulated(part, data)
        if inner is not None:
            out.extend(_walk(inner[0], inner[1]))
    return out


def _prologue_epilogue(part: Part, data: bytes) -> list[str]:
    """RFC 5173 §5.2: a multipart's prologue and epilogue, "as separate strings", without
    the boundary delimiter lines (RFC 2046 §5.1.1: the CRLF before a delimiter is part of
    it)."""
    boundary = part.param("boundary") or ""
    first, last = part.children[0], part.children[-1]
    head = data[part.body_start : first.header_start]
    cut = head.rfind(b"--" + boundary.encode("utf-8", "surrogateescape"))
    if cut >= 0:
        head = head[:cut]
    head = head[:-2] if head.endswith(b"\r\n") else head.removesuffix(b"\n")
    tail = data[last.body_end : part.body_end]
    nl = tail.find(b"\n", tail.find(b"--"))  # the close-delimiter line ends here
    tail = tail[nl + 1 :] if nl >= 0 and tail.lstrip(b"\r\n").startswith(b"--") else b""
    return [t.decode("utf-8", "replace") for t in (head, tail)]


def _part_text(part: Part, data: bytes) -> list[str]:
    if part.children:
        return _prologue_epilogue(part, data)  # RFC 5173 §5.2
    if part.message is not None:
        # RFC 5173 §5.2: for message/rfc822 "only the header of the nested message ... as
        # a single string" (the blank line that ends it is not part of it)
        inner = part.message
        header = data[inner.header_start : inner.header_end]
        header = header[:-2] if header.endswith(b"\r\n\r\n") else header
        header = header[:-1] if header.endswith(b"\n\n") else header
        return [header.decode("utf-8", "replace")]
    if part.mime_type == "message/rfc822":
        return [data[part.body_start : part.body_end].decode("utf-8", "replace")]
    if part.content_type == "text":
        return [text_content(part, data)]
    return [decode_body(part, data).decode("utf-8", "replace")]


def body_texts(rt: Runtime, cmd: Cmd) -> list[str]:
    """The strings a body test matches against."""
    root = rt.part
    data = rt.message
    if "raw" in cmd.tags:
        raw = data[root.body_start : root.body_end]
        # RFC 5173 §5: a message without a body has nothing to match, not even ""
        return [raw.decode("utf-8", "surrogateescape")] if raw else []
    wanted = rt.expand_all(cmd.tag_strings("content") or ()) if "content" in cmd.tags else None
    out: list[str] = []
    for part, source in _walk(root, data):
        if wanted is None:  # :text (the default)
            html = part.subtype in ("html", "xhtml+xml")
            if part.children or not (part.content_type == "text" or html):
                continue
            if part.transfer_encoding not in _ENCODINGS:
                continue  # a body we cannot decode is not text
            text = (
                text_content(part, source)
                if part.content_type == "text"
                else (decode_body(part, source).decode("utf-8", "replace"))
            )
            text = html_to_text(text) if html else text
            if text:
                out.append(text)
            continue
        if not any(_type_matches(part, w) for w in wanted):
            continue
        out.extend(_part_text(part, source))
    return out


def _body(rt: Runtime, cmd: Cmd) -> bool:
    # Pigeonhole leaves match variables alone after body (bodies are too large to capture)
    return rt.matches(cmd, body_texts(rt, cmd), keys=rt.expand_all(cmd.strings(0)), capture=False)


COMMANDS: dict[str, CommandFn] = {}
TESTS: dict[str, TestFn] = {"body": _body}
