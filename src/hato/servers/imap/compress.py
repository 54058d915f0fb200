"""COMPRESS=DEFLATE: raw DEFLATE on both directions of an IMAP connection.

Implements RFC 4978 §3: COMPRESS DEFLATE in the authenticated and selected states; the
server compresses starting right after the CRLF of the tagged OK and expects compressed
commands from then on (raw DEFLATE, RFC 1951, i.e. zlib with wbits -15, §4); BAD for an unknown
algorithm or when compression is already active. Compression sits above TLS (§3: "first
COMPRESS, then SASL, and finally TLS"), so it also works after STARTTLS or on port 993. Each
flush of server output ends with a sync flush (Z_SYNC_FLUSH) so the client can decode every
response as soon as it arrives.

Left out: NO [COMPRESSIONACTIVE] (Hato's TLS never compresses: Python's ssl disables TLS
compression); Z_FULL_FLUSH around large literals (RFC 4978 §4 is informative).

Security: decompression is bounded: each read hands the framer at most ``MAX_INFLATE``
octets and keeps the rest of the compressed input for the next read, so a small "zip bomb"
cannot make the server allocate more than one chunk at a time (the framer's line and literal
limits then apply to the inflated bytes as to plain ones).
"""

from __future__ import annotations

import ssl
import zlib

from hato.codec.imap.commands import Command, Compress
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.session import Session, Stream

MAX_INFLATE = 65536  # inflated octets returned per read
LEVEL = 6  # zlib's default trade-off (RFC 4978 §3: each side picks its own rate)


class DeflateStream:
    """A ``session.Stream`` that deflates what it writes and inflates what it reads."""

    def __init__(self, inner: Stream, *, pending: bytes = b"") -> None:
        self._inner = inner
        self._deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)  # raw DEFLATE, RFC 4978 §4
        self._inflate = zlib.decompressobj(-15)
        self._backlog = pending  # compressed bytes not yet inflated

    async def read(self) -> bytes:
        while True:
            if not self._backlog:
                data = await self._inner.read()
                if not data:
                    return b""
                self._backlog = data
            try:
                plain = self._inflate.decompress(self._backlog, MAX_INFLATE)
            except zlib.error:
                raise ConnectionError("invalid DEFLATE data from the client") from None
            self._backlog = self._inflate.unconsumed_tail
            if self._inflate.eof:
                # The client ended its DEFLATE stream: nothing may follow (RFC 4978 §3).
                raise ConnectionError("the client ended its DEFLATE stream")
            if plain:
                return plain

    def write(self, data: bytes) -> None:
        self._inner.write(self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH))

    async def drain(self) -> None:
        await self._inner.drain()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        # STARTTLS is only allowed before authentication, COMPRESS only after it.
        raise ConnectionError("STARTTLS after COMPRESS")


async def cmd_compress(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Compress)
    if command.args.algorithm != "DEFLATE":
        raise CommandFailed("unknown compression algorithm", bad=True)  # RFC 4978 §3
    if session.compressed:
        raise CommandFailed("compression is already active", bad=True)  # RFC 4978 §3

    async def start() -> None:
        # RFC 4978 §3: compression starts right after the CRLF of the tagged OK. Bytes the
        # client sent after COMPRESS (it must wait for the OK) are already compressed.
        leftover = session.framer.take_buffered()
        session.stream = DeflateStream(session.stream, pending=leftover)
        session.compressed = True

    return Outcome("DEFLATE active", after=start)
