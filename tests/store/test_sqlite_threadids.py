"""SQLite thread ids (RFC 8474 §5.2): header keys (fuzzed), the version-8 schema step and the
backfill of messages stored before it, links dropped with their account."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storekit import CREDS, put_blob

from hato.codec.imap.threads import msg_ids
from hato.codec.mime.headers import header_bytes_to_str, split_headers, unfold
from hato.store.model import DeliveryTarget
from hato.store.sqlite import open_store, schema, threadids
from hato.store.sqlite.threadids import MAX_KEYS, ThreadKeys, thread_keys

# -- keys from the header (sans-IO) ------------------------------------------------------------


def test_thread_keys_from_header_fields() -> None:
    header = (b"Subject: x\r\nmessage-id :\r\n <own@x>\r\nIn-Reply-To: <p2@x> (comment)\r\n"
              b"References: <p1@x>\r\n\t<p2@x>\r\nX-Message-ID: <fake@x>\r\n"
              b"Message-ID: <second@x>\r\n")
    # The first field of each name counts; a References id repeated by In-Reply-To once;
    # "X-Message-ID" is another field; obsolete WSP before ":" and folding are read.
    assert thread_keys(header) == ThreadKeys("own@x", ("p1@x", "p2@x"))
    assert thread_keys(b"Subject: none\r\n") == ThreadKeys(None, ())
    assert thread_keys(b"Message-ID: not an id\r\nReferences: <@x> <a@>\r\n") == ThreadKeys()
    # A continuation line is never taken for a field.
    assert thread_keys(b"Subject: a\r\n Message-ID: <no@x>\r\n") == ThreadKeys()
    # RFC 6532: UTF-8 in an id is kept as text.
    assert thread_keys("Message-ID: <ü@例え>\r\n".encode()) == ThreadKeys("ü@例え", ())


def test_keys_are_bounded_and_keep_the_root_and_closest() -> None:
    refs = tuple(f"r{i}@x" for i in range(200))
    keys = ThreadKeys("own@x", (*refs, "own@x")).lookup_ids()
    assert len(keys) == MAX_KEYS
    assert keys[:2] == ["own@x", "r0@x"] and keys[-1] == "r199@x"
    assert thread_keys(b"Message-ID: <" + b"a" * 600 + b"@x>\r\n") == ThreadKeys()


_FIELDS = st.sampled_from([b"Message-ID", b"References", b"In-Reply-To", b"message-id",
                           b"Subject", b"X-Ref"])
_VALUES = st.lists(st.sampled_from([b"<a@x>", b"<\"q\"@x>", b" ", b"\r\n ", b"<", b">", b"@",
                                    b"(c)", b"\xff", b"<b@y>", b"\r\n", b":"]), max_size=12)


@given(st.lists(st.tuples(_FIELDS, _VALUES), max_size=8), st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_thread_keys_never_fail(fields: list[tuple[bytes, list[bytes]]], junk: bytes) -> None:
    header = b"".join(name + b":" + b"".join(value) + b"\r\n" for name, value in fields) + junk
    keys = thread_keys(header)
    for key in keys.lookup_ids():
        assert "@" in key and key not in ("", "@") and len(key) <= threadids.MAX_ID_LENGTH
    assert len(keys.lookup_ids()) == len(set(keys.lookup_ids())) <= MAX_KEYS
    # The same ids as the RFC 5256 reading the THREAD command uses (``msg_ids`` on the
    # unfolded field), here on header fields as ``split_headers`` sees them.
    block = split_headers(header + b"\r\n", 0)
    first: dict[str, bytes] = {}
    for field in block.headers:
        first.setdefault(field.key, field.raw)

    def reference(key: str) -> list[str]:
        raw = first.get(key)
        return [] if raw is None else [
            i for i in msg_ids(header_bytes_to_str(unfold(raw)))
            if len(i) <= threadids.MAX_ID_LENGTH]

    expected_refs: list[str] = []
    for ref in reference("references") + reference("in-reply-to"):
        if ref not in expected_refs:
            expected_refs.append(ref)
    own = reference("message-id")
    if junk.isascii() and b"\r" not in junk:
        assert keys == ThreadKeys(own[0] if own else None, tuple(expected_refs))


# -- schema step and backfill ------------------------------------------------------------------

_THREAD_STEP = schema.MIGRATIONS.index(threadids.migrate_thread_ids)


def _mail(msg_id: str, *, parent: str | None = None) -> bytes:
    reply = f"In-Reply-To: <{parent}>\r\n" if parent else ""
    return f"Message-ID: <{msg_id}>\r\n{reply}Subject: s\r\n\r\nbody\r\n".encode()


async def _fill(data: Path) -> None:
    store = await open_store(data)
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", CREDS)
    bob = await store.add_account("bob@example.test", CREDS)
    await store.create_mailbox(alice.id, "Kept")
    for n, parent in ((1, None), (2, 1), (3, None), (4, 2), (5, None), (6, 5)):
        blob = await put_blob(store, _mail(f"{n}@x", parent=f"{parent}@x" if parent else None))
        await store.deliver(blob, [DeliveryTarget(alice.id), DeliveryTarget(alice.id, "Kept"),
                                   DeliveryTarget(bob.id)])
    await store.close()


def _downgrade_to_version_7(db: Path) -> None:
    """Make ``db`` what the code before the thread-id step left: without the step's column,
    index and table, and without the objects of later steps."""
    before = sqlite3.connect(":memory:")
    schema.migrate(before, schema.MIGRATIONS[:_THREAD_STEP])
    old_objects = {r[0] for r in before.execute("SELECT name FROM sqlite_master")}
    conn = sqlite3.connect(db, isolation_level=None)
    # Bodies stored in the database (a later step) were files at their address then.
    for blob_id, data in conn.execute("SELECT blob_id, data FROM blob_bodies").fetchall():
        address = db.parent / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
        address.parent.mkdir(parents=True, exist_ok=True)
        address.write_bytes(data)
    for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index') "
            "ORDER BY type = 'table'").fetchall():
        if name not in old_objects and not name.startswith("sqlite_"):
            conn.execute(f"DROP {kind} IF EXISTS {name}")
    # Columns added by this step (messages.thread_id) and later ones (e.g. accounts.scram_sha1).
    tables = before.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                            "AND sql NOT LIKE 'CREATE VIRTUAL%'").fetchall()
    for (table,) in tables:
        old = {r[1] for r in before.execute(f"PRAGMA table_info({table})")}
        for column in [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]:
            if column not in old:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute(f"PRAGMA user_version = {_THREAD_STEP:d}")
    conn.close()


async def _open_and_close(data: Path) -> None:
    store = await open_store(data)
    await store.close()


def _threads(db: Path) -> dict[tuple[str, str, int], int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT a.address, b.name, m.email_id, m.thread_id FROM messages m "
            "JOIN mailboxes b ON b.id = m.mailbox_id JOIN accounts a ON a.id = b.account_id"
        ).fetchall()
    finally:
        conn.close()
    return {(a.split("@")[0], box, int(e)): int(t) for a, box, e, t in rows}


@pytest.mark.parametrize("batch", [500, 2])
def test_upgrade_backfills_thread_ids(tmp_path: Path, monkeypatch, batch: int) -> None:
    monkeypatch.setattr(threadids, "BACKFILL_BATCH", batch)  # 2: several transactions
    asyncio.run(_fill(tmp_path))
    assigned = _threads(tmp_path / "hato.db")
    _downgrade_to_version_7(tmp_path / "hato.db")
    asyncio.run(_open_and_close(tmp_path))  # migrates, then backfills
    backfilled = _threads(tmp_path / "hato.db")
    assert all(t != 0 for t in backfilled.values())
    # The same grouping as when the messages were stored one by one: per account, 1-2-4 and
    # 5-6 threaded, 3 alone, and every copy of one message (one EMAILID) in the same thread.
    def groups(threads: dict[tuple[str, str, int], int]) -> set[frozenset[tuple[str, str, int]]]:
        by_thread: dict[tuple[str, int], set[tuple[str, str, int]]] = {}
        for key, thread in threads.items():  # thread ids are compared within an account
            by_thread.setdefault((key[0], thread), set()).add(key)
        return {frozenset(v) for v in by_thread.values()}

    assert groups(backfilled) == groups(assigned)
    assert len(groups(backfilled)) == 6  # three threads in each of two accounts


def test_open_store_closes_after_backfill(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path))
    _downgrade_to_version_7(tmp_path / "hato.db")

    async def reopen() -> int:
        store = await open_store(tmp_path)
        try:
            alice = await store.get_account("alice@example.test")
            assert alice is not None
            box = await store.get_mailbox(alice.id, "INBOX")
            assert box is not None
            # A message delivered after the upgrade links to the backfilled ones.
            blob = await put_blob(store, _mail("7@x", parent="6@x"))
            (appended,) = await store.deliver(blob, [DeliveryTarget(alice.id)])
            messages = {m.uid: m for m in await store.list_messages(box.id)}
            assert messages[appended.uid].thread_id == messages[6].thread_id
            return len(messages)
        finally:
            await store.close()

    assert asyncio.run(reopen()) == 7
    conn = sqlite3.connect(tmp_path / "hato.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    conn.close()


def test_removing_an_account_drops_its_links(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path))

    async def remove() -> None:
        store = await open_store(tmp_path)
        await store.remove_account("alice@example.test")
        await store.close()

    asyncio.run(remove())
    conn = sqlite3.connect(tmp_path / "hato.db")
    accounts = {r[0] for r in conn.execute("SELECT DISTINCT account_id FROM thread_links")}
    remaining = {r[0] for r in conn.execute("SELECT id FROM accounts")}
    conn.close()
    assert accounts == remaining and len(remaining) == 1


def test_a_huge_references_field_is_bounded() -> None:
    # About 256 KiB of distinct ids (the most of a header that is read): at most MAX_KEYS used.
    refs = b" ".join(b"<%d@x>" % i for i in range(40_000))
    keys = thread_keys(b"Message-ID: <own@x>\r\nReferences: " + refs + b"\r\n\r\n")
    assert len(keys.references) > 10_000 and len(keys.lookup_ids()) == MAX_KEYS
    assert keys.lookup_ids()[:2] == ["own@x", "0@x"]
