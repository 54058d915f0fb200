"""hato.servers.connection.Connection over a recording transport: flow control, waiting for
input without losing a wake-up, timeouts, stop, stalled writes and the STARTTLS order."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from hato.codec.pop3 import LineReader
from hato.servers.connection import Connection


class Recorder(asyncio.Transport):
    """A transport that records what the protocol does to it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append(("write", bytes(data)))

    def pause_reading(self) -> None:
        self.reading = False
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.events.append("resume")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", 49152) if name == "peername" else default


def _open(**kwargs: Any) -> tuple[Connection[LineReader], Recorder]:
    opened: list[object] = []
    conn = Connection(LineReader(), opened.append, write_timeout=0.2, **kwargs)
    transport = Recorder()
    conn.connection_made(transport)
    assert opened == [conn] and conn.remote_ip == "192.0.2.7"
    return conn, transport


def _line(reader: LineReader) -> bytes | None:
    return reader.next_line(1000)


def test_reading_pauses_when_input_piles_up_and_resumes_when_taken() -> None:
    async def main() -> None:
        conn, transport = _open(read_high=64)
        conn.data_received(b"x" * 60 + b"\r\n")
        assert transport.reading
        conn.data_received(b"y" * 10 + b"\r\n")  # 74 octets waiting: over the mark
        assert not transport.reading
        assert await conn.read(_line, 1) == b"x" * 60
        assert transport.reading  # 12 left: under half the mark
        assert await conn.read(_line, 1) == b"y" * 10

    asyncio.run(main())


def test_input_that_arrives_while_waiting_or_busy_is_seen() -> None:
    async def main() -> None:
        conn, _ = _open()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, conn.data_received, b"NO")
        loop.call_later(0.1, conn.data_received, b"OP\r\nSTAT\r\n")
        assert await conn.read(_line, 5) == b"NOOP"
        assert await conn.read(_line, 5) == b"STAT"  # already buffered: no wait
        task = asyncio.ensure_future(conn.read(_line, 5))
        await asyncio.sleep(0)
        conn.data_received(b"QUIT\r\n")
        assert await asyncio.wait_for(task, 1) == b"QUIT"

    asyncio.run(main())


def test_timeout_eof_and_stop_end_a_read() -> None:
    async def main() -> None:
        conn, _ = _open()
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await conn.read(_line, 0.1) is None and not conn.closed and not conn.stopping
        assert loop.time() - started >= 0.09
        loop.call_later(0.02, conn.wake)
        assert await conn.read(_line, 5) is None and conn.stopping
        conn2, _ = _open()
        conn2.data_received(b"LAST\r\n")
        conn2.eof_received()
        assert await conn2.read(_line, 5) == b"LAST"  # what came before EOF is still read
        assert await conn2.read(_line, 5) is None and conn2.closed

    asyncio.run(main())


def test_a_peer_that_stops_reading_is_aborted() -> None:
    async def main() -> None:
        conn, transport = _open()
        conn.pause_writing()
        with pytest.raises(TimeoutError):
            await conn.write(b"+OK\r\n")
        conn.close()
        assert transport.events == [("write", b"+OK\r\n"), "abort"]
        conn.connection_lost(None)
        with pytest.raises(ConnectionResetError):
            await conn.write(b"more")

    asyncio.run(main())


def test_starttls_stops_reading_before_the_go_ahead_and_drops_cleartext() -> None:
    """RFC 2595 §4: nothing sent before the handshake counts after it, and the ClientHello
    that follows the go-ahead stays in the socket for the TLS layer."""

    async def main() -> None:
        conn, transport = _open()
        conn.data_received(b"USER injected\r\n")
        upgraded = Recorder()

        async def start_tls(old: asyncio.Transport, protocol: Any, *_: Any, **__: Any) -> Any:
            assert old is transport and protocol is conn
            assert conn.buffer.pending == 0
            return upgraded

        loop = asyncio.get_running_loop()
        loop.start_tls = start_tls  # type: ignore[method-assign, assignment]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        dropped = await conn.start_tls(context, reply=b"+OK Begin TLS\r\n", timeout=5)
        assert dropped == len(b"USER injected\r\n")
        assert transport.events == ["pause", ("write", b"+OK Begin TLS\r\n")]
        assert conn.transport is upgraded

    asyncio.run(main())
