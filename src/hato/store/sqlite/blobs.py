"""Content-addressed message bodies: one file per body, named by its SHA-256 (bodies of at most
``refs.STORED_MAX`` octets live in the database instead: see below).

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
and the temp file is removed. A small body is kept in memory by its writer and never
written by it: its commit does no I/O at all, so the SMTP session runs it on the event loop
(``FileBlobWriter.quick``) instead of paying a thread hop per message; readers get it from
memory (``open``) until the janitor has written its file.

After the commit of a unit that refers to a blob, the *janitor* thread (``janitor.py``)
moves it from ``new/`` to its address: fsync of the data of a pending body (many in
parallel), hard link, fsync of the fan-out directories (once per round, for every blob of
the round), then the journal row may go (the store deletes it in a later transaction) and
the ``new/`` name is unlinked (a little later, so that a reader that just looked the blob up
still finds it there). At every moment a referenced blob has at least one durable copy: its
journal row or a durable name.

A pending body of at most ``refs.STORED_MAX`` octets is different: the unit stores it in
the database for good (``blob_bodies``) rather than journalling it, so the janitor never
writes a file for it; once every unit that pinned it has committed, it leaves memory and
``open`` reads it from the database (``attach_stored``).

A body an SMTP worker appended to its *body log* (``tmp/<random>.log``, fsynced in groups
by the worker: ``hato.store.remote``) is installed as a ``LoggedBody``, a pending body that
stays on disk: the unit that stores its message journals the reference (``blob_log``), not
the octets, and the janitor reads it from the log to write its file. A log file is deleted
once its worker has closed it and none of its bodies is pending any more.

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

import asyncio
import concurrent.futures
import hashlib
import io
import itertools
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hato.core.clock import Clock
from hato.core.errors import NotFound, StoreError
from hato.core.log import event
from hato.store.model import BlobRef
from hato.store.sqlite.dirsync import DirSync, fsync_dir, sync_data
from hato.store.sqlite.janitor import Cleared, Dirs, Janitor
from hato.store.sqlite.refs import STORED_MAX

__all__ = ["PIN_TTL", "FileBlobStore", "FileBlobWriter", "fsync_dir"]

_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_TEMP_NAME = re.compile(r"[0-9a-f]{32}\.tmp")
_LOG_NAME = re.compile(r"[0-9a-f]{32}\.log")  # a worker's body log (hato.store.remote)
_MARKER = re.compile(r"([0-9a-f]{64})\.[0-9a-f]+\.pending")  # earlier Hato versions
_CHUNK = 1 << 16
NEW_DIR = "new"
PIN_TTL = 3600.0  # seconds a committed blob waits for a unit that stores it
INLINE_MAX = 256 * 1024  # octets: bodies up to this size are journalled in the database
INLINE_BUDGET = 64 << 20  # octets of pending bodies in memory; beyond, writers fsync

Referenced = Callable[[str], bool]
Stored = Callable[[str], "bytes | None"]  # a body stored in the database (refs.StoredReader)


class _LogSlice(io.RawIOBase):
    """``size`` octets at ``offset`` of an open body log, as a seekable file (owns ``fd``)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._offset, self._size = fd, offset, size
        self._pos = 0  # within the body

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + pos < 0:
            raise ValueError("negative seek position")
        self._pos = base + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = max(0, min(len(buffer), self._size - self._pos))
        data = os.pread(self._fd, want, self._offset + self._pos) if want else b""
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


@dataclass(frozen=True, slots=True)
class LoggedBody:
    """A pending body durable in a worker's body log: ``size`` octets at ``offset``."""

    path: str
    offset: int
    size: int

    def open(self) -> BinaryIO:
        """A reader of the body in its log (blocking); OSError when the log is gone."""
        fd = os.open(self.path, os.O_RDONLY)
        return io.BufferedReader(_LogSlice(fd, self.offset, self.size))

    def read(self) -> bytes:
        """The body (blocking); OSError when the log is gone or short."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, self.size, self.offset)
        finally:
            os.close(fd)
        if len(data) != self.size:
            raise OSError(f"body log {self.path} is short")
        return data


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
        self.inline_max = INLINE_MAX  # bodies a worker keeps in memory (hato.store.remote)
        self.new_dir = blob_dir / NEW_DIR
        self._root = str(blob_dir)  # string paths on the hot paths: pathlib is slow
        self._new_root = str(self.new_dir)
        self._clock = clock
        self._lock = threading.Lock()
        # blob id -> one pin per writer that committed it and whose unit has not committed.
        self._pins: dict[str, list[_Pin]] = {}
        self._new_sync = DirSync(self.new_dir)
        # Small bodies not fsynced by their writer, until their file is durable (refs.py).
        self._bodies: dict[str, bytes | LoggedBody] = {}
        self._body_bytes = 0  # of the bodies held in memory (not the logged ones)
        self._log_refs: dict[str, int] = {}  # body log -> its bodies pending here
        self._log_closed: set[str] = set()  # body logs their worker will not append to
        self._materialized: set[str] = set()  # durable now: their journal rows can go
        self._stored: Stored | None = None
        self._janitor = Janitor(self)

    def attach_stored(self, reader: Stored) -> None:
        """Where bodies stored in the database are read (set by the store once it is open)."""
        self._stored = reader

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
        # A pending body first: the janitor writes its file (and links its address) before
        # it drops the body from memory. Then new/: the janitor links the address before it
        # unlinks the new/ name, so a miss in new/ followed by a miss at the address means
        # the blob is gone.
        body = self._bodies.get(_checked(blob_id))  # one dict read: atomic, no lock needed
        if isinstance(body, bytes):
            return io.BytesIO(body)
        if body is not None:
            try:
                return body.open()
            except OSError:
                pass  # written to its file and its log deleted meanwhile
        for path in (self._new_s(blob_id), self._address_s(blob_id)):
            try:
                return open(path, "rb")  # the caller closes it
            except FileNotFoundError:
                continue
        # Stored in the database: it left memory only after the unit storing it committed.
        stored = self._stored(blob_id) if self._stored is not None else None
        if stored is not None:
            return io.BytesIO(stored)
        raise NotFound(f"blob {blob_id} does not exist")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    def exists(self, blob_id: str) -> bool:
        try:
            if _checked(blob_id) in self._bodies:
                return True
            if os.path.isfile(self._new_s(blob_id)) or os.path.isfile(self._address_s(blob_id)):
                return True
            return self._stored is not None and self._stored(blob_id) is not None
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
    def pressed(self) -> bool:
        """Half the memory budget of pending bodies is used (the janitor moves at once)."""
        return self._body_bytes * 2 >= INLINE_BUDGET

    def take_inline(self, size: int) -> bool:
        """May a body of ``size`` octets be journalled instead of fsynced? (memory budget;
        read without the lock: a soft limit, and the janitor holds the lock for syscalls)"""
        return self._body_bytes + size <= INLINE_BUDGET

    def _install(self, temp: str | None, blob_id: str, *, body: bytes | None) -> None:
        """Install a complete body: a temp file moved into ``new/`` with its data synced
        (``body`` None), or a body kept in memory (``temp`` None, ``body`` given: it is
        journalled by the unit that stores it, and the janitor writes its file); identical
        content already stored is shared instead. Blocks until the blob is durable or
        journalled (a body in memory: never)."""
        new = self._new_s(blob_id)
        since = self._clock.monotonic()
        if temp is None:
            assert body is not None
            with self._lock:
                # No look at the disk (no syscall under the lock, on the event loop): if the
                # same content is stored already, the unit journals it once more and the
                # janitor writes an identical file over it, which changes nothing.
                fresh = blob_id not in self._bodies
                if fresh:
                    self._bodies[blob_id] = body
                    self._body_bytes += len(body)
                self._pins.setdefault(blob_id, []).append(_Pin(fresh, since))
            return
        with self._lock:
            if blob_id in self._bodies:
                fresh, ticket = False, 0  # pending: our unit journals it too
            elif os.path.exists(new):
                fresh, ticket = False, self._new_sync.current()  # its rename may be in flight
            elif os.path.exists(self._address_s(blob_id)):
                fresh, ticket = False, 0  # durable since its move
            else:
                fresh = True
                os.rename(temp, new)
                ticket = self._new_sync.changed()
            self._pins.setdefault(blob_id, []).append(_Pin(fresh, since))
        if not fresh:
            _unlink_quietly(temp)  # identical content already stored: drop our copy
        if ticket:
            self._new_sync.wait(ticket)

    def install_logged(self, blob_id: str, size: int, *, log: str, offset: int) -> BlobRef:
        """A body a worker appended to its body log ``log`` at ``offset`` and fsynced there:
        pending until the janitor has written its file (no I/O here: the path is checked,
        not touched); the unit that stores it journals the reference."""
        _checked(blob_id)
        self._check_log(log)
        if size < 0 or offset < 0:
            raise StoreError("install: negative size or offset")
        since = self._clock.monotonic()
        with self._lock:
            fresh = blob_id not in self._bodies
            if fresh:
                self._bodies[blob_id] = LoggedBody(log, offset, size)
                self._log_refs[log] = self._log_refs.get(log, 0) + 1
            self._pins.setdefault(blob_id, []).append(_Pin(fresh, since))
        return BlobRef(id=blob_id, size=size)

    def log_closed(self, log: str) -> None:
        """The worker appends nothing more to ``log``: delete it once none of its bodies
        is pending."""
        self._check_log(log)
        with self._lock:
            self._log_closed.add(log)
            self._release_log(log, 0)

    def _check_log(self, log: str) -> None:
        name = os.path.basename(log)
        if os.path.dirname(log) != str(self.tmp_dir) or not _LOG_NAME.fullmatch(name):
            raise StoreError(f"install: {log!r} is not a body log of this store")

    def _release_log(self, log: str, count: int) -> None:
        """Drop ``count`` references to a body log (under ``_lock``); unlink it when closed
        and unreferenced (its bodies are durable at their addresses, or were dropped)."""
        left = self._log_refs.get(log, 0) - count
        if left > 0:
            self._log_refs[log] = left
            return
        self._log_refs.pop(log, None)
        if log in self._log_closed:
            self._log_closed.discard(log)
            _unlink_quietly(log)

    def install(
        self, blob_id: str, size: int, *, body: bytes | None = None, temp: str | None = None
    ) -> BlobRef:
        """A body written by another process (an SMTP worker, hato.store.remote), installed
        as ``FileBlobWriter.commit`` would: ``body`` journalled by the unit that stores it
        (fsynced here instead when over the memory budget), or ``temp``, a file the worker
        fsynced in ``tmp/``, renamed into ``new/`` (blocking: the group fsync of ``new/``).
        The id and the temp path are checked before any file is touched; the content is
        the worker's (one program, our own processes: it is not hashed again)."""
        _checked(blob_id)
        if (body is None) == (temp is None):
            raise StoreError("install: exactly one of body and temp")
        if body is not None:
            if len(body) != size:
                raise StoreError("install: body size mismatch")
            if self.take_inline(size):
                self._install(None, blob_id, body=body)
                return BlobRef(id=blob_id, size=size)
            writer = FileBlobWriter(self)  # over the memory budget: fsynced like a large body
            writer._small = None
            writer._spill((body,))
            temp = writer._temp
            f, writer._file = writer._file, None
            assert f is not None
            try:
                f.flush()
                sync_data(f.fileno())
            finally:
                f.close()
        assert temp is not None
        name = os.path.basename(temp)
        if os.path.dirname(temp) != str(self.tmp_dir) or not _TEMP_NAME.fullmatch(name):
            raise StoreError(f"install: {temp!r} is not a temp file of this store")
        self._install(temp, blob_id, body=None)
        return BlobRef(id=blob_id, size=size)

    def journal_entry(self, blob_id: str) -> bytes | LoggedBody | None:
        """What a unit storing ``blob_id`` must journal, if its file is not durable: the
        body, or where it is durable in a body log (``refs.PendingBodies``; called on the
        database thread)."""
        with self._lock:
            return self._bodies.get(blob_id)

    def pending_body(self, blob_id: str) -> bytes | None:
        """A pending body held in memory (not one in a body log: ``open`` reads those)."""
        body = self.journal_entry(blob_id)
        return body if isinstance(body, bytes) else None

    def _drop_body(self, blob_id: str) -> bool:
        """Forget a pending body (under ``_lock``); True if there was one."""
        body = self._bodies.pop(blob_id, None)
        if body is None:
            return False
        if isinstance(body, bytes):
            self._body_bytes -= len(body)
        else:
            self._release_log(body.path, 1)
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
        (the database now refers to the blob durably) and let the janitor move it; a body
        stored in the database leaves memory once no writer pins it (a pinning writer's
        unit must still find it, in case the rows are deleted before that unit runs)."""
        with self._lock:
            pins = self._pins.get(blob_id)
            if pins:
                pins.pop(next((i for i, p in enumerate(pins) if p.fresh), 0))
                if not pins:
                    del self._pins[blob_id]
            if self._is_stored(blob_id):
                if blob_id not in self._pins:
                    self._drop_body(blob_id)
                return
        self._janitor.move(blob_id)

    def _is_stored(self, blob_id: str) -> bool:
        """A pending body the unit stores in the database (under ``_lock``)."""
        body = self._bodies.get(blob_id)
        return isinstance(body, bytes) and len(body) <= STORED_MAX

    def abandoned(self, *, older_than: float) -> list[str]:
        """Blobs every pin of which was taken before ``older_than`` (monotonic clock)."""
        with self._lock:
            return [b for b, pins in self._pins.items() if all(p.since < older_than for p in pins)]

    def forget(self, blob_id: str, *, referenced: bool) -> bool:
        """Drop every pin of an abandoned blob: its writers never got a unit committed
        (e.g. every delivery was over quota). Deletes it unless ``referenced``."""
        with self._lock:
            self._pins.pop(blob_id, None)
            if referenced and self._is_stored(blob_id):
                self._drop_body(blob_id)  # the unit that refers to it stored it
                return False
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
    def link_address(self, blob_id: str, created: Dirs) -> str | None:
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

    def sync_pending(self, blob_ids: Sequence[str], pool: concurrent.futures.Executor) -> list[str]:
        """fsync the data of the pending bodies among ``blob_ids`` in parallel; returns the
        ids synced (a file deleted meanwhile is left out)."""

        def sync(blob_id: str) -> bool:
            try:
                fd = os.open(self._new_s(blob_id), os.O_RDONLY)
            except FileNotFoundError:
                return self._write_pending(blob_id)  # a body kept in memory by its writer
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

    def _write_pending(self, blob_id: str) -> bool:
        """Write a pending body kept in memory to ``new/<id>``, its data synced (the janitor,
        before it links the address); False when it was deleted meanwhile."""
        with self._lock:
            body = self._bodies.get(blob_id)
        if body is None:
            return False
        if not isinstance(body, bytes):
            body = body.read()  # the log stays while the body is pending: OSError is real
        temp = f"{self.tmp_dir}/{secrets.token_hex(16)}.tmp"
        try:
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(body)
                f.flush()
                sync_data(f.fileno())
            with self._lock:  # consistent with deletions: never resurrect a deleted blob
                if blob_id not in self._bodies:
                    return False
                os.rename(temp, self._new_s(blob_id))
                temp = ""
        finally:
            if temp:
                _unlink_quietly(temp)
        return True

    def mark_durable(self, blob_ids: Iterable[str]) -> None:
        """These pending bodies are durable at their address: no unit journals them any
        more, and their journal rows may go."""
        with self._lock:
            for blob_id in blob_ids:
                if self._drop_body(blob_id):
                    self._materialized.add(blob_id)

    def drop_new_name(self, blob_id: str) -> None:
        """Unlink ``new/<id>`` once the blob's address exists: the janitor made it durable
        (it is the same file, or, when identical content was stored already and a body kept
        in memory was written again, an identical one: both names are content addresses)."""
        new, final = self._new_s(blob_id), self._address_s(blob_id)
        with self._lock:
            if os.path.exists(final):
                _unlink_quietly(new)

    # -- start-up ------------------------------------------------------------------------------
    def recover(
        self,
        referenced: Referenced,
        journal: Sequence[tuple[str, bytes]],
        logged: Sequence[tuple[str, str, int, int]] = (),
    ) -> tuple[int, int]:
        """Before serving, after a crash or not: write journalled bodies (``journal``: the
        octets; ``logged``: blob id, body log, offset, size) to their address, remove temp
        files and body logs, give referenced blobs of ``new/`` their address, delete
        unreferenced ones, and sweep old-style pending markers. Returns (temp files removed,
        blobs deleted); blocking. The caller deletes the journal rows afterwards."""
        if not self.new_dir.is_dir():
            self.new_dir.mkdir(mode=0o700)
            fsync_dir(self.blob_dir)
        self._write_journalled(itertools.chain(journal, self._read_logged(logged)))
        temps = swept = 0
        for entry in os.scandir(self.tmp_dir):
            marker = _MARKER.fullmatch(entry.name)
            if marker:
                blob_id = marker.group(1)
                if not referenced(blob_id) and self.delete(blob_id):
                    swept += 1  # written, but the message never committed
                os.unlink(entry.path)
            elif entry.name.endswith(".tmp") or _LOG_NAME.fullmatch(entry.name):
                _unlink_quietly(Path(entry.path))
                temps += 1
        dirs: Dirs = set()
        moved: list[str] = []
        for entry in os.scandir(self.new_dir):
            blob_id = entry.name
            if not _BLOB_ID.fullmatch(blob_id):
                continue
            if referenced(blob_id):
                parent = self.link_address(blob_id, dirs)
                if parent is not None:
                    dirs.add(parent)
                    moved.append(blob_id)
            elif self.delete(blob_id):
                swept += 1  # in new/ but no message or queue entry refers to it
        for directory in dirs:
            fsync_dir(directory)
        for blob_id in moved:
            self.drop_new_name(blob_id)
        fsync_dir(self.new_dir)
        fsync_dir(self.tmp_dir)
        return temps, swept

    def _read_logged(
        self, logged: Sequence[tuple[str, str, int, int]]
    ) -> Iterator[tuple[str, bytes]]:
        """The bodies journalled by reference, read from their logs one at a time. A row
        whose log is gone is one whose file the janitor made durable before the crash
        (the log goes only after that, its row a moment later): nothing to write."""
        for blob_id, log, offset, size in logged:
            try:
                self._check_log(log)
                data = LoggedBody(log, offset, size).read()
            except (OSError, StoreError) as exc:
                if not (_BLOB_ID.fullmatch(blob_id) and os.path.isfile(self._address_s(blob_id))):
                    event(
                        "store.blob.log_unreadable",
                        level=logging.ERROR,
                        blob=blob_id[:80],
                        error=str(exc),
                    )
                continue
            yield blob_id, data

    def _write_journalled(self, journal: Iterable[tuple[str, bytes]]) -> None:
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


class FileBlobWriter:
    """Streams one body while hashing it (``hato.store.api.BlobWriter``): in memory while it
    may be journalled (at most ``INLINE_MAX`` octets), to ``tmp/`` beyond."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._temp = ""  # the temp file, once the body has outgrown memory
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._small: list[bytes] | None = []  # the body while it may be journalled
        self._open = True

    def write(self, data: bytes) -> None:
        if not self._open:
            raise StoreError("blob writer already committed or aborted")
        self._hash.update(data)
        self._size += len(data)
        small = self._small
        if small is not None:
            if self._size <= INLINE_MAX:
                small.append(bytes(data))
                return
            self._small = None  # too large to journal: to a file, fsynced at commit
            self._spill(small)
        assert self._file is not None
        self._file.write(data)

    def _spill(self, chunks: Sequence[bytes]) -> None:
        """Create the temp file (on the caller's thread) and write ``chunks`` to it."""
        temp = f"{self._store.tmp_dir}/{secrets.token_hex(16)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._temp = temp
        self._file = os.fdopen(fd, "wb", buffering=_CHUNK)
        for chunk in chunks:
            self._file.write(chunk)

    @property
    def size(self) -> int:
        return self._size

    @property
    def quick(self) -> bool:
        """``commit`` would do no I/O now (a small body, memory budget left): cheap enough
        to call on the event loop, without a thread hop."""
        return self._small is not None and self._store.take_inline(self._size)

    def commit(self) -> BlobRef:
        """Make the body durable and install it in the store, blocking: a small one is kept
        in memory and handed to the unit that stores it, to journal (no file, no fsync: the
        janitor writes its file later); a large one (or a small one beyond the memory
        budget) is fsynced in ``tmp/`` and renamed into ``new/``. (Its searchable text is
        extracted behind delivery, by the store's background indexer: ``textindex.py``.)"""
        if not self._open:
            raise StoreError("blob writer already committed or aborted")
        self._open = False
        small, self._small = self._small, None
        body = b"".join(small) if small is not None else None
        if body is not None and not self._store.take_inline(self._size):
            self._spill((body,))  # over the memory budget: fsynced like a large body
            body = None
        f, self._file = self._file, None
        try:
            if f is not None:
                f.flush()
                if body is None:
                    sync_data(f.fileno())
        except BaseException:
            self._close_and_unlink(f)
            raise
        if f is not None:
            f.close()
        blob_id = self._hash.hexdigest()
        try:
            self._store._install(self._temp if body is None else None, blob_id, body=body)
        except BaseException:
            self._close_and_unlink(None)
            raise
        return BlobRef(id=blob_id, size=self._size)

    async def commit_async(self) -> BlobRef:
        """``commit`` from the event loop: inline when ``quick``, else in a thread."""
        return self.commit() if self.quick else await asyncio.to_thread(self.commit)

    def _close_and_unlink(self, f: BinaryIO | None) -> None:
        if f is not None:
            f.close()
        if self._temp:
            _unlink_quietly(self._temp)

    def abort(self) -> None:
        """Drop the body; safe to call more than once."""
        self._open = False
        self._small = None
        f, self._file = self._file, None
        self._close_and_unlink(f)
        self._temp = ""
