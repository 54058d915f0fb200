"""\\Recent (RFC 3501 §2.3.2): the first session to learn of a message holds \\Recent for it;
RECENT counts in SELECT, after new mail and in STATUS; the RECENT, NEW and OLD search keys."""

from __future__ import annotations

from imap_ext_client import RawClient, untagged
from imap_harness import EnvFactory

from hato.servers.base import TlsMode


def test_recent_belongs_to_the_first_session(imap_env: EnvFactory) -> None:
    env = imap_env()
    env.deliver(env.message("r1"))
    env.deliver(env.message("r2"))
    port = env.ports[TlsMode.NONE]
    first, second, examiner, outsider, modern = (RawClient(port) for _ in range(5))
    try:
        lines = first.ok(b"SELECT INBOX")
        assert b"* 2 RECENT\r\n" in lines  # RFC 3501 §7.3.2
        assert first.ok(b"FETCH 1:* (FLAGS)")[:2] == [
            b"* 1 FETCH (FLAGS (\\Recent))\r\n", b"* 2 FETCH (FLAGS (\\Recent))\r\n"]
        assert first.ok(b"SEARCH RECENT")[0] == b"* SEARCH 1 2\r\n"
        first.ok(b"FETCH 1 (BODY[TEXT])")  # sets \Seen: NEW is RECENT UNSEEN
        assert first.ok(b"SEARCH NEW")[0] == b"* SEARCH 2\r\n"
        assert first.ok(b"SEARCH OLD")[0] == b"* SEARCH\r\n"
        # A later session does not see \Recent for them (the first was read-write).
        assert b"* 0 RECENT\r\n" in second.ok(b"SELECT INBOX")
        assert second.ok(b"SEARCH OLD")[0] == b"* SEARCH 1 2\r\n"
        assert second.ok(b"FETCH 2 (FLAGS)")[0] == b"* 2 FETCH (FLAGS ())\r\n"
        # New mail: EXAMINE sees it as recent but does not take it away (RFC 3501 §6.3.2) ...
        env.deliver(env.message("r3"))
        assert outsider.ok(b"STATUS INBOX (RECENT MESSAGES)")[0] == \
            b"* STATUS INBOX (RECENT 1 MESSAGES 3)\r\n"
        assert b"* 1 RECENT\r\n" in examiner.ok(b"EXAMINE INBOX")
        # ... so the next read-write session told about it gets it, with EXISTS.
        lines = second.ok(b"NOOP")
        assert lines[:2] == [b"* 3 EXISTS\r\n", b"* 1 RECENT\r\n"]
        assert second.ok(b"SEARCH RECENT")[0] == b"* SEARCH 3\r\n"
        lines = first.ok(b"NOOP")
        assert lines[:2] == [b"* 3 EXISTS\r\n", b"* 2 RECENT\r\n"]  # still its own two
        assert first.ok(b"SEARCH RECENT")[0] == b"* SEARCH 1 2\r\n"
        assert outsider.ok(b"STATUS INBOX (RECENT)")[0] == b"* STATUS INBOX (RECENT 0)\r\n"
        # Expunging a recent message lowers this session's count.
        first.ok(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        first.ok(b"EXPUNGE")
        assert first.ok(b"SEARCH RECENT")[0] == b"* SEARCH 1\r\n"
        # IMAP4rev2 has no \Recent (RFC 9051): no RECENT response, no \Recent flag.
        env.deliver(env.message("r4"))
        modern.ok(b"ENABLE IMAP4rev2")
        lines = modern.ok(b"SELECT INBOX")
        assert not untagged(lines, b"RECENT")
        assert b"\\Recent" not in b"".join(modern.ok(b"FETCH 1:* (FLAGS)"))
        # The rev2 session claimed r4: the others are told about it without \Recent.
        assert second.ok(b"NOOP")[:3] == [
            b"* 2 EXPUNGE\r\n", b"* 3 EXISTS\r\n", b"* 1 RECENT\r\n"]
    finally:
        for client in (first, second, examiner, outsider, modern):
            client.close()
    for client in (first, second, examiner, outsider, modern):
        client.check()
