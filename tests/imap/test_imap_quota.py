"""QUOTA (RFC 9208) and the OVERQUOTA response code on APPEND, COPY and MOVE."""

from __future__ import annotations

from imap_ext_client import RawClient
from imap_harness import ALICE, EnvFactory

from hato.servers.base import TlsMode


def test_quota_commands_and_overquota(imap_env: EnvFactory) -> None:
    env = imap_env()
    first = env.message("first", "x" * 1500 + "\r\n")
    env.deliver(first)
    raw = RawClient(env.ports[TlsMode.NONE])
    try:
        capabilities = raw.ok(b"CAPABILITY")[0].split()
        # RFC 9208 §5: every resource handled is advertised; no QUOTASET (SETQUOTA refused).
        assert b"QUOTA=RES-STORAGE" in capabilities
        # RFC 9208 §5.2: no MESSAGE limit exists, so RES-MESSAGE is not advertised
        assert b"QUOTA=RES-MESSAGE" not in capabilities
        assert b"QUOTASET" not in capabilities
        # No limit: the root is there, with no resources listed (§4.2.1: not limited).
        lines = raw.ok(b"GETQUOTAROOT INBOX")
        assert lines[:2] == [b'* QUOTAROOT INBOX ""\r\n', b'* QUOTA "" ()\r\n']
        # §4.1.2: the mailbox need not exist.
        assert raw.ok(b"GETQUOTAROOT Later/Maybe")[0] == b'* QUOTAROOT Later/Maybe ""\r\n'
        env.call(env.store.set_quota(ALICE, 4000))
        # STORAGE in units of 1024 octets: the usage and the limit, both rounded up.
        used = -(-len(first) // 1024)
        assert raw.ok(b'GETQUOTA ""')[0] == b'* QUOTA "" (STORAGE %d 4)\r\n' % used
        lines = raw.command(b"GETQUOTA nosuchroot")
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[NONEXISTENT]"]
        lines = raw.command(b'SETQUOTA "" (STORAGE 99999)')
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[NOPERM]"]
        assert raw.ok(b'GETQUOTA ""')[0] == b'* QUOTA "" (STORAGE %d 4)\r\n' % used
        # §4.3.1: OVERQUOTA in the tagged NO of an APPEND that would go over the limit.
        big = env.message("big", "y" * 3000 + "\r\n")
        lines = raw.command(b"APPEND INBOX \0", literals=(big,))
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[OVERQUOTA]"]
        raw.ok(b"SELECT INBOX")
        raw.ok(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        # DELETED and DELETED-STORAGE (§4.1.4, required with RES-MESSAGE / RES-STORAGE).
        assert raw.ok(b"STATUS INBOX (DELETED DELETED-STORAGE)")[0] == \
            b"* STATUS INBOX (DELETED 1 DELETED-STORAGE %d)\r\n" % used
        raw.ok(b"COPY 1 Archive")  # two copies fit in 4000 octets, three do not
        lines = raw.command(b"COPY 1 Archive")
        assert lines[-1].split(b" ")[1:3] == [b"NO", b"[OVERQUOTA]"]
        lines = raw.command(b"MOVE 1 Archive")  # a move adds nothing: allowed
        assert lines[-1].split(b" ")[1] == b"OK"
        both = -(-2 * len(first) // 1024)
        assert raw.ok(b'GETQUOTA ""')[0] == b'* QUOTA "" (STORAGE %d 4)\r\n' % both
        # GETQUOTA and GETQUOTAROOT need authentication (RFC 9208 §4.1: command-auth).
        anonymous = RawClient(env.ports[TlsMode.NONE], login=False)
        assert anonymous.command(b'GETQUOTA ""')[-1].split(b" ")[1] == b"BAD"
        anonymous.close()
        anonymous.check()
    finally:
        raw.close()
    raw.check()
