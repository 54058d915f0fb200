"""The 107 Stalwart messages (README §7) with their expected part trees, LF and CRLF, plus a
differential check against the BODYSTRUCTURE Dovecot computes for the same messages.

Compared with Stalwart: part count and order, content types, parameters, the decoded text of
text parts and the decoded bytes of binary parts (offsets and Stalwart-specific header value
shapes are not compared, as README §7 advises). Compared with Dovecot (its answers recorded
in ``dovecot_bodystructure.json``): the type, size and line count of every part.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hato.codec.mime import (
    Part,
    decode_body,
    decode_encapsulated,
    parse_message,
    text_and_problems,
)

VECTORS = Path(__file__).parents[2] / ".." / "shared" / "vectors" / "mime"
EML = VECTORS / "stalwart-mail-parser" / "resources" / "eml"
ALL_EML = sorted(EML.glob("*/*.eml")) + sorted((VECTORS / "mox").glob("*.eml"))


def _lf(path: Path) -> bytes:
    return path.read_bytes().replace(b"\r\n", b"\n")


def _crlf(path: Path) -> bytes:
    return _lf(path).replace(b"\n", b"\r\n")


def _preorder(part: Part) -> list[Part]:
    out = [part]
    for child in part.children:
        out.extend(_preorder(child))
    return out


def _compare(doc: dict[str, Any], root: Part, data: bytes, where: str) -> list[str]:
    """Differences between Stalwart's expected document and Hato's tree."""
    expected_parts = doc["parts"]
    order: list[int] = []

    def walk(i: int) -> None:
        order.append(i)
        body = expected_parts[i]["body"]
        if isinstance(body, dict) and "Multipart" in body:
            for j in body["Multipart"]:
                walk(j)

    walk(0)
    mine = _preorder(root)
    if len(order) != len(mine):
        return [f"{where}: {len(order)} parts expected, {len(mine)} found"]
    diffs: list[str] = []
    for k, (i, part) in enumerate(zip(order, mine, strict=True)):
        exp = expected_parts[i]
        body = exp["body"]
        kind = next(iter(body)) if isinstance(body, dict) else body
        at = f"{where}[{k}]"
        ctype = next(
            (
                h["value"]["ContentType"]
                for h in exp["headers"]
                if h["name"] == "content_type"
                and isinstance(h["value"], dict)
                and "ContentType" in h["value"]
            ),
            None,
        )
        # Stalwart shows an unusable type as Text but keeps the header; compare real types
        if (
            ctype is not None
            and ctype.get("c_subtype")
            and kind != "Text"
            and (ctype["c_type"], ctype["c_subtype"]) != (part.content_type, part.subtype)
        ):
            diffs.append(f"{at}: type {part.mime_type}")
        if ctype is not None and ctype.get("attributes"):
            attributes = sorted(
                (a["name"], a["value"])
                for a in ctype["attributes"]
                if not a["name"].endswith("-language")
            )
            if attributes != sorted(part.params):
                diffs.append(f"{at}: params {part.params}")
        if kind == "Multipart":
            if part.content_type != "multipart":
                diffs.append(f"{at}: {part.mime_type} is no multipart")
        elif kind == "Message":
            if part.message is not None:
                diffs += _compare(body["Message"], part.message, data, at + ".msg")
            else:
                inner = decode_encapsulated(part, data)
                if inner is None:
                    diffs.append(f"{at}: no encapsulated message")
                else:
                    diffs += _compare(body["Message"], inner[0], inner[1], at + ".msg")
        elif part.children or part.message is not None:
            diffs.append(f"{at}: {kind} expected, {part.mime_type} found")
        elif kind in ("Text", "Html"):
            if text_and_problems(part, data)[0] != body[kind]:
                diffs.append(f"{at}: text differs")
        elif bytes(body[kind]) != decode_body(part, data):
            diffs.append(f"{at}: bytes differ")
    return diffs


# Messages Hato reads differently from Stalwart, and why. Where Dovecot agrees with Hato the
# reason says so: these are Stalwart's choices, not the RFC's.
STALWART_DIFFERENCES = {
    "legacy/016.eml": "undeclared 8-bit parameter read as Windows-1252, not U+FFFD",
    "legacy/017.eml": "x-uuencode attachments are decoded",
    "legacy/026.eml": "x-uuencode decoded; undeclared 8-bit parameter read as Windows-1252",
    "legacy/048.eml": "x-uuencode attachments are decoded",
    "legacy/052.eml": "8-bit text without charset read as Windows-1252, not U+FFFD",
    "malformed/000.eml": "the four body parts between the delimiters exist (Dovecot agrees)",
    "malformed/001.eml": "the longest matching boundary wins (Dovecot agrees)",
    "malformed/007.eml": "RFC 2046 §5.1.1 prefix match: '--ab' ends the header (Dovecot agrees)",
    "malformed/009.eml": "an enclosing boundary ends an inner multipart (Dovecot agrees)",
    "malformed/011.eml": "an enclosing boundary ends an inner multipart (Dovecot agrees)",
    "malformed/012.eml": "an enclosing boundary ends an inner multipart (Dovecot agrees)",
    "malformed/013.eml": "a delimiter at the end starts an empty part (Dovecot agrees)",
    "malformed/014.eml": "a delimiter at the end starts an empty part (Dovecot agrees)",
    "malformed/020.eml": "the first of two Content-Type fields counts (Dovecot agrees)",
    "malformed/021.eml": "the first of two Content-Type fields counts (Dovecot agrees)",
    "malformed/022.eml": "message/rfc822 stays a message, headerless (Dovecot agrees)",
    "rfc/000.eml": "RFC 2045 §6.8: non-alphabet characters in base64 are ignored, not fatal",
    "thirdparty/002.eml": "RFC 2045 §6.8: base64 ends at '='; junk is ignored, not kept raw",
    "thirdparty/005.eml": "a delimiter must start a line (RFC 2046 §5.1.1); no odd-byte fixup",
    "thirdparty/015.eml": "a delimiter ends an encapsulated header block (Dovecot agrees)",
}
LF_ONLY_DIFFERENCES = {
    "legacy/049.eml": "a lone CR at the very end is kept as text",
}


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_stalwart_part_trees(crlf: bool) -> None:
    passed: dict[str, int] = {}
    different: set[str] = set()
    for path in sorted(EML.glob("*/*.eml")):
        name = f"{path.parent.name}/{path.name}"
        data = _crlf(path) if crlf else _lf(path)
        expected = json.loads(path.with_suffix(".crlf.json" if crlf else ".json").read_text())
        diffs = _compare(expected, parse_message(data), data, name)
        if diffs:
            different.add(name)
        else:
            passed[path.parent.name] = passed.get(path.parent.name, 0) + 1
    allowed = set(STALWART_DIFFERENCES) | (set() if crlf else set(LF_ONLY_DIFFERENCES))
    assert different == allowed
    if crlf:
        assert passed == {"legacy": 49, "malformed": 12, "rfc": 9, "thirdparty": 17}  # 87/107
    else:
        assert passed == {"legacy": 48, "malformed": 12, "rfc": 9, "thirdparty": 17}  # 86/107


def _shape(part: Part) -> list[Any]:
    if part.content_type == "multipart":
        return [part.mime_type, [_shape(c) for c in part.children]]
    if part.message is not None:
        return [part.mime_type, part.size, part.lines, _shape(part.message)]
    return [part.mime_type, part.size, part.lines if part.content_type == "text" else None]


# Where Hato's BODYSTRUCTURE differs from Dovecot 2.3's, and why.
DOVECOT_DIFFERENCES = {
    # Dovecot keeps a multipart without usable delimiters and invents an empty child; RFC 2045
    # §5.2 says to treat an unusable Content-Type as text/plain, so the body stays readable.
    "stalwart-mail-parser/resources/eml/malformed/001.eml",
    "stalwart-mail-parser/resources/eml/malformed/002.eml",
    "stalwart-mail-parser/resources/eml/malformed/007.eml",
    # Dovecot cannot parse "multipart/mixed\n\tboundary=..." (no ";") and reports type "/".
    "stalwart-mail-parser/resources/eml/malformed/017.eml",
    # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter, also after a
    # header block or a close delimiter that ends an encapsulated message; Dovecot counts
    # it into the message/rfc822 part (2 octets, 1 line more).
    "stalwart-mail-parser/resources/eml/malformed/022.eml",
    "stalwart-mail-parser/resources/eml/thirdparty/007.eml",
    "stalwart-mail-parser/resources/eml/thirdparty/015.eml",
    "mox/message-rfc822-multipart.eml",
    # base64-encoded message/rfc822 (forbidden by RFC 2046 §5.2.1) is a leaf for Hato (and
    # readable through decode_encapsulated); Dovecot shows an empty encapsulated message.
    "stalwart-mail-parser/resources/eml/rfc/008.eml",
}


def test_dovecot_bodystructure_shapes() -> None:
    golden = json.loads((Path(__file__).parent / "dovecot_bodystructure.json").read_text())
    shapes: dict[str, Any] = golden["shapes"]
    assert len(shapes) == len(ALL_EML) == 112
    different = set()
    for name, expected in shapes.items():
        if _shape(parse_message(_crlf(VECTORS / name))) != expected:
            different.add(name)
    assert different == DOVECOT_DIFFERENCES  # 103 of 112 identical


def _check_offsets(part: Part, lo: int, hi: int) -> None:
    assert lo <= part.header_start <= part.header_end == part.body_start <= part.body_end <= hi
    for child in part.children:
        _check_offsets(child, part.body_start, part.body_end)
    if part.message is not None:
        assert part.message.header_start == part.body_start
        assert part.message.body_end == part.body_end
        _check_offsets(part.message, part.body_start, part.body_end)


@pytest.mark.parametrize("path", ALL_EML, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_message_parses_lf_and_crlf(path: Path) -> None:
    lf, crlf = _lf(path), _crlf(path)
    tree_lf, tree_crlf = parse_message(lf), parse_message(crlf)
    _check_offsets(tree_lf, 0, len(lf))
    _check_offsets(tree_crlf, 0, len(crlf))
    # Same structure whatever the line ends; the decoded texts differ only in line ends.
    assert _shape_types(tree_lf) == _shape_types(tree_crlf)
    texts_lf = [text_and_problems(p, lf)[0] for p in tree_lf.walk() if p.content_type == "text"]
    texts_crlf = [
        text_and_problems(p, crlf)[0] for p in tree_crlf.walk() if p.content_type == "text"
    ]
    binary = any(p.transfer_encoding == "binary" for p in tree_lf.walk())
    if not binary:
        assert [t.replace("\r\n", "\n") for t in texts_crlf] == [
            t.replace("\r\n", "\n") for t in texts_lf
        ]


def _shape_types(part: Part) -> list[Any]:
    return [part.mime_type, [_shape_types(c) for c in part.children],
            _shape_types(part.message) if part.message else None]  # fmt: skip
