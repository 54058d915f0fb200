"""The I/O of one outbound SMTP connection: an ``asyncio.Protocol`` feeding the reply parser.

Bytes from the server go straight to ``hato.codec.smtp_client.ReplyParser`` as they arrive
(no StreamReader, no Task per read); ``SmtpClient`` (``client``) takes complete replies and
waits only when the one it needs has not come yet, within the reply timeouts of RFC 5321
§4.5.3.2 kept by one watchdog timer per connection. Write flow control follows the
transport's high-water mark (``pause_writing``/``resume_writing``).

Leaves out: the SMTP dialogue itself (``client``), TLS decisions (``tlspolicy``).

Security: reply size is bounded by the parser; a malformed reply aborts the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from hato.codec import smtp_client as sc
from hato.core.errors import ProtocolError


class Channel(asyncio.Protocol):
    """The connection's I/O: bytes in go straight to the reply parser, and a reader waits
    only when the reply it needs has not arrived yet: one future per wait, no Task per
    command, and one watchdog timer per connection for the reply timeouts (a wait moves its
    deadline; the timer, when it fires early, re-arms itself for the current deadline)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = sc.ReplyParser()
        self.replies: deque[sc.ServerReply] = deque()
        self.failure: ProtocolError | None = None
        self.eof = False
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0  # loop time by which the awaited reply must have come
        self._watchdog: asyncio.TimerHandle | None = None
        self._drain: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self.parser.feed(data)
            self.replies.extend(self.parser.replies())
        except ProtocolError as exc:  # a hostile or broken server: the session is over
            self.failure = exc
            if self.transport is not None:
                self.transport.abort()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.paused = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._wake()
        for future in (self._drain, self._lost):
            if future is not None and not future.done():
                future.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by SmtpClient --------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise OSError("connection closed")
        transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait while the transport's buffer is above its high-water mark."""
        while self.paused:
            self._drain = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self._drain, timeout)
        if self.eof:
            raise OSError("connection closed")

    async def reply(self, timeout: float) -> sc.ServerReply:
        """The next reply, waiting up to ``timeout`` seconds for it to arrive."""
        replies = self.replies
        while not replies:
            if self.failure is not None:
                raise ProtocolError(self.failure.detail)
            if self.eof:
                raise OSError("connection closed by the server")
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            self._deadline = deadline = loop.time() + timeout
            watchdog = self._watchdog
            if watchdog is None or watchdog.when() > deadline:
                if watchdog is not None:
                    watchdog.cancel()
                self._watchdog = loop.call_at(deadline, self._check_deadline)
            try:
                await waiter
            finally:
                self._waiter = None
        return replies.popleft()

    def _check_deadline(self) -> None:
        self._watchdog = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing awaited: the next wait arms a timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._watchdog = loop.call_at(self._deadline, self._check_deadline)

    def restart(self, transport: asyncio.Transport) -> None:
        """After STARTTLS: the TLS transport, and nothing kept from the plaintext phase
        (RFC 3207 §4.2: replies pipelined before TLS are discarded)."""
        self.transport = transport
        self.parser = sc.ReplyParser()
        self.replies.clear()

    async def close(self) -> None:
        transport = self.transport
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if transport is None:
            return
        transport.close()
        if self._lost is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), 5.0)
