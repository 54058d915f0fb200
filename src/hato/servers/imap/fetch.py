"""FETCH and UID FETCH: message data items rendered from the store and the MIME codec.

Implements RFC 9051 §6.4.5 and §7.5.2: FLAGS, UID (always sent for UID FETCH), INTERNALDATE,
RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, BODY[section]<partial> and BODY.PEEK (HEADER,
HEADER.FIELDS[.NOT], TEXT, MIME, part numbers; a non-PEEK fetch sets \\Seen and reports the
new FLAGS, never in a read-only mailbox), RFC 3501 RFC822, RFC822.HEADER, RFC822.TEXT; RFC 3516
BINARY[section]<partial>, BINARY.PEEK and BINARY.SIZE (literal8 when the data holds NUL,
UNKNOWN-CTE for encodings Hato cannot undo); RFC 7162 §3.1.4 MODSEQ and CHANGEDSINCE; RFC 8514
SAVEDATE; RFC 8474 EMAILID and THREADID (always NIL: RFC 8474 §5.2 allows a server without a
stable per-account thread id to return NIL; THREAD=REFERENCES threads are computed per search,
per mailbox, so they are not such an id); RFC 7162 §3.2.6 the VANISHED modifier (VANISHED
(EARLIER) from ``qresync.py``) and §3.2.4 (UID and MODSEQ in FETCH responses of an implicit
\\Seen once CONDSTORE is on); RFC 3501 §2.3.2 \\Recent in FLAGS for IMAP4rev1 sessions.
Messages expunged by another session before this one was told are skipped with OK
[EXPUNGEISSUED] (RFC 5530).

Left out: PREVIEW (RFC 8970).
"""

from __future__ import annotations

import asyncio

from hato.codec.imap import response
from hato.codec.imap.bodystructure import envelope_of, render_body
from hato.codec.imap.commands import Command, Fetch, FetchItem, Section
from hato.codec.mime import Part, decode_body, decode_encapsulated, find_section, parse_message
from hato.servers.imap import qresync
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.selected import resolve
from hato.servers.imap.session import Session
from hato.store.model import SEEN, FlagOp, Message

_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
_SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})
_NEEDS_BLOB = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE", "BODY[]", "BINARY", "BINARY.SIZE",
                         "RFC822", "RFC822.HEADER", "RFC822.TEXT"})


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


class _Loaded:
    """A message's bytes and part tree, read and parsed at most once per FETCH."""

    def __init__(self, session: Session, message: Message) -> None:
        self._session = session
        self._message = message
        self.data: bytes | None = None
        self._root: Part | None = None

    async def load(self) -> bytes:
        if self.data is None:
            self.data = await asyncio.to_thread(
                self._session.store.blobs.read, self._message.blob_id)
        return self.data

    def root(self) -> Part:
        assert self.data is not None
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root


async def _render(
    session: Session, message: Message, items: tuple[FetchItem, ...], *, add_flags: bool
) -> bytes:
    loaded = _Loaded(session, message)
    if any(item.name in _NEEDS_BLOB for item in items):
        await loaded.load()
    out: list[bytes] = []
    for item in items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % message.uid)
        elif name == "FLAGS":
            out.append(b"FLAGS " + response.flag_list(_flags(session, message)))
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
            out.append(b"THREADID NIL")
        elif name == "ENVELOPE":
            out.append(b"ENVELOPE " + envelope_of(loaded.root(), await loaded.load()))
        elif name in ("BODY", "BODYSTRUCTURE"):
            body = render_body(loaded.root(), await loaded.load(), extensible=name != "BODY")
            out.append(name.encode("ascii") + b" " + body)
        elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            section = Section((), {"RFC822": None, "RFC822.HEADER": "HEADER",
                                   "RFC822.TEXT": "TEXT"}[name])
            data = section_bytes(loaded.root(), await loaded.load(), section) or b""
            out.append(name.encode("ascii") + b" " + response.literal(data))
        elif name == "BODY[]":
            assert item.section is not None
            data = section_bytes(loaded.root(), await loaded.load(), item.section) or b""
            data, origin = _partial(data, item.partial)
            label = b"BODY" + item.section.render().encode("utf-8") + origin
            out.append(label + b" " + response.literal(data))
        elif name in ("BINARY", "BINARY.SIZE"):
            assert item.section is not None
            raw = binary_bytes(loaded.root(), await loaded.load(), item.section)
            label = name.encode("ascii") + item.section.render().encode("ascii")
            if name == "BINARY.SIZE":
                out.append(label + b" %d" % len(raw or b""))
            elif raw is None:
                out.append(label + b" NIL")
            else:
                raw, origin = _partial(raw, item.partial)
                out.append(label + origin + b" " + response.literal(raw, binary=b"\x00" in raw))
    if add_flags:
        out.append(b"FLAGS " + response.flag_list(_flags(session, message)))
    return b"(" + b" ".join(out) + b")"


def _flags(session: Session, message: Message) -> list[str]:
    """The FLAGS to show: with \\Recent for IMAP4rev1 sessions (RFC 3501 §2.3.2)."""
    if session.selected is not None:
        return session.selected.flags_of(message)
    return response.sorted_flags(message.flags)


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
    batch = session.settings.fetch_batch
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
        for message in messages:
            if wants_flags or message.uid in seen_now:
                selected.remember(message)  # the client now knows these flags
            extra: tuple[FetchItem, ...] = ()
            if message.uid in seen_now and session.condstore:
                # RFC 7162 §3.2.4: a FETCH that implicitly set \Seen carries UID and MODSEQ.
                extra = tuple(FetchItem(n) for n in ("UID", "MODSEQ")
                              if not any(i.name == n for i in items))
            try:
                body = await _render(session, message, tuple(items) + extra,
                                     add_flags=message.uid in seen_now and not wants_flags)
            except FileNotFoundError:
                gone = True  # expunged (and its blob released) while we were fetching
                continue
            session.write(b"* %d FETCH " % selected.seq_of(message.uid) + body + b"\r\n")
        await session.flush()
    if gone:
        return Outcome("some messages were expunged", "EXPUNGEISSUED")
    return Outcome("FETCH completed")
