"""FETCH and UID FETCH: message data items rendered from the store and the MIME codec.

Implements RFC 9051 §6.4.5 and §7.5.2: FLAGS, UID (always sent for UID FETCH), INTERNALDATE,
RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, BODY[section]<partial> and BODY.PEEK (HEADER,
HEADER.FIELDS[.NOT], TEXT, MIME, part numbers; a non-PEEK fetch sets \\Seen and reports the
new FLAGS, never in a read-only mailbox), RFC 3501 RFC822, RFC822.HEADER, RFC822.TEXT; RFC 3516
BINARY[section]<partial>, BINARY.PEEK and BINARY.SIZE (literal8 when the data holds NUL,
UNKNOWN-CTE for encodings Hato cannot undo); RFC 7162 §3.1.4 MODSEQ and CHANGEDSINCE; RFC 8514
SAVEDATE; RFC 8474 EMAILID and THREADID (the store's per-account thread id, fixed when the
message was stored: ``hato.store.sqlite.threadids``; NIL only for a message without one);
RFC 7162 §3.2.6 the VANISHED modifier (VANISHED
(EARLIER) from ``qresync.py``) and §3.2.4 (UID and MODSEQ in FETCH responses of an implicit
\\Seen once CONDSTORE is on); RFC 3501 §2.3.2 \\Recent in FLAGS for IMAP4rev1 sessions.
Messages expunged by another session before this one was told are skipped with OK
[EXPUNGEISSUED] (RFC 5530).

Speed: metadata items need no message read; ENVELOPE, RFC822.HEADER and BODY[HEADER...] read
and parse only the header block; rendered ENVELOPE/BODY/BODYSTRUCTURE come from the shared
content cache (``cache.py``) when present; a few small messages are read on the event loop, a
chunk of many in one worker-thread hop, and a big chunk is parsed in that thread too.

Left out: PREVIEW (RFC 8970).
"""

from __future__ import annotations

import asyncio
import bisect
import re

from hato.codec.imap import response
from hato.codec.imap.bodystructure import envelope_of, render_body
from hato.codec.imap.commands import Command, Fetch, FetchItem, Section
from hato.codec.mime import Part, decode_body, decode_encapsulated, find_section, parse_message
from hato.core.errors import NotFound
from hato.servers.imap import qresync
from hato.servers.imap.cache import CACHEABLE
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.selected import Selected, resolve
from hato.servers.imap.session import Session
from hato.store.api import BlobStore
from hato.store.model import SEEN, FlagOp, Message

_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
_SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})


def section_bytes(root: Part, data: bytes, section: Section) -> bytes | None:
    """The octets of BODY[section] (RFC 9051 §6.4.5), or None when the part does not exist."""
    part = find_section(root, section.part) if section.part else root
    if part is None:
        return None
    text = section.text
    if text is None:
        return data if not section.part else data[part.body_start : part.body_end]
    if text == "MIME":
        return data[part.header_start : part.header_end]
    message, source = root, data
    if section.part:
        # HEADER/TEXT of a part address its encapsulated message (message/rfc822).
        if part.message is not None:
            message = part.message
        else:
            encapsulated = decode_encapsulated(part, data)
            if encapsulated is None:
                return None
            message, source = encapsulated
    if text == "HEADER":
        return source[message.header_start : message.header_end]
    if text == "TEXT":
        return source[message.body_start : message.body_end]
    names = {f.lower() for f in section.fields}
    wanted = text == "HEADER.FIELDS"
    kept = [h for h in message.headers if (h.key in names) == wanted]
    # RFC 9051 §6.4.5: the subset of header lines, followed by the blank line.
    return b"".join(source[h.start : h.end] for h in kept) + b"\r\n"


def binary_bytes(root: Part, data: bytes, section: Section) -> bytes | None:
    """RFC 3516 §4.2: BINARY[] is the message as is; BINARY[n] the part's decoded content."""
    if not section.part:
        return data
    part = find_section(root, section.part)
    if part is None:
        return None
    if part.transfer_encoding not in _KNOWN_CTE:
        raise CommandFailed("unknown content transfer encoding", code="UNKNOWN-CTE")
    return decode_body(part, data)


def _partial(data: bytes, partial: tuple[int, int] | None) -> tuple[bytes, bytes]:
    if partial is None:
        return data, b""
    offset, length = partial
    # RFC 9051 §6.4.5: the response names only the origin octet: BODY[]<offset>.
    return data[offset : offset + length], b"<%d>" % offset


# Items answered from the message's metadata alone (no blob read).
_META = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "SAVEDATE",
                   "EMAILID", "THREADID"})
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
# RFC 5322 §2.1: the header block ends at the first empty line (bare LF tolerated, as in
# ``hato.codec.mime.headers.split_headers``).
_BLANK_LINE = re.compile(rb"\n\r?\n")
_HEAD_READ = 16384  # bytes read at a time while looking for the end of the header block
BIG_PARSE = 1 << 20  # a chunk with more bytes than this is parsed off the event loop
# Up to this many messages (whole: this many bytes in all) are read on the event loop: a
# few small files cost less than the hop to a worker thread.
INLINE_READS = 32
# UID/FLAGS/MODSEQ of at least this many messages, half the mailbox or more, are rendered from
# one column read of the mailbox (``_fetch_columns``), written out in rounds of COLUMN_FLUSH.
COLUMN_FETCH_MIN = 1000
COLUMN_FLUSH = 2000
_COLUMN_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})
INLINE_BYTES = 256 * 1024


def _header_only(items: tuple[FetchItem, ...]) -> bool:
    """Whether every item that reads the message needs only its top-level header block
    (ENVELOPE, RFC822.HEADER, BODY[HEADER...]): then only that block is read and parsed."""
    for item in items:
        name = item.name
        if name in _META or name in ("ENVELOPE", "RFC822.HEADER"):
            continue
        if (name == "BODY[]" and item.section is not None and not item.section.part
                and item.section.text in _HEADER_TEXTS):
            continue
        return False
    return True


def header_block(data: bytes) -> bytes:
    """The top-level header block of ``data`` with its empty line, or all of ``data`` when
    no empty line ends it (the MIME parser then sees the same header fields)."""
    if data.startswith((b"\n", b"\r\n")):
        return data[: data.index(b"\n") + 1]
    match = _BLANK_LINE.search(data)
    return data if match is None else data[: match.end()]


def _read_head(blobs: BlobStore, blob_id: str) -> bytes:
    """The header block of a stored message, without reading its body (large attachments)."""
    with blobs.open(blob_id) as f:
        data = b""
        while True:
            chunk = f.read(_HEAD_READ)
            if not chunk:
                return data
            data += chunk
            if data.startswith((b"\n", b"\r\n")) or _BLANK_LINE.search(
                    data, max(0, len(data) - len(chunk) - 2)):
                return header_block(data)


def read_blobs(blobs: BlobStore, blob_ids: list[str], *, head: bool) -> dict[str, bytes]:
    """Bodies (or header blocks) of a chunk of messages, by blob id; those gone are left
    out (blocking: run it in a worker thread, one hop for a whole chunk)."""
    bodies: dict[str, bytes] = {}
    for blob_id in blob_ids:
        if blob_id not in bodies:
            try:
                bodies[blob_id] = _read_head(blobs, blob_id) if head else blobs.read(blob_id)
            except (NotFound, FileNotFoundError):
                continue  # expunged (and its blob released) while we were fetching
    return bodies


class _Loaded:
    """A message's bytes and part tree, parsed at most once per FETCH."""

    __slots__ = ("_root", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._root: Part | None = None

    def root(self) -> Part:
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root


def _render_content(loaded: _Loaded, item: FetchItem) -> bytes:
    """One item that reads the message (RFC 9051 §7.5.2): pure, so it may run off the loop."""
    name = item.name
    data = loaded.data
    if name == "ENVELOPE":
        return b"ENVELOPE " + envelope_of(loaded.root(), data)
    if name in ("BODY", "BODYSTRUCTURE"):
        body = render_body(loaded.root(), data, extensible=name != "BODY")
        return name.encode("ascii") + b" " + body
    if name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        section = Section((), {"RFC822": None, "RFC822.HEADER": "HEADER",
                               "RFC822.TEXT": "TEXT"}[name])
        text = section_bytes(loaded.root(), data, section) or b""
        return name.encode("ascii") + b" " + response.literal(text)
    if name == "BODY[]":
        assert item.section is not None
        text = section_bytes(loaded.root(), data, item.section) or b""
        text, origin = _partial(text, item.partial)
        label = b"BODY" + item.section.render().encode("utf-8") + origin
        return label + b" " + response.literal(text)
    assert name in ("BINARY", "BINARY.SIZE") and item.section is not None
    raw = binary_bytes(loaded.root(), data, item.section)
    label = name.encode("ascii") + item.section.render().encode("ascii")
    if name == "BINARY.SIZE":
        return label + b" %d" % len(raw or b"")
    if raw is None:
        return label + b" NIL"
    raw, origin = _partial(raw, item.partial)
    return label + origin + b" " + response.literal(raw, binary=b"\x00" in raw)


def _render_contents(items: tuple[FetchItem, ...], data: bytes) -> list[bytes | CommandFailed]:
    """Every content item of one message, in order (a CommandFailed stands for an item that
    cannot be rendered, e.g. UNKNOWN-CTE, raised when the message's turn comes)."""
    loaded = _Loaded(data)
    out: list[bytes | CommandFailed] = []
    for item in items:
        try:
            out.append(_render_content(loaded, item))
        except CommandFailed as exc:
            out.append(exc)
    return out


def _render(
    message: Message,
    items: tuple[FetchItem, ...],
    contents: list[bytes | CommandFailed],
    *,
    flags: bytes,
    add_flags: bool,
) -> bytes:
    """``(item item ...)`` of one message; ``contents`` holds the rendered content items in
    order (``_render_contents``), ``flags`` the FLAGS list to show."""
    out: list[bytes] = []
    next_content = iter(contents)
    for item in items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % message.uid)
        elif name == "FLAGS":
            out.append(b"FLAGS " + flags)
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + response.date_time(message.internal_date))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % message.size)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % message.modseq)
        elif name == "SAVEDATE":
            out.append(b"SAVEDATE " + response.date_time(message.saved_date))
        elif name == "EMAILID":
            out.append(b"EMAILID (M%d)" % message.email_id)
        elif name == "THREADID":
            # RFC 8474 §5.2: "T" keeps THREADIDs apart from the "M" EMAILIDs; NIL: none.
            out.append(b"THREADID (T%d)" % message.thread_id if message.thread_id
                       else b"THREADID NIL")
        else:
            rendered = next(next_content)
            if isinstance(rendered, CommandFailed):
                raise rendered
            out.append(rendered)
    if add_flags:
        out.append(b"FLAGS " + flags)
    return b"(" + b" ".join(out) + b")"


async def _contents(
    session: Session, messages: list[Message], content: tuple[FetchItem, ...], *, head: bool
) -> dict[str, list[bytes | CommandFailed]]:
    """The content items of a chunk of messages by blob id. Items in the session's content
    cache are taken from it; the other messages are read (whole or their header block) and
    rendered: here when the chunk is small, else read in one worker-thread hop, and parsed in
    that thread too when the chunk is big enough to hold the event loop up (BIG_PARSE)."""
    cache = session.content_cache
    cacheable = all(item.name in CACHEABLE for item in content)
    done: dict[str, list[bytes | CommandFailed]] = {}
    missing: list[Message] = []
    for message in messages:
        if cacheable:
            hits = [cache.get_bytes(message.blob_id, item.name) for item in content]
            if all(hit is not None for hit in hits):
                done[message.blob_id] = [hit for hit in hits if hit is not None]
                continue
        missing.append(message)
    if not missing:
        return done
    blob_ids = [m.blob_id for m in missing]
    blobs = session.store.blobs
    volume = sum(m.size for m in missing)
    if len(missing) <= INLINE_READS and (head or volume <= INLINE_BYTES):
        bodies = read_blobs(blobs, blob_ids, head=head)  # a few small files: no thread hop
        rendered = {b: _render_contents(content, data) for b, data in bodies.items()}
    elif head or volume <= BIG_PARSE:
        bodies = await asyncio.to_thread(read_blobs, blobs, blob_ids, head=head)
        rendered = {b: _render_contents(content, data) for b, data in bodies.items()}
    else:
        def work() -> dict[str, list[bytes | CommandFailed]]:
            bodies = read_blobs(blobs, blob_ids, head=False)
            return {b: _render_contents(content, data) for b, data in bodies.items()}

        rendered = await asyncio.to_thread(work)
    for blob_id, items in rendered.items():
        for item, value in zip(content, items, strict=True):
            if item.name in CACHEABLE and isinstance(value, bytes):
                cache.put(blob_id, item.name, value)
    done.update(rendered)
    return done


async def _fetch_columns(
    session: Session,
    selected: Selected,
    wanted: list[int],
    items: tuple[FetchItem, ...],
    *,
    changed_since: int | None,
) -> bool:
    """UID/FLAGS/MODSEQ of most of a mailbox (a client's flag resynchronisation, ``UID FETCH
    1:* (FLAGS)``) from one column read of the mailbox (``snapshot_mailbox``): no object per
    message. Returns whether some wanted message is gone from the store."""
    snapshot = await session.store.snapshot_mailbox(selected.mailbox_id)
    uids, modseqs, flag_ids = snapshot.uids, snapshot.modseqs, snapshot.flag_ids
    local = [selected.flag_sets.id_of(flags) for flags in snapshot.flag_sets]
    rendered = selected.flag_sets.rendered
    recent = selected.recent if selected.legacy else frozenset[int]()
    record = any(i.name == "FLAGS" for i in items)
    view = selected.uids
    gone = False
    at = here = 0  # positions in the snapshot and in the view (both ascending)
    for count, uid in enumerate(wanted, 1):
        at = bisect.bisect_left(uids, uid, at)
        if at == len(uids) or uids[at] != uid:
            gone = True  # expunged by another session: not in the store any more
            continue
        modseq = modseqs[at]
        if changed_since is not None and modseq <= changed_since:
            continue
        here = bisect.bisect_left(view, uid, here)
        flag_id = local[flag_ids[at]]
        if record:  # the client now knows these flags
            selected.flag_ids[here] = flag_id
            selected.modseqs[here] = modseq
        out = []
        for item in items:
            if item.name == "UID":
                out.append(b"UID %d" % uid)
            elif item.name == "FLAGS":
                out.append(b"FLAGS " + rendered(flag_id, recent=uid in recent))
            else:
                out.append(b"MODSEQ (%d)" % modseq)
        session.write(b"* %d FETCH (" % (here + 1) + b" ".join(out) + b")\r\n")
        if count % COLUMN_FLUSH == 0:
            await session.flush()
    await session.flush()
    return gone


def _sets_seen(item: FetchItem) -> bool:
    return item.name in _SETS_SEEN or (item.name in ("BODY[]", "BINARY") and not item.peek)


async def cmd_fetch(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Fetch)
    args = command.args
    selected = session.selected
    assert selected is not None
    items = list(args.items)
    if command.uid and not any(i.name == "UID" for i in items):
        items.insert(0, FetchItem("UID"))  # RFC 9051 §6.4.9: UID FETCH always returns UID
    # RFC 7162 §3.2.6: VANISHED only in UID FETCH, only after ENABLE QRESYNC, and only with
    # CHANGEDSINCE; anything else is a BAD command.
    if args.vanished and (not command.uid or not session.qresync or args.changed_since is None):
        raise CommandFailed("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
                            bad=True)
    if args.changed_since is not None or any(i.name == "MODSEQ" for i in items):
        session.condstore = True  # RFC 7162 §3.1: CONDSTORE-enabling
        if not any(i.name == "MODSEQ" for i in items):
            items.append(FetchItem("MODSEQ"))  # RFC 7162 §3.1.4.1
    wanted = resolve(selected, args.sequence, uid=command.uid)
    if args.vanished and args.changed_since is not None:
        # RFC 7162 §3.2.6: VANISHED (EARLIER) for the set's UIDs expunged since CHANGEDSINCE,
        # before any FETCH response.
        largest = selected.uids[-1] if selected.uids else 0
        vanished = await qresync.expunged_since(session, selected, modseq=args.changed_since,
                                                uids=args.sequence, largest=largest)
        qresync.vanished_earlier(session, vanished)
    gone = any(u in selected.pending_expunge for u in wanted)
    wanted = [u for u in wanted if u not in selected.pending_expunge]
    set_seen = not selected.read_only and any(_sets_seen(i) for i in items)
    wants_flags = any(i.name == "FLAGS" for i in items)
    content = tuple(i for i in items if i.name not in _META)
    head = _header_only(tuple(items))
    if (len(wanted) >= COLUMN_FETCH_MIN and 2 * len(wanted) >= selected.exists
            and all(i.name in _COLUMN_ITEMS for i in items)):
        gone = await _fetch_columns(session, selected, wanted, tuple(items),
                                    changed_since=args.changed_since) or gone
        return Outcome("some messages were expunged", "EXPUNGEISSUED") if gone \
            else Outcome("FETCH completed")
    # Metadata alone is cheap to render: bigger rounds, fewer store reads and flushes.
    batch = session.settings.fetch_batch * (1 if content else 5)
    all_items = tuple(items)
    for start in range(0, len(wanted), batch):
        chunk = wanted[start : start + batch]
        messages = await session.store.get_messages(selected.mailbox_id, chunk)
        gone = gone or len(messages) != len(chunk)
        if args.changed_since is not None:
            messages = [m for m in messages if m.modseq > args.changed_since]
        seen_now: set[int] = set()
        if set_seen:
            unseen = [m.uid for m in messages if SEEN not in m.flags]
            if unseen:
                update = await session.store.update_flags(
                    selected.mailbox_id, unseen, frozenset({SEEN}), op=FlagOp.ADD)
                fresh = {m.uid: m for m in update.updated}
                seen_now = set(fresh)
                messages = [fresh.get(m.uid, m) for m in messages]
        rendered: dict[str, list[bytes | CommandFailed]] = {}
        if content and messages:
            rendered = await _contents(session, messages, content, head=head)
        for message in messages:
            index = selected.index(message.uid)  # in the view: ``wanted`` came from it
            seen = message.uid in seen_now
            # RFC 3501 §2.3.2: \Recent in FLAGS for IMAP4rev1; the client now knows them.
            flags = selected.shown(index, message, record=wants_flags or seen)
            extra: tuple[FetchItem, ...] = ()
            if seen and session.condstore:
                # RFC 7162 §3.2.4: a FETCH that implicitly set \Seen carries UID and MODSEQ.
                extra = tuple(FetchItem(n) for n in ("UID", "MODSEQ")
                              if not any(i.name == n for i in items))
            contents = rendered.get(message.blob_id, [])
            if content and message.blob_id not in rendered:
                gone = True  # expunged (and its blob released) while we were fetching
                continue
            body = _render(message, all_items + extra if extra else all_items, contents,
                           flags=flags, add_flags=seen and not wants_flags)
            session.write(b"* %d FETCH " % (index + 1) + body + b"\r\n")
        await session.flush()
    if gone:
        return Outcome("some messages were expunged", "EXPUNGEISSUED")
    return Outcome("FETCH completed")
