"""SQLite backend: the body journal, the blob janitor and the group directory fsync.

Bodies kept in memory by their writer (larger than ``refs.STORED_MAX``, which the database
stores for good: test_sqlite_stored_bodies.py) are made durable by the unit of work that
stores them (a ``blob_journal`` row in the same transaction), the janitor gives every
committed blob its address, and a restart rebuilds a blob from its journal row whatever
happened to its file.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from storekit import (
    account,
    db_rows,
    deliver_each,
    inbox_id,
    message,
    put_blob,
    run_store,
    sha,
)

from hato.store.model import DeliveryTarget
from hato.store.sqlite import SqliteStore, blobs, dirsync, janitor
from hato.store.sqlite.dirsync import DirSync
from hato.store.sqlite.refs import STORED_MAX

JOURNALLED = STORED_MAX + 1  # the smallest body journalled rather than stored


def journal(data: Path) -> dict[str, bytes]:
    return {r[0]: bytes(r[1]) for r in db_rows(data, "SELECT blob_id, data FROM blob_journal")}


def address(data: Path, blob_id: str) -> Path:
    return data / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id


def test_small_body_is_journalled_with_its_message_then_moved(tmp_path: Path) -> None:
    data = tmp_path / "data"
    small = message(1, JOURNALLED + 3000)

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        ref = await put_blob(store, small)
        assert journal(data) == {}  # committed by the writer, but no unit refers to it yet
        assert store.blobs.pending_body(ref.id) == small
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        # RFC 5321 §6.1: durable with the message, in the same transaction.
        assert journal(data) == {ref.id: small}
        await asyncio.to_thread(store.blobs.flush)  # the janitor: fsync, address, journal done
        assert store.blobs.pending_body(ref.id) is None
        assert address(data, ref.id).read_bytes() == small
        assert not (data / "blobs" / "new" / ref.id).exists()
        await store.create_mailbox(acc.id, "a later write")  # its prologue drops the row
        assert journal(data) == {}
        assert store.blobs.read(ref.id) == small

    run_store(data, body)


def test_large_body_is_fsynced_by_its_writer_not_journalled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    large = message(2, blobs.INLINE_MAX + 1)

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        before = store.blobs.directory_fsyncs
        ref = await put_blob(store, large)
        assert store.blobs.pending_body(ref.id) is None
        assert store.blobs.directory_fsyncs == before + 1  # new/ made durable at commit
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert journal(data) == {}
        await asyncio.to_thread(store.blobs.flush)
        assert address(data, ref.id).read_bytes() == large

    run_store(data, body)


def test_memory_budget_makes_writers_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs, "INLINE_BUDGET", 100)

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        before = store.blobs.directory_fsyncs
        ref = await put_blob(store, message(3, 500))  # small, but over the memory budget
        assert store.blobs.pending_body(ref.id) is None
        assert store.blobs.directory_fsyncs == before + 1  # the writer's own durability
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert journal(tmp_path / "data") == {}

    run_store(tmp_path / "data", body)


def test_restart_rebuilds_blobs_from_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setattr(janitor, "ROUND_INTERVAL", 3600.0)  # the janitor only runs at close
    bodies = [message(n, JOURNALLED + 700 * n) for n in range(3)]

    ids = run_store(data, lambda store: deliver_each(store, bodies))
    rows = journal(data)  # no write after the janitor's last round: the rows are still there
    assert set(rows) == set(ids)
    # As if the power failed before the files' data reached the disk: torn or gone.
    address(data, ids[0]).write_bytes(b"torn")
    os.unlink(address(data, ids[1]))
    (data / "blobs" / "new" / ids[2]).write_bytes(b"")  # a stale new/ name

    async def check(store: SqliteStore) -> None:
        acc = await store.get_account("user@example.test")
        assert acc is not None
        stored = await store.list_messages(await inbox_id(store, acc.id))
        assert [m.blob_id for m in stored] == ids
        for blob_id, raw in zip(ids, bodies, strict=True):
            assert store.blobs.read(blob_id) == raw and sha(raw) == blob_id
            assert address(data, blob_id).read_bytes() == raw
        assert sorted(os.listdir(data / "blobs" / "new")) == []

    run_store(data, check)
    assert journal(data) == {}


def test_expunged_before_its_move_leaves_no_row_and_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        ref = await put_blob(store, message(4))
        await store.append(inbox, ref)
        await store.expunge(inbox, [1])  # same batch or the next: before the janitor's round
        assert journal(data) == {}
        await asyncio.to_thread(store.blobs.flush)
        assert not store.blobs.exists(ref.id)
        assert [p for p in (data / "blobs").rglob("*") if p.is_file()] == []

    run_store(data, body)


def test_identical_small_bodies_share_one_row(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        same = message(5, JOURNALLED)
        first, second = await asyncio.gather(put_blob(store, same), put_blob(store, same))
        assert first == second
        await asyncio.gather(
            store.deliver(first, [DeliveryTarget(acc.id)]),
            store.deliver(second, [DeliveryTarget(acc.id)]),
        )
        assert journal(data) == {first.id: same}
        await asyncio.to_thread(store.blobs.flush)
        assert address(data, first.id).read_bytes() == same

    run_store(data, body)


def test_concurrent_committers_share_directory_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = DirSync(tmp_path)
    writers = 8
    lock = threading.Lock()
    changed = [0]
    all_changed = threading.Event()
    real_fsync = dirsync.fsync_dir

    def slow_fsync(path: str | Path) -> None:
        assert all_changed.wait(5)  # the first fsync lasts until every writer has changed
        real_fsync(path)

    monkeypatch.setattr(dirsync, "fsync_dir", slow_fsync)
    errors: list[BaseException] = []

    def committer(n: int) -> None:
        try:
            (tmp_path / f"f{n}").write_bytes(b"x")
            ticket = sync.changed()
            with lock:
                changed[0] += 1
                if changed[0] == writers:
                    all_changed.set()
            sync.wait(ticket)  # returns once an fsync that covers our change completed
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=committer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and changed[0] == writers
    # The fsync running while the others changed the directory, then ONE for all of them.
    assert 1 <= sync.fsyncs <= 2
    before = sync.fsyncs
    sync.wait(sync.current())  # nothing changed since: no fsync
    assert sync.fsyncs == before


async def _until_moved(store: SqliteStore, blob_id: str, *, seconds: float) -> bool:
    for _ in range(int(seconds / 0.01)):
        if store.blobs.pending_body(blob_id) is None:
            return True
        await asyncio.sleep(0.01)
    return False


def test_moves_wait_for_a_lull_in_deliveries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(janitor, "QUIET", 2.0)
    monkeypatch.setattr(janitor, "MAX_DELAY", 60.0)
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        ref = await put_blob(store, message(1, JOURNALLED))
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        # Durable in the journal, still in memory and readable: no file yet.
        assert store.blobs.pending_body(ref.id) is not None and ref.id in journal(data)
        assert store.blobs.read(ref.id) == message(1, JOURNALLED)
        assert not address(data, ref.id).exists()
        assert await _until_moved(store, ref.id, seconds=20)  # written in the lull
        assert address(data, ref.id).read_bytes() == message(1, JOURNALLED)

    run_store(data, body)


def test_memory_pressure_moves_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(janitor, "QUIET", 60.0)
    monkeypatch.setattr(janitor, "MAX_DELAY", 60.0)
    # one body is half of it
    monkeypatch.setattr(blobs, "INLINE_BUDGET", 2 * (JOURNALLED + 1000) - 1)
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        ref = await put_blob(store, message(2, JOURNALLED + 1000))
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert await _until_moved(store, ref.id, seconds=10)
        assert address(data, ref.id).read_bytes() == message(2, JOURNALLED + 1000)

    run_store(data, body)
