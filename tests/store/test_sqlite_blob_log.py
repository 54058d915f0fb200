"""Bodies journalled by reference to an SMTP worker's body log.

A worker appends a body to its log in ``tmp/`` and fsyncs it (``hato.store.remote.BodyLog``:
one fdatasync for every body appended meanwhile); the main process installs the place
(``FileBlobStore.install_logged``), the unit that stores the message journals the reference
in ``blob_log``, the janitor writes the blob's file from the log, and the log goes once it is
closed and none of its bodies is pending. A restart rebuilds a blob from its log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from storekit import account, db_rows, message, run_store, sha

from hato.core.errors import StoreError
from hato.store.model import DeliveryTarget
from hato.store.remote import LOG_MIN, BodyLog, RemoteBlobStore, Shipment
from hato.store.sqlite import SqliteStore, textindex
from hato.store.sqlite.blobs import INLINE_MAX


def log_rows(data: Path) -> list[tuple[Any, ...]]:
    return db_rows(data, "SELECT blob_id, path, offset, size FROM blob_log")


def address(data: Path, blob_id: str) -> Path:
    return data / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id


# -- the worker's side -----------------------------------------------------------------------


def test_appenders_share_fdatasyncs_and_read_back_their_bodies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = []
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        syncs.append(fd)
        time.sleep(0.05)  # appenders arriving meanwhile wait for the next one
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    log = BodyLog(tmp_path, lambda path: None)

    async def append(n: int) -> tuple[str, int]:
        await asyncio.sleep(0.01 * (n % 4))
        seg, offset = await log.append(message(n, 5000))
        log.done(seg)
        return seg.path, offset

    async def main() -> list[tuple[str, int]]:
        return await asyncio.gather(*(append(n) for n in range(12)))

    places = asyncio.run(main())
    assert len(syncs) <= 4, syncs  # 12 appends, one fdatasync each would be 12
    for n, (path, offset) in enumerate(places):
        with open(path, "rb") as f:
            f.seek(offset)
            assert f.read(len(message(n, 5000))) == message(n, 5000)


def test_short_writes_of_a_group_are_resumed_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev
    calls = []

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(len(buffers))
        taken, left = [], 7  # at most 7 octets per call, across buffer boundaries
        for buffer in buffers:
            taken.append(buffer[:left])
            left -= len(taken[-1])
            if not left:
                break
        return real(fd, taken, offset)

    monkeypatch.setattr(os, "pwritev", short)
    path = tmp_path / "x.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    chunks = [b"abc", b"", b"defghijklmnop", b"q" * 20, b"r"]
    try:
        BodyLog._write(fd, chunks, 5)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0" * 5 + b"".join(chunks)
    assert len(calls) == 6 and calls[0] == 4  # the empty chunk is not passed on


def test_a_full_log_is_closed_after_its_last_body_was_shipped(tmp_path: Path) -> None:
    events: list[str] = []
    log = BodyLog(tmp_path, lambda path: events.append(f"closed {path}"), segment_max=10_000)

    async def main() -> None:
        first, _ = await log.append(message(1, 8000))
        second, offset = await log.append(message(2, 8000))  # fits: the limit is checked before
        assert second is first and offset == len(message(1, 8000))
        third, offset = await log.append(message(3, 100))  # beyond the limit: a new file
        assert third is not first and offset == 0
        events.append("shipped 1")
        log.done(first)
        events.append("shipped 2")
        assert events == ["shipped 1", "shipped 2"]  # not closed while a body is unshipped
        log.done(second)
        assert events[-1] == f"closed {first.path}"
        log.done(third)
        assert events[-1] == f"closed {first.path}"  # the current file stays open

    asyncio.run(main())


def test_a_failed_fdatasync_fails_the_append_and_closes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    log = BodyLog(tmp_path, closed.append)
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    async def main() -> None:
        good, _ = await log.append(message(1))
        log.done(good)
        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(OSError):
            await log.append(message(2))
        assert closed == [good.path]  # never reported durable again, whatever later syncs say
        monkeypatch.setattr(os, "fdatasync", real)
        fresh, offset = await log.append(message(3))
        assert fresh.path != good.path and offset == 0
        log.done(fresh)

    asyncio.run(main())


def test_a_body_written_outside_the_event_loop_is_appended_on_it(tmp_path: Path) -> None:
    log = BodyLog(tmp_path, lambda path: None)

    async def main() -> tuple[str, int]:
        first, _ = await log.append(message(1))  # the log learns its loop
        log.done(first)
        seg, offset = await asyncio.to_thread(log.append_blocking, message(2))
        log.done(seg)
        return seg.path, offset

    path, offset = asyncio.run(main())
    with open(path, "rb") as f:
        assert f.read()[offset:] == message(2)


def test_a_worker_body_committed_in_a_thread_goes_to_the_log_first_thing(
    tmp_path: Path,
) -> None:
    """A body the worker writes outside its event loop (a verified message is written
    again, in a thread, with its Authentication-Results field) may be the first one its log
    gets: the log knows the worker's loop from the start."""
    body = message(5, LOG_MIN + 1000)

    async def main() -> Shipment:
        blobs = RemoteBlobStore(tmp_path, tmp_path, inline_max=INLINE_MAX)

        def work() -> None:
            writer = blobs.writer()
            writer.write(body)
            assert not writer.quick
            writer.commit()

        await asyncio.to_thread(work)
        (shipped,) = blobs.take_shipments()
        return shipped

    shipped = asyncio.run(main())
    assert shipped.blob_id == sha(body) and shipped.body is None and shipped.log is not None
    with open(shipped.log, "rb") as f:
        f.seek(shipped.offset)
        assert f.read() == body


# -- the main process's side -----------------------------------------------------------------


async def _append(tmp: Path, body: bytes) -> tuple[str, int]:
    """Where a worker's log holds ``body`` (appended and shipped)."""
    log = BodyLog(tmp, lambda path: None)
    seg, offset = await log.append(body)
    log.done(seg)
    return seg.path, offset


def test_a_logged_body_is_journalled_by_reference_written_out_and_its_log_deleted(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    body = message(7, 60_000)
    blob_id = sha(body)

    async def main(store: SqliteStore) -> None:
        acc = await account(store)
        path, offset = await _append(store.blobs.tmp_dir, body)
        ref = store.blobs.install_logged(blob_id, len(body), log=path, offset=offset)
        assert store.blobs.read(blob_id) == body  # pending: read from the log
        with store.blobs.open(blob_id) as f:  # a file like any other (the indexer seeks)
            assert f.seek(0, os.SEEK_END) == len(body)
            assert f.seek(100) == 100 and f.read(50) == body[100:150]
            assert f.tell() == 150 and f.read() == body[150:] and f.read() == b""
        assert textindex.prepare_blob(store.blobs.open, blob_id).text is not None
        assert store.blobs.pending_body(blob_id) is None  # not in memory
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        assert log_rows(data) == [(blob_id, path, offset, len(body))]
        await asyncio.to_thread(store.blobs.flush)  # the janitor writes the file from the log
        assert address(data, blob_id).read_bytes() == body
        assert os.path.exists(path)  # its worker may still append to it
        store.blobs.log_closed(path)  # the worker closed it
        assert not os.path.exists(path)  # closed, and none of its bodies is pending
        await store.create_mailbox(acc.id, "a later write")  # its prologue drops the row
        assert log_rows(data) == []
        assert store.blobs.read(blob_id) == body

    run_store(data, main)


def test_a_closed_log_stays_while_one_of_its_bodies_is_pending(tmp_path: Path) -> None:
    data = tmp_path / "data"
    body = message(8, 40_000)

    async def main(store: SqliteStore) -> None:
        acc = await account(store)
        path, offset = await _append(store.blobs.tmp_dir, body)
        ref = store.blobs.install_logged(sha(body), len(body), log=path, offset=offset)
        store.blobs.log_closed(path)
        assert os.path.exists(path)  # the body's only durable copy
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        await asyncio.to_thread(store.blobs.flush)
        assert not os.path.exists(path)
        assert address(data, ref.id).read_bytes() == body

    run_store(data, main)


def test_install_logged_refuses_paths_outside_tmp(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main(store: SqliteStore) -> None:
        for path in ("/etc/passwd", f"{store.blobs.tmp_dir}/../hato.db", f"{tmp_path}/x.log"):
            with pytest.raises(StoreError):
                store.blobs.install_logged("a" * 64, 1, log=path, offset=0)
        with pytest.raises(StoreError):
            store.blobs.log_closed("/etc/passwd")

    run_store(data, main)


def test_restart_rebuilds_a_logged_blob_from_its_log_and_sweeps_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    body, lost = message(9, 50_000), message(10, 50_000)

    async def setup(store: SqliteStore) -> str:
        await account(store)
        path, offset = await _append(store.blobs.tmp_dir, body)
        return f"{path}:{offset}"

    where = run_store(data, setup)
    path, offset = where.rsplit(":", 1)
    # as a crash leaves it: rows committed, the janitor never ran (one row's log is gone)
    conn = sqlite3.connect(data / "hato.db")
    with conn:
        conn.execute(
            "INSERT INTO blob_log VALUES (?, ?, ?, ?)", (sha(body), path, int(offset), len(body))
        )
        conn.execute(
            "INSERT INTO blob_log VALUES (?, ?, ?, ?)",
            (sha(lost), f"{Path(path).parent}/{'f' * 32}.log", 0, len(lost)),
        )
    conn.close()
    caplog.set_level(logging.INFO, logger="hato")

    async def check(store: SqliteStore) -> None:
        assert store.blobs.read(sha(body)) == body
        assert address(data, sha(body)).read_bytes() == body

    run_store(data, check)
    assert log_rows(data) == []
    assert not os.path.exists(path)  # swept with the temp files
    assert list((data / "tmp").iterdir()) == []
    unreadable = [r.getMessage() for r in caplog.records if "log_unreadable" in r.getMessage()]
    assert len(unreadable) == 1 and sha(lost)[:16] in unreadable[0]
