"""Sieve scripts and Sieve tracking lists: units of work on ``sieve_scripts``/``sieve_tracking``.

Scripts (RFC 5804 §1.4-§1.6, §2.6-§2.11): per account, by NFC name, UTF-8 text; a partial
unique index keeps at most one active script per account (RFC 5804 §1.4); replacing a script
keeps its active flag, renaming moves it (§2.11); the active script cannot be deleted (§2.10).
Quotas (RFC 5804 §1.5) are checked in the same unit of work that stores the script.

Tracking (RFC 5230 §4.2 "once per :days", RFC 7352 §3 duplicate tracking): one row per
(account, SHA-256 of the caller's key) with its expiry time; expired rows are pruned when the
account's tracking list is written. Rows of both tables go with their account
(``ON DELETE CASCADE``).

Left out: global (site-wide) scripts and the "include" of other users' scripts.

Security: script content is user data and is never logged; tracking keys (which contain sender
addresses) are stored only as hashes.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any

from hato.core.errors import AlreadyExists, Conflict, NotFound, ScriptQuotaExceeded
from hato.store.model import ScriptQuota, SieveScript, script_name
from hato.store.sqlite.db import Unit

_V2 = """
CREATE TABLE sieve_scripts (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    size INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (account_id, name)
) WITHOUT ROWID;
-- RFC 5804 §1.4: zero or one active script per account.
CREATE UNIQUE INDEX sieve_scripts_one_active ON sieve_scripts(account_id) WHERE active = 1;

CREATE TABLE sieve_tracking (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;
"""

_COLUMNS = "account_id, name, content, active, updated"


def migrate_sieve_tables(conn: sqlite3.Connection) -> None:
    """Schema step: the Sieve script and tracking tables (never change once released)."""
    for statement in _V2.split(";"):
        if statement.strip():
            conn.execute(statement)


def _script(row: Sequence[Any]) -> SieveScript:
    return SieveScript(
        account_id=int(row[0]),
        name=row[1],
        content=row[2],
        active=bool(row[3]),
        updated=float(row[4]),
    )


def _require_account(unit: Unit, account_id: int) -> None:
    row = unit.conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} does not exist")


def _get(unit: Unit, account_id: int, name: str) -> SieveScript | None:
    row = unit.conn.execute(
        f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = ? AND name = ?",
        (account_id, name),
    ).fetchone()
    return None if row is None else _script(row)


def list_scripts(unit: Unit, account_id: int) -> list[SieveScript]:
    rows = unit.conn.execute(
        f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = ? ORDER BY name",
        (account_id,),
    )
    return [_script(r) for r in rows]


def get_script(unit: Unit, account_id: int, name: str) -> SieveScript | None:
    return _get(unit, account_id, script_name(name))


def get_active_script(unit: Unit, account_id: int) -> SieveScript | None:
    row = unit.conn.execute(
        f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = ? AND active = 1",
        (account_id,),
    ).fetchone()
    return None if row is None else _script(row)


def _sizes(unit: Unit, account_id: int) -> dict[str, int]:
    rows = unit.conn.execute(
        "SELECT name, size FROM sieve_scripts WHERE account_id = ?", (account_id,)
    )
    return {r[0]: int(r[1]) for r in rows}


def check_space(unit: Unit, account_id: int, name: str, size: int, *, quota: ScriptQuota) -> None:
    """RFC 5804 §2.5 HAVESPACE: ScriptQuotaExceeded naming the limit, else nothing."""
    _require_account(unit, account_id)
    key = script_name(name)
    limit = quota.problem(_sizes(unit, account_id), key, size)
    if limit is not None:
        raise ScriptQuotaExceeded(
            f"script {key!r} of {size} octets exceeds the {limit} limit", limit=limit
        )


def put_script(
    unit: Unit,
    account_id: int,
    name: str,
    content: str,
    *,
    quota: ScriptQuota | None,
    activate: bool,
) -> SieveScript:
    key = script_name(name)
    _require_account(unit, account_id)
    size = len(content.encode("utf-8"))
    if quota is not None:
        # RFC 5804 §2.6: the old script MUST NOT be overwritten if PUTSCRIPT fails.
        check_space(unit, account_id, key, size, quota=quota)
    conn = unit.conn
    if activate:
        conn.execute(
            "UPDATE sieve_scripts SET active = 0 WHERE account_id = ? AND active = 1 AND name <> ?",
            (account_id, key),
        )
    conn.execute(
        "INSERT INTO sieve_scripts (account_id, name, content, size, active, updated) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, name) DO UPDATE SET "
        "content = excluded.content, size = excluded.size, updated = excluded.updated, "
        "active = max(active, excluded.active)",  # RFC 5804 §2.6: a replaced script stays active
        (account_id, key, content, size, int(activate), unit.now),
    )
    stored = _get(unit, account_id, key)
    assert stored is not None
    return stored


def set_active(unit: Unit, account_id: int, name: str | None) -> None:
    _require_account(unit, account_id)
    conn = unit.conn
    if name is None or name == "":
        # RFC 5804 §2.8: "" disables any active script; OK even when none is active.
        conn.execute(
            "UPDATE sieve_scripts SET active = 0 WHERE account_id = ? AND active = 1",
            (account_id,),
        )
        return
    key = script_name(name)
    if _get(unit, account_id, key) is None:
        raise NotFound(f"script {key!r} does not exist")  # RFC 5804 §2.8: NO (NONEXISTENT)
    conn.execute(
        "UPDATE sieve_scripts SET active = 0 WHERE account_id = ? AND active = 1 AND name <> ?",
        (account_id, key),
    )
    conn.execute(
        "UPDATE sieve_scripts SET active = 1 WHERE account_id = ? AND name = ?",
        (account_id, key),
    )


def delete_script(unit: Unit, account_id: int, name: str) -> None:
    key = script_name(name)
    found = _get(unit, account_id, key)
    if found is None:
        raise NotFound(f"script {key!r} does not exist")  # RFC 5804 §2.10: NONEXISTENT
    if found.active:
        # RFC 5804 §2.10: the server MUST NOT allow deleting the active script.
        raise Conflict(f"script {key!r} is active", reply="cannot delete the active script")
    unit.conn.execute(
        "DELETE FROM sieve_scripts WHERE account_id = ? AND name = ?", (account_id, key)
    )


def rename_script(unit: Unit, account_id: int, old: str, new: str) -> SieveScript:
    old_key, new_key = script_name(old), script_name(new)
    if _get(unit, account_id, old_key) is None:
        raise NotFound(f"script {old_key!r} does not exist")  # RFC 5804 §2.11: NONEXISTENT
    if old_key == new_key:
        raise AlreadyExists(f"script {new_key!r} already exists")
    if _get(unit, account_id, new_key) is not None:
        raise AlreadyExists(f"script {new_key!r} already exists")  # §2.11: ALREADYEXISTS
    # RFC 5804 §2.11: renaming the active script is allowed; it remains active.
    unit.conn.execute(
        "UPDATE sieve_scripts SET name = ?, updated = ? WHERE account_id = ? AND name = ?",
        (new_key, unit.now, account_id, old_key),
    )
    renamed = _get(unit, account_id, new_key)
    assert renamed is not None
    return renamed


# -- tracking lists (RFC 5230 §4.2, RFC 7352 §3) ------------------------------------------------
def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def tracked(unit: Unit, account_id: int, key: str) -> bool:
    row = unit.conn.execute(
        "SELECT 1 FROM sieve_tracking WHERE account_id = ? AND key = ? AND expires > ?",
        (account_id, _hash(key), unit.now),
    ).fetchone()
    return row is not None


def track(unit: Unit, account_id: int, key: str, *, expires: float, refresh: bool) -> bool:
    """Record ``key`` until ``expires``; True when it was already tracked (then its expiry
    changes only with ``refresh``: RFC 7352 §3.3 ``:last``)."""
    _require_account(unit, account_id)
    conn, now, digest = unit.conn, unit.now, _hash(key)
    conn.execute(
        "DELETE FROM sieve_tracking WHERE account_id = ? AND expires <= ?", (account_id, now)
    )
    row = conn.execute(
        "SELECT 1 FROM sieve_tracking WHERE account_id = ? AND key = ?", (account_id, digest)
    ).fetchone()
    if row is not None:
        if refresh:
            conn.execute(
                "UPDATE sieve_tracking SET expires = ? WHERE account_id = ? AND key = ?",
                (expires, account_id, digest),
            )
        return True
    conn.execute(
        "INSERT INTO sieve_tracking (account_id, key, expires) VALUES (?, ?, ?)",
        (account_id, digest, expires),
    )
    return False
