"""An SMTP worker process: runs the sessions of connections the main process hands it.

Started by ``hato.servers.smtp_workers.SmtpWorkerPool`` as ``python -m
hato.servers.smtp_worker CTRL_FD RPC_FD``. It asks the main process how to build its service
(``Hello``: a factory and its argument, the store's methods, the blob directories), builds it
against ``hato.store.remote.RemoteStore``, says it is ready, then adopts every connection that
arrives on the control socket (``SCM_RIGHTS``, with a token and the listener it came from)
and reports the end of each. It exits when the main process asks it to stop (after its
sessions finish, within the timeout given) or disappears (end of file on either socket: its
sessions are ended at once; none of their unacknowledged messages was acknowledged).

Leaves out: listening sockets of its own, anything but SMTP sessions.

SIGINT and SIGTERM are ignored: sent to the whole process group (Ctrl-C, systemd), they would
cut the sessions short that the main process lets finish when it stops.

Security: inherits only the two socket pairs and the standard streams; logs go where the main
process's go (standard error).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from hato.core import log
from hato.outbound.settings import OutboundSettings
from hato.servers.smtp import SmtpListener, SmtpService
from hato.servers.worker_rpc import Channel
from hato.store.remote import RemoteBlobStore, RemoteStore


class RemoteQueue:
    """The main process's outbound queue runner, as the sessions of a worker see it."""

    def __init__(self, channel: Channel, settings: OutboundSettings) -> None:
        self._channel = channel
        self.settings = settings

    def wake(self) -> None:
        self._channel.notify("_wake")


def _factory(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Worker:
    def __init__(self, ctrl: socket.socket) -> None:
        self.ctrl = ctrl
        self.service: SmtpService | None = None
        self.done = asyncio.Event()
        self.stopped = False  # the main process asked us to stop, and the sessions are over
        self.blobs: RemoteBlobStore | None = None
        self.channel: Channel | None = None
        self._specs: dict[tuple[SmtpListener, int], SmtpListener] = {}

    async def handle(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], extra: Any
    ) -> Any:
        if name == "_pressure":
            # the main process's memory for journalled bodies runs short: write them here
            if self.blobs is not None:
                self.blobs.pressed = bool(args[0])
            return None
        if name == "_stop":
            if self.service is not None:
                await self.service.stop(timeout=float(args[0]))
            self.stopped = True
            self.done.set()
            return None
        raise ValueError(f"unknown call {name!r}")

    def _bound(self, spec: SmtpListener, sock: socket.socket) -> SmtpListener:
        """The listener with the port it is bound to (a configured port 0 is chosen by the
        system in the main process): what the session logs and writes in trace fields."""
        try:
            port = int(sock.getsockname()[1])
        except (OSError, IndexError):
            return spec
        if port == spec.listener.port:
            return spec
        key = (spec, port)
        bound = self._specs.get(key)
        if bound is None:
            listener = dataclasses.replace(spec.listener, port=port)
            bound = self._specs[key] = dataclasses.replace(spec, listener=listener)
        return bound

    def on_ctrl(self) -> None:
        assert self.service is not None and self.channel is not None
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.ctrl, 1024, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self.done.set()  # the main process is gone
                asyncio.get_running_loop().remove_reader(self.ctrl.fileno())
                return
            header = json.loads(data)
            token = int(header["token"])
            spec = self.service.settings.listeners[int(header["listener"])]
            channel = self.channel
            sock = socket.socket(fileno=fds[0])
            spec = self._bound(spec, sock)
            for extra_fd in fds[1:]:
                os.close(extra_fd)
            asyncio.get_running_loop().create_task(
                self.service.adopt(
                    sock, spec, functools.partial(channel.notify, "_closed", (token,))
                )
            )


async def serve(ctrl_fd: int, rpc_fd: int) -> None:
    loop = asyncio.get_running_loop()
    ctrl = socket.socket(fileno=ctrl_fd)
    ctrl.setblocking(False)
    rpc = socket.socket(fileno=rpc_fd)
    worker = Worker(ctrl)
    channel = Channel(worker.handle, on_lost=worker.done.set)
    await loop.create_unix_connection(lambda: channel, sock=rpc)
    worker.channel = channel
    hello = await channel.call("_hello")
    log.configure(logging.getLevelName(hello.log_level))  # standard error, as the main process
    blobs = RemoteBlobStore(
        hello.blob_dir, hello.tmp_dir, inline_max=hello.inline_max, log_segment=hello.log_segment
    )
    worker.blobs = blobs
    store = RemoteStore(channel, hello.methods, blobs)
    factory = _factory(hello.recipe.factory)
    service: SmtpService = factory(
        hello.recipe.argument, store, channel if hello.outbound else None
    )
    worker.service = service
    loop.add_reader(ctrl.fileno(), worker.on_ctrl)
    channel.notify("_ready")
    await worker.done.wait()
    if not worker.stopped:  # the main process is gone: end every session now
        await service.stop(timeout=0)
    with contextlib.suppress(ValueError, OSError):
        loop.remove_reader(ctrl.fileno())
    ctrl.close()
    channel.close()


def main(argv: list[str]) -> None:
    ctrl_fd, rpc_fd = int(argv[1]), int(argv[2])
    # Ctrl-C in a terminal or systemd's SIGTERM reach the whole process group: the main
    # process stops us itself (after our sessions finish), or we exit when it is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(serve(ctrl_fd, rpc_fd))


if __name__ == "__main__":
    main(sys.argv)
