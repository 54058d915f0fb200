"""The part tree: offsets (CRLF and bare LF), IMAP section numbers, broken and hostile input."""

from __future__ import annotations

import pytest

from hato.codec.mime import (
    MAX_DEPTH,
    MAX_PARTS,
    Part,
    find_section,
    header_value,
    parse_message,
)

NESTED = (
    "From: a@example.com\n"
    "Subject: nested\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "preamble text\n"
    "--outer\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "part one\n"
    "--outer\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAEC\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: b@example.com\n"
    "Subject: inner\n"
    "Content-Type: multipart/alternative; boundary=alt\n"
    "\n"
    "--alt\n"
    "Content-Type: text/plain\n"
    "\n"
    "inner plain\n"
    "--alt\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>inner html</p>\n"
    "--alt--\n"
    "--outer\n"
    "Content-Type: multipart/mixed; boundary=deep\n"
    "\n"
    "--deep\n"
    "Content-Type: image/gif\n"
    "Content-ID: <gif@x>\n"
    "\n"
    "GIF89a\n"
    "--deep\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: deepest\n"
    "\n"
    "deepest body\n"
    "--deep--\n"
    "--outer--\n"
    "epilogue text\n"
)


@pytest.fixture(params=["\n", "\r\n"], ids=["lf", "crlf"])
def nested(request: pytest.FixtureRequest) -> bytes:
    eol: str = request.param
    return NESTED.replace("\n", eol).encode("ascii")


def _body(part: Part, data: bytes) -> bytes:
    return data[part.body_start : part.body_end]


def test_offsets_in_lf_and_crlf(nested: bytes) -> None:
    eol = b"\r\n" if b"\r\n" in nested else b"\n"
    root = parse_message(nested)
    assert root.mime_type == "multipart/mixed"
    assert root.header_start == 0
    assert nested[: root.header_end].endswith(b"boundary=outer" + eol + eol)
    assert root.body_end == len(nested)
    assert [c.mime_type for c in root.children] == [
        "text/plain",
        "application/octet-stream",
        "message/rfc822",
        "multipart/mixed",
    ]
    one, two, three, four = root.children
    # RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter
    assert _body(one, nested) == b"part one"
    assert one.lines == 0
    assert nested[one.header_start : one.header_end] == (
        b"Content-Type: text/plain; charset=us-ascii" + eol + eol
    )
    assert _body(two, nested) == b"AAEC"
    inner = three.message
    assert inner is not None
    assert inner.header_start == three.body_start
    assert header_value(inner, "subject") == "inner"
    assert [c.mime_type for c in inner.children] == ["text/plain", "text/html"]
    assert _body(inner.children[1], nested) == b"<p>inner html</p>"
    # the encapsulated message ends after its close delimiter (the CRLF is the outer's)
    assert nested[three.body_start : three.body_end].endswith(b"--alt--")
    assert three.lines == nested[three.body_start : three.body_end].count(b"\n")
    gif, deepest = four.children
    assert gif.content_id == "<gif@x>"
    assert deepest.message is not None
    assert _body(deepest.message, nested) == b"deepest body"


def test_find_section_imap_numbering(nested: bytes) -> None:
    root = parse_message(nested)
    assert find_section(root, ()) is root
    assert find_section(root, (1,)) is root.children[0]
    three = root.children[2]
    assert find_section(root, (3,)) is three
    assert three.message is not None
    # RFC 9051 §6.4.5.1: 3.1 is the first part of the encapsulated multipart
    assert find_section(root, (3, 1)) is three.message.children[0]
    assert find_section(root, (3, 2)) is three.message.children[1]
    assert find_section(root, (4, 2)) is root.children[3].children[1]
    deepest = root.children[3].children[1].message
    assert deepest is not None
    # a non-multipart encapsulated message has a part 1: its own body
    assert find_section(root, (4, 2, 1)) is deepest
    assert find_section(root, (4, 2, 2)) is None
    assert find_section(root, (5,)) is None
    assert find_section(root, (0,)) is None
    assert find_section(root, (1, 1)) is None  # a text leaf has no subparts


def test_single_part_message_has_part_one() -> None:
    data = b"Subject: x\r\n\r\nhello\r\n"
    root = parse_message(data)
    assert find_section(root, (1,)) is root
    assert find_section(root, (2,)) is None
    assert root.mime_type == "text/plain"  # RFC 2045 §5.2 default
    assert root.lines == 1
    assert root.transfer_encoding == "7bit"


def test_multipart_inside_message_inside_multipart_reverse_order() -> None:
    data = (
        b"Content-Type: message/rfc822\r\n\r\n"
        b"Subject: wrapped\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: innermost\r\n\r\nhi\r\n--b--\r\n"
    )
    root = parse_message(data)
    assert root.message is not None
    assert root.message.children[0].message is not None
    innermost = find_section(root, (1, 1, 1))
    assert innermost is not None
    assert header_value(innermost, "Subject") == "innermost"
    assert data[innermost.body_start : innermost.body_end] == b"hi"


def test_missing_close_delimiter_ends_at_end_of_data() -> None:
    data = b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\nfirst\n--x\n\nsecond\n"
    root = parse_message(data)
    assert [data[c.body_start : c.body_end] for c in root.children] == [b"first", b"second\n"]
    assert "missing closing boundary" in root.problems


def test_no_delimiter_at_all_is_text() -> None:
    data = b"Content-Type: multipart/mixed; boundary=zz\n\nno parts here\n"
    root = parse_message(data)
    assert root.mime_type == "text/plain"
    assert root.children == ()
    assert data[root.body_start : root.body_end] == b"no parts here\n"
    assert root.problems


def test_multipart_without_boundary_parameter_is_text() -> None:
    root = parse_message(b"Content-Type: multipart/mixed\n\nbody\n")
    assert root.mime_type == "text/plain"
    assert "multipart without boundary parameter" in root.problems


def test_outer_delimiter_ends_an_unclosed_inner_multipart() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=1\n\n--1\n"
        b"Content-Type: multipart/mixed; boundary=2\n\n--2\n\ninner\n"
        b"--1\n\nouter second\n--1--\n"
    )
    root = parse_message(data)
    assert len(root.children) == 2
    assert data[root.children[1].body_start : root.children[1].body_end] == b"outer second"
    assert "missing closing boundary" in root.children[0].problems


def test_boundary_extending_an_outer_one_is_matched_innermost_longest() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=a\n\n--a\n"
        b"Content-Type: multipart/alternative; boundary=ab\n\n--ab\n\nx\n--ab--\n--a--\n"
    )
    root = parse_message(data)
    assert root.children[0].mime_type == "multipart/alternative"
    assert len(root.children[0].children) == 1


def test_preamble_and_epilogue_are_no_parts() -> None:
    data = b"Content-Type: multipart/mixed; boundary=q\n\npre\n--q\n\nbody\n--q--\npost\n"
    root = parse_message(data)
    assert len(root.children) == 1
    assert root.body_end == len(data)  # the epilogue is part of the multipart body


def test_digest_default_is_message_rfc822() -> None:
    data = b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nx\n--d--\n"
    child = parse_message(data).children[0]
    assert child.mime_type == "message/rfc822"  # RFC 2046 §5.1.5
    assert child.message is not None
    assert header_value(child.message, "subject") == "one"


def test_header_line_without_colon_and_part_without_header() -> None:
    data = b"Subject: s\nthis line has no colon\nX-A: b\n\nbody\n"
    root = parse_message(data)
    assert [h.name for h in root.headers] == ["Subject", "X-A"]
    assert "header line without a colon ignored" in root.problems
    data = b"Content-Type: multipart/mixed; boundary=m\n\n--m\njust text\n--m--\n"
    child = parse_message(data).children[0]
    assert child.headers == ()
    assert data[child.body_start : child.body_end] == b"just text"


def test_utf8_header_rfc6532() -> None:
    data = "Subject: 日本語の件名\r\nFrom: 山田 <yamada@例え.jp>\r\n\r\n本文\r\n".encode()
    root = parse_message(data)
    assert header_value(root, "subject") == "日本語の件名"


def test_deep_nesting_stops_at_the_limit_without_recursion_error() -> None:
    depth = 1000
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    data = head + b"Content-Type: text/plain\n\nleaf\n"
    root = parse_message(data)
    level = 0
    part = root
    while part.children:
        part = part.children[0]
        level += 1
    assert level == MAX_DEPTH
    assert part.mime_type == "text/plain"
    assert any("nesting deeper" in p for p in part.problems)
    messages = b"Content-Type: message/rfc822\n\n" * depth + b"Subject: end\n\nx\n"
    part = parse_message(messages)
    level = 0
    while part.message is not None:
        part = part.message
        level += 1
    assert level == MAX_DEPTH


def test_huge_header_block() -> None:
    fields = b"".join(b"X-Field-%d: value %d\r\n" % (i, i) for i in range(20000))
    folded = b"X-Long: " + b"\r\n x" * 20000 + b"\r\n"
    data = fields + folded + b"Subject: last\r\n\r\nbody"
    root = parse_message(data)
    assert len(root.headers) == 20002
    assert header_value(root, "subject") == "last"
    assert data[root.body_start :] == b"body"
    assert root.headers[-2].unfolded() == (b" x" * 20000).strip()  # RFC 5322 §2.2.3


def test_mime_fields() -> None:
    data = (
        b'Content-Type: text/plain; charset="utf-8"; format=flowed\r\n'
        b"Content-Transfer-Encoding: Quoted-Printable\r\n"
        b"Content-Disposition: attachment;\r\n filename*=utf-8''na%C3%AFve.txt\r\n"
        b"Content-Language: en, (comment) ja\r\n"
        b"Content-Location: http://example.com/\r\n a.txt\r\n"
        b"Content-ID: <id@x>\r\n"
        b"Content-Description: =?utf-8?q?d=C3=A9scription?=\r\n"
        b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
        b"\r\nbody"
    )
    root = parse_message(data)
    assert root.params == (("charset", "utf-8"), ("format", "flowed"))
    assert root.param("CHARSET") == "utf-8"
    assert root.transfer_encoding == "quoted-printable"
    assert root.disposition == "attachment"
    assert root.disposition_params == (("filename", "naïve.txt"),)
    assert root.disposition_raw_params == (("filename*", "utf-8''na%C3%AFve.txt"),)
    assert root.language == ("en", "ja")
    assert root.location == "http://example.com/a.txt"  # RFC 2557 §4.4.2
    assert root.content_id == "<id@x>"
    assert root.description == "=?utf-8?q?d=C3=A9scription?="  # raw, as IMAP sends it
    assert header_value(root, "content-description") == "déscription"
    assert root.md5 == "Q2hlY2sgSW50ZWdyaXR5IQ=="


def test_invalid_content_type_defaults_to_text_plain() -> None:
    root = parse_message(b"Content-Type: /html\n\n<b>x</b>")
    assert root.mime_type == "text/plain"  # RFC 2045 §5.2
    assert root.problems
    root = parse_message(b"Content-Type: text\n\nx")
    assert root.mime_type == "text/plain"


def test_empty_input_and_headers_only() -> None:
    root = parse_message(b"")
    assert (root.header_start, root.header_end, root.body_end) == (0, 0, 0)
    data = b"Subject: only headers\r\n"
    root = parse_message(data)
    assert header_value(root, "Subject") == "only headers"
    assert root.body_start == root.body_end == len(data)


def test_part_count_limit() -> None:
    data = b"Content-Type: multipart/mixed; boundary=q\n\n" + b"--q\n\nx\n" * (MAX_PARTS + 50)
    root = parse_message(data)
    assert len(root.children) == MAX_PARTS - 1  # the root counts as one part
    assert any("parts: the rest is not split" in p for p in root.problems)
    assert root.body_end == len(data)
