"""Backends under test and small helpers for the store contract suite.

Adding a backend to the contract suite is one line in ``BACKENDS``: a name, an async opener
``(data_dir, clock) -> MailStore``, and how to read its group-commit counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hato.core.clock import Clock, FixedClock
from hato.store.api import MailStore
from hato.store.model import Account, BlobRef, Credentials, DeliveryTarget
from hato.store.sqlite import SqliteStore, open_store


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Path, Clock], Awaitable[MailStore]]
    # (commits, committed write units) so far: group commit batches when commits < units.
    commit_counts: Callable[[MailStore], tuple[int, int]]


async def _open_sqlite(data_dir: Path, clock: Clock) -> MailStore:
    return await open_store(data_dir, clock=clock)


def _sqlite_counts(store: MailStore) -> tuple[int, int]:
    assert isinstance(store, SqliteStore)
    return store.stats.commits, store.stats.write_units


BACKENDS: list[Backend] = [
    Backend("sqlite", _open_sqlite, _sqlite_counts),
]

DOMAIN = "example.test"
CREDS = Credentials(password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put_blob(store: MailStore, data: bytes) -> BlobRef:
    """Write a body through the BlobWriter as a server would (commit off the event loop)."""
    writer = store.blobs.writer()
    for i in range(0, len(data), 4096):
        writer.write(data[i : i + 4096])
    return await asyncio.to_thread(writer.commit)


async def deliver_each(store: MailStore, bodies: list[bytes]) -> list[str]:
    """Deliver each body to a new account's INBOX, one after the other; their blob ids."""
    acc = await account(store)
    ids = []
    for raw in bodies:
        ref = await put_blob(store, raw)
        await store.deliver(ref, [DeliveryTarget(acc.id)])
        ids.append(ref.id)
    return ids


def db_rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    """Every row ``sql`` finds in the embedded store's database under ``data`` (closed or
    running: a connection of its own)."""
    conn = sqlite3.connect(data / "hato.db")
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


async def account(
    store: MailStore, local: str = "user", *, quota_bytes: int | None = None
) -> Account:
    if not await store.has_domain(DOMAIN):
        await store.add_domain(DOMAIN)
    return await store.add_account(f"{local}@{DOMAIN}", CREDS, quota_bytes=quota_bytes)


async def inbox_id(store: MailStore, account_id: int) -> int:
    box = await store.get_mailbox(account_id, "INBOX")
    assert box is not None
    return box.id


def message(n: int, size: int = 200) -> bytes:
    head = f"Subject: message {n}\r\n\r\n".encode()
    return head + b"x" * max(0, size - len(head))


T = TypeVar("T")


def run_store(
    data: Path, body: Callable[[SqliteStore], Awaitable[T]], clock: Clock | None = None
) -> T:
    """``body(store)`` on the embedded store over ``data`` (a ``FixedClock`` by default),
    closed afterwards, in a fresh event loop."""

    async def main() -> T:
        store = await open_store(data, clock=clock or FixedClock())
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())
