"""SORT and UID SORT: search, then order the result by the RFC 5256 sort criteria.

Implements RFC 5256 §3 SORT (ARRIVAL, CC, DATE, FROM, REVERSE, SIZE, SUBJECT, TO; ascending;
REVERSE turns only the criterion that follows; ties fall back to the sequence number; an
absent header is the empty string, which collates first), §2.1 base subject, §2.2 sent date
(the Date field in UTC, the internal date when it is missing or unparseable), §4 the SORT
response, §7 the i;unicode-casemap collation (``hato.codec.imap.basesubject``), RFC 5957 §3
DISPLAYFROM/DISPLAYTO (the RFC 2047-decoded display name of the first address, its addr-spec
when the display name is empty or absent), and RFC 7162 §3.1.9 (``(MODSEQ n)`` at the end of
the SORT response when the criteria use MODSEQ). The header facts of each message are read
once (``MessageFacts``), also for ``thread.py``.

Left out: ESORT (RFC 5267) return options; only the header block of a message is read (sort
keys never need the body).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from hato.codec.imap.basesubject import BaseSubject, base_subject, collation_key
from hato.codec.imap.commands import (
    Command,
    KeyAnd,
    KeyModSeq,
    KeyNot,
    KeyOr,
    SearchKey,
    Sort,
    SortCriterion,
)
from hato.codec.imap.threads import msg_ids, references_of
from hato.codec.mime import EnvelopeAddress, decode_words, envelope, parse_message
from hato.codec.mime.headers import header_bytes_to_str, unfold
from hato.servers.imap.outcome import Outcome
from hato.servers.imap.search import matching
from hato.servers.imap.session import Session
from hato.store.api import BlobStore
from hato.store.model import Message

MAX_HEADER = 256 * 1024  # header bytes read per message for sorting and threading
_BATCH = 200  # messages whose headers are read in one thread hop


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageFacts:
    """What SORT and THREAD need of one message's header."""

    message: Message
    seq: int
    subject: BaseSubject
    sent: float
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str
    message_id: str | None
    references: tuple[str, ...]


def _header_block(blobs: BlobStore, blob_id: str) -> bytes:
    """The message's header (up to the blank line, at most MAX_HEADER octets)."""
    data = b""
    with blobs.open(blob_id) as handle:
        while len(data) < MAX_HEADER:
            chunk = handle.read(16384)
            if not chunk:
                break
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                return data[: end + 4]
            end = data.find(b"\n\n")
            if end >= 0:
                return data[: end + 2]
    return data[:MAX_HEADER]


def _mailbox(addresses: tuple[EnvelopeAddress, ...] | None) -> str:
    """RFC 5256 §3: the IMAP addr-mailbox of the first address ("" when there is none)."""
    if not addresses:
        return ""
    return addresses[0].mailbox or ""


def _display(addresses: tuple[EnvelopeAddress, ...] | None) -> str:
    """RFC 5957 §3: the decoded display name of the first address, else its addr-spec."""
    if not addresses:
        return ""
    first = addresses[0]
    name = decode_words(first.name).strip() if first.name else ""
    if name:
        return name
    if first.host is None:
        return first.mailbox or ""  # a group marker: its group name
    return f"{first.mailbox or ''}@{first.host}"


def _facts(message: Message, *, seq: int, header: bytes) -> MessageFacts:
    root = parse_message(header)
    env = envelope(root, header)
    # RFC 5256 §2.2: the Date in UTC; the internal date when there is no usable Date.
    sent = env.date_value.timestamp() if env.date_value is not None else message.internal_date
    references = root.header("references")
    ids = msg_ids(env.message_id)
    return MessageFacts(
        message=message,
        seq=seq,
        subject=base_subject(env.subject_text),
        sent=sent,
        from_=_mailbox(env.from_),
        to=_mailbox(env.to),
        cc=_mailbox(env.cc),
        display_from=_display(env.from_),
        display_to=_display(env.to),
        message_id=ids[0] if ids else None,
        references=references_of(
            header_bytes_to_str(unfold(references.raw)) if references is not None else None,
            env.in_reply_to,
        ),
    )


async def message_facts(session: Session, messages: Sequence[Message]) -> list[MessageFacts]:
    """The header facts of ``messages`` (which are in the selected view), in their order."""
    selected = session.selected
    assert selected is not None
    blobs = session.store.blobs
    out: list[MessageFacts] = []
    for start in range(0, len(messages), _BATCH):
        chunk = messages[start : start + _BATCH]

        def read(batch: Sequence[Message] = chunk) -> list[bytes | None]:
            headers: list[bytes | None] = []
            for message in batch:
                try:
                    headers.append(_header_block(blobs, message.blob_id))
                except FileNotFoundError:
                    headers.append(None)  # expunged meanwhile: sorted as an empty message
            return headers

        for message, header in zip(chunk, await asyncio.to_thread(read), strict=True):
            out.append(_facts(message, seq=selected.seq_of(message.uid), header=header or b"\r\n"))
    return out


def _value(facts: MessageFacts, key: str) -> float | int | bytes:
    if key == "ARRIVAL":
        return facts.message.internal_date
    if key == "DATE":
        return facts.sent
    if key == "SIZE":
        return facts.message.size
    if key == "SUBJECT":
        return collation_key(facts.subject.text)
    text = {"FROM": facts.from_, "TO": facts.to, "CC": facts.cc,
            "DISPLAYFROM": facts.display_from, "DISPLAYTO": facts.display_to}[key]
    return collation_key(text)


def sort_facts(facts: list[MessageFacts], criteria: Sequence[SortCriterion]) -> list[MessageFacts]:
    """RFC 5256 §3: by each criterion in turn (REVERSE: that one descending), then by
    sequence number."""
    values = {id(f): [_value(f, c.key) for c in criteria] for f in facts}

    def compare(a: MessageFacts, b: MessageFacts) -> int:
        for index, criterion in enumerate(criteria):
            left, right = values[id(a)][index], values[id(b)][index]
            if left != right:
                ascending = -1 if left < right else 1  # type: ignore[operator]
                return -ascending if criterion.reverse else ascending
        return (a.seq > b.seq) - (a.seq < b.seq)

    return sorted(facts, key=functools.cmp_to_key(compare))


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


async def cmd_sort(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Sort)
    args = command.args
    selected = session.selected
    assert selected is not None
    with_modseq = _uses_modseq(args.key)
    if with_modseq:
        session.condstore = True  # RFC 7162 §3.1: MODSEQ in a search is CONDSTORE-enabling
    matched = await matching(session, selected, args.key)
    ordered = sort_facts(await message_facts(session, matched), args.criteria)
    # RFC 5256 §4: message sequence numbers, or UIDs for UID SORT.
    numbers = [f.message.uid if command.uid else f.seq for f in ordered]
    line = b"SORT" + b"".join(b" %d" % n for n in numbers)
    if with_modseq and numbers:
        # RFC 7162 §3.1.9: the highest MODSEQ of the returned messages.
        line += b" (MODSEQ %d)" % max(f.message.modseq for f in ordered)
    session.untagged(line)
    return Outcome("SORT completed")
