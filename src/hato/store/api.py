"""The mail store interface: what every backend provides, in domain types only.

Every mutation of an account's mail bumps that account's MODSEQ once (RFC 7162 §3.1) and
writes change-log entries that ``changes_since`` answers; IMAP CONDSTORE/QRESYNC and IDLE,
POP3 and the JSON API all read it. Every method that mutates is one atomic unit of work:
when it returns, the change is durable (fsynced); when it raises, nothing changed.

Errors: NotFound, AlreadyExists, Conflict, QuotaExceeded, SchemaVersionError and
TemporaryStoreError from ``hato.core.errors``.

Addresses and domains passed in are canonical (``Address.key`` / ``normalize_domain``);
callers normalise user input first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from hato.core.errors import HatoError
from hato.store.fulltext import TextHits, TextScope
from hato.store.model import (
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
from hato.store.queue import NewQueueEntry, QueueEntry, QueueState, QueueUpdate
from hato.store.reports import DmarcEvaluation, FeedbackReport


class BlobWriter(Protocol):
    """Streams one message body to a temporary file while hashing it.

    ``commit`` fsyncs the file, renames it to its content address and fsyncs the directory;
    it is blocking (call it through ``asyncio.to_thread`` from the event loop) unless
    ``quick`` says it does no fsync. ``abort`` removes the temporary file. Exactly one of the
    two must be called.
    """

    def write(self, data: bytes) -> None: ...

    @property
    def size(self) -> int: ...

    @property
    def quick(self) -> bool:
        """``commit`` would do no fsync now (cheap enough to call on the event loop)."""
        ...

    def commit(self) -> BlobRef: ...

    async def commit_async(self) -> BlobRef:
        """``commit`` from the event loop: inline when ``quick``, else without blocking it
        (in a thread, or sharing an fdatasync with other bodies)."""
        ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed message bodies, shared by every recipient of one message."""

    def writer(self) -> BlobWriter: ...

    def open(self, blob_id: str) -> BinaryIO: ...

    def read(self, blob_id: str) -> bytes: ...

    def exists(self, blob_id: str) -> bool: ...

    def take_inline(self, size: int) -> bool:
        """Would ``install(body=...)`` of ``size`` octets do no I/O now (the body kept in
        memory and journalled), rather than write and fsync a file?"""
        ...

    def install(
        self, blob_id: str, size: int, *, body: bytes | None = None, temp: str | None = None
    ) -> BlobRef:
        """Install a body another process wrote (an SMTP worker, hato.store.remote): held in
        ``body``, or in ``temp``, a file already fsynced in this store's ``tmp/`` directory
        (moved, not copied). Like ``BlobWriter.commit``; blocking with ``temp``."""
        ...


class MailStore(Protocol):
    """The metadata store. All methods are coroutines except ``blobs``."""

    @property
    def blobs(self) -> BlobStore: ...

    async def close(self) -> None: ...

    # -- domains -------------------------------------------------------------------------
    async def add_domain(self, name: str) -> Domain: ...

    async def remove_domain(self, name: str, *, force: bool = False) -> None:
        """Raises Conflict when accounts or aliases remain and ``force`` is False; with
        ``force`` removes them (and their mail) too."""
        ...

    async def list_domains(self) -> list[Domain]: ...

    async def has_domain(self, name: str) -> bool: ...

    # -- accounts ------------------------------------------------------------------------
    async def add_account(
        self, address: str, credentials: Credentials, *, quota_bytes: int | None = None
    ) -> Account:
        """Creates the account with the DEFAULT_MAILBOXES; its domain must exist."""
        ...

    async def get_account(self, address: str) -> Account | None: ...

    async def get_account_by_id(self, account_id: int) -> Account | None: ...

    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...

    async def set_credentials(self, address: str, credentials: Credentials) -> None: ...

    async def set_quota(self, address: str, quota_bytes: int | None) -> None: ...

    async def set_enabled(self, address: str, enabled: bool) -> None: ...

    async def remove_account(self, address: str) -> None: ...

    # -- aliases -------------------------------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> Alias: ...

    async def get_alias(self, source: str) -> Alias | None: ...

    async def list_aliases(self, domain: str | None = None) -> list[Alias]: ...

    async def remove_alias(self, source: str) -> None: ...

    # -- mailboxes -----------------------------------------------------------------------
    async def list_mailboxes(self, account_id: int) -> list[Mailbox]: ...

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        """``INBOX`` is matched case-insensitively (RFC 9051 §5.1)."""
        ...

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None: ...

    async def create_mailbox(
        self, account_id: int, name: str, *, special_use: str | None = None
    ) -> Mailbox: ...

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> Mailbox:
        """Renames children too; renaming INBOX moves its messages to a new mailbox
        and leaves INBOX empty (RFC 9051 §6.3.6)."""
        ...

    async def delete_mailbox(self, account_id: int, name: str) -> None: ...

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None: ...

    # -- messages ------------------------------------------------------------------------
    async def append(
        self,
        mailbox_id: int,
        blob: BlobRef,
        *,
        flags: frozenset[str] = frozenset(),
        internal_date: float | None = None,
    ) -> Appended:
        """Raises QuotaExceeded when the account would go over quota."""
        ...

    async def deliver(
        self,
        blob: BlobRef,
        targets: Sequence[DeliveryTarget],
        *,
        internal_date: float | None = None,
    ) -> list[Appended]:
        """One copy per target, all in one atomic unit of work (all or none). A target
        mailbox that does not exist falls back to INBOX. QuotaExceeded names the account
        whose quota would be exceeded; no copy is stored then."""
        ...

    async def list_messages(self, mailbox_id: int) -> list[Message]:
        """All messages of a mailbox in UID order."""
        ...

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[Message]:
        """The existing messages among ``uids``, in UID order."""
        ...

    async def snapshot_mailbox(self, mailbox_id: int) -> MailboxSnapshot:
        """The mailbox, its account's MODSEQ and every message's UID, MODSEQ and flags, read
        in one transaction (IMAP SELECT: no object per message)."""
        ...

    async def update_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        *,
        op: FlagOp,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        """Messages whose flags really change get a new MODSEQ and a change-log entry."""
        ...

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Removes the given messages (None: every message flagged \\Deleted); returns the
        UIDs removed. Blobs no message refers to any more are deleted after commit."""
        ...

    async def copy(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """Copies within one account; returns (source uid, new uid) pairs (RFC 4315 COPYUID)."""
        ...

    async def move(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """Atomic copy + expunge (RFC 6851)."""
        ...

    # -- change log and quota ------------------------------------------------------------
    async def highest_modseq(self, account_id: int) -> int: ...

    async def changes_since(
        self, account_id: int, modseq: int, *, mailbox_id: int | None = None
    ) -> list[Change]:
        """Changes with MODSEQ > ``modseq`` in MODSEQ order; for a message changed several
        times only the latest entry is kept, an expunge supersedes earlier entries."""
        ...

    async def wait_for_change(self, account_id: int, after_modseq: int, timeout: float) -> int:
        """Waits until the account's MODSEQ exceeds ``after_modseq`` or ``timeout`` passes;
        returns the current highest MODSEQ (IMAP IDLE, RFC 2177)."""
        ...

    async def quota_usage(self, account_id: int) -> QuotaUsage: ...

    # -- full-text search ----------------------------------------------------------------
    async def search_text(
        self, mailbox_id: int, query: str, *, scope: TextScope
    ) -> TextHits | None:
        """IMAP SEARCH TEXT / BODY (RFC 9051 §6.4.4) through the backend's full-text index,
        with the semantics of ``hato.store.fulltext`` (case-insensitive substring of one
        piece of ``extract``'s text). Never a false negative or a false positive for the
        messages in ``TextHits.uids``; ``TextHits.unindexed`` lists the messages the caller
        must test itself. None when the index cannot answer (e.g. a query shorter than three
        characters): the caller then tests every message."""
        ...

    # -- Sieve scripts (RFC 5804 §1.4-§1.6) ----------------------------------------------
    # Names are canonicalised with ``model.script_name`` (UsageError when invalid).
    async def list_scripts(self, account_id: int) -> list[SieveScript]:
        """The account's scripts in name order."""
        ...

    async def get_script(self, account_id: int, name: str) -> SieveScript | None: ...

    async def get_active_script(self, account_id: int) -> SieveScript | None: ...

    async def put_script(
        self,
        account_id: int,
        name: str,
        content: str,
        *,
        quota: ScriptQuota | None = None,
        activate: bool = False,
    ) -> SieveScript:
        """Creates or replaces a script (a replaced script keeps its active flag; with
        ``activate`` it becomes the only active one). ScriptQuotaExceeded when over
        ``quota`` (nothing changed then); NotFound for an unknown account."""
        ...

    async def check_script_space(
        self, account_id: int, name: str, size: int, *, quota: ScriptQuota
    ) -> None:
        """RFC 5804 §2.5 HAVESPACE: raises ScriptQuotaExceeded when ``put_script`` of
        ``size`` octets as ``name`` would exceed ``quota``."""
        ...

    async def set_active_script(self, account_id: int, name: str | None) -> None:
        """Makes ``name`` the only active script; None or "" deactivates all (RFC 5804 §2.8).
        NotFound when the script does not exist."""
        ...

    async def delete_script(self, account_id: int, name: str) -> None:
        """NotFound when missing; Conflict for the active script (RFC 5804 §2.10)."""
        ...

    async def rename_script(self, account_id: int, old: str, new: str) -> SieveScript:
        """NotFound, AlreadyExists; an active script stays active (RFC 5804 §2.11)."""
        ...

    # -- Sieve tracking lists (RFC 5230 §4.2 vacation, RFC 7352 §3 duplicate) ------------
    async def sieve_tracked(self, account_id: int, key: str) -> bool:
        """True when ``key`` is tracked and has not expired."""
        ...

    async def sieve_track(
        self, account_id: int, key: str, *, expires: float, refresh: bool = False
    ) -> bool:
        """Atomically: True when ``key`` was already tracked (its expiry then changes only
        with ``refresh``), else tracks it until ``expires`` and returns False."""
        ...

    # -- outbound queue (hato.store.queue; each call one atomic unit of work) ------------
    async def deliver_and_queue(
        self,
        blob: BlobRef,
        targets: Sequence[DeliveryTarget],
        outbound: Sequence[NewQueueEntry],
        *,
        internal_date: float | None = None,
    ) -> tuple[list[Appended], list[int]]:
        """``deliver`` plus queue entries for remote recipients in ONE unit of work: a
        received message is committed once, before the SMTP 250 (ARCHITECTURE.md)."""
        ...

    async def enqueue(self, entries: Sequence[NewQueueEntry]) -> list[int]: ...

    async def claim_queue(self, *, limit: int, lease: float) -> list[QueueEntry]:
        """Move up to ``limit`` due QUEUED/DEFERRED entries to ACTIVE; ``next_attempt``
        becomes now + ``lease``."""
        ...

    async def update_queue(self, entry_id: int, change: QueueUpdate) -> QueueEntry:
        """Apply one checked transition (Conflict when not allowed) with per-recipient
        results and an optional generated notice (DSN), atomically."""
        ...

    async def update_queue_many(
        self, changes: Sequence[tuple[int, QueueUpdate]]
    ) -> list[HatoError | None]:
        """Many ``update_queue`` changes in ONE unit of work (the queue runner's settle
        batch), each checked on its own: per change, None when applied, else the error
        (Conflict, NotFound, UsageError) that left it out; the others still apply."""
        ...

    async def get_queue_entry(self, entry_id: int) -> QueueEntry | None: ...

    async def list_queue(self, states: Sequence[QueueState] | None = None) -> list[QueueEntry]:
        ...

    async def delete_queue_entry(self, entry_id: int) -> None:
        """Conflict while ACTIVE; the body is released when nothing else needs it."""
        ...

    async def recover_queue(self) -> int:
        """At start: entries left ACTIVE by a crash go back to QUEUED; returns how many."""
        ...

    async def next_queue_due(self) -> float | None: ...

    async def purge_queue(self, *, before: float) -> int:
        """Forget final (DELIVERED/BOUNCED) entries last changed before ``before``."""
        ...


class ReportStore(Protocol):
    """DMARC/TLS reporting data (hato.store.reports); each call one atomic unit of work."""

    async def record_dmarc_evaluation(self, evaluation: DmarcEvaluation) -> None:
        """Keep one message's DMARC evaluation for aggregate reports (RFC 7489 §6.6.5)."""
        ...

    async def dmarc_evaluations(
        self, *, since: float, until: float, policy_domain: str | None = None
    ) -> list[DmarcEvaluation]:
        """Evaluations with ``since <= evaluated_at < until``, oldest first."""
        ...

    async def dmarc_policy_domains(self, *, since: float, until: float) -> list[str]:
        """The policy domains with evaluations in the period, sorted."""
        ...

    async def purge_dmarc_evaluations(self, *, before: float) -> int:
        """Forget evaluations older than ``before`` (after their report went out)."""
        ...

    async def add_feedback_report(
        self,
        *,
        kind: str,
        org_name: str,
        report_id: str,
        domain: str,
        begin: float,
        end: float,
        data: str,
    ) -> FeedbackReport | None:
        """Store a received report; None when (kind, org_name, report_id) is already stored
        (RFC 7489 §7.2.1.1: Report-ID lets duplicates be ignored)."""
        ...

    async def list_feedback_reports(
        self, *, kind: str | None = None, domain: str | None = None
    ) -> list[FeedbackReport]:
        """Received reports, newest period first."""
        ...

    async def get_feedback_report(self, report_id: int) -> FeedbackReport | None: ...


@dataclass(frozen=True, slots=True)
class CachedStsPolicy:
    """One recipient domain's MTA-STS policy as last fetched (RFC 8461 §5.1 cache entry):
    the TXT record ``id`` it was fetched under, the policy text (§3.2), and when it was
    fetched and expires (fetch time + max_age, §3.2)."""

    domain: str
    record_id: str
    policy: str
    fetched: float
    expires: float


@runtime_checkable
class StsPolicyStore(Protocol):
    """The persistent MTA-STS policy cache (so a restart keeps enforcing, RFC 8461 §5.1);
    each call one atomic unit of work."""

    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None: ...

    async def put_sts_policy(self, entry: CachedStsPolicy) -> None:
        """Insert or replace the entry of ``entry.domain``."""
        ...

    async def delete_sts_policy(self, domain: str) -> None: ...

    async def purge_sts_policies(self, *, before: float) -> int:
        """Forget entries that expired before ``before``; returns how many."""
        ...

    async def due_sts_policies(
        self, *, fetched_before: float, now: float, limit: int
    ) -> list[CachedStsPolicy]:
        """Up to ``limit`` entries fetched before ``fetched_before`` and not expired at
        ``now``, the oldest fetch first (for the proactive refresh, RFC 8461 §3.3)."""
        ...
