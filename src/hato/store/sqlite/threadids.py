"""Thread ids of the embedded store: RFC 8474 §5.2 THREADID, assigned when a message is stored.

RFC 8474 §5.2 leaves the threading algorithm to the server; this one links by reference, per
account (an account is one mailstore: RFC 8474 object ids are compared within it):

* A message's *keys* are its own Message-ID and the ids it refers to: every id of its
  References field, then of its In-Reply-To field (RFC 5322 §3.6.4), normalised as RFC 5256 §3
  says (``hato.codec.imap.threads.msg_ids``: quoting of the local part does not matter,
  comparison is otherwise case-sensitive). At most ``MAX_KEYS`` of them: the own id, the first
  reference (the thread's root) and the last ones (the closest ancestors).
* Table ``thread_links`` maps (account, msg-id) to a thread id. A new message joins the thread
  of its own Message-ID if that is known (a reply to it arrived first, or a duplicate), else of
  the first of its references that is known; with none known it starts a new thread. Then
  every key not yet linked is linked to that thread. Links are never changed, so a thread id
  once assigned stays (RFC 8474 §5.2 "MUST NOT change the THREADID of a message once
  reported"), and two threads that a later message connects stay two.
* Every copy of one message in the account has the same thread id (RFC 8474 §5.2 "the same
  THREADID for all messages with the same EMAILID"): a delivery assigns it once per account,
  COPY and MOVE keep it (``messages.py``). Related messages in different mailboxes share it
  (§5.2 SHOULD).
* A message that joins no thread starts one whose id is the message's EMAILID: EMAILIDs come
  from a store-wide counter and are never reused, so no two threads of an account share an id
  (all copies of a message get their thread id from the first, never a new one), and no
  counter is written for it. The wire form is ``T<n>``, distinct from the ``M<n>`` of the
  EMAILID (§5.2 MUST NOT use one objectid value for both).

The header is taken from the body a writer has just handed over (``pending_body``: no I/O),
else read from the blob (its header block only, at most ``MAX_HEADER`` octets) on the
database thread. Messages stored before this schema step have ``thread_id`` 0 until
``backfill`` (run at start, once the blobs are recovered) gives them one, in EMAILID order.

Left out: linking by base subject (RFC 5256 §2.1; not required by RFC 8474), merging threads.

Security: the header is attacker-controlled: bounded in size, keys bounded in number and
length; ids are bound as SQL parameters.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from hato.codec.imap.threads import normalize_msg_id
from hato.codec.mime.headers import header_bytes_to_str
from hato.core.errors import NotFound
from hato.core.log import event
from hato.store.sqlite.db import Unit

SOURCE_KEY = "thread_headers"  # unit.memo key: the blob store (``HeaderSource``), set by the store
MAX_HEADER = 256 * 1024  # octets of a message's header read for its keys
MAX_KEYS = 64  # ids per message looked up and linked
MAX_ID_LENGTH = 500  # longer ids (RFC 5322 lines are at most 998 octets) are not linked
BACKFILL_BATCH = 500  # EMAILIDs (with all their copies) threaded per transaction by ``backfill``
_CHUNK = 500  # ids per IN (...) list

# A field of interest at the start of a line (a continuation line starts with WSP, so it never
# matches) with its continuation lines; RFC 5322 §2.2: field names are case-insensitive, WSP
# before ":" is obsolete syntax (§4.5) that is still read.
_FIELD = re.compile(
    rb"(?im)^(message-id|references|in-reply-to)[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)"
)
_ANGLED = re.compile(rb"<([^<>]*)>")  # RFC 5322 §3.6.4 msg-id, as RFC 5256 §3 reads it
_NEEDS_NORMALISING = re.compile(r'[ \t\r\n"]')
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class HeaderSource(Protocol):
    """Where message headers come from (``blobs.FileBlobStore``)."""

    def pending_body(self, blob_id: str) -> bytes | None: ...

    def open(self, blob_id: str) -> BinaryIO: ...


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """What threading needs of one message: its own Message-ID and the ids it refers to."""

    message_id: str | None = None
    references: tuple[str, ...] = ()  # References ids (oldest first), then In-Reply-To ids

    def lookup_ids(self) -> list[str]:
        """The ids to look up and link, own id first, at most ``MAX_KEYS``."""
        refs = [r for r in self.references if r != self.message_id]
        if len(refs) > MAX_KEYS - 1:
            refs = refs[:1] + refs[len(refs) - (MAX_KEYS - 2):]  # the root and the closest
        own = [self.message_id] if self.message_id is not None else []
        return own + refs


def _ids(raw: bytes) -> list[str]:
    """The valid ids of a field body, as ``hato.codec.imap.threads.msg_ids`` normalises them
    (folding inside an id is whitespace it removes)."""
    ids: list[str] = []
    for angled in _ANGLED.findall(raw):
        text = header_bytes_to_str(angled)
        if _NEEDS_NORMALISING.search(text):
            normal = normalize_msg_id(text)
        else:  # the common case, without the normaliser's two substitutions
            left, at, right = text.rpartition("@")
            normal = text if at and left and right else None
        if normal is not None and len(normal) <= MAX_ID_LENGTH:
            ids.append(normal)
    return ids


def thread_keys(message: bytes) -> ThreadKeys:
    """The keys of a message from its header block: ``message`` is the message or its
    beginning (sans-IO; the first field of each name counts, RFC 5322 §3.6 allows each at
    most once)."""
    return _keys_of_header(_header_of(message))


def _keys_of_header(header: bytes) -> ThreadKeys:
    """``thread_keys`` of a header block already cut from its message (``read_header``)."""
    found: dict[bytes, list[str]] = {}
    for match in _FIELD.finditer(header):
        name = match.group(1).lower()
        if name not in found:
            found[name] = _ids(match.group(2))
    own = found.get(b"message-id", [])
    # Each id once, in order (a dict: linear even for a References field of thousands).
    refs = dict.fromkeys(found.get(b"references", []) + found.get(b"in-reply-to", []))
    return ThreadKeys(own[0] if own else None, tuple(refs))


def _header_of(data: bytes) -> bytes:
    if data.startswith((b"\n", b"\r\n")):
        return b""
    match = _BLANK_LINE.search(data, 0, MAX_HEADER)
    return data[: match.start()] if match is not None else data[:MAX_HEADER]


def read_header(source: HeaderSource, blob_id: str) -> bytes:
    """The header block of a stored message (blocking); empty when the blob is unreadable."""
    body = source.pending_body(blob_id)
    if body is not None:
        return _header_of(body)
    data = b""
    try:
        with source.open(blob_id) as handle:
            while len(data) < MAX_HEADER:
                chunk = handle.read(16384)
                if not chunk:
                    break
                data += chunk
                if _BLANK_LINE.search(data, max(0, len(data) - len(chunk) - 3)):
                    break
    except (NotFound, OSError) as exc:
        event("store.threadid.unreadable", level=logging.WARNING, blob=blob_id,
              error=repr(exc))
        return b""
    return _header_of(data)


def keys_of_blob(unit: Unit, blob_id: str) -> ThreadKeys:
    """The keys of a message being stored in ``unit`` (no header source: no keys)."""
    source: HeaderSource | None = unit.memo.get(SOURCE_KEY)
    if source is None:
        return ThreadKeys()
    return _keys_of_header(read_header(source, blob_id))


# -- schema ------------------------------------------------------------------------------------
def migrate_thread_ids(conn: sqlite3.Connection) -> None:
    """Schema step: the ``thread_id`` column (0: not yet assigned, see ``backfill``) and the
    links table."""
    conn.execute("ALTER TABLE messages ADD COLUMN thread_id INTEGER NOT NULL DEFAULT 0")
    # Stays empty once ``backfill`` has run: finds the messages still without a thread id.
    conn.execute("CREATE INDEX messages_unthreaded ON messages(email_id) WHERE thread_id = 0")
    conn.execute(
        "CREATE TABLE thread_links ("
        " account_id INTEGER NOT NULL,"
        " msg_id TEXT NOT NULL,"
        " thread_id INTEGER NOT NULL,"
        " PRIMARY KEY (account_id, msg_id)"
        ") WITHOUT ROWID"
    )


# -- assignment --------------------------------------------------------------------------------
def _known(conn: sqlite3.Connection, account_id: int, keys: Sequence[str]) -> dict[str, int]:
    known: dict[str, int] = {}
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        known.update(
            (str(r[0]), int(r[1]))
            for r in conn.execute(
                f"SELECT msg_id, thread_id FROM thread_links WHERE account_id = ? "
                f"AND msg_id IN ({marks})",
                (account_id, *chunk),
            )
        )
    return known


def assign(conn: sqlite3.Connection, account_id: int, keys: ThreadKeys, *, email_id: int) -> int:
    """The thread id of a new message of ``account_id`` whose EMAILID is ``email_id``; links
    its keys (module docstring)."""
    ids = keys.lookup_ids()
    if len(ids) == 1:
        # One key (a Message-ID, no references; most new mail): link it to a new thread in
        # one statement; nothing is inserted when it is known, and its thread is then read.
        inserted = conn.execute(
            "INSERT INTO thread_links (account_id, msg_id, thread_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING thread_id",
            (account_id, ids[0], email_id),
        ).fetchone()
        if inserted is not None:
            return email_id
    known = _known(conn, account_id, ids) if ids else {}
    thread_id = next((known[i] for i in ids if i in known), None)
    if thread_id is None:
        thread_id = email_id  # a new thread, named after the message that starts it
    missing = [(account_id, i, thread_id) for i in ids if i not in known]
    if missing:
        conn.executemany(
            "INSERT OR IGNORE INTO thread_links (account_id, msg_id, thread_id) VALUES (?, ?, ?)",
            missing,
        )
    return thread_id


def forget_account(conn: sqlite3.Connection, account_id: int) -> None:
    """Drop an account's links (with the account: its id may be given to a new one)."""
    conn.execute("DELETE FROM thread_links WHERE account_id = ?", (account_id,))


def backfill(conn: sqlite3.Connection, source: HeaderSource) -> int:
    """Give every message stored before the thread-id schema step a thread id, in EMAILID
    order (about arrival order), every copy of one message in an account the same. Runs in
    transactions of ``BACKFILL_BATCH`` EMAILIDs, all copies of one in the same transaction
    (an interrupted run goes on at the next start); returns how many messages it threaded."""
    done = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            email_ids = [int(r[0]) for r in conn.execute(
                "SELECT DISTINCT email_id FROM messages WHERE thread_id = 0 "
                "ORDER BY email_id LIMIT ?", (BACKFILL_BATCH,))]
            assigned: dict[tuple[int, int], int] = {}
            for email_id in email_ids:
                rows = conn.execute(
                    "SELECT b.account_id, m.mailbox_id, m.uid, m.blob_id "
                    "FROM messages AS m LEFT JOIN mailboxes AS b ON b.id = m.mailbox_id "
                    "WHERE m.email_id = ? AND m.thread_id = 0", (email_id,)
                ).fetchall()
                for account_id, mailbox_id, uid, blob_id in rows:
                    key = (email_id, -1 if account_id is None else int(account_id))
                    thread_id = assigned.get(key)
                    if thread_id is None and account_id is None:  # no mailbox: cannot be
                        thread_id = assigned[key] = email_id  # linked, but not left 0
                    elif thread_id is None:
                        keys = thread_keys(read_header(source, str(blob_id)))
                        thread_id = assigned[key] = assign(
                            conn, int(account_id), keys, email_id=email_id
                        )
                    conn.execute(
                        "UPDATE messages SET thread_id = ? WHERE mailbox_id = ? AND uid = ?",
                        (thread_id, mailbox_id, uid),
                    )
                    done += 1
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if len(email_ids) < BACKFILL_BATCH:
            return done
