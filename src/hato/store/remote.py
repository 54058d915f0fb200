"""The mail store as an SMTP worker process sees it: every call runs in the main process.

A worker (hato.servers.smtp_worker) runs SMTP sessions on the connections the main process
hands it, with the same session, policy and delivery code as the main process; only the store
is this proxy. ``RemoteStore`` forwards each coroutine of ``MailStore`` / ``ReportStore`` it
was told about (``methods``) to the main process through a ``Caller`` (the worker channel) and
returns its result, so the main process stays the only writer of the database and of the blob
files, with its group commit, pins and janitor (store/sqlite/blobs.py) unchanged.

Bodies: ``SpoolWriter`` hashes a body as it arrives and keeps it in memory up to
``inline_max`` octets (the size the main store journals); a larger one goes to a file in the
main store's ``tmp/`` directory and is fsynced by ``commit``, in the worker. At commit a small
body (at most ``LOG_MIN`` octets) travels with the next call of the worker
(``take_shipments``) and the main process journals it in the database; a body between the two
is appended to the worker's *body log* (``BodyLog``: ``tmp/<random>.log``, one fdatasync for
every body appended meanwhile) and only its place travels, so the main process never copies
its octets (it journals the reference; its janitor reads the log to write the file). The
same happens to every body up to ``inline_max`` while the main process is short of memory
for pending bodies (``pressed``). The main process installs what a call brings
(``BlobStore.install``/``install_logged``, or the file renamed into ``new/``) before it runs
that call or any later one of this worker: so the unit that stores a message always finds its
body installed. A body this worker committed recently is read back from memory (``open``);
any other from its file.

A body the main store keeps in its database (hato.store.sqlite.refs ``blob_bodies``) is read
through ``stored``, a reader of the database file the backend gives the worker.

Reads: a few point lookups (an account, an alias, the active Sieve script) are answered in
the worker from the database file when the backend offers that (``read_locally``); every
other call is one round trip.

Security: the proxy forwards only the names the main process listed; the main process checks
blob ids and temp paths again before it touches a file (``FileBlobStore.install``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from hato.core.errors import NotFound, StoreError, TemporaryStoreError
from hato.store.model import BlobRef

_RECENT = 256  # bodies committed here that ``open`` serves from memory
LOG_MIN = 32 << 10  # octets: larger bodies go to the body log rather than travel with a call
LOG_SEGMENT = 64 << 20  # octets: a body log file is closed (a new one begun) beyond this
_IOV_MAX = 1024  # buffers per pwritev (Linux's IOV_MAX)


class Caller(Protocol):
    async def call(
        self,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        extra: Any = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Shipment:
    """A body committed in the worker, to be installed by the main process: in ``body``
    (small) or in the fsynced file ``temp`` (large)."""

    blob_id: str
    size: int
    body: bytes | None = None
    temp: str | None = None
    log: str | None = None  # the body log holding it, at ``offset``
    offset: int = 0
    closed: str | None = None  # no body: this body log gets no more bodies


class _Segment:
    """One body log file (see ``BodyLog``)."""

    __slots__ = (
        "failed", "fd", "named", "path", "queued", "synced", "syncing", "users", "written"
    )  # fmt: skip

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.written = 0  # octets appended (placed: some may still wait in ``queued``)
        self.queued: list[bytes] = []  # bodies placed but not written, in offset order
        self.synced = 0  # octets known durable
        self.named = False  # its entry in tmp/ is durable (fsync of the directory)
        self.syncing: asyncio.Future[None] | None = None  # the fdatasync in flight
        self.failed = False  # an fdatasync failed: nothing more is durable here
        self.users = 0  # appends not yet shipped


class BodyLog:
    """A worker's body log, on its event loop: bodies appended to a file in ``tmp/`` and
    made durable by one write and one fdatasync (in a thread, off the event loop) for every
    body appended meanwhile: an appender arriving while one runs waits for the next, which
    covers them all. A file is
    closed beyond ``segment_max`` octets, or after a failed fdatasync (then none of its
    unsynced bodies counts as durable: a later fdatasync could succeed without them).
    ``closed(path)`` runs after the last body of a closed file was shipped (``done``), so
    the main process learns it after all its bodies."""

    def __init__(
        self, tmp_dir: Path, closed: Callable[[str], None], *, segment_max: int = LOG_SEGMENT
    ) -> None:
        self._tmp_dir = str(tmp_dir)
        self._closed = closed
        self._segment_max = segment_max
        self._current: _Segment | None = None
        try:  # the worker's loop: bodies written in a thread are appended there too
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # set by the first ``append``

    async def append(self, body: bytes) -> tuple[_Segment, int]:
        """Place ``body`` at the end of the log and wait until it is written and durable;
        returns the file and the offset. The caller ships the place, then calls ``done``."""
        self._loop = asyncio.get_running_loop()
        seg = self._current
        if seg is None or seg.failed or seg.written >= self._segment_max:
            seg = self._begin()
        offset = seg.written
        seg.written += len(body)
        seg.queued.append(body)
        seg.users += 1
        try:
            await self._durable(seg, seg.written)
        except BaseException:
            self.done(seg)
            raise
        return seg, offset

    def append_blocking(self, body: bytes) -> tuple[_Segment, int]:
        """``append`` from another thread (a body written outside the event loop)."""
        if self._loop is None:
            raise StoreError("body log used before its event loop")
        return asyncio.run_coroutine_threadsafe(self.append(body), self._loop).result()

    def _begin(self) -> _Segment:
        """A new log file (its name is made durable with its first fdatasync)."""
        old = self._current
        path = f"{self._tmp_dir}/{secrets.token_hex(16)}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._current = seg = _Segment(path, fd)
        if old is not None:
            self._close_if_done(old)
        return seg

    async def _durable(self, seg: _Segment, end: int) -> None:
        while seg.synced < end:
            if seg.failed:
                raise OSError(f"body log {seg.path}: an earlier fdatasync failed")
            fut = seg.syncing
            if fut is None:
                # the bodies placed so far, written from where the durable part ends
                chunks, seg.queued = seg.queued, []
                loop = asyncio.get_running_loop()
                fut = seg.syncing = loop.run_in_executor(
                    None, self._sync, seg, chunks, seg.written - sum(map(len, chunks))
                )
                fut.add_done_callback(functools.partial(self._synced, seg, seg.written))
            await asyncio.wait((fut,))  # shared: a cancelled appender leaves it running
            if not fut.cancelled() and fut.exception() is not None:
                raise OSError(f"body log {seg.path}: fdatasync failed") from fut.exception()

    @staticmethod
    def _write(fd: int, chunks: list[bytes], offset: int) -> None:
        """Write ``chunks`` one after the other from ``offset`` (a regular file: a short
        write only before an error, which the next call raises)."""
        views = [memoryview(c) for c in chunks if c]
        while views:
            done = os.pwritev(fd, views[:_IOV_MAX], offset)
            offset += done
            while views and done >= len(views[0]):
                done -= len(views.pop(0))
            if views and done:
                views[0] = views[0][done:]

    def _sync(self, seg: _Segment, chunks: list[bytes], offset: int) -> None:
        """In a thread: the bodies placed since the last call written, the file's name
        made durable (once), then its data."""
        self._write(seg.fd, chunks, offset)
        if not seg.named:
            dir_fd = os.open(self._tmp_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            seg.named = True
        os.fdatasync(seg.fd)

    def _synced(self, seg: _Segment, target: int, fut: asyncio.Future[None]) -> None:
        seg.syncing = None
        if fut.cancelled() or fut.exception() is not None:
            seg.failed = True
        else:
            seg.synced = max(seg.synced, target)
        self._close_if_done(seg)

    def done(self, seg: _Segment) -> None:
        """An append's place was shipped (or dropped): close the file if it was its last."""
        seg.users -= 1
        self._close_if_done(seg)

    def _close_if_done(self, seg: _Segment) -> None:
        """Close a file nobody appends to any more, once no append waits on it and no
        fdatasync runs on it."""
        if seg.users or seg.syncing is not None or seg.fd < 0:
            return
        if seg is self._current:
            if not seg.failed:
                return
            self._current = None
        os.close(seg.fd)
        seg.fd = -1
        self._closed(seg.path)


class SpoolWriter:
    """``hato.store.api.BlobWriter`` of a worker (see the module docstring)."""

    def __init__(self, owner: RemoteBlobStore) -> None:
        self._owner = owner
        self._hash = hashlib.sha256()
        self._size = 0
        self._small: list[bytes] | None = []
        self._file: BinaryIO | None = None
        self._temp = ""
        self._open = True

    def write(self, data: bytes) -> None:
        if not self._open:
            raise StoreError("blob writer already committed or aborted")
        self._hash.update(data)
        self._size += len(data)
        if self._small is not None:
            if self._size <= self._owner.inline_max:
                self._small.append(bytes(data))
                return
            chunks, self._small = self._small, None
            self._temp = f"{self._owner.tmp_dir}/{secrets.token_hex(16)}.tmp"
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(fd, "wb", buffering=1 << 16)
            for chunk in chunks:
                self._file.write(chunk)
        assert self._file is not None
        self._file.write(data)

    @property
    def size(self) -> int:
        return self._size

    @property
    def quick(self) -> bool:
        return self._small is not None and self._size <= self._owner.shipped_max

    async def commit_async(self) -> BlobRef:
        """``commit`` from the event loop: a body for the log is appended there (its
        fdatasync shared with the bodies appended meanwhile), a file fsynced in a thread."""
        if not self._open or self._small is None or self.quick:
            return self.commit() if self.quick else await asyncio.to_thread(self.commit)
        self._open = False
        blob_id = self._hash.hexdigest()
        body = b"".join(self._small)
        self._small = None
        seg, offset = await self._owner.log.append(body)
        return self._logged(blob_id, body, seg, offset)

    def _logged(self, blob_id: str, body: bytes, seg: _Segment, offset: int) -> BlobRef:
        """Ship the place of a body durable in the log."""
        try:
            self._owner.shipped(
                Shipment(blob_id, self._size, log=seg.path, offset=offset), body=body
            )
        finally:
            self._owner.log.done(seg)
        return BlobRef(id=blob_id, size=self._size)

    def commit(self) -> BlobRef:
        """A small body: no I/O (it travels with the next call). A larger one: appended to
        the body log, or its file fsynced here (blocking: called in a thread)."""
        if not self._open:
            raise StoreError("blob writer already committed or aborted")
        self._open = False
        blob_id = self._hash.hexdigest()
        if self._small is not None:
            body = b"".join(self._small)
            self._small = None
            if self._size <= self._owner.shipped_max:
                self._owner.shipped(Shipment(blob_id, self._size, body=body))
                return BlobRef(id=blob_id, size=self._size)
            seg, offset = self._owner.log.append_blocking(body)
            return self._logged(blob_id, body, seg, offset)
        f, self._file = self._file, None
        assert f is not None
        try:
            f.flush()
            os.fdatasync(f.fileno())
        except BaseException:
            f.close()
            self._unlink()
            raise
        f.close()
        self._owner.shipped(Shipment(blob_id, self._size, temp=self._temp))
        return BlobRef(id=blob_id, size=self._size)

    def _unlink(self) -> None:
        if self._temp:
            try:
                os.unlink(self._temp)
            except OSError:
                pass
            self._temp = ""

    def abort(self) -> None:
        self._open = False
        self._small = None
        f, self._file = self._file, None
        if f is not None:
            f.close()
        self._unlink()


class RemoteBlobStore:
    """``hato.store.api.BlobStore`` of a worker."""

    def __init__(
        self, blob_dir: Path, tmp_dir: Path, *, inline_max: int, log_segment: int = LOG_SEGMENT
    ) -> None:
        self.blob_dir = blob_dir
        self.tmp_dir = tmp_dir
        self.inline_max = inline_max
        self.pressed = False  # the main process asked for every body to be written here
        self._outgoing: list[Shipment] = []
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_lock = threading.Lock()
        # bodies the main store keeps in its database (hato.store.sqlite.refs.StoredReader)
        self.stored: Callable[[str], bytes | None] | None = None
        self.log = BodyLog(tmp_dir, self._log_closed, segment_max=log_segment)

    @property
    def shipped_max(self) -> int:
        """The largest body shipped to be journalled now (none while ``pressed``)."""
        return 0 if self.pressed else min(self.inline_max, LOG_MIN)

    def _log_closed(self, path: str) -> None:
        self.shipped(Shipment("", 0, closed=path))

    def writer(self) -> SpoolWriter:
        return SpoolWriter(self)

    def shipped(self, shipment: Shipment, *, body: bytes | None = None) -> None:
        self._outgoing.append(shipment)  # list.append: atomic, also from a commit thread
        body = shipment.body if body is None else body
        if body is not None:
            with self._recent_lock:  # commit threads and the event loop
                self._recent[shipment.blob_id] = body
                self._recent.move_to_end(shipment.blob_id)
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)

    def take_inline(self, size: int) -> bool:
        return True  # shipping a body costs this process no I/O

    def install(
        self, blob_id: str, size: int, *, body: bytes | None = None, temp: str | None = None
    ) -> BlobRef:
        """A body for the main process to install, with the next call."""
        self.shipped(Shipment(blob_id, size, body=body, temp=temp))
        return BlobRef(id=blob_id, size=size)

    def take_shipments(self) -> tuple[Shipment, ...]:
        out, self._outgoing = self._outgoing, []
        return tuple(out)

    def _paths(self, blob_id: str) -> tuple[Path, Path]:
        if len(blob_id) != 64 or not all(c in "0123456789abcdef" for c in blob_id):
            raise NotFound(f"no blob {blob_id!r}")
        return (
            self.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id,
            self.blob_dir / "new" / blob_id,
        )

    def open(self, blob_id: str) -> BinaryIO:
        body = self._recent.get(blob_id)
        if body is not None:
            return io.BytesIO(body)
        for path in self._paths(blob_id):
            try:
                return path.open("rb")
            except FileNotFoundError:
                continue
        stored = self.stored(blob_id) if self.stored is not None else None
        if stored is not None:
            return io.BytesIO(stored)
        raise NotFound(f"no blob {blob_id}")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def exists(self, blob_id: str) -> bool:
        if blob_id in self._recent:
            return True
        if any(path.exists() for path in self._paths(blob_id)):
            return True
        return self.stored is not None and self.stored(blob_id) is not None


class RemoteStore:
    """``MailStore`` (and ``ReportStore``) of a worker: see the module docstring."""

    def __init__(self, caller: Caller, methods: frozenset[str], blobs: RemoteBlobStore) -> None:
        self._caller = caller
        self._methods = methods
        self._blobs = blobs
        self._local: dict[str, Callable[..., Awaitable[Any]]] = {}

    @property
    def blobs(self) -> RemoteBlobStore:
        return self._blobs

    def read_locally(self, reader: object, names: frozenset[str]) -> None:
        """Answer the lookups ``names`` with ``reader``'s coroutines of the same names (the
        backend's reads of the database from this process: hato.store.sqlite.lookups);
        a ``TemporaryStoreError`` from one (a busy database) sends it to the main process."""
        for name in names & self._methods:
            self._local[name] = getattr(reader, name)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(name)
        local = self._local.get(name)

        async def forward(*args: Any, **kwargs: Any) -> Any:
            if local is not None:
                try:
                    return await local(*args, **kwargs)
                except TemporaryStoreError:
                    pass  # busy here: the main process answers
            return await self._caller.call(name, args, kwargs, self._blobs.take_shipments())

        forward.__name__ = name
        setattr(self, name, forward)  # made once per name
        return forward
