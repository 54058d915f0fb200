"""Store-side helpers of the export/import tests: fill an account, take a snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mbox_corpus import Sample

from hato.store.api import MailStore
from hato.store.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, Account

FLAG_SETS = [
    frozenset(),
    frozenset({SEEN}),
    frozenset({SEEN, ANSWERED, "$Forwarded"}),
    frozenset({FLAGGED, "Junk", "$label1"}),
    frozenset({DRAFT, DELETED}),
    frozenset({SEEN, "NonJunk", "Junk", "$Forwarded", "Work"}),
]
NEW_MAILBOXES = ["a", "a/b", "日本語", "x.y", "Entwürfe/2024", "Tom & Jerry"]

WithStore = Callable[[Callable[[MailStore, Account], Awaitable[Any]]], Any]
Snapshot = dict[str, tuple[bool, list[tuple[bytes, frozenset[str], float]]]]


async def add_message(
    store: MailStore, mailbox_id: int, data: bytes, *, flags: frozenset[str], date: float
) -> None:
    writer = store.blobs.writer()
    writer.write(data)
    blob = await asyncio.to_thread(writer.commit)
    await store.append(mailbox_id, blob, flags=flags, internal_date=date)


async def populate(store: MailStore, account: Account, samples: list[Sample]) -> None:
    for name in NEW_MAILBOXES:
        await store.create_mailbox(account.id, name)
    mailboxes = sorted(await store.list_mailboxes(account.id), key=lambda m: m.name)
    for i, sample in enumerate(samples):
        target = mailboxes[i % len(mailboxes)]
        await add_message(
            store, target.id, sample.stored, flags=FLAG_SETS[i % len(FLAG_SETS)], date=sample.date
        )
    await store.set_subscribed(account.id, "Junk", False)
    await store.set_subscribed(account.id, "a", False)
    await store.set_subscribed(account.id, "a/b", True)
    await store.set_subscribed(account.id, "日本語", True)


async def snapshot(store: MailStore, account: Account) -> Snapshot:
    result: Snapshot = {}
    for mailbox in await store.list_mailboxes(account.id):
        messages = [
            (store.blobs.read(m.blob_id), m.flags, m.internal_date)
            for m in await store.list_messages(mailbox.id)
        ]
        result[mailbox.name] = (mailbox.subscribed, messages)
    return result
