"""Messages: append, deliver, flags, expunge, copy and move as units of work.

Each function runs inside one unit (one savepoint of a group-committed transaction), so a
multi-row operation is all or nothing. UIDs come from the mailbox's UIDNEXT, strictly
ascending (RFC 9051 §2.3.1.1); every changed message gets the unit's MODSEQ (RFC 7162 §3.1)
and a change-log row; mailbox counters (messages, unseen, bytes, HIGHESTMODSEQ) and the
account's quota usage move in the same unit. System flags are a bit set, keywords a sorted
space-separated list (keywords are IMAP atoms: no spaces).

A stored message gets its RFC 8474 THREADID in the same unit (``threadids.py``); COPY and
MOVE keep it with the EMAILID.

Left out: per-message annotations, \\Recent (deprecated by RFC 9051 §2.3.2; silently ignored
on input).
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hato.core.errors import AlreadyExists, Conflict, NotFound, UsageError
from hato.store.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    INBOX,
    SEEN,
    Appended,
    BlobRef,
    ChangeKind,
    DeliveryTarget,
    FlagOp,
    FlagUpdate,
    Mailbox,
    MailboxSnapshot,
    Message,
    canonical_flag,
)
from hato.store.sqlite import changes, mailboxes, refs, textindex, threadids
from hato.store.sqlite.db import Unit

BlobExists = Callable[[str], bool]

_BITS = {SEEN: 1, ANSWERED: 2, FLAGGED: 4, DELETED: 8, DRAFT: 16}
_SEEN = _BITS[SEEN]
_DELETED = _BITS[DELETED]
_COLUMNS = (
    "mailbox_id, uid, blob_id, size, internal_date, saved_date, system_flags, keywords, modseq, "
    "email_id, thread_id"
)
_CHUNK = 500  # UIDs per IN (...) list, well under SQLite's variable limit


# -- flags -------------------------------------------------------------------------------------
def encode_flags(flags: Iterable[str]) -> tuple[int, frozenset[str]]:
    bits = 0
    keywords: set[str] = set()
    for raw in flags:
        flag = canonical_flag(raw)  # RFC 9051 §2.3.2: system flags are case-insensitive
        if flag in _BITS:
            bits |= _BITS[flag]
        elif flag.lower() == "\\recent":
            continue  # RFC 9051 §2.3.2: deprecated; never stored
        elif (
            not flag
            or flag.startswith("\\")  # RFC 9051 §2.3.2: keywords do not begin with "\"
            or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in flag)
        ):
            raise UsageError(f"invalid flag {flag!r}")
        else:
            keywords.add(flag)
    return bits, frozenset(keywords)


def decode_flags(bits: int, keywords: str) -> frozenset[str]:
    names = [name for name, bit in _BITS.items() if bits & bit]
    return frozenset(names + (keywords.split(" ") if keywords else []))


def _keyword_text(keywords: frozenset[str]) -> str:
    return " ".join(sorted(keywords))


# Most messages share a few flag sets: decode each once (and share the frozenset).
_decode_shared = functools.lru_cache(maxsize=1024)(decode_flags)


def message_from_row(row: Sequence[Any]) -> Message:
    return Message(
        mailbox_id=int(row[0]),
        uid=int(row[1]),
        blob_id=row[2],
        size=int(row[3]),
        internal_date=float(row[4]),
        saved_date=float(row[5]),
        flags=_decode_shared(int(row[6]), row[7]),
        modseq=int(row[8]),
        email_id=int(row[9]),
        thread_id=int(row[10]),
    )


# -- reading -----------------------------------------------------------------------------------
def _rows(unit: Unit, mailbox_id: int, uids: Sequence[int]) -> list[Any]:
    wanted = sorted({int(u) for u in uids if int(u) > 0})
    if wanted and wanted[-1] - wanted[0] < 2 * len(wanted):
        # Dense (a FETCH of a range): one range scan of the primary key, filtered here.
        keep = set(wanted)
        return [r for r in unit.conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? "
            "ORDER BY uid", (mailbox_id, wanted[0], wanted[-1])) if r[1] in keep]
    rows: list[Any] = []
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows.extend(unit.conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE mailbox_id = ? AND uid IN ({marks}) "
            "ORDER BY uid",
            (mailbox_id, *chunk),
        ))
    return rows


def list_messages(unit: Unit, mailbox_id: int) -> list[Message]:
    mailboxes.require(unit, mailbox_id)
    rows = unit.conn.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
    )
    return [message_from_row(r) for r in rows]


def get_messages(unit: Unit, mailbox_id: int, uids: Sequence[int]) -> list[Message]:
    mailboxes.require(unit, mailbox_id)
    return [message_from_row(r) for r in _rows(unit, mailbox_id, uids)]


def snapshot_mailbox(unit: Unit, mailbox_id: int) -> MailboxSnapshot:
    """Columns of every message (one scan of the mailbox's rows, no object per message);
    each distinct (system flags, keywords) pair is decoded once. The columns are split and
    mapped by C-level iteration (``zip``, ``map``): no Python code runs per row."""
    mailbox = mailboxes.require(unit, mailbox_id)
    account_modseq = changes.highest_modseq(unit, mailbox.account_id)
    rows = unit.conn.execute(
        "SELECT uid, modseq, system_flags, keywords FROM messages WHERE mailbox_id = ? "
        "ORDER BY uid", (mailbox_id,)
    ).fetchall()
    if not rows:
        return MailboxSnapshot(mailbox=mailbox, account_modseq=account_modseq,
                               uids=array("I"), modseqs=array("Q"), flag_ids=array("I"),
                               flag_sets=())
    uids, modseqs, bits, keywords = zip(*rows, strict=True)
    pairs = list(zip(bits, keywords, strict=True))
    distinct = list(dict.fromkeys(pairs))  # first-seen order
    index_of = {pair: i for i, pair in enumerate(distinct)}
    return MailboxSnapshot(
        mailbox=mailbox,
        account_modseq=account_modseq,
        uids=array("I", uids),
        modseqs=array("Q", modseqs),
        flag_ids=array("I", map(index_of.__getitem__, pairs)),
        flag_sets=tuple(decode_flags(int(b), k) for b, k in distinct),
    )


# -- EMAILIDs ----------------------------------------------------------------------------------
# RFC 8474 §5.1: an EMAILID is never reused for a different message, even after a crash or
# after the message with the highest one was expunged. ``meta('email_id')`` holds the highest
# id that may have been handed out; the database thread reserves ids from it a block at a time
# (one UPSERT per EMAIL_ID_BLOCK messages instead of one per message) and hands them out of
# memory. A restart starts from meta (up to a block of ids is skipped: gaps are allowed).
EMAIL_ID_BLOCK = 1024
_EMAIL_IDS = "email_ids"  # Unit.shared: the current block (_EmailIdBlock)
_RESERVED = "email_id_block"  # Unit.memo: the block this unit reserved


class _EmailIdBlock:
    """Ids ``next`` .. ``last`` reserved by raising meta('email_id') to ``last``. Trusted
    without a look at meta once the transaction that reserved it has committed."""

    __slots__ = ("committed", "last", "next")

    def __init__(self, first: int, last: int) -> None:
        self.next = first
        self.last = last
        self.committed = False


def next_email_id(unit: Unit) -> int:
    """A fresh EMAILID (RFC 8474 §5.1), for every unit that stores a new message."""
    block: _EmailIdBlock | None = unit.shared.get(_EMAIL_IDS)
    if block is None or block.next > block.last or not _usable(unit, block):
        block = _reserve(unit)
    email_id = block.next
    block.next += 1  # handed out even if this unit rolls back: a gap, never a reuse
    return email_id


def _usable(unit: Unit, block: _EmailIdBlock) -> bool:
    """Whether the reservation of ``block`` holds in this unit's transaction. Committed, or
    reserved by this very unit: yes. Otherwise it was reserved by an earlier unit of this
    transaction (still there if that unit was not rolled back to its savepoint) or of one
    that was rolled back (on a COMMIT failure, say): meta tells which. meta only moves here,
    on this one writer connection: a rolled-back reservation leaves it below ``last``."""
    if block.committed or unit.memo.get(_RESERVED) is block:
        return True
    row = unit.conn.execute("SELECT value FROM meta WHERE key = 'email_id'").fetchone()
    return row is not None and int(row[0]) == block.last


def _reserve(unit: Unit) -> _EmailIdBlock:
    size = EMAIL_ID_BLOCK
    (last,) = unit.conn.execute(
        "INSERT INTO meta (key, value) VALUES ('email_id', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = value + ? RETURNING value",
        (size, size),
    ).fetchone()
    block = _EmailIdBlock(int(last) - size + 1, int(last))
    unit.shared[_EMAIL_IDS] = unit.memo[_RESERVED] = block
    unit.on_commit(functools.partial(_committed, block))
    return block


def _committed(block: _EmailIdBlock) -> None:
    """On the database thread after the COMMIT of the unit that reserved ``block``."""
    block.committed = True


# -- writing -----------------------------------------------------------------------------------
def _insert(
    unit: Unit,
    mailbox: Mailbox,
    rows: Sequence[tuple[str, int, float, int, str, int, int]],
    *,
    modseq: int,
) -> list[int]:
    """Store messages (blob_id, size, internal_date, bits, keywords, email_id, thread_id) in
    ``mailbox``
    with fresh ascending UIDs; returns the UIDs."""
    conn = unit.conn
    # The UIDs and the mailbox counters in one UPDATE of the mailbox row (its new values do
    # not depend on the messages' rows, which come next in the same unit).
    unseen = sum(1 for r in rows if not r[3] & _SEEN)
    (uidnext,) = conn.execute(
        "UPDATE mailboxes SET uidnext = uidnext + ?, message_count = message_count + ?, "
        "unseen_count = unseen_count + ?, size_bytes = size_bytes + ?, highest_modseq = ? "
        "WHERE id = ? RETURNING uidnext",
        (len(rows), len(rows), unseen, sum(r[1] for r in rows), modseq, mailbox.id),
    ).fetchone()
    first = int(uidnext) - len(rows)
    uids = list(range(first, first + len(rows)))
    conn.executemany(
        f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (mailbox.id, uid, blob_id, size, date, unit.now, bits, keywords, modseq, email_id,
             thread_id)
            for uid, (blob_id, size, date, bits, keywords, email_id, thread_id)
            in zip(uids, rows, strict=True)
        ],
    )
    changes.log_messages(
        unit, mailbox.account_id, mailbox.id, uids, modseq=modseq, kind=ChangeKind.MESSAGE_ADDED
    )
    return uids


def _check_blob(blob: BlobRef, blob_exists: BlobExists) -> None:
    if blob.size < 0 or not blob_exists(blob.id):
        raise NotFound(f"blob {blob.id} does not exist")


def append(
    unit: Unit,
    mailbox_id: int,
    blob: BlobRef,
    *,
    flags: frozenset[str],
    internal_date: float | None,
    blob_exists: BlobExists,
) -> Appended:
    refs.used(unit, blob.id)
    mailbox = mailboxes.require(unit, mailbox_id)
    bits, keywords = encode_flags(flags)
    _check_blob(blob, blob_exists)
    modseq = changes.charge_and_bump(unit, mailbox.account_id, size=blob.size, count=1)
    date = unit.now if internal_date is None else internal_date
    # RFC 8474 §5.2: the thread id is assigned now and never changes.
    email_id = next_email_id(unit)
    thread_id = threadids.assign(
        unit.conn, mailbox.account_id, threadids.keys_of_blob(unit, blob.id), email_id=email_id
    )
    row = (blob.id, blob.size, date, bits, _keyword_text(keywords), email_id, thread_id)
    (uid,) = _insert(unit, mailbox, [row], modseq=modseq)
    textindex.stored(unit, blob.id)  # the full-text document, in the same unit
    return Appended(mailbox.account_id, mailbox.id, uid, modseq, mailbox.uidvalidity)


def deliver(
    unit: Unit,
    blob: BlobRef,
    targets: Sequence[DeliveryTarget],
    *,
    internal_date: float | None,
    blob_exists: BlobExists,
) -> list[Appended]:
    refs.used(unit, blob.id)
    _check_blob(blob, blob_exists)
    email_id = next_email_id(unit)  # RFC 8474 §5.1: one EMAILID for every copy
    date = unit.now if internal_date is None else internal_date
    appended: list[Appended] = []
    keys: threadids.ThreadKeys | None = None
    thread_ids: dict[int, int] = {}  # RFC 8474 §5.2: one THREADID per EMAILID in an account
    for target in targets:
        bits, keywords = encode_flags(target.flags)
        mailbox = mailboxes.get_by_name(unit, target.account_id, target.mailbox)
        if mailbox is None:  # a missing target mailbox falls back to INBOX
            mailbox = mailboxes.get_by_name(unit, target.account_id, INBOX)
            if mailbox is None:
                raise NotFound(f"account {target.account_id} does not exist")
        modseq = changes.charge_and_bump(unit, mailbox.account_id, size=blob.size, count=1)
        thread_id = thread_ids.get(mailbox.account_id)
        if thread_id is None:
            if keys is None:
                keys = threadids.keys_of_blob(unit, blob.id)
            thread_id = thread_ids[mailbox.account_id] = threadids.assign(
                unit.conn, mailbox.account_id, keys, email_id=email_id
            )
        row = (blob.id, blob.size, date, bits, _keyword_text(keywords), email_id, thread_id)
        (uid,) = _insert(unit, mailbox, [row], modseq=modseq)
        appended.append(Appended(mailbox.account_id, mailbox.id, uid, modseq, mailbox.uidvalidity))
    if appended:
        textindex.stored(unit, blob.id)  # the full-text document, in the same unit
    return appended


def update_flags(
    unit: Unit,
    mailbox_id: int,
    uids: Sequence[int],
    flags: frozenset[str],
    *,
    op: FlagOp,
    unchanged_since: int | None,
) -> FlagUpdate:
    mailbox = mailboxes.require(unit, mailbox_id)
    bits, keywords = encode_flags(flags)
    updated: list[Message] = []
    modified: list[int] = []
    unseen_delta = 0
    modseq = 0
    for row in _rows(unit, mailbox_id, uids):
        message = message_from_row(row)
        if unchanged_since is not None and message.modseq > unchanged_since:
            # RFC 7162 §3.1.3: fails the UNCHANGEDSINCE test; not modified, reported.
            modified.append(message.uid)
            continue
        old_bits, old_keywords = int(row[6]), frozenset(row[7].split(" ") if row[7] else ())
        if op is FlagOp.ADD:
            new_bits, new_keywords = old_bits | bits, old_keywords | keywords
        elif op is FlagOp.REMOVE:
            new_bits, new_keywords = old_bits & ~bits, old_keywords - keywords
        else:
            new_bits, new_keywords = bits, keywords
        if new_bits == old_bits and new_keywords == old_keywords:
            continue  # RFC 7162 §3.1: setting a flag already set SHOULD NOT change MODSEQ
        modseq = changes.bump(unit, mailbox.account_id)
        unit.conn.execute(
            "UPDATE messages SET system_flags = ?, keywords = ?, modseq = ? "
            "WHERE mailbox_id = ? AND uid = ?",
            (new_bits, _keyword_text(new_keywords), modseq, mailbox_id, message.uid),
        )
        unseen_delta += bool(old_bits & _SEEN) - bool(new_bits & _SEEN)
        updated.append(
            message_from_row(
                (*row[:6], new_bits, _keyword_text(new_keywords), modseq, *row[9:])
            )
        )
    if updated:
        unit.conn.execute(
            "UPDATE mailboxes SET unseen_count = unseen_count + ?, highest_modseq = ? WHERE id = ?",
            (unseen_delta, modseq, mailbox_id),
        )
        changes.log_messages(
            unit,
            mailbox.account_id,
            mailbox_id,
            [m.uid for m in updated],
            modseq=modseq,
            kind=ChangeKind.FLAGS_CHANGED,
        )
    return FlagUpdate(updated=tuple(updated), modified=tuple(modified))


def _remove(unit: Unit, mailbox: Mailbox, rows: Sequence[Any], *, modseq: int) -> None:
    """Delete message rows of one mailbox and fix its counters (not the account usage)."""
    uids = [int(r[1]) for r in rows]
    unit.conn.executemany(
        "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(mailbox.id, u) for u in uids]
    )
    unit.conn.execute(
        "UPDATE mailboxes SET message_count = message_count - ?, unseen_count = unseen_count - ?, "
        "size_bytes = size_bytes - ?, highest_modseq = ? WHERE id = ?",
        (
            len(rows),
            sum(1 for r in rows if not int(r[6]) & _SEEN),
            sum(int(r[3]) for r in rows),
            modseq,  # RFC 7162 §3.2.10 (QRESYNC): an expunge raises HIGHESTMODSEQ too
            mailbox.id,
        ),
    )
    changes.log_messages(
        unit, mailbox.account_id, mailbox.id, uids, modseq=modseq,
        kind=ChangeKind.MESSAGE_EXPUNGED,
    )


def expunge(unit: Unit, mailbox_id: int, uids: Sequence[int] | None) -> list[int]:
    mailbox = mailboxes.require(unit, mailbox_id)
    if uids is None:
        rows = unit.conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE mailbox_id = ? AND system_flags & ? "
            "ORDER BY uid",
            (mailbox_id, _DELETED),
        ).fetchall()
    else:
        rows = _rows(unit, mailbox_id, uids)
    if not rows:
        return []
    modseq = changes.bump(unit, mailbox.account_id)
    _remove(unit, mailbox, rows, modseq=modseq)
    changes.charge(
        unit, mailbox.account_id, size=-sum(int(r[3]) for r in rows), count=-len(rows)
    )
    refs.dropped(unit, [r[2] for r in rows])
    return [int(r[1]) for r in rows]


def _transfer(
    unit: Unit, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int, *, move: bool
) -> list[tuple[int, int]]:
    source = mailboxes.require(unit, mailbox_id)
    target = mailboxes.require(unit, target_mailbox_id)
    if source.account_id != target.account_id:
        raise Conflict("messages can only be copied or moved within one account")
    rows = _rows(unit, mailbox_id, uids)
    if not rows:
        return []
    if not move:  # a move leaves the account's usage unchanged
        changes.charge(
            unit, source.account_id, size=sum(int(r[3]) for r in rows), count=len(rows)
        )
    modseq = changes.bump(unit, source.account_id)
    new_uids = _insert(
        unit,
        target,
        [(r[2], int(r[3]), float(r[4]), int(r[6]), r[7], int(r[9]), int(r[10])) for r in rows],
        modseq=modseq,
    )
    if move:
        _remove(unit, source, rows, modseq=modseq)
    return [(int(r[1]), new) for r, new in zip(rows, new_uids, strict=True)]


def copy(
    unit: Unit, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
) -> list[tuple[int, int]]:
    """RFC 4315 COPYUID pairs; flags, internal date, EMAILID and THREADID are kept (RFC 8474
    §5.1, §5.2)."""
    return _transfer(unit, mailbox_id, uids, target_mailbox_id, move=False)


def move(
    unit: Unit, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
) -> list[tuple[int, int]]:
    """RFC 6851 §3.3: copy and expunge as one atomic operation."""
    return _transfer(unit, mailbox_id, uids, target_mailbox_id, move=True)


def rename_inbox(unit: Unit, account_id: int, new: str) -> Mailbox:
    """RFC 9051 §6.3.6: renaming INBOX moves all its messages to a new mailbox named ``new``,
    leaving INBOX (and INBOX's children) in place."""
    inbox = mailboxes.get_by_name(unit, account_id, INBOX)
    if inbox is None:
        raise NotFound(f"account {account_id} does not exist")
    target = mailboxes.canonical_name(new)
    if mailboxes.get_by_name(unit, account_id, target) is not None:
        raise AlreadyExists(f"mailbox {target!r} already exists")
    mailboxes.create_parents(unit, account_id, target)
    new_id = mailboxes.insert_mailbox(unit, account_id, target, special_use=None, subscribed=False)
    uids = [int(r[0]) for r in unit.conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (inbox.id,)
    )]
    move(unit, inbox.id, uids, new_id)
    return mailboxes.require(unit, new_id)
