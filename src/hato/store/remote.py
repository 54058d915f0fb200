"""The mail store as an SMTP worker process sees it: every call runs in the main process.

A worker (hato.servers.smtp_worker) runs SMTP sessions on the connections the main process
hands it, with the same session, policy and delivery code as the main process; only the store
is this proxy. ``RemoteStore`` forwards each coroutine of ``MailStore`` / ``ReportStore`` it
was told about (``methods``) to the main process through a ``Caller`` (the worker channel) and
returns its result, so the main process stays the only writer of the database and of the blob
files, with its group commit, pins and janitor (store/sqlite/blobs.py) unchanged.

Bodies: ``SpoolWriter`` hashes a body as it arrives. A small one (at most ``inline_max``
octets, the size the main store journals) stays in memory; a larger one goes to a file in the
main store's ``tmp/`` directory and is fsynced by ``commit``, in the worker. The committed
body travels with the next call of the worker (``take_shipments``), and the main process
installs it (``BlobStore.install``: the body journalled by the unit that stores the message,
or the file renamed into ``new/``) before it runs that call or any later one of this worker:
so the unit that stores a message always finds its body installed. A body this worker
committed recently is read back from memory (``open``); any other from its file.

Reads: a few point lookups (an account, an alias, the active Sieve script) are answered in
the worker from the database file when the backend offers that (``read_locally``); every
other call is one round trip.

Security: the proxy forwards only the names the main process listed; the main process checks
blob ids and temp paths again before it touches a file (``FileBlobStore.install``).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from hato.core.errors import NotFound, StoreError, TemporaryStoreError
from hato.store.model import BlobRef

_RECENT = 256  # bodies committed here that ``open`` serves from memory


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
            if self._size <= self._owner.shipped_max:
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
        return self._small is not None

    def commit(self) -> BlobRef:
        """A small body: no I/O (it travels with the next call). A large one: its file is
        fsynced here (blocking: called in a thread)."""
        if not self._open:
            raise StoreError("blob writer already committed or aborted")
        self._open = False
        blob_id = self._hash.hexdigest()
        if self._small is not None:
            body = b"".join(self._small)
            self._small = None
            self._owner.shipped(Shipment(blob_id, self._size, body=body))
            return BlobRef(id=blob_id, size=self._size)
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

    def __init__(self, blob_dir: Path, tmp_dir: Path, *, inline_max: int) -> None:
        self.blob_dir = blob_dir
        self.tmp_dir = tmp_dir
        self.inline_max = inline_max
        self.pressed = False  # the main process asked for every body to be written here
        self._outgoing: list[Shipment] = []
        self._recent: OrderedDict[str, bytes] = OrderedDict()

    @property
    def shipped_max(self) -> int:
        """The largest body shipped to be journalled now (none while ``pressed``)."""
        return 0 if self.pressed else self.inline_max

    def writer(self) -> SpoolWriter:
        return SpoolWriter(self)

    def shipped(self, shipment: Shipment) -> None:
        self._outgoing.append(shipment)  # list.append: atomic, also from a commit thread
        if shipment.body is not None:
            self._recent[shipment.blob_id] = shipment.body
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
        raise NotFound(f"no blob {blob_id}")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def exists(self, blob_id: str) -> bool:
        if blob_id in self._recent:
            return True
        return any(path.exists() for path in self._paths(blob_id))


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
