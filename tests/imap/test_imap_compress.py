"""COMPRESS=DEFLATE (RFC 4978) with a client that deflates by hand (zlib, raw DEFLATE),
on the plaintext port and under implicit TLS; the inflated server stream is grammar-checked."""

from __future__ import annotations

import zlib

import pytest
from imap_ext_client import RawClient
from imap_harness import EnvFactory

from hato.servers.base import TlsMode


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_compress_deflate_both_ways(imap_env: EnvFactory, tls: bool) -> None:
    env = imap_env()
    body = "".join(f"line {i} of a compressible body\r\n" for i in range(2000))
    env.deliver(env.message("zipped", body))
    port = env.ports[TlsMode.IMPLICIT if tls else TlsMode.NONE]
    raw = RawClient(port, cafile=env.cert_file if tls else None, login=False)
    try:
        # RFC 4978 §5: COMPRESS is a command-auth command.
        assert raw.command(b"COMPRESS DEFLATE")[-1].split(b" ")[1] == b"BAD"
        raw.ok(b'LOGIN alice@example.org "s3cret pass"')
        assert b"COMPRESS=DEFLATE" in raw.ok(b"CAPABILITY")[0]
        assert raw.command(b"COMPRESS LZW")[-1].split(b" ")[1] == b"BAD"
        assert raw.ok(b"COMPRESS DEFLATE")[-1].endswith(b"OK DEFLATE active\r\n")
        # From the byte after the tagged OK both directions are raw DEFLATE.
        raw.start_deflate()
        raw.ok(b"SELECT INBOX")
        lines = raw.ok(b"FETCH 1 (BODY.PEEK[TEXT])")
        assert body.encode() in lines[0]
        # RFC 4978 §3: a second COMPRESS is BAD; the capability is no longer offered.
        assert raw.command(b"COMPRESS DEFLATE")[-1].split(b" ")[1] == b"BAD"
        assert b"COMPRESS=DEFLATE" not in raw.ok(b"CAPABILITY")[0]
        # Pipelined commands in one compressed write.
        tag1, tag2 = raw.next_tag(), raw.next_tag()
        raw.send(tag1 + b" NOOP\r\n" + tag2 + b" UID FETCH 1 (FLAGS)\r\n")
        assert raw.until(tag2)[-1].startswith(tag2 + b" OK")
    finally:
        raw.close()
    raw.check()


def test_inflated_input_stays_bounded(imap_env: EnvFactory) -> None:
    """Security: a few kilobytes that inflate to megabytes without a line end are refused
    like any overlong line; the connection stays usable."""
    env = imap_env()
    raw = RawClient(env.ports[TlsMode.NONE])
    try:
        raw.ok(b"COMPRESS DEFLATE")
        raw.start_deflate()
        flood = b"a" * (4 * 1024 * 1024)
        assert len(zlib.compress(flood)) < 64 * 1024  # what goes over the wire is small
        raw.send(flood)
        assert raw.line().endswith(b" BAD command line too long\r\n")
        raw.send(b"\r\n")
        assert raw.ok(b"NOOP")[-1].endswith(b"OK NOOP completed\r\n")
    finally:
        raw.close()
    raw.check()
