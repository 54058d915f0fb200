"""The SQLite backend's full-text index (``hato.store.sqlite.textindex``): one document per blob,
pending until the background indexer (behind delivery) or a search's catch-up fills it, the
size limit and the schema migration that indexes existing mail."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from storekit import account, inbox_id, put_blob

from hato.core.clock import FixedClock
from hato.store.fulltext import TextScope
from hato.store.model import DeliveryTarget
from hato.store.sqlite import SqliteStore, open_store, textindex
from hato.store.sqlite.db import Unit

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


def test_each_blob_gets_its_document_once_whatever_stores_it(tmp_path: Path) -> None:
    """The unit that first stores a blob creates its pending document (and asks for the
    indexer); copies and redeliveries of the same content, in one batch or later, pending or
    indexed, leave it as it is; the indexer finds every pending document."""

    def stored_pending(blob_id: str) -> Callable[[Unit], bool]:
        def work(unit: Unit) -> bool:
            textindex.stored(unit, blob_id)
            return bool(unit.memo.get(textindex.PENDING_KEY))

        return work

    async def main() -> None:
        store = await open_store(tmp_path / "data", clock=FixedClock())
        try:
            await store._indexer.stop()  # indexed below, by the test itself
            acc = await account(store)
            inbox = await inbox_id(store, acc.id)
            data = mail("the same content")
            refs = [await put_blob(store, data) for _ in range(5)]
            ref = refs[0]
            assert {r.id for r in refs} == {ref.id}
            both = [DeliveryTarget(acc.id), DeliveryTarget(acc.id, "Archive")]
            await asyncio.gather(*(store.deliver(r, both) for r in refs[:4]),
                                 store.append(inbox, refs[4]))  # together: group-committed
            assert docs(store) == [(ref.id, textindex.PENDING)] and fts_rows(store) == 0
            other = await put_blob(store, mail("other content"))
            await store.deliver(other, [DeliveryTarget(acc.id)])
            assert sorted(docs(store)) == sorted(
                [(ref.id, textindex.PENDING), (other.id, textindex.PENDING)])
            assert not await store._write(stored_pending(ref.id))  # known: nothing to index
            assert await store.fulltext_unindexed() == 2
            assert await store.index_pending() == 2  # the indexer finds both
            assert await store.fulltext_unindexed() == 0 and fts_rows(store) == 2
            await store.deliver(await put_blob(store, data), both)  # an indexed blob again
            assert sorted(docs(store)) == sorted(
                [(ref.id, textindex.INDEXED), (other.id, textindex.INDEXED)])
            assert fts_rows(store) == 2 and await store.index_pending() == 0
            # A new blob: pending, and the unit asks for the indexer.
            fresh = await put_blob(store, mail("fresh content"))
            assert await store._write(stored_pending(fresh.id))
            # The text at hand (store_doc with a Prepared): only a new blob takes it.
            known = textindex.prepare_blob(store.blobs.open, ref.id)
            await store._write(lambda u: textindex.store_doc(u, ref.id, known))
            assert fts_rows(store) == 2
            ready = await put_blob(store, mail("text at hand"))
            prepared = textindex.prepare_blob(store.blobs.open, ready.id)
            await store._write(lambda u: textindex.store_doc(u, ready.id, prepared))
            await store._write(lambda u: textindex.store_doc(u, ready.id, prepared))
            assert dict(docs(store))[ready.id] == textindex.INDEXED and fts_rows(store) == 3
            assert len(docs(store)) == 4
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
