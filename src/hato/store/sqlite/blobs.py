"""Content-addressed message bodies on disk: one file per body, named by its SHA-256.

Layout (docs/data-directory.md): ``blobs/ab/cd/<64 hex>`` holds a committed body; ``tmp/``
holds bodies being written (``<random>.tmp``) and *pending markers*
(``<sha256>.<random>.pending``).

Writing (``FileBlobWriter``): chunks stream into ``tmp/<random>.tmp`` while SHA-256 is computed
incrementally. ``commit`` fsyncs the file, renames it to its pending-marker name and fsyncs
``tmp/`` (the marker is durable), then hard-links it to its content address and fsyncs that
directory. When the same content is already stored, nothing is linked and the temp file is
removed. The marker stays until the database commit that refers to the blob, then is unlinked.

Why a pending marker and not a scan of ``blobs/`` at start: a blob that reached its address but
whose message row never committed (crash in between) must be swept at the next start. The
marker is a durable journal of exactly those blobs, so the start-up sweep costs O(blobs in
flight at the crash) instead of O(every stored body), and it costs no extra fsync of the
database (only one of ``tmp/``, which the rename needs anyway). The other half of the journal is
the ``orphan_blobs`` table (blobs whose last message was removed; see ``store.py``).

Deletion races: a blob about to be deleted because its last message went away may at the same
moment be "committed" again by a writer with identical content. Writers *pin* the blob
(in memory) under a lock until a unit that refers to it has committed; deletion skips pinned
blobs under the same lock. A unit that fails (e.g. over quota) keeps the pin, so the caller
can retry with other targets; a pin no unit used within ``PIN_TTL`` is *abandoned* and the
store deletes its blob (``abandoned``/``forget``), and a restart sweeps it through its marker.

Left out: compression, encryption at rest, garbage collection of fan-out directories.

Security: blob ids are checked to be 64 lower-case hex digits before they become paths (no
traversal); files are created 0600 and directories 0700.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hato.core.clock import Clock
from hato.core.errors import NotFound, StoreError
from hato.store.model import BlobRef
from hato.store.sqlite.textindex import TextCache

_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_MARKER = re.compile(r"([0-9a-f]{64})\.[0-9a-f]+\.pending")
_CHUNK = 1 << 16
PIN_TTL = 3600.0  # seconds a committed blob waits for a unit that stores it


@dataclass(frozen=True, slots=True)
class _Pin:
    marker: Path | None  # the pending marker, or None when the content already existed
    since: float  # monotonic time of the writer's commit


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable (POSIX: fsync on the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked(blob_id: str) -> str:
    if not _BLOB_ID.fullmatch(blob_id):
        raise NotFound(f"invalid blob id {blob_id!r}")
    return blob_id


class FileBlobStore:
    """The ``BlobStore`` of the embedded backend (see ``hato.store.api``)."""

    def __init__(self, blob_dir: Path, tmp_dir: Path, *, clock: Clock) -> None:
        self.blob_dir = blob_dir
        self.tmp_dir = tmp_dir
        self._clock = clock
        self._lock = threading.Lock()
        self._dir_lock = threading.Lock()
        # blob id -> one pin per writer that committed it and whose unit has not committed.
        self._pins: dict[str, list[_Pin]] = {}
        # Searchable text extracted by writers, until a unit stores it (textindex.py).
        self.texts = TextCache()

    def path(self, blob_id: str) -> Path:
        blob_id = _checked(blob_id)
        return self.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id

    # -- the BlobStore protocol --------------------------------------------------------------
    def writer(self) -> FileBlobWriter:
        return FileBlobWriter(self)

    def open(self, blob_id: str) -> BinaryIO:
        try:
            return self.path(blob_id).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {blob_id} does not exist") from None

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def exists(self, blob_id: str) -> bool:
        try:
            return self.path(blob_id).is_file()
        except NotFound:
            return False

    # -- used by FileBlobWriter --------------------------------------------------------------
    def _install(self, temp: Path, blob_id: str) -> None:
        """Move a complete, fsynced temp file to its content address (see module docstring)."""
        final = self.path(blob_id)
        marker = self.tmp_dir / f"{blob_id}.{secrets.token_hex(8)}.pending"
        os.rename(temp, marker)
        fsync_dir(self.tmp_dir)  # the marker is durable before the blob can be
        self._make_parents(final.parent)
        since = self._clock.monotonic()
        with self._lock:
            try:
                os.link(marker, final)
            except FileExistsError:
                self._pins.setdefault(blob_id, []).append(_Pin(None, since))
                linked = False
            else:
                self._pins.setdefault(blob_id, []).append(_Pin(marker, since))
                linked = True
        if linked:
            fsync_dir(final.parent)
        else:
            os.unlink(marker)  # identical content already stored: drop our copy

    def _make_parents(self, directory: Path) -> None:
        # Under a lock: no writer may see a fan-out directory (and link into it) before the
        # directory entry that names it is durable.
        with self._dir_lock:
            for d in (directory.parent, directory):
                if not d.is_dir():
                    d.mkdir(mode=0o700)
                    fsync_dir(d.parent)

    # -- used by the store on the database thread --------------------------------------------
    def release(self, blob_id: str) -> None:
        """A unit storing messages for a freshly committed blob has COMMITTED: drop one pin
        and its marker (the database now refers to the blob durably)."""
        with self._lock:
            pins = self._pins.get(blob_id)
            if not pins:
                return
            # Prefer a pin with a marker: the remaining holders have not committed yet, but
            # the blob is referenced now, so it can no longer be swept at start anyway.
            index = next((i for i, p in enumerate(pins) if p.marker is not None), 0)
            pin = pins.pop(index)
            if not pins:
                del self._pins[blob_id]
        if pin.marker is not None:
            _unlink_quietly(pin.marker)

    def abandoned(self, *, older_than: float) -> list[str]:
        """Blobs every pin of which was taken before ``older_than`` (monotonic clock)."""
        with self._lock:
            return [b for b, pins in self._pins.items() if all(p.since < older_than for p in pins)]

    def forget(self, blob_id: str, *, referenced: bool) -> bool:
        """Drop every pin of an abandoned blob: its writers never got a unit committed
        (e.g. every delivery was over quota). Deletes it unless ``referenced``."""
        with self._lock:
            pins = self._pins.pop(blob_id, [])
            deleted = not referenced and self._unlink_blob(blob_id)
        for pin in pins:
            if pin.marker is not None:
                _unlink_quietly(pin.marker)
        return deleted

    def delete(self, blob_id: str) -> bool:
        """Delete an unreferenced blob unless a writer pinned it; returns True if deleted."""
        with self._lock:
            if self._pins.get(blob_id):
                return False
            return self._unlink_blob(blob_id)

    def _unlink_blob(self, blob_id: str) -> bool:
        path = self.path(blob_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def pending_markers(self) -> list[tuple[Path, str]]:
        """Markers left by a previous run: (marker path, blob id)."""
        found: list[tuple[Path, str]] = []
        for entry in os.scandir(self.tmp_dir):
            match = _MARKER.fullmatch(entry.name)
            if match:
                found.append((Path(entry.path), match.group(1)))
        return found

    def remove_temp_files(self) -> int:
        """Remove bodies a previous run was still writing; returns how many."""
        count = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.name.endswith(".tmp"):
                _unlink_quietly(Path(entry.path))
                count += 1
        return count


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class FileBlobWriter:
    """Streams one body to ``tmp/`` while hashing it (``hato.store.api.BlobWriter``)."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._temp = store.tmp_dir / f"{secrets.token_hex(16)}.tmp"
        fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=_CHUNK)
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise StoreError("blob writer already committed or aborted")
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)

    @property
    def size(self) -> int:
        return self._size

    def commit(self) -> BlobRef:
        """fsync, move to the content address, fsync the directories, then extract the
        body's searchable text for the full-text index (``textindex.py``); blocking."""
        f = self._file
        if f is None:
            raise StoreError("blob writer already committed or aborted")
        self._file = None
        try:
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            _unlink_quietly(self._temp)
            raise
        f.close()
        blob_id = self._hash.hexdigest()
        try:
            self._store._install(self._temp, blob_id)
        except BaseException:
            _unlink_quietly(self._temp)
            raise
        # Off the database thread: the unit that stores the message only INSERTs the text.
        self._store.texts.prepare(blob_id, self._store.path(blob_id), self._size)
        return BlobRef(id=blob_id, size=self._size)

    def abort(self) -> None:
        """Drop the body; safe to call more than once."""
        f = self._file
        self._file = None
        if f is not None:
            f.close()
            _unlink_quietly(self._temp)
