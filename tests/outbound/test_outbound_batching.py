"""Outbound speed without loss: many claims in one query, many settle changes in one unit of
work (each still checked on its own), the runner's settler, and one connection carrying
several transactions with the next envelope sent ahead (RFC 2920 §3.1) -- RSET only after a
transaction left open (RFC 5321 §4.1.1.5)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from outbound_kit import World, open_world, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.core.clock import FixedClock
from hato.core.errors import Conflict, NotFound, TemporaryStoreError, UsageError
from hato.outbound.settler import Outcome, Settler
from hato.store.model import BlobRef, Credentials, DeliveryTarget
from hato.store.queue import (
    NewQueueEntry,
    Notice,
    QueueRecipient,
    QueueState,
    QueueUpdate,
    RcptStatus,
    RecipientUpdate,
)
from hato.store.sqlite import SqliteStore, open_store

CREDS = Credentials(password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
ACTIVE = frozenset({QueueState.ACTIVE})


async def _blob(store: SqliteStore, data: bytes) -> BlobRef:
    writer = store.blobs.writer()
    writer.write(data)
    return await asyncio.to_thread(writer.commit)


def _entry(blob: BlobRef, *rcpts: str, next_attempt: float | None = None) -> NewQueueEntry:
    return NewQueueEntry(
        blob=blob,
        sender="alice@example.test",
        recipients=tuple(QueueRecipient(r) for r in rcpts),
        expires=1e12,
        next_attempt=next_attempt,
    )


def _delivered(*indexes: int) -> QueueUpdate:
    return QueueUpdate(
        QueueState.DELIVERED,
        recipients=tuple(RecipientUpdate(i, RcptStatus.DELIVERED, "250 ok", "mx") for i in indexes),
        attempted=True,
        expected=ACTIVE,
    )


def _with_store(tmp_path: Path, body: Any, clock: FixedClock | None = None) -> Any:
    async def main() -> Any:
        store = await open_store(tmp_path / "data", clock=clock or FixedClock())
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_claim_many_keeps_due_order_and_recipients(tmp_path: Path) -> None:
    clock = FixedClock()

    async def body(store: SqliteStore) -> None:
        blob = await _blob(store, b"Subject: x\r\n\r\nhi\r\n")
        now = clock.now()
        # 600 entries: more than one IN (...) chunk; due times out of id order
        entries = [
            _entry(blob, f"a{n}@r.test", f"b{n}@r.test", next_attempt=now - (n % 7))
            for n in range(600)
        ]
        ids = await store.enqueue(entries)
        later = await store.enqueue([_entry(blob, "late@r.test", next_attempt=now + 60)])
        claimed = await store.claim_queue(limit=1000, lease=30)
        expected = sorted(zip(ids, entries, strict=True), key=lambda p: (p[1].next_attempt, p[0]))
        assert [e.id for e in claimed] == [i for i, _ in expected]
        assert later[0] not in {e.id for e in claimed}  # not due yet
        for got in claimed:
            n = ids.index(got.id)
            assert got.state is QueueState.ACTIVE and got.next_attempt == now + 30
            assert [r.address for r in got.recipients] == [f"a{n}@r.test", f"b{n}@r.test"]
            assert got.pending == (0, 1)
        assert await store.claim_queue(limit=1000, lease=30) == []  # leased

    _with_store(tmp_path, body, clock)


def test_update_many_checks_each_change_on_its_own(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        blobs = [await _blob(store, f"Subject: {n}\r\n\r\nhi\r\n".encode()) for n in range(4)]
        first_three = [
            _entry(blobs[0], "x@r.test"),
            _entry(blobs[1], "y@r.test", "z@r.test"),
            _entry(blobs[2], "w@r.test"),
        ]
        ids = await store.enqueue(first_three)
        await store.claim_queue(limit=3, lease=60)
        (waiting,) = await store.enqueue([_entry(blobs[3], "v@r.test")])  # QUEUED
        deferred = QueueUpdate(
            QueueState.DEFERRED,
            next_attempt=1e9 + 300,
            last_error="451 4.3.0 later",
            recipients=(
                RecipientUpdate(0, RcptStatus.DELIVERED, "250 ok", "mx"),
                RecipientUpdate(1, RcptStatus.PENDING, "451 4.3.0 later", "mx"),
            ),
            attempted=True,
            expected=ACTIVE,
        )
        commits = store.stats.commits
        results = await store.update_queue_many(
            [
                (ids[0], _delivered(0)),
                (ids[1], deferred),
                (waiting, _delivered(0)),  # not ACTIVE: refused
                (999_999, _delivered(0)),  # no such entry
                (ids[2], _delivered(3)),  # no recipient 3
            ]
        )
        assert store.stats.commits == commits + 1  # one transaction for the batch
        assert results[:2] == [None, None]
        assert isinstance(results[2], Conflict)
        assert isinstance(results[3], NotFound)
        assert isinstance(results[4], UsageError)
        first, second, third = [await store.get_queue_entry(i) for i in ids]
        assert first is not None and first.state is QueueState.DELIVERED
        assert first.attempts == 1 and first.recipients[0].status is RcptStatus.DELIVERED
        assert second is not None and second.state is QueueState.DEFERRED
        assert second.pending == (1,) and second.last_error == "451 4.3.0 later"
        assert second.recipients[0].remote_mta == "mx"
        assert third is not None and third.state is QueueState.ACTIVE  # left as it was
        assert third.attempts == 0 and third.recipients[0].status is RcptStatus.PENDING
        still = await store.get_queue_entry(waiting)
        assert still is not None and still.state is QueueState.QUEUED
        await store.purge_queue(before=0)  # the next write batch clears the orphan rows
        await asyncio.to_thread(store.blobs.flush)
        assert not store.blobs.exists(blobs[0].id)  # final: its body is released
        assert all(store.blobs.exists(b.id) for b in blobs[1:])  # live entries keep theirs

    _with_store(tmp_path, body)


def test_update_many_notice_refused_alone_and_repeated_entry_in_order(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.add_domain("example.test")
        alice = await store.add_account("alice@example.test", CREDS)
        blob = await _blob(store, b"Subject: x\r\n\r\nhi\r\n")
        ids = await store.enqueue([_entry(blob, f"u{n}@r.test") for n in range(3)])
        await store.claim_queue(limit=3, lease=60)
        dsn = await _blob(store, b"Subject: Undelivered\r\n\r\nsorry\r\n")
        bogus = Notice(dsn, local=(DeliveryTarget(account_id=999_999),))
        good = Notice(dsn, local=(DeliveryTarget(alice.id),))
        results = await store.update_queue_many(
            [
                (ids[0], QueueUpdate(QueueState.BOUNCED, notice=bogus, expected=ACTIVE)),
                (ids[1], QueueUpdate(QueueState.BOUNCED, notice=good, expected=ACTIVE)),
                (ids[2], _delivered(0)),
            ]
        )
        assert results[0] is not None and results[1:] == [None, None]
        states = [(await store.get_queue_entry(i)) for i in ids]
        assert [s.state if s else None for s in states] == [
            QueueState.ACTIVE,  # its notice could not be stored: nothing of it was
            QueueState.BOUNCED,
            QueueState.DELIVERED,
        ]
        inbox = await store.get_mailbox(alice.id, "INBOX")
        assert inbox is not None and len(await store.list_messages(inbox.id)) == 1
        # The same entry twice in one batch: applied one after the other, in order.
        twice = await store.update_queue_many(
            [
                (ids[0], QueueUpdate(QueueState.HELD, expected=ACTIVE)),
                (ids[0], QueueUpdate(QueueState.QUEUED, expected=frozenset({QueueState.HELD}))),
            ]
        )
        assert twice == [None, None]
        again = await store.get_queue_entry(ids[0])
        assert again is not None and again.state is QueueState.QUEUED

    _with_store(tmp_path, body)


def test_settler_writes_many_outcomes_in_few_transactions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(store: SqliteStore) -> None:
        blob = await _blob(store, b"Subject: x\r\n\r\nhi\r\n")
        ids = await store.enqueue([_entry(blob, f"u{n}@r.test") for n in range(40)])
        await store.claim_queue(limit=40, lease=60)
        (queued,) = await store.enqueue([_entry(blob, "late@r.test")])
        settler = Settler(store)
        commits = store.stats.commits
        for entry_id in [*ids[:20], queued]:
            await settler.add(Outcome(entry_id, _delivered(0), {"id": entry_id}))
        await settler.drain()
        assert settler.batches == 1 and store.stats.commits == commits + 1
        assert settler.settled == 20  # the QUEUED entry's change was refused, alone
        assert "outbound.settle.refused" in caplog.text
        small = Settler(store, max_waiting=4)  # a worker waits once 4 are waiting
        for entry_id in ids[20:]:
            await small.add(Outcome(entry_id, _delivered(0)))
        await small.drain()
        assert small.settled == 20 and 1 < small.batches <= 20
        states = {e.state for e in await store.list_queue() if e.id != queued}
        assert states == {QueueState.DELIVERED}

    caplog.set_level(logging.WARNING, logger="hato")
    _with_store(tmp_path, body)


HOSTS = ("127.0.0.2",)
ZONE = {
    "remote.test": {"MX": [(10, "mx1.remote.test")]},
    "mx1.remote.test": {"A": ["127.0.0.2"]},
}


def _scenario(tmp_path: Path, body: Any) -> Any:
    port = shared_port(HOSTS)

    async def main() -> Any:
        with DnsServer(ZONE) as dns:
            world = await open_world(tmp_path, dns, port=port, mta_sts=False)
            try:
                return await body(world, port)
            finally:
                await world.store.close()

    return asyncio.run(main())


def test_one_connection_many_transactions_rset_only_when_left_open(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        refused: dict[str, str | list[str]] = {"bad@remote.test": "550 5.1.1 No such user"}
        sink = await Sink("127.0.0.2", port, rcpt_replies=refused).start()
        try:
            for rcpt in ("a@remote.test", "bad@remote.test", "b@remote.test", "c@remote.test"):
                await world.queue([rcpt])
            runner = world.make_runner(per_destination=1)
            assert await runner.run_once() == 4
            states = [e.state for e in await world.store.list_queue()]
            assert states == [
                QueueState.DELIVERED,
                QueueState.BOUNCED,
                QueueState.DELIVERED,
                QueueState.DELIVERED,
            ]
            (session,) = sink.sessions
            verbs = [c.split(" ", 1)[0].split(":", 1)[0] for c in session.commands]
            # RFC 5321 §4.1.1.4: a completed transaction needs no RSET; the refused one
            # (DATA refused, MAIL left open) is followed by RSET, in the next group.
            assert verbs == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 2 + ["RSET"] + [
                "MAIL",
                "RCPT",
                "DATA",
            ] * 2 + ["QUIT"]
            assert [t.rcpts[0][0] for t in sink.delivered] == [
                "a@remote.test",
                "b@remote.test",
                "c@remote.test",
            ]
            assert runner._settler.batches < 4  # outcomes written together
        finally:
            await sink.stop()

    _scenario(tmp_path, body)


def test_outcomes_lost_before_their_commit_are_resent_not_lost(tmp_path: Path) -> None:
    """RFC 5321 §6.1: a settle batch that never committed (a crash, a failed write) leaves
    its entries ACTIVE; the next start puts them back to QUEUED and they go out again."""

    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.2", port).start()
        try:
            for rcpt in ("a@remote.test", "b@remote.test"):
                await world.queue([rcpt])
            real = world.store.update_queue_many

            async def failing(changes: Any) -> list[Any]:
                raise TemporaryStoreError("disk went away")

            world.store.update_queue_many = failing  # type: ignore[method-assign]
            await world.make_runner(per_destination=1).run_once()
            assert len(sink.delivered) == 2
            assert {e.state for e in await world.store.list_queue()} == {QueueState.ACTIVE}
            world.store.update_queue_many = real  # type: ignore[method-assign]
            assert await world.store.recover_queue() == 2  # what a restart does first
            await world.make_runner(per_destination=1).run_once()
            assert {e.state for e in await world.store.list_queue()} == {QueueState.DELIVERED}
            assert len(sink.delivered) == 4  # sent twice: duplicates, never a loss
        finally:
            await sink.stop()

    _scenario(tmp_path, body)
