"""Blob reference bookkeeping inside units of work (the database half of the blob journal).

A blob is referenced while any message row or live outbound queue entry names it (indexes
``messages_blob``, ``queue_blob``; no counter to drift). A unit that removes messages calls
``dropped``: blobs no row refers to any more go into ``orphan_blobs`` in the same transaction
and are deleted after the commit (``store.py``); a crash before the deletion leaves the row,
and the next start deletes the file. A unit that
stores a freshly written blob calls ``used``, so its writer's pin is released once the unit
has committed (``blobs.FileBlobStore.release``).

The body journal (``blob_journal``): a small body whose file was not fsynced by its writer
(``blobs.py``: bodies up to ``INLINE_MAX``) is written into this table by ``used``, in the
same transaction as the rows that refer to it, so the one group-committed fsync of the WAL
makes the body durable together with the message ("250" needs no per-message file or
directory fsync). The blob janitor then fsyncs the file and gives it its address, and a later
transaction deletes the row; at start every row left is written out to its address first.
A body an SMTP worker appended to its *body log* and fsynced there (``hato.store.remote``)
is journalled by reference instead (``blob_log``: the log file, offset and size), so the
main process never copies it into the WAL; the log file is the durable copy until the
janitor has made the blob's own file durable.

Stored bodies (``blob_bodies``): a body of at most ``STORED_MAX`` octets is not journalled
but *stored* in the database for good, in the same transaction: no file is ever written for
it, and ``dropped`` deletes it with its last reference. A file per small message costs more
than the message (an inode, two directory entries, an fsync, the janitor's rename and link:
on ext4 without a journal each creation also scans the inodes freed recently), and SQLite
reads and writes small blobs faster than the file system does (https://sqlite.org/fasterthanfs.html).
The store reads them with ``Database.read_here`` (any thread); an SMTP worker with
``StoredReader``.

Left out: nothing of the contract; deletion itself is done by the store, after the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from hato.core.errors import TemporaryStoreError
from hato.store.sqlite import textindex
from hato.store.sqlite.db import ThreadConnections, Unit

ORPHANS = "orphans"  # unit.memo key: blob ids whose last reference this unit dropped
USED = "used_blobs"  # unit.memo key: blob ids this unit stored messages for
BODIES = "pending_bodies"  # unit.memo key: the blob store's ``PendingBodies`` (set by the store)
STORED_MAX = 32 << 10  # octets: bodies up to this size live in the database (blob_bodies)


class LoggedBody(Protocol):
    """A body durable in a body log (``blobs.LoggedBody``)."""

    @property
    def path(self) -> str: ...

    @property
    def offset(self) -> int: ...

    @property
    def size(self) -> int: ...


class PendingBodies(Protocol):
    """Bodies committed by writers without a file fsync (``blobs.FileBlobStore``)."""

    def journal_entry(self, blob_id: str) -> bytes | LoggedBody | None: ...


def migrate_blob_journal(conn: sqlite3.Connection) -> None:
    """Schema step adding the body journal (appended to ``schema.MIGRATIONS``)."""
    conn.execute("CREATE TABLE blob_journal (blob_id TEXT PRIMARY KEY, data BLOB NOT NULL)")


def migrate_blob_log(conn: sqlite3.Connection) -> None:
    """Schema step adding bodies journalled by reference to a body log."""
    conn.execute(
        "CREATE TABLE blob_log (blob_id TEXT PRIMARY KEY, path TEXT NOT NULL, "
        "offset INTEGER NOT NULL, size INTEGER NOT NULL) WITHOUT ROWID"
    )


def migrate_blob_bodies(conn: sqlite3.Connection) -> None:
    """Schema step adding the bodies stored in the database for good."""
    conn.execute("CREATE TABLE blob_bodies (blob_id TEXT PRIMARY KEY, data BLOB NOT NULL)")


def stored_body(conn: sqlite3.Connection, blob_id: str) -> bytes | None:
    row = conn.execute("SELECT data FROM blob_bodies WHERE blob_id = ?", (blob_id,)).fetchone()
    return None if row is None else bytes(row[0])


class StoredReader:
    """Reads stored bodies (``blob_bodies``) from any thread of another process (an SMTP
    worker, which has no ``Database``): one read-only connection per thread, each read one
    autocommit statement that sees every transaction committed before it (WAL: readers
    never wait for the writer). The store's own process reads them with ``read_here``."""

    def __init__(self, db_path: Path) -> None:
        self._conns = ThreadConnections(f"file:{db_path}?mode=ro", busy_ms=1000, uri=True)

    def __call__(self, blob_id: str) -> bytes | None:
        """The body stored for ``blob_id``, or None."""
        try:
            return stored_body(self._conns.get(), blob_id)
        except sqlite3.Error as exc:
            raise TemporaryStoreError(f"reading a stored body: {exc}") from None

    def close(self) -> None:
        self._conns.close()


def log_rows(conn: sqlite3.Connection) -> list[tuple[str, str, int, int]]:
    """Every body journalled by reference: (blob id, log file, offset, size)."""
    return [
        (str(r[0]), str(r[1]), int(r[2]), int(r[3]))
        for r in conn.execute("SELECT blob_id, path, offset, size FROM blob_log")
    ]


def journal_rows(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
    """Every journalled body (start-up recovery)."""
    return [
        (str(r[0]), bytes(r[1])) for r in conn.execute("SELECT blob_id, data FROM blob_journal")
    ]


def forget_journalled(conn: sqlite3.Connection, blob_ids: Iterable[str]) -> None:
    """Their files are durable at their address: the journal rows can go."""
    ids = list(blob_ids)
    _delete_in(conn, "blob_journal", ids)
    _delete_in(conn, "blob_log", ids)


def forget_orphans(conn: sqlite3.Connection, blob_ids: Iterable[str]) -> None:
    """Their deletion is durable (or they are referenced again): the orphan rows can go."""
    _delete_in(conn, "orphan_blobs", list(blob_ids))


# Sets of ids go to SQLite as IN (...) lists, _CHUNK at a time: one statement per chunk
# instead of one per id, so the database thread takes the GIL back once per chunk (each
# statement releases it) while the event loop thread is busy.
_CHUNK = 500


def _chunks(ids: list[str]) -> Iterator[tuple[list[str], str]]:
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        yield chunk, ", ".join("?" for _ in chunk)


def _delete_in(conn: sqlite3.Connection, table: str, ids: list[str]) -> None:
    for chunk, marks in _chunks(ids):
        conn.execute(f"DELETE FROM {table} WHERE blob_id IN ({marks})", chunk)


def still_referenced(conn: sqlite3.Connection, blob_ids: Iterable[str]) -> set[str]:
    """The blobs among ``blob_ids`` that ``referenced`` holds true for, in one query per
    chunk of ids."""
    found: set[str] = set()
    for chunk, marks in _chunks(list(dict.fromkeys(blob_ids))):
        rows = conn.execute(
            f"SELECT blob_id FROM messages WHERE blob_id IN ({marks}) UNION "
            f"SELECT blob_id FROM queue WHERE blob_id IN ({marks}) "
            "AND state NOT IN ('delivered', 'bounced')",
            chunk + chunk,
        )
        found.update(str(r[0]) for r in rows)
    return found


def referenced(conn: sqlite3.Connection, blob_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM messages WHERE blob_id = ? LIMIT 1", (blob_id,)).fetchone()
    if row is not None:
        return True
    # Outbound queue entries that are not final hold their body too (sqlite/queue.py).
    row = conn.execute(
        "SELECT 1 FROM queue WHERE blob_id = ? AND state NOT IN ('delivered', 'bounced') LIMIT 1",
        (blob_id,),
    ).fetchone()
    return row is not None


def dropped(unit: Unit, blob_ids: Iterable[str]) -> None:
    """Messages naming these blobs were removed: journal the ones now unreferenced."""
    orphans: set[str] = unit.memo.setdefault(ORPHANS, set())
    ids = set(blob_ids)
    gone = sorted(ids - still_referenced(unit.conn, ids))
    for chunk, _marks in _chunks(gone):
        values = ", ".join("(?)" for _ in chunk)
        unit.conn.execute(f"INSERT OR IGNORE INTO orphan_blobs (blob_id) VALUES {values}", chunk)
    _delete_in(unit.conn, "blob_bodies", gone)
    _delete_in(unit.conn, "blob_journal", gone)
    _delete_in(unit.conn, "blob_log", gone)
    textindex.forget_many(unit.conn, gone)  # their full-text documents go too
    orphans.update(gone)


def used(unit: Unit, blob_id: str) -> None:
    """This unit stores messages for ``blob_id``: store a small body in the database, or
    journal it if its file is not durable yet (RFC 5321 §6.1: the body is on disk when the
    unit commits), and release the writer's pin once the unit has committed."""
    used_ids: list[str] = unit.memo.setdefault(USED, [])
    used_ids.append(blob_id)
    bodies: PendingBodies | None = unit.memo.get(BODIES)
    body = bodies.journal_entry(blob_id) if bodies is not None else None
    if isinstance(body, bytes) and len(body) <= STORED_MAX:
        unit.conn.execute(
            "INSERT OR IGNORE INTO blob_bodies (blob_id, data) VALUES (?, ?)", (blob_id, body)
        )
    elif isinstance(body, bytes):
        unit.conn.execute(
            "INSERT OR IGNORE INTO blob_journal (blob_id, data) VALUES (?, ?)", (blob_id, body)
        )
    elif body is not None:  # durable in a worker's body log: journalled by reference
        unit.conn.execute(
            "INSERT OR IGNORE INTO blob_log (blob_id, path, offset, size) VALUES (?, ?, ?, ?)",
            (blob_id, body.path, body.offset, body.size),
        )
