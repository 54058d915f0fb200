"""The sans-IO SMTP codec: framing, state table, limits, STARTTLS/AUTH rules, and fuzzing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hato.codec.smtp import (
    ALLOWED,
    Auth,
    AuthResponse,
    Bdat,
    ChunkEnd,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Event,
    Limits,
    Mail,
    Offer,
    Rcpt,
    Rejected,
    ServerConnection,
    StartTls,
    State,
    Verb,
)
from hato.codec.smtp_data import (
    MAX_LINE_CONTENT,
    DataProblem,
    DotReader,
    has_bare_line_end,
    has_long_line,
)
from hato.core.errors import UsageError
from hato.core.reply import Reply

OK = Reply(250, "2.0.0", "OK")
GO = Reply(354, None, "go")


def respond(event: Event) -> Reply | None:
    """A server that accepts everything the codec lets through (AUTH takes two steps)."""
    if isinstance(event, (Bdat, DataChunk)):
        return None
    if isinstance(event, Rejected):
        return event.reply
    if isinstance(event, Data):
        return GO
    if isinstance(event, StartTls):
        return Reply(220, "2.0.0", "go ahead")
    if isinstance(event, Auth):
        return Reply(334, None, "")
    if isinstance(event, AuthResponse):
        return Reply(235, "2.7.0", "ok")
    return OK


def normalise(events: list[Event]) -> list[Event]:
    """Merge consecutive DataChunk events (their boundaries depend on how bytes arrive)."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def respond_auth_at_once(event: Event) -> Reply | None:
    return Reply(235, "2.7.0", "ok") if isinstance(event, Auth) else respond(event)


def drive(
    chunks: list[bytes],
    *,
    limits: Limits | None = None,
    offer: Offer | None = None,
    responder: Callable[[Event], Reply | None] = respond,
) -> tuple[list[Event], bytes, ServerConnection]:
    codec = ServerConnection(limits=limits, offer=offer or Offer(starttls=True, auth=("PLAIN",)))
    events: list[Event] = []
    out = b""
    for chunk in chunks:
        codec.receive_data(chunk)
        while (event := codec.next_event()) is not None:
            events.append(event)
            reply = responder(event)
            if reply is not None:
                out += codec.send(reply)
    return normalise(events), out, codec


SESSION = (
    b"EHLO client.test\r\n"
    b"MAIL FROM:<a@remote.test> SIZE=100 BODY=8BITMIME\r\n"
    b"RCPT TO:<alice@example.test> NOTIFY=FAILURE\r\n"
    b"RCPT TO:<bob@example.test>\r\n"
    b"DATA\r\n"
    b"Subject: x\r\n\r\n..leading dot\r\n..\r\nline\r\n.\r\n"
    b"MAIL FROM:<>\r\n"
    b"RCPT TO:<carol@example.test>\r\n"
    b"BDAT 5\r\nab\r\nc"
    b"BDAT 0 LAST\r\n"
    b"NOOP\r\n"
    b"QUIT\r\n"
)


def test_session_events() -> None:
    events, out, codec = drive([SESSION])
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Ehlo", "Mail", "Rcpt", "Rcpt", "Data", "DataChunk", "DataEnd",
        "Mail", "Rcpt", "Bdat", "DataChunk", "ChunkEnd", "Bdat", "ChunkEnd", "Noop", "Quit",
    ]  # fmt: skip
    body = events[5]
    assert isinstance(body, DataChunk)
    # RFC 5321 §4.5.2: one leading dot removed per line
    assert body.data == b"Subject: x\r\n\r\n.leading dot\r\n.\r\nline\r\n"
    assert events[6] == DataEnd(size=len(body.data), problem=None)
    assert events[10] == DataChunk(b"ab\r\nc")
    assert events[13] == ChunkEnd(size=5, last=True, problem=None)
    assert codec.closed
    assert out.count(b"\r\n") == 12  # one reply per event except Bdat and DataChunk


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(SESSION)), max_size=40))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [SESSION[a:b] for a, b in zip([0, *points], [*points, len(SESSION)], strict=True)]
    assert drive([c for c in chunks if c])[:2] == drive([SESSION])[:2]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_binary_garbage_never_breaks_the_codec(data: bytes, size: int) -> None:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    events, _out, codec = drive(chunks)
    assert codec.buffered <= 1200  # nothing grows without bound
    for event in events:
        assert not isinstance(event, (Mail, Rcpt)) or codec.session.state is not State.CONNECTED


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([v.value for v in Verb] + ["FOO", ""]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80),
)
def test_any_command_line_gets_exactly_one_reply(verb: str, arg: str) -> None:
    line = f"{verb} {arg}".encode().replace(b"\r", b"").replace(b"\n", b"")
    prefix = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
    events, out, _codec = drive([prefix + line + b"\r\n"])
    commands = [e for e in events if not isinstance(e, (Bdat, DataChunk))]
    assert [type(e) for e in commands[:3]] == [Ehlo, Mail, Rcpt]
    assert out.count(b"\r\n") == len(commands)  # every event needing a reply got one
    # the line was one command, or a BDAT now waiting for its octets
    assert len(commands) == 4 or (isinstance(events[-1], Bdat) and len(commands) == 3)


def test_reply_before_next_event_is_enforced() -> None:
    codec = ServerConnection()
    codec.receive_data(b"NOOP\r\nNOOP\r\n")
    assert codec.next_event() is not None
    with pytest.raises(UsageError):
        codec.next_event()
    with pytest.raises(UsageError):
        ServerConnection().send(OK)


def test_state_table_covers_every_verb() -> None:
    assert set(ALLOWED) == set(Verb)
    assert State.CONNECTED not in ALLOWED[Verb.MAIL]  # RFC 5321 §4.1.4: EHLO first
    assert ALLOWED[Verb.DATA] == {State.RCPT}


# -- DATA framing and smuggling ---------------------------------------------------------


def data_events(body: bytes, *, max_size: int = 1 << 20, step: int = 0) -> list[Event]:
    prefix = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
    stream = prefix + body
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)] if step else [stream]
    limits = Limits(max_message_size=max_size)
    events, _out, _codec = drive(chunks, limits=limits)
    return events[4:]


@pytest.mark.parametrize("step", [0, 1, 2, 3, 7])
@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\r\n.\n", DataProblem.BARE_LINE_END),
        (b"\n.\n", DataProblem.BARE_LINE_END),
        (b"\r.\r", DataProblem.BARE_LINE_END),
        (b"\n.\r\n", DataProblem.BARE_LINE_END),
        (b"x\r\n", None),
    ],
)
def test_smuggling_payloads_never_end_the_body(
    payload: bytes, problem: DataProblem | None, step: int
) -> None:
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nevil\r\n"
    events = data_events(b"\r\n" + payload + smuggled + b".\r\nNOOP\r\n", step=step)
    ends = [e for e in events if isinstance(e, DataEnd)]
    assert len(ends) == 1 and ends[0].problem is problem
    assert not any(isinstance(e, (Mail, Rcpt, Data)) for e in events)


def test_line_length_limit_counts_octets_without_the_stuffed_dot() -> None:
    ok = b"." + b"." + b"x" * 997 + b"\r\n.\r\n"  # 998 octets after unstuffing
    assert data_events(ok)[-1] == DataEnd(size=1000, problem=None)
    long = b"x" * 999 + b"\r\n.\r\n"  # RFC 5321 §4.5.3.1.6: 1001 octets with CRLF
    assert data_events(long)[-1] == DataEnd(size=1001, problem=DataProblem.LINE_TOO_LONG)
    endless = b"y" * 5000 + b"\r\n.\r\n"
    for step in (0, 100, 999):
        end = data_events(endless, step=step)[-1]
        assert isinstance(end, DataEnd) and end.problem is DataProblem.LINE_TOO_LONG


_LINE_LENGTHS = st.one_of(st.integers(0, 1100), st.sampled_from([997, 998, 999]))


@settings(max_examples=300)
@given(
    st.lists(_LINE_LENGTHS, max_size=30),
    _LINE_LENGTHS,
)
def test_long_line_check_agrees_with_splitting_every_line(lines: list[int], tail: int) -> None:
    """``has_long_line`` (windows) answers what splitting at every CRLF answers."""
    text = b"".join(b"x" * n + b"\r\n" for n in lines) + b"y" * tail
    expected = max(map(len, text.split(b"\r\n"))) > MAX_LINE_CONTENT  # RFC 5321 §4.5.3.1.6
    assert has_long_line(text) is expected
    assert has_long_line(b"".join(b"x" * n + b"\r\n" for n in lines)) is any(
        n > MAX_LINE_CONTENT for n in lines
    )


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"x", b"\n\r", b"\r\r\n\n"])).map(b"".join))
def test_bare_line_end_check_agrees_with_counting(text: bytes) -> None:
    region = text + b"\r\n"  # whole lines, as the dot-reader passes them
    pairs = region.count(b"\r\n")
    bare = region.count(b"\r") != pairs or region.count(b"\n") != pairs
    assert has_bare_line_end(region) is bare


def _reference_read(stream: bytes) -> tuple[bytes, bool, bytes] | None:
    """DATA read the plain way (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8), on the whole stream:
    (unstuffed body, bare CR or LF seen, what follows the terminator); None: no end yet."""
    if stream.startswith(b".\r\n"):
        return b"", False, stream[3:]
    term = stream.find(b"\r\n.\r\n")
    if term < 0:
        return None
    region = stream[: term + 2]
    lines = region.split(b"\r\n")[:-1]
    bare = any(b"\r" in line or b"\n" in line for line in lines)
    body = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body, bare, stream[term + 5 :]


_BODY_BYTES = st.lists(
    st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"\r\n.", b"\r\n.\r\n", b"ab"]),
    max_size=60,
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(_BODY_BYTES, st.binary(max_size=20), st.lists(st.integers(1, 40), max_size=8))
def test_dot_reader_agrees_with_reading_line_by_line(
    body: bytes, after: bytes, cuts: list[int]
) -> None:
    """The dot-reader (a few C-speed passes per chunk) answers what splitting the whole
    stream into lines answers, however the stream is cut into chunks."""
    stream = body + after
    expected = _reference_read(stream)
    reader = DotReader(max_size=1 << 20)
    buffer, out, pos = bytearray(), [], 0
    for cut in [*cuts, len(stream)]:
        buffer += stream[pos : pos + cut]
        pos += cut
        while not reader.done:
            before = len(buffer)
            out.append(reader.read(buffer))
            if len(buffer) == before:
                break
    if expected is None:
        assert not reader.done
        return
    assert reader.done
    want_body, bare, rest = expected
    assert (reader.problem is DataProblem.BARE_LINE_END) is bare
    assert reader.size == len(want_body)
    if not bare:
        assert b"".join(out) == want_body
    assert bytes(buffer) == rest  # the commands after it stay for the codec


def test_size_limit_stops_chunks_and_is_reported() -> None:
    body = (b"z" * 98 + b"\r\n") * 50 + b".\r\n"
    events = data_events(body, max_size=1000, step=300)
    assert sum(len(e.data) for e in events if isinstance(e, DataChunk)) <= 1000
    assert events[-1] == DataEnd(size=5000, problem=DataProblem.TOO_BIG)


def test_empty_body_and_terminator_split_everywhere() -> None:
    for step in (1, 2, 3, 4):
        assert data_events(b".\r\nNOOP\r\n", step=step)[0] == DataEnd(size=0, problem=None)


# -- BDAT --------------------------------------------------------------------------------


def test_bdat_over_the_limit_is_read_and_refused() -> None:
    stream = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 20 LAST\r\n"
    stream += b"0123456789" * 2 + b"NOOP\r\n"
    events, _out, _codec = drive([stream], limits=Limits(max_message_size=10))
    assert events[3:] == [
        Bdat(20, True),
        ChunkEnd(size=20, last=True, problem=DataProblem.TOO_BIG),
        events[-1],
    ]
    assert type(events[-1]).__name__ == "Noop"


def test_bdat_not_offered() -> None:
    stream = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 4\r\nabcdNOOP\r\n"
    events, out, _codec = drive([stream], offer=Offer(chunking=False))
    assert isinstance(events[3], Rejected) and events[3].reply.code == 502
    assert out.endswith(b"250 2.0.0 OK\r\n")


# -- STARTTLS, AUTH, limits -----------------------------------------------------------------


def test_starttls_discards_pipelined_bytes_and_resets_the_session() -> None:
    codec = ServerConnection(offer=Offer(starttls=True))
    codec.receive_data(b"EHLO c\r\n")
    codec.send(codec.ehlo_reply("mx", "c") if codec.next_event() else OK)
    codec.receive_data(b"STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n")
    assert isinstance(codec.next_event(), StartTls)
    codec.send(Reply(220, "2.0.0", "go"))
    assert codec.next_event() is None  # RFC 3207 §4.2: the injected command is gone
    assert codec.session.tls and codec.session.state is State.CONNECTED
    assert codec.session.helo is None
    codec.receive_data(b"STARTTLS\r\n")
    event = codec.next_event()
    assert isinstance(event, Rejected) and event.reply.code == 503


def test_starttls_must_stand_alone_in_the_ehlo_reply_after_tls() -> None:
    codec = ServerConnection(offer=Offer(starttls=True, requiretls=True))
    before = codec.ehlo_reply("mx", "c").text
    assert "STARTTLS" in before and "REQUIRETLS" not in before
    codec.session.tls = True
    after = codec.ehlo_reply("mx", "c").text
    assert "STARTTLS" not in after and "REQUIRETLS" in after


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"AUTH PLAIN =", Auth("PLAIN", b"")),
        (b"AUTH plain AGFAYg==", Auth("PLAIN", b"\0a@b")),
        (b"AUTH PLAIN", Auth("PLAIN", None)),
        (b"AUTH PLAIN !!!", 501),
        (b"AUTH CRAM-MD5", 504),
        (b"AUTH", 501),
    ],
)
def test_auth_command(line: bytes, expected: Event | int) -> None:
    events, _out, _codec = drive([b"EHLO c\r\n" + line + b"\r\n"])
    if isinstance(expected, int):
        assert isinstance(events[1], Rejected) and events[1].reply.code == expected
    else:
        assert events[1] == expected


def test_auth_responses_and_cancel() -> None:
    codec = ServerConnection(offer=Offer(auth=("LOGIN",)))
    codec.receive_data(b"EHLO c\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN\r\nYWxpY2U=\r\nNOOP\r\n")
    assert isinstance(codec.next_event(), Ehlo)
    codec.send(OK)
    assert codec.next_event() == Auth("LOGIN", None)
    codec.send(Reply(334, None, "VXNlcm5hbWU6"))
    assert codec.next_event() == AuthResponse(None)
    codec.send(Reply(501, "5.7.0", "cancelled"))
    assert codec.next_event() == Auth("LOGIN", None)
    codec.send(Reply(334, None, "VXNlcm5hbWU6"))
    assert codec.next_event() == AuthResponse(b"alice")
    codec.send(Reply(235, "2.7.0", "ok"))
    assert codec.session.authenticated
    assert type(codec.next_event()).__name__ == "Noop"


def test_auth_refused_inside_a_transaction_and_twice() -> None:
    stream = b"EHLO c\r\nAUTH PLAIN =\r\nAUTH PLAIN =\r\nMAIL FROM:<a@b.test>\r\nAUTH PLAIN =\r\n"
    events, _out, _codec = drive([stream], responder=respond_auth_at_once)
    codes = [e.reply.code if isinstance(e, Rejected) else None for e in events]
    assert codes == [None, None, 503, None, 503]  # RFC 4954 §4


def test_auth_without_tls_says_encryption_required() -> None:
    events, _out, _codec = drive([b"EHLO c\r\nAUTH PLAIN =\r\n"], offer=Offer(starttls=True))
    assert isinstance(events[1], Rejected) and events[1].reply.code == 538


def test_error_limit_closes_with_421() -> None:
    events, out, codec = drive([b"X\r\n" * 10], limits=Limits(max_errors=3))
    assert len(events) == 3 and codec.closed
    assert out.endswith(b"421 4.7.0 Too many errors, closing connection\r\n")


def test_recipient_limit_is_452() -> None:
    rcpts = b"RCPT TO:<c@d.test>\r\n" * 101
    events, _out, _codec = drive(
        [b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n" + rcpts], limits=Limits(max_recipients=100)
    )
    last = events[-1]
    # RFC 5321 §4.5.3.1.10: too many recipients is 452, and at least 100 must be accepted
    assert isinstance(last, Rejected) and last.reply == Reply(452, "4.5.3", "Too many recipients")
    with pytest.raises(UsageError):
        Limits(max_recipients=99)


def test_transactions_per_session_limit() -> None:
    one = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n"
    events, out, codec = drive(
        [b"EHLO c\r\n" + one * 3], limits=replace(Limits(), max_transactions=2)
    )
    assert codec.closed and out.endswith(
        b"421 4.7.0 Too many messages in this session, try again later\r\n"
    )
    assert sum(isinstance(e, DataEnd) for e in events) == 2


def test_utf8_addresses_need_smtputf8() -> None:
    ok = "EHLO c\r\nMAIL FROM:<jörg@bücher.test> SMTPUTF8\r\nRCPT TO:<ñ@例え.test>\r\n"
    events, _out, _codec = drive([ok.encode()])
    assert isinstance(events[1], Mail) and events[1].params.smtputf8
    assert isinstance(events[2], Rcpt) and str(events[2].path.address) == "ñ@例え.test"
    events, _out, _codec = drive([b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<\xff@x>\r\n"])
    assert isinstance(events[2], Rejected) and events[2].reply.code == 500
