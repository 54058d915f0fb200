"""The mboxrd codec (hato.ops.mbox), without a store."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mbox_corpus import Sample, render_mboxrd

from hato.core.errors import UsageError
from hato.ops import mbox


def read_all(data: bytes) -> list[tuple[mbox.Entry, bytes]]:
    reader = mbox.Reader(io.BytesIO(data), name="test.mbox")
    out = []
    while True:
        buf = io.BytesIO()
        entry = reader.next_message(buf.write)
        if entry is None:
            return out
        out.append((entry, buf.getvalue()))


def write_all(messages: list[tuple[bytes, str, float]]) -> bytes:
    out = io.BytesIO()
    for stored, sender, date in messages:
        mbox.write_message(io.BytesIO(stored), out, sender=sender, internal_date=date)
    return out.getvalue()


def test_corpus_reads_back_and_rewrites_byte_exact(corpus: list[Sample]) -> None:
    data = render_mboxrd(corpus)
    messages = read_all(data)
    assert len(messages) == len(corpus) == mbox.count_messages(io.BytesIO(data))
    for (entry, stored), sample in zip(messages, corpus, strict=True):
        assert stored == sample.stored
        assert entry.date == sample.date
        assert entry.sender == sample.sender
        assert entry.flags == sample.flags
        assert mbox.envelope_sender(stored) == sample.sender
    rewritten = write_all([(stored, e.sender, e.date) for e, stored in messages])
    assert rewritten == data


def test_separator_format_matches_asctime() -> None:
    assert mbox.format_separator("a@b", 1_700_000_000) == b"From a@b Tue Nov 14 22:13:20 2023\n"
    assert mbox.format_separator("x", 0) == b"From x Thu Jan  1 00:00:00 1970\n"


@pytest.mark.parametrize(
    ("line", "sender", "date"),
    [
        (b"From a@b Tue Nov 14 22:13:20 2023\n", "a@b", 1_700_000_000),
        (b"From a@b Tue Nov 14 22:13:20 2023\r\n", "a@b", 1_700_000_000),
        (b"From a@b  Tue Nov 14 22:13:20 2023 +0100\n", "a@b", 1_700_000_000 - 3600),
        (b"From a@b Tue Nov 14 22:13:20 MET 2023\n", "a@b", 1_700_000_000),
        (b"From a@b Tue Nov 14 22:13 2023\n", "a@b", 1_700_000_000 - 20),
        (b"From  Tue Nov 14 22:13:20 2023\n", "MAILER-DAEMON", 1_700_000_000),
    ],
)
def test_separator_variants(line: bytes, sender: str, date: int) -> None:
    assert mbox.parse_separator(line) == mbox.Separator(sender, float(date))


@pytest.mark.parametrize(
    "line",
    [
        b"From the desk of the editor\n",
        b"From a@b Tue Feb 30 22:13:20 2023\n",  # no such day
        b"From a@b Tue Nov 14 25:13:20 2023\n",
        b">From a@b Tue Nov 14 22:13:20 2023\n",
    ],
)
def test_not_separators(line: bytes) -> None:
    assert mbox.parse_separator(line) is None


def test_crlf_file_reads_like_lf_file(corpus: list[Sample]) -> None:
    sample = corpus[:40]
    lf = render_mboxrd(sample)
    crlf = lf.replace(b"\n", b"\r\n")
    assert [m for _, m in read_all(crlf)] == [m for _, m in read_all(lf)]


def test_missing_trailing_newline() -> None:
    data = b"From a@b Tue Nov 14 22:13:20 2023\nSubject: x\n\nlast line without LF"
    [(entry, stored)] = read_all(data)
    assert stored == b"Subject: x\r\n\r\nlast line without LF\r\n"
    assert entry.line == 1


def test_missing_final_empty_line_and_message_lines_numbered() -> None:
    data = b"From a Tue Nov 14 22:13:20 2023\nA: 1\n\nx\nFrom b Tue Nov 14 22:13:21 2023\nB: 2\n"
    messages = read_all(data)
    assert [m for _, m in messages] == [b"A: 1\r\n\r\nx\r\n", b"B: 2\r\n"]
    assert [e.line for e, _ in messages] == [1, 5]


def test_unquoted_from_line_is_kept_as_text() -> None:
    # mboxo writers leave "From " body lines unquoted; what is not a separator stays text.
    data = b"From a Tue Nov 14 22:13:20 2023\nS: 1\n\nFrom me to you\n\n"
    [(_, stored)] = read_all(data)
    assert stored == b"S: 1\r\n\r\nFrom me to you\r\n"


def test_not_an_mbox_names_the_line() -> None:
    with pytest.raises(UsageError, match=r"test\.mbox: line 1 .*'Subject: hi'"):
        read_all(b"Subject: hi\n\nbody\n")


def test_empty_file_is_an_empty_mbox() -> None:
    assert read_all(b"") == []


def test_envelope_sender_only_from_the_header() -> None:
    assert mbox.envelope_sender(b"Return-Path: <a@b>\r\nX: y\r\n\r\n") == "a@b"
    assert mbox.envelope_sender(b"return-path:<>\r\n\r\n") == "MAILER-DAEMON"
    assert mbox.envelope_sender(b"X: y\r\n\r\nReturn-Path: <a@b>\r\n") == "MAILER-DAEMON"


_line = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))


@given(st.lists(_line, max_size=12), st.integers(min_value=0, max_value=4_000_000_000))
def test_any_crlf_message_round_trips(lines: list[bytes], date: int) -> None:
    stored = b"".join(line + b"\r\n" for line in lines)
    data = write_all([(stored, "s@x", date), (stored, "MAILER-DAEMON", date)])
    messages = read_all(data)
    assert [m for _, m in messages] == [stored, stored]
    assert [e.date for e, _ in messages] == [date, date]
    assert write_all([(m, e.sender, e.date) for e, m in messages]) == data
