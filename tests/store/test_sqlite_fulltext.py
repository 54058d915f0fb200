"""The SQLite backend's full-text index (``hato.store.sqlite.textindex``): one document per blob,
pending until the background indexer (behind delivery) or a search's catch-up fills it, the
size limit and the schema migration that indexes existing mail."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from storekit import account, inbox_id, put_blob

from hato.core.clock import FixedClock
from hato.store.fulltext import TextScope
from hato.store.model import DeliveryTarget
from hato.store.sqlite import SqliteStore, open_store, textindex

BODY = TextScope.BODY


def mail(text: str) -> bytes:
    return f"Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n".encode()


def docs(store: SqliteStore) -> list[tuple[str, int]]:
    with sqlite3.connect(store.data_dir / "hato.db") as conn:
        rows = conn.execute("SELECT blob_id, state FROM fulltext_docs ORDER BY blob_id")
        return [(str(b), int(s)) for b, s in rows]


def fts_rows(store: SqliteStore) -> int:
    with sqlite3.connect(store.data_dir / "hato.db") as conn:
        return int(conn.execute("SELECT count(*) FROM fulltext").fetchone()[0])


def test_one_document_per_blob_shared_by_copies(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            await store._indexer.stop()  # indexed below, by the test itself
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            ref = await put_blob(store, mail("shared content"))
            appended = await store.append(inbox, ref)
            assert docs(store) == [(ref.id, textindex.PENDING)] and fts_rows(store) == 0
            assert await store.index_pending() == 1
            trash = await store.get_mailbox(acc.id, "Trash")
            assert trash is not None
            await store.copy(inbox, [appended.uid], trash.id)
            # The same content delivered again is the same blob: still one document.
            await store.deliver(await put_blob(store, mail("shared content")),
                                [DeliveryTarget(acc.id)])
            assert docs(store) == [(ref.id, textindex.INDEXED)] and fts_rows(store) == 1
            await store.expunge(inbox)  # nothing flagged \Deleted: nothing removed
            await store.expunge(inbox, [appended.uid, appended.uid + 1])
            assert docs(store) == [(ref.id, textindex.INDEXED)]  # the Trash copy remains
            await store.delete_mailbox(acc.id, "Trash")
            assert docs(store) == [] and fts_rows(store) == 0
        finally:
            await store.close()

    asyncio.run(main())


def test_search_indexes_the_mailboxs_pending_documents_first(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            await store._indexer.stop()  # no background pass: observe the pending state
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            trash = await store.get_mailbox(acc.id, "Trash")
            assert trash is not None
            ref = await put_blob(store, mail("late indexing"))
            uid = (await store.append(inbox, ref)).uid
            other = await put_blob(store, mail("elsewhere"))
            await store.append(trash.id, other)
            assert await store.fulltext_unindexed() == 2
            # a search too short for the index indexes nothing (the caller scans anyway)
            assert await store.search_text(inbox, "in", scope=BODY) is None
            assert await store.fulltext_unindexed() == 2
            hits = await store.search_text(inbox, "indexing", scope=BODY)
            assert hits is not None
            assert hits.uids == {uid} and hits.unindexed == frozenset()
            assert await store.fulltext_unindexed() == 1  # only this mailbox's documents
            assert await store.index_pending() == 1
            assert await store.fulltext_unindexed() == 0
            assert await store.index_pending() == 0
        finally:
            await store.close()

    asyncio.run(main())


def test_text_is_indexed_behind_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(textindex.Indexer, "QUIET", 1.5)

    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            refs = [await put_blob(store, mail(f"needle {i} " + "y" * 50_000)) for i in range(3)]
            for ref in refs:  # a burst: its commits kick the indexer, which waits for a lull
                await store.deliver(ref, [DeliveryTarget(acc.id)])
            assert {state for _blob, state in docs(store)} == {textindex.PENDING}
            for _ in range(1000):
                if await store.fulltext_unindexed() == 0:
                    break
                await asyncio.sleep(0.01)
            assert {state for _blob, state in docs(store)} == {textindex.INDEXED}  # in the lull
            hits = await store.search_text(inbox, "needle 1", scope=BODY)
            assert hits is not None and len(hits.uids) == 1 and hits.unindexed == frozenset()
        finally:
            await store.close()

    asyncio.run(main())


def test_background_indexer_fills_pending_documents(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            ref = await put_blob(store, mail("background work"))
            uid = (await store.append(inbox, ref)).uid  # its commit kicks the indexer
            for _ in range(200):
                if await store.fulltext_unindexed() == 0:
                    break
                await asyncio.sleep(0.01)
            hits = await store.search_text(inbox, "background", scope=BODY)
            assert hits is not None and hits.uids == {uid}
        finally:
            await store.close()

    asyncio.run(main())


def test_messages_over_the_size_limit_are_left_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(textindex, "MAX_INDEXED_SIZE", 100)

    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            small = (await store.append(inbox, await put_blob(store, mail("tiny needle")))).uid
            big = (await store.append(
                inbox, await put_blob(store, mail("big needle " + "x" * 200)))).uid
            hits = await store.search_text(inbox, "needle", scope=BODY)
            assert hits is not None
            assert hits.uids == {small} and hits.unindexed == {big}
            assert await store.index_pending() == 0  # skipped, not pending
            states = sorted(state for _, state in docs(store))
            assert states == [textindex.INDEXED, textindex.SKIPPED]
        finally:
            await store.close()

    asyncio.run(main())


def test_migration_indexes_existing_mail(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def fill() -> tuple[int, list[int]]:
        store = await open_store(data, clock=FixedClock())
        try:
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            uids = [(await store.append(inbox, await put_blob(store, mail(f"old mail {n}")))).uid
                    for n in range(5)]
            return inbox, uids
        finally:
            await store.close()

    inbox, uids = asyncio.run(fill())
    # A database from before the index: drop it, then run the migration step on it.
    conn = sqlite3.connect(data / "hato.db", isolation_level=None)
    conn.execute("DROP TABLE fulltext")
    conn.execute("DROP TABLE fulltext_docs")
    conn.execute("BEGIN IMMEDIATE")
    textindex.migrate(conn)
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM fulltext_docs WHERE state = 1").fetchone() == (5,)
    conn.close()

    async def search() -> None:
        store = await open_store(data, clock=FixedClock())
        try:
            await store.index_pending()  # the background pass may have done it already
            assert await store.fulltext_unindexed() == 0
            hits = await store.search_text(inbox, "old mail", scope=BODY)
            assert hits is not None and hits.uids == set(uids)
            hits = await store.search_text(inbox, "mail 3", scope=BODY)
            assert hits is not None and hits.uids == {uids[3]}
        finally:
            await store.close()

    asyncio.run(search())
