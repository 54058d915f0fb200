"""A raw IMAP client for the extension tests: commands as bytes, responses as whole lines
(literals included), optional DEFLATE (RFC 4978) under which every byte is compressed, and
a transcript of everything the server sent (after decompression) for the grammar checker."""

from __future__ import annotations

import re
import socket
import ssl
import zlib
from pathlib import Path

from imap_harness import ALICE, PASSWORD

from hato.codec.imap.grammar import check_stream

_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n$")


class RawClient:
    def __init__(self, port: int, *, cafile: Path | None = None, login: bool = True) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if cafile is not None:
            context = ssl.create_default_context(cafile=str(cafile))
            sock = context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.transcript = bytearray()
        self._buffer = b""
        self._tag = 0
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None
        self.greeting = self.line()
        if login:
            self.ok(b'LOGIN ' + ALICE.encode() + b' "' + PASSWORD.encode() + b'"')

    # -- bytes ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        if self._inflate is not None:
            chunk = self._inflate.decompress(chunk)
        self._buffer += chunk

    def line(self) -> bytes:
        """One response line, with any literals it announces (and the lines after them)."""
        out = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._fill()
            end = self._buffer.index(b"\r\n") + 2
            piece, self._buffer = self._buffer[:end], self._buffer[end:]
            out += piece
            match = _LITERAL.search(piece)
            if match is None:
                self.transcript += out
                return out
            size = int(match.group(1))
            while len(self._buffer) < size:
                self._fill()
            out += self._buffer[:size]
            self._buffer = self._buffer[size:]

    # -- commands ------------------------------------------------------------------------------
    def next_tag(self) -> bytes:
        self._tag += 1
        return b"t%d" % self._tag

    def command(self, text: bytes, *, literals: tuple[bytes, ...] = ()) -> list[bytes]:
        """Send ``tag text`` and return every response up to and including the tagged one.
        Each NUL in ``text`` is replaced by the next of ``literals`` as a non-synchronizing
        literal (``{n+}``, RFC 7888; write "~" before the NUL for a literal8)."""
        tag = self.next_tag()
        parts = text.split(b"\x00")
        assert len(parts) == len(literals) + 1
        data = tag + b" " + parts[0]
        for literal, rest in zip(literals, parts[1:], strict=True):
            data += b"{%d+}\r\n" % len(literal) + literal + rest
        self.send(data + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def ok(self, text: bytes, *, literals: tuple[bytes, ...] = ()) -> list[bytes]:
        lines = self.command(text, literals=literals)
        assert lines[-1].split(b" ")[1] == b"OK", lines
        return lines

    def start_deflate(self) -> None:
        """After the tagged OK of COMPRESS DEFLATE (RFC 4978 §3)."""
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        inflate = zlib.decompressobj(-15)
        self._buffer = inflate.decompress(self._buffer) if self._buffer else b""
        self._inflate = inflate

    def check(self, *, utf8: bool = False) -> None:
        check_stream(bytes(self.transcript), utf8=utf8)

    def close(self) -> None:
        try:
            self.send(b"zz LOGOUT\r\n")
            self.until(b"zz")
        except (OSError, ConnectionError):
            pass
        self.sock.close()


def untagged(lines: list[bytes], word: bytes) -> list[bytes]:
    """The untagged responses ``* [n] WORD ...`` among ``lines`` (without CRLF)."""
    out = []
    for line in lines:
        parts = line.rstrip(b"\r\n").split(b" ")
        if parts[0] == b"*" and (word in parts[1:3]):
            out.append(line.rstrip(b"\r\n"))
    return out
