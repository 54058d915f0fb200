"""SQLite backend: versioned schema, forward migrations at start, newer versions refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from storekit import CREDS

from hato.core.errors import SchemaVersionError
from hato.store.sqlite import open_store, schema


def _version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def _make_store_with_data(data: Path) -> None:
    store = await open_store(data)
    await store.add_domain("example.test")
    await store.add_account("user@example.test", CREDS)
    await store.close()


def test_fresh_store_has_current_version(tmp_path: Path) -> None:
    asyncio.run(_make_store_with_data(tmp_path))
    assert _version(tmp_path / "hato.db") == len(schema.MIGRATIONS)


def test_newer_database_is_refused(tmp_path: Path) -> None:
    asyncio.run(_make_store_with_data(tmp_path))
    newer = len(schema.MIGRATIONS) + 2
    conn = sqlite3.connect(tmp_path / "hato.db")
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    with pytest.raises(SchemaVersionError) as info:
        asyncio.run(open_store(tmp_path))
    known = len(schema.MIGRATIONS)
    assert str(info.value) == (
        f"database schema version {newer} is newer than this Hato ({known}); upgrade Hato"
    )
    assert _version(tmp_path / "hato.db") == newer  # left untouched


def _add_note_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE accounts ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated'")


def test_open_store_runs_a_new_migration_step(tmp_path: Path, monkeypatch) -> None:
    asyncio.run(_make_store_with_data(tmp_path))
    old = len(schema.MIGRATIONS)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, _add_note_column))

    async def reopen() -> None:
        store = await open_store(tmp_path)
        try:  # the data written by the older version is still there
            acc = await store.get_account("user@example.test")
            assert acc is not None and acc.credentials == CREDS
        finally:
            await store.close()

    asyncio.run(reopen())
    assert _version(tmp_path / "hato.db") == old + 1
    conn = sqlite3.connect(tmp_path / "hato.db")
    assert conn.execute("SELECT note FROM accounts").fetchall() == [("migrated",)]
    conn.close()
    asyncio.run(reopen())  # already current: the step does not run twice (ALTER would fail)


def test_failing_migration_step_leaves_previous_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)

    def broken(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("step failed")

    assert schema.migrate(conn, schema.MIGRATIONS) == 0
    with pytest.raises(RuntimeError):
        schema.migrate(conn, (*schema.MIGRATIONS, broken))
    assert schema.schema_version(conn) == len(schema.MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables and "accounts" in tables
    conn.close()


def test_v1_database_created_by_hand_is_migrated(tmp_path: Path) -> None:
    # A database exactly as version 1 wrote it (by hand, not through the store).
    conn = sqlite3.connect(tmp_path / "hato.db", isolation_level=None)
    schema.migrate(conn, schema.MIGRATIONS[:1])
    conn.execute("INSERT INTO domains VALUES ('v1.test')")
    conn.close()

    async def check() -> None:
        store = await open_store(tmp_path)
        try:
            assert await store.has_domain("v1.test")
        finally:
            await store.close()

    asyncio.run(check())
    assert _version(tmp_path / "hato.db") == len(schema.MIGRATIONS)


def test_scram_sha1_step_adds_the_column_and_old_accounts_keep_working(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    step = [m.__name__ for m in schema.MIGRATIONS].index("migrate_scram_sha1")
    schema.migrate(conn, schema.MIGRATIONS[:step])
    conn.execute("INSERT INTO domains (name) VALUES ('example.org')")
    conn.execute(
        "INSERT INTO accounts (address, domain, password_hash, scram_sha256) "
        "VALUES ('a@example.org', 'example.org', 'h', 's')"
    )
    schema.migrate(conn)
    row = conn.execute("SELECT scram_sha256, scram_sha1 FROM accounts").fetchone()
    assert row == ("s", None)  # SHA-1 keys come with the next password login
    conn.close()
