"""Point lookups of the SQLite store from another process: an SMTP worker's reads.

An SMTP worker (hato.servers.smtp_worker) asks, for every recipient and every message, who an
address is and which Sieve script is active. ``Lookups`` answers those from the database file
itself, on a read-only connection of the worker (WAL lets readers of other processes run
beside the main process's writer), with the same unit functions as ``SqliteStore``, instead
of a round trip to the main process for each (``hato.store.remote.RemoteStore.read_locally``).
Each lookup is one statement in autocommit: it sees every transaction committed before it,
so a worker reads what its own calls just wrote.

Leaves out: anything that writes, and reads of more than a few rows (they go to the main
process).

Security: the connection is opened read-only (``mode=ro``) and ``query_only``; a busy database
(``SQLITE_BUSY`` past 50 ms, e.g. a WAL index being rebuilt) raises ``TemporaryStoreError``,
on which the caller asks the main process instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hato.core.clock import Clock, SystemClock
from hato.core.errors import TemporaryStoreError
from hato.store.model import Account, Alias, Mailbox, SieveScript
from hato.store.sqlite import accounts, mailboxes, sieve
from hato.store.sqlite.db import Unit, translate_error
from hato.store.sqlite.store import DB_NAME

T = TypeVar("T")

NAMES = frozenset(
    {"has_domain", "get_account", "get_account_by_id", "get_alias", "get_mailbox",
     "get_active_script"}
)  # fmt: skip


class Lookups:
    """The ``MailStore`` lookups named in ``NAMES``, on a read-only connection."""

    def __init__(self, data_dir: Path, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        uri = f"file:{data_dir / DB_NAME}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=50")  # never hold an event loop for long
        self._conn.execute("PRAGMA query_only=ON")

    def _run(self, work: Callable[[Unit], T]) -> T:
        try:
            return work(Unit(self._conn, self._clock.now()))
        except sqlite3.OperationalError as exc:
            raise TemporaryStoreError(f"lookup: {exc}") from None
        except BaseException as exc:
            raise translate_error(exc) from None

    async def has_domain(self, name: str) -> bool:
        return self._run(lambda u: accounts.has_domain(u, name))

    async def get_account(self, address: str) -> Account | None:
        return self._run(lambda u: accounts.get_account(u, address))

    async def get_account_by_id(self, account_id: int) -> Account | None:
        return self._run(lambda u: accounts.get_account_by_id(u, account_id))

    async def get_alias(self, source: str) -> Alias | None:
        return self._run(lambda u: accounts.get_alias(u, source))

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        return self._run(lambda u: mailboxes.get_by_name(u, account_id, name))

    async def get_active_script(self, account_id: int) -> SieveScript | None:
        return self._run(lambda u: sieve.get_active_script(u, account_id))

    def close(self) -> None:
        self._conn.close()
