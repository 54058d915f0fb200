"""SORT and THREAD (RFC 5256, RFC 5957 DISPLAYFROM/DISPLAYTO) against the running server."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from imap_ext_client import RawClient
from imap_harness import EnvFactory, ImapEnv

from hato.servers.base import TlsMode

SORT_MESSAGES = [
    # (internal date, message)
    ("03-Jan-2024 00:00:00 +0000",
     'From: "Zed" <zed@x.example>\r\nTo: bob@y.example\r\nCc: dan@z.example\r\n'
     "Subject: Re: beta\r\nDate: Wed, 15 Nov 2023 10:00:00 +0000\r\n\r\nshort\r\n"),
    ("01-Jan-2024 00:00:00 +0000",
     'From: alice@x.example\r\nTo: "Carl" <carl@y.example>\r\nSubject: alpha\r\n'
     "Date: Tue, 14 Nov 2023 23:00:00 -0200\r\n\r\n" + "a much longer body\r\n" * 20),
    ("02-Jan-2024 00:00:00 +0000",
     'From: "bob" <bob@x.example>\r\nTo: amy@y.example\r\nSubject: [list] Beta (fwd)\r\n'
     "\r\nno date header\r\n"),
    ("01-Jan-2023 00:00:00 +0000",
     "From: =?utf-8?q?=C3=81da?= <ada@x.example>\r\nSubject: gamma\r\n"
     "Date: not a date\r\n\r\nbody\r\n"),
    ("04-Jan-2024 00:00:00 +0000",
     "Date: Mon, 13 Nov 2023 08:00:00 +0000\r\n\r\nno from, no subject\r\n"),
]


@pytest.fixture
def client(imap_env: EnvFactory) -> Iterator[tuple[ImapEnv, RawClient]]:
    env = imap_env()
    raw = RawClient(env.ports[TlsMode.NONE])
    # One message delivered and expunged first, so that UIDs (2..) differ from sequence
    # numbers (1..) and UID SORT / UID THREAD can be told apart.
    raw.ok(b"SELECT INBOX")
    raw.ok(b"APPEND INBOX (\\Deleted) \0", literals=(b"Subject: x\r\n\r\nx\r\n",))
    raw.ok(b"EXPUNGE")
    yield env, raw
    raw.close()
    raw.check()


def _append_all(raw: RawClient, messages: list[tuple[str, str]]) -> None:
    for date, text in messages:
        raw.ok(b'APPEND INBOX "' + date.encode() + b'" \0', literals=(text.encode(),))
    raw.ok(b"NOOP")


def _sort(raw: RawClient, program: bytes) -> list[int]:
    lines = raw.ok(program)
    data = [line for line in lines if line.startswith(b"* SORT")]
    assert len(data) == 1, lines
    return [int(n) for n in data[0][6:].split()]


def test_sort_criteria(client: tuple[ImapEnv, RawClient]) -> None:
    _, raw = client
    _append_all(raw, SORT_MESSAGES)
    # RFC 5256 §2.1 base subjects: beta, alpha, Beta, gamma, "" (empty sorts first; ties
    # keep sequence order, also under REVERSE).
    assert _sort(raw, b"SORT (SUBJECT) UTF-8 ALL") == [5, 2, 1, 3, 4]
    assert _sort(raw, b"SORT (REVERSE SUBJECT) UTF-8 ALL") == [4, 1, 3, 2, 5]
    # §2.2 sent date in UTC (message 2 is 01:00 UTC on the 15th); no or bad Date: the
    # internal date.
    assert _sort(raw, b"SORT (DATE) US-ASCII ALL") == [4, 5, 2, 1, 3]
    assert _sort(raw, b"SORT (ARRIVAL) UTF-8 ALL") == [4, 2, 3, 1, 5]
    assert _sort(raw, b"SORT (REVERSE ARRIVAL) UTF-8 ALL") == [5, 1, 3, 2, 4]
    # addr-mailbox of the first address: "", ada, alice, bob, zed
    assert _sort(raw, b"SORT (FROM) UTF-8 ALL") == [5, 4, 2, 3, 1]
    assert _sort(raw, b"SORT (TO) UTF-8 ALL") == [4, 5, 3, 1, 2]
    assert _sort(raw, b"SORT (CC) UTF-8 ALL") == [2, 3, 4, 5, 1]
    # RFC 5957: display names (decoded), else the addr-spec; i;unicode-casemap puts "Á"
    # (A + combining acute) after "alice@..." ("A", then 0xCC > "L").
    assert _sort(raw, b"SORT (DISPLAYFROM) UTF-8 ALL") == [5, 2, 4, 3, 1]
    assert _sort(raw, b"SORT (DISPLAYTO) UTF-8 ALL") == [4, 5, 3, 1, 2]
    sizes = [len(text.encode()) for _, text in SORT_MESSAGES]
    assert _sort(raw, b"SORT (SIZE) UTF-8 ALL") == [
        i + 1 for i in sorted(range(5), key=lambda i: (sizes[i], i))]
    # several criteria: by subject, then (for the two "beta"s) the later sent date first
    assert _sort(raw, b"SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == [5, 2, 3, 1, 4]
    # UID SORT answers UIDs (the first UID was used and expunged); search criteria apply.
    assert _sort(raw, b"UID SORT (SUBJECT) UTF-8 ALL") == [6, 3, 2, 4, 5]
    assert _sort(raw, b'SORT (SUBJECT) UTF-8 FROM "bob"') == [3]
    assert _sort(raw, b"SORT (DATE) UTF-8 SUBJECT nothing-matches") == []


def test_sort_errors_and_modseq(client: tuple[ImapEnv, RawClient]) -> None:
    _, raw = client
    _append_all(raw, SORT_MESSAGES[:2])
    lines = raw.command(b"SORT (DATE) KOI8-R ALL")
    assert lines[-1].endswith(b"NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset\r\n")
    assert raw.command(b"SORT (WEIRD) UTF-8 ALL")[-1].split(b" ")[1] == b"BAD"
    assert raw.command(b"SORT DATE UTF-8 ALL")[-1].split(b" ")[1] == b"BAD"
    assert raw.command(b"SORT (DATE) ALL")[-1].split(b" ")[1] == b"NO"  # ALL is no charset
    # RFC 7162 §3.1.9: with a MODSEQ criterion the SORT response ends with (MODSEQ n).
    lines = raw.ok(b"SORT (REVERSE DATE) UTF-8 MODSEQ 1")
    data = next(line for line in lines if line.startswith(b"* SORT"))
    assert data.startswith(b"* SORT 1 2 (MODSEQ ") and data.endswith(b")\r\n")
    # SORT needs a selected mailbox (RFC 5256 §3).
    raw.ok(b"UNSELECT")
    assert raw.command(b"SORT (DATE) UTF-8 ALL")[-1].split(b" ")[1] == b"BAD"


THREAD_MESSAGES = [
    ("<a@x.example>", "", "topic"),
    ("<b@x.example>", "In-Reply-To: <a@x.example>\r\n", "Re: topic"),
    ("<c@x.example>", "References: <a@x.example> <b@x.example>\r\n", "Re: topic"),
    ("<d@x.example>", "References: <missing@x.example>\r\n", "other"),
    ("<e@x.example>", "References: <missing@x.example>\r\n", "Re: other"),
    ("<f@x.example>", "", "Re: topic"),
    ('<"g"@x.example>', "", "lonely"),  # RFC 5256 §3: the same Message ID as <g@x.example>
    ("<h@x.example>", "References: <g@x.example>\r\n", "Re: lonely"),
]


def _thread_messages() -> list[tuple[str, str]]:
    out = []
    for day, (message_id, refs, subject) in enumerate(THREAD_MESSAGES, 1):
        out.append(("01-Feb-2024 00:00:00 +0000",
                    f"From: t@x.example\r\nMessage-ID: {message_id}\r\n{refs}Subject: {subject}"
                    f"\r\nDate: {day:02d} Mar 2024 12:00:00 +0000\r\n\r\nbody\r\n"))
    return out


def _thread(raw: RawClient, program: bytes) -> bytes:
    lines = raw.ok(program)
    data = [line for line in lines if line.startswith(b"* THREAD")]
    assert len(data) == 1, lines
    return data[0][len(b"* THREAD"):].strip()


def test_thread_references_and_orderedsubject(client: tuple[ImapEnv, RawClient]) -> None:
    _, raw = client
    _append_all(raw, _thread_messages())
    # REFERENCES: 1 <- 2 <- 3 by references; 4 and 5 share a missing parent (a dummy with two
    # children stays at the top: "((4)(5))"); 6 is a reply to "topic" with no references and
    # is merged under 1 by subject (step 5.C); 8 refers to 7 by the unquoted Message ID.
    assert _thread(raw, b"THREAD REFERENCES UTF-8 ALL") == b"(1 (2 3)(6))((4)(5))(7 8)"
    # UID THREAD names UIDs (sequence numbers + 1 here).
    assert _thread(raw, b"UID THREAD REFERENCES UTF-8 ALL") == b"(2 (3 4)(7))((5)(6))(8 9)"
    # ORDEREDSUBJECT: one thread per base subject, the first message the parent of the
    # others; threads in the order of their first message's sent date.
    assert _thread(raw, b"THREAD ORDEREDSUBJECT UTF-8 ALL") == b"(1 (2)(3)(6))(4 5)(7 8)"
    # Only the searched messages take part; no match: an empty THREAD response.
    assert _thread(raw, b"THREAD REFERENCES US-ASCII NOT SUBJECT topic") == b"((4)(5))(7 8)"
    assert _thread(raw, b"THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing") == b""
    assert raw.command(b"THREAD REFS UTF-8 ALL")[-1].split(b" ")[1] == b"BAD"


def _object_ids(raw: RawClient, program: bytes) -> dict[int, tuple[bytes, bytes]]:
    """seq -> (EMAILID, THREADID) from the FETCH responses of ``program``."""
    out: dict[int, tuple[bytes, bytes]] = {}
    for line in raw.ok(program):
        match = re.match(rb"\* (\d+) FETCH \(.*EMAILID \((M\d+)\) THREADID \((T\d+)\)", line)
        if match:
            out[int(match[1])] = (match[2], match[3])
    return out


def test_fetch_threadid(client: tuple[ImapEnv, RawClient]) -> None:
    """RFC 8474 §5.2: THREADID groups messages linked by Message-ID / In-Reply-To /
    References (not by subject: the algorithm is the server's), is kept by COPY, and never
    takes an EMAILID's value."""
    _, raw = client
    _append_all(raw, _thread_messages())
    ids = _object_ids(raw, b"FETCH 1:* (EMAILID THREADID)")
    assert sorted(ids) == list(range(1, 9))
    thread = {seq: t for seq, (_, t) in ids.items()}
    assert thread[1] == thread[2] == thread[3]  # In-Reply-To, References
    assert thread[4] == thread[5]  # the same missing parent
    assert thread[7] == thread[8]  # <"g"@x> is <g@x> (RFC 5256 §3)
    assert len({thread[1], thread[4], thread[6], thread[7]}) == 4  # 6: subject only
    assert {e for e, _ in ids.values()}.isdisjoint(set(thread.values()))
    # RFC 8474 §6: SEARCH THREADID finds the thread's messages; EMAILID one message.
    assert b"* SEARCH 1 2 3\r\n" in raw.ok(b"SEARCH THREADID " + thread[1])
    assert b"* SEARCH 5\r\n" in raw.ok(b"SEARCH EMAILID " + ids[5][0])
    assert b"* SEARCH\r\n" in raw.ok(b"SEARCH THREADID " + ids[5][0])  # an EMAILID value
    # COPY keeps it; so does a later reply filed in another mailbox.
    raw.ok(b"CREATE Kept")
    raw.ok(b"COPY 2 Kept")
    raw.ok(b'APPEND Kept "01-Feb-2024 00:00:00 +0000" \0',
           literals=(b"Message-ID: <i@x>\r\nIn-Reply-To: <d@x.example>\r\n\r\nbody\r\n",))
    raw.ok(b"SELECT Kept")
    kept = _object_ids(raw, b"FETCH 1:* (EMAILID THREADID)")
    assert kept == {1: ids[2], 2: (kept[2][0], thread[4])}
    # UID FETCH answers the same.
    assert b"THREADID (" + thread[4] + b")" in b"".join(raw.ok(b"UID FETCH 2 THREADID"))


def test_mailboxid(client: tuple[ImapEnv, RawClient]) -> None:
    """RFC 8474 §4: CREATE's OK, SELECT/EXAMINE and STATUS report one MAILBOXID; RENAME keeps
    it; a mailbox deleted and created again under the same name gets a new one."""
    _, raw = client
    created = raw.ok(b"CREATE Projects")[-1]
    match = re.search(rb"OK \[MAILBOXID \((F\d+)\)\] CREATE completed", created)
    assert match, created
    first = match[1]
    assert b"* OK [MAILBOXID (" + first + b")] Ok\r\n" in raw.ok(b"EXAMINE Projects")
    raw.ok(b"UNSELECT")
    raw.ok(b"RENAME Projects Archive/Projects")
    status = b"".join(raw.ok(b"STATUS Archive/Projects (MAILBOXID MESSAGES)"))
    assert b"(MAILBOXID (" + first + b") MESSAGES 0)" in status
    raw.ok(b"DELETE Archive/Projects")
    again = raw.ok(b"CREATE Archive/Projects")[-1]
    assert b"MAILBOXID (F" in again and first not in again
    inbox = b"".join(raw.ok(b"STATUS INBOX (MAILBOXID)"))
    assert re.search(rb"\(MAILBOXID \(F\d+\)\)", inbox) and first not in inbox
