"""The versioned SQLite schema and its forward migrations, run at every start.

The version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a database from version
``i`` to ``i + 1``; each step runs in its own transaction together with the version bump, so a
crash mid-migration leaves the previous version intact. A database whose version is newer than
this code knows is refused with SchemaVersionError: running old code on it could corrupt it.

Left out: downgrades (restore the backup taken before upgrading instead).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from hato.core.errors import SchemaVersionError
from hato.store.sqlite.accounts import migrate_scram_sha1
from hato.store.sqlite.mtasts_cache import migrate_mtasts_cache
from hato.store.sqlite.queue import migrate_queue
from hato.store.sqlite.refs import migrate_blob_bodies, migrate_blob_journal, migrate_blob_log
from hato.store.sqlite.reporting import migrate_reporting
from hato.store.sqlite.reports import migrate_reports
from hato.store.sqlite.sieve import migrate_sieve_tables
from hato.store.sqlite.textindex import migrate as migrate_fulltext
from hato.store.sqlite.threadids import migrate_thread_ids

Migration = Callable[[sqlite3.Connection], None]

_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE domains (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL REFERENCES domains(name),
    password_hash TEXT NOT NULL,
    scram_sha256 TEXT,
    quota_bytes INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    highest_modseq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX accounts_domain ON accounts(domain);

CREATE TABLE aliases (
    source TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    targets TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX aliases_domain ON aliases(domain);

CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    special_use TEXT,
    subscribed INTEGER NOT NULL DEFAULT 0,
    highest_modseq INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    unseen_count INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);

CREATE TABLE messages (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id),
    uid INTEGER NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    internal_date REAL NOT NULL,
    saved_date REAL NOT NULL,
    system_flags INTEGER NOT NULL,
    keywords TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    email_id INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX messages_blob ON messages(blob_id);

-- One row per message (uid > 0) or mailbox (uid = 0): only the latest change is kept.
CREATE TABLE changes (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX changes_account_modseq ON changes(account_id, modseq);

-- Blobs whose last reference was dropped: deleted after the commit, swept again at start.
CREATE TABLE orphan_blobs (
    blob_id TEXT PRIMARY KEY
) WITHOUT ROWID;
"""


def _v1(conn: sqlite3.Connection) -> None:
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    _v1,
    migrate_sieve_tables,
    migrate_queue,
    migrate_fulltext,
    migrate_reports,
    migrate_reporting,
    migrate_blob_journal,
    migrate_thread_ids,  # version 8: RFC 8474 THREADID (existing messages: threadids.backfill)
    migrate_mtasts_cache,  # version 9: RFC 8461 §5.1 MTA-STS policy cache (mtasts_cache.py)
    migrate_scram_sha1,  # version 10: SCRAM-SHA-1 keys for ManageSieve (accounts.py)
    migrate_blob_log,  # version 11: bodies journalled by reference to a body log (refs.py)
    migrate_blob_bodies,  # version 12: small bodies stored in the database (refs.py)
)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to ``len(migrations)``; returns the version it started at."""
    known = len(migrations)
    start = schema_version(conn)
    if start > known:
        raise SchemaVersionError(
            f"database schema version {start} is newer than this Hato ({known}); upgrade Hato"
        )
    for version in range(start, known):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[version](conn)
            # PRAGMA cannot take a parameter; the value is an int we computed.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return start
