"""POP3 codec (hato.codec.pop3): grammar, state table, byte-stuffing, TOP, snapshot, fuzzing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.codec import pop3
from hato.codec.pop3 import Command, State
from hato.core.errors import ProtocolError

A, T = State.AUTHORIZATION, State.TRANSACTION


@pytest.mark.parametrize(
    ("line", "state", "command"),
    [
        (b"USER alice@example.org", A, Command("USER", ("alice@example.org",))),
        (b"user alice", A, Command("USER", ("alice",))),  # RFC 1939 §3: case-insensitive
        (b"PASS with two  spaces ", A, Command("PASS", ("with two  spaces ",))),
        (b"CAPA", A, Command("CAPA")),
        (b"capa", T, Command("CAPA")),
        (b"AUTH", A, Command("AUTH")),
        (b"AUTH PLAIN =", A, Command("AUTH", ("PLAIN", "="))),
        (b"STLS", A, Command("STLS")),
        (b"LIST", T, Command("LIST")),
        (b"LIST 1", T, Command("LIST", ("1",))),
        (b"TOP 1 10", T, Command("TOP", ("1", "10"))),
        (b"UIDL 2", T, Command("UIDL", ("2",))),
        (b"QUIT", A, Command("QUIT")),
        (b"QUIT", T, Command("QUIT")),
    ],
)
def test_parse_command(line: bytes, state: State, command: Command) -> None:
    assert pop3.parse_command(line, state) == command


@pytest.mark.parametrize(
    ("line", "state"),
    [
        (b"STAT", A),  # RFC 1939 §5 commands only in TRANSACTION
        (b"RETR 1", A),
        (b"USER bob", T),  # RFC 1939 §4 commands only in AUTHORIZATION
        (b"STLS", T),  # RFC 2595 §4: AUTHORIZATION only
        (b"AUTH PLAIN", T),  # RFC 5034 §4: AUTH only in AUTHORIZATION
        (b"XYZZY", A),
        (b"LISTING", T),
        (b"LI", T),
        (b"", A),
        (b"LIST 1 2", T),
        (b"LIST  1", T),  # RFC 2449 §3: single spaces
        (b"RETR", T),
        (b"TOP 1", T),
        (b"USER", A),
        (b"PASS", A),
        (b"USER \xff", A),
        (b"NOOP x", T),
    ],
)
def test_parse_command_refused(line: bytes, state: State) -> None:
    with pytest.raises(pop3.Pop3Error) as info:
        pop3.parse_command(line, state)
    assert info.value.line.startswith(b"-ERR ")


def test_line_reader_limits_and_recovery() -> None:
    reader = pop3.LineReader()
    reader.feed(b"NOOP\r\nST")
    assert reader.next_line() == b"NOOP"
    assert reader.next_line() is None
    reader.feed(b"AT\r\nLIST\n")
    assert reader.next_line() == b"STAT"
    assert reader.next_line() == b"LIST"  # a bare LF also ends a line
    # RFC 2449 §4: commands up to 255 octets including CRLF are accepted...
    reader.feed(b"X" * 253 + b"\r\n")
    assert reader.next_line() == b"X" * 253
    # ...longer ones are refused and skipped without being parsed.
    reader.feed(b"Y" * 254 + b"\r\nNOOP\r\n")
    with pytest.raises(pop3.LineTooLong):
        reader.next_line()
    assert reader.next_line() == b"NOOP"
    reader.feed(b"Z" * 1000)
    with pytest.raises(pop3.LineTooLong):
        reader.next_line()
    reader.feed(b"Z" * 1000 + b"\r\nQUIT\r\n")
    assert reader.next_line() == b"QUIT"
    reader.feed(b"leftover")
    assert reader.clear() == 8 and reader.pending == 0


def test_replies() -> None:
    assert pop3.ok("2 320") == b"+OK 2 320\r\n"
    assert pop3.ok() == b"+OK\r\n"
    assert pop3.err("no such message") == b"-ERR no such message\r\n"
    assert pop3.err("bad login", code="AUTH") == b"-ERR [AUTH] bad login\r\n"  # RFC 3206 §4
    assert len(pop3.err("x" * 1000)) == 512  # RFC 2449 §4: 512 octets with CRLF
    assert pop3.challenge(b"") == b"+ \r\n"  # RFC 5034 §4: empty challenge is "+ "
    assert pop3.challenge(b"Username:") == b"+ VXNlcm5hbWU6\r\n"
    assert pop3.multiline(pop3.ok("x"), ["a", ".b", ""]) == b"+OK x\r\na\r\n..b\r\n\r\n.\r\n"


@pytest.mark.parametrize("text", ["=AAA", "AAA=BBB", "AA A", "AAA", "A===", "é"])
def test_sasl_base64_is_strict(text: str) -> None:
    # RFC 5034 §4: reject characters outside base64 and padding not at the end.
    with pytest.raises(pop3.Pop3Error):
        pop3.parse_initial_response(text)


def test_sasl_responses() -> None:
    assert pop3.parse_initial_response("=") == b""
    assert pop3.parse_initial_response("AGEAYg==") == b"\x00a\x00b"
    assert pop3.parse_sasl_response(b"*") is None
    assert pop3.parse_sasl_response(b"") == b""


def stuff(chunks: list[bytes]) -> bytes:
    stuffer = pop3.DotStuffer()
    return b"".join(stuffer.feed(c) for c in chunks) + stuffer.finish()


def test_dot_stuffing() -> None:
    # RFC 1939 §3: lines starting with "." are byte-stuffed; ".CRLF" terminates.
    message = b".hidden\r\nline\r\n.\r\n..two\r\n"
    expected = b"..hidden\r\nline\r\n..\r\n...two\r\n.\r\n"
    assert stuff([message]) == expected
    # Chunk boundaries anywhere give the same result.
    for cut in range(len(message) + 1):
        assert stuff([message[:cut], message[cut:]]) == expected
    assert stuff([b"no final newline"]) == b"no final newline\r\n.\r\n"
    assert stuff([]) == b".\r\n"


MESSAGE = b"From: a@b\r\nSubject: x\r\n\r\nline 1\r\n.line 2\r\nline 3\r\n"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b"From: a@b\r\nSubject: x\r\n\r\n"),
        (1, b"From: a@b\r\nSubject: x\r\n\r\nline 1\r\n"),
        (2, b"From: a@b\r\nSubject: x\r\n\r\nline 1\r\n.line 2\r\n"),
        (99, MESSAGE),
    ],
)
def test_top_filter(lines: int, expected: bytes) -> None:
    for cut in range(len(MESSAGE) + 1):
        top = pop3.TopFilter(lines)
        out = top.feed(MESSAGE[:cut])
        if not top.done:
            out += top.feed(MESSAGE[cut:])
        assert out == expected, cut


def test_top_filter_without_body() -> None:
    top = pop3.TopFilter(3)
    assert top.feed(b"Subject: only headers\r\n") == b"Subject: only headers\r\n"
    assert not top.done


def drop() -> pop3.Maildrop:
    return pop3.Maildrop(
        tuple(
            pop3.DropEntry(uid, size, pop3.unique_id(7, uid)) for uid, size in [(1, 120), (5, 200)]
        )
    )


def test_maildrop_transcript() -> None:
    # RFC 1939 §5 examples, with our snapshot.
    d = drop()
    assert d.stat() == b"+OK 2 320\r\n"
    assert d.listing(None) == b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
    assert d.listing("2") == b"+OK 2 200\r\n"
    assert d.uid_listing("1") == b"+OK 1 0000000100000007\r\n"
    assert d.delete("1") == b"+OK message 1 deleted\r\n"
    assert d.stat() == b"+OK 1 200\r\n"
    assert d.listing(None) == b"+OK 1 messages (200 octets)\r\n2 200\r\n.\r\n"
    assert d.uid_listing(None) == b"+OK unique-id listing follows\r\n2 0000000500000007\r\n.\r\n"
    for bad in ["1", "3", "0", "-1", "+2", "x", "99999999999"]:
        with pytest.raises(pop3.Pop3Error):
            d.listing(bad)
    assert d.deleted_uids() == [1]
    assert d.reset() == b"+OK maildrop has 2 messages (320 octets)\r\n"
    assert d.deleted_uids() == []


def test_unique_id_is_valid_uidl() -> None:
    uid = pop3.unique_id(2**32 - 1, 2**32 - 1)
    assert 1 <= len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)  # RFC 1939 §7
    assert pop3.unique_id(1, 2) != pop3.unique_id(2, 1)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600), state=st.sampled_from([A, T]))
def test_fuzz_command_parser(data: bytes, state: State) -> None:
    reader = pop3.LineReader()
    reader.feed(data)
    for _ in range(50):
        try:
            line = reader.next_line()
        except pop3.LineTooLong:
            continue
        if line is None:
            break
        try:
            command = pop3.parse_command(line, state)
        except ProtocolError:
            continue
        assert command.keyword in pop3.COMMANDS
        assert state in pop3.COMMANDS[command.keyword].states
        assert len(line) <= pop3.MAX_COMMAND_LINE - 1


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=4))
def test_fuzz_dot_stuffing_round_trip(body: bytes, cuts: list[int]) -> None:
    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    points = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    wire = stuff([body[a:b] for a, b in itertools.pairwise(points)])
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    # What a client reads back (RFC 1939 §3: strip one leading ".") is the message.
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines[:-2])
    expected = body if body.endswith(b"\r\n") or not body else body + b"\r\n"
    assert (unstuffed + b"\r\n" if lines[:-2] else b"") == expected


def test_bare_line_feeds_are_sent_as_crlf() -> None:
    # RFC 1939 §3: every line of a multi-line response ends with CRLF, and the response with
    # the five octets CRLF.CRLF, even for a message stored with bare LFs (IMAP APPEND).
    message = b"Subject: lf\n\n.dot\nbody\r\nlast\n"
    expected = b"Subject: lf\r\n\r\n..dot\r\nbody\r\nlast\r\n.\r\n"
    for cut in range(len(message) + 1):
        assert stuff([message[:cut], message[cut:]]) == expected, cut
    assert stuff([b"no end\r"]) == b"no end\r\r\n.\r\n"
    assert stuff([b"a\r", b"\n", b"b\n"]) == b"a\r\nb\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_fuzz_dot_stuffing_any_bytes(body: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    wire = stuff([body[a:b] for a, b in itertools.pairwise(points)])
    # RFC 1939 §3: CRLF line ends only, and the response ends with CRLF.CRLF (or is ".CRLF").
    assert wire.count(b"\n") == wire.count(b"\r\n")
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire.split(b"\r\n")[:-2]
    assert all(line != b"." for line in lines)  # no line ends the response early
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    normalised = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if body and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert (unstuffed + b"\r\n" if lines else b"") == normalised


_VCHAR = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    keyword=st.sampled_from(sorted(pop3.COMMANDS)),
    upper=st.lists(st.booleans(), min_size=4, max_size=4),
    args=st.lists(_VCHAR, max_size=3),
    state=st.sampled_from([A, T]),
)
def test_fuzz_well_formed_commands(
    keyword: str, upper: list[bool], args: list[str], state: State
) -> None:
    """RFC 2449 §3: keyword *(SP param), keywords case-insensitive, params 1*VCHAR: a
    well-formed line is accepted exactly when the state table and argument counts allow it."""
    spelled = "".join(c if up else c.lower() for c, up in zip(keyword, upper, strict=False))
    line = " ".join([spelled, *args]).encode()
    spec = pop3.COMMANDS[keyword]
    allowed = state in spec.states and spec.min_args <= len(args) <= spec.max_args
    if spec.rest_of_line:
        allowed = state in spec.states and bool(args)
    if not allowed:
        with pytest.raises(pop3.Pop3Error):
            pop3.parse_command(line, state)
        return
    command = pop3.parse_command(line, state)
    expected = (" ".join(args),) if spec.rest_of_line else tuple(args)
    assert command == Command(keyword, expected)
