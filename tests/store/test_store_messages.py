"""Contract: append, deliver, flags (incl. UNCHANGEDSINCE), expunge, copy, move, quota."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from storekit import DOMAIN, Backend, account, inbox_id, message, put_blob, sha

from hato.core.clock import FixedClock
from hato.core.errors import Conflict, NotFound, QuotaExceeded, UsageError
from hato.store.api import MailStore
from hato.store.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    BlobRef,
    DeliveryTarget,
    FlagOp,
)


def test_append_assigns_uids_and_keeps_metadata(run, clock) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        data = message(1, 3000)
        ref = await put_blob(store, data)
        assert ref == BlobRef(id=sha(data), size=3000)
        first = await store.append(
            inbox, ref, flags=frozenset({"\\seen", "$Forwarded"}), internal_date=1_600_000_000.5
        )
        clock.advance(60)
        second = await store.append(inbox, await put_blob(store, message(2)))
        assert (first.uid, second.uid) == (1, 2)
        assert first.account_id == acc.id and first.mailbox_id == inbox
        assert second.modseq > first.modseq
        box = await store.get_mailbox_by_id(inbox)
        assert box is not None
        assert first.uidvalidity == box.uidvalidity
        assert (box.uidnext, box.message_count, box.unseen_count) == (3, 2, 1)
        assert box.size_bytes == 3200 and box.highest_modseq == second.modseq
        one, two = await store.list_messages(inbox)
        assert one.flags == frozenset({SEEN, "$Forwarded"})  # system flags canonical
        assert one.internal_date == 1_600_000_000.5
        assert one.saved_date == clock.now() - 60
        assert two.internal_date == two.saved_date == clock.now()
        assert (one.blob_id, one.size, one.modseq) == (ref.id, 3000, first.modseq)
        assert one.email_id != two.email_id
        assert store.blobs.read(one.blob_id) == data
        with store.blobs.open(one.blob_id) as f:
            assert f.read() == data

    run(body)


def test_append_errors(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        ref = await put_blob(store, message(1))
        with pytest.raises(NotFound):
            await store.append(999_999, ref)
        with pytest.raises(NotFound):
            await store.append(inbox, BlobRef(id="0" * 64, size=10))
        with pytest.raises(UsageError):  # RFC 9051 §2.3.2: keywords do not begin with "\"
            await store.append(inbox, ref, flags=frozenset({"\\Bogus"}))
        with pytest.raises(UsageError):
            await store.append(inbox, ref, flags=frozenset({"two words"}))
        # \Recent is deprecated (RFC 9051 §2.3.2) and never stored.
        await store.append(inbox, ref, flags=frozenset({"\\Recent", DRAFT}))
        (only,) = await store.list_messages(inbox)
        assert only.flags == frozenset({DRAFT}) and only.uid == 1

    run(body)


def test_deliver_one_unit_for_every_target(run) -> None:
    async def body(store: MailStore) -> None:
        alice = await account(store, "alice")
        bob = await account(store, "bob")
        ref = await put_blob(store, message(1))
        before = await store.highest_modseq(alice.id)
        got = await store.deliver(
            ref,
            [
                DeliveryTarget(alice.id),
                DeliveryTarget(bob.id, "Junk", frozenset({"$Junk"})),
                DeliveryTarget(alice.id, "Archive"),
            ],
            internal_date=1_650_000_000.0,
        )
        assert [a.account_id for a in got] == [alice.id, bob.id, alice.id]
        # One unit of work: one MODSEQ bump per account, shared by both of alice's copies.
        assert got[0].modseq == got[2].modseq == before + 1
        stored = [
            (await store.get_messages(a.mailbox_id, [a.uid]))[0] for a in got
        ]
        assert len({m.email_id for m in stored}) == 1  # RFC 8474: same EMAILID for all copies
        assert stored[1].flags == frozenset({"$Junk"})
        assert all(m.internal_date == 1_650_000_000.0 and m.blob_id == ref.id for m in stored)
        with pytest.raises(NotFound):
            await store.deliver(ref, [DeliveryTarget(999_999)])
        assert len(await store.list_messages(await inbox_id(store, alice.id))) == 1

    run(body)


def test_deliver_is_all_or_none_under_quota(run) -> None:
    async def body(store: MailStore) -> None:
        roomy = await account(store, "roomy")
        tight = await account(store, "tight", quota_bytes=1000)
        ref = await put_blob(store, message(1, 600))
        await store.deliver(ref, [DeliveryTarget(tight.id)])
        before = await store.highest_modseq(roomy.id)
        with pytest.raises(QuotaExceeded) as info:
            await store.deliver(ref, [DeliveryTarget(roomy.id), DeliveryTarget(tight.id)])
        assert "tight@example.test" in info.value.detail  # names the account
        assert info.value.temporary
        assert await store.list_messages(await inbox_id(store, roomy.id)) == []
        assert await store.highest_modseq(roomy.id) == before
        usage = await store.quota_usage(tight.id)
        assert (usage.used_bytes, usage.message_count, usage.quota_bytes) == (600, 1, 1000)
        exact = await put_blob(store, message(2, 400))  # exactly up to the quota is allowed
        await store.append(await inbox_id(store, tight.id), exact)
        assert (await store.quota_usage(tight.id)).used_bytes == 1000

    run(body)


def test_get_messages(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        for i in range(5):
            await store.append(inbox, await put_blob(store, message(i)))
        got = await store.get_messages(inbox, [5, 2, 99, 2, 0, -1])
        assert [m.uid for m in got] == [2, 5]
        assert await store.get_messages(inbox, []) == []
        many = await store.get_messages(inbox, range(1, 2000))
        assert [m.uid for m in many] == [1, 2, 3, 4, 5]
        with pytest.raises(NotFound):
            await store.get_messages(999_999, [1])

    run(body)


def test_update_flags(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        for i in range(3):
            await store.append(inbox, await put_blob(store, message(i)))
        added = frozenset({"\\SEEN", "$Label"})
        res = await store.update_flags(inbox, [1, 2], added, op=FlagOp.ADD)
        assert [m.uid for m in res.updated] == [1, 2] and res.modified == ()
        assert all(m.flags == frozenset({SEEN, "$Label"}) for m in res.updated)
        modseq = res.updated[0].modseq
        assert modseq == await store.highest_modseq(acc.id)
        box = await store.get_mailbox_by_id(inbox)
        assert box is not None and box.unseen_count == 1 and box.highest_modseq == modseq

        # Setting what is already set changes nothing: no MODSEQ bump (RFC 7162 §3.1).
        again = await store.update_flags(inbox, [1, 2], frozenset({SEEN}), op=FlagOp.ADD)
        assert again.updated == () and await store.highest_modseq(acc.id) == modseq

        removed = await store.update_flags(inbox, [1, 3], frozenset({"$label"}), op=FlagOp.REMOVE)
        assert removed.updated == ()  # keywords match exactly as stored
        removed = await store.update_flags(inbox, [1, 3], frozenset({"$Label"}), op=FlagOp.REMOVE)
        assert [m.uid for m in removed.updated] == [1]
        assert removed.updated[0].flags == frozenset({SEEN})

        replaced = await store.update_flags(
            inbox, [1, 2, 3, 42], frozenset({FLAGGED, ANSWERED}), op=FlagOp.REPLACE
        )
        assert [m.uid for m in replaced.updated] == [1, 2, 3]
        listed = await store.list_messages(inbox)
        assert all(m.flags == frozenset({FLAGGED, ANSWERED}) for m in listed)
        box = await store.get_mailbox_by_id(inbox)
        assert box is not None and box.unseen_count == 3
        with pytest.raises(NotFound):
            await store.update_flags(999_999, [1], frozenset({SEEN}), op=FlagOp.ADD)

    run(body)


def test_unchangedsince(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        for i in range(3):
            await store.append(inbox, await put_blob(store, message(i)))
        msgs = await store.list_messages(inbox)
        snapshot = msgs[-1].modseq  # every message has modseq <= snapshot
        await store.update_flags(inbox, [2], frozenset({FLAGGED}), op=FlagOp.ADD)
        # RFC 7162 §3.1.3: message 2 changed after the snapshot -> reported, not modified.
        res = await store.update_flags(
            inbox, [1, 2, 3], frozenset({SEEN}), op=FlagOp.ADD, unchanged_since=snapshot
        )
        assert [m.uid for m in res.updated] == [1, 3]
        assert res.modified == (2,)
        (two,) = await store.get_messages(inbox, [2])
        assert SEEN not in two.flags
        # UNCHANGEDSINCE 0 fails for every message (every MODSEQ is >= 1).
        zero = await store.update_flags(
            inbox, [1, 2, 3], frozenset({DRAFT}), op=FlagOp.ADD, unchanged_since=0
        )
        assert zero.updated == () and zero.modified == (1, 2, 3)

    run(body)


def test_expunge(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        shared = await put_blob(store, message(0, 100))
        await store.append(inbox, shared)  # uid 1
        await store.append(inbox, shared)  # uid 2: same blob
        own = [await put_blob(store, message(i, 100 + i)) for i in (3, 4, 5)]
        for ref in own:
            await store.append(inbox, ref)  # uids 3, 4, 5
        await store.update_flags(inbox, [1, 3], frozenset({DELETED}), op=FlagOp.ADD)
        assert await store.expunge(inbox) == [1, 3]  # None: the \Deleted ones
        assert store.blobs.exists(shared.id)  # uid 2 still refers to it
        assert not store.blobs.exists(own[0].id)
        assert await store.expunge(inbox, [2, 4, 77]) == [2, 4]  # given uids, flag or not
        assert not store.blobs.exists(shared.id)
        assert await store.expunge(inbox) == []
        assert [m.uid for m in await store.list_messages(inbox)] == [5]
        box = await store.get_mailbox_by_id(inbox)
        assert box is not None
        assert (box.message_count, box.size_bytes, box.unseen_count, box.uidnext) == (
            1, 105, 1, 6,
        )
        usage = await store.quota_usage(acc.id)
        assert (usage.used_bytes, usage.message_count) == (105, 1)
        with pytest.raises(NotFound):
            await store.expunge(999_999)

    run(body)


def test_copy(run, clock) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store, quota_bytes=1000)
        other = await account(store, "other")
        inbox = await inbox_id(store, acc.id)
        archive = await store.get_mailbox(acc.id, "Archive")
        assert archive is not None
        for i in range(3):
            await store.append(
                inbox, await put_blob(store, message(i, 100)), flags=frozenset({SEEN}),
                internal_date=1_500_000_000.0 + i,
            )
        clock.advance(5)
        pairs = await store.copy(inbox, [3, 1, 99], archive.id)
        assert pairs == [(1, 1), (3, 2)]  # RFC 4315 COPYUID: source order, new UIDs
        src = {m.uid: m for m in await store.list_messages(inbox)}
        dst = await store.list_messages(archive.id)
        for (old, new), copied in zip(pairs, dst, strict=True):
            assert copied.uid == new
            assert copied.blob_id == src[old].blob_id and copied.flags == src[old].flags
            assert copied.internal_date == src[old].internal_date
            assert copied.email_id == src[old].email_id  # RFC 8474 §5.1
            assert copied.saved_date == clock.now()
        assert (await store.quota_usage(acc.id)).used_bytes == 500
        await store.copy(inbox, [1, 2, 3], archive.id)  # 800 of 1000 bytes
        with pytest.raises(QuotaExceeded):  # 3 more * 100 > 1000
            await store.copy(inbox, [1, 2, 3], archive.id)
        usage = await store.quota_usage(acc.id)
        assert (usage.used_bytes, usage.message_count) == (800, 8)
        assert len(await store.list_messages(archive.id)) == 5
        with pytest.raises(Conflict):
            await store.copy(inbox, [1], await inbox_id(store, other.id))
        assert await store.copy(inbox, [42], archive.id) == []

    run(body)


def test_move(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store, quota_bytes=300)
        inbox = await inbox_id(store, acc.id)
        trash = await store.get_mailbox(acc.id, "Trash")
        assert trash is not None
        refs = [await put_blob(store, message(i, 100)) for i in range(3)]
        for ref in refs:
            await store.append(inbox, ref)
        await store.update_flags(inbox, [2], frozenset({SEEN}), op=FlagOp.ADD)
        # The account is exactly at its quota: a move does not change usage (RFC 6851).
        pairs = await store.move(inbox, [2, 3], trash.id)
        assert pairs == [(2, 1), (3, 2)]
        assert [m.uid for m in await store.list_messages(inbox)] == [1]
        moved = await store.list_messages(trash.id)
        assert [m.blob_id for m in moved] == [refs[1].id, refs[2].id]
        assert SEEN in moved[0].flags
        usage = await store.quota_usage(acc.id)
        assert (usage.used_bytes, usage.message_count) == (300, 3)
        src = await store.get_mailbox_by_id(inbox)
        dst = await store.get_mailbox_by_id(trash.id)
        assert src is not None and dst is not None
        assert (src.message_count, src.size_bytes, src.unseen_count) == (1, 100, 1)
        assert (dst.message_count, dst.size_bytes, dst.unseen_count) == (2, 200, 1)
        assert all(store.blobs.exists(r.id) for r in refs)

    run(body)


def test_quota_usage_stays_exact(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        work = await store.create_mailbox(acc.id, "work")
        sizes = [123, 4567, 89, 1000, 2048]
        for i, size in enumerate(sizes):
            await store.append(inbox, await put_blob(store, message(i, size)))
        ref = await put_blob(store, message(9, 777))
        await store.deliver(ref, [DeliveryTarget(acc.id, "work")])
        await store.copy(inbox, [1, 2], work.id)
        await store.move(inbox, [3], work.id)
        await store.expunge(inbox, [4])
        await store.delete_mailbox(acc.id, "work")
        await store.update_flags(inbox, [5], frozenset({SEEN}), op=FlagOp.ADD)
        total = 0
        count = 0
        for box in await store.list_mailboxes(acc.id):
            for m in await store.list_messages(box.id):
                total += m.size
                count += 1
            assert box.size_bytes == sum(m.size for m in await store.list_messages(box.id))
        usage = await store.quota_usage(acc.id)
        assert (usage.used_bytes, usage.message_count) == (total, count) == (123 + 4567 + 2048, 3)
        fetched = await store.get_account_by_id(acc.id)
        assert fetched is not None
        assert (fetched.used_bytes, fetched.message_count) == (total, count)

    run(body)


def test_snapshot_mailbox_matches_list_messages(run) -> None:
    """The column snapshot (IMAP SELECT) holds exactly what list_messages does, in UID order,
    with each distinct flag set once, and the MODSEQs of the same transaction."""

    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        for n in range(7):
            await store.append(inbox, await put_blob(store, message(n)))
        await store.update_flags(inbox, [2, 4], frozenset({SEEN}), op=FlagOp.ADD)
        await store.update_flags(inbox, [5], frozenset({SEEN, "$Label"}), op=FlagOp.ADD)
        await store.update_flags(inbox, [3], frozenset({DELETED}), op=FlagOp.ADD)
        await store.expunge(inbox)
        snap = await store.snapshot_mailbox(inbox)
        messages = await store.list_messages(inbox)
        assert list(snap.uids) == [m.uid for m in messages] == [1, 2, 4, 5, 6, 7]
        assert list(snap.modseqs) == [m.modseq for m in messages]
        assert [snap.flag_sets[i] for i in snap.flag_ids] == [m.flags for m in messages]
        assert len(set(snap.flag_sets)) == len(snap.flag_sets) == 3  # {}, {seen}, {seen,$label}
        box = await store.get_mailbox_by_id(inbox)
        assert snap.mailbox == box
        # the expunge raised the mailbox MODSEQ above every remaining message (RFC 7162 §3.2.10)
        assert snap.account_modseq >= box.highest_modseq > max(snap.modseqs)
        empty = await store.create_mailbox(acc.id, "Empty")
        nothing = await store.snapshot_mailbox(empty.id)
        assert (len(nothing.uids), len(nothing.modseqs), nothing.flag_sets) == (0, 0, ())
        with pytest.raises(NotFound):
            await store.snapshot_mailbox(999_999)

    run(body)


def test_email_ids_are_unique_increasing_and_never_reused(
    backend: Backend, tmp_path: Path, clock: FixedClock
) -> None:
    """RFC 8474 §5.1: an EMAILID is never reused for a different message: not across
    batches, not after failed deliveries, not after the message holding the highest one was
    expunged and the store reopened."""
    data = tmp_path / "data"
    seen: list[int] = []  # every EMAILID handed out, in the order of the UIDs that got them

    async def first() -> None:
        store = await backend.open(data, clock)
        try:
            roomy = await account(store, "roomy")
            tight = await account(store, "tight", quota_bytes=1000)
            inbox = await inbox_id(store, roomy.id)
            refs = [await put_blob(store, message(n)) for n in range(40)]  # 200 octets each
            commits, _units = backend.commit_counts(store)
            # Concurrent deliveries (group-committed together); once tight's quota is used
            # up, those that include tight raise QuotaExceeded (rolled back inside the batch).
            results = await asyncio.gather(*(
                store.deliver(ref, [DeliveryTarget(roomy.id)] + (
                    [DeliveryTarget(tight.id)] if n % 2 else []))
                for n, ref in enumerate(refs)
            ), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            assert len(failed) == 15 and all(isinstance(r, QuotaExceeded) for r in failed)
            assert backend.commit_counts(store)[0] - commits < 25  # batched, failures inside
            for n in range(40, 50):  # one batch each
                await store.deliver(await put_blob(store, message(n)), [DeliveryTarget(roomy.id)])
            await store.append(inbox, await put_blob(store, message(50)))
            stored = await store.list_messages(inbox)
            assert len(stored) == 25 + 10 + 1
            seen.extend(m.email_id for m in stored)
            assert seen == sorted(set(seen))  # unique, increasing with the UIDs
            tight_ids = {m.email_id for m in await store.list_messages(
                await inbox_id(store, tight.id))}
            assert len(tight_ids) == 5 and tight_ids <= set(seen)  # copies share theirs
            trash = await store.get_mailbox(roomy.id, "Trash")
            assert trash is not None
            (copied,) = await store.copy(inbox, [stored[-1].uid], trash.id)
            (copy,) = await store.get_messages(trash.id, [copied[1]])
            assert copy.email_id == stored[-1].email_id  # RFC 8474 §5.1: COPY keeps it
            # expunge every message holding the highest EMAILID
            await store.expunge(inbox, [stored[-1].uid])
            await store.expunge(trash.id, [copy.uid])
        finally:
            await store.close()

    async def second() -> None:
        store = await backend.open(data, clock)
        try:
            acc = await store.get_account(f"roomy@{DOMAIN}")
            assert acc is not None
            inbox = await inbox_id(store, acc.id)
            known = {m.uid for m in await store.list_messages(inbox)}
            for n in range(51, 54):
                await store.deliver(await put_blob(store, message(n)), [DeliveryTarget(acc.id)])
            await store.append(inbox, await put_blob(store, message(54)))
            fresh = [m.email_id for m in await store.list_messages(inbox) if m.uid not in known]
            assert len(fresh) == 4 and fresh == sorted(set(fresh))
            assert min(fresh) > max(seen)  # nothing below an id handed out before
            seen.extend(fresh)
        finally:
            await store.close()

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(second())  # and again: every reopen starts above all ids ever handed out
    assert seen == sorted(set(seen)) and len(seen) == 36 + 8
