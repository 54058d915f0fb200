"""A small real Service for runtime tests: a line echo server with transactions.

A client line ``BEGIN`` opens a transaction, ``END`` completes it (reply ``OK``); any other
line is echoed. ``stop`` refuses new connections, lets open sessions run for up to the
timeout, then closes them. Run as a script it serves until SIGTERM/SIGINT via run_services.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys

from hato.app.runtime import run_services
from hato.core import log
from hato.core.errors import ListenError


class EchoService:
    def __init__(self, name: str = "echo", *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.completed = 0
        self.closed_early = 0
        self.running = False
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason = "address already in use"
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {reason}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.running = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                if line.strip() == b"END":
                    self.completed += 1
                    writer.write(b"OK\n")
                else:
                    writer.write(line)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            self.closed_early += 1
        finally:
            self._writers.discard(writer)
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self, *, timeout: float) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._sessions:
            await asyncio.wait(set(self._sessions), timeout=timeout)
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(set(self._sessions))
        await self._server.wait_closed()
        self.running = False


class Announcing(EchoService):
    """Prints the bound port once listening, so the parent test can connect."""

    async def start(self) -> None:
        await super().start()
        print(f"READY {self.port}", flush=True)


async def _main(shutdown_timeout: float) -> None:
    service = Announcing()
    await run_services([service], shutdown_timeout=shutdown_timeout)
    print(f"STOPPED completed={service.completed} closed_early={service.closed_early}", flush=True)


if __name__ == "__main__":
    log.configure("info")
    asyncio.run(_main(float(sys.argv[1])))
