"""SQLite backend: content-addressed blob files, pins, journal sweeps at start."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from storekit import account, inbox_id, message, put_blob, run_store, sha

from hato.core.clock import FixedClock
from hato.core.errors import NotFound, QuotaExceeded, StoreError
from hato.store.model import DeliveryTarget
from hato.store.sqlite import SqliteStore
from hato.store.sqlite.blobs import INLINE_MAX, PIN_TTL
from hato.store.sqlite.refs import STORED_MAX
from hato.store.sqlite.store import SWEEP_INTERVAL

KEPT = message(9, STORED_MAX + 1)  # journalled with its message, then its file written


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def test_layout_and_blob_file(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        for sub in ("", "blobs", "tmp"):
            assert (data / sub).stat().st_mode & 0o777 == 0o700
        body_bytes = message(1, INLINE_MAX + 50_000)  # too large to journal: a file at once
        writer = store.blobs.writer()
        for i in range(0, len(body_bytes), 7000):
            writer.write(body_bytes[i : i + 7000])
        assert writer.size == len(body_bytes)
        ref = await asyncio.to_thread(writer.commit)
        digest = sha(body_bytes)
        # Committed: in the journal directory new/ until a unit that refers to it commits.
        journal = data / "blobs" / "new" / digest
        assert ref.id == digest and journal.read_bytes() == body_bytes
        assert journal.stat().st_mode & 0o777 == 0o600
        assert (data / "blobs" / "new").stat().st_mode & 0o777 == 0o700
        assert files(data / "tmp") == [] and files(data / "blobs") == [journal]
        with pytest.raises(StoreError):
            writer.write(b"more")
        with pytest.raises(StoreError):
            writer.commit()
        acc = await account(store)
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        await asyncio.to_thread(store.blobs.flush)  # the janitor's move, done now
        path = data / "blobs" / digest[:2] / digest[2:4] / digest
        assert files(data / "blobs") == [path] and path.read_bytes() == body_bytes
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert store.blobs.read(digest) == body_bytes and store.blobs.path(digest) == path

    run_store(data, body)


def test_small_body_stays_in_memory_until_the_janitor_writes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        body_bytes = message(2, 200_000)  # journalled with its message: no file, no fsync
        writer = store.blobs.writer()
        for i in range(0, len(body_bytes), 7000):
            writer.write(body_bytes[i : i + 7000])
        assert writer.quick  # no I/O: the SMTP session commits it on the event loop
        ref = writer.commit()
        assert files(data / "tmp") == [] and files(data / "blobs") == []
        assert store.blobs.exists(ref.id) and store.blobs.read(ref.id) == body_bytes
        acc = await account(store)
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert store.blobs.read(ref.id) == body_bytes
        await asyncio.to_thread(store.blobs.flush)  # the janitor: written, fsynced, moved
        path = data / "blobs" / ref.id[:2] / ref.id[2:4] / ref.id
        assert files(data / "blobs") == [path] and path.read_bytes() == body_bytes
        assert path.stat().st_mode & 0o777 == 0o600
        assert store.blobs.pending_body(ref.id) is None and files(data / "tmp") == []
        large = store.blobs.writer()
        large.write(message(3, INLINE_MAX + 1))
        assert not large.quick and len(files(data / "tmp")) == 1  # spilled: fsync at commit
        large.abort()
        assert files(data / "tmp") == []

    run_store(data, body)


def test_abort_and_duplicate_content(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        writer = store.blobs.writer()
        writer.write(b"partial")
        writer.abort()
        writer.abort()
        assert files(data / "tmp") == [] and files(data / "blobs") == []
        first = await put_blob(store, b"same bytes")
        second = await put_blob(store, b"same bytes")
        assert first == second
        assert files(data / "blobs") == []  # small: one body in memory, journalled
        big = message(3, INLINE_MAX + 1)
        large = [await put_blob(store, big), await put_blob(store, big)]
        assert large[0] == large[1] and len(files(data / "blobs")) == 1
        assert files(data / "tmp") == []  # the duplicate's temp file was removed at commit
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        for ref in (first, second, *large):
            await store.append(inbox, ref)
        await asyncio.to_thread(store.blobs.flush)
        # the small body is stored in the database (refs.STORED_MAX): the large one's file
        assert len(files(data / "blobs")) == 1 and files(data / "tmp") == []
        assert store.blobs.read(first.id) == b"same bytes"

    run_store(data, body)


def test_blob_ids_are_checked(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        for bad in ("../../hato.db", "A" * 64, "0" * 63, "", "/etc/passwd"):
            assert not store.blobs.exists(bad)
            with pytest.raises(NotFound):
                store.blobs.read(bad)
        with pytest.raises(NotFound):
            store.blobs.open("0" * 64)

    run_store(tmp_path, body)


def test_start_removes_temp_files_and_unreferenced_pending_blobs(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def leave_debris(store: SqliteStore) -> tuple[str, str]:
        acc = await account(store)
        kept = await put_blob(store, KEPT)  # journalled, then its file written
        await store.deliver(kept, [DeliveryTarget(acc.id)])
        # large enough for files (a small body stays in memory until its unit commits)
        lost = await put_blob(store, message(5, INLINE_MAX + 1))  # never to the database
        half = store.blobs.writer()
        half.write(message(6, INLINE_MAX + 1))  # still being written
        # Simulate the crash: the writer's temp file stays (no abort), so does the marker.
        half._file.close()  # type: ignore[union-attr]
        return kept.id, lost.id

    kept_id, lost_id = run_store(data, leave_debris)
    new = data / "blobs" / "new"
    assert (new / lost_id).is_file() and len(files(data / "tmp")) == 1
    # As if the process died after the delivery's commit, before the janitor's move ...
    kept_address = data / "blobs" / kept_id[:2] / kept_id[2:4] / kept_id
    os.rename(kept_address, new / kept_id)
    # ... and a pending marker of an earlier Hato version, for a blob never referenced.
    old_style = put_alone(data, message(8, INLINE_MAX + 1))
    marker = data / "tmp" / f"{old_style}.00ff.pending"
    old_address = data / "blobs" / old_style[:2] / old_style[2:4] / old_style
    os.rename(new / old_style, marker)
    old_address.parent.mkdir(parents=True, exist_ok=True)
    os.link(marker, old_address)

    async def check(store: SqliteStore) -> None:
        assert files(data / "tmp") == []
        assert files(new) == []
        assert not store.blobs.exists(lost_id) and not store.blobs.exists(old_style)
        assert not old_address.exists()
        assert store.blobs.read(kept_id) == KEPT
        assert kept_address.read_bytes() == KEPT  # moved to its address at start

    run_store(data, check)


def put_alone(data: Path, body: bytes) -> str:
    """Commit one blob in a store run of its own (no unit refers to it); returns its id."""

    async def put(store: SqliteStore) -> str:
        return (await put_blob(store, body)).id

    blob_id: str = run_store(data, put)
    return blob_id


@pytest.mark.parametrize("size", [100, STORED_MAX + 1])  # stored in the database, or a file
def test_start_deletes_journalled_orphans(tmp_path: Path, size: int) -> None:
    data = tmp_path / "data"

    async def write(store: SqliteStore) -> str:
        acc = await account(store)
        ref = await put_blob(store, message(10, size))
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        return ref.id

    blob_id = run_store(data, write)
    # As if the expunge committed and the process died before unlinking the file.
    conn = sqlite3.connect(data / "hato.db")
    conn.execute("DELETE FROM messages")
    conn.execute("INSERT INTO orphan_blobs VALUES (?)", (blob_id,))
    conn.commit()
    conn.close()

    async def check(store: SqliteStore) -> None:
        assert not store.blobs.exists(blob_id)

    run_store(data, check)
    conn = sqlite3.connect(data / "hato.db")
    assert conn.execute("SELECT count(*) FROM orphan_blobs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM blob_bodies").fetchone()[0] == 0
    conn.close()


def test_orphan_rows_are_cleared_while_running(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        for i in range(3):
            await store.append(inbox, await put_blob(store, message(i)))
            await store.expunge(inbox)  # nothing flagged: no-op
            await store.expunge(inbox, [i + 1])
        # The rows go in the first write after the janitor made the unlinks durable.
        await asyncio.to_thread(store.blobs.flush)
        await store.create_mailbox(acc.id, "one more write")

    run_store(data, body)
    conn = sqlite3.connect(data / "hato.db")
    assert conn.execute("SELECT count(*) FROM orphan_blobs").fetchone()[0] == 0
    conn.close()
    assert files(data / "blobs") == []


def test_identical_content_written_while_last_copy_is_expunged(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        first = await put_blob(store, b"identical")
        await store.append(inbox, first)
        again = await put_blob(store, b"identical")  # content exists: pinned, not rewritten
        await store.expunge(inbox, [1])  # drops the last reference...
        assert store.blobs.exists(again.id)  # ...but the new writer's pin keeps the file
        await store.append(inbox, again)
        assert store.blobs.read(again.id) == b"identical"
        await store.expunge(inbox, [2])
        assert not store.blobs.exists(again.id)

    run_store(tmp_path, body)


def test_failed_unit_keeps_blob_for_retry_until_abandoned(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = FixedClock()

    async def body(store: SqliteStore) -> None:
        full = await account(store, "full", quota_bytes=10)
        roomy = await account(store, "roomy")
        ref = await put_blob(store, message(1, 100))
        with pytest.raises(QuotaExceeded):
            await store.deliver(ref, [DeliveryTarget(full.id), DeliveryTarget(roomy.id)])
        # The caller drops the over-quota recipient and retries with the same blob.
        await store.deliver(ref, [DeliveryTarget(roomy.id)])
        assert store.blobs.read(ref.id) == message(1, 100)
        assert files(data / "tmp") == []

        abandoned = await put_blob(store, message(2, 100))
        with pytest.raises(QuotaExceeded):
            await store.deliver(abandoned, [DeliveryTarget(full.id)])
        assert store.blobs.exists(abandoned.id)
        clock.advance(PIN_TTL + SWEEP_INTERVAL)
        await store.create_mailbox(roomy.id, "any write runs the sweep")
        assert not store.blobs.exists(abandoned.id)
        assert store.blobs.exists(ref.id)  # referenced: never swept
        assert files(data / "tmp") == []

    run_store(data, body, clock)


def test_unlinked_blob_file_is_reported(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acc = await account(store)
        ref = await put_blob(store, message(7, INLINE_MAX + 1))  # a file at once
        os.unlink(store.blobs.path(ref.id))
        with pytest.raises(NotFound):
            await store.deliver(ref, [DeliveryTarget(acc.id)])

    run_store(tmp_path, body)
