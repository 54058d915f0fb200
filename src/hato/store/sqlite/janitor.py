"""The blob janitor of the embedded store: the background thread that finishes what blob
writers and deletions leave to be made durable (``blobs.py`` describes the layout).

Each *round* (at most every ``ROUND_INTERVAL`` seconds, so that one round gathers the blobs
of many messages): fsync the data of journalled bodies (many in parallel: the disk merges
their journal commits; a body still in memory is written first), give each committed blob
its address (hard link from ``new/``), fsync every directory changed in the round once (new
fan-out directories, addresses, directories of durable deletions), then tell the store
which journal rows and orphan rows may go, and unlink the ``new/`` names ``UNLINK_DELAY``
seconds later (a reader that just looked a blob up still finds it). At every moment a
referenced blob keeps at least one durable copy: its journal row or a durable name.

Moves run *behind delivery*: in the first lull of ``QUIET`` seconds without a newly
committed blob, at most ``MAX_DELAY`` seconds later, or at once when the bodies waiting in
memory use half their budget. A burst of mail thus pays for no file of its own while it
arrives (its bodies are durable in the database journal, readable from memory), and its
files are written in the lull after it.

Leaves out: garbage collection of empty fan-out directories.

Security: only touches paths the blob store built from checked blob ids; an error in a round
is logged and the journal stays as it was (a restart finishes the work).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from hato.core.log import event
from hato.store.sqlite.dirsync import fsync_dir

__all__ = ["ROUND_INTERVAL", "SYNC_THREADS", "UNLINK_DELAY", "Cleared", "Dirs", "Janitor"]

UNLINK_DELAY = 2.0  # seconds a moved blob keeps its new/ name (readers that just found it)
ROUND_INTERVAL = 0.1  # seconds between janitor rounds: lets a round gather many blobs
QUIET = 0.25  # seconds without a new committed blob before moves run (behind delivery)
MAX_DELAY = 5.0  # seconds a committed blob waits for its move at most
SYNC_THREADS = 16  # parallel data fsyncs of the janitor (the disk merges their journals)

Cleared = Callable[[set[str]], None]
Dirs = set[str]  # directories whose entries changed (to fsync)


class Movable(Protocol):
    """What the janitor needs from the blob store (``blobs.FileBlobStore``)."""

    def sync_pending(
        self, blob_ids: Sequence[str], pool: concurrent.futures.Executor
    ) -> list[str]: ...

    def link_address(self, blob_id: str, created: Dirs) -> str | None: ...

    def mark_durable(self, blob_ids: Iterable[str]) -> None: ...

    def drop_new_name(self, blob_id: str) -> None: ...

    def pressed(self) -> bool:
        """Bodies waiting in memory take much of their budget: move them now."""
        ...


class Janitor:
    """Background thread of a blob store (``blobs.FileBlobStore``): moves committed blobs
    from ``new/`` to their address and makes deletions durable, in rounds (one fsync per
    directory per round)."""

    def __init__(self, store: Movable) -> None:
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
        self._first_move = 0.0  # monotonic time of the oldest waiting move
        self._last_move = 0.0  # ... and of the newest

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
            now = time.monotonic()
            first = not self._moves
            if first:
                self._first_move = now
            self._last_move = now
            self._moves.add(blob_id)
            if first:  # later ones: the waiting thread looks again within ROUND_INTERVAL
                self._cond.notify_all()

    def sync(self, dirs: Dirs, ids: set[str], done: Cleared) -> None:
        with self._cond:
            self._syncs.append((dirs, ids, done))
            self._cond.notify_all()

    def _due(self, now: float, last: float) -> float:
        """Seconds until the next round with moves or deletions (<= 0: now; under
        ``_cond``). Moves wait for a lull: ``QUIET`` seconds without a new one (their
        bodies are durable in the journal meanwhile, and readable from memory or ``new/``),
        at most ``MAX_DELAY`` seconds, and not at all once the bodies waiting in memory
        press on their budget (beyond it, writers would fsync themselves)."""
        due = last + ROUND_INTERVAL
        if not self._syncs and not self._store.pressed():
            due = max(due, min(self._last_move + QUIET, self._first_move + MAX_DELAY))
        return due - now

    def _main(self) -> None:
        last = time.monotonic()
        while True:
            with self._cond:
                while True:
                    forced = self._stopping or self._completed < self._requested
                    now = time.monotonic()
                    if forced:
                        break
                    if self._moves or self._syncs:
                        wait = self._due(now, last)
                        if wait <= 0:
                            break
                        self._cond.wait(min(wait, ROUND_INTERVAL))  # pressure may build
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
        store: Movable,
        moves: list[str],
        syncs: list[tuple[Dirs, set[str], Cleared]],
        pool: concurrent.futures.Executor,
        *,
        force: bool,
    ) -> None:
        synced = store.sync_pending(moves, pool)  # data of journalled bodies, in parallel
        dirs: Dirs = set()
        linked: list[str] = []
        for blob_id in moves:
            try:
                parent = store.link_address(blob_id, dirs)
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
        store.mark_durable(set(synced).intersection(linked))
        for _dirs, ids, done in syncs:
            done(ids)
        now = time.monotonic()
        with self._cond:
            self._linked.extend((now + UNLINK_DELAY, b) for b in linked)
            due = [b for t, b in self._linked if force or t <= now]
            self._linked = [] if force else [(t, b) for t, b in self._linked if t > now]
        for blob_id in due:
            store.drop_new_name(blob_id)  # the address is durable: one name is enough
