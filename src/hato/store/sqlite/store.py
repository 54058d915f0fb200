"""``SqliteStore``: the embedded ``MailStore`` (SQLite WAL metadata + content-addressed files).

Every method is one unit of work on the database thread (``db.py``). After the commit of a
unit, on that thread: blobs whose last reference it dropped are unlinked (their
``orphan_blobs`` rows are cleared in a later transaction, once the blob janitor has made the
unlinks durable), waiters of the accounts whose MODSEQ moved are woken, and the pins of
freshly written blobs it stored are released (the janitor then moves them from ``new/`` to
their address; ``blobs.py``). After a batch, blobs pinned longer than ``PIN_TTL`` by writers
whose units never committed are deleted (checked at most once a minute).

``open_store`` creates the data directory layout when missing, runs the schema migrations,
then recovers from a crash before serving: removes temp files, gives the referenced blobs of
``blobs/new/`` their address and deletes the others, and deletes blobs journalled in
``orphan_blobs``.

Left out: online backup (``ops`` copies the database with SQLite's backup API), and blob
deletion across processes (one Hato process owns a data directory).

Security: the data directory and its subdirectories are created 0700; see blobs.py and db.py
for files.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hato.core.clock import Clock, SystemClock
from hato.core.log import event
from hato.store.api import MailStore, ReportStore
from hato.store.fulltext import TextHits, TextScope
from hato.store.model import (
    INBOX,
    Account,
    Alias,
    Appended,
    BlobRef,
    Change,
    Credentials,
    DeliveryTarget,
    Domain,
    FlagOp,
    FlagUpdate,
    Mailbox,
    MailboxSnapshot,
    Message,
    QuotaUsage,
    ScriptQuota,
    SieveScript,
)
from hato.store.sqlite import (
    accounts,
    changes,
    mailboxes,
    messages,
    refs,
    schema,
    sieve,
    textindex,
    threadids,
)
from hato.store.sqlite.blobs import PIN_TTL, FileBlobStore
from hato.store.sqlite.db import CommitStats, Database, Unit
from hato.store.sqlite.dirsync import fsync_dir
from hato.store.sqlite.mtasts_cache import StsCacheMethods
from hato.store.sqlite.queue import QueueMethods
from hato.store.sqlite.reporting import ReportingMethods
from hato.store.sqlite.reports import ReportMethods

T = TypeVar("T")

DB_NAME = "hato.db"
BLOB_DIR = "blobs"
TMP_DIR = "tmp"
SWEEP_INTERVAL = 60.0  # seconds between looks for abandoned blob pins
LOOKUP_MESSAGES = 64  # get_messages of up to this many UIDs runs as a point lookup
LOOKUP_CHANGES = 64  # changes_since answers up to this many changes as a point lookup
LOOKUP_MAILBOX = 4096  # a mailbox of up to this many messages is listed as a lookup


class SqliteStore(QueueMethods, ReportMethods, ReportingMethods, StsCacheMethods):
    """The embedded mail store; create it with ``open_store``."""

    def __init__(self, data_dir: Path, *, clock: Clock) -> None:
        self.data_dir = data_dir
        self._clock = clock
        self._blobs = FileBlobStore(data_dir / BLOB_DIR, data_dir / TMP_DIR, clock=clock)
        self._last_sweep = clock.monotonic()
        self._notifier = changes.ChangeNotifier()
        self._cleared_lock = threading.Lock()
        self._cleared: set[str] = set()  # orphan rows whose blob is gone: delete next transaction
        self._db = Database(
            data_dir / DB_NAME,
            clock=clock,
            setup=self._setup,
            prologue=self._clear_orphans,
            epilogue=self._sweep_abandoned,
        )
        self._blobs.attach_stored(self._stored_body)  # small bodies (refs.py)
        self._indexer = textindex.Indexer(self._read, self._write, self._blobs.open)

    # -- lifecycle -------------------------------------------------------------------------
    async def _start(self) -> None:
        await self._db.start()
        self._blobs.start()  # the janitor: moves committed blobs, syncs deletions (blobs.py)
        self._indexer.start()  # fills full-text documents left pending (textindex.py)

    def _setup(self, conn: sqlite3.Connection) -> None:
        """On the database thread before any unit: migrate, then recover from a crash."""
        migrations = schema.MIGRATIONS
        before = schema.migrate(conn, migrations)
        if before != len(migrations):
            event("store.schema.migrated", from_version=before, to_version=len(migrations))
        journal, logged = refs.journal_rows(conn), refs.log_rows(conn)
        temps, swept = self._blobs.recover(
            functools.partial(refs.referenced, conn), journal, logged
        )
        # written out and fsynced
        refs.forget_journalled(conn, [b for b, _data in journal] + [r[0] for r in logged])
        for (blob_id,) in conn.execute("SELECT blob_id FROM orphan_blobs").fetchall():
            if refs.referenced(conn, blob_id):
                continue
            stored = conn.execute("DELETE FROM blob_bodies WHERE blob_id = ?", (blob_id,))
            if self._blobs.delete(blob_id) or stored.rowcount:
                swept += 1
        conn.execute("DELETE FROM orphan_blobs")  # autocommit: after the unlinks above
        if temps or swept:
            event("store.recovered", temp_files=temps, blobs_swept=swept)
        threaded = threadids.backfill(conn, self._blobs)  # blobs recovered: headers readable
        if threaded:
            event("store.threadid.backfilled", messages=threaded)

    async def close(self) -> None:
        await self._indexer.stop()
        await self._db.close()
        await asyncio.to_thread(self._blobs.close)

    def _stored_body(self, blob_id: str) -> bytes | None:
        """A body stored in the database (any thread, blocking: ``FileBlobStore.open``)."""
        return self._db.read_here(lambda u: refs.stored_body(u.conn, blob_id))

    @property
    def blobs(self) -> FileBlobStore:
        return self._blobs

    @property
    def stats(self) -> CommitStats:
        """Group-commit counters (tests and benchmarks)."""
        return self._db.stats

    # -- plumbing ----------------------------------------------------------------------------
    async def _read(self, fn: Callable[[Unit], T]) -> T:
        return await self._db.read(fn)

    async def _lookup(self, fn: Callable[[Unit], T]) -> T:
        """A point lookup of ONE statement: run on the caller's thread, in autocommit
        (``Database.lookup``)."""
        return await self._db.lookup(fn, snapshot=False)

    async def _write(self, fn: Callable[[Unit], T]) -> T:
        def work(unit: Unit) -> T:
            unit.memo[refs.BODIES] = self._blobs  # small bodies to journal (refs.used)
            unit.memo[threadids.SOURCE_KEY] = self._blobs  # headers of stored messages
            try:
                return fn(unit)
            finally:
                self._register_hooks(unit)

        return await self._db.write(work)

    def _register_hooks(self, unit: Unit) -> None:
        conn = unit.conn
        modseqs: dict[int, int] = unit.memo.get(changes.MODSEQS, {})
        if modseqs:
            accounts_moved = list(modseqs)
            unit.on_commit(lambda: self._notifier.notify(accounts_moved))
        orphans: set[str] = unit.memo.get(refs.ORPHANS, set())
        if orphans:
            unit.on_commit(lambda: self._delete_orphans(conn, orphans))
        used: list[str] = unit.memo.get(refs.USED, [])
        for blob_id in used:
            unit.on_commit(self._releaser(blob_id))
        if unit.memo.get(textindex.PENDING_KEY):
            unit.on_commit(self._indexer.kick_threadsafe)

    def _releaser(self, blob_id: str) -> Callable[[], None]:
        return lambda: self._blobs.release(blob_id)

    def _sweep_abandoned(self, conn: sqlite3.Connection) -> None:
        """After a write batch: delete blobs whose writers never got a unit committed."""
        now = self._clock.monotonic()
        if now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for blob_id in self._blobs.abandoned(older_than=now - PIN_TTL):
            if self._blobs.forget(blob_id, referenced=refs.referenced(conn, blob_id)):
                event("store.blob.abandoned", blob=blob_id)

    def _delete_orphans(self, conn: sqlite3.Connection, orphans: set[str]) -> None:
        """After the commit that dropped the last references: delete the files."""
        stored_again = refs.still_referenced(conn, orphans)  # by a later unit
        self._orphans_cleared(stored_again)
        # Unlinked now, made durable by the blob janitor (off this thread), then cleared;
        # a blob pinned by a writer keeps its row until its release or the next start.
        self._blobs.delete_later(orphans - stored_again, done=self._orphans_cleared)

    def _orphans_cleared(self, blob_ids: set[str]) -> None:
        """Orphan rows whose blob is durably gone (or referenced again): the next write
        transaction deletes them (any thread)."""
        with self._cleared_lock:
            self._cleared |= blob_ids

    def _clear_orphans(self, conn: sqlite3.Connection) -> None:
        """Prologue of every write transaction: forget orphan rows whose blob is gone, and
        journalled bodies whose file the blob janitor made durable."""
        with self._cleared_lock:
            cleared, self._cleared = self._cleared, set()
        refs.forget_orphans(conn, cleared)
        refs.forget_journalled(conn, self._blobs.take_materialized())

    # -- domains -----------------------------------------------------------------------------
    async def add_domain(self, name: str) -> Domain:
        return await self._write(lambda u: accounts.add_domain(u, name))

    async def remove_domain(self, name: str, *, force: bool = False) -> None:
        await self._write(lambda u: accounts.remove_domain(u, name, force=force))

    async def list_domains(self) -> list[Domain]:
        return await self._read(accounts.list_domains)

    async def has_domain(self, name: str) -> bool:
        return await self._lookup(lambda u: accounts.has_domain(u, name))

    # -- accounts ----------------------------------------------------------------------------
    async def add_account(
        self, address: str, credentials: Credentials, *, quota_bytes: int | None = None
    ) -> Account:
        return await self._write(
            lambda u: accounts.add_account(u, address, credentials, quota_bytes=quota_bytes)
        )

    async def get_account(self, address: str) -> Account | None:
        return await self._lookup(lambda u: accounts.get_account(u, address))

    async def get_account_by_id(self, account_id: int) -> Account | None:
        return await self._lookup(lambda u: accounts.get_account_by_id(u, account_id))

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        return await self._read(lambda u: accounts.list_accounts(u, domain))

    async def set_credentials(self, address: str, credentials: Credentials) -> None:
        await self._write(lambda u: accounts.set_credentials(u, address, credentials))

    async def set_quota(self, address: str, quota_bytes: int | None) -> None:
        await self._write(lambda u: accounts.set_quota(u, address, quota_bytes))

    async def set_enabled(self, address: str, enabled: bool) -> None:
        await self._write(lambda u: accounts.set_enabled(u, address, enabled=enabled))

    async def remove_account(self, address: str) -> None:
        await self._write(lambda u: accounts.remove_account(u, address))

    # -- aliases -----------------------------------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> Alias:
        return await self._write(lambda u: accounts.add_alias(u, source, targets))

    async def get_alias(self, source: str) -> Alias | None:
        return await self._lookup(lambda u: accounts.get_alias(u, source))

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        return await self._read(lambda u: accounts.list_aliases(u, domain))

    async def remove_alias(self, source: str) -> None:
        await self._write(lambda u: accounts.remove_alias(u, source))

    # -- mailboxes ---------------------------------------------------------------------------
    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        return await self._read(lambda u: mailboxes.list_all(u, account_id))

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        return await self._lookup(lambda u: mailboxes.get_by_name(u, account_id, name))

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        return await self._lookup(lambda u: mailboxes.get_by_id(u, mailbox_id))

    async def create_mailbox(
        self, account_id: int, name: str, *, special_use: str | None = None
    ) -> Mailbox:
        return await self._write(
            lambda u: mailboxes.create(u, account_id, name, special_use=special_use)
        )

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> Mailbox:
        def work(u: Unit) -> Mailbox:
            if mailboxes.canonical_name(old) == INBOX:
                return messages.rename_inbox(u, account_id, new)
            return mailboxes.rename(u, account_id, old, new)

        return await self._write(work)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        await self._write(lambda u: mailboxes.delete(u, account_id, name))

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        await self._write(
            lambda u: mailboxes.set_subscribed(u, account_id, name, subscribed=subscribed)
        )

    # -- messages ----------------------------------------------------------------------------
    async def append(
        self,
        mailbox_id: int,
        blob: BlobRef,
        *,
        flags: frozenset[str] = frozenset(),
        internal_date: float | None = None,
    ) -> Appended:
        return await self._write(
            lambda u: messages.append(
                u,
                mailbox_id,
                blob,
                flags=flags,
                internal_date=internal_date,
                blob_exists=self._blobs.exists,
            )
        )

    async def deliver(
        self,
        blob: BlobRef,
        targets: Sequence[DeliveryTarget],
        *,
        internal_date: float | None = None,
    ) -> list[Appended]:
        return await self._write(
            lambda u: messages.deliver(
                u, blob, targets, internal_date=internal_date, blob_exists=self._blobs.exists
            )
        )

    async def list_messages(self, mailbox_id: int) -> list[Message]:
        found = await self._lookup(
            lambda u: messages.list_messages(u, mailbox_id) if self._small(u, mailbox_id)
            else None)
        if found is not None:
            return found
        return await self._read(lambda u: messages.list_messages(u, mailbox_id))

    @staticmethod
    def _small(unit: Unit, mailbox_id: int) -> bool:
        """Is the mailbox small enough to be read whole as a lookup on the caller's thread?
        (Not queued behind slow reads such as full-text searches on the reader thread.)"""
        return mailboxes.require(unit, mailbox_id).message_count <= LOOKUP_MAILBOX

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[Message]:
        if len(uids) <= LOOKUP_MESSAGES:
            # A few rows by primary key (an IMAP FETCH of a screenful): a point lookup.
            return await self._db.lookup(lambda u: messages.get_messages(u, mailbox_id, uids))
        return await self._read(lambda u: messages.get_messages(u, mailbox_id, uids))

    async def snapshot_mailbox(self, mailbox_id: int) -> MailboxSnapshot:
        found = await self._lookup(
            lambda u: messages.snapshot_mailbox(u, mailbox_id) if self._small(u, mailbox_id)
            else None)
        if found is not None:
            return found
        return await self._read(lambda u: messages.snapshot_mailbox(u, mailbox_id))

    async def update_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        *,
        op: FlagOp,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        return await self._write(
            lambda u: messages.update_flags(
                u, mailbox_id, uids, flags, op=op, unchanged_since=unchanged_since
            )
        )

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        return await self._write(lambda u: messages.expunge(u, mailbox_id, uids))

    async def copy(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        return await self._write(lambda u: messages.copy(u, mailbox_id, uids, target_mailbox_id))

    async def move(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        return await self._write(lambda u: messages.move(u, mailbox_id, uids, target_mailbox_id))

    # -- change log and quota ----------------------------------------------------------------
    async def highest_modseq(self, account_id: int) -> int:
        return await self._lookup(lambda u: changes.highest_modseq(u, account_id))

    async def changes_since(
        self, account_id: int, modseq: int, *, mailbox_id: int | None = None
    ) -> list[Change]:
        # Usually none or a few (IMAP asks after every command): a point lookup; a longer
        # list is read again on the reader thread.
        few = await self._lookup(lambda u: changes.changes_since(
            u, account_id, modseq, mailbox_id=mailbox_id, limit=LOOKUP_CHANGES + 1))
        if len(few) <= LOOKUP_CHANGES:
            return few
        return await self._read(
            lambda u: changes.changes_since(u, account_id, modseq, mailbox_id=mailbox_id)
        )

    async def wait_for_change(self, account_id: int, after_modseq: int, timeout: float) -> int:
        """RFC 2177 IDLE support: woken from the database thread right after the commit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            woken = self._notifier.register(account_id)  # before reading: no lost wake-up
            try:
                current = await self.highest_modseq(account_id)
                remaining = deadline - loop.time()
                if current > after_modseq or remaining <= 0:
                    return current
                await asyncio.wait([woken], timeout=remaining)
            finally:
                self._notifier.unregister(account_id, woken)
                woken.cancel()

    async def quota_usage(self, account_id: int) -> QuotaUsage:
        return await self._read(lambda u: changes.quota_usage(u, account_id))

    # -- full-text search (textindex.py) -----------------------------------------------------
    async def search_text(
        self, mailbox_id: int, query: str, *, scope: TextScope
    ) -> TextHits | None:
        if textindex.phrase(query) is not None:
            # indexing runs behind delivery: index this mailbox's pending documents first,
            # so the answer comes from the index (textindex.Indexer)
            await self._indexer.catch_up(mailbox_id)
        return await self._read(lambda u: textindex.search(u, mailbox_id, query, scope=scope))

    async def index_pending(self) -> int:
        """Index every pending full-text document now; returns how many got text."""
        return await self._indexer.run()

    async def fulltext_unindexed(self) -> int:
        """Stored bodies the full-text index holds no text for (pending or too large)."""
        return await self._read(textindex.unindexed_count)

    # -- Sieve scripts and tracking (sieve.py) -----------------------------------------------
    async def list_scripts(self, account_id: int) -> list[SieveScript]:
        return await self._read(lambda u: sieve.list_scripts(u, account_id))

    async def get_script(self, account_id: int, name: str) -> SieveScript | None:
        return await self._read(lambda u: sieve.get_script(u, account_id, name))

    async def get_active_script(self, account_id: int) -> SieveScript | None:
        return await self._lookup(lambda u: sieve.get_active_script(u, account_id))

    async def put_script(
        self,
        account_id: int,
        name: str,
        content: str,
        *,
        quota: ScriptQuota | None = None,
        activate: bool = False,
    ) -> SieveScript:
        return await self._write(
            lambda u: sieve.put_script(
                u, account_id, name, content, quota=quota, activate=activate
            )
        )

    async def check_script_space(
        self, account_id: int, name: str, size: int, *, quota: ScriptQuota
    ) -> None:
        await self._read(lambda u: sieve.check_space(u, account_id, name, size, quota=quota))

    async def set_active_script(self, account_id: int, name: str | None) -> None:
        await self._write(lambda u: sieve.set_active(u, account_id, name))

    async def delete_script(self, account_id: int, name: str) -> None:
        await self._write(lambda u: sieve.delete_script(u, account_id, name))

    async def rename_script(self, account_id: int, old: str, new: str) -> SieveScript:
        return await self._write(lambda u: sieve.rename_script(u, account_id, old, new))

    async def sieve_tracked(self, account_id: int, key: str) -> bool:
        return await self._read(lambda u: sieve.tracked(u, account_id, key))

    async def sieve_track(
        self, account_id: int, key: str, *, expires: float, refresh: bool = False
    ) -> bool:
        return await self._write(
            lambda u: sieve.track(u, account_id, key, expires=expires, refresh=refresh)
        )


def _make_layout(data_dir: Path) -> None:
    for directory in (data_dir, data_dir / BLOB_DIR, data_dir / TMP_DIR):
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True)
            fsync_dir(directory.parent)


async def open_store(data_dir: Path, *, clock: Clock | None = None) -> SqliteStore:
    """Open (creating when missing) the store in ``data_dir``; raises SchemaVersionError for a
    database written by a newer Hato."""
    data_dir = Path(data_dir)
    await asyncio.to_thread(_make_layout, data_dir)
    store = SqliteStore(data_dir, clock=clock or SystemClock())
    await store._start()
    return store


if TYPE_CHECKING:  # mypy proves the backend implements the whole interface

    def _implements_mail_store(store: SqliteStore) -> MailStore:
        return store

    def _implements_report_store(store: SqliteStore) -> ReportStore:
        return store
