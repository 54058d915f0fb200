"""SEARCH and UID SEARCH: evaluation of the search-key tree over the selected mailbox.

Implements RFC 9051 §6.4.4 (every key: flags, keywords, dates on the internal date (UTC day) and
the Date header (its own day), sizes, header substrings (case-insensitive, on decoded text),
BODY/TEXT through the MIME codec's decoded text, UID and sequence sets, NOT/OR/AND), the SEARCH
response of RFC 3501 §7.2.5 for IMAP4rev1 sessions and ESEARCH for IMAP4rev2 (RFC 9051 §7.3.4),
RFC 4731 ESEARCH return options MIN MAX ALL COUNT, RFC 5182 SEARCHRES (SAVE and "$"; SAVE with
MIN/MAX saves only those), RFC 7162 §3.1.5 MODSEQ search key and the (MODSEQ n) result,
RFC 5032 OLDER/YOUNGER, RFC 8514 SAVED* keys, RFC 8474 EMAILID/THREADID.
TEXT and BODY are answered by the store's full-text index (``MailStore.search_text``) when it
can; the messages it has not indexed, and queries it cannot answer (shorter than three
characters), are tested here with the same rule (``hato.store.fulltext``). Recent index answers
are reused for the UIDs they cover (``cache.TextHitsCache``). Header keys decode fields as
that rule does, so in a big mailbox the index's TEXT answer bounds the messages to test; their
decoded fields are cached per message (``cache.ContentCache``), and in a small mailbox every
header block is read once and then served from there. Only header blocks are read for header
and Date keys.

``matching`` is also the searching step of SORT and THREAD (``sort.py``, ``thread.py``).

Left out: FUZZY.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime
from collections.abc import Callable

from hato.codec.imap.commands import (
    Command,
    KeyAll,
    KeyAnd,
    KeyDate,
    KeyFlag,
    KeyHeader,
    KeyModSeq,
    KeyNot,
    KeyObjectId,
    KeyOr,
    KeyRecent,
    KeySaveDateSupported,
    KeySequence,
    KeySize,
    KeyText,
    KeyWithin,
    Search,
    SearchKey,
)
from hato.codec.imap.sequence import format_set
from hato.codec.mime import Part, envelope, parse_message
from hato.core.errors import NotFound
from hato.servers.imap.cache import HEADER_PREFIX
from hato.servers.imap.fetch import read_blobs
from hato.servers.imap.outcome import Outcome
from hato.servers.imap.selected import Selected
from hato.servers.imap.session import Session
from hato.store.api import BlobStore
from hato.store.fulltext import SearchableText, TextHits, TextScope, extract, fold, matches
from hato.store.model import Message, canonical_flag

Indexed = dict[KeyText | KeyHeader, TextHits]


def _needs_content(key: SearchKey, indexed: Indexed) -> bool:
    """Must every message be read? (Not for TEXT/BODY keys the index answered.)"""
    if isinstance(key, KeyText):
        return key not in indexed
    if isinstance(key, KeyHeader):
        return True
    if isinstance(key, KeyDate):
        return key.field == "sent"
    if isinstance(key, KeyNot):
        return _needs_content(key.key, indexed)
    if isinstance(key, KeyOr):
        return _needs_content(key.left, indexed) or _needs_content(key.right, indexed)
    if isinstance(key, KeyAnd):
        return any(_needs_content(k, indexed) for k in key.keys)
    return False


def _needs_body(key: SearchKey, indexed: Indexed) -> bool:
    """Must every message be read whole? (Only for TEXT/BODY keys the index did not answer;
    header and date keys read the header block alone.)"""
    if isinstance(key, KeyText):
        return key not in indexed
    if isinstance(key, KeyNot):
        return _needs_body(key.key, indexed)
    if isinstance(key, KeyOr):
        return _needs_body(key.left, indexed) or _needs_body(key.right, indexed)
    if isinstance(key, KeyAnd):
        return any(_needs_body(k, indexed) for k in key.keys)
    return False


def _text_keys(key: SearchKey) -> list[KeyText | KeyHeader]:
    """The keys the full-text index may answer or bound: TEXT and BODY, and header keys (a
    header field's decoded text is part of the message's TEXT, ``hato.store.fulltext``)."""
    if isinstance(key, KeyText | KeyHeader):
        return [key]
    if isinstance(key, KeyNot):
        return _text_keys(key.key)
    if isinstance(key, KeyOr):
        return _text_keys(key.left) + _text_keys(key.right)
    if isinstance(key, KeyAnd):
        return [k for sub in key.keys for k in _text_keys(sub)]
    return []


def _bound(key: SearchKey, indexed: Indexed) -> frozenset[int] | None:
    """UIDs outside which no message can match ``key``: from index answers to TEXT/BODY and
    header keys the whole search requires (alone or under AND); None when there is no such
    bound. A header key matches only where the field's decoded, case-folded text holds the
    string, and that text is one of the message's TEXT pieces (``_Evaluator._header`` decodes
    as ``hato.store.fulltext.extract`` does): the TEXT hits bound it."""
    if isinstance(key, KeyText | KeyHeader):
        hits = indexed.get(key)
        return None if hits is None else hits.uids | hits.unindexed
    if isinstance(key, KeyAnd):
        bounds = [b for k in key.keys if (b := _bound(k, indexed)) is not None]
        return frozenset.intersection(*bounds) if bounds else None
    return None


def _match_name(key: KeyText) -> str:
    """Content-cache name of a message's answer to a TEXT/BODY key (``_Evaluator._text``)."""
    return f"match:{_scope(key).value}:{key.value}"


def _header_names(key: SearchKey) -> set[str]:
    """The (lower-case) header field names the header keys of ``key`` test."""
    return {k.name.lower() for k in _text_keys(key) if isinstance(k, KeyHeader)}


def _uses_sent_date(key: SearchKey) -> bool:
    if isinstance(key, KeyDate):
        return key.field == "sent"
    if isinstance(key, KeyNot):
        return _uses_sent_date(key.key)
    if isinstance(key, KeyOr):
        return _uses_sent_date(key.left) or _uses_sent_date(key.right)
    if isinstance(key, KeyAnd):
        return any(_uses_sent_date(k) for k in key.keys)
    return False


def _scope(key: KeyText | KeyHeader) -> TextScope:
    if isinstance(key, KeyHeader):
        return TextScope.TEXT
    return TextScope.BODY if key.body_only else TextScope.TEXT


def _uses_modseq(key: SearchKey) -> bool:
    if isinstance(key, KeyModSeq):
        return True
    if isinstance(key, KeyNot):
        return _uses_modseq(key.key)
    if isinstance(key, KeyOr):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, KeyAnd):
        return any(_uses_modseq(k) for k in key.keys)
    return False


class _Candidate:
    """One message under test; ``data`` is the whole message, or its header block alone
    when ``whole`` is False (enough for header and date keys), or None when the content
    cache was expected to answer (read here after all if it no longer does)."""

    __slots__ = ("_root", "_text", "blobs", "data", "message", "seq", "whole")

    def __init__(self, message: Message, seq: int, data: bytes | None, *, whole: bool,
                 blobs: BlobStore) -> None:
        self.message = message
        self.seq = seq
        self.data = data
        self.whole = whole
        self.blobs = blobs
        self._root: Part | None = None
        self._text: SearchableText | None = None

    def root(self) -> Part:
        """The part tree: of the whole message, or of its header block (no body parts)."""
        if self.data is None:  # a cache entry evicted since the batch was read: one file
            self.data = read_blobs(self.blobs, [self.message.blob_id], head=True).get(
                self.message.blob_id)
            if self.data is None:
                raise NotFound("message expunged")
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root

    def text(self) -> SearchableText:
        if not self.whole:  # a cached match was expected but is gone since: read it now
            self.data = read_blobs(self.blobs, [self.message.blob_id], head=False).get(
                self.message.blob_id)
            if self.data is None:
                raise NotFound("message expunged")
            self.whole, self._root = True, None
        if self._text is None:
            self._text = extract(self.data or b"", self.root())
        return self._text


def _day(timestamp: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).date()


def _compare(day: datetime.date, op: str, date: datetime.date) -> bool:
    if op == "before":
        return day < date
    if op == "on":
        return day == date
    return day >= date


Predicate = Callable[["_Candidate"], bool]


class _Evaluator:
    def __init__(self, selected: Selected, session: Session, indexed: Indexed) -> None:
        self.indexed = indexed
        self.selected = selected
        self.last_uid = selected.uids[-1] if selected.uids else 0
        self.saved = set(selected.saved)
        self.now = session.clock.now()
        self.cache = session.content_cache

    def compile(self, key: SearchKey) -> Predicate:
        """The test of ``key`` as one function, built once per search (the key tree is not
        walked again for every message)."""
        if isinstance(key, KeyAll | KeySaveDateSupported):
            return lambda c: True
        if isinstance(key, KeyFlag):
            flag, present = canonical_flag(key.flag), key.present
            return lambda c: (flag in c.message.flags) == present
        if isinstance(key, KeyRecent):
            # RFC 3501 §6.4.4 RECENT / OLD: \Recent as this session holds it (recent.py).
            recent, wanted = self.selected.recent, key.recent
            return lambda c: (c.message.uid in recent) == wanted
        if isinstance(key, KeySize):
            size = key.size
            if key.larger:
                return lambda c: c.message.size > size
            return lambda c: c.message.size < size
        if isinstance(key, KeySequence):
            sequence = key.sequence
            if sequence.saved:
                saved = self.saved
                return lambda c: c.message.uid in saved
            if key.uid:
                last = self.last_uid
                return lambda c: sequence.contains_uid(c.message.uid, last)
            exists = self.selected.exists
            return lambda c: sequence.contains_uid(c.seq, exists)
        if isinstance(key, KeyModSeq):
            modseq = key.modseq
            return lambda c: c.message.modseq >= modseq  # RFC 7162 §3.1.5
        if isinstance(key, KeyWithin):
            now, seconds = self.now, key.seconds  # RFC 5032 §3
            if key.older:
                return lambda c: now - c.message.internal_date >= seconds
            return lambda c: now - c.message.internal_date <= seconds
        if isinstance(key, KeyObjectId):
            # RFC 8474 §6: EMAILID / THREADID match the object's id exactly.
            value = key.value
            if key.kind == "EMAILID":
                return lambda c: value == f"M{c.message.email_id}"
            return lambda c: bool(c.message.thread_id) and value == f"T{c.message.thread_id}"
        if isinstance(key, KeyDate):
            date_key = key
            return lambda c: _compare(self._date_of(date_key.field, c), date_key.op,
                                      date_key.date)
        if isinstance(key, KeyHeader):
            header_key = key
            return lambda c: self._header(header_key, c)
        if isinstance(key, KeyText):
            return self._text(key)
        if isinstance(key, KeyNot):
            inner = self.compile(key.key)
            return lambda c: not inner(c)
        if isinstance(key, KeyOr):
            left, right = self.compile(key.left), self.compile(key.right)
            return lambda c: left(c) or right(c)
        tests = [self.compile(k) for k in key.keys]
        if len(tests) == 1:
            return tests[0]
        return lambda c: all(test(c) for test in tests)

    def _date_of(self, field: str, c: _Candidate) -> datetime.date:
        if field == "internal":
            return _day(c.message.internal_date)
        if field == "saved":
            return _day(c.message.saved_date)
        sent = envelope(c.root(), c.data or b"").date_value
        # RFC 9051 §6.4.4 SENT*: the Date header's own day; without one, the internal date.
        return sent.date() if sent is not None else _day(c.message.internal_date)

    def _header(self, key: KeyHeader, c: _Candidate) -> bool:
        needle = fold(key.value)
        name = key.name.lower()  # RFC 5322 §1.2.2: field names are case-insensitive
        values = self.cache.get_texts(c.message.blob_id, HEADER_PREFIX + name)
        if values is None:
            root = c.root()
            # Decoded as the searchable text is (``fulltext.extract``): RFC 2047 words, and
            # raw 8-bit text in the charset the message declares.
            charset = root.param("charset")
            values = tuple(f.text(fallback_charset=charset).casefold()
                           for f in root.headers if f.key == name)
            self.cache.put(c.message.blob_id, HEADER_PREFIX + name, values)
        return any(needle in value for value in values)

    def _text(self, key: KeyText) -> Predicate:
        # RFC 9051 §6.4.4 TEXT / BODY: the index's answer, else the same test on the message.
        hits = self.indexed.get(key)
        value, scope = key.value, _scope(key)
        if hits is None:
            return lambda c: matches(c.text(), value, scope=scope)
        found, unindexed = hits.uids, hits.unindexed
        cache, name = self.cache, _match_name(key)

        def test(c: _Candidate) -> bool:
            uid = c.message.uid
            if uid not in unindexed:
                return uid in found
            # Tested here; the answer is kept per message (its text never changes).
            known = cache.get_bytes(c.message.blob_id, name)
            if known is not None:
                return known == b"1"
            result = matches(c.text(), value, scope=scope)
            cache.put(c.message.blob_id, name, b"1" if result else b"0")
            return result

        return test


async def _search_text(
    session: Session, selected: Selected, key: KeyText | KeyHeader
) -> TextHits | None:
    """The index's answer for ``key``: from the shared cache while at most ``TEXT_REFRESH``
    messages arrived since it was asked (those are then tested here, as unindexed ones are),
    else asked again."""
    cache = session.content_cache.text_hits
    scope = _scope(key)
    cache_key = (selected.mailbox_id, selected.uidvalidity, key.value, scope.value)
    uids = selected.uids
    entry = cache.get(cache_key)
    if entry is not None:
        watermark, hits = entry
        newer = uids[bisect.bisect_right(uids, watermark) :]
        if len(newer) <= TEXT_REFRESH:
            return TextHits(hits.uids, hits.unindexed | frozenset(newer)) if newer else hits
    # Every message up to the view's last UID was committed before the index is asked.
    watermark = uids[-1] if uids else 0
    fresh = await session.store.search_text(selected.mailbox_id, key.value, scope=scope)
    if fresh is not None:
        cache.put(cache_key, watermark, fresh)
    return fresh


async def matching(session: Session, selected: Selected, search: SearchKey) -> list[Message]:
    """The messages of the view that match ``search``, in sequence order (SEARCH, and the
    searching step of SORT and THREAD, RFC 5256 §3)."""
    indexed: Indexed = {}
    for key in _text_keys(search):
        if isinstance(key, KeyHeader) and selected.exists <= INDEX_HEADERS_ABOVE:
            continue  # a small mailbox: its decoded fields come from the content cache
        if key not in indexed:
            hits = await _search_text(session, selected, key)
            if hits is not None:
                indexed[key] = hits
    # Messages the index has no text for are tested here: read whole for TEXT/BODY.
    scan = frozenset[int]().union(
        *(hits.unindexed for key, hits in indexed.items() if isinstance(key, KeyText)))
    whole = _needs_body(search, indexed)
    bound = _bound(search, indexed)
    if bound is None:
        listed = await session.store.list_messages(selected.mailbox_id)
    else:  # only the index's candidates need their metadata read
        listed = await session.store.get_messages(selected.mailbox_id, sorted(bound))
    messages = {m.uid: m for m in listed}
    test = _Evaluator(selected, session, indexed).compile(search)
    content = _needs_content(search, indexed)
    # Header keys alone need the message: those whose fields are cached need no read.
    cached_fields = [] if whole or _uses_sent_date(search) else [
        HEADER_PREFIX + name for name in _header_names(search)]
    cache = session.content_cache
    blobs = session.store.blobs

    match_names = [_match_name(k) for k in indexed if isinstance(k, KeyText)]

    def body_needed(m: Message) -> bool:
        # Unindexed messages are read whole unless every TEXT/BODY answer of theirs is cached.
        return whole or (m.uid in scan and any(
            cache.get(m.blob_id, name) is None for name in match_names))

    def head_needed(m: Message) -> bool:
        if not content or m.uid in scan:
            return False
        return not cached_fields or any(cache.get(m.blob_id, f) is None for f in cached_fields)

    matched: list[Message] = []
    # Messages expunged elsewhere but not yet announced are not in ``messages``: skipped.
    view = [(seq, messages[uid]) for seq, uid in enumerate(selected.uids, 1) if uid in messages]
    for start in range(0, len(view), _READ_BATCH):
        batch = view[start : start + _READ_BATCH]
        heads = [] if whole else [m.blob_id for _, m in batch if head_needed(m)]
        bodies = [m.blob_id for _, m in batch if body_needed(m)]
        asked, asked_whole = set(heads), set(bodies)
        read: dict[str, bytes] = {}
        read_whole: dict[str, bytes] = {}
        if heads or bodies:
            read, read_whole = await asyncio.to_thread(
                _read_all, session.store.blobs, heads, bodies)
        for seq, message in batch:
            full = message.blob_id in asked_whole
            data = (read_whole if full else read).get(message.blob_id)
            if data is None and (full or message.blob_id in asked):
                continue  # its body went with an expunge that just committed
            try:
                if test(_Candidate(message, seq, data, whole=full, blobs=blobs)):
                    matched.append(message)
            except (NotFound, FileNotFoundError):
                continue  # expunged while we were searching
    return matched


_READ_BATCH = 256  # message bodies read per worker-thread hop
# Header keys are bounded by the full-text index only in mailboxes bigger than this; in a
# smaller one every header block is read once and its decoded fields are cached, which
# beats an index query (over every mailbox of the store) from the second search on.
INDEX_HEADERS_ABOVE = 4096
TEXT_REFRESH = 256  # messages newer than a cached index answer tested here before asking again


def _read_all(
    blobs: BlobStore, heads: list[str], bodies: list[str]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Header blocks of ``heads`` and whole bodies of ``bodies``: one worker-thread hop."""
    return read_blobs(blobs, heads, head=True), read_blobs(blobs, bodies, head=False)


async def cmd_search(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Search)
    args = command.args
    selected = session.selected
    assert selected is not None
    with_modseq = _uses_modseq(args.key)
    if with_modseq:
        session.condstore = True  # RFC 7162 §3.1: CONDSTORE-enabling
    matched = await matching(session, selected, args.key)
    numbers = [m.uid if command.uid else selected.seq_of(m.uid) for m in matched]
    top_modseq = max((m.modseq for m in matched), default=0)
    returns = args.returns
    if returns is None and not session.rev2:
        # RFC 3501 §7.2.5 SEARCH response; RFC 7162 §3.1.5 adds (MODSEQ n).
        line = b"SEARCH" + b"".join(b" %d" % n for n in numbers)
        if with_modseq and numbers:
            line += b" (MODSEQ %d)" % top_modseq
        session.untagged(line)
        return Outcome("SEARCH completed")
    options = set(returns or ()) or {"ALL"}
    if returns is not None and not returns:
        options = {"ALL"}  # RFC 4731 §3.1: RETURN () means ALL
    if "SAVE" in options:
        # RFC 5182 §2.4: with MIN and/or MAX only those are saved.
        if options & {"MIN", "MAX"}:
            keep = set()
            if "MIN" in options and matched:
                keep.add(matched[0].uid)
            if "MAX" in options and matched:
                keep.add(matched[-1].uid)
            selected.saved = sorted(keep)
        else:
            selected.saved = [m.uid for m in matched]
        options.discard("SAVE")
        if not options:
            return Outcome("SEARCH completed, result saved")  # RFC 5182 §2.4: no ESEARCH
    line = b'ESEARCH (TAG "' + command.tag.encode("ascii") + b'")'
    if command.uid:
        line += b" UID"
    if numbers:
        if "MIN" in options:
            line += b" MIN %d" % min(numbers)
        if "MAX" in options:
            line += b" MAX %d" % max(numbers)
        if "ALL" in options:
            line += b" ALL " + format_set(numbers).encode("ascii")
    if "COUNT" in options:
        line += b" COUNT %d" % len(numbers)
    if with_modseq and numbers:
        line += b" MODSEQ %d" % top_modseq
    session.untagged(line)
    return Outcome("SEARCH completed")
