"""CATENATE (RFC 4469): APPEND built from TEXT literals and IMAP URLs (RFC 5092) of messages
in the same account, and the BADURL / TOOBIG refusals."""

from __future__ import annotations

import re

from imap_ext_client import RawClient
from imap_harness import EnvFactory

from hato.servers.base import TlsMode

ORIGINAL = (
    b"From: ann@example.net\r\nSubject: original\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nfirst part\r\n--b\r\n"
    b"Content-Type: application/octet-stream\r\n\r\nsecond part\r\n--b--\r\n"
)


def _uid(lines: list[bytes]) -> int:
    match = re.search(rb"\[APPENDUID \d+ (\d+)\]", lines[-1])
    assert match is not None, lines
    return int(match.group(1))


def _body(raw: RawClient, uid: int) -> bytes:
    raw.ok(b"EXAMINE INBOX")
    lines = raw.ok(b"UID FETCH %d (BODY.PEEK[])" % uid)
    head, _, rest = lines[0].partition(b"}\r\n")
    size = int(head.rsplit(b"{", 1)[1])
    return rest[:size]


def test_catenate_text_and_urls(imap_env: EnvFactory) -> None:
    env = imap_env(append_limit=4000)
    source = env.deliver(ORIGINAL, mailbox="Drafts")
    drafts = env.uidvalidity("Drafts")
    raw = RawClient(env.ports[TlsMode.NONE])
    try:
        assert b"CATENATE" in raw.ok(b"CAPABILITY")[0]
        url = b"/Drafts;UIDVALIDITY=%d/;UID=%d" % (drafts, source)
        lines = raw.ok(
            b'APPEND INBOX (\\Seen) CATENATE (URL "' + url + b'/;SECTION=HEADER" TEXT \0 URL "'
            + url + b'/;SECTION=1.MIME" URL "' + url + b'/;SECTION=1" TEXT \0)',
            literals=(b'--x\r\n', b"\r\n--x--\r\n"))
        built = _body(raw, _uid(lines))
        # The parts in order: HEADER (incl. the blank line), the text, part 1's MIME header
        # and body, the closing text (RFC 4469 §3; sections as BODY[section], RFC 9051).
        assert built == (ORIGINAL[: ORIGINAL.index(b"\r\n\r\n") + 4] + b"--x\r\n"
                         + b"Content-Type: text/plain\r\n\r\n" + b"first part" + b"\r\n--x--\r\n")
        # Whole message, a partial range (RFC 5550), a full imap:// URL on this host, and a
        # relative URL against the selected mailbox.
        whole = _uid(raw.ok(b'APPEND INBOX CATENATE (URL "' + url + b'")'))
        assert _body(raw, whole) == ORIGINAL
        part = _uid(raw.ok(b'APPEND INBOX CATENATE (URL "' + url + b'/;PARTIAL=6.15" TEXT \0)',
                           literals=(b"\r\n\r\nbody\r\n",)))
        assert _body(raw, part) == ORIGINAL[6:21] + b"\r\n\r\nbody\r\n"
        full = b"imap://alice@imap.example.org/Drafts;UIDVALIDITY=%d/;UID=%d" % (drafts, source)
        assert _body(raw, _uid(raw.ok(b'APPEND INBOX CATENATE (URL "' + full + b'")'))) \
            == ORIGINAL
        raw.ok(b"EXAMINE Drafts")
        relative = b";UID=%d/;SECTION=2" % source
        copy = _uid(raw.ok(b'APPEND INBOX CATENATE (TEXT \0 URL "' + relative + b'")',
                           literals=(b"Subject: part two\r\n\r\n",)))
        assert _body(raw, copy) == b"Subject: part two\r\n\r\nsecond part"
        # URL parts are read like BODY.PEEK: the source is still unseen.
        raw.ok(b"EXAMINE Drafts")
        flags = raw.ok(b"UID FETCH %d (FLAGS)" % source)[0]
        assert b"\\Seen" not in flags
    finally:
        raw.close()
    raw.check()


def test_catenate_refusals(imap_env: EnvFactory) -> None:
    env = imap_env(append_limit=4000)
    source = env.deliver(ORIGINAL)
    inbox = env.uidvalidity()
    raw = RawClient(env.ports[TlsMode.NONE])
    try:
        bad_urls = [
            b"/INBOX;UIDVALIDITY=%d/;UID=%d" % (inbox + 1, source),  # another UIDVALIDITY
            b"/INBOX/;UID=%d" % (source + 5),  # no such message
            b"/Nowhere/;UID=%d" % source,  # no such mailbox
            b"/INBOX/;UID=%d/;SECTION=7" % source,  # no such part
            b"imap://elsewhere.example/INBOX/;UID=%d" % source,  # another server
            b"imap://bob@imap.example.org/INBOX/;UID=%d" % source,  # another user
            b";UID=%d/;SECTION=1" % source,  # relative, but nothing is selected
            b"http://example.org/",  # not an IMAP URL
        ]
        for url in bad_urls:
            lines = raw.command(b'APPEND INBOX CATENATE (TEXT \0 URL "' + url + b'")',
                                literals=(b"Subject: x\r\n\r\n",))
            # RFC 4469 §5: NO [BADURL url]
            assert lines[-1].split(b" ", 2)[1:] == [b"NO", b"[BADURL " + url + b"] invalid or "
                                                    b"unknown URL\r\n"], (url, lines)
        # RFC 4469 §5 / RFC 7889: over the APPEND limit when assembled: TOOBIG.
        url = b"/INBOX/;UID=%d" % source
        lines = raw.command(b'APPEND INBOX CATENATE (' + b" ".join(
            [b'URL "' + url + b'"'] * 20) + b")")
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[TOOBIG]"]
        # Syntax: an unknown part, literal8 in TEXT, an empty list.
        assert raw.command(b'APPEND INBOX CATENATE (FILE "x")')[-1].split(b" ")[1] == b"BAD"
        assert raw.command(b"APPEND INBOX CATENATE (TEXT ~\0)",
                           literals=(b"a\0b",))[-1].split(b" ")[1] == b"BAD"
        assert raw.command(b"APPEND INBOX CATENATE ()")[-1].split(b" ")[1] == b"BAD"
        # Nothing was appended by any of these.
        assert raw.ok(b"STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 1)\r\n"
    finally:
        raw.close()
    raw.check()
