"""SMTP worker processes: the MX listeners' sessions spread over several CPU cores.

One Python process runs its code on one core at a time. With ``[smtp] workers = N`` the main
process keeps the MX listening sockets and hands every accepted connection (its file
descriptor, ``SCM_RIGHTS`` over a ``SOCK_SEQPACKET`` pair) to one of N worker processes
(``hato.servers.smtp_worker``), the one with the fewest connections. A worker runs the whole
session there, with the same code as the main process (codec, policy, inbound verification,
Sieve, delivery), against ``hato.store.remote.RemoteStore``: every store call crosses the
worker channel (``hato.servers.worker_rpc``) and runs here, in the main process, which stays
the only writer of the store. So "250" still means the main process committed every copy
(group-committed with the main process's own deliveries), and a worker that dies loses only
its unacknowledged transactions.

Limits stay global: the main process counts connections in total and per client address
(421 4.7.0 beyond them, RFC 5321 §3.8, RFC 3463 X.7.0) before any worker sees one, and a
worker reports each connection's end. A worker that exits is started again (its
connections are released); ``stop`` stops accepting, asks every worker to let its sessions
finish within the timeout, then ends them.

Leaves out: submission listeners (their AUTH lock-out and per-account rate limits are state
of the main process, which keeps them), listening in the workers (``SO_REUSEPORT`` would
split the limits).

Security: the channels are socket pairs made before the worker starts (no path, no port);
a worker may call only the store's public coroutines (``store_methods``), and blob ids and
temp paths it sends are checked by the store before any file is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import socket
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hato.core import log
from hato.core.errors import ListenError, StoreError
from hato.core.reply import Reply
from hato.servers.base import TlsMode
from hato.servers.smtp import TOO_MANY_CONNECTIONS, OutboundQueue, SmtpSettings
from hato.servers.worker_rpc import Channel
from hato.store import remote
from hato.store.api import MailStore
from hato.store.remote import Shipment

NO_WORKER = Reply(421, "4.3.2", "Service not available, try again later")  # RFC 3463 X.3.2
# Bodies a worker ships to be journalled (the store's own limit); larger ones it writes and
# fsyncs itself, in parallel with the main process.
_WORKER_INLINE_MAX = 256 << 10
# Once the bodies waiting in the main process's memory leave less than this of its budget (the
# janitor then writes their files during the burst), workers write and fsync every body
# themselves: a journalled body costs the main process three writes (the WAL, the checkpoint,
# the janitor's file), which a sustained load cannot defer (receive bench: 300 x 100 KB
# journalled, 1.28-1.36x Postfix; all written by the workers, 1.01x).
_PRESSURE_MARGIN = 32 << 20
_START_TIMEOUT = 60.0  # a worker imports Hato and builds its service within this
_RESTART_DELAY = 1.0
_ACCEPTS_PER_WAKE = 64


@dataclass(frozen=True, slots=True)
class WorkerRecipe:
    """How a worker builds its SMTP service: ``factory`` ("module:function") is called with
    ``(argument, store, outbound)`` and returns an ``SmtpService`` (hato.app.wiring's
    ``mx_worker_service`` for ``hato serve``)."""

    factory: str
    argument: Any


@dataclass(frozen=True, slots=True)
class Hello:
    """What the main process tells a starting worker."""

    recipe: WorkerRecipe
    methods: frozenset[str]
    blob_dir: Path
    tmp_dir: Path
    inline_max: int
    log_segment: int  # octets of a body log file before the next one (store/remote.py)
    outbound: bool
    log_level: int


def store_methods(store: object) -> frozenset[str]:
    """The public coroutine functions of ``store`` (what a worker may call)."""
    names = set()
    for name in dir(type(store)):
        if name.startswith("_") or name == "close":
            continue
        if asyncio.iscoroutinefunction(getattr(type(store), name, None)):
            names.add(name)
    return frozenset(names)


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    ctrl: socket.socket
    channel: Channel
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: dict[int, str] = field(default_factory=dict)  # connection → client address
    installing: list[asyncio.Future[Any]] = field(default_factory=list)
    logs: set[str] = field(default_factory=set)  # its body logs not closed yet
    gone: bool = False


class SmtpWorkerPool:
    """The ``Service`` that accepts MX connections and runs them in worker processes."""

    name = "smtp-workers"

    def __init__(
        self,
        settings: SmtpSettings,
        store: MailStore,
        recipe: WorkerRecipe,
        *,
        workers: int,
        outbound: OutboundQueue | None = None,
        tls: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.settings = settings
        self.store = store
        self.recipe = recipe
        self.count = workers
        self.outbound = outbound
        self.tls = tls  # the workers have a certificate (as SmtpService.start, it is needed)
        self._methods = store_methods(store)
        self._sockets: list[tuple[int, socket.socket]] = []
        self._workers: list[_Worker | None] = [None] * workers
        self._per_ip: Counter[str] = Counter()
        self._total = 0
        self._tokens = itertools.count(1)
        self._stopping = False
        self._restarts: set[asyncio.Task[None]] = set()
        self._pressed = False  # the workers were told to write bodies themselves

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def addresses(self) -> list[tuple[int, str, int]]:
        """(listener index, host, port) of every bound socket."""
        return [(i, *s.getsockname()[:2]) for i, s in self._sockets]

    def port(self, index: int = 0) -> int:
        for i, _host, port in self.addresses:
            if i == index:
                return int(port)
        raise LookupError(f"no listener {index}")

    @property
    def worker_pids(self) -> list[int]:
        """The workers serving now (started and not gone)."""
        return [
            w.process.pid
            for w in self._workers
            if w is not None and not w.gone and w.ready.is_set()
        ]

    async def start(self) -> None:
        for index, spec in enumerate(self.settings.listeners):
            lst = spec.listener
            if lst.tls is not TlsMode.NONE and not self.tls:
                await self.stop(timeout=0)
                raise ListenError(f"smtp listener {lst.host}:{lst.port} needs a TLS certificate")
            try:
                sock = socket.create_server(
                    (lst.host, lst.port),
                    family=socket.AF_INET6 if ":" in lst.host else socket.AF_INET,
                    backlog=512,
                    reuse_port=False,
                )
            except OSError as exc:
                await self.stop(timeout=0)
                raise ListenError(f"cannot listen on {lst.host}:{lst.port}: {exc}") from None
            sock.setblocking(False)
            self._sockets.append((index, sock))
        try:
            await asyncio.gather(*(self._spawn(i) for i in range(self.count)))
        except BaseException:
            await self.stop(timeout=0)
            raise
        loop = asyncio.get_running_loop()
        for index, sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, index, sock)
            host, port = sock.getsockname()[:2]
            role = self.settings.listeners[index].role.value
            log.event("smtp.listening", host=host, port=port, role=role, workers=self.count)

    async def _spawn(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        ctrl, ctrl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        rpc, rpc_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hato.servers.smtp_worker",
                str(ctrl_child.fileno()),
                str(rpc_child.fileno()),
                pass_fds=(ctrl_child.fileno(), rpc_child.fileno()),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        finally:
            ctrl_child.close()
            rpc_child.close()
        ctrl.setblocking(False)
        holder: list[_Worker] = []
        channel = Channel(
            lambda name, args, kwargs, extra: self._serve(holder[0], name, args, kwargs, extra),
            on_lost=lambda: self._lost(holder[0]),
        )
        await loop.create_unix_connection(lambda: channel, sock=rpc)
        worker = _Worker(index, process, ctrl, channel)
        holder.append(worker)
        self._workers[index] = worker
        try:
            await asyncio.wait_for(worker.ready.wait(), _START_TIMEOUT)
        except TimeoutError:
            self._kill(worker)
            raise ListenError(f"smtp worker {index} did not start") from None
        log.event("smtp.worker.started", worker=index, pid=process.pid)

    # -- calls from a worker -------------------------------------------------------------------
    def _hello(self) -> Hello:
        blobs: Any = self.store.blobs  # the file store's layout (sqlite.blobs.FileBlobStore)
        return Hello(
            recipe=self.recipe,
            methods=self._methods,
            blob_dir=Path(blobs.blob_dir),
            tmp_dir=Path(blobs.tmp_dir),
            inline_max=min(int(blobs.inline_max), _WORKER_INLINE_MAX),
            log_segment=remote.LOG_SEGMENT,
            outbound=self.outbound is not None,
            log_level=log.logger.getEffectiveLevel(),
        )

    def _install(self, worker: _Worker, shipments: Iterable[Shipment]) -> None:
        """Install the bodies a call brings, in the order calls arrive: a body the store
        journals now; one it must write and fsync (over its memory budget), and a file (a
        rename and a directory fsync), in a thread that this call and every later call of
        the worker wait for: never blocking I/O on the event loop."""
        blobs: Any = self.store.blobs  # body logs: sqlite.blobs.FileBlobStore
        for item in shipments:
            if item.closed is not None:
                worker.logs.discard(item.closed)
                blobs.log_closed(item.closed)
                continue
            if item.log is not None:  # durable in the worker's body log: no I/O here
                worker.logs.add(item.log)
                blobs.install_logged(item.blob_id, item.size, log=item.log, offset=item.offset)
                continue
            if item.body is not None and blobs.take_inline(item.size):
                blobs.install(item.blob_id, item.size, body=item.body)
                continue
            install = functools.partial(
                blobs.install, item.blob_id, item.size, body=item.body, temp=item.temp
            )
            worker.installing.append(asyncio.ensure_future(asyncio.to_thread(install)))

    def _check_pressure(self) -> None:
        """Tell the workers when bodies waiting in memory near the store's budget: they then
        write and fsync bodies themselves (in parallel, in ``tmp/``) instead of shipping
        them to be journalled, until the janitor has caught up."""
        pressed = not self.store.blobs.take_inline(_PRESSURE_MARGIN)
        if pressed == self._pressed:
            return
        self._pressed = pressed
        log.event("smtp.workers.body_pressure", pressed=pressed)
        for worker in self._workers:
            if worker is not None and not worker.gone:
                worker.channel.notify("_pressure", (pressed,))

    async def _serve(
        self, worker: _Worker, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], extra: Any
    ) -> Any:
        if extra:
            self._install(worker, extra)
        if worker.installing:
            waiting = list(worker.installing)
            try:
                await asyncio.gather(*waiting)
            finally:
                worker.installing = [f for f in worker.installing if not f.done()]
        if extra or self._pressed:
            self._check_pressure()  # more bodies waiting, or the janitor caught up
        if name in self._methods:
            return await getattr(self.store, name)(*args, **kwargs)
        if name == "_closed":
            self._release(worker, int(args[0]))
            return None
        if name == "_wake":
            if self.outbound is not None:
                self.outbound.wake()
            return None
        if name == "_hello":
            return self._hello()
        if name == "_ready":
            worker.ready.set()
            if self._pressed:
                worker.channel.notify("_pressure", (True,))
            return None
        raise StoreError(f"no store method {name!r}")

    # -- connections ---------------------------------------------------------------------------
    def _accept(self, index: int, sock: socket.socket) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again on the next wake-up
                log.event("smtp.accept.failed", error=str(exc))
                return
            with conn:
                self._hand_over(index, conn, str(peer[0]))

    def _hand_over(self, index: int, conn: socket.socket, ip: str) -> None:
        limits = self.settings
        workers = [w for w in self._workers if w is not None and not w.gone and w.ready.is_set()]
        if self._stopping or not workers:
            # RFC 5321 §3.8: 421 when the service is not available (a worker being restarted)
            self._refuse(conn, ip, "no worker", NO_WORKER)
            return
        if (
            self._total >= limits.max_connections
            or self._per_ip[ip] >= limits.max_connections_per_ip
        ):
            self._refuse(conn, ip, "limit", TOO_MANY_CONNECTIONS)
            return
        worker = min(workers, key=lambda w: len(w.tokens))
        token = next(self._tokens)
        header = json.dumps({"token": token, "listener": index}).encode()
        try:
            socket.send_fds(worker.ctrl, [header], [conn.fileno()])
        except OSError as exc:  # the worker is not reading (stuck or gone): drop this one
            log.event("smtp.worker.handover_failed", worker=worker.index, error=str(exc))
            return
        worker.tokens[token] = ip
        self._total += 1
        self._per_ip[ip] += 1

    @staticmethod
    def _refuse(conn: socket.socket, ip: str, reason: str, reply: Reply) -> None:
        """Answer ``reply`` without waiting (the caller closes the socket)."""
        log.event("smtp.connection.refused", remote_ip=ip, reason=reason)
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(reply.to_bytes())

    def _release(self, worker: _Worker, token: int) -> None:
        ip = worker.tokens.pop(token, None)
        if ip is None:
            return
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    # -- worker exits ----------------------------------------------------------------------------
    def _lost(self, worker: _Worker) -> None:
        if worker.gone:
            return
        worker.gone = True
        for token in list(worker.tokens):
            self._release(worker, token)
        worker.ctrl.close()
        if self._stopping:
            return
        log.event("smtp.worker.exited", worker=worker.index, pid=worker.process.pid)
        task = asyncio.get_running_loop().create_task(self._restart(worker))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, worker: _Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        await worker.process.wait()
        self._close_logs(worker)  # it appends no more
        await asyncio.sleep(_RESTART_DELAY)
        if self._stopping:
            return
        try:
            await self._spawn(worker.index)
        except (OSError, ListenError) as exc:
            log.event("smtp.worker.restart_failed", worker=worker.index, error=str(exc))
            if not self._stopping:
                task = asyncio.get_running_loop().create_task(self._restart(worker))
                self._restarts.add(task)
                task.add_done_callback(self._restarts.discard)

    def _close_logs(self, worker: _Worker) -> None:
        blobs: Any = self.store.blobs
        for path in worker.logs:
            blobs.log_closed(path)
        worker.logs.clear()

    def _kill(self, worker: _Worker) -> None:
        worker.gone = True
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        worker.channel.close()
        worker.ctrl.close()

    async def stop(self, *, timeout: float) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        for _index, sock in self._sockets:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        for task in list(self._restarts):
            task.cancel()
        live = [w for w in self._workers if w is not None and not w.gone]

        async def stop_one(worker: _Worker) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                worker.channel.notify("_stop", (timeout,))
            try:
                await asyncio.wait_for(worker.process.wait(), timeout + 5)
            except TimeoutError:
                self._kill(worker)
                await worker.process.wait()
            worker.channel.close()
            self._close_logs(worker)

        await asyncio.gather(*(stop_one(w) for w in live))
        for worker in self._workers:
            if worker is not None and worker.ctrl.fileno() != -1:
                worker.ctrl.close()
