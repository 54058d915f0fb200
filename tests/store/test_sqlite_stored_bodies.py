"""SQLite backend: small bodies stored in the database for good (``refs.STORED_MAX``).

A body of at most ``STORED_MAX`` octets goes into ``blob_bodies`` in the transaction that
stores its message: no file is written for it, then or later; readers find it in the
database once it has left memory, in this process and in an SMTP worker; the last removal of
a message naming it deletes it; a writer that committed the same content meanwhile keeps it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from storekit import account, db_rows, deliver_each, inbox_id, message, put_blob, run_store

from hato.core.errors import NotFound, QuotaExceeded
from hato.store.model import DeliveryTarget
from hato.store.remote import RemoteBlobStore
from hato.store.sqlite import SqliteStore
from hato.store.sqlite.refs import STORED_MAX, StoredReader

SMALL = message(1, 1500)


def stored(data: Path) -> dict[str, bytes]:
    return {r[0]: bytes(r[1]) for r in db_rows(data, "SELECT blob_id, data FROM blob_bodies")}


def journalled(data: Path) -> int:
    return int(db_rows(data, "SELECT count(*) FROM blob_journal")[0][0])


def files(data: Path) -> list[Path]:
    return sorted(p for p in (data / "blobs").rglob("*") if p.is_file())


@pytest.mark.parametrize("size", [1, 1500, STORED_MAX])
def test_small_body_is_stored_with_its_message_and_never_a_file(tmp_path: Path, size: int) -> None:
    data = tmp_path / "data"
    body_bytes = message(1, size)

    async def deliver(store: SqliteStore) -> str:
        acc = await account(store)
        ref = await put_blob(store, body_bytes)
        assert stored(data) == {}  # committed by its writer, but no unit stored it yet
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        # RFC 5321 §6.1: durable with its message, in the same transaction
        assert stored(data) == {ref.id: body_bytes} and journalled(data) == 0
        await asyncio.to_thread(store.blobs.flush)  # the janitor has nothing to write
        assert files(data) == []
        assert store.blobs.pending_body(ref.id) is None  # out of memory: read from the table
        assert store.blobs.read(ref.id) == body_bytes and store.blobs.exists(ref.id)
        return ref.id

    blob_id = run_store(data, deliver)

    async def reopen(store: SqliteStore) -> None:
        assert store.blobs.read(blob_id) == body_bytes
        assert files(data) == [] and stored(data) == {blob_id: body_bytes}

    run_store(data, reopen)


def test_a_larger_body_is_journalled_and_gets_its_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    larger = message(2, STORED_MAX + 1)

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        ref = await put_blob(store, larger)
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert stored(data) == {}
        await asyncio.to_thread(store.blobs.flush)
        assert [p.name for p in files(data)] == [ref.id]

    run_store(data, body)


def test_the_last_removal_deletes_the_stored_body(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        ref = await put_blob(store, SMALL)
        await store.append(inbox, ref)
        await store.append(inbox, await put_blob(store, SMALL))  # the same content again
        assert list(stored(data)) == [ref.id]  # one row for both
        await store.expunge(inbox, [1])
        assert list(stored(data)) == [ref.id]  # still named by the second message
        await store.expunge(inbox, [2])
        assert stored(data) == {}
        await asyncio.to_thread(store.blobs.flush)
        assert not store.blobs.exists(ref.id)
        with pytest.raises(NotFound):
            store.blobs.read(ref.id)

    run_store(data, body)


def test_a_writer_of_the_same_content_keeps_it_across_a_removal(tmp_path: Path) -> None:
    """Writers A and B commit identical content (both pinned); A's unit stores it, then the
    only message naming it is expunged (its row goes); B's unit must store it again."""
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        first = await put_blob(store, SMALL)
        second = await put_blob(store, SMALL)  # B: committed, its unit not yet run
        await store.append(inbox, first)
        assert store.blobs.pending_body(second.id) == SMALL  # B still pins it
        await store.expunge(inbox, [1])
        assert stored(data) == {}
        await store.append(inbox, second)
        assert stored(data) == {second.id: SMALL}
        await asyncio.to_thread(store.blobs.flush)
        assert store.blobs.pending_body(second.id) is None
        assert store.blobs.read(second.id) == SMALL and files(data) == []

    run_store(data, body)


def test_a_failed_unit_leaves_no_row(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store, quota_bytes=100)
        ref = await put_blob(store, SMALL)
        with pytest.raises(QuotaExceeded):
            await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert stored(data) == {}
        assert store.blobs.read(ref.id) == SMALL  # still pinned, in memory for a retry

    run_store(data, body)


def test_readers_on_many_threads_and_a_worker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [message(n, 200 + n) for n in range(20)]

    ids = run_store(data, lambda store: deliver_each(store, bodies))
    reader = StoredReader(data / "hato.db")
    failures: list[str] = []

    def read_all() -> None:
        for blob_id, raw in zip(ids, bodies, strict=True):
            if reader(blob_id) != raw:
                failures.append(blob_id)

    threads = [threading.Thread(target=read_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert reader("0" * 64) is None
    # an SMTP worker reads them through the reader its wiring gives it
    worker = RemoteBlobStore(data / "blobs", data / "tmp", inline_max=STORED_MAX)
    with pytest.raises(NotFound):
        worker.read(ids[0])
    worker.stored = reader
    assert worker.read(ids[0]) == bodies[0] and worker.exists(ids[1])
    reader.close()
