"""The database thread: one SQLite connection, whole units of work, group commit.

Every store call is one *unit of work*: a function ``work(unit) -> result`` submitted to the one
database thread, whose future the caller awaits (one thread hop per transaction, never one per
statement). The thread drains every unit waiting in its queue and runs

* read units first, outside any transaction (the thread is the only writer, so each read sees
  a consistent, committed state; a read never waits for an fsync);
* then all write units in ONE transaction, each inside its own SAVEPOINT: a unit that raises is
  rolled back to its savepoint alone and its future gets the exception; the others go on;
* then one COMMIT (``synchronous=FULL``: durable when it returns), after which the units'
  ``on_commit`` hooks run, then the ``epilogue`` (outside any transaction, still on the
  thread: serial with every unit), then their futures are resolved.

So N concurrent writers cost about one fsync per batch instead of one each ("group commit").
``stats`` counts commits and units so tests can check that batching really happens.

Reads use the same thread and connection (simplest, and SQLite reads are fast): documented in
docs/data-directory.md.

Left out: a separate read connection pool (not needed at this scale), cross-process writers
(one Hato process owns a data directory).

Security: the database file is created with mode 0600 inside the 0700 data directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hato.core.clock import Clock
from hato.core.errors import HatoError, StoreError, TemporaryStoreError
from hato.core.log import event

T = TypeVar("T")
Hook = Callable[[], None]

MAX_BATCH = 512  # units per transaction; bounds the latency a batch adds to its first unit


class Unit:
    """What one unit of work sees: the connection, the unit's time, hooks, and a scratch memo."""

    __slots__ = ("_on_commit", "conn", "memo", "now")

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self.memo: dict[Any, Any] = {}
        self._on_commit: list[Hook] = []

    def on_commit(self, hook: Hook) -> None:
        """Run ``hook`` on the database thread after the COMMIT, if this unit was committed."""
        self._on_commit.append(hook)


@dataclass(frozen=True, slots=True)
class CommitStats:
    """Counters for tests and benchmarks: group commit batches when ``commits < write_units``."""

    commits: int
    write_units: int
    read_units: int
    failed_units: int


@dataclass(slots=True)
class _Job:
    work: Callable[[Unit], Any]
    write: bool
    future: concurrent.futures.Future[Any]


_STOP = object()


def translate_error(exc: BaseException) -> BaseException:
    """Map SQLite errors into the one error tree (CONVENTIONS.md §7); others pass unchanged."""
    if isinstance(exc, HatoError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        # Disk full, I/O error, locked database: may succeed on retry.
        return TemporaryStoreError(f"sqlite: {exc}")
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"sqlite: {exc}")
    return exc


class Database:
    """Owns the database thread and its connection; ``write``/``read`` run units of work."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        setup: Callable[[sqlite3.Connection], None],
        prologue: Callable[[sqlite3.Connection], None] | None = None,
        epilogue: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._path = path
        self._clock = clock
        self._setup = setup
        self._prologue = prologue
        self._epilogue = epilogue
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._commits = 0
        self._write_units = 0
        self._read_units = 0
        self._failed_units = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the thread, open the connection and run ``setup`` (pragmas, migrations)."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name=f"hato-db:{self._path.name}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._closed = True
            raise

    async def close(self) -> None:
        """Run every unit already submitted, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    @property
    def stats(self) -> CommitStats:
        return CommitStats(
            commits=self._commits,
            write_units=self._write_units,
            read_units=self._read_units,
            failed_units=self._failed_units,
        )

    # -- submitting work -------------------------------------------------------------------
    def submit(self, work: Callable[[Unit], T], *, write: bool) -> concurrent.futures.Future[T]:
        """Queue one unit of work; usable from any thread."""
        if self._closed:
            raise StoreError("the store is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Job(work, write, future))
        return future

    async def write(self, work: Callable[[Unit], T]) -> T:
        """Run a mutating unit; returns once its transaction is committed (durable)."""
        return await asyncio.wrap_future(self.submit(work, write=True))

    async def read(self, work: Callable[[Unit], T]) -> T:
        """Run a read-only unit (it must not write)."""
        return await asyncio.wrap_future(self.submit(work, write=False))

    # -- the thread --------------------------------------------------------------------------
    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self._conn = self._open()
            self._setup(self._conn)
        except BaseException as exc:
            if self._conn is not None:
                self._conn.close()
            ready.set_exception(translate_error(exc))
            return
        ready.set_result(None)
        try:
            self._loop(self._conn)
        finally:
            self._conn.close()

    def _open(self) -> sqlite3.Connection:
        fresh = not self._path.exists()
        if fresh:
            # Security: create the file owner-only before SQLite opens it.
            os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a COMMIT is durable when it returns
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _loop(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Job] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            for job in batch:
                if not job.write:
                    self._run_read(conn, job)
            writes = [job for job in batch if job.write]
            if writes:
                self._run_writes(conn, writes)
            if stop:
                return

    def _run_read(self, conn: sqlite3.Connection, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        self._read_units += 1
        unit = Unit(conn, self._clock.now())
        try:
            value = job.work(unit)
        except BaseException as exc:
            job.future.set_exception(translate_error(exc))
        else:
            job.future.set_result(value)

    def _run_writes(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        done: list[tuple[_Job, Unit, bool, Any]] = []  # job, unit, ok, result or exception
        in_tx = False
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue
            unit = Unit(conn, self._clock.now())
            try:
                if not in_tx:
                    conn.execute("BEGIN IMMEDIATE")
                    in_tx = True
                    if self._prologue is not None:
                        self._prologue(conn)
                conn.execute("SAVEPOINT unit")
            except sqlite3.Error as exc:
                in_tx = self._abandon(conn, done, exc)
                done.append((job, unit, False, translate_error(exc)))
                continue
            try:
                value = job.work(unit)
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK TO unit")
                        conn.execute("RELEASE unit")
                    except sqlite3.Error as rb_exc:
                        in_tx = self._abandon(conn, done, rb_exc)
                else:
                    # SQLite rolled the whole transaction back (e.g. disk full): every unit
                    # of this batch so far is lost, not only this one.
                    in_tx = self._abandon(conn, done, exc)
                done.append((job, unit, False, translate_error(exc)))
            else:
                conn.execute("RELEASE unit")
                done.append((job, unit, True, value))
        if in_tx:
            try:
                conn.execute("COMMIT")
                self._commits += 1
            except sqlite3.Error as exc:
                self._abandon(conn, done, exc)
        self._finish(conn, done)

    def _abandon(
        self, conn: sqlite3.Connection, done: list[tuple[_Job, Unit, bool, Any]], exc: BaseException
    ) -> bool:
        """Roll the open transaction back and mark the units already run in it as failed."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        event("store.transaction.failed", level=logging.ERROR, error=str(exc))
        failure = TemporaryStoreError(f"transaction rolled back: {exc}")
        for i, (job, unit, ok, _value) in enumerate(done):
            if ok:
                done[i] = (job, unit, False, failure)
        return False

    def _finish(self, conn: sqlite3.Connection, done: list[tuple[_Job, Unit, bool, Any]]) -> None:
        for _job, unit, ok, _value in done:
            if ok:
                self._write_units += 1
                for hook in unit._on_commit:
                    self._run_hook(hook)
            else:
                self._failed_units += 1
        if self._epilogue is not None:
            self._run_hook(functools.partial(self._epilogue, conn))
        for job, _unit, ok, value in done:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    @staticmethod
    def _run_hook(hook: Hook) -> None:
        try:
            hook()
        except Exception as exc:  # a hook must never take the database thread down
            event("store.hook.failed", level=logging.ERROR, error=repr(exc))
