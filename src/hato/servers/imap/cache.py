"""A process-wide cache of what IMAP derives from message bytes: rendered FETCH structure
items (ENVELOPE, BODY, BODYSTRUCTURE) and the decoded header fields SEARCH tests.

Message bodies are content-addressed (``BlobRef.id`` is the SHA-256 of the bytes), so what
RFC 9051 §7.5.2 derives from a message's bytes alone never changes for a blob id: the
rendered ENVELOPE, BODY and BODYSTRUCTURE, and the decoded values of a header field (RFC 9051
§6.4.4 FROM, SUBJECT, HEADER ...), can be kept and shared by every session and every copy of
the message, the way Dovecot keeps them in its index cache. A FETCH whose content items are
all cached, or a header search whose fields are, neither reads nor parses the message.
``TextHitsCache`` keeps recent answers of the full-text index, exact for the UIDs the mailbox
had when they were asked (a repeated SEARCH TEXT does not query the index again), and
``ViewCache`` the last selected-mailbox view of big mailboxes (SELECT applies the change log
to a copy).

Left out: persistence (the cache is rebuilt after a restart), items that carry message data
(BODY[section], BINARY: served from the blob each time).

Security: keys are content hashes; entries hold only what a FETCH of the same blob would
render, so a session never sees another mailbox's data through the cache.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass

from hato.store.fulltext import TextHits

# Items rendered from the message bytes alone, never from per-mailbox state.
CACHEABLE = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})
HEADER_PREFIX = "header:"  # + a lower-case field name: its decoded, case-folded values
Value = bytes | tuple[str, ...]
DEFAULT_BYTES = 16 << 20  # what the cache may hold (about 25,000 envelopes)
ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its value (key tuple, blob id, links)
DEFAULT_TEXT_UIDS = 256 * 1024  # UIDs the full-text answers may hold (about 15 MB)
DEFAULT_VIEW_MESSAGES = 1 << 20  # messages the kept mailbox views may hold (16 MB)


class ContentCache:
    """Least-recently-used map of (blob id, item name) to the rendered item, bounded by
    ``max_bytes`` (rendered bytes plus ``ENTRY_OVERHEAD`` each). Used from the event loop
    thread only."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], Value] = OrderedDict()
        self.text_hits = TextHitsCache()  # full-text index answers, per mailbox and query
        self.views = ViewCache()  # the last view of each big mailbox opened (SELECT)

    def get(self, blob_id: str, name: str) -> Value | None:
        key = (blob_id, name)
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return value

    def get_bytes(self, blob_id: str, name: str) -> bytes | None:
        value = self.get(blob_id, name)
        return value if isinstance(value, bytes) else None

    def get_texts(self, blob_id: str, name: str) -> tuple[str, ...] | None:
        value = self.get(blob_id, name)
        return value if isinstance(value, tuple) else None

    def put(self, blob_id: str, name: str, value: Value) -> None:
        cost = _cost(value)
        if cost > self.max_bytes:
            return
        key = (blob_id, name)
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= _cost(old)
        self._entries[key] = value
        self.size += cost
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.size -= _cost(dropped)

    def __len__(self) -> int:
        return len(self._entries)


TextKey = tuple[int, int, str, str]  # mailbox id, UIDVALIDITY, query, scope


class TextHitsCache:
    """Least-recently-used answers of the full-text index (``MailStore.search_text``) per
    mailbox and query, each with the highest UID of the mailbox when it was asked. A message
    never changes its text and UIDs only grow (RFC 9051 §2.3.1.1), so an answer stays exact for
    every UID up to that mark; later messages are the caller's to test. Bounded by the number
    of UIDs held. Used from the event loop thread only."""

    def __init__(self, max_uids: int = DEFAULT_TEXT_UIDS) -> None:
        self.max_uids = max_uids
        self.size = 0
        self._entries: OrderedDict[TextKey, tuple[int, TextHits]] = OrderedDict()

    def get(self, key: TextKey) -> tuple[int, TextHits] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: TextKey, watermark: int, hits: TextHits) -> None:
        cost = len(hits.uids) + len(hits.unindexed) + 1
        if cost > self.max_uids:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old[1].uids) + len(old[1].unindexed) + 1
        self._entries[key] = (watermark, hits)
        self.size += cost
        while self.size > self.max_uids:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.size -= len(dropped.uids) + len(dropped.unindexed) + 1


@dataclass(frozen=True, slots=True)
class FrozenView:
    """A copy of a selected-mailbox view (``selected.Selected``): current to the account
    MODSEQ ``modseq``, with the mailbox's HIGHESTMODSEQ as then known."""

    uids: array[int]
    modseqs: array[int]
    flag_ids: array[int]
    flag_sets: tuple[frozenset[str], ...]
    modseq: int
    highest: int


class ViewCache:
    """The last view of each recently opened big mailbox, by (mailbox id, UIDVALIDITY), so a
    SELECT copies it and applies the change log since (``selected.open_selected``) instead of
    reading every message again. Least recently used first out, bounded by the number of
    messages held (16 bytes each). Used from the event loop thread only."""

    def __init__(self, max_messages: int = DEFAULT_VIEW_MESSAGES) -> None:
        self.max_messages = max_messages
        self.size = 0
        self._entries: OrderedDict[tuple[int, int], FrozenView] = OrderedDict()

    def get(self, key: tuple[int, int]) -> FrozenView | None:
        view = self._entries.get(key)
        if view is not None:
            self._entries.move_to_end(key)
        return view

    def put(self, key: tuple[int, int], view: FrozenView) -> None:
        if len(view.uids) > self.max_messages:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old.uids)
        self._entries[key] = view
        self.size += len(view.uids)
        while self.size > self.max_messages:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped.uids)

    def drop(self, key: tuple[int, int]) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old.uids)


def _cost(value: Value) -> int:
    if isinstance(value, bytes):
        return len(value) + ENTRY_OVERHEAD
    return sum(len(text) + 56 for text in value) + ENTRY_OVERHEAD  # str objects
