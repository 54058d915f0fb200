"""Content-addressed message bodies on disk: one file per body, named by its SHA-256.

Layout (docs/data-directory.md): ``blobs/ab/cd/<64 hex>`` holds a body at its content
address; ``blobs/new/<64 hex>`` holds a body committed recently (the *journal* of blobs that
may not be referenced by the database yet); ``tmp/<random>.tmp`` holds bodies being written.

Writing (``FileBlobWriter``): chunks stream into ``tmp/<random>.tmp`` while SHA-256 is computed
incrementally; ``commit`` renames the file to ``blobs/new/<sha256>``. Two ways to durability:

* a *small* body (at most ``INLINE_MAX`` octets, kept in memory by its writer too) is not
  fsynced at all: it becomes a *pending body*, and the unit of work that stores the message
  writes it into the database's body journal (``refs.used``, table ``blob_journal``) in the
  same transaction, so the group-committed WAL fsync makes body and message durable at once.
  "250" costs no per-message fsync: one WAL fsync per group of concurrent messages;
* a larger body gets an fsync of its data, and the writer waits for a *group* fsync of
  ``blobs/new/`` (``dirsync.DirSync``: writers committing at the same moment share one).

When the same content is already stored (in ``new/`` or at its address), nothing is renamed
and the temp file is removed.

After the commit of a unit that refers to a blob, the *janitor* thread moves it from ``new/``
to its address: fsync of the data of a pending body (many in parallel), hard link, fsync of
the fan-out directories (once per round, for every blob of the round), then the journal row
may go (the store deletes it in a later transaction) and the ``new/`` name is unlinked (a
little later, so that a reader that just looked the blob up still finds it there). At every
moment a referenced blob has at least one durable copy: its journal row or a durable name.

Because ``new/`` only ever holds blobs in flight and blobs waiting for the janitor, the
start-up sweep (``recover``) is O(blobs in flight at a crash): journalled bodies are written
to their address first (fsynced: the journal is the durable copy), then a blob in ``new/``
that a message or queue entry refers to is moved to its address, any other is deleted. No
per-message marker file or directory fsync is needed. (Pending markers
``tmp/<sha256>.<random>.pending`` of earlier Hato versions are still swept at start.)

The other half of the journal is the ``orphan_blobs`` table (blobs whose last message was
removed; see ``store.py``); their unlinks are made durable by the janitor too (one fsync per
directory per round, off the database thread), and only then may their rows go.

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

import concurrent.futures
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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
_MARKER = re.compile(r"([0-9a-f]{64})\.[0-9a-f]+\.pending")  # earlier Hato versions
_CHUNK = 1 << 16
NEW_DIR = "new"
PIN_TTL = 3600.0  # seconds a committed blob waits for a unit that stores it
UNLINK_DELAY = 2.0  # seconds a moved blob keeps its new/ name (readers that just found it)
ROUND_INTERVAL = 0.1  # seconds between janitor rounds: lets a round gather many blobs
INLINE_MAX = 256 * 1024  # octets: bodies up to this size are journalled in the database
INLINE_BUDGET = 64 << 20  # octets of pending bodies in memory; beyond, writers fsync
SYNC_THREADS = 16  # parallel data fsyncs of the janitor (the disk merges their journals)

Referenced = Callable[[str], bool]
Cleared = Callable[[set[str]], None]
Dirs = set[str]  # directories whose entries changed (to fsync)


@dataclass(frozen=True, slots=True)
class _Pin:
    fresh: bool  # this writer put the body into new/ (False: the content existed already)
    since: float  # monotonic time of the writer's commit


def _checked(blob_id: str) -> str:
    if not _BLOB_ID.fullmatch(blob_id):
        raise NotFound(f"invalid blob id {blob_id!r}")
    return blob_id


def _unlink_quietly(path: str | Path) -> bool:
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
        self._root = str(blob_dir)  # string paths on the hot paths: pathlib is slow
        self._new_root = str(self.new_dir)
        self._clock = clock
        self._lock = threading.Lock()
        # blob id -> one pin per writer that committed it and whose unit has not committed.
        self._pins: dict[str, list[_Pin]] = {}
        self._new_sync = DirSync(self.new_dir)
        # Small bodies not fsynced by their writer, until their file is durable (refs.py).
        self._bodies: dict[str, bytes] = {}
        self._body_bytes = 0
        self._materialized: set[str] = set()  # durable now: their journal rows can go
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

    def _address_s(self, blob_id: str) -> str:
        blob_id = _checked(blob_id)
        return f"{self._root}/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"

    def _new_s(self, blob_id: str) -> str:
        return f"{self._new_root}/{_checked(blob_id)}"

    def path(self, blob_id: str) -> Path:
        """The file holding the blob now (in ``new/`` or at its address). A blob leaves
        ``new/`` only ``UNLINK_DELAY`` after its address is durable, so the path stays
        usable for a moment; ``open`` is the race-free way to read."""
        new = self._new_s(blob_id)
        return Path(new if os.path.isfile(new) else self._address_s(blob_id))

    # -- the BlobStore protocol --------------------------------------------------------------
    def writer(self) -> FileBlobWriter:
        return FileBlobWriter(self)

    def open(self, blob_id: str) -> BinaryIO:
        # new/ first: the janitor links the address before it unlinks the new/ name, so a
        # miss in new/ followed by a miss at the address means the blob is gone.
        for path in (self._new_s(blob_id), self._address_s(blob_id)):
            try:
                return open(path, "rb")  # the caller closes it
            except FileNotFoundError:
                continue
        raise NotFound(f"blob {blob_id} does not exist")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def exists(self, blob_id: str) -> bool:
        try:
            return os.path.isfile(self._new_s(blob_id)) or os.path.isfile(self._address_s(blob_id))
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
    def take_inline(self, size: int) -> bool:
        """May a body of ``size`` octets be journalled instead of fsynced? (memory budget)"""
        with self._lock:
            return self._body_bytes + size <= INLINE_BUDGET

    def _install(self, temp: Path, blob_id: str, *, body: bytes | None) -> None:
        """Move a complete temp file into ``new/``: its data synced (``body`` None), or not
        (``body`` given: it is journalled by the unit that stores it); identical content
        already stored is shared instead. Blocks until the blob is durable or journalled."""
        new = self._new_s(blob_id)
        since = self._clock.monotonic()
        with self._lock:
            if blob_id in self._bodies:
                fresh, ticket = False, 0  # pending: our unit journals it too
            elif os.path.exists(new):
                fresh, ticket = False, self._new_sync.current()  # its rename may be in flight
            elif os.path.exists(self._address_s(blob_id)):
                fresh, ticket = False, 0  # durable since its move
            else:
                os.rename(temp, new)
                fresh = True
                if body is None:
                    ticket = self._new_sync.changed()
                else:
                    ticket = 0  # the journal row makes it durable, not new/
                    self._bodies[blob_id] = body
                    self._body_bytes += len(body)
            self._pins.setdefault(blob_id, []).append(_Pin(fresh, since))
        if not fresh:
            _unlink_quietly(temp)  # identical content already stored: drop our copy
        if ticket:
            self._new_sync.wait(ticket)

    def pending_body(self, blob_id: str) -> bytes | None:
        """The body a unit storing ``blob_id`` must journal, if its file is not durable
        (``refs.PendingBodies``; called on the database thread)."""
        with self._lock:
            return self._bodies.get(blob_id)

    def _drop_body(self, blob_id: str) -> bool:
        """Forget a pending body (under ``_lock``); True if there was one."""
        body = self._bodies.pop(blob_id, None)
        if body is None:
            return False
        self._body_bytes -= len(body)
        return True

    def take_materialized(self) -> set[str]:
        """Blobs made durable at their address whose journal rows can be deleted now: not
        those pending again (deleted and written anew since), whose rows are needed."""
        with self._lock:
            done = {b for b in self._materialized if b not in self._bodies}
            self._materialized -= done
            return done

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
        dirs: set[str] = set()
        ids: set[str] = set()
        with self._lock:
            for blob_id in blob_ids:
                if not self._pins.get(blob_id):
                    dirs.update(self._unlink_blob(blob_id))
                    ids.add(blob_id)
        if ids:
            self._janitor.sync(dirs, ids, done)

    def _unlink_blob(self, blob_id: str) -> list[str]:
        """Unlink both names of a blob (under ``_lock``); returns the directories changed."""
        self._drop_body(blob_id)  # unreferenced and unpinned: no unit will journal it
        dirs = []
        for path in (self._new_s(blob_id), self._address_s(blob_id)):
            if _unlink_quietly(path):
                dirs.append(os.path.dirname(path))
        return dirs

    # -- used by the janitor -----------------------------------------------------------------
    def _link_address(self, blob_id: str, created: Dirs) -> str | None:
        """Give a blob of ``new/`` its address (not yet durable); returns the directory to
        fsync, None when the blob left new/."""
        new, final = self._new_s(blob_id), self._address_s(blob_id)
        parent = os.path.dirname(final)
        for directory in (os.path.dirname(parent), parent):
            if not os.path.isdir(directory):
                try:
                    os.mkdir(directory, 0o700)
                except FileExistsError:
                    pass
                created.add(os.path.dirname(directory))  # its entry needs the parent's fsync
        with self._lock:  # consistent with writers' dedup checks and with deletions
            try:
                os.link(new, final)
            except FileNotFoundError:
                return None  # deleted meanwhile
            except FileExistsError:
                pass  # linked by an earlier round (or before a restart)
        return parent

    def _sync_pending(
        self, blob_ids: Sequence[str], pool: concurrent.futures.Executor
    ) -> list[str]:
        """fsync the data of the pending bodies among ``blob_ids`` in parallel; returns the
        ids synced (a file deleted meanwhile is left out)."""

        def sync(blob_id: str) -> bool:
            try:
                fd = os.open(self._new_s(blob_id), os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                sync_data(fd)
            finally:
                os.close(fd)
            return True

        with self._lock:
            pending = [b for b in blob_ids if b in self._bodies]
        if len(pending) <= 2:
            return [b for b in pending if sync(b)]
        return [b for b, ok in zip(pending, pool.map(sync, pending), strict=True) if ok]

    def _durable(self, blob_ids: Iterable[str]) -> None:
        """These pending bodies are durable at their address: no unit journals them any
        more, and their journal rows may go."""
        with self._lock:
            for blob_id in blob_ids:
                if self._drop_body(blob_id):
                    self._materialized.add(blob_id)

    def _drop_new_name(self, blob_id: str) -> None:
        """Unlink ``new/<id>`` once it is the same file as the durable address."""
        new, final = self._new_s(blob_id), self._address_s(blob_id)
        with self._lock:
            try:
                a, b = os.stat(new), os.stat(final)
            except FileNotFoundError:
                return
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                os.unlink(new)

    # -- start-up ------------------------------------------------------------------------------
    def recover(
        self, referenced: Referenced, journal: Sequence[tuple[str, bytes]]
    ) -> tuple[int, int]:
        """Before serving, after a crash or not: write journalled bodies to their address,
        remove temp files, give referenced blobs of ``new/`` their address, delete
        unreferenced ones, and sweep old-style pending markers. Returns (temp files removed,
        blobs deleted); blocking. The caller deletes the journal rows afterwards."""
        if not self.new_dir.is_dir():
            self.new_dir.mkdir(mode=0o700)
            fsync_dir(self.blob_dir)
        self._write_journalled(journal)
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
        dirs: Dirs = set()
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

    def _write_journalled(self, journal: Sequence[tuple[str, bytes]]) -> None:
        """Write each journalled body (the durable copy: a file in ``new/`` may have lost
        its unsynced data in a power failure) to its address, fsynced, replacing any copy."""
        dirs: set[Path] = set()
        for blob_id, data in journal:
            if not _BLOB_ID.fullmatch(blob_id) or hashlib.sha256(data).hexdigest() != blob_id:
                event("store.blob.journal_invalid", level=logging.ERROR, blob=blob_id[:80])
                continue
            final = self.address(blob_id)
            for directory in (final.parent.parent, final.parent):
                if not directory.is_dir():
                    directory.mkdir(mode=0o700)
                    dirs.add(directory.parent)
            temp = self.tmp_dir / f"{secrets.token_hex(16)}.tmp"
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
                f.flush()
                sync_data(f.fileno())
            os.replace(temp, final)
            dirs.add(final.parent)
            _unlink_quietly(self._new(blob_id))  # its own copy may be torn
        for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
            fsync_dir(directory)


class _Janitor:
    """Background thread of a ``FileBlobStore``: moves committed blobs from ``new/`` to their
    address and makes deletions durable, in rounds (one fsync per directory per round)."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._moves: set[str] = set()
        self._syncs: list[tuple[Dirs, set[str], Cleared]] = []
        self._linked: list[tuple[float, str]] = []  # (unlink after, blob id), oldest first
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopping = False
        self._requested = 0  # flush generations
        self._completed = 0

    def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(SYNC_THREADS, "hato-blobs-sync")
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
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

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

    def sync(self, dirs: Dirs, ids: set[str], done: Cleared) -> None:
        with self._cond:
            self._syncs.append((dirs, ids, done))
            self._cond.notify_all()

    def _main(self) -> None:
        last = time.monotonic()
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
        pool = self._pool or concurrent.futures.ThreadPoolExecutor(1)
        try:
            self._round_in(store, sorted(moves), syncs, pool, force=force)
        finally:
            if pool is not self._pool:
                pool.shutdown()

    def _round_in(
        self,
        store: FileBlobStore,
        moves: list[str],
        syncs: list[tuple[Dirs, set[str], Cleared]],
        pool: concurrent.futures.Executor,
        *,
        force: bool,
    ) -> None:
        synced = store._sync_pending(moves, pool)  # data of journalled bodies, in parallel
        dirs: Dirs = set()
        linked: list[str] = []
        for blob_id in moves:
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
        # An error raises here: nothing below runs, the journal stays as it is. One by one:
        # the first fsync commits the changes of every directory of the round (journalling
        # file systems), the others find theirs done.
        for directory in dirs:
            fsync_dir(directory)
        store._durable(set(synced).intersection(linked))
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
        self._small: list[bytes] | None = []  # the body while it may be journalled

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise StoreError("blob writer already committed or aborted")
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)
        if self._small is not None:
            if self._size <= INLINE_MAX:
                self._small.append(bytes(data))
            else:
                self._small = None  # too large: fsynced at commit

    @property
    def size(self) -> int:
        return self._size

    def commit(self) -> BlobRef:
        """Make the body durable (a large one: fsync; a small one: handed to the unit that
        stores it, to journal), extract its searchable text for the full-text index
        (``textindex.py``), then install it in ``new/``; blocking."""
        f = self._file
        if f is None:
            raise StoreError("blob writer already committed or aborted")
        self._file = None
        small, self._small = self._small, None
        body = (
            b"".join(small) if small is not None and self._store.take_inline(self._size) else None
        )
        try:
            f.flush()
            if body is None:
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
            self._store._install(self._temp, blob_id, body=body)
        except BaseException:
            texts.discard(blob_id)
            _unlink_quietly(self._temp)
            raise
        return BlobRef(id=blob_id, size=self._size)

    def abort(self) -> None:
        """Drop the body; safe to call more than once."""
        f = self._file
        self._file = None
        self._small = None
        if f is not None:
            f.close()
            _unlink_quietly(self._temp)
