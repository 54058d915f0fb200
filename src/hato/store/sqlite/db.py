"""The database thread: one SQLite connection, whole units of work, group commit.

Every store call is one *unit of work*: a function ``work(unit) -> result`` submitted to the one
database thread, whose future the caller awaits (one thread hop per transaction, never one per
statement). The thread drains every unit waiting in its queue and runs

* all write units in ONE transaction, each inside its own SAVEPOINT: a unit that raises is
  rolled back to its savepoint alone and its future gets the exception; the others go on
  (the first unit of a transaction in which nothing was written yet runs without one: its
  failure rolls the whole transaction back, which holds nothing else; two statements fewer);
* then one COMMIT (``synchronous=FULL``: durable when it returns), after which the units'
  ``on_commit`` hooks run, then the ``epilogue`` (outside any transaction, still on the
  thread: serial with every unit), then their futures are resolved.

Results reach an event loop in one hop per batch: ``write``/``read`` wait on an
``asyncio.Future`` of the calling loop, and the thread hands a batch's results to each loop
with ONE ``call_soon_threadsafe`` (one self-pipe write, one wake-up), not one per unit; the
callback resolves them in the batch's order. ``submit`` (threads, no loop needed) returns a
``concurrent.futures.Future``, resolved on the thread as before. A caller cancelled before its
unit started never runs it (the thread checks a flag that ``write``/``read`` set when their
wait is cancelled); one cancelled while its unit runs has its result dropped, the unit
committed or not like any other.

So N concurrent writers cost about one fsync per batch instead of one each ("group commit"):
whatever is queued while a COMMIT's fsync runs forms the next batch. ``stats`` counts commits
and units so tests can check that batching really happens.

Read units run on a second thread with its own connection (WAL lets readers run beside the
writer), each in one read transaction: a consistent snapshot of committed data, which a read
never waits for the writer's fsync to get. The reads waiting together form a batch too, whose
results go out together (at least every ``READ_HOLD``). A write that returned is visible to
every read submitted after it (its COMMIT came first). The reader's connection is
``query_only``.
*Point lookups* (``lookup``: an account, an alias, a Sieve script by key) run the same way
on the calling thread's own connection (``ThreadConnections``), without the hop to the
reader thread; ``read_here`` does so for blocking callers (a stored body, ``refs.py``).

WAL checkpoints run on a third thread with its own connection (``PRAGMA wal_checkpoint
(PASSIVE)``, which never blocks the writer) once the WAL has grown past ``CHECKPOINT_BYTES``,
so the copy of pages into the database file and its fsync stay off the commit path; the
writer's own automatic checkpoint is kept as a backstop at ``BACKSTOP_PAGES``.

Left out: more than one reader thread (reads are short; the GIL bounds the gain),
cross-process writers (one Hato process owns a data directory).

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
import time
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
READ_HOLD = 0.001  # seconds the reader may hold finished results, to send them together
# WAL size that wakes the checkpoint thread. A checkpoint copies each page written since the
# last one once, however often it was rewritten meanwhile: the hot pages of deliveries (an
# account's row, a mailbox's row, the tops of the indexes) are copied less often the larger
# this is (64 MiB: the checkpoint thread's CPU per delivery -45%, receive bench, this session).
CHECKPOINT_BYTES = 64 << 20
BACKSTOP_PAGES = 32768  # the writer checkpoints itself past this many WAL pages (128 MiB)


class Unit:
    """What one unit of work sees: the connection, the unit's time, hooks, a scratch memo,
    and ``shared``: the memo of the connection, the same dict for every write unit of the
    database thread until it closes (a fresh one elsewhere). What a unit keeps there must
    stay right when the unit or its whole transaction is rolled back (e.g. the block of
    EMAILIDs of ``messages.next_email_id``, trusted once an ``on_commit`` hook ran)."""

    __slots__ = ("_on_commit", "conn", "memo", "now", "shared")

    def __init__(
        self, conn: sqlite3.Connection, now: float, shared: dict[Any, Any] | None = None
    ) -> None:
        self.conn = conn
        self.now = now
        self.memo: dict[Any, Any] = {}
        self.shared: dict[Any, Any] = {} if shared is None else shared
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


class _Job:
    """One submitted unit and where its result goes: a concurrent future (``submit``) or an
    asyncio future of ``loop`` (``write``/``read``), never both."""

    __slots__ = ("cancelled", "future", "loop", "waiter", "work", "write")

    def __init__(
        self,
        work: Callable[[Unit], Any],
        *,
        write: bool,
        future: concurrent.futures.Future[Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        waiter: asyncio.Future[Any] | None = None,
    ) -> None:
        self.work = work
        self.write = write
        self.future = future
        self.loop = loop
        self.waiter = waiter
        # Set on the loop's thread when the caller's wait is cancelled; read by the database
        # thread (one attribute store and load: atomic under the GIL).
        self.cancelled = False

    def start(self) -> bool:
        """True if the unit should run: its caller has not been cancelled."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return not self.cancelled


_Outcome = tuple[asyncio.Future[Any], bool, Any]  # waiter, ok, result or exception


class _Results:
    """The results of one batch, delivered once it is over: concurrent futures at once on the
    thread, asyncio futures with one ``call_soon_threadsafe`` per event loop."""

    __slots__ = ("_by_loop",)

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}

    def add(self, job: _Job, ok: bool, value: Any) -> None:
        if job.future is not None:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
            return
        assert job.loop is not None and job.waiter is not None
        outcomes = self._by_loop.get(job.loop)
        if outcomes is None:
            outcomes = self._by_loop[job.loop] = []
        outcomes.append((job.waiter, ok, value))

    def deliver(self) -> None:
        by_loop, self._by_loop = self._by_loop, {}
        for loop, outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, outcomes)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _resolve(outcomes: list[_Outcome]) -> None:
    """On the callers' event loop: resolve the waiters of one batch, in the batch's order."""
    for waiter, ok, value in outcomes:
        if waiter.done():  # its caller was cancelled meanwhile: the result is dropped
            continue
        if ok:
            waiter.set_result(value)
        elif isinstance(value, StopIteration):  # a future refuses it (TypeError)
            error = RuntimeError(f"unit of work raised StopIteration: {value!r}")
            error.__cause__ = value
            waiter.set_exception(error)
        else:
            waiter.set_exception(value)


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


class ThreadConnections:
    """One ``query_only`` connection per calling thread to the database at ``target`` (a
    path, or with ``uri`` a ``file:`` URI such as ``...?mode=ro``), opened on the thread's
    first ``get``; ``close`` closes them all (each is used by its own thread only until
    then)."""

    def __init__(self, target: str, *, busy_ms: int, uri: bool = False) -> None:
        self._target = target
        self._busy_ms = busy_ms
        self._uri = uri
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._target,
                uri=self._uri,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms:d}")
            conn.execute("PRAGMA query_only=ON")
            with self._lock:
                if self._closed:
                    conn.close()
                    raise TemporaryStoreError("the store is closed")
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


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
        self._reads: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._checkpoints: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._helpers: list[threading.Thread] = []  # the reader and the checkpointer
        self._conn: sqlite3.Connection | None = None
        self._shared: dict[Any, Any] = {}  # Unit.shared of the write units (this connection)
        self._wal = path.with_name(path.name + "-wal")
        # Per-thread connections of ``lookup`` and ``read_here``, closed at close; a short
        # busy timeout: never hold an event loop for long.
        self._locals = ThreadConnections(str(path), busy_ms=50)
        self._checkpoint_asked = False
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
        # After setup (migrations): the helpers see the final schema.
        for target, name in ((self._reader_main, "read"), (self._checkpoint_main, "wal")):
            opened: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(
                target=target, args=(opened,), name=f"hato-db-{name}:{self._path.name}",
                daemon=True,
            )  # fmt: skip
            thread.start()
            self._helpers.append(thread)
            try:
                await asyncio.wrap_future(opened)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """Run every unit already submitted, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._reads.put(_STOP)
        self._checkpoints.put(_STOP)
        for thread in self._helpers:
            await asyncio.to_thread(thread.join)
        self._locals.close()

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
        (self._queue if write or not self._helpers else self._reads).put(
            _Job(work, write=write, future=future)
        )
        return future

    async def write(self, work: Callable[[Unit], T]) -> T:
        """Run a mutating unit; returns once its transaction is committed (durable)."""
        return await self._run(work, write=True)

    async def read(self, work: Callable[[Unit], T]) -> T:
        """Run a read-only unit (it must not write)."""
        return await self._run(work, write=False)

    async def _run(self, work: Callable[[Unit], T], *, write: bool) -> T:
        """Queue one unit with an asyncio future of this loop, resolved with its batch."""
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        job = _Job(work, write=write, loop=loop, waiter=waiter)
        (self._queue if write or not self._helpers else self._reads).put(job)
        try:
            return await waiter
        except asyncio.CancelledError:
            job.cancelled = True  # not started yet: the thread skips it
            raise

    async def lookup(self, work: Callable[[Unit], T], *, snapshot: bool = True) -> T:
        """Run a read-only *point lookup* (a few indexed rows) right here, on the calling
        thread's own connection: cheaper than the hop to the reader thread, and it sees
        every write that returned before. Falls back to ``read`` when the connection is
        busy (e.g. the WAL index is being rebuilt). ``snapshot`` False: a unit of ONE
        statement, run in autocommit (its own read transaction) without BEGIN and COMMIT,
        two statements fewer per lookup."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._helpers:
            conn = self._locals.get()
            try:
                if not snapshot:
                    self._read_units += 1
                    return work(Unit(conn, self._clock.now()))
                conn.execute("BEGIN")  # one snapshot for the whole unit
                try:
                    self._read_units += 1
                    return work(Unit(conn, self._clock.now()))
                finally:
                    conn.execute("COMMIT")
            except sqlite3.OperationalError:
                pass
            except BaseException as exc:
                raise translate_error(exc) from None
        return await self.read(work)

    def read_here(self, work: Callable[[Unit], T]) -> T:
        """A read of ONE statement (autocommit: it sees every write that returned before) on
        the calling thread's own connection, blocking, from any thread: for callers that
        are not coroutines (blob readers). A busy database raises ``TemporaryStoreError``."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            return work(Unit(self._locals.get(), self._clock.now()))
        except sqlite3.OperationalError as exc:
            raise TemporaryStoreError(f"read: {exc}") from None
        except BaseException as exc:
            raise translate_error(exc) from None

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
        conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        return conn

    def _open_helper(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA synchronous=FULL")  # checkpoints: fsync WAL, then the database
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA query_only=ON")  # checkpoints are allowed, writes are not
        return conn

    def _reader_main(self, opened: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._open_helper()
        except BaseException as exc:
            opened.set_exception(translate_error(exc))
            return
        opened.set_result(None)
        results = _Results()
        try:
            while True:
                # The reads waiting now form a batch whose results go out together, or every
                # READ_HOLD while it runs: a result waits for that and the read running then.
                jobs, stop = self._drain(self._reads)
                held = time.perf_counter()
                for job in jobs:
                    self._run_read(conn, job, results)
                    now = time.perf_counter()
                    if now - held >= READ_HOLD:
                        results.deliver()
                        held = now
                results.deliver()
                if stop:
                    return
        finally:
            conn.close()

    @staticmethod
    def _drain(jobs: queue.SimpleQueue[_Job | object]) -> tuple[list[_Job], bool]:
        """Wait for one job, then take those already waiting (up to ``MAX_BATCH``); True
        when the stop marker came (it is the last: ``close`` queues it after every job)."""
        batch: list[_Job] = []
        item = jobs.get()
        while item is not _STOP:
            assert isinstance(item, _Job)
            batch.append(item)
            if len(batch) >= MAX_BATCH:
                return batch, False
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _checkpoint_main(self, opened: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._open_helper()
        except BaseException as exc:
            opened.set_exception(translate_error(exc))
            return
        opened.set_result(None)
        try:
            while self._checkpoints.get() is not _STOP:
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's backstop checkpoint remains
                    event("store.checkpoint.failed", level=logging.WARNING, error=str(exc))
                self._checkpoint_asked = False
        finally:
            conn.close()

    def _maybe_checkpoint(self) -> None:
        """After a COMMIT: wake the checkpoint thread when the WAL has grown large."""
        if self._checkpoint_asked or not self._helpers:
            return
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size >= CHECKPOINT_BYTES:
            self._checkpoint_asked = True
            self._checkpoints.put(None)

    def _loop(self, conn: sqlite3.Connection) -> None:
        results = _Results()
        while True:
            batch, stop = self._drain(self._queue)
            for job in batch:
                if not job.write:  # submitted before the reader thread started
                    self._run_read(conn, job, results)
            writes = [job for job in batch if job.write]
            if writes:
                self._run_writes(conn, writes, results)
            results.deliver()
            if stop:
                return

    def _run_read(self, conn: sqlite3.Connection, job: _Job, results: _Results) -> None:
        if not job.start():
            return
        self._read_units += 1
        unit = Unit(conn, self._clock.now())
        try:
            conn.execute("BEGIN")  # one snapshot for every statement of the unit
            try:
                value = job.work(unit)
            finally:
                conn.execute("COMMIT")  # ends the read transaction (nothing to write)
        except BaseException as exc:
            results.add(job, False, translate_error(exc))
        else:
            results.add(job, True, value)

    def _run_writes(self, conn: sqlite3.Connection, jobs: list[_Job], results: _Results) -> None:
        done: list[tuple[_Job, Unit, bool, Any]] = []  # job, unit, ok, result or exception
        in_tx = False
        for job in jobs:
            if not job.start():
                continue
            unit = Unit(conn, self._clock.now(), self._shared)
            try:
                alone = False  # the unit is all the transaction holds: no savepoint needed
                if not in_tx:
                    conn.execute("BEGIN IMMEDIATE")
                    in_tx = True
                    changed = conn.total_changes
                    if self._prologue is not None:
                        self._prologue(conn)
                    alone = conn.total_changes == changed  # the prologue wrote nothing
                if not alone:
                    conn.execute("SAVEPOINT unit")
            except sqlite3.Error as exc:
                in_tx = self._abandon(conn, done, exc)
                done.append((job, unit, False, translate_error(exc)))
                continue
            try:
                value = job.work(unit)
            except BaseException as exc:
                if alone and conn.in_transaction:
                    # Only this unit is in the transaction (any unit before it in this batch
                    # failed, with an abandoned transaction): roll it all back.
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error as rb_exc:
                        self._abandon(conn, done, rb_exc)
                    in_tx = False
                elif conn.in_transaction:
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
                if not alone:
                    conn.execute("RELEASE unit")
                done.append((job, unit, True, value))
        if in_tx:
            try:
                conn.execute("COMMIT")
                self._commits += 1
            except sqlite3.Error as exc:
                self._abandon(conn, done, exc)
            else:
                self._maybe_checkpoint()
        self._finish(conn, done, results)

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

    def _finish(
        self,
        conn: sqlite3.Connection,
        done: list[tuple[_Job, Unit, bool, Any]],
        results: _Results,
    ) -> None:
        """Count the units, run the hooks and the epilogue, then pass the results to
        ``results`` (``_loop`` delivers them: hooks and epilogue have run by then)."""
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
            results.add(job, ok, value)

    @staticmethod
    def _run_hook(hook: Hook) -> None:
        try:
            hook()
        except Exception as exc:  # a hook must never take the database thread down
            event("store.hook.failed", level=logging.ERROR, error=repr(exc))
