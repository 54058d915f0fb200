"""The sans-IO SMTP client codec: replies (multi-line, enhanced codes), EHLO capabilities,
commands with ESMTP parameters, dot-stuffing (checked against the server's DotReader) and
BDAT chunking."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.codec import smtp_client as sc
from hato.codec.smtp_data import DotReader
from hato.core.errors import HatoError, ProtocolError, UsageError

EHLO_REPLY = (
    b"250-mx.example.test greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
    b"250-CHUNKING\r\n250-AUTH PLAIN login\r\n250 STARTTLS\r\n"
)


def parse(data: bytes) -> list[sc.ServerReply]:
    parser = sc.ReplyParser()
    parser.feed(data)
    return list(parser.replies())


def test_multiline_reply_split_anywhere() -> None:
    for cut in range(len(EHLO_REPLY)):
        parser = sc.ReplyParser()
        parser.feed(EHLO_REPLY[:cut])
        got = list(parser.replies())
        parser.feed(EHLO_REPLY[cut:])
        got += list(parser.replies())
        assert len(got) == 1 and got[0].code == 250 and len(got[0].lines) == 10
        assert not parser.pending


def test_enhanced_codes_are_taken_from_every_line() -> None:
    (reply,) = parse(b"550-5.1.1 The email account does not exist.\r\n550 5.1.1 Try again\r\n")
    assert reply.enhanced == "5.1.1" and reply.permanent
    assert reply.lines == ("The email account does not exist.", "Try again")
    assert str(reply) == "550 5.1.1 The email account does not exist. Try again"
    # RFC 2034 §4: a status whose class disagrees with the code is not an enhanced code
    (odd,) = parse(b"451 5.0.0 weird\r\n")
    assert odd.enhanced is None and odd.temporary


def test_pipelined_replies_and_bare_code() -> None:
    replies = parse(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354\r\n")
    assert [r.code for r in replies] == [250, 250, 354]
    assert replies[2].text == ""


@pytest.mark.parametrize(
    "data",
    [b"25 short\r\n", b"abc hello\r\n", b"250-a\r\n251 b\r\n", b"650 bad class\r\n"],
)
def test_malformed_replies_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


def test_reply_size_is_bounded() -> None:
    parser = sc.ReplyParser()
    with pytest.raises(ProtocolError):
        parser.feed(b"250 " + b"x" * (sc.MAX_REPLY_LINE + 10))
    with pytest.raises(ProtocolError):
        parse(b"250-x\r\n" * (sc.MAX_REPLY_LINES + 1))


@given(st.binary(max_size=300))
def test_reply_parser_never_crashes(data: bytes) -> None:
    parser = sc.ReplyParser()
    try:
        parser.feed(data)
        for reply in parser.replies():
            assert 200 <= reply.code <= 599
    except ProtocolError:
        pass


def test_capabilities() -> None:
    (reply,) = parse(EHLO_REPLY)
    caps = sc.Capabilities.parse(reply)
    assert caps.pipelining and caps.chunking and caps.smtputf8 and caps.eightbit
    assert caps.dsn and caps.starttls and not caps.requiretls and not caps.binarymime
    assert caps.size == 10240000 and caps.auth == ("PLAIN", "LOGIN")


def caps(*keywords: str) -> sc.Capabilities:
    return sc.Capabilities(frozenset(keywords))


def test_mail_from_parameters_only_when_offered() -> None:
    options = sc.MailOptions(size=1234, body="8BITMIME", ret="HDRS", envid="id 1+2=3")
    full = sc.mail_from("alice@example.test", options, caps("SIZE", "8BITMIME", "DSN"))
    # RFC 3461 §4: xtext encodes "+", "=" and space
    assert full == (
        b"MAIL FROM:<alice@example.test> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=id+201+2B2+3D3\r\n"
    )
    bare = sc.mail_from("alice@example.test", options, caps())
    assert bare == b"MAIL FROM:<alice@example.test>\r\n"
    assert sc.mail_from("", sc.MailOptions(), caps()) == b"MAIL FROM:<>\r\n"


def test_smtputf8_and_idna() -> None:
    utf8 = sc.MailOptions(smtputf8=True)
    line = sc.mail_from("jörg@bücher.test", utf8, caps("SMTPUTF8"))
    assert line == "MAIL FROM:<jörg@bücher.test> SMTPUTF8\r\n".encode()
    with pytest.raises(UsageError, match="SMTPUTF8"):
        sc.mail_from("jörg@bücher.test", utf8, caps())
    # RFC 6531 §3.2: an ASCII local part with an IDN domain goes out as A-labels
    plain = sc.rcpt_to("joe@bücher.test", caps=caps(), utf8=False)
    assert plain == b"RCPT TO:<joe@xn--bcher-kva.test>\r\n"
    with pytest.raises(UsageError):
        sc.rcpt_to("jörg@example.test", caps=caps(), utf8=False)


def test_rcpt_dsn_parameters() -> None:
    line = sc.rcpt_to(
        "bob@example.test",
        notify=frozenset({"FAILURE", "DELAY"}),
        orcpt="rfc822;Bob+x@Example.test",
        caps=caps("DSN"),
        utf8=False,
    )
    assert (
        line
        == b"RCPT TO:<bob@example.test> NOTIFY=DELAY,FAILURE ORCPT=rfc822;Bob+2Bx@Example.test\r\n"
    )
    never = sc.rcpt_to("bob@example.test", notify=frozenset(), caps=caps("DSN"), utf8=False)
    assert never == b"RCPT TO:<bob@example.test> NOTIFY=NEVER\r\n"
    dropped = sc.rcpt_to("bob@example.test", notify=frozenset(), caps=caps(), utf8=False)
    assert dropped == b"RCPT TO:<bob@example.test>\r\n"


def test_binary_and_requiretls_need_the_extension() -> None:
    with pytest.raises(UsageError):
        sc.mail_from("a@b.test", sc.MailOptions(body="BINARYMIME"), caps("BINARYMIME"))
    ok = sc.mail_from("a@b.test", sc.MailOptions(body="BINARYMIME"), caps("BINARYMIME", "CHUNKING"))
    assert ok.endswith(b" BODY=BINARYMIME\r\n")
    with pytest.raises(UsageError):
        sc.mail_from("a@b.test", sc.MailOptions(requiretls=True), caps())


def test_commands_refuse_injection() -> None:
    with pytest.raises(UsageError):
        sc.ehlo("host\r\nRSET")
    with pytest.raises(UsageError):
        sc.mail_from("a@b.test", sc.MailOptions(ret="FULL\r\nDATA"), caps("DSN"))


def stuff(chunks: list[bytes]) -> bytes:
    stuffer = sc.DotStuffer()
    return b"".join(stuffer.feed(c) for c in chunks) + stuffer.finish()


def unstuff(wire: bytes) -> bytes:
    reader = DotReader(max_size=1 << 30)
    buffer = bytearray(wire)
    out = reader.read(buffer)
    while not reader.done and buffer:
        out += reader.read(buffer)
    assert reader.done and reader.problem is None and not buffer
    return out


def test_dot_stuffing_examples() -> None:
    assert stuff([b".hidden\r\n", b"..two\r\n"]) == b"..hidden\r\n...two\r\n.\r\n"
    assert stuff([b"a\r\n.", b"b\r\n"]) == b"a\r\n..b\r\n.\r\n"
    assert stuff([b"no final newline"]) == b"no final newline\r\n.\r\n"
    assert stuff([]) == b".\r\n"


lines = st.lists(st.text(alphabet=".ab \u00e9", max_size=20).map(lambda s: s.encode()), max_size=10)


@given(lines, st.integers(min_value=1, max_value=7))
def test_dot_stuffing_round_trips_through_the_server_reader(parts: list[bytes], size: int) -> None:
    message = b"".join(p + b"\r\n" for p in parts)
    chunks = [message[i : i + size] for i in range(0, len(message), size)]
    assert unstuff(stuff(chunks)) == message


def test_bdat_chunks() -> None:
    assert list(sc.bdat_chunks(b"", chunk_size=4)) == [b"BDAT 0 LAST\r\n"]
    assert list(sc.bdat_chunks(b"abcdefghij", chunk_size=4)) == [
        b"BDAT 4\r\nabcd",
        b"BDAT 4\r\nefgh",
        b"BDAT 2 LAST\r\nij",
    ]


def test_auth_plain() -> None:
    # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
    assert sc.auth_plain("user", "pass") == b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"


_REFERENCE_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)(.*)", re.DOTALL)


def _reference_replies(data: bytes) -> list[tuple[int, tuple[str, ...]]]:
    """RFC 5321 §4.2 replies by a plain regex, line by line: what the parser must agree with."""
    out: list[tuple[int, tuple[str, ...]]] = []
    lines: list[tuple[int, str]] = []
    for raw in data.split(b"\n")[:-1]:
        match = _REFERENCE_LINE.fullmatch(raw.rstrip(b"\r"))
        if match is None or (lines and lines[0][0] != int(match.group(1))):
            raise ProtocolError("malformed")
        lines.append((int(match.group(1)), match.group(3).decode("utf-8", errors="replace")))
        if match.group(2) != b"-":
            out.append((lines[0][0], tuple(t for _c, t in lines)))
            lines = []
    return out


_LINE = st.tuples(
    st.sampled_from([b"250", b"354", b"451", b"550", b"220", b"25x", b"650", b"2500"]),
    st.sampled_from([b" ", b"-", b"", b"x"]),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"\r\n", b"\n", b"\r\r\n"]),
)


@given(st.lists(_LINE, max_size=8), st.integers(min_value=0, max_value=200))
def test_reply_parser_agrees_with_the_reply_grammar(lines: list[Any], cut: int) -> None:
    data = b"".join(code + sep + text + end for code, sep, text, end in lines)
    try:
        expected: list[tuple[int, tuple[str, ...]]] | None = _reference_replies(data)
    except ProtocolError:
        expected = None
    parser = sc.ReplyParser()
    got: list[sc.ServerReply] = []
    try:
        for piece in (data[:cut], data[cut:]):  # split anywhere: same replies
            parser.feed(piece)
            got += parser.replies()
    except ProtocolError:
        assert expected is None
        return
    assert expected is not None and len(got) == len(expected)
    for reply, (code, texts) in zip(got, expected, strict=True):
        assert reply.code == code and len(reply.lines) == len(texts)
        if reply.enhanced is None:  # else the status was taken out of the text
            assert reply.lines == texts


_ADDRESS_CHARS = st.sampled_from([*"abcXYZ019.-_+@!#'", "xn--", "ü", " ", '"', "@@"])


@given(st.lists(_ADDRESS_CHARS, min_size=1, max_size=24).map("".join), st.booleans())
def test_plain_path_fast_route_matches_the_parsed_path(address: str, utf8: bool) -> None:
    """``path`` skips parsing for plain ASCII addresses: same result, same refusals."""
    parsed = sc._parsed_path.__wrapped__  # the slow path, without its cache
    try:
        expected: str | None = parsed(address, utf8=utf8)
    except HatoError:
        expected = None
    try:
        got: str | None = sc.path(address, utf8=utf8)
    except HatoError:
        got = None
    assert got == expected
