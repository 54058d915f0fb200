"""Content-addressed message bodies on disk: one file per body, named by its SHA-256.

Layout (docs/data-directory.md): ``blobs/ab/cd/<64 hex>`` holds a body at its content
address; ``blobs/new/<64 hex>`` holds a body committed recently (the *journal* of blobs that
may not be referenced by the database yet); ``tmp/<random>.tmp`` holds bodies being written.

Writing (``FileBlobWriter``): chunks stream into ``tmp/<random>.tmp`` while SHA-256 is computed
incrementally. ``commit`` syncs the file's data, renames it to ``blobs/new/<sha256>`` and waits
for a *group* fsync of ``blobs/new/`` (``dirsync.DirSync``: the writers committing at the same
moment share one directory fsync). Then the blob is durable and the caller stores the message
in a unit of work (whose COMMIT is the database's fsync): "250" after two fsyncs per message
(its file, its WAL commit) plus one directory fsync per group of concurrent messages. When the
same content is already stored (in ``new/`` or at its address), nothing is renamed and the
temp file is removed.

After the commit of a unit that refers to a blob, the *janitor* thread moves it from ``new/``
to its address: hard link, fsync of the fan-out directories (once per round, for every blob
of the round), and only then unlink of the ``new/`` name (a little later, so that a reader
that just looked the blob up still finds it there). At every moment the blob has at least one
durable name. Because ``new/`` only ever holds blobs in flight and blobs waiting for the
janitor, the start-up sweep (``recover``) is O(blobs in flight at a crash): a blob in ``new/``
that a message or queue entry refers to is moved to its address, any other is deleted. No
per-message marker, no per-message directory fsync, and no database write is needed for the
journal. (Pending markers ``tmp/<sha256>.<random>.pending`` of earlier Hato versions are
still swept at start.) The other half of the journal is the ``orphan_blobs`` table (blobs
whose last message was removed; see ``store.py``); their unlinks are made durable by the
janitor too (one fsync per directory per round, off the database thread), and only then may
their rows go.

Deletion races: a blob about to be deleted because its last message went away may at the same
moment be "committed" again by a writer with identical content. Writers *pin* the blob
(in memory) under a lock until a unit that refers to it has committed; deletion skips pinned
blobs under the same lock. A unit that fails (e.g. over quota) keeps the pin, so the caller
can retry with other targets; a pin no unit used within ``PIN_TTL`` is *abandoned* and the
store deletes its blob (``abandoned``/``forget``), and a restart sweeps it from ``new/``.

Left out: compression, encryption at rest, garbage collection of fan-out directories.

Security: blob ids are checked to be 64 lower-case hex digits before they become paths (no
traversal); files are created 0600 and directories 0700.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hato.core.clock import Clock
from hato.core.errors import NotFound, StoreError
from hato.core.log import event
from hato.store.model import BlobRef
from hato.store.sqlite.dirsync import DirSync, fsync_dir, sync_data
from hato.store.sqlite.textindex import TextCache

__all__ = ["PIN_TTL", "FileBlobStore", "FileBlobWriter", "fsync_dir"]

_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_MARKER = re.compile(r"([0-9a-f]{64})\.[0-9a-f]+\.pending")  # journal of Hato before 0.2
_CHUNK = 1 << 16
NEW_DIR = "new"
PIN_TTL = 3600.0  # seconds a committed blob waits for a unit that stores it
UNLINK_DELAY = 2.0  # seconds a moved blob keeps its new/ name (readers that just found it)
ROUND_INTERVAL = 0.1  # seconds between janitor rounds: lets a round gather many blobs

Referenced = Callable[[str], bool]
Cleared = Callable[[set[str]], None]


@dataclass(frozen=True, slots=True)
class _Pin:
    fresh: bool  # this writer put the body into new/ (False: the content existed already)
    since: float  # monotonic time of the writer's commit


def _checked(blob_id: str) -> str:
    if not _BLOB_ID.fullmatch(blob_id):
        raise NotFound(f"invalid blob id {blob_id!r}")
    return blob_id


def _unlink_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class FileBlobStore:
    """The ``BlobStore`` of the embedded backend (see ``hato.store.api``)."""

    def __init__(self, blob_dir: Path, tmp_dir: Path, *, clock: Clock) -> None:
        self.blob_dir = blob_dir
        self.tmp_dir = tmp_dir
        self.new_dir = blob_dir / NEW_DIR
        self._clock = clock
        self._lock = threading.Lock()
        # blob id -> one pin per writer that committed it and whose unit has not committed.
        self._pins: dict[str, list[_Pin]] = {}
        self._new_sync = DirSync(self.new_dir)
        self._janitor = _Janitor(self)
        # Searchable text extracted by writers, until a unit stores it (textindex.py).
        self.texts = TextCache()

    # -- paths -------------------------------------------------------------------------------
    def address(self, blob_id: str) -> Path:
        """Where a blob lives once the janitor has moved it (``blobs/ab/cd/<id>``)."""
        blob_id = _checked(blob_id)
        return self.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id

    def _new(self, blob_id: str) -> Path:
        return self.new_dir / _checked(blob_id)

    def path(self, blob_id: str) -> Path:
        """The file holding the blob now (in ``new/`` or at its address). A blob leaves
        ``new/`` only ``UNLINK_DELAY`` after its address is durable, so the path stays
        usable for a moment; ``open`` is the race-free way to read."""
        new = self._new(blob_id)
        return new if new.is_file() else self.address(blob_id)

    # -- the BlobStore protocol --------------------------------------------------------------
    def writer(self) -> FileBlobWriter:
        return FileBlobWriter(self)

    def open(self, blob_id: str) -> BinaryIO:
        # new/ first: the janitor links the address before it unlinks the new/ name, so a
        # miss in new/ followed by a miss at the address means the blob is gone.
        for path in (self._new(blob_id), self.address(blob_id)):
            try:
                return path.open("rb")
            except FileNotFoundError:
                continue
        raise NotFound(f"blob {blob_id} does not exist")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def exists(self, blob_id: str) -> bool:
        try:
            return self._new(blob_id).is_file() or self.address(blob_id).is_file()
        except NotFound:
            return False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the janitor thread (after ``recover``)."""
        self._janitor.start()

    def close(self) -> None:
        """Finish the janitor's work (moves, durable deletions) and stop it; blocking."""
        self._janitor.stop()

    def flush(self) -> None:
        """Wait until the janitor has done everything queued so far, unlinks included
        (blocking; tests and ``close``)."""
        self._janitor.flush()

    @property
    def directory_fsyncs(self) -> int:
        """fsyncs of ``new/`` so far: concurrent commits share them (tests, benchmarks)."""
        return self._new_sync.fsyncs

    # -- used by FileBlobWriter --------------------------------------------------------------
    def _install(self, temp: Path, blob_id: str) -> None:
        """Move a complete, synced temp file into ``new/`` and make that durable (see the
        module docstring); identical content already stored is shared instead."""
        new = self._new(blob_id)
        since = self._clock.monotonic()
        with self._lock:
            if new.exists():
                fresh, ticket = False, self._new_sync.current()  # its rename may be in flight
            elif self.address(blob_id).exists():
                fresh, ticket = False, 0  # durable since its move
            else:
                os.rename(temp, new)
                fresh, ticket = True, self._new_sync.changed()
            self._pins.setdefault(blob_id, []).append(_Pin(fresh, since))
        if not fresh:
            _unlink_quietly(temp)  # identical content already stored: drop our copy
        if ticket:
            self._new_sync.wait(ticket)

    # -- used by the store on the database thread --------------------------------------------
    def release(self, blob_id: str) -> None:
        """A unit storing messages for a freshly committed blob has COMMITTED: drop one pin
        (the database now refers to the blob durably) and let the janitor move it."""
        with self._lock:
            pins = self._pins.get(blob_id)
            if pins:
                pins.pop(next((i for i, p in enumerate(pins) if p.fresh), 0))
                if not pins:
                    del self._pins[blob_id]
        self._janitor.move(blob_id)

    def abandoned(self, *, older_than: float) -> list[str]:
        """Blobs every pin of which was taken before ``older_than`` (monotonic clock)."""
        with self._lock:
            return [b for b, pins in self._pins.items() if all(p.since < older_than for p in pins)]

    def forget(self, blob_id: str, *, referenced: bool) -> bool:
        """Drop every pin of an abandoned blob: its writers never got a unit committed
        (e.g. every delivery was over quota). Deletes it unless ``referenced``."""
        with self._lock:
            self._pins.pop(blob_id, None)
        if referenced:
            self._janitor.move(blob_id)
            return False
        return self.delete(blob_id)

    def delete(self, blob_id: str) -> bool:
        """Delete an unreferenced blob unless a writer pinned it, durably (fsyncs inline);
        returns True if a file was deleted."""
        with self._lock:
            if self._pins.get(blob_id):
                return False
            dirs = self._unlink_blob(blob_id)
        for directory in dirs:
            fsync_dir(directory)
        return bool(dirs)

    def delete_later(self, blob_ids: Iterable[str], *, done: Cleared) -> None:
        """Delete unreferenced blobs now, unless pinned; ``done(ids)`` runs on the janitor
        thread once their deletion is durable (ids of pinned blobs are left out: their
        journal rows must stay)."""
        dirs: set[Path] = set()
        ids: set[str] = set()
        with self._lock:
            for blob_id in blob_ids:
                if not self._pins.get(blob_id):
                    dirs.update(self._unlink_blob(blob_id))
                    ids.add(blob_id)
        if ids:
            self._janitor.sync(dirs, ids, done)

    def _unlink_blob(self, blob_id: str) -> list[Path]:
        """Unlink both names of a blob (under ``_lock``); returns the directories changed."""
        dirs = []
        for path in (self._new(blob_id), self.address(blob_id)):
            if _unlink_quietly(path):
                dirs.append(path.parent)
        return dirs

    # -- used by the janitor -----------------------------------------------------------------
    def _link_address(self, blob_id: str, created: set[Path]) -> Path | None:
        """Give a blob of ``new/`` its address (not yet durable); None when it left new/."""
        new, final = self._new(blob_id), self.address(blob_id)
        for directory in (final.parent.parent, final.parent):
            if not directory.is_dir():
                try:
                    directory.mkdir(mode=0o700)
                except FileExistsError:
                    pass
                created.add(directory.parent)  # its entry needs the parent's fsync
        with self._lock:  # consistent with writers' dedup checks and with deletions
            try:
                os.link(new, final)
            except FileNotFoundError:
                return None  # deleted meanwhile
            except FileExistsError:
                pass  # linked by an earlier round (or before a restart)
        return final.parent

    def _drop_new_name(self, blob_id: str) -> None:
        """Unlink ``new/<id>`` once it is the same file as the durable address."""
        new, final = self._new(blob_id), self.address(blob_id)
        with self._lock:
            try:
                a, b = os.stat(new), os.stat(final)
            except FileNotFoundError:
                return
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                os.unlink(new)

    # -- start-up ------------------------------------------------------------------------------
    def recover(self, referenced: Referenced) -> tuple[int, int]:
        """Before serving, after a crash or not: remove temp files, give referenced blobs of
        ``new/`` their address, delete unreferenced ones, and sweep old-style pending
        markers. Returns (temp files removed, blobs deleted); blocking."""
        if not self.new_dir.is_dir():
            self.new_dir.mkdir(mode=0o700)
            fsync_dir(self.blob_dir)
        temps = swept = 0
        for entry in os.scandir(self.tmp_dir):
            marker = _MARKER.fullmatch(entry.name)
            if marker:
                blob_id = marker.group(1)
                if not referenced(blob_id) and self.delete(blob_id):
                    swept += 1  # written, but the message never committed
                os.unlink(entry.path)
            elif entry.name.endswith(".tmp"):
                _unlink_quietly(Path(entry.path))
                temps += 1
        dirs: set[Path] = set()
        moved: list[str] = []
        for entry in os.scandir(self.new_dir):
            blob_id = entry.name
            if not _BLOB_ID.fullmatch(blob_id):
                continue
            if referenced(blob_id):
                parent = self._link_address(blob_id, dirs)
                if parent is not None:
                    dirs.add(parent)
                    moved.append(blob_id)
            elif self.delete(blob_id):
                swept += 1  # in new/ but no message or queue entry refers to it
        for directory in dirs:
            fsync_dir(directory)
        for blob_id in moved:
            self._drop_new_name(blob_id)
        fsync_dir(self.new_dir)
        fsync_dir(self.tmp_dir)
        return temps, swept


class _Janitor:
    """Background thread of a ``FileBlobStore``: moves committed blobs from ``new/`` to their
    address and makes deletions durable, in rounds (one fsync per directory per round)."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._moves: set[str] = set()
        self._syncs: list[tuple[set[Path], set[str], Cleared]] = []
        self._linked: list[tuple[float, str]] = []  # (unlink after, blob id), oldest first
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._requested = 0  # flush generations
        self._completed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="hato-blobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._round(force=True)  # never started: do what was queued, on this thread

    def flush(self) -> None:
        with self._cond:
            if self._thread is None:
                return
            self._requested += 1
            target = self._requested
            self._cond.notify_all()
            while self._completed < target and self._thread is not None:
                self._cond.wait()

    def move(self, blob_id: str) -> None:
        with self._cond:
            self._moves.add(blob_id)
            self._cond.notify_all()

    def sync(self, dirs: set[Path], ids: set[str], done: Cleared) -> None:
        with self._cond:
            self._syncs.append((dirs, ids, done))
            self._cond.notify_all()

    def _main(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while True:
                    forced = self._stopping or self._completed < self._requested
                    now = time.monotonic()
                    if forced:
                        break
                    if (self._moves or self._syncs) and now - last >= ROUND_INTERVAL:
                        break
                    if self._moves or self._syncs:
                        self._cond.wait(ROUND_INTERVAL - (now - last))
                    elif self._linked:
                        if self._linked[0][0] <= now:
                            break
                        self._cond.wait(self._linked[0][0] - now)
                    else:
                        self._cond.wait()
                generation, stopping = self._requested, self._stopping
            last = time.monotonic()
            try:
                self._round(force=forced)
            except Exception as exc:  # the janitor must never die; a restart finishes
                event("store.blob.janitor_failed", level=logging.ERROR, error=repr(exc))
            with self._cond:
                self._completed = max(self._completed, generation)
                self._cond.notify_all()
            if stopping:
                return

    def _round(self, *, force: bool) -> None:
        with self._cond:
            moves, self._moves = self._moves, set()
            syncs, self._syncs = self._syncs, []
        store = self._store
        dirs: set[Path] = set()
        linked: list[str] = []
        for blob_id in sorted(moves):
            try:
                parent = store._link_address(blob_id, dirs)
            except OSError as exc:  # e.g. disk full: the blob stays readable in new/
                event("store.blob.move_failed", level=logging.WARNING, blob=blob_id,
                      error=exc.strerror)  # fmt: skip
                continue
            if parent is not None:
                dirs.add(parent)
                linked.append(blob_id)
        for sync_dirs, _ids, _done in syncs:
            dirs |= sync_dirs
        for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
            fsync_dir(directory)  # raises: nothing below runs, the journal stays as it is
        for _dirs, ids, done in syncs:
            done(ids)
        now = time.monotonic()
        with self._cond:
            self._linked.extend((now + UNLINK_DELAY, b) for b in linked)
            due = [b for t, b in self._linked if force or t <= now]
            self._linked = [] if force else [(t, b) for t, b in self._linked if t > now]
        for blob_id in due:
            store._drop_new_name(blob_id)  # the address is durable: one name is enough


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
        """Sync the data, extract the body's searchable text for the full-text index
        (``textindex.py``), then install it in ``new/`` durably; blocking."""
        f = self._file
        if f is None:
            raise StoreError("blob writer already committed or aborted")
        self._file = None
        try:
            f.flush()
            sync_data(f.fileno())
        except BaseException:
            f.close()
            _unlink_quietly(self._temp)
            raise
        f.close()
        blob_id = self._hash.hexdigest()
        # Off the database thread, from our own file: the unit only INSERTs the text.
        texts = self._store.texts
        texts.prepare(blob_id, self._temp, self._size)
        try:
            self._store._install(self._temp, blob_id)
        except BaseException:
            texts.discard(blob_id)
            _unlink_quietly(self._temp)
            raise
        return BlobRef(id=blob_id, size=self._size)

    def abort(self) -> None:
        """Drop the body; safe to call more than once."""
        f = self._file
        self._file = None
        if f is not None:
            f.close()
            _unlink_quietly(self._temp)
