"""SQLite backend: the database thread runs whole units of work with group commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hato.core.clock import FixedClock
from hato.core.errors import StoreError, TemporaryStoreError
from hato.store.sqlite import db as db_module
from hato.store.sqlite import messages
from hato.store.sqlite.db import Database, Unit


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)")


def _insert(key: str, value: int, log: list[str] | None = None):  # type: ignore[no-untyped-def]
    def work(unit: Unit) -> int:
        unit.conn.execute("INSERT INTO t VALUES (?, ?)", (key, value))
        if log is not None:
            unit.on_commit(lambda: log.append(key))
        return value

    return work


def _count(unit: Unit) -> int:
    return int(unit.conn.execute("SELECT count(*) FROM t").fetchone()[0])


def _hold() -> tuple[threading.Event, threading.Event, Callable[[Unit], bool]]:
    """A unit that holds its thread until ``gate`` is set; ``entered`` says it runs."""
    gate, entered = threading.Event(), threading.Event()

    def hold(unit: Unit) -> bool:
        entered.set()
        return gate.wait(5)

    return gate, entered, hold


def test_batch_commits_once_and_isolates_a_failing_unit(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            gate, entered, hold = _hold()

            # Hold the database thread (in a batch of its own) so that the next units
            # queue up and form one batch.
            blocker = db.submit(hold, write=True)
            assert await asyncio.to_thread(entered.wait, 5)
            log: list[str] = []
            ok1 = db.submit(_insert("a", 1, log), write=True)
            dup = db.submit(_insert("a", 2, log), write=True)  # PRIMARY KEY violation

            def boom(unit: Unit) -> None:
                unit.conn.execute("INSERT INTO t VALUES ('c', 3)")
                unit.on_commit(lambda: log.append("boom"))
                raise ValueError("unit failed after writing")

            failing = db.submit(boom, write=True)
            ok2 = db.submit(_insert("d", 4, log), write=True)
            before = db.stats
            gate.set()
            assert await asyncio.wrap_future(blocker)
            assert await asyncio.wrap_future(ok1) == 1
            assert await asyncio.wrap_future(ok2) == 4
            with pytest.raises(StoreError):  # sqlite IntegrityError, translated
                await asyncio.wrap_future(dup)
            with pytest.raises(ValueError):
                await asyncio.wrap_future(failing)
            after = db.stats
            # One COMMIT for the blocker's batch, ONE for the whole batch after it.
            assert after.commits - before.commits == 2
            assert after.write_units - before.write_units == 3
            assert after.failed_units - before.failed_units == 2
            rows = await db.read(
                lambda u: u.conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()
            )
            assert rows == [("a", 1), ("d", 4)]  # 'c' rolled back to its savepoint alone
            assert log == ["a", "d"]  # hooks of committed units only
        finally:
            await db.close()

    asyncio.run(main())


def test_reads_do_not_commit_and_hooks_run_before_resolution(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            commits = db.stats.commits
            assert await db.read(_count) == 0
            assert db.stats.commits == commits
            log: list[str] = []
            await db.write(_insert("x", 1, log))
            assert log == ["x"]  # on_commit ran before the caller resumed
            assert db.stats.commits == commits + 1
        finally:
            await db.close()

    asyncio.run(main())


def test_operational_error_is_temporary_and_closed_db_refuses(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        with pytest.raises(TemporaryStoreError):
            await db.write(lambda u: u.conn.execute("INSERT INTO missing VALUES (1)"))
        await db.write(_insert("after", 1))  # the thread survived
        await db.close()
        with pytest.raises(StoreError):
            await db.write(_insert("late", 1))

    asyncio.run(main())


def test_cancelled_unit_does_not_run(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            gate, entered, hold = _hold()

            blocker = db.submit(hold, write=True)  # holds the database thread
            assert await asyncio.to_thread(entered.wait, 5)
            task = asyncio.create_task(db.write(_insert("never", 1)))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task  # the queued unit is cancelled before the thread reaches it
            gate.set()
            await asyncio.wrap_future(blocker)
            assert await db.read(_count) == 0
        finally:
            await db.close()

    asyncio.run(main())


def test_database_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            mode = await db.read(lambda u: u.conn.execute("PRAGMA journal_mode").fetchone()[0])
            sync = await db.write(lambda u: u.conn.execute("PRAGMA synchronous").fetchone()[0])
            assert (mode, sync) == ("wal", 2)  # 2 = FULL: a COMMIT is durable
            # The checkpoint connection syncs fully too (WAL, then the database file).
            sync = await db.read(lambda u: u.conn.execute("PRAGMA synchronous").fetchone()[0])
            assert sync == 2
            assert (tmp_path / "t.db").stat().st_mode & 0o777 == 0o600
        finally:
            await db.close()

    asyncio.run(main())


def test_reads_do_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            await db.write(_insert("a", 1))
            gate, entered = threading.Event(), threading.Event()

            def hold(unit: Unit) -> None:
                unit.conn.execute("INSERT INTO t VALUES ('held', 2)")
                entered.set()
                gate.wait(5)

            blocker = db.submit(hold, write=True)  # a write unit in progress (uncommitted)
            assert await asyncio.to_thread(entered.wait, 5)
            # Served by the reader thread and by a point lookup meanwhile, from the last
            # committed state: the held unit's row is not visible.
            assert await asyncio.wait_for(db.read(_count), 5) == 1
            assert await asyncio.wait_for(db.lookup(_count), 5) == 1
            gate.set()
            await asyncio.wrap_future(blocker)
            assert await db.read(_count) == 2 and await db.lookup(_count) == 2
        finally:
            gate.set()
            await db.close()

    asyncio.run(main())


def test_lookup_runs_on_the_calling_thread_and_cannot_write(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            threads: list[int] = []

            def probe(unit: Unit) -> int:
                threads.append(threading.get_ident())
                return _count(unit)

            assert await db.lookup(probe) == 0
            await db.write(_insert("x", 1))
            assert await db.lookup(probe) == 1  # a write that returned is visible
            assert threads == [threading.get_ident()] * 2
            with pytest.raises(StoreError):  # query_only: a lookup must not write
                await db.lookup(_insert("y", 2))
            assert await db.read(_count) == 1
        finally:
            await db.close()
        with pytest.raises(StoreError):
            await db.lookup(_count)

    asyncio.run(main())


def test_wal_is_checkpointed_by_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_BYTES", 1)  # every commit asks for one
    path = tmp_path / "t.db"

    async def main() -> None:
        db = Database(path, clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            for n in range(20):
                await db.write(_insert(f"k{n}", n))
            # The pages reach the database file without any checkpoint by the writer
            # (its own automatic checkpoint starts at BACKSTOP_PAGES, far from here).
            for _ in range(500):
                if path.stat().st_size > 4096:
                    break
                await asyncio.sleep(0.01)
            assert path.stat().st_size > 4096
            assert await db.read(_count) == 20
        finally:
            await db.close()

    asyncio.run(main())


def _boom(log: list[str]):  # type: ignore[no-untyped-def]
    def work(unit: Unit) -> None:
        unit.conn.execute("INSERT INTO t VALUES ('c', 3)")
        unit.on_commit(lambda: log.append("boom"))
        raise ValueError("unit failed after writing")

    return work


@pytest.mark.parametrize("prologue_writes", [False, True])
def test_first_unit_of_a_transaction_fails_alone(tmp_path: Path, prologue_writes: bool) -> None:
    """The first unit runs without a savepoint when the transaction holds nothing else: its
    failure must still undo its own writes only, keep what the prologue wrote (it then runs
    in a savepoint) and let the rest of the batch commit."""
    armed: list[bool] = []  # the prologue writes once, in the first transaction after arming

    def prologue(conn: sqlite3.Connection) -> None:
        if prologue_writes and armed == [True]:
            armed.append(False)
            conn.execute("INSERT INTO t VALUES ('p', 0)")

    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup, prologue=prologue)
        await db.start()
        try:
            gate, entered, hold = _hold()

            blocker = db.submit(hold, write=True)
            assert await asyncio.to_thread(entered.wait, 5)
            log: list[str] = []
            failing = db.submit(_boom(log), write=True)  # first unit of the next batch
            failing2 = db.submit(_boom(log), write=True)  # first of a fresh transaction too
            ok = db.submit(_insert("d", 4, log), write=True)
            before = db.stats
            armed.append(True)
            gate.set()
            assert await asyncio.wrap_future(blocker)
            with pytest.raises(ValueError):
                await asyncio.wrap_future(failing)
            with pytest.raises(ValueError):
                await asyncio.wrap_future(failing2)
            assert await asyncio.wrap_future(ok) == 4
            after = db.stats
            assert after.commits - before.commits == 2  # the blocker's batch, then this one
            assert after.failed_units - before.failed_units == 2
            rows = await db.read(lambda u: u.conn.execute("SELECT k FROM t ORDER BY k").fetchall())
            # 'c' never committed; the prologue's row, when it wrote one, did
            assert rows == ([("d",), ("p",)] if prologue_writes else [("d",)])
            assert log == ["d"]  # hooks of committed units only
        finally:
            await db.close()

    asyncio.run(main())


def _count_wakeups(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    """Count ``call_soon_threadsafe`` on ``loop`` (each is one self-pipe write, one wake-up)
    from now on; the returned function stops counting and gives the count."""
    calls: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
        calls.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]

    def stop() -> int:
        del loop.call_soon_threadsafe  # back to the class's method
        return len(calls)

    return stop


def test_a_batch_wakes_each_event_loop_once_in_order(tmp_path: Path) -> None:
    """All the results of one write batch reach an event loop with ONE call_soon_threadsafe,
    in the batch's order; a second loop (another thread) gets its own one; a thread's
    ``submit`` future in the same batch is resolved as before."""

    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            gate, entered, hold = _hold()
            blocker = db.submit(hold, write=True)  # a batch of its own
            assert await asyncio.to_thread(entered.wait, 5)

            queued = threading.Event()
            other: dict[str, Any] = {}

            def other_loop() -> None:
                async def writers() -> None:
                    stop = _count_wakeups(asyncio.get_running_loop())
                    tasks = [asyncio.create_task(db.write(_insert(f"o{n}", n))) for n in range(3)]
                    await asyncio.sleep(0)  # each task has queued its unit
                    queued.set()
                    other["results"] = await asyncio.gather(*tasks)
                    other["wakeups"] = stop()

                asyncio.run(writers())

            thread = threading.Thread(target=other_loop)
            thread.start()
            assert await asyncio.to_thread(queued.wait, 5)

            finished: list[int] = []

            async def write(n: int) -> int:
                value: int = await db.write(_insert(f"m{n}", n))
                finished.append(n)
                return value

            tasks = [asyncio.create_task(write(n)) for n in range(20)]
            await asyncio.sleep(0)  # every task has queued its unit
            from_thread = db.submit(_insert("sync", 99), write=True)
            before = db.stats
            stop = _count_wakeups(asyncio.get_running_loop())
            gate.set()
            assert await asyncio.gather(*tasks) == list(range(20))
            assert stop() == 1  # 20 results, one wake-up
            assert finished == list(range(20))  # resolved in the batch's order
            await asyncio.to_thread(thread.join, 5)
            assert other == {"results": [0, 1, 2], "wakeups": 1}
            assert from_thread.result(timeout=5) == 99
            assert await asyncio.wrap_future(blocker)
            after = db.stats
            assert after.commits - before.commits == 2  # the blocker's batch, then this one
            assert after.write_units - before.write_units == 1 + 3 + 20 + 1
        finally:
            await db.close()

    asyncio.run(main())


@pytest.mark.parametrize("hold", [60.0, 0.0])
def test_reads_waiting_together_wake_the_loop_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: float
) -> None:
    """The reads waiting together go out in one wake-up; READ_HOLD bounds how long the reader
    holds finished results (0: each read's result goes out on its own)."""
    monkeypatch.setattr(db_module, "READ_HOLD", hold)

    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            await db.write(_insert("a", 1))
            gate, entered, block = _hold()
            blocker = db.submit(block, write=False)  # holds the reader thread
            assert await asyncio.to_thread(entered.wait, 5)
            tasks = [asyncio.create_task(db.read(_count)) for _ in range(10)]
            await asyncio.sleep(0)
            stop = _count_wakeups(asyncio.get_running_loop())
            gate.set()
            assert await asyncio.gather(*tasks) == [1] * 10
            assert stop() == (1 if hold else 10)
            assert await asyncio.wrap_future(blocker)
        finally:
            await db.close()

    asyncio.run(main())


def test_cancelled_callers_do_not_break_later_units(tmp_path: Path) -> None:
    """A caller cancelled before its unit ran: the unit is skipped. One cancelled while its
    unit runs: the unit commits, its result is dropped. Either way the units after it in the
    batch, and later batches, get their results, and the loop reports no error."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            gate, entered, hold = _hold()
            blocker = db.submit(hold, write=True)
            assert await asyncio.to_thread(entered.wait, 5)
            slow_gate, slow_entered = threading.Event(), threading.Event()

            def slow(unit: Unit) -> str:
                unit.conn.execute("INSERT INTO t VALUES ('slow', 2)")
                slow_entered.set()
                slow_gate.wait(5)
                return "slow"

            skipped = asyncio.create_task(db.write(_insert("skipped", 1)))
            running = asyncio.create_task(db.write(slow))
            after = asyncio.create_task(db.write(_insert("after", 3)))
            await asyncio.sleep(0)  # all three queued, in one batch behind the blocker
            skipped.cancel()
            with pytest.raises(asyncio.CancelledError):
                await skipped
            before = db.stats
            gate.set()
            assert await asyncio.to_thread(slow_entered.wait, 5)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            slow_gate.set()
            assert await after == 3
            assert await db.write(_insert("later", 4)) == 4

            # The same on the reader thread.
            read_gate, read_entered, read_hold = _hold()
            read_blocker = db.submit(read_hold, write=False)
            assert await asyncio.to_thread(read_entered.wait, 5)
            ran: list[str] = []
            cancelled_read = asyncio.create_task(db.read(lambda u: ran.append("cancelled")))
            later_read = asyncio.create_task(db.read(_count))
            await asyncio.sleep(0)
            cancelled_read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled_read
            read_gate.set()
            assert await later_read == 3  # slow, after, later
            assert ran == []  # skipped

            assert await asyncio.wrap_future(blocker) and await asyncio.wrap_future(read_blocker)
            rows = await db.read(lambda u: u.conn.execute("SELECT k FROM t ORDER BY k").fetchall())
            assert rows == [("after",), ("later",), ("slow",)]
            # blocker, slow, after, later ran; 'skipped' did not
            assert db.stats.write_units - before.write_units == 4
            assert errors == []
        finally:
            await db.close()

    asyncio.run(main())


def _raising(exc: BaseException) -> Callable[[Unit], None]:
    def work(unit: Unit) -> None:
        raise exc

    return work


def _stop_iteration(unit: Unit) -> None:
    raise StopIteration("from a unit")


def test_exceptions_arrive_translated_from_a_batch(tmp_path: Path) -> None:
    """Each unit of one batch (and each read) gets its own exception, translated into the one
    error tree (CONVENTIONS.md §7) as before; the other units still get their results."""

    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            await db.write(_insert("a", 1))
            mine = StoreError("raised by the unit")
            value_error = ValueError("not a store error")
            gate, entered, hold = _hold()
            blocker = db.submit(hold, write=True)
            assert await asyncio.to_thread(entered.wait, 5)
            units: list[Callable[[Unit], Any]] = [
                _insert("a", 2),  # IntegrityError
                lambda u: u.conn.execute("INSERT INTO missing VALUES (1)"),  # OperationalError
                _raising(value_error),
                _insert("b", 2),
                _raising(mine),
                _stop_iteration,
            ]
            tasks = [asyncio.create_task(db.write(unit)) for unit in units]
            await asyncio.sleep(0)
            gate.set()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert await asyncio.wrap_future(blocker)
            integrity, operational, plain, ok, own, stop = outcomes
            assert type(integrity) is StoreError and "UNIQUE" in str(integrity)
            assert type(operational) is TemporaryStoreError and operational.temporary
            assert plain is value_error
            assert ok == 2
            assert own is mine
            # A future refuses StopIteration: it comes as RuntimeError, caused by it.
            assert type(stop) is RuntimeError and isinstance(stop.__cause__, StopIteration)

            # Reads, on the reader thread.
            with pytest.raises(TemporaryStoreError):  # query_only: writing is refused
                await db.read(_insert("c", 3))
            with pytest.raises(TemporaryStoreError):
                await db.read(lambda u: u.conn.execute("SELECT * FROM missing").fetchall())
            with pytest.raises(ValueError) as info:
                await db.read(_raising(value_error))
            assert info.value is value_error
            with pytest.raises(RuntimeError):
                await db.read(_stop_iteration)
            assert await db.read(_count) == 2
        finally:
            await db.close()

    asyncio.run(main())


# -- the connection's shared memo: the EMAILID block allocator (messages.next_email_id) -------
def _meta_setup(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) "
        "WITHOUT ROWID"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS used (email_id INTEGER PRIMARY KEY)")


def _id_unit(kind: str) -> Callable[[Unit], int]:
    """A unit that takes an EMAILID and stores it; ``fail``: then raises (rolled back to its
    savepoint, or the whole transaction when it is the first); ``abort``: rolls the whole
    transaction back first (as SQLite does on disk full) and raises."""

    def work(unit: Unit) -> int:
        email_id = messages.next_email_id(unit)
        unit.conn.execute("INSERT INTO used VALUES (?)", (email_id,))
        if kind == "abort":
            unit.conn.execute("ROLLBACK")
        if kind != "ok":
            raise ValueError(kind)
        return email_id

    return work


async def _id_batch(db: Database, kinds: list[str]) -> list[int | None]:
    """Run one unit per kind, all in one batch; the EMAILIDs of those that committed."""
    gate, entered, hold = _hold()

    blocker = db.submit(hold, write=True)
    assert await asyncio.to_thread(entered.wait, 5)
    futures = [db.submit(_id_unit(kind), write=True) for kind in kinds]
    before = db.stats.commits
    gate.set()
    assert await asyncio.wrap_future(blocker)
    out: list[int | None] = []
    for future in futures:
        try:
            email_id = await asyncio.wrap_future(future)
        except (ValueError, TemporaryStoreError):
            out.append(None)
        else:
            out.append(email_id)
    assert db.stats.commits - before >= 1
    return out


def _meta(unit: Unit) -> int:
    return int(unit.conn.execute("SELECT value FROM meta WHERE key = 'email_id'").fetchone()[0])


def test_email_id_blocks_survive_rolled_back_units_and_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8474 §5.1: an EMAILID is never reused. Ids come from a block reserved in meta
    (here 3 at a time); a block whose reservation was rolled back (its unit failed, or its
    whole transaction) is never trusted, and a reopened database starts above meta."""
    monkeypatch.setattr(messages, "EMAIL_ID_BLOCK", 3)
    seen: list[int] = []

    async def session(batches: list[tuple[list[str], list[int | None]]]) -> int:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_meta_setup)
        await db.start()
        try:
            for kinds, expected in batches:
                got = await _id_batch(db, kinds)
                assert got == expected, kinds
                seen.extend(i for i in got if i is not None)
            stored = await db.read(
                lambda u: [r[0] for r in u.conn.execute("SELECT email_id FROM used")])
            assert sorted(stored) == sorted(seen)  # what the units returned is what committed
            return await db.read(_meta)
        finally:
            await db.close()

    meta = asyncio.run(session([
        # [1..3] reserved by the first unit; the unit reserving [4..6] fails: its reservation
        # is rolled back, the next unit reserves [4..6] again and the one after uses it.
        (["ok", "ok", "ok", "fail", "ok", "ok"], [1, 2, 3, None, 4, 5]),
        (["ok"], [6]),
        # the first unit of a transaction reserves [7..9] and fails: all of it rolled back
        (["fail", "ok"], [None, 7]),
        # a whole transaction rolled back, with the reservation of [10..12] in it
        (["ok", "ok", "ok", "abort"], [None, None, None, None]),
        (["ok"], [10]),
    ]))
    assert meta == 12  # one reservation per block, not one statement per id
    assert max(seen) <= meta  # every committed id is covered by a committed reservation
    assert seen == sorted(set(seen))  # unique and increasing in commit order
    # A new database thread (a restart) trusts nothing in memory: it starts above meta.
    meta = asyncio.run(session([(["ok", "ok", "ok", "ok"], [13, 14, 15, 16])]))
    assert meta == 18 and seen == sorted(set(seen))


def test_shared_memo_belongs_to_the_write_units(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "t.db", clock=FixedClock(), setup=_setup)
        await db.start()
        try:
            first = await db.write(lambda u: u.shared)
            assert await db.write(lambda u: u.shared) is first
            assert await db.read(lambda u: u.shared) is not first  # another connection
        finally:
            await db.close()

    asyncio.run(main())
