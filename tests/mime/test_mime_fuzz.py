"""Hypothesis fuzzing: no input makes the codec raise, and offsets always stay consistent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hato.codec.mime import (
    Part,
    decode_body,
    decode_words,
    envelope,
    find_section,
    iter_text,
    parse_address_list,
    parse_date,
    parse_message,
    parse_mime_value,
    text_and_problems,
)

# Lines that make parsers work: MIME headers, delimiters of a few boundaries, folds, junk.
_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a",
        b"Content-Type: multipart/alternative; boundary=ab",
        b'Content-Type: multipart/digest; boundary="a b"',
        b"Content-Type: message/rfc822",
        b"Content-Type: message/global",
        b"Content-Type: text/plain; charset=iso-2022-jp",
        b"Content-Type: text/html; charset*0*=utf-8''%E2; charset*1=x",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename==?utf-8?q?=E2=82?=",
        b'From: "a" <b@c>, grp: d@e;',
        b"Subject: =?utf-8?b?5pel?= =?iso-2022-jp?q?=1B$B?=",
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000",
        b" folded continuation",
        b"\t",
        b"--a",
        b"--a--",
        b"--ab",
        b"--ab--",
        b"--a b",
        b"--a b--",
        b"no colon here",
        b"=?utf-8?q?x?=",
        b"\x1b$B$3$s\x1b(B",
        b"\xff\xfe\x00",
        b"",
    ]
)
_EOL = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(_LINES, st.binary(max_size=12)), max_size=40))
    eol = draw(_EOL)
    data = eol.join(lines)
    if draw(st.booleans()):
        data += eol
    return data


def _check(part: Part, lo: int, hi: int, depth: int = 0) -> int:
    assert lo <= part.header_start <= part.header_end == part.body_start <= part.body_end <= hi
    assert part.lines >= 0
    if part.content_type == "multipart":
        assert part.children  # an IMAP BODYSTRUCTURE multipart needs at least one part
    count = 1
    previous_end = part.body_start
    for child in part.children:
        assert child.header_start >= previous_end  # children in order, never overlapping
        previous_end = child.body_end
        count += _check(child, part.body_start, part.body_end, depth + 1)
    if part.message is not None:
        assert part.message.header_start == part.body_start
        assert part.message.body_end == part.body_end
        count += _check(part.message, part.body_start, part.body_end, depth + 1)
    return count


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_structured_garbage_never_raises_and_offsets_nest(data: bytes) -> None:
    root = parse_message(data)
    _check(root, 0, len(data))
    envelope(root, data)
    for part in root.walk():
        decode_body(part, data)
        if part.content_type == "text":
            text_and_problems(part, data)
    list(iter_text(root, data))
    find_section(root, (1, 1, 2))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    root = parse_message(data)
    _check(root, 0, len(data))
    envelope(root, data)
    list(iter_text(root, data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_header_parsers_never_raise(text: str) -> None:
    decode_words(text)
    parse_address_list(text)
    parse_date(text)
    parse_mime_value(text)
    parse_mime_value(text, with_subtype=False)
