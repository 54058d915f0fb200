"""Mailboxes: names, UIDVALIDITY, hierarchy, create/rename/delete/subscribe units of work.

Names are ``/``-separated (``HIERARCHY_SEPARATOR``), NFC-normalised (RFC 9051 §6.3.4: a name
must be valid Net-Unicode), with ``INBOX`` matched case-insensitively as the first level
(RFC 9051 §5.1). UIDVALIDITY comes from one store-wide counter that only grows
(``max(now, last + 1)``), so a deleted and recreated name always gets a new, larger value
(RFC 9051 §2.3.1.1). Creating ``a/b/c`` creates missing ``a`` and ``a/b`` (RFC 9051 §6.3.4).

Deleting a mailbox that has children deletes that mailbox and its messages and keeps the
children (RFC 9051 §6.3.5 "MUST NOT remove inferior hierarchical names"): the name is left
as a mere hierarchy level, which the IMAP layer shows as ``\\Noselect``/``\\NonExistent``
and which can be created again later (with a new UIDVALIDITY).

Left out: per-mailbox ACLs (RFC 4314) and keeping subscriptions of deleted mailboxes
(a subscription is a mailbox attribute here).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from typing import Any

from hato.core.errors import AlreadyExists, Conflict, NotFound, StoreError, UsageError
from hato.store.model import HIERARCHY_SEPARATOR, INBOX, SPECIAL_USES, ChangeKind, Mailbox
from hato.store.sqlite import changes, refs
from hato.store.sqlite.db import Unit

MAX_NAME_OCTETS = 1000
_UIDVALIDITY_MAX = 0xFFFFFFFF  # RFC 9051 §9: uniqueid is nz-number, a 32-bit value
_MAILBOX_COLUMNS = (
    "id, account_id, name, uidvalidity, uidnext, special_use, subscribed, highest_modseq, "
    "message_count, unseen_count, size_bytes"
)


@functools.lru_cache(maxsize=1024)  # pure: every delivery names its mailbox (INBOX)
def canonical_name(name: str) -> str:
    """The stored form of a mailbox name, or UsageError naming the problem."""
    name = unicodedata.normalize("NFC", name)
    if name.endswith(HIERARCHY_SEPARATOR):
        # RFC 9051 §6.3.4: a trailing separator only declares intent; created without it.
        name = name[: -len(HIERARCHY_SEPARATOR)]
    levels = name.split(HIERARCHY_SEPARATOR)
    if any(level == "" for level in levels):
        raise UsageError(f"mailbox name {name!r} has an empty hierarchy level")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        # RFC 9051 §5.1: servers MAY refuse names containing Unicode CTL characters.
        raise UsageError(f"mailbox name {name!r} contains control characters")
    if len(name.encode("utf-8")) > MAX_NAME_OCTETS:
        raise UsageError(f"mailbox name is longer than {MAX_NAME_OCTETS} octets")
    if levels[0].upper() == INBOX:
        levels[0] = INBOX  # RFC 9051 §5.1: INBOX is case-insensitive
    return HIERARCHY_SEPARATOR.join(levels)


def _parents(name: str) -> list[str]:
    levels = name.split(HIERARCHY_SEPARATOR)
    return [HIERARCHY_SEPARATOR.join(levels[:i]) for i in range(1, len(levels))]


def mailbox_from_row(row: Sequence[Any]) -> Mailbox:
    return Mailbox(
        id=int(row[0]),
        account_id=int(row[1]),
        name=row[2],
        uidvalidity=int(row[3]),
        uidnext=int(row[4]),
        special_use=row[5],
        subscribed=bool(row[6]),
        highest_modseq=int(row[7]),
        message_count=int(row[8]),
        unseen_count=int(row[9]),
        size_bytes=int(row[10]),
    )


def get_by_id(unit: Unit, mailbox_id: int) -> Mailbox | None:
    row = unit.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    return None if row is None else mailbox_from_row(row)


def require(unit: Unit, mailbox_id: int) -> Mailbox:
    mailbox = get_by_id(unit, mailbox_id)
    if mailbox is None:
        raise NotFound(f"mailbox {mailbox_id} does not exist")
    return mailbox


def get_by_name(unit: Unit, account_id: int, name: str) -> Mailbox | None:
    try:
        canonical = canonical_name(name)
    except UsageError:
        return None
    row = unit.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND name = ?",
        (account_id, canonical),
    ).fetchone()
    return None if row is None else mailbox_from_row(row)


def list_all(unit: Unit, account_id: int) -> list[Mailbox]:
    rows = unit.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? "
        "ORDER BY name <> 'INBOX', name",
        (account_id,),
    )
    return [mailbox_from_row(r) for r in rows]


def _next_uidvalidity(unit: Unit) -> int:
    row = unit.conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
    last = 0 if row is None else int(row[0])
    # RFC 9051 §2.3.1.1: never reuse a value for a name; growing store-wide guarantees it.
    value = max(int(unit.now), last + 1)
    if value > _UIDVALIDITY_MAX:
        raise StoreError("UIDVALIDITY space exhausted")
    unit.conn.execute(
        "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (value,),
    )
    return value


def _require_account(unit: Unit, account_id: int) -> None:
    if unit.conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        raise NotFound(f"account {account_id} does not exist")


def _exists(unit: Unit, account_id: int, name: str) -> bool:
    row = unit.conn.execute(
        "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, name)
    ).fetchone()
    return row is not None


def insert_mailbox(
    unit: Unit, account_id: int, name: str, *, special_use: str | None, subscribed: bool
) -> int:
    """Insert one mailbox (name already canonical and free); logs MAILBOX_CREATED."""
    modseq = changes.bump(unit, account_id)
    cursor = unit.conn.execute(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, special_use, subscribed, "
        "highest_modseq) VALUES (?, ?, ?, ?, ?, ?)",
        (account_id, name, _next_uidvalidity(unit), special_use, int(subscribed), modseq),
    )
    mailbox_id = int(cursor.lastrowid or 0)
    changes.log_mailbox(unit, account_id, mailbox_id, ChangeKind.MAILBOX_CREATED)
    return mailbox_id


def create_parents(unit: Unit, account_id: int, name: str) -> None:
    # RFC 9051 §6.3.4/§6.3.6: the server SHOULD create the superior hierarchical names needed.
    for parent in _parents(name):
        if not _exists(unit, account_id, parent):
            insert_mailbox(unit, account_id, parent, special_use=None, subscribed=False)


def create(unit: Unit, account_id: int, name: str, *, special_use: str | None) -> Mailbox:
    _require_account(unit, account_id)
    canonical = canonical_name(name)
    if special_use is not None and special_use not in SPECIAL_USES:
        # RFC 6154 §3: an unknown special-use attribute makes CREATE fail.
        raise UsageError(f"unknown special-use attribute {special_use!r}")
    if _exists(unit, account_id, canonical):
        # RFC 9051 §6.3.4: creating INBOX or an existing name is an error.
        raise AlreadyExists(f"mailbox {canonical!r} already exists")
    create_parents(unit, account_id, canonical)
    mailbox_id = insert_mailbox(
        unit, account_id, canonical, special_use=special_use, subscribed=False
    )
    return require(unit, mailbox_id)


def _by_name_or_fail(unit: Unit, account_id: int, name: str) -> Mailbox:
    canonical = canonical_name(name)
    row = unit.conn.execute(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND name = ?",
        (account_id, canonical),
    ).fetchone()
    if row is None:
        raise NotFound(f"mailbox {canonical!r} does not exist")
    return mailbox_from_row(row)


def rename(unit: Unit, account_id: int, old: str, new: str) -> Mailbox:
    source = _by_name_or_fail(unit, account_id, old)
    target = canonical_name(new)
    conn = unit.conn
    if _exists(unit, account_id, target):
        raise AlreadyExists(f"mailbox {target!r} already exists")
    if source.name == INBOX:
        raise Conflict("renaming INBOX is messages.rename_inbox")  # the store routes it there
    prefix = source.name + HIERARCHY_SEPARATOR
    if target.startswith(prefix):
        raise Conflict(f"cannot rename {source.name!r} to its own child {target!r}")
    children = conn.execute(
        "SELECT id, name FROM mailboxes WHERE account_id = ? AND substr(name, 1, ?) = ?",
        (account_id, len(prefix), prefix),
    ).fetchall()
    moves = [(source.id, target)] + [
        (int(child_id), target + child_name[len(source.name):])
        for child_id, child_name in children
    ]
    for _mailbox_id, new_name in moves:
        if _exists(unit, account_id, new_name):
            raise AlreadyExists(f"mailbox {new_name!r} already exists")
    create_parents(unit, account_id, target)
    for mailbox_id, new_name in moves:
        conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (new_name, mailbox_id))
        changes.log_mailbox(unit, account_id, mailbox_id, ChangeKind.MAILBOX_RENAMED)
    return require(unit, source.id)


def drop_messages(unit: Unit, mailbox_id: int) -> tuple[int, int]:
    """Delete every message row of a mailbox; returns (bytes, count) removed."""
    conn = unit.conn
    blob_ids = [r[0] for r in conn.execute(
        "SELECT DISTINCT blob_id FROM messages WHERE mailbox_id = ?", (mailbox_id,)
    )]
    size, count = conn.execute(
        "SELECT coalesce(sum(size), 0), count(*) FROM messages WHERE mailbox_id = ?", (mailbox_id,)
    ).fetchone()
    conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (mailbox_id,))
    refs.dropped(unit, blob_ids)
    return int(size), int(count)


def delete(unit: Unit, account_id: int, name: str) -> None:
    mailbox = _by_name_or_fail(unit, account_id, name)
    if mailbox.name == INBOX:
        raise Conflict("INBOX cannot be deleted")  # RFC 9051 §6.3.5
    size, count = drop_messages(unit, mailbox.id)
    if count:
        changes.charge(unit, account_id, size=-size, count=-count)
    conn = unit.conn
    conn.execute("DELETE FROM changes WHERE mailbox_id = ?", (mailbox.id,))
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox.id,))
    changes.log_mailbox(unit, account_id, mailbox.id, ChangeKind.MAILBOX_DELETED)


def set_subscribed(unit: Unit, account_id: int, name: str, *, subscribed: bool) -> None:
    mailbox = _by_name_or_fail(unit, account_id, name)
    if mailbox.subscribed == subscribed:
        return  # nothing changes: no MODSEQ bump
    unit.conn.execute(
        "UPDATE mailboxes SET subscribed = ? WHERE id = ?", (int(subscribed), mailbox.id)
    )
    changes.log_mailbox(unit, account_id, mailbox.id, ChangeKind.MAILBOX_SUBSCRIPTION)
