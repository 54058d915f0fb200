"""The outbound queue in the SQLite store: tables, units of work and the store methods.

Every change is one unit of work (``db.py``), so it is one atomic, fsynced write:
``deliver_and_queue`` stores the local copies and the queue entries of one received message
together (the SMTP server answers 250 only after it); ``claim_queue`` leases due entries
(QUEUED, DEFERRED whose time has come) by moving them to ACTIVE, in one UPDATE ... RETURNING
per 500; ``update_queue`` applies one ``QueueUpdate`` (new state checked against
``hato.store.queue.TRANSITIONS``, per-recipient results, and an optional generated DSN stored
in the same transaction); ``update_queue_many`` applies many in one unit of work, each
checked on its own, with one statement per table for the batch. ``recover_queue``
puts entries left ACTIVE by a crash back to QUEUED, so at most the message in flight is
resent. A live entry (not DELIVERED/BOUNCED) keeps its blob referenced (``refs.py``); when an
entry becomes final or is deleted, its blob is journalled for deletion if nothing else needs it.

Left out: several processes running queue runners on one database (one process owns it).

Security: no SQL is built from input (placeholders only); addresses are stored as given by
the SMTP layer, which validated them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hato.core.errors import Conflict, HatoError, NotFound, UsageError
from hato.store.model import Appended, BlobRef, DeliveryTarget
from hato.store.queue import (
    LIVE_STATES,
    NewQueueEntry,
    QueueEntry,
    QueueRecipient,
    QueueState,
    QueueUpdate,
    RcptStatus,
    allowed,
)
from hato.store.sqlite import messages, refs
from hato.store.sqlite.db import Unit

if TYPE_CHECKING:
    from hato.store.sqlite.blobs import FileBlobStore

T = TypeVar("T")

_V_QUEUE = """
CREATE TABLE queue (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    strip_prefix INTEGER NOT NULL DEFAULT 0,
    sender TEXT NOT NULL,
    account_id INTEGER,
    envid TEXT,
    ret TEXT,
    body TEXT NOT NULL,
    smtputf8 INTEGER NOT NULL,
    requiretls INTEGER NOT NULL,
    tls_optional INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delay_notified INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX queue_due ON queue(state, next_attempt);
CREATE INDEX queue_blob ON queue(blob_id, state);

CREATE TABLE queue_rcpts (
    entry_id INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    address TEXT NOT NULL,
    notify TEXT,
    orcpt TEXT,
    status TEXT NOT NULL,
    reply TEXT,
    remote_mta TEXT,
    PRIMARY KEY (entry_id, idx)
) WITHOUT ROWID;
"""


def migrate_queue(conn: sqlite3.Connection) -> None:
    """Schema step adding the outbound queue (appended to ``schema.MIGRATIONS``)."""
    for statement in _V_QUEUE.split(";"):
        if statement.strip():
            conn.execute(statement)


_LIVE = tuple(s.value for s in LIVE_STATES)
_LIVE_SQL = ", ".join("?" for _ in _LIVE)
_COLUMNS = (
    "id, state, blob_id, size, strip_prefix, sender, account_id, envid, ret, body, smtputf8, "
    "requiretls, tls_optional, created, expires, next_attempt, attempts, last_error, "
    "delay_notified, updated"
)


def blob_in_queue(conn: sqlite3.Connection, blob_id: str) -> bool:
    """True while a live queue entry needs this blob (see ``refs.referenced``)."""
    row = conn.execute(
        f"SELECT 1 FROM queue WHERE blob_id = ? AND state IN ({_LIVE_SQL}) LIMIT 1",
        (blob_id, *_LIVE),
    ).fetchone()
    return row is not None


def _encode_notify(notify: frozenset[str] | None) -> str | None:
    if notify is None:
        return None
    return ",".join(sorted(notify))  # "" is NOTIFY=NEVER


def _decode_notify(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    return frozenset(t for t in text.split(",") if t)


_RCPT_COLUMNS = "address, notify, orcpt, status, reply, remote_mta"
_STATE = {s.value: s for s in QueueState}  # a dict lookup per row, not an Enum call
_RCPT_STATUS = {s.value: s for s in RcptStatus}
_CHUNK = 500  # ids per IN (...) list: well under SQLITE_MAX_VARIABLE_NUMBER


def _recipient(r: Sequence[Any]) -> QueueRecipient:
    return QueueRecipient(r[0], _decode_notify(r[1]), r[2], _RCPT_STATUS[r[3]], r[4], r[5])


def _recipients(unit: Unit, entry_id: int) -> tuple[QueueRecipient, ...]:
    rows = unit.conn.execute(
        f"SELECT {_RCPT_COLUMNS} FROM queue_rcpts WHERE entry_id = ? ORDER BY idx", (entry_id,)
    ).fetchall()
    return tuple(_recipient(r) for r in rows)


def _entry(unit: Unit, row: Sequence[Any]) -> QueueEntry:
    return _entry_with(row, _recipients(unit, int(row[0])))


def _entry_with(row: Sequence[Any], recipients: tuple[QueueRecipient, ...]) -> QueueEntry:
    return QueueEntry(
        id=int(row[0]),
        state=_STATE[row[1]],
        blob_id=row[2],
        size=int(row[3]),
        strip_prefix=int(row[4]),
        sender=row[5],
        account_id=row[6],
        envid=row[7],
        ret=row[8],
        body=row[9],
        smtputf8=bool(row[10]),
        requiretls=bool(row[11]),
        tls_optional=bool(row[12]),
        created=float(row[13]),
        expires=float(row[14]),
        next_attempt=float(row[15]),
        attempts=int(row[16]),
        last_error=row[17],
        delay_notified=bool(row[18]),
        updated=float(row[19]),
        recipients=recipients,
    )


def get_entry(unit: Unit, entry_id: int) -> QueueEntry | None:
    row = unit.conn.execute(f"SELECT {_COLUMNS} FROM queue WHERE id = ?", (entry_id,)).fetchone()
    return _entry(unit, row) if row is not None else None


def list_entries(unit: Unit, states: Sequence[QueueState] | None) -> list[QueueEntry]:
    if states is None:
        rows = unit.conn.execute(f"SELECT {_COLUMNS} FROM queue ORDER BY id").fetchall()
    else:
        marks = ", ".join("?" for _ in states)
        rows = unit.conn.execute(
            f"SELECT {_COLUMNS} FROM queue WHERE state IN ({marks}) ORDER BY id",
            tuple(s.value for s in states),
        ).fetchall()
    return [_entry(unit, r) for r in rows]


def insert(unit: Unit, entry: NewQueueEntry, *, blob_exists: Callable[[str], bool]) -> int:
    if not entry.recipients:
        raise UsageError("a queue entry needs at least one recipient")
    if not blob_exists(entry.blob.id):
        raise NotFound(f"blob {entry.blob.id} does not exist")
    if entry.blob.id not in unit.memo.get(refs.USED, ()):
        refs.used(unit, entry.blob.id)
    now = unit.now
    due = now if entry.next_attempt is None else entry.next_attempt
    (entry_id,) = unit.conn.execute(
        "INSERT INTO queue (state, blob_id, size, strip_prefix, sender, account_id, envid, ret, "
        "body, smtputf8, requiretls, tls_optional, created, expires, next_attempt, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            QueueState.QUEUED.value,
            entry.blob.id,
            entry.blob.size,
            entry.strip_prefix,
            entry.sender,
            entry.account_id,
            entry.envid,
            entry.ret,
            entry.body,
            int(entry.smtputf8),
            int(entry.requiretls),
            int(entry.tls_optional),
            now,
            entry.expires,
            due,
            now,
        ),
    ).fetchone()
    unit.conn.executemany(
        "INSERT INTO queue_rcpts (entry_id, idx, address, notify, orcpt, status, reply, "
        "remote_mta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                entry_id,
                i,
                r.address,
                _encode_notify(r.notify),
                r.orcpt,
                r.status.value,
                r.reply,
                r.remote_mta,
            )
            for i, r in enumerate(entry.recipients)
        ],
    )
    return int(entry_id)


def claim(unit: Unit, *, limit: int, lease: float) -> list[QueueEntry]:
    """Move up to ``limit`` due entries to ACTIVE (oldest due first) and return them: one
    UPDATE and one recipient query per ``_CHUNK`` entries, not a round of queries each."""
    conn = unit.conn
    rows = conn.execute(
        "SELECT id FROM queue WHERE state IN (?, ?) AND next_attempt <= ? "
        "ORDER BY next_attempt, id LIMIT ?",
        (QueueState.QUEUED.value, QueueState.DEFERRED.value, unit.now, limit),
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    claimed: dict[int, QueueEntry] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        found = conn.execute(
            f"UPDATE queue SET state = ?, updated = ?, next_attempt = ? WHERE id IN ({marks}) "
            f"RETURNING {_COLUMNS}",
            (QueueState.ACTIVE.value, unit.now, unit.now + lease, *chunk),
        ).fetchall()
        recipients: dict[int, list[QueueRecipient]] = {}
        for r in conn.execute(
            f"SELECT entry_id, {_RCPT_COLUMNS} FROM queue_rcpts WHERE entry_id IN ({marks}) "
            "ORDER BY entry_id, idx",
            chunk,
        ):
            recipients.setdefault(int(r[0]), []).append(_recipient(r[1:]))
        for row in found:
            entry_id = int(row[0])
            claimed[entry_id] = _entry_with(row, tuple(recipients.get(entry_id, ())))
    return [claimed[i] for i in ids if i in claimed]


def _drop_blob_if_final(unit: Unit, blob_id: str) -> None:
    if not blob_in_queue(unit.conn, blob_id):
        refs.dropped(unit, [blob_id])


def _problem(entry_id: int, change: QueueUpdate, state: QueueState, count: int) -> HatoError | None:
    """Why ``change`` may not be applied to an entry in ``state`` with ``count`` recipients."""
    if change.expected and state not in change.expected:
        return Conflict(f"queue entry {entry_id} is {state.value}")
    if state is not change.state and not allowed(state, change.state):
        return Conflict(
            f"queue entry {entry_id}: {state.value} -> {change.state.value} not allowed"
        )
    for r in change.recipients:
        if not 0 <= r.index < count:
            return UsageError(f"queue entry {entry_id} has no recipient {r.index}")
    return None


_SET_RCPT = (
    "UPDATE queue_rcpts SET status = ?, reply = ?, remote_mta = ? WHERE entry_id = ? AND idx = ?"
)
_SET_ENTRY = (
    "UPDATE queue SET state = ?, next_attempt = COALESCE(?, next_attempt), "
    "last_error = COALESCE(?, last_error), attempts = attempts + ?, "
    "delay_notified = COALESCE(?, delay_notified), updated = ? WHERE id = ?"
)


# The same changes for many rows in ONE statement (UPDATE ... FROM, SQLite 3.33): one
# sqlite3_step, so the database thread takes the GIL back once per batch, not per row.
_SET_RCPTS = (
    "WITH v(status, reply, remote_mta, entry_id, idx) AS (VALUES {rows}) "
    "UPDATE queue_rcpts SET status = v.status, reply = v.reply, remote_mta = v.remote_mta "
    "FROM v WHERE queue_rcpts.entry_id = v.entry_id AND queue_rcpts.idx = v.idx"
)
_SET_ENTRIES = (
    "WITH v(state, next_attempt, last_error, attempted, delay_notified, updated, id) AS "
    "(VALUES {rows}) "
    "UPDATE queue SET state = v.state, "
    "next_attempt = COALESCE(v.next_attempt, queue.next_attempt), "
    "last_error = COALESCE(v.last_error, queue.last_error), "
    "attempts = queue.attempts + v.attempted, "
    "delay_notified = COALESCE(v.delay_notified, queue.delay_notified), updated = v.updated "
    "FROM v WHERE queue.id = v.id"
)


def _set_many(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        marks = "(" + ", ".join("?" for _ in chunk[0]) + ")"
        conn.execute(
            sql.format(rows=", ".join(marks for _ in chunk)), [v for row in chunk for v in row]
        )


def _rcpt_rows(entry_id: int, change: QueueUpdate) -> list[tuple[Any, ...]]:
    return [(r.status.value, r.reply, r.remote_mta, entry_id, r.index) for r in change.recipients]


def _entry_row(unit: Unit, entry_id: int, change: QueueUpdate) -> tuple[Any, ...]:
    return (
        change.state.value,
        change.next_attempt,
        change.last_error,
        1 if change.attempted else 0,
        None if change.delay_notified is None else int(change.delay_notified),
        unit.now,
        entry_id,
    )


def _apply(
    unit: Unit, entry_id: int, change: QueueUpdate, *, blob_exists: Callable[[str], bool]
) -> None:
    """Write a checked change: recipients, the entry's row, its notice (DSN) if any."""
    conn = unit.conn
    conn.executemany(_SET_RCPT, _rcpt_rows(entry_id, change))
    conn.execute(_SET_ENTRY, _entry_row(unit, entry_id, change))
    if change.notice is not None:
        notice = change.notice
        if notice.local:
            messages.deliver(
                unit, notice.blob, notice.local, internal_date=None, blob_exists=blob_exists
            )
        for extra in notice.remote:
            insert(unit, extra, blob_exists=blob_exists)
        if not notice.local and not notice.remote:
            refs.used(unit, notice.blob.id)


def update(
    unit: Unit,
    entry_id: int,
    change: QueueUpdate,
    *,
    blob_exists: Callable[[str], bool],
) -> QueueEntry:
    current = get_entry(unit, entry_id)
    if current is None:
        raise NotFound(f"no queue entry {entry_id}")
    problem = _problem(entry_id, change, current.state, len(current.recipients))
    if problem is not None:
        raise problem
    _apply(unit, entry_id, change, blob_exists=blob_exists)
    if change.state.final:
        _drop_blob_if_final(unit, current.blob_id)
    updated = get_entry(unit, entry_id)
    assert updated is not None
    return updated


def update_many(
    unit: Unit,
    changes: Sequence[tuple[int, QueueUpdate]],
    *,
    blob_exists: Callable[[str], bool],
) -> list[HatoError | None]:
    """Apply many changes in one unit of work, each checked on its own: a refused change
    (its error in the result, in order) leaves the others applied. The entries are read
    with one query per ``_CHUNK`` and written with one prepared statement each
    (``executemany``); a change with a notice runs in a SAVEPOINT of its own."""
    if len({entry_id for entry_id, _ in changes}) != len(changes):
        return [_one(unit, entry_id, change, blob_exists) for entry_id, change in changes]
    conn = unit.conn
    current: dict[int, tuple[QueueState, str, int]] = {}
    ids = [entry_id for entry_id, _ in changes]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        for row in conn.execute(
            "SELECT id, state, blob_id, "
            "(SELECT count(*) FROM queue_rcpts WHERE entry_id = queue.id) "
            f"FROM queue WHERE id IN ({marks})",
            chunk,
        ):
            current[int(row[0])] = (_STATE[row[1]], str(row[2]), int(row[3]))
    results: list[HatoError | None] = []
    rcpt_rows: list[tuple[Any, ...]] = []
    entry_rows: list[tuple[Any, ...]] = []
    finals: list[str] = []
    for entry_id, change in changes:
        found = current.get(entry_id)
        if found is None:
            results.append(NotFound(f"no queue entry {entry_id}"))
            continue
        state, blob_id, count = found
        problem = _problem(entry_id, change, state, count)
        if problem is None and change.notice is not None:
            problem = _one_saved(unit, entry_id, change, blob_exists)
        elif problem is None:
            rcpt_rows += _rcpt_rows(entry_id, change)
            entry_rows.append(_entry_row(unit, entry_id, change))
        if problem is None and change.state.final:
            finals.append(blob_id)
        results.append(problem)
    _set_many(conn, _SET_RCPTS, rcpt_rows)
    _set_many(conn, _SET_ENTRIES, entry_rows)
    if finals:
        refs.dropped(unit, finals)  # only the blobs no live entry or message still needs
    return results


def _one(
    unit: Unit, entry_id: int, change: QueueUpdate, blob_exists: Callable[[str], bool]
) -> HatoError | None:
    current = get_entry(unit, entry_id)
    if current is None:
        return NotFound(f"no queue entry {entry_id}")
    problem = _problem(entry_id, change, current.state, len(current.recipients))
    if problem is None:
        problem = _one_saved(unit, entry_id, change, blob_exists)
    if problem is None and change.state.final:
        _drop_blob_if_final(unit, current.blob_id)
    return problem


def _one_saved(
    unit: Unit, entry_id: int, change: QueueUpdate, blob_exists: Callable[[str], bool]
) -> HatoError | None:
    """``_apply`` inside a SAVEPOINT: a refused notice (e.g. its blob is gone) undoes this
    change alone."""
    conn = unit.conn
    conn.execute("SAVEPOINT queue_change")
    try:
        _apply(unit, entry_id, change, blob_exists=blob_exists)
    except HatoError as exc:
        conn.execute("ROLLBACK TO queue_change")
        conn.execute("RELEASE queue_change")
        return exc
    conn.execute("RELEASE queue_change")
    return None


def delete(unit: Unit, entry_id: int) -> None:
    current = get_entry(unit, entry_id)
    if current is None:
        raise NotFound(f"no queue entry {entry_id}")
    if current.state is QueueState.ACTIVE:
        raise Conflict(f"queue entry {entry_id} is being delivered; try again")
    unit.conn.execute("DELETE FROM queue_rcpts WHERE entry_id = ?", (entry_id,))
    unit.conn.execute("DELETE FROM queue WHERE id = ?", (entry_id,))
    _drop_blob_if_final(unit, current.blob_id)


def recover(unit: Unit) -> int:
    """ACTIVE entries of a previous run go back to QUEUED (their attempt never reported)."""
    cur = unit.conn.execute(
        "UPDATE queue SET state = ?, next_attempt = ?, updated = ? WHERE state = ?",
        (QueueState.QUEUED.value, unit.now, unit.now, QueueState.ACTIVE.value),
    )
    return cur.rowcount


def next_due(unit: Unit) -> float | None:
    row = unit.conn.execute(
        "SELECT MIN(next_attempt) FROM queue WHERE state IN (?, ?)",
        (QueueState.QUEUED.value, QueueState.DEFERRED.value),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def purge(unit: Unit, *, before: float) -> int:
    """Forget final entries last changed before ``before``; returns how many."""
    rows = unit.conn.execute(
        "SELECT id FROM queue WHERE state IN (?, ?) AND updated < ?",
        (QueueState.DELIVERED.value, QueueState.BOUNCED.value, before),
    ).fetchall()
    ids = [(int(r[0]),) for r in rows]
    unit.conn.executemany("DELETE FROM queue_rcpts WHERE entry_id = ?", ids)
    unit.conn.executemany("DELETE FROM queue WHERE id = ?", ids)
    return len(ids)


class QueueMethods:
    """The queue half of ``SqliteStore`` (mixed into it; see ``hato.store.api.MailStore``)."""

    if TYPE_CHECKING:
        _blobs: FileBlobStore

        async def _read(self, fn: Callable[[Unit], T]) -> T: ...

        async def _write(self, fn: Callable[[Unit], T]) -> T: ...

    async def deliver_and_queue(
        self,
        blob: BlobRef,
        targets: Sequence[DeliveryTarget],
        outbound: Sequence[NewQueueEntry],
        *,
        internal_date: float | None = None,
    ) -> tuple[list[Appended], list[int]]:
        exists = self._blobs.exists

        def work(u: Unit) -> tuple[list[Appended], list[int]]:
            appended: list[Appended] = []
            if targets:
                appended = messages.deliver(
                    u, blob, targets, internal_date=internal_date, blob_exists=exists
                )
            ids = [insert(u, e, blob_exists=exists) for e in outbound]
            if not targets and not outbound:
                refs.used(u, blob.id)
            return appended, ids

        return await self._write(work)

    async def enqueue(self, entries: Sequence[NewQueueEntry]) -> list[int]:
        exists = self._blobs.exists
        return await self._write(lambda u: [insert(u, e, blob_exists=exists) for e in entries])

    async def claim_queue(self, *, limit: int, lease: float) -> list[QueueEntry]:
        return await self._write(lambda u: claim(u, limit=limit, lease=lease))

    async def update_queue(self, entry_id: int, change: QueueUpdate) -> QueueEntry:
        exists = self._blobs.exists
        return await self._write(lambda u: update(u, entry_id, change, blob_exists=exists))

    async def update_queue_many(
        self, changes: Sequence[tuple[int, QueueUpdate]]
    ) -> list[HatoError | None]:
        exists = self._blobs.exists
        return await self._write(lambda u: update_many(u, changes, blob_exists=exists))

    async def get_queue_entry(self, entry_id: int) -> QueueEntry | None:
        return await self._read(lambda u: get_entry(u, entry_id))

    async def list_queue(self, states: Sequence[QueueState] | None = None) -> list[QueueEntry]:
        return await self._read(lambda u: list_entries(u, states))

    async def delete_queue_entry(self, entry_id: int) -> None:
        await self._write(lambda u: delete(u, entry_id))

    async def recover_queue(self) -> int:
        return await self._write(recover)

    async def next_queue_due(self) -> float | None:
        return await self._read(next_due)

    async def purge_queue(self, *, before: float) -> int:
        return await self._write(lambda u: purge(u, before=before))
