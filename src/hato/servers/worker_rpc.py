"""The channel between Hato's main process and its SMTP worker processes.

One Unix stream socket pair per worker carries length-prefixed frames (4 octets, big-endian,
then a pickle) both ways: *calls* ``(id, name, args, kwargs, extra)`` answered by
*results* ``(id, ok, value)``, and *notices* (id 0: no answer). ``FrameDecoder`` is the
sans-IO half; ``Channel`` is the asyncio protocol around it, used the same way on both ends:
``await channel.call(...)`` from one side runs ``handler(name, args, kwargs, extra)`` on the
other. Exceptions travel as their class, ``args`` and attributes (``encode_error``), so a
``QuotaExceeded`` raised by the store in the main process is a ``QuotaExceeded`` in the worker
(pickling an exception calls its constructor with ``args`` only, which keyword-only fields
such as ``QuotaExceeded.limit`` would not survive).

Leaves out: authentication of the peer: both ends of each pair are created by the main
process before the worker starts (``socket.socketpair``), and nobody else can reach them.

Security: frames come only from our own processes (a socket pair, not a path in the file
system), which is what makes pickle acceptable here; a frame larger than ``MAX_FRAME`` closes
the channel instead of being buffered.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import struct
from collections.abc import Awaitable, Callable
from typing import Any

MAX_FRAME = 64 << 20  # a journalled body plus its envelope fits many times over
_HEADER = struct.Struct(">I")

Handler = Callable[[str, tuple[Any, ...], dict[str, Any], Any], Awaitable[Any]]


class ChannelClosed(ConnectionError):
    """The other process is gone (or closed the channel)."""


def encode_frame(message: object) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into decoded frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        out: list[Any] = []
        pos = 0
        while len(buffer) - pos >= 4:
            (size,) = _HEADER.unpack_from(buffer, pos)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} octets exceeds {MAX_FRAME}")
            if len(buffer) - pos - 4 < size:
                break
            out.append(pickle.loads(memoryview(buffer)[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buffer[:pos]
        return out


def encode_error(exc: BaseException) -> tuple[type[BaseException], tuple[Any, ...], dict[str, Any]]:
    """An exception as (class, args, attributes): rebuilt by ``decode_error`` without calling
    its constructor."""
    return type(exc), exc.args, dict(getattr(exc, "__dict__", {}))


def decode_error(
    value: tuple[type[BaseException], tuple[Any, ...], dict[str, Any]],
) -> BaseException:
    cls, args, attrs = value
    exc = cls.__new__(cls)
    BaseException.__init__(exc, *args)
    exc.__dict__.update(attrs)
    return exc


class Channel(asyncio.Protocol):
    """One end of a worker channel (see the module docstring)."""

    def __init__(
        self, handler: Handler | None = None, *, on_lost: Callable[[], None] | None = None
    ):
        self._handler = handler
        self._on_lost = on_lost
        self._decoder = FrameDecoder()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except Exception:
            if self.transport is not None:
                self.transport.abort()
            return
        for frame in frames:
            if frame[0] == "r":
                _, call_id, ok, value = frame
                future = self._waiting.pop(call_id, None)
                if future is not None and not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(decode_error(value))
            else:
                _, call_id, name, args, kwargs, extra = frame
                task = asyncio.get_running_loop().create_task(
                    self._serve(call_id, name, args, kwargs, extra)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(ChannelClosed("the other process closed the channel"))
        if self._on_lost is not None:
            self._on_lost()

    # -- calls -----------------------------------------------------------------------------
    async def _serve(
        self, call_id: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], extra: Any
    ) -> None:
        assert self._handler is not None, "this end serves no calls"
        try:
            value = await self._handler(name, args, kwargs, extra)
        except Exception as exc:
            if call_id:
                self._send(("r", call_id, False, encode_error(exc)))
            return
        if call_id:
            self._send(("r", call_id, True, value))

    def _send(self, message: tuple[Any, ...]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ChannelClosed("the channel is closed")
        try:
            frame = encode_frame(message)
        except Exception as exc:
            if message[0] != "r":
                raise
            failure = TypeError(f"result cannot cross processes: {exc}")
            frame = encode_frame(("r", message[1], False, encode_error(failure)))
        transport.write(frame)

    async def call(
        self,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        extra: Any = None,
    ) -> Any:
        """Run ``name`` on the other end and return its result (or raise its exception)."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        try:
            self._send(("c", call_id, name, args, kwargs or {}, extra))
        except BaseException:
            self._waiting.pop(call_id, None)
            raise
        return await future

    def notify(self, name: str, args: tuple[Any, ...] = ()) -> None:
        """Run ``name`` on the other end without waiting for (or getting) an answer."""
        try:
            self._send(("c", 0, name, args, {}, None))
        except ChannelClosed:
            pass

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
