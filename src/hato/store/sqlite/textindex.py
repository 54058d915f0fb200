"""The full-text index of the embedded store: SQLite FTS5 with the trigram tokenizer.

Answers IMAP SEARCH TEXT and BODY (RFC 9051 §6.4.4: case-insensitive substring matches) with
the semantics of ``hato.store.fulltext``. One index document per *blob* (shared by every copy
of a message): table ``fulltext_docs`` (blob id, state) and the FTS5 table ``fulltext`` whose
rowid is the document id, with two columns: ``header`` (the message's own header values) and
``body`` (everything else), each the case-folded pieces joined by ``SEPARATOR``.

Why it has neither false negatives nor false positives: the trigram tokenizer
(``case_sensitive 1``: the text is already case-folded by ``str.casefold``, the query too)
makes every run of three characters a token, and an FTS5 phrase of the query's trigrams at
consecutive positions matches exactly where the query is a substring. A query shorter than
three characters has no trigram: ``search`` returns None and the caller scans. A needle that
contains ``SEPARATOR`` (or a character the index replaced by it: NUL, lone surrogates) could
span two pieces: None too.

Kept current inside the units of work: ``store_doc`` runs in the unit that stores a message
(append, deliver) and ``forget`` in the unit that drops a blob's last message (``refs.py``),
so the documents and the messages commit together. The *text* comes behind delivery: a new
document is *pending*, and the store's background indexer (``Indexer``: ``pending`` +
``fill``) extracts its text in a worker thread once deliveries pause (at most ``MAX_LAG``
later) and stores it in batches; a search first indexes the pending documents of its mailbox
(``Indexer.catch_up``), so its answer comes from the index. Receiving mail thus pays for no
text extraction and no FTS5 insert (an SMTP "250" does not wait for them), and the index
work of a burst runs in the lull after it. The schema migration marks every existing blob
pending, so an upgraded store is indexed in the background. Messages larger than
``MAX_INDEXED_SIZE`` are not indexed (*skipped*). Searches report skipped messages (and
any stored after the catch-up, still pending) as ``TextHits.unindexed``: the caller tests
them itself.

Cost: the trigram postings take about 2.4 times the extracted text, and FTS5 keeps a copy of
the text (needed to delete a row on SQLite 3.40; ``contentless_delete`` needs 3.43): on the
benchmark's 102,000 messages (600 MB of mail, 530 MB of text) the index is 1.9 GB. The index
spans the whole store; ``search`` maps hits to one mailbox from whichever side is smaller.

Left out: ranking (``columnsize=0``), highlighting, word-level search (RFC 6203 FUZZY).

Security: the index holds the text of users' mail: it lives in ``hato.db`` (0600, see
``db.py``) and a message's row goes in the unit that removes its last copy. Message files are
read only at paths derived from checked blob ids (``blobs.py``); the query is bound as a
parameter and quoted as one FTS5 phrase (no query-syntax injection).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from hato.core.errors import NotFound
from hato.core.log import event
from hato.store.fulltext import SearchableText, TextHits, TextScope, extract, fold
from hato.store.sqlite.db import Unit

INDEXED = 0
PENDING = 1
SKIPPED = 2
MAX_INDEXED_SIZE = 16 * 1024 * 1024  # octets; larger messages are scanned at search time
MIN_QUERY = 3  # characters: the trigram tokenizer cannot look up anything shorter
SEPARATOR = "\x1f"  # between pieces: a needle containing it is answered by a scan
_UNSAFE = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates: not valid SQLite text
_SURROGATE = re.compile("[\ud800-\udfff]")
PENDING_KEY = "fulltext_pending"  # unit.memo: the unit stored a pending document
_CHUNK = 500  # document ids per IN (...) list, well under SQLite's variable limit

_SCHEMA = (
    """CREATE TABLE fulltext_docs (
        id INTEGER PRIMARY KEY,
        blob_id TEXT NOT NULL UNIQUE,
        state INTEGER NOT NULL
    )""",
    "CREATE INDEX fulltext_docs_unindexed ON fulltext_docs(state) WHERE state != 0",
    "CREATE VIRTUAL TABLE fulltext USING fts5("
    "header, body, tokenize = 'trigram case_sensitive 1', columnsize = 0)",
)


def migrate(conn: sqlite3.Connection) -> None:
    """Schema migration: create the index and mark every stored blob pending (the store's
    background indexer then reads them; searches scan them until it has)."""
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO fulltext_docs (blob_id, state) "
        "SELECT DISTINCT blob_id, ? FROM messages",
        (PENDING,),
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A blob's text made ready for the index; ``text`` None: not indexable (too large or
    unreadable), so searches scan it. ``columns``: the ``header`` and ``body`` values as
    stored, computed with the text (off the database thread)."""

    text: SearchableText | None
    columns: tuple[str, str] = ("", "")


def prepare_blob(open_blob: Callable[[str], BinaryIO], blob_id: str) -> Prepared:
    """Read and extract a stored blob (blocking); a blob gone or unreadable is not indexable."""
    try:
        with open_blob(blob_id) as f:  # a file, or a body still in memory (blobs.py)
            if f.seek(0, os.SEEK_END) > MAX_INDEXED_SIZE:
                return Prepared(None)
            f.seek(0)
            data = f.read()
    except (NotFound, OSError):
        return Prepared(None)
    return _extracted(data)


def _extracted(data: bytes) -> Prepared:
    try:
        text = extract(data)
    except (RecursionError, MemoryError, ValueError) as exc:  # the codec promises none
        event("store.fulltext.unextractable", level=logging.WARNING, error=repr(exc))
        return Prepared(None)
    return Prepared(text, (_column(text.header), _column(text.body)))


def _column(pieces: Sequence[str]) -> str:
    """The pieces joined by ``SEPARATOR``, with what SQLite text cannot hold replaced by it
    (NUL, lone surrogates). Fast paths: ``in``, ``isascii`` and a UTF-8 encode are C loops,
    the regex (much slower over 100 KB) runs only on text that has a lone surrogate."""
    joined = SEPARATOR.join(pieces)
    if "\x00" in joined:
        joined = joined.replace("\x00", SEPARATOR)
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            joined = _SURROGATE.sub(SEPARATOR, joined)
    return joined


def _insert_text(conn: sqlite3.Connection, doc_id: int, prepared: Prepared) -> None:
    header, body = prepared.columns
    conn.execute(
        "INSERT INTO fulltext (rowid, header, body) VALUES (?, ?, ?)", (doc_id, header, body)
    )


def store_doc(unit: Unit, blob_id: str, prepared: Prepared | None) -> None:
    """In the unit that stores a message for ``blob_id``: make sure its document exists
    (``prepared`` None: the text is not at hand, the document is pending)."""
    conn = unit.conn
    if prepared is None:
        state = PENDING
    else:
        state = INDEXED if prepared.text is not None else SKIPPED
    # One statement (blob_id is UNIQUE): no row back when a copy of the same content has its
    # document (indexed or queued) already.
    row = conn.execute(
        "INSERT INTO fulltext_docs (blob_id, state) VALUES (?, ?) "
        "ON CONFLICT (blob_id) DO NOTHING RETURNING id",
        (blob_id, state),
    ).fetchone()
    if row is None:
        return
    if prepared is None:
        unit.memo[PENDING_KEY] = True
    elif prepared.text is not None:
        _insert_text(conn, int(row[0]), prepared)


def stored(unit: Unit, blob_id: str) -> None:
    """Called by every unit that stores a message for ``blob_id`` (append, deliver): its
    document, pending (the indexer extracts the text behind delivery)."""
    store_doc(unit, blob_id, None)


def forget(conn: sqlite3.Connection, blob_id: str) -> None:
    """In the unit that dropped the last message of ``blob_id``: remove its document."""
    row = conn.execute(
        "DELETE FROM fulltext_docs WHERE blob_id = ? RETURNING id, state", (blob_id,)
    ).fetchone()
    if row is not None and int(row[1]) == INDEXED:
        conn.execute("DELETE FROM fulltext WHERE rowid = ?", (int(row[0]),))


def forget_many(conn: sqlite3.Connection, blob_ids: Sequence[str]) -> None:
    """``forget`` for many blobs, one statement per 500 of them (refs.dropped)."""
    for start in range(0, len(blob_ids), 500):
        chunk = blob_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            f"DELETE FROM fulltext_docs WHERE blob_id IN ({marks}) RETURNING id, state", chunk
        ).fetchall()
        indexed = [(int(r[0]),) for r in rows if int(r[1]) == INDEXED]
        if indexed:
            conn.executemany("DELETE FROM fulltext WHERE rowid = ?", indexed)


def phrase(query: str) -> str | None:
    """The FTS5 phrase for ``query``, or None when the index cannot answer it."""
    needle = fold(query)
    if len(needle) < MIN_QUERY or SEPARATOR in needle or _UNSAFE.search(needle):
        return None
    return '"' + needle.replace('"', '""') + '"'  # one FTS5 string: no operators inside


def search(unit: Unit, mailbox_id: int, query: str, *, scope: TextScope) -> TextHits | None:
    """The messages of one mailbox whose text in ``scope`` contains ``query``."""
    conn = unit.conn
    row = conn.execute("SELECT message_count FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound(f"mailbox {mailbox_id} does not exist")
    needle = phrase(query)
    if needle is None:
        return None
    expression = needle if scope is TextScope.TEXT else "body : " + needle
    # The index spans every mailbox of the store. Few hits: map each to this mailbox's
    # messages (messages_blob covers (blob_id, mailbox_id, uid)). More hits than the mailbox
    # has messages: map the mailbox's messages to documents and keep the hits instead.
    docs = [int(r[0]) for r in conn.execute(
        "SELECT rowid FROM fulltext WHERE fulltext MATCH ?", (expression,))]
    uids: set[int] = set()
    if len(docs) <= int(row[0]):
        for i in range(0, len(docs), _CHUNK):
            chunk = docs[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            uids.update(int(r[0]) for r in conn.execute(
                "SELECT m.uid FROM fulltext_docs AS d CROSS JOIN messages AS m "
                f"WHERE d.id IN ({marks}) AND m.blob_id = d.blob_id AND m.mailbox_id = ?",
                (*chunk, mailbox_id),
            ))
    else:
        hits = set(docs)
        uids.update(int(r[0]) for r in conn.execute(
            "SELECT m.uid, d.id FROM messages AS m CROSS JOIN fulltext_docs AS d "
            "WHERE m.mailbox_id = ? AND d.blob_id = m.blob_id",
            (mailbox_id,),
        ) if int(r[1]) in hits)
    unindexed = conn.execute(
        "SELECT m.uid FROM fulltext_docs AS d CROSS JOIN messages AS m "
        "WHERE d.state != 0 AND m.blob_id = d.blob_id AND m.mailbox_id = ?",
        (mailbox_id,),
    )
    return TextHits(uids=frozenset(uids), unindexed=frozenset(int(r[0]) for r in unindexed))


def pending(unit: Unit, *, limit: int, mailbox_id: int | None = None) -> list[tuple[int, str]]:
    """Up to ``limit`` pending documents (of one mailbox's messages, if given): (document
    id, blob id)."""
    if mailbox_id is None:
        rows = unit.conn.execute(
            "SELECT id, blob_id FROM fulltext_docs WHERE state != 0 AND state = ? LIMIT ?",
            (PENDING, limit),
        )
    else:
        rows = unit.conn.execute(
            "SELECT DISTINCT d.id, d.blob_id FROM fulltext_docs AS d CROSS JOIN messages AS m "
            "WHERE d.state != 0 AND d.state = ? AND m.blob_id = d.blob_id AND m.mailbox_id = ? "
            "LIMIT ?",
            (PENDING, mailbox_id, limit),
        )
    return [(int(r[0]), str(r[1])) for r in rows]


def fill(unit: Unit, prepared: Sequence[tuple[int, Prepared]]) -> int:
    """Store the text of pending documents (those still pending); returns how many."""
    conn = unit.conn
    count = 0
    for doc_id, item in prepared:
        state = INDEXED if item.text is not None else SKIPPED
        changed = conn.execute(
            "UPDATE fulltext_docs SET state = ? WHERE id = ? AND state = ?",
            (state, doc_id, PENDING),
        ).rowcount
        if changed and item.text is not None:
            _insert_text(conn, doc_id, item)
            count += 1
    return count


def unindexed_count(unit: Unit) -> int:
    """Documents not in the index (pending or skipped): for tests and the operator."""
    (count,) = unit.conn.execute(
        "SELECT count(*) FROM fulltext_docs WHERE state != 0"
    ).fetchone()
    return int(count)



class Indexer:
    """The store's background indexer: fills pending documents in batches (a read unit to
    find them, a worker thread to extract their text, a write unit to store it).

    Runs as one asyncio task on the store's event loop, started at open and whenever a unit
    stored a pending document. Indexing comes *behind* delivery: a pass starts once no unit
    stored a pending document for ``QUIET`` seconds (a burst of mail is stored first, its
    text indexed in the lull after it), or once it has waited ``MAX_LAG`` seconds; a batch
    holds at most ``BATCH`` documents and ``BATCH_BYTES`` of text, so a delivery never waits
    long behind one. ``run`` indexes everything pending now, and ``catch_up`` the pending
    documents of one mailbox (a search calls it first, so its answer comes from the index).
    """

    BATCH = 64
    BATCH_BYTES = 2 << 20  # octets of message text per write unit
    QUIET = 0.25  # seconds without new pending documents before a background pass
    MAX_LAG = 10.0  # seconds a background pass waits for quiet at most

    def __init__(
        self,
        read: Callable[[Callable[[Unit], list[tuple[int, str]]]], Awaitable[list[tuple[int, str]]]],
        write: Callable[[Callable[[Unit], int]], Awaitable[int]],
        open_blob: Callable[[str], BinaryIO],
    ) -> None:
        self._read = read
        self._write = write
        self._open_blob = open_blob
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False
        self._last_kick = 0.0  # loop time of the last kick
        self._scheduled = False  # a kick from another thread waits on the event loop
        self._lock = asyncio.Lock()  # one pass at a time: no document is extracted twice

    def start(self) -> None:
        """On the event loop, after the database is open."""
        self._loop = asyncio.get_running_loop()
        self.kick()

    def kick(self) -> None:
        """Index what is pending, soon (on the event loop)."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        self._last_kick = loop.time()
        if self._task is not None and not self._task.done():
            self._again = True  # the running pass looks once more before it ends
            return
        self._task = loop.create_task(self._background())

    def kick_threadsafe(self) -> None:
        """``kick`` from another thread (the database thread's on-commit hook): at most one
        waits on the event loop at a time (one wake-up, not one per stored message)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._last_kick = loop.time()  # the monotonic clock: callable from any thread
        if self._scheduled:
            return
        self._scheduled = True
        loop.call_soon_threadsafe(self._kicked)

    def _kicked(self) -> None:
        self._scheduled = False
        self.kick()

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _background(self) -> None:
        try:
            while True:
                self._again = False
                done = await self._pass(background=True)
                if done:
                    event("store.fulltext.indexed", documents=done)
                if not self._again:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next kick (or start) tries again
            event("store.fulltext.failed", level=logging.ERROR, error=repr(exc))

    async def _quiet(self, since: float) -> None:
        """Wait until no pending document came for ``QUIET`` seconds, or until ``MAX_LAG``
        seconds after ``since``."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            wait = min(self._last_kick + self.QUIET, since + self.MAX_LAG) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def run(self) -> int:
        """Index every pending document; returns how many got text."""
        return await self._pass(background=False)

    async def catch_up(self, mailbox_id: int) -> int:
        """Index the pending documents of one mailbox's messages (before a search)."""
        return await self._pass(background=False, mailbox_id=mailbox_id)

    async def _pass(self, *, background: bool, mailbox_id: int | None = None) -> int:
        total = 0
        since = asyncio.get_running_loop().time()
        while True:
            if background:
                await self._quiet(since)
            async with self._lock:
                todo = await self._read(
                    lambda u: pending(u, limit=self.BATCH, mailbox_id=mailbox_id)
                )
                if not todo:
                    return total
                prepared = await asyncio.to_thread(self._prepare, todo)
                total += await self._write(functools.partial(fill, prepared=prepared))

    def _prepare(self, todo: Sequence[tuple[int, str]]) -> list[tuple[int, Prepared]]:
        """Extract the text of the first documents of ``todo``, up to ``BATCH_BYTES`` of
        text (at least one); the others stay pending for the next batch."""
        out: list[tuple[int, Prepared]] = []
        size = 0
        for doc_id, blob_id in todo:
            item = prepare_blob(self._open_blob, blob_id)
            out.append((doc_id, item))
            size += len(item.columns[0]) + len(item.columns[1])
            if size >= self.BATCH_BYTES:
                break
        return out
