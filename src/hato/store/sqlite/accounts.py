"""Domains, accounts and aliases: units of work on the ``domains``/``accounts``/``aliases`` tables.

Addresses are stored as ``hato.core.address.Address.key`` and domains in the canonical form of
``normalize_domain``; input is canonicalised again here so a caller's slip cannot create a
second spelling of one account. A new account gets the RFC 6154 special-use mailboxes of
``DEFAULT_MAILBOXES``. An alias source ``@domain`` is a catch-all for that domain.

Left out: app passwords and per-account settings (a later schema version).

Security: credentials are stored as given (argon2id hash and SCRAM keys, never a password)
and are never logged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from hato.core.address import Address, normalize_domain
from hato.core.errors import AddressError, AlreadyExists, Conflict, NotFound, UsageError
from hato.store.model import DEFAULT_MAILBOXES, Account, Alias, Credentials, Domain
from hato.store.sqlite import mailboxes, threadids
from hato.store.sqlite.db import Unit

_ACCOUNT_COLUMNS = (
    "id, address, domain, password_hash, scram_sha256, quota_bytes, enabled, used_bytes, "
    "message_count, scram_sha1"
)


def account_key(address: str) -> str:
    """The canonical key of an account address (AddressError when invalid)."""
    return Address.parse(address).key


def _lookup_key(address: str) -> str | None:
    try:
        return account_key(address)
    except AddressError:
        return None


def _account(row: Sequence[Any]) -> Account:
    return Account(
        id=int(row[0]),
        address=row[1],
        domain=row[2],
        credentials=Credentials(password_hash=row[3], scram_sha256=row[4], scram_sha1=row[9]),
        quota_bytes=row[5],
        enabled=bool(row[6]),
        used_bytes=int(row[7]),
        message_count=int(row[8]),
    )


def _check_quota(quota_bytes: int | None) -> None:
    if quota_bytes is not None and quota_bytes < 0:
        raise UsageError(f"quota must be at least 0 bytes, not {quota_bytes}")


# -- domains -----------------------------------------------------------------------------------
def add_domain(unit: Unit, name: str) -> Domain:
    domain = normalize_domain(name)
    try:
        unit.conn.execute("INSERT INTO domains (name) VALUES (?)", (domain,))
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"domain {domain} already exists") from None
    return Domain(domain)


def remove_domain(unit: Unit, name: str, *, force: bool) -> None:
    domain = normalize_domain(name)
    conn = unit.conn
    if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
        raise NotFound(f"domain {domain} does not exist")
    account_ids = [
        int(r[0]) for r in conn.execute("SELECT id FROM accounts WHERE domain = ?", (domain,))
    ]
    alias_count = conn.execute(
        "SELECT count(*) FROM aliases WHERE domain = ?", (domain,)
    ).fetchone()[0]
    if (account_ids or alias_count) and not force:
        raise Conflict(
            f"domain {domain} still has {len(account_ids)} accounts and {alias_count} aliases"
        )
    for account_id in account_ids:
        _delete_account(unit, account_id)
    conn.execute("DELETE FROM aliases WHERE domain = ?", (domain,))
    conn.execute("DELETE FROM domains WHERE name = ?", (domain,))


def list_domains(unit: Unit) -> list[Domain]:
    return [Domain(r[0]) for r in unit.conn.execute("SELECT name FROM domains ORDER BY name")]


def has_domain(unit: Unit, name: str) -> bool:
    try:
        domain = normalize_domain(name)
    except AddressError:
        return False
    row = unit.conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone()
    return row is not None


# -- accounts ----------------------------------------------------------------------------------
def add_account(
    unit: Unit, address: str, credentials: Credentials, *, quota_bytes: int | None
) -> Account:
    key = account_key(address)
    domain = key.rsplit("@", 1)[1]
    _check_quota(quota_bytes)
    conn = unit.conn
    if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
        raise NotFound(f"domain {domain} of {key} does not exist")
    try:
        cursor = conn.execute(
            "INSERT INTO accounts (address, domain, password_hash, scram_sha256, scram_sha1, "
            "quota_bytes) VALUES (?, ?, ?, ?, ?, ?)",
            (
                key,
                domain,
                credentials.password_hash,
                credentials.scram_sha256,
                credentials.scram_sha1,
                quota_bytes,
            ),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"account {key} already exists") from None
    account_id = int(cursor.lastrowid or 0)
    for name, special_use in DEFAULT_MAILBOXES:  # RFC 6154 §2 special-use mailboxes
        mailboxes.insert_mailbox(unit, account_id, name, special_use=special_use, subscribed=True)
    found = get_account_by_id(unit, account_id)
    assert found is not None
    return found


def get_account(unit: Unit, address: str) -> Account | None:
    key = _lookup_key(address)
    if key is None:
        return None
    row = unit.conn.execute(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE address = ?", (key,)
    ).fetchone()
    return None if row is None else _account(row)


def get_account_by_id(unit: Unit, account_id: int) -> Account | None:
    row = unit.conn.execute(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
    ).fetchone()
    return None if row is None else _account(row)


def list_accounts(unit: Unit, domain: str | None) -> list[Account]:
    if domain is None:
        rows = unit.conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY address")
    else:
        rows = unit.conn.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE domain = ? ORDER BY address",
            (normalize_domain(domain),),
        )
    return [_account(r) for r in rows]


def _account_id(unit: Unit, address: str) -> int:
    key = account_key(address)
    row = unit.conn.execute("SELECT id FROM accounts WHERE address = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"account {key} does not exist")
    return int(row[0])


def set_credentials(unit: Unit, address: str, credentials: Credentials) -> None:
    account_id = _account_id(unit, address)
    unit.conn.execute(
        "UPDATE accounts SET password_hash = ?, scram_sha256 = ?, scram_sha1 = ? WHERE id = ?",
        (
            credentials.password_hash,
            credentials.scram_sha256,
            credentials.scram_sha1,
            account_id,
        ),
    )


def set_quota(unit: Unit, address: str, quota_bytes: int | None) -> None:
    _check_quota(quota_bytes)
    account_id = _account_id(unit, address)
    unit.conn.execute("UPDATE accounts SET quota_bytes = ? WHERE id = ?", (quota_bytes, account_id))


def set_enabled(unit: Unit, address: str, *, enabled: bool) -> None:
    account_id = _account_id(unit, address)
    unit.conn.execute("UPDATE accounts SET enabled = ? WHERE id = ?", (int(enabled), account_id))


def remove_account(unit: Unit, address: str) -> None:
    _delete_account(unit, _account_id(unit, address))


def _delete_account(unit: Unit, account_id: int) -> None:
    """Remove an account with its mailboxes, messages and change log; releases its blobs."""
    conn = unit.conn
    rows = conn.execute("SELECT id FROM mailboxes WHERE account_id = ?", (account_id,))
    mailbox_ids = [int(r[0]) for r in rows]
    for mailbox_id in mailbox_ids:
        mailboxes.drop_messages(unit, mailbox_id)
    conn.execute("DELETE FROM mailboxes WHERE account_id = ?", (account_id,))
    conn.execute("DELETE FROM changes WHERE account_id = ?", (account_id,))
    threadids.forget_account(conn, account_id)
    conn.execute("DELETE FROM accounts WHERE id = ?", (account_id,))


# -- aliases -----------------------------------------------------------------------------------
def alias_source_key(source: str) -> str:
    """``local@domain`` as an Address key, or ``@domain`` (catch-all) with the domain canonical."""
    if source.startswith("@"):
        return "@" + normalize_domain(source[1:])
    return account_key(source)


def add_alias(unit: Unit, source: str, targets: Sequence[str]) -> Alias:
    key = alias_source_key(source)
    domain = key.rsplit("@", 1)[1]
    if isinstance(targets, str) or not targets:
        raise UsageError(f"alias {key} needs a list of at least one target address")
    canonical: list[str] = []
    for target in targets:
        # Local part as written (a remote system may treat case as significant,
        # RFC 5321 §2.4); domain canonical.
        text = str(Address.parse(target))
        if text not in canonical:
            canonical.append(text)
    conn = unit.conn
    if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
        raise NotFound(f"domain {domain} of alias {key} does not exist")
    try:
        conn.execute(
            "INSERT INTO aliases (source, domain, targets) VALUES (?, ?, ?)",
            (key, domain, json.dumps(canonical)),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"alias {key} already exists") from None
    return Alias(source=key, targets=tuple(canonical))


def get_alias(unit: Unit, source: str) -> Alias | None:
    try:
        key = alias_source_key(source)
    except AddressError:
        return None
    row = unit.conn.execute(
        "SELECT source, targets FROM aliases WHERE source = ?", (key,)
    ).fetchone()
    return None if row is None else Alias(source=row[0], targets=tuple(json.loads(row[1])))


def list_aliases(unit: Unit, domain: str | None) -> list[Alias]:
    if domain is None:
        rows = unit.conn.execute("SELECT source, targets FROM aliases ORDER BY source")
    else:
        rows = unit.conn.execute(
            "SELECT source, targets FROM aliases WHERE domain = ? ORDER BY source",
            (normalize_domain(domain),),
        )
    return [Alias(source=r[0], targets=tuple(json.loads(r[1]))) for r in rows]


def remove_alias(unit: Unit, source: str) -> None:
    key = alias_source_key(source)
    cursor = unit.conn.execute("DELETE FROM aliases WHERE source = ?", (key,))
    if cursor.rowcount == 0:
        raise NotFound(f"alias {key} does not exist")


def migrate_scram_sha1(conn: sqlite3.Connection) -> None:
    """Schema version 10: SCRAM-SHA-1 keys (RFC 5804 §2.1 makes the mechanism a MUST for
    ManageSieve). Existing accounts get theirs at their next password login."""
    conn.execute("ALTER TABLE accounts ADD COLUMN scram_sha1 TEXT")
