"""MODSEQ counters, the per-account change log, quota usage, and change notification.

RFC 7162 §3.1: every account has one MODSEQ counter; a mutating unit of work bumps it once
per account it touches (``bump``), and every message or mailbox it changes gets that value
and one change-log row. The log keeps only the latest row per message (and per mailbox),
an expunge replacing earlier rows, so ``changes_since`` is one range scan on
``(account_id, modseq)``. Waiters (IMAP IDLE, RFC 2177) are woken from the database thread
after the commit (``ChangeNotifier``).

Left out: pruning of expunge tombstones (they stay; a QRESYNC server needs them, RFC 7162
§3.2.5.2).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from hato.core.errors import NotFound, QuotaExceeded
from hato.store.model import Change, ChangeKind, QuotaUsage
from hato.store.sqlite.db import Unit

MODSEQS = "modseqs"  # unit.memo key: {account_id: modseq} bumped by this unit
MAILBOX_UID = 0  # uid column value of a mailbox-level change (UIDs are >= 1)
_KINDS = {kind.value: kind for kind in ChangeKind}


def bump(unit: Unit, account_id: int) -> int:
    """The MODSEQ of this unit for ``account_id``, bumping the account counter the first time.

    RFC 7162 §3.1: mod-sequences strictly increase; all changes of one unit share one value.
    """
    bumped: dict[int, int] = unit.memo.setdefault(MODSEQS, {})
    modseq = bumped.get(account_id)
    if modseq is None:
        row = unit.conn.execute(
            "UPDATE accounts SET highest_modseq = highest_modseq + 1 WHERE id = ? "
            "RETURNING highest_modseq",
            (account_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"account {account_id} does not exist")
        modseq = int(row[0])
        bumped[account_id] = modseq
    return modseq


def log_messages(
    unit: Unit,
    account_id: int,
    mailbox_id: int,
    uids: Iterable[int],
    *,
    modseq: int,
    kind: ChangeKind,
) -> None:
    """Record the latest change of each message (replacing its earlier row)."""
    unit.conn.executemany(
        "INSERT INTO changes (mailbox_id, uid, account_id, modseq, kind) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq, "
        "kind = excluded.kind",
        [(mailbox_id, uid, account_id, modseq, kind.value) for uid in uids],
    )


def log_mailbox(unit: Unit, account_id: int, mailbox_id: int, kind: ChangeKind) -> int:
    """Record a mailbox-level change; returns its MODSEQ."""
    modseq = bump(unit, account_id)
    log_messages(unit, account_id, mailbox_id, (MAILBOX_UID,), modseq=modseq, kind=kind)
    return modseq


def changes_since(
    unit: Unit,
    account_id: int,
    modseq: int,
    *,
    mailbox_id: int | None = None,
    limit: int | None = None,
) -> list[Change]:
    """The changes after ``modseq`` in MODSEQ order (the first ``limit`` of them if given)."""
    sql = "SELECT modseq, kind, mailbox_id, uid FROM changes WHERE account_id = ? AND modseq > ?"
    args: tuple[int, ...] = (account_id, modseq)
    if mailbox_id is not None:
        sql += " AND mailbox_id = ?"
        args += (mailbox_id,)
    # The index (account_id, modseq) ends with the primary key (mailbox_id, uid): no sort step.
    sql += " ORDER BY modseq, mailbox_id, uid"
    if limit is not None:
        sql += " LIMIT ?"
        args += (limit,)
    return [
        Change(m, _KINDS[kind], mb, uid or None)  # uid 0 (MAILBOX_UID): a mailbox change
        for m, kind, mb, uid in unit.conn.execute(sql, args)
    ]


def highest_modseq(unit: Unit, account_id: int) -> int:
    row = unit.conn.execute(
        "SELECT highest_modseq FROM accounts WHERE id = ?", (account_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} does not exist")
    return int(row[0])


# -- quota -----------------------------------------------------------------------------------
def quota_usage(unit: Unit, account_id: int) -> QuotaUsage:
    row = unit.conn.execute(
        "SELECT used_bytes, message_count, quota_bytes FROM accounts WHERE id = ?", (account_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} does not exist")
    return QuotaUsage(used_bytes=int(row[0]), message_count=int(row[1]), quota_bytes=row[2])


def charge(unit: Unit, account_id: int, *, size: int, count: int) -> None:
    """Add ``size`` bytes and ``count`` messages to the account's usage, refusing to go over
    its quota (QuotaExceeded names the account). Negative values release usage."""
    row = unit.conn.execute(
        "UPDATE accounts SET used_bytes = used_bytes + ?, message_count = message_count + ? "
        "WHERE id = ? RETURNING used_bytes, quota_bytes, address",
        (size, count, account_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} does not exist")
    used, quota, address = row
    if size > 0 and quota is not None and used > quota:
        # The unit's savepoint rolls the increment back with everything else.
        raise QuotaExceeded(
            f"account {address} would use {used} bytes, over its quota of {quota} bytes"
        )


def charge_and_bump(unit: Unit, account_id: int, *, size: int, count: int) -> int:
    """``charge`` (adding usage) then ``bump``, in one statement when this unit has not
    bumped the account yet (a delivery: one UPDATE of the account row instead of two);
    returns the unit's MODSEQ for the account."""
    bumped: dict[int, int] = unit.memo.setdefault(MODSEQS, {})
    if account_id in bumped:
        charge(unit, account_id, size=size, count=count)
        return bumped[account_id]
    row = unit.conn.execute(
        "UPDATE accounts SET used_bytes = used_bytes + ?, message_count = message_count + ?, "
        "highest_modseq = highest_modseq + 1 WHERE id = ? "
        "RETURNING used_bytes, quota_bytes, address, highest_modseq",
        (size, count, account_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} does not exist")
    used, quota, address, modseq = row
    if size > 0 and quota is not None and used > quota:
        # The unit's savepoint rolls both increments back with everything else.
        raise QuotaExceeded(
            f"account {address} would use {used} bytes, over its quota of {quota} bytes"
        )
    bumped[account_id] = int(modseq)
    return int(modseq)


# -- notification -------------------------------------------------------------------------------
class ChangeNotifier:
    """Wakes coroutines waiting for an account's MODSEQ to move; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}

    def register(self, account_id: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.setdefault(account_id, set()).add(future)
        return future

    def unregister(self, account_id: int, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(account_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[account_id]

    def notify(self, account_ids: Iterable[int]) -> None:
        """Called on the database thread after a commit."""
        woken: list[asyncio.Future[None]] = []
        with self._lock:
            for account_id in account_ids:
                woken.extend(self._waiters.pop(account_id, ()))
        for future in woken:
            try:
                future.get_loop().call_soon_threadsafe(_wake, future)
            except RuntimeError:  # that event loop is closed: nobody waits any more
                pass


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
