"""UTF8=ACCEPT (RFC 6855): UTF-8 mailbox names in quoted strings, UTF8 APPEND data, and the
rules for legacy sessions."""

from __future__ import annotations

from imap_ext_client import RawClient
from imap_harness import EnvFactory

from hato.servers.base import TlsMode

NAME = "Entwürfe/日本"
HEADER_8BIT = "From: Jörg <jorg@example.net>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()


def test_utf8_accept_mailbox_names_and_search(imap_env: EnvFactory) -> None:
    env = imap_env()
    utf8 = RawClient(env.ports[TlsMode.NONE])
    legacy = RawClient(env.ports[TlsMode.NONE])
    try:
        assert b"UTF8=ACCEPT" in utf8.ok(b"CAPABILITY")[0]
        assert utf8.ok(b"ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT\r\n"
        quoted = b'"' + NAME.encode() + b'"'
        utf8.ok(b"CREATE " + quoted)
        # RFC 6855 §3: UTF-8 in quoted strings to a client that enabled it ...
        listing = utf8.ok(b'LIST "" "Entw*"')
        assert b'* LIST (\\HasNoChildren) "/" ' + quoted + b"\r\n" in listing
        # ... and modified UTF-7 (RFC 3501 §5.1.3) to one that did not.
        listing = legacy.ok(b'LIST "" "Entw*"')
        assert b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe/&ZeVnLA-\r\n' in listing
        assert b"* 0 EXISTS\r\n" in utf8.ok(b"SELECT " + quoted)
        assert utf8.ok(b"STATUS " + quoted + b" (MESSAGES)")[0] == \
            b"* STATUS " + quoted + b" (MESSAGES 0)\r\n"
        # RFC 6855 §3: no modified UTF-7 decoding after ENABLE: "&" is just a character.
        utf8.ok(b'CREATE "R&D"')
        assert b'* LIST (\\HasNoChildren) "/" R&D\r\n' in utf8.ok(b'LIST "" "R*"')
        # Controls (incl. C1) and U+2028 are refused in names.
        for bad in ("a\u0085b", "a\u2028b"):
            lines = utf8.command(b'CREATE "' + bad.encode() + b'"')
            assert lines[-1].split(b" ")[1:3] == [b"NO", b"[CANNOT]"]
        # RFC 6855 §3: SEARCH with a CHARSET after ENABLE UTF8=ACCEPT is BAD; UTF-8 strings
        # need no charset.
        utf8.ok(b"APPEND INBOX UTF8 (~\0)", literals=(HEADER_8BIT,))
        utf8.ok(b"SELECT INBOX")
        assert utf8.command(b"SEARCH CHARSET UTF-8 ALL")[-1].split(b" ")[1] == b"BAD"
        assert utf8.ok('SEARCH SUBJECT "Grüße"'.encode())[0] == b"* SEARCH 1\r\n"
        legacy.ok(b"EXAMINE INBOX")
        assert legacy.ok(b"SEARCH CHARSET UTF-8 ALL")[0] == b"* SEARCH 1\r\n"
    finally:
        utf8.close()
        legacy.close()
    utf8.check(utf8=True)
    legacy.check()


def test_utf8_append_data(imap_env: EnvFactory) -> None:
    env = imap_env()
    legacy = RawClient(env.ports[TlsMode.NONE])
    rev2 = RawClient(env.ports[TlsMode.NONE])
    utf8 = RawClient(env.ports[TlsMode.NONE])
    try:
        # RFC 6855 §4: without ENABLE UTF8=ACCEPT, 8-bit header fields in APPEND: NO.
        lines = legacy.command(b"APPEND INBOX \0", literals=(HEADER_8BIT,))
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[CANNOT]"]
        lines = legacy.command(b"APPEND INBOX UTF8 (~\0)", literals=(HEADER_8BIT,))
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[CANNOT]"]
        # 8-bit in the body only is fine (RFC 9051 §4.3.1 8-bit text).
        legacy.ok(b"APPEND INBOX \0", literals=(b"Subject: plain\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",))
        # IMAP4rev2 allows 8-bit message data (RFC 9051 §6.3.12).
        rev2.ok(b"ENABLE IMAP4rev2")
        rev2.ok(b"APPEND INBOX \0", literals=(HEADER_8BIT,))
        # With UTF8=ACCEPT: the UTF8 (literal8) form, also as a CATENATE part (RFC 6855 §4).
        utf8.ok(b"ENABLE UTF8=ACCEPT")
        utf8.ok(b"APPEND INBOX UTF8 (~\0)", literals=(HEADER_8BIT,))
        utf8.ok(b"APPEND INBOX CATENATE (UTF8 (~\0) TEXT \0)",
                literals=(HEADER_8BIT, b"-- end\r\n"))
        assert utf8.command(b"APPEND INBOX UTF8 (\0)", literals=(HEADER_8BIT,))[-1] \
            .split(b" ")[1] == b"BAD"  # RFC 6855 §4: utf8-literal takes a literal8
        assert utf8.ok(b"STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 4)\r\n"
        utf8.ok(b"EXAMINE INBOX")
        last = utf8.ok(b"FETCH 4 (BODY.PEEK[])")[0]
        assert HEADER_8BIT + b"-- end\r\n" in last
    finally:
        for client in (legacy, rev2, utf8):
            client.close()
    legacy.check()
    rev2.check()
    utf8.check(utf8=True)
