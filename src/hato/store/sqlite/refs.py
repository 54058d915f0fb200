"""Blob reference bookkeeping inside units of work (the database half of the blob journal).

A blob is referenced while any message row or live outbound queue entry names it (indexes
``messages_blob``, ``queue_blob``; no counter to drift). A unit that removes messages calls
``dropped``: blobs no row refers to any more go into ``orphan_blobs`` in the same transaction
and are deleted after the commit (``store.py``); a crash before the deletion leaves the row,
and the next start deletes the file. A unit that
stores a freshly written blob calls ``used``, so its writer's pin is released when the unit
has finished, committed or not (``blobs.FileBlobStore.release``).

Left out: nothing of the contract; deletion itself is done by the store, after the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from hato.store.sqlite import textindex
from hato.store.sqlite.db import Unit

ORPHANS = "orphans"  # unit.memo key: blob ids whose last reference this unit dropped
USED = "used_blobs"  # unit.memo key: blob ids this unit stored messages for


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
    for blob_id in set(blob_ids):
        if not referenced(unit.conn, blob_id):
            unit.conn.execute(
                "INSERT OR IGNORE INTO orphan_blobs (blob_id) VALUES (?)", (blob_id,)
            )
            orphans.add(blob_id)
            textindex.forget(unit.conn, blob_id)  # its full-text document goes too


def used(unit: Unit, blob_id: str) -> None:
    """This unit stores messages for ``blob_id`` (releases the writer's pin when it ends)."""
    used_ids: list[str] = unit.memo.setdefault(USED, [])
    used_ids.append(blob_id)
