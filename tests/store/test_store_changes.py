"""Contract: MODSEQ and the change log (RFC 7162), wait_for_change (RFC 2177), concurrency."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from storekit import Backend, account, inbox_id, message, put_blob

from hato.core.errors import NotFound
from hato.store.api import MailStore
from hato.store.model import DELETED, SEEN, Change, ChangeKind, DeliveryTarget, FlagOp


def kinds(changes: list[Change]) -> list[tuple[ChangeKind, int | None]]:
    return [(c.kind, c.uid) for c in changes]


def test_change_log_keeps_latest_entry_per_message(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        start = await store.highest_modseq(acc.id)
        assert start >= 1  # creating the default mailboxes was a change
        for i in range(3):
            await store.append(inbox, await put_blob(store, message(i)))
        added = await store.changes_since(acc.id, start)
        assert kinds(added) == [(ChangeKind.MESSAGE_ADDED, u) for u in (1, 2, 3)]
        assert [c.modseq for c in added] == [start + 1, start + 2, start + 3]
        assert all(c.mailbox_id == inbox for c in added)

        await store.update_flags(inbox, [1], frozenset({SEEN}), op=FlagOp.ADD)
        await store.update_flags(inbox, [2], frozenset({DELETED}), op=FlagOp.ADD)
        await store.expunge(inbox)
        log = await store.changes_since(acc.id, start)
        # Only the latest entry per message; the expunge supersedes message 2's earlier ones.
        assert kinds(log) == [
            (ChangeKind.MESSAGE_ADDED, 3),
            (ChangeKind.FLAGS_CHANGED, 1),
            (ChangeKind.MESSAGE_EXPUNGED, 2),
        ]
        modseqs = [c.modseq for c in log]
        assert modseqs == sorted(modseqs) and len(set(modseqs)) == 3
        assert modseqs[-1] == await store.highest_modseq(acc.id)
        # Only changes strictly after the given MODSEQ.
        assert kinds(await store.changes_since(acc.id, modseqs[1])) == [
            (ChangeKind.MESSAGE_EXPUNGED, 2)
        ]
        assert await store.changes_since(acc.id, modseqs[-1]) == []
        box = await store.get_mailbox_by_id(inbox)
        assert box is not None and box.highest_modseq == modseqs[-1]  # expunge raised it too

    run(body)


def test_change_log_mailbox_filter_and_mailbox_changes(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        start = await store.highest_modseq(acc.id)
        work = await store.create_mailbox(acc.id, "work")
        await store.append(work.id, await put_blob(store, message(1)))
        await store.append(inbox, await put_blob(store, message(2)))
        await store.rename_mailbox(acc.id, "work", "job")
        only_inbox = await store.changes_since(acc.id, start, mailbox_id=inbox)
        assert kinds(only_inbox) == [(ChangeKind.MESSAGE_ADDED, 1)]
        only_work = await store.changes_since(acc.id, start, mailbox_id=work.id)
        # Latest per mailbox: created, then renamed -> only the rename remains.
        assert kinds(only_work) == [
            (ChangeKind.MESSAGE_ADDED, 1),
            (ChangeKind.MAILBOX_RENAMED, None),
        ]
        await store.delete_mailbox(acc.id, "job")
        assert kinds(await store.changes_since(acc.id, start, mailbox_id=work.id)) == [
            (ChangeKind.MAILBOX_DELETED, None)
        ]
        with pytest.raises(NotFound):
            await store.highest_modseq(999_999)

    run(body)


def test_modseq_is_per_account_and_only_bumped_by_real_changes(run) -> None:
    async def body(store: MailStore) -> None:
        alice = await account(store, "alice")
        bob = await account(store, "bob")
        inbox = await inbox_id(store, alice.id)
        bob_before = await store.highest_modseq(bob.id)
        await store.append(inbox, await put_blob(store, message(1)))
        assert await store.highest_modseq(bob.id) == bob_before
        modseq = await store.highest_modseq(alice.id)
        # Nothing changes -> no bump (RFC 7162 §3.1).
        await store.update_flags(inbox, [1], frozenset(), op=FlagOp.ADD)
        await store.update_flags(inbox, [99], frozenset({SEEN}), op=FlagOp.ADD)
        assert await store.expunge(inbox) == []
        assert await store.copy(inbox, [99], inbox) == []
        assert await store.highest_modseq(alice.id) == modseq
        # A unit that fails changes nothing either.
        with pytest.raises(NotFound):
            await store.deliver(
                await put_blob(store, message(2)),
                [DeliveryTarget(alice.id), DeliveryTarget(424242)],
            )
        assert await store.highest_modseq(alice.id) == modseq
        assert await store.changes_since(alice.id, modseq) == []

    run(body)


def test_wait_for_change(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        now = await store.highest_modseq(acc.id)
        # Already past: returns at once.
        assert await asyncio.wait_for(store.wait_for_change(acc.id, now - 1, 10.0), 1.0) == now
        # Nothing happens: returns the current value after the timeout.
        t0 = time.monotonic()
        assert await store.wait_for_change(acc.id, now, 0.2) == now
        assert 0.15 <= time.monotonic() - t0 < 2.0

        ref = await put_blob(store, message(1))
        waiter = asyncio.create_task(store.wait_for_change(acc.id, now, 10.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        t0 = time.monotonic()
        appended = await store.append(inbox, ref)
        woken = await asyncio.wait_for(waiter, 2.0)
        assert woken == appended.modseq
        assert time.monotonic() - t0 < 0.5  # woken right after the commit, not by the timeout

        # A change of another account does not wake this one.
        other = await account(store, "other")
        waiter = asyncio.create_task(store.wait_for_change(acc.id, woken, 0.3))
        await asyncio.sleep(0.05)
        await store.append(await inbox_id(store, other.id), ref)
        assert await waiter == woken

    run(body)


def test_concurrent_writers_group_commit(run, backend: Backend) -> None:
    tasks, per_task = 10, 50

    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        commits0, units0 = backend.commit_counts(store)

        async def writer(n: int) -> list[tuple[int, int]]:
            got = []
            for i in range(per_task):
                ref = await put_blob(store, message(n * 1000 + i, 300))
                a = await store.append(inbox, ref)
                got.append((a.uid, a.modseq))
            return got

        results = await asyncio.gather(*(writer(n) for n in range(tasks)))
        commits, units = backend.commit_counts(store)
        uids = sorted(uid for r in results for uid, _ in r)
        assert uids == list(range(1, tasks * per_task + 1))  # unique and dense
        for r in results:  # each writer saw strictly increasing MODSEQs
            assert all(a[1] < b[1] for a, b in itertools.pairwise(r))
        modseqs = [m for r in results for _, m in r]
        assert len(set(modseqs)) == len(modseqs)  # one unit, one MODSEQ
        assert units - units0 == tasks * per_task
        assert commits - commits0 < units - units0  # group commit really batched
        box = await store.get_mailbox_by_id(inbox)
        assert box is not None
        assert box.message_count == tasks * per_task and box.uidnext == tasks * per_task + 1
        assert box.highest_modseq == max(modseqs) == await store.highest_modseq(acc.id)
        usage = await store.quota_usage(acc.id)
        assert (usage.used_bytes, usage.message_count) == (300 * tasks * per_task, 500)

    run(body)
