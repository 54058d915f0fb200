"""The outbound queue in the SQLite store: one unit of work per change, checked transitions,
per-recipient status, blob references held by live entries, crash recovery."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from hato.core.clock import FixedClock
from hato.core.errors import Conflict
from hato.store.model import BlobRef, Credentials, DeliveryTarget
from hato.store.queue import (
    TRANSITIONS,
    NewQueueEntry,
    Notice,
    QueueRecipient,
    QueueState,
    QueueUpdate,
    RcptStatus,
    RecipientUpdate,
    allowed,
)
from hato.store.sqlite import SqliteStore, open_store

CREDS = Credentials(password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
BODY = b"From: a@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


async def put(store: SqliteStore, data: bytes) -> BlobRef:
    writer = store.blobs.writer()
    writer.write(data)
    return await asyncio.to_thread(writer.commit)


def entry(blob: BlobRef, *rcpts: str, **kw: object) -> NewQueueEntry:
    return NewQueueEntry(
        blob=blob,
        sender="alice@example.test",
        recipients=tuple(QueueRecipient(r) for r in rcpts),
        expires=1e12,
        **kw,  # type: ignore[arg-type]
    )


def run(tmp_path: Path, body, clock: FixedClock | None = None):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        store = await open_store(tmp_path / "data", clock=clock or FixedClock())
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_transition_table_is_closed_and_final_states_are_terminal() -> None:
    assert set(TRANSITIONS) == set(QueueState)
    for state in QueueState:
        if state.final:
            assert TRANSITIONS[state] == frozenset()
    assert allowed(QueueState.QUEUED, QueueState.ACTIVE)
    assert not allowed(QueueState.DELIVERED, QueueState.QUEUED)
    assert not allowed(QueueState.HELD, QueueState.ACTIVE)  # release first


def test_local_and_remote_recipients_committed_in_one_unit(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.add_domain("example.test")
        acc = await store.add_account("bob@example.test", CREDS)
        blob = await put(store, BODY)
        before = store.stats.commits
        appended, ids = await store.deliver_and_queue(
            blob,
            [DeliveryTarget(acc.id)],
            [entry(blob, "x@remote.test", "y@remote.test"), entry(blob, "z@other.test")],
        )
        assert store.stats.commits == before + 1  # one transaction for everything
        assert len(appended) == 1 and len(ids) == 2
        queued = await store.list_queue()
        assert [e.domain for e in queued] == ["remote.test", "other.test"]
        first = queued[0]
        assert first.state is QueueState.QUEUED and first.attempts == 0
        assert [r.address for r in first.recipients] == ["x@remote.test", "y@remote.test"]
        assert first.pending == (0, 1)

    run(tmp_path, body)


def test_claim_update_and_refused_transition(tmp_path: Path) -> None:
    clock = FixedClock()

    async def body(store: SqliteStore) -> None:
        blob = await put(store, BODY)
        (eid,) = await store.enqueue(
            [entry(blob, "x@r.test", "y@r.test", next_attempt=clock.now() + 10)]
        )
        assert await store.claim_queue(limit=10, lease=60) == []  # not due yet
        assert await store.next_queue_due() == clock.now() + 10
        clock.advance(10)
        (claimed,) = await store.claim_queue(limit=10, lease=60)
        assert claimed.id == eid and claimed.state is QueueState.ACTIVE
        assert await store.claim_queue(limit=10, lease=60) == []  # leased
        after = await store.update_queue(
            eid,
            QueueUpdate(
                QueueState.DEFERRED,
                next_attempt=clock.now() + 300,
                last_error="451 4.3.0 try later",
                attempted=True,
                recipients=(
                    RecipientUpdate(0, RcptStatus.DELIVERED, "250 ok", "mx.r.test"),
                    RecipientUpdate(1, RcptStatus.PENDING, "451 4.3.0 later", "mx.r.test"),
                ),
            ),
        )
        assert after.state is QueueState.DEFERRED and after.attempts == 1
        assert after.pending == (1,)
        assert after.recipients[0].remote_mta == "mx.r.test"
        with pytest.raises(Conflict):
            await store.update_queue(eid, QueueUpdate(QueueState.DELIVERED))  # not ACTIVE
        held = await store.update_queue(eid, QueueUpdate(QueueState.HELD))
        assert held.state is QueueState.HELD
        with pytest.raises(Conflict):
            await store.update_queue(eid, QueueUpdate(QueueState.ACTIVE))
        clock.advance(10_000)
        assert await store.claim_queue(limit=10, lease=60) == []  # held entries never run
        released = await store.update_queue(eid, QueueUpdate(QueueState.QUEUED))
        assert released.state is QueueState.QUEUED

    run(tmp_path, body, clock)


def test_blob_kept_while_queued_and_released_when_final(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        blob = await put(store, BODY)
        (eid,) = await store.enqueue([entry(blob, "x@r.test")])
        await store.purge_queue(before=0)  # a write batch: nothing to purge
        assert store.blobs.exists(blob.id)
        (claimed,) = await store.claim_queue(limit=1, lease=60)
        await store.update_queue(
            claimed.id,
            QueueUpdate(
                QueueState.DELIVERED,
                recipients=(RecipientUpdate(0, RcptStatus.DELIVERED, "250 ok"),),
            ),
        )
        await store.purge_queue(before=0)  # the next batch clears the orphan journal
        assert not store.blobs.exists(blob.id)
        final = await store.get_queue_entry(eid)
        assert final is not None and final.state is QueueState.DELIVERED
        with pytest.raises(Conflict):
            await store.update_queue(eid, QueueUpdate(QueueState.QUEUED))

    run(tmp_path, body)


def test_blob_shared_with_mailbox_survives_final_entry(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.add_domain("example.test")
        acc = await store.add_account("bob@example.test", CREDS)
        blob = await put(store, BODY)
        _, (eid,) = await store.deliver_and_queue(
            blob, [DeliveryTarget(acc.id)], [entry(blob, "x@r.test")]
        )
        await store.claim_queue(limit=1, lease=60)
        await store.update_queue(eid, QueueUpdate(QueueState.BOUNCED))
        await store.purge_queue(before=0)
        assert store.blobs.exists(blob.id)  # bob's copy still needs it

    run(tmp_path, body)


def test_notice_is_stored_with_the_transition(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.add_domain("example.test")
        acc = await store.add_account("alice@example.test", CREDS)
        blob = await put(store, BODY)
        (eid,) = await store.enqueue([entry(blob, "x@r.test", account_id=acc.id)])
        await store.claim_queue(limit=1, lease=60)
        dsn = await put(store, b"Subject: Undelivered\r\n\r\nsorry\r\n")
        bogus = DeliveryTarget(account_id=999_999)
        with pytest.raises(Exception):  # noqa: B017 - any failure must roll everything back
            await store.update_queue(
                eid, QueueUpdate(QueueState.BOUNCED, notice=Notice(dsn, local=(bogus,)))
            )
        still = await store.get_queue_entry(eid)
        assert still is not None and still.state is QueueState.ACTIVE
        await store.update_queue(
            eid,
            QueueUpdate(QueueState.BOUNCED, notice=Notice(dsn, local=(DeliveryTarget(acc.id),))),
        )
        inbox = await store.get_mailbox(acc.id, "INBOX")
        assert inbox is not None
        (msg,) = await store.list_messages(inbox.id)
        assert msg.blob_id == dsn.id

    run(tmp_path, body)


def test_recover_and_reopen_lose_nothing(tmp_path: Path) -> None:
    clock = FixedClock()

    async def first(store: SqliteStore) -> int:
        blob = await put(store, BODY)
        (eid,) = await store.enqueue([entry(blob, "x@r.test")])
        await store.claim_queue(limit=1, lease=3600)
        return eid

    eid = run(tmp_path, first, clock)

    async def second(store: SqliteStore) -> None:
        assert await store.claim_queue(limit=1, lease=60) == []
        assert await store.recover_queue() == 1
        (again,) = await store.claim_queue(limit=1, lease=60)
        assert again.id == eid
        assert store.blobs.read(again.blob_id) == BODY
        assert hashlib.sha256(BODY).hexdigest() == again.blob_id

    run(tmp_path, second, clock)


def test_delete_refused_while_active_and_purge(tmp_path: Path) -> None:
    clock = FixedClock()

    async def body(store: SqliteStore) -> None:
        blob = await put(store, BODY)
        ids = await store.enqueue([entry(blob, "x@r.test"), entry(blob, "y@s.test")])
        await store.claim_queue(limit=1, lease=60)
        with pytest.raises(Conflict):
            await store.delete_queue_entry(ids[0])
        await store.delete_queue_entry(ids[1])
        assert [e.id for e in await store.list_queue()] == [ids[0]]
        await store.update_queue(ids[0], QueueUpdate(QueueState.DELIVERED))
        clock.advance(100)
        assert await store.purge_queue(before=clock.now() - 50) == 1
        assert await store.list_queue() == []
        await store.purge_queue(before=0)
        assert not store.blobs.exists(blob.id)

    run(tmp_path, body, clock)
