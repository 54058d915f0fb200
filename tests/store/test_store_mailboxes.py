"""Contract: mailbox names, hierarchy, rename, delete, subscriptions, UIDVALIDITY."""

from __future__ import annotations

import pytest
from storekit import account, inbox_id, message, put_blob

from hato.core.errors import AlreadyExists, Conflict, NotFound, UsageError
from hato.store.api import MailStore
from hato.store.model import SEEN, ChangeKind, DeliveryTarget


async def names(store: MailStore, account_id: int) -> list[str]:
    return [m.name for m in await store.list_mailboxes(account_id)]


def test_create_makes_missing_parents(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        box = await store.create_mailbox(acc.id, "a/b/c")
        assert box.name == "a/b/c" and box.uidnext == 1 and not box.subscribed
        # RFC 9051 §6.3.4: superior names are created too.
        assert {"a", "a/b", "a/b/c"} <= set(await names(store, acc.id))
        # A trailing separator only declares intent (RFC 9051 §6.3.4).
        assert (await store.create_mailbox(acc.id, "d/")).name == "d"
        with pytest.raises(AlreadyExists):
            await store.create_mailbox(acc.id, "a/b")
        with pytest.raises(AlreadyExists):  # RFC 9051 §6.3.4: creating INBOX is an error
            await store.create_mailbox(acc.id, "inbox")
        for bad in ("", "a//b", "/a", "x\x00y", "tab\there"):
            with pytest.raises(UsageError):
                await store.create_mailbox(acc.id, bad)
        with pytest.raises(NotFound):
            await store.create_mailbox(999_999, "x")

    run(body)


def test_special_use_and_names(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        box = await store.create_mailbox(acc.id, "Everything", special_use="\\All")
        assert box.special_use == "\\All"
        with pytest.raises(UsageError):  # RFC 6154 §3
            await store.create_mailbox(acc.id, "Odd", special_use="\\Bogus")
        uni = await store.create_mailbox(acc.id, "Entw\u0075\u0308rfe")  # not NFC
        assert uni.name == "Entw\u00fcrfe"  # RFC 9051 §6.3.4: stored as Net-Unicode (NFC)
        assert await store.get_mailbox(acc.id, "Entw\u00fcrfe") == uni
        for spelling in ("INBOX", "inbox", "InBoX"):  # RFC 9051 §5.1
            found = await store.get_mailbox(acc.id, spelling)
            assert found is not None and found.name == "INBOX"
        child = await store.create_mailbox(acc.id, "inbox/Sub")
        assert child.name == "INBOX/Sub"
        assert await store.get_mailbox(acc.id, "nope") is None
        assert await store.get_mailbox(acc.id, "a//b") is None
        assert await store.get_mailbox_by_id(box.id) == box
        assert await store.get_mailbox_by_id(999_999) is None
        listed = await names(store, acc.id)
        assert listed[0] == "INBOX" and listed[1:] == sorted(listed[1:])

    run(body)


def test_rename_with_children(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        c = await store.create_mailbox(acc.id, "a/b/c")
        a = await store.get_mailbox(acc.id, "a")
        assert a is not None
        ref = await put_blob(store, message(1))
        await store.append(c.id, ref, flags=frozenset({SEEN}))
        renamed = await store.rename_mailbox(acc.id, "a", "x/y")
        assert renamed.id == a.id and renamed.name == "x/y"
        assert renamed.uidvalidity == a.uidvalidity
        listed = set(await names(store, acc.id))
        assert {"x", "x/y", "x/y/b", "x/y/b/c"} <= listed
        assert not {n for n in listed if n == "a" or n.startswith("a/")}
        moved = await store.get_mailbox(acc.id, "x/y/b/c")
        assert moved is not None and moved.id == c.id and moved.uidvalidity == c.uidvalidity
        assert [m.flags for m in await store.list_messages(c.id)] == [frozenset({SEEN})]
        with pytest.raises(NotFound):
            await store.rename_mailbox(acc.id, "a", "q")
        with pytest.raises(AlreadyExists):
            await store.rename_mailbox(acc.id, "x/y", "Sent")
        with pytest.raises(Conflict):
            await store.rename_mailbox(acc.id, "x/y", "x/y/b/z")
        with pytest.raises(AlreadyExists):
            await store.rename_mailbox(acc.id, "Sent", "inbox")

    run(body)


def test_rename_refuses_when_a_child_target_exists(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        await store.create_mailbox(acc.id, "p/q")
        await store.create_mailbox(acc.id, "r/q")
        await store.delete_mailbox(acc.id, "r")  # r/q stays (RFC 9051 §6.3.5)
        with pytest.raises(AlreadyExists):
            await store.rename_mailbox(acc.id, "p", "r")
        assert "p/q" in await names(store, acc.id)  # nothing renamed

    run(body)


def test_rename_inbox_moves_messages(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        child = await store.create_mailbox(acc.id, "INBOX/keep")
        refs = [await put_blob(store, message(i)) for i in range(3)]
        for i, ref in enumerate(refs):
            await store.append(inbox, ref, flags=frozenset({SEEN} if i == 1 else set()))
        before = await store.get_mailbox_by_id(inbox)
        old = await store.rename_mailbox(acc.id, "inbox", "old-mail")
        # RFC 9051 §6.3.6: messages move to a new mailbox, INBOX stays and is empty.
        assert old.name == "old-mail" and old.id != inbox
        assert [m.blob_id for m in await store.list_messages(old.id)] == [r.id for r in refs]
        assert [m.uid for m in await store.list_messages(old.id)] == [1, 2, 3]
        assert [SEEN in m.flags for m in await store.list_messages(old.id)] == [False, True, False]
        assert old.message_count == 3 and old.unseen_count == 2
        after = await store.get_mailbox_by_id(inbox)
        assert after is not None and before is not None
        assert after.name == "INBOX" and after.message_count == 0
        assert after.uidvalidity == before.uidvalidity and after.uidnext == 4
        assert await store.get_mailbox_by_id(child.id) == child  # children unaffected
        usage = await store.quota_usage(acc.id)
        assert usage.message_count == 3

    run(body)


def test_delete_mailbox(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        parent = await store.create_mailbox(acc.id, "p")
        child = await store.create_mailbox(acc.id, "p/c")
        ref = await put_blob(store, message(1, 1000))
        await store.append(parent.id, ref)
        await store.append(child.id, await put_blob(store, message(2, 500)))
        with pytest.raises(Conflict):  # RFC 9051 §6.3.5: INBOX cannot be deleted
            await store.delete_mailbox(acc.id, "INBOX")
        with pytest.raises(NotFound):
            await store.delete_mailbox(acc.id, "missing")
        await store.delete_mailbox(acc.id, "p")
        # RFC 9051 §6.3.5: inferior names MUST NOT be removed.
        assert await store.get_mailbox(acc.id, "p") is None
        kept = await store.get_mailbox_by_id(child.id)
        assert kept is not None and kept.name == "p/c" and kept.message_count == 1
        assert not store.blobs.exists(ref.id)
        usage = await store.quota_usage(acc.id)
        assert (usage.used_bytes, usage.message_count) == (500, 1)
        with pytest.raises(NotFound):
            await store.list_messages(parent.id)
        with pytest.raises(NotFound):
            await store.delete_mailbox(acc.id, "p")

    run(body)


def test_uidvalidity_unique_over_time(run, clock) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        seen: list[int] = []
        for _ in range(5):
            box = await store.create_mailbox(acc.id, "again")
            await store.append(box.id, await put_blob(store, message(len(seen))))
            seen.append(box.uidvalidity)
            await store.delete_mailbox(acc.id, "again")
        # RFC 9051 §2.3.1.1: a recreated name gets a new (here: larger) UIDVALIDITY, even
        # when the clock stands still.
        assert seen == sorted(set(seen))
        clock.advance(-10_000)  # a clock stepping backwards does not break it either
        box = await store.create_mailbox(acc.id, "again")
        assert box.uidvalidity > seen[-1]
        renamed = await store.rename_mailbox(acc.id, "again", "elsewhere")
        assert renamed.uidvalidity == box.uidvalidity
        fresh = await store.create_mailbox(acc.id, "again")
        assert fresh.uidvalidity > box.uidvalidity

    run(body)


def test_subscriptions(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        box = await store.create_mailbox(acc.id, "news")
        assert not box.subscribed
        await store.set_subscribed(acc.id, "news", True)
        subscribed = await store.get_mailbox(acc.id, "news")
        assert subscribed is not None and subscribed.subscribed
        modseq = await store.highest_modseq(acc.id)
        await store.set_subscribed(acc.id, "news", True)  # no change: no MODSEQ bump
        assert await store.highest_modseq(acc.id) == modseq
        await store.set_subscribed(acc.id, "news", False)
        assert await store.highest_modseq(acc.id) == modseq + 1
        changes = await store.changes_since(acc.id, modseq)
        assert [(c.kind, c.mailbox_id, c.uid) for c in changes] == [
            (ChangeKind.MAILBOX_SUBSCRIPTION, box.id, None)
        ]
        with pytest.raises(NotFound):
            await store.set_subscribed(acc.id, "missing", True)

    run(body)


def test_deliver_falls_back_to_inbox(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        ref = await put_blob(store, message(1))
        (junk, fallback) = await store.deliver(
            ref, [DeliveryTarget(acc.id, "Junk"), DeliveryTarget(acc.id, "no/such/folder")]
        )
        junk_box = await store.get_mailbox(acc.id, "Junk")
        assert junk_box is not None and junk.mailbox_id == junk_box.id
        assert fallback.mailbox_id == await inbox_id(store, acc.id)

    run(body)
