"""The sans-IO ManageSieve codec (RFC 5804 §4): framing, literals, commands, responses; fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.codec import managesieve as ms
from hato.codec.managesieve import Code, Command, FrameReader, State


def frames(data: bytes, **limits: int) -> list[ms.Frame | ms.InputTooLong]:
    reader = FrameReader(**limits)
    reader.feed(data)
    out: list[ms.Frame | ms.InputTooLong] = []
    while True:
        try:
            frame = reader.next_frame()
        except ms.InputTooLong as exc:
            out.append(exc)
            continue
        if frame is None:
            return out
        out.append(frame)


def command(line: bytes, state: State = State.AUTH) -> Command:
    [frame] = frames(line)
    assert not isinstance(frame, ms.InputTooLong)
    return ms.parse_command(frame, state)


def refused(line: bytes, state: State = State.AUTH) -> bytes:
    with pytest.raises(ms.ManageSieveError) as info:
        command(line, state)
    assert info.value.response.startswith(b"NO ")
    return info.value.response


def test_commands_are_case_insensitive_with_quoted_and_literal_strings() -> None:
    # RFC 5804 §4: "Implementations MUST accept these strings in a case-insensitive fashion."
    assert command(b"capability\r\n") == Command("CAPABILITY")
    assert command(b'Putscript "foo" {31+}\r\n#comment\r\nInvalidSieveCommand\r\n\r\n') == Command(
        "PUTSCRIPT", ("foo", "#comment\r\nInvalidSieveCommand\r\n")
    )
    # Synchronizing literals are accepted from clients too.
    assert command(b"GETSCRIPT {3}\r\nabc\r\n") == Command("GETSCRIPT", ("abc",))
    assert command(b"RENAMESCRIPT {1+}\r\na {2+}\r\nbc\r\n") == Command("RENAMESCRIPT", ("a", "bc"))
    assert command(b'HAVESPACE "x" 4294967295\r\n') == Command("HAVESPACE", ("x", 4294967295))
    assert command(b'SETACTIVE ""\r\n') == Command("SETACTIVE", ("",))  # §2.8: "" disables
    assert command(b'NOOP "STARTTLS-SYNC-42"\r\n', State.NONAUTH) == Command(
        "NOOP", ("STARTTLS-SYNC-42",)
    )
    assert command(b'PUTSCRIPT "a\\"b\\\\c" "keep;"\n') == Command("PUTSCRIPT", ('a"b\\c', "keep;"))
    assert command(b'GETSCRIPT "\xe7\x8c\xab"\r\n') == Command("GETSCRIPT", ("\u732b",))
    assert command(b'AUTHENTICATE "PLAIN" "AGEAYg=="\r\n', State.NONAUTH).args == (
        "PLAIN",
        "AGEAYg==",
    )


def test_states_table() -> None:
    # RFC 5804 §2: before authentication only AUTHENTICATE, CAPABILITY, STARTTLS, LOGOUT, NOOP.
    for line in (b"LISTSCRIPTS", b'GETSCRIPT "a"', b'DELETESCRIPT "a"', b"UNAUTHENTICATE"):
        assert b"authentication" in refused(line + b"\r\n", State.NONAUTH)
    # RFC 5804 §2.1: no AUTHENTICATE after a successful one; §2.2 STARTTLS only before.
    refused(b'AUTHENTICATE "PLAIN"\r\n', State.AUTH)
    refused(b"STARTTLS\r\n", State.AUTH)
    for name, spec in ms.COMMANDS.items():
        assert spec.states, name


@pytest.mark.parametrize(
    "line",
    [
        b"\r\n",
        b"FROB\r\n",
        b'"GETSCRIPT" "a"\r\n',  # the command name is an atom
        b"GETSCRIPT\r\n",  # missing argument
        b'GETSCRIPT "a" "b"\r\n',  # one too many
        b'GETSCRIPT ""\r\n',  # RFC 5804 §4: sieve-name is never empty
        b"GETSCRIPT a\r\n",  # an atom where a string must be
        b'HAVESPACE "a" 4294967296\r\n',  # RFC 5804 §4: a 32-bit number
        b'HAVESPACE "a" 012\r\n',  # RFC 5804 §4: no extra leading zeros
        b'HAVESPACE "a" "12"\r\n',
        b'GETSCRIPT  "a"\r\n',
        b'GETSCRIPT "a" \r\n',
        b'GETSCRIPT "a\r\n',
        b'GETSCRIPT "a\\n"\r\n',  # only \" and \\ are escapes
        b'GETSCRIPT "\xff"\r\n',  # strings are UTF-8
        b'GETSCRIPT "a"{1+}\r\nb\r\n',
        b"GETSCRIPT {01+}\r\na\r\n",
        b'GETSCRIPT "' + b"x" * 1025 + b'"\r\n',  # RFC 5804 §4: quoted <= 1024 octets
    ],
)
def test_malformed_commands_get_no(line: bytes) -> None:
    refused(line)


def test_quoted_string_of_1024_octets_is_fine() -> None:
    assert command(b'GETSCRIPT "' + b"x" * 1024 + b'"\r\n').args == ("x" * 1024,)


def test_literals_are_read_across_feeds_byte_by_byte() -> None:
    data = b'PUTSCRIPT "s" {10+}\r\nkeep;\r\n# x\r\nNOOP\r\n'
    reader = FrameReader()
    got = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        frame = reader.next_frame()
        if frame is not None:
            got.append(ms.parse_command(frame, State.AUTH))
    assert got == [Command("PUTSCRIPT", ("s", "keep;\r\n# x")), Command("NOOP")]
    assert reader.pending == 0


def test_oversized_input_is_consumed_and_reported_once() -> None:
    data = (
        b'PUTSCRIPT "big" {50+}\r\n'
        + b"x" * 50
        + b"\r\n"
        + b"NOOP "
        + b"y" * 100
        + b"\r\n"
        + b"CHECKSCRIPT {3+}\r\nabc\r\n"
        + b'RENAMESCRIPT "a" "b" '
        + b"z" * 80
        + b" {60+}\r\n"
        + b"w" * 60
        + b"\r\n"
        + b"LOGOUT\r\n"
    )
    out = frames(data, max_line=64, max_literal=20)
    assert len(out) == 5
    big, long_line, check, renamed, logout = out
    assert isinstance(big, ms.InputTooLong) and big.literal_size == 50
    assert big.command == "PUTSCRIPT"
    assert isinstance(long_line, ms.InputTooLong) and long_line.literal_size is None
    assert not isinstance(check, ms.InputTooLong)
    assert ms.parse_command(check, State.AUTH) == Command("CHECKSCRIPT", ("abc",))
    # An over-long line announcing a literal: the literal is skipped with it (no smuggling).
    assert isinstance(renamed, ms.InputTooLong)
    assert not isinstance(logout, ms.InputTooLong)
    assert ms.parse_command(logout, State.AUTH) == Command("LOGOUT")


def test_clear_forgets_pipelined_input() -> None:
    reader = FrameReader()
    reader.feed(b'STARTTLS\r\nPUTSCRIPT "x" {5+}\r\nab')
    assert reader.next_frame() is not None
    assert reader.next_frame() is None  # waiting for the literal
    assert reader.clear() == 2
    reader.feed(b"NOOP\r\n")
    frame = reader.next_frame()
    assert frame is not None and ms.parse_command(frame, State.AUTH) == Command("NOOP")


def test_sasl_responses() -> None:
    [frame] = frames(b'"AGFsaWNlAHNlY3JldA=="\r\n')
    assert not isinstance(frame, ms.InputTooLong)
    assert ms.parse_sasl_response(frame) == b"\x00alice\x00secret"
    [frame] = frames(b"{4+}\r\nYWJj\r\n")
    assert not isinstance(frame, ms.InputTooLong)
    assert ms.parse_sasl_response(frame) == b"abc"
    [frame] = frames(b'"*"\r\n')
    assert not isinstance(frame, ms.InputTooLong)
    assert ms.parse_sasl_response(frame) is None  # RFC 5804 §2.1: "*" cancels
    [frame] = frames(b'""\r\n')
    assert not isinstance(frame, ms.InputTooLong)
    assert ms.parse_sasl_response(frame) == b""
    for bad in (b'"not base64!"\r\n', b"abc\r\n", b'"YQ==" "YQ=="\r\n'):
        [frame] = frames(bad)
        assert not isinstance(frame, ms.InputTooLong)
        with pytest.raises(ms.ManageSieveError):
            ms.parse_sasl_response(frame)


def test_responses() -> None:
    assert ms.ok() == b"OK\r\n"
    assert ms.no("There is no script by that name", code=Code("NONEXISTENT")) == (
        b'NO (NONEXISTENT) "There is no script by that name"\r\n'
    )
    # RFC 5804 §2.13 example: OK (TAG {16} CRLF STARTTLS-SYNC-42) "Done" — ours is quoted.
    assert ms.ok("Done", code=Code("TAG", "STARTTLS-SYNC-42")) == (
        b'OK (TAG "STARTTLS-SYNC-42") "Done"\r\n'
    )
    # Multi-line error text goes as a literal (RFC 5804 §2.6).
    errors = ms.error_text([(2, "unknown command"), (5, 'missing ";"')])
    assert ms.no(errors) == b'NO {44}\r\nline 2: unknown command\r\nline 5: missing ";"\r\n'
    assert ms.bye("Too many failed authentication attempts").startswith(b'BYE "Too many')
    assert ms.script_line('clever"script', active=False) == b'"clever\\"script"\r\n'
    assert ms.script_line("main", active=True) == b'"main" ACTIVE\r\n'
    assert ms.script_body("keep;\r\n") == b"{7}\r\nkeep;\r\n\r\n"
    assert ms.challenge(b"abc") == b'"YWJj"\r\n'
    assert ms.string("x" * 1025).startswith(b"{1025}\r\n")


def test_capabilities() -> None:
    caps = ms.Capabilities(
        implementation="Hato",
        sasl=(),
        sieve=("fileinto", "vacation"),
        starttls=True,
        maxredirects=4,
        notify=("mailto",),
    ).render()
    # RFC 5804 §1.7: IMPLEMENTATION, SIEVE and VERSION always; no OWNER before login.
    assert caps == (
        b'"IMPLEMENTATION" "Hato"\r\n"SASL" ""\r\n"SIEVE" "fileinto vacation"\r\n'
        b'"STARTTLS"\r\n"MAXREDIRECTS" "4"\r\n"NOTIFY" "mailto"\r\n"UNAUTHENTICATE"\r\n'
        b'"VERSION" "1.0"\r\nOK\r\n'
    )
    after = ms.Capabilities("Hato", ("PLAIN",), ("fileinto",), owner="a@example.test").render()
    assert b'"OWNER" "a@example.test"\r\n' in after and b"STARTTLS" not in after
    # RFC 6134 §2.8: EXTLISTS (the URI schemes of the lists) only with the extension
    lists = ms.Capabilities("Hato", (), ("extlists",), extlists=("mailto", "urn")).render()
    assert b'"SIEVE" "extlists"\r\n"EXTLISTS" "mailto urn"\r\n' in lists
    assert b"EXTLISTS" not in caps


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8), st.sampled_from(list(State)))
def test_fuzz_reader_and_parser_raise_only_protocol_errors(
    chunks: list[bytes], state: State
) -> None:
    reader = FrameReader(max_line=40, max_literal=30)
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            try:
                frame = reader.next_frame()
            except ms.InputTooLong:
                continue
            if frame is None:
                break
            for segment in frame:
                assert len(segment.text) <= 40 and len(segment.literal or b"") <= 30
            try:
                parsed = ms.parse_command(frame, state)
            except ms.ManageSieveError as exc:
                assert exc.response.startswith(b"NO ")
                continue
            assert state in ms.COMMANDS[parsed.name].states
        assert reader.pending <= 40 + 30 + 2


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["GETSCRIPT", "DELETESCRIPT", "SETACTIVE", "CHECKSCRIPT"]),
    st.text(max_size=60).filter(bool),
    st.booleans(),
)
def test_fuzz_rendered_strings_parse_back(name: str, value: str, literal: bool) -> None:
    raw = value.encode("utf-8")
    arg = b"{%d+}\r\n" % len(raw) + raw if literal else ms.string(value)
    if arg.startswith(b"{") and not literal:
        arg = b"{%d+}\r\n" % len(raw) + raw
    parsed = command(name.encode() + b" " + arg + b"\r\n")
    assert parsed == Command(name, (value,))
