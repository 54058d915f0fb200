"""The MTA-STS policy cache in the SQLite store (``hato.store.api.StsPolicyStore``).

One table, created by ``migrate_mtasts_cache`` (the last step of ``schema.MIGRATIONS``):
``mta_sts_policies`` keeps, per recipient domain, the policy text last fetched (RFC 8461
§3.2), the TXT record id it was fetched under (§3.1) and its fetch and expiry times
(fetch + max_age, §3.2, §5.1), so enforce policies survive a restart: without it a restart
would forget them and an attacker blocking the policy fetch could downgrade delivery; and
lists the entries due for the proactive refresh of §3.3 (fetched a day ago or more).

Left out: the parsing of the policy (``hato.outbound.mtasts``: the store keeps text).

Security: no SQL is built from input (placeholders only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from hato.store.api import CachedStsPolicy
from hato.store.sqlite.db import Unit

if TYPE_CHECKING:
    from hato.store.api import StsPolicyStore
    from hato.store.sqlite.store import SqliteStore

T = TypeVar("T")

_V_MTASTS = """
CREATE TABLE mta_sts_policies (
    domain TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched REAL NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX mta_sts_policies_expires ON mta_sts_policies(expires)
"""


def migrate_mtasts_cache(conn: sqlite3.Connection) -> None:
    """Schema step: the MTA-STS policy cache."""
    for statement in _V_MTASTS.split(";"):
        if statement.strip():
            conn.execute(statement)


def get(u: Unit, domain: str) -> CachedStsPolicy | None:
    row = u.conn.execute(
        "SELECT domain, record_id, policy, fetched, expires FROM mta_sts_policies"
        " WHERE domain = ?",
        (domain,),
    ).fetchone()
    if row is None:
        return None
    return CachedStsPolicy(str(row[0]), str(row[1]), str(row[2]), float(row[3]), float(row[4]))


def put(u: Unit, entry: CachedStsPolicy) -> None:
    u.conn.execute(
        "INSERT INTO mta_sts_policies (domain, record_id, policy, fetched, expires)"
        " VALUES (?,?,?,?,?) ON CONFLICT (domain) DO UPDATE SET record_id = excluded.record_id,"
        " policy = excluded.policy, fetched = excluded.fetched, expires = excluded.expires",
        (entry.domain, entry.record_id, entry.policy, entry.fetched, entry.expires),
    )


def delete(u: Unit, domain: str) -> None:
    u.conn.execute("DELETE FROM mta_sts_policies WHERE domain = ?", (domain,))


def purge(u: Unit, before: float) -> int:
    cursor = u.conn.execute("DELETE FROM mta_sts_policies WHERE expires < ?", (before,))
    return int(cursor.rowcount)


def due(u: Unit, fetched_before: float, now: float, limit: int) -> list[CachedStsPolicy]:
    # RFC 8461 §3.3: refresh before expiry; the oldest fetch first, expired ones never
    rows = u.conn.execute(
        "SELECT domain, record_id, policy, fetched, expires FROM mta_sts_policies"
        " WHERE fetched < ? AND expires > ? ORDER BY fetched, domain LIMIT ?",
        (fetched_before, now, limit),
    ).fetchall()
    return [
        CachedStsPolicy(str(r[0]), str(r[1]), str(r[2]), float(r[3]), float(r[4])) for r in rows
    ]


class StsCacheMethods:
    """The MTA-STS cache part of ``SqliteStore`` (``hato.store.api.StsPolicyStore``)."""

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[Unit], T]) -> T: ...

        async def _write(self, fn: Callable[[Unit], T]) -> T: ...

    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        return await self._read(lambda u: get(u, domain))

    async def put_sts_policy(self, entry: CachedStsPolicy) -> None:
        await self._write(lambda u: put(u, entry))

    async def delete_sts_policy(self, domain: str) -> None:
        await self._write(lambda u: delete(u, domain))

    async def purge_sts_policies(self, *, before: float) -> int:
        return await self._write(lambda u: purge(u, before))

    async def due_sts_policies(
        self, *, fetched_before: float, now: float, limit: int
    ) -> list[CachedStsPolicy]:
        return await self._read(lambda u: due(u, fetched_before, now, limit))


if TYPE_CHECKING:  # mypy proves the backend implements the protocol

    def _implements_sts_policy_store(store: SqliteStore) -> StsPolicyStore:
        return store
