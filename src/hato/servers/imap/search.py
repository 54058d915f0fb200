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
characters), are tested here with the same rule (``hato.store.fulltext``).

``matching`` is also the searching step of SORT and THREAD (``sort.py``, ``thread.py``).

Left out: FUZZY.
"""

from __future__ import annotations

import asyncio
import datetime

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
from hato.codec.mime.headers import Header, split_headers
from hato.core.errors import NotFound
from hato.servers.imap.outcome import Outcome
from hato.servers.imap.selected import Selected
from hato.servers.imap.session import Session
from hato.store.api import BlobStore
from hato.store.fulltext import SearchableText, TextHits, TextScope, extract, matches
from hato.store.model import Message, canonical_flag


def _needs_content(key: SearchKey, indexed: dict[KeyText, TextHits]) -> bool:
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


def _text_keys(key: SearchKey) -> list[KeyText]:
    if isinstance(key, KeyText):
        return [key]
    if isinstance(key, KeyNot):
        return _text_keys(key.key)
    if isinstance(key, KeyOr):
        return _text_keys(key.left) + _text_keys(key.right)
    if isinstance(key, KeyAnd):
        return [k for sub in key.keys for k in _text_keys(sub)]
    return []


def _bound(key: SearchKey, indexed: dict[KeyText, TextHits]) -> frozenset[int] | None:
    """UIDs outside which no message can match ``key``: from index answers to TEXT/BODY keys
    the whole search requires (alone or under AND); None when there is no such bound."""
    if isinstance(key, KeyText):
        hits = indexed.get(key)
        return None if hits is None else hits.uids | hits.unindexed
    if isinstance(key, KeyAnd):
        bounds = [b for k in key.keys if (b := _bound(k, indexed)) is not None]
        return frozenset.intersection(*bounds) if bounds else None
    return None


def _scope(key: KeyText) -> TextScope:
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
    def __init__(self, message: Message, seq: int, data: bytes | None) -> None:
        self.message = message
        self.seq = seq
        self.data = data
        self._root: Part | None = None
        self._text: SearchableText | None = None

    def root(self) -> Part:
        assert self.data is not None
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root

    def headers(self) -> tuple[Header, ...]:
        """The message's own header fields: split without parsing the MIME tree."""
        if self._root is not None:
            return self._root.headers
        return split_headers(self.data or b"", 0).headers

    def text(self) -> SearchableText:
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


class _Evaluator:
    def __init__(
        self, selected: Selected, session: Session, indexed: dict[KeyText, TextHits]
    ) -> None:
        self.indexed = indexed
        self.selected = selected
        self.last_uid = selected.uids[-1] if selected.uids else 0
        self.saved = set(selected.saved)
        self.now = session.clock.now()

    def match(self, key: SearchKey, c: _Candidate) -> bool:
        m = c.message
        if isinstance(key, KeyAll | KeySaveDateSupported):
            return True
        if isinstance(key, KeyFlag):
            return (canonical_flag(key.flag) in m.flags) == key.present
        if isinstance(key, KeyRecent):
            # RFC 3501 §6.4.4 RECENT / OLD: \Recent as this session holds it (recent.py).
            return (m.uid in self.selected.recent) == key.recent
        if isinstance(key, KeySize):
            return m.size > key.size if key.larger else m.size < key.size
        if isinstance(key, KeySequence):
            if key.sequence.saved:
                return m.uid in self.saved
            if key.uid:
                return key.sequence.contains_uid(m.uid, self.last_uid)
            return key.sequence.contains_uid(c.seq, self.selected.exists)
        if isinstance(key, KeyModSeq):
            return m.modseq >= key.modseq  # RFC 7162 §3.1.5
        if isinstance(key, KeyWithin):
            age = self.now - m.internal_date  # RFC 5032 §3
            return age >= key.seconds if key.older else age <= key.seconds
        if isinstance(key, KeyObjectId):
            return key.kind == "EMAILID" and key.value == f"M{m.email_id}"
        if isinstance(key, KeyDate):
            return _compare(self._date_of(key.field, c), key.op, key.date)
        if isinstance(key, KeyHeader):
            return self._header(key, c)
        if isinstance(key, KeyText):
            return self._text(key, c)
        if isinstance(key, KeyNot):
            return not self.match(key.key, c)
        if isinstance(key, KeyOr):
            return self.match(key.left, c) or self.match(key.right, c)
        return all(self.match(k, c) for k in key.keys)

    def _date_of(self, field: str, c: _Candidate) -> datetime.date:
        if field == "internal":
            return _day(c.message.internal_date)
        if field == "saved":
            return _day(c.message.saved_date)
        sent = envelope(c.root(), c.data or b"").date_value
        # RFC 9051 §6.4.4 SENT*: the Date header's own day; without one, the internal date.
        return sent.date() if sent is not None else _day(c.message.internal_date)

    def _header(self, key: KeyHeader, c: _Candidate) -> bool:
        needle = key.value.casefold()
        name = key.name.lower()  # RFC 5322 §1.2.2: field names are case-insensitive
        return any(needle in f.text().casefold() for f in c.headers() if f.key == name)

    def _text(self, key: KeyText, c: _Candidate) -> bool:
        # RFC 9051 §6.4.4 TEXT / BODY: the index's answer, else the same test on the message.
        hits = self.indexed.get(key)
        if hits is not None and c.message.uid not in hits.unindexed:
            return c.message.uid in hits.uids
        return matches(c.text(), key.value, scope=_scope(key))


async def matching(session: Session, selected: Selected, search: SearchKey) -> list[Message]:
    """The messages of the view that match ``search``, in sequence order (SEARCH, and the
    searching step of SORT and THREAD, RFC 5256 §3)."""
    indexed: dict[KeyText, TextHits] = {}
    for key in _text_keys(search):
        if key not in indexed:
            hits = await session.store.search_text(selected.mailbox_id, key.value,
                                                   scope=_scope(key))
            if hits is not None:
                indexed[key] = hits
    scan = frozenset[int]().union(*(hits.unindexed for hits in indexed.values()))
    bound = _bound(search, indexed)
    if bound is None:
        listed = await session.store.list_messages(selected.mailbox_id)
    else:  # only the index's candidates need their metadata read
        listed = await session.store.get_messages(selected.mailbox_id, sorted(bound))
    messages = {m.uid: m for m in listed}
    evaluator = _Evaluator(selected, session, indexed)
    content = _needs_content(search, indexed)
    matched: list[Message] = []
    # Messages expunged elsewhere but not yet announced are not in ``messages``: skipped.
    view = [(seq, messages[uid]) for seq, uid in enumerate(selected.uids, 1) if uid in messages]
    for start in range(0, len(view), _READ_BATCH):
        batch = view[start : start + _READ_BATCH]
        wanted = [m.blob_id for _, m in batch if content or m.uid in scan]
        bodies: dict[str, bytes] = {}
        if wanted:
            bodies = await asyncio.to_thread(_read_bodies, session.store.blobs, wanted)
        for seq, message in batch:
            data = None
            if content or message.uid in scan:
                data = bodies.get(message.blob_id)
                if data is None:
                    continue  # its body went with an expunge that just committed
            if evaluator.match(search, _Candidate(message, seq, data)):
                matched.append(message)
    return matched


_READ_BATCH = 256  # message bodies read per worker-thread hop


def _read_bodies(blobs: BlobStore, blob_ids: list[str]) -> dict[str, bytes]:
    bodies: dict[str, bytes] = {}
    for blob_id in blob_ids:
        if blob_id not in bodies:
            try:
                bodies[blob_id] = blobs.read(blob_id)
            except (NotFound, FileNotFoundError):
                continue
    return bodies


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
