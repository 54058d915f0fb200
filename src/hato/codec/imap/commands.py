"""Typed IMAP commands as the parser produces them (values only, no behaviour).

Covers the commands of RFC 9051 §6 and RFC 3501 §6, plus the arguments added by the extensions
Hato implements: CONDSTORE/QRESYNC (RFC 7162), LIST-EXTENDED/LIST-STATUS (RFC 5258, RFC 5819),
CREATE-SPECIAL-USE (RFC 6154), MULTIAPPEND (RFC 3502), BINARY (RFC 3516), ESEARCH/SEARCHRES
(RFC 4731, RFC 5182), ID (RFC 2971), ENABLE (RFC 5161), MOVE (RFC 6851), UIDPLUS (RFC 4315),
OBJECTID (RFC 8474), SAVEDATE (RFC 8514), WITHIN (RFC 5032).

Also SORT/THREAD (RFC 5256, RFC 5957 DISPLAYFROM/DISPLAYTO), QUOTA (RFC 9208), COMPRESS
(RFC 4978), CATENATE (RFC 4469) and the UTF8 APPEND data extension (RFC 6855 §4).

Left out: METADATA, NOTIFY, ESORT commands (not parsed: BAD).
Mailbox names are kept as sent (modified UTF-7 or UTF-8 is the session's business).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from hato.codec.imap.sequence import SequenceSet


@dataclass(frozen=True, slots=True)
class NoArgs:
    pass


@dataclass(frozen=True, slots=True)
class Login:
    userid: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str  # upper-case
    initial: bytes | None  # decoded SASL-IR initial response (RFC 4959); b"" for "="


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]  # upper-case


@dataclass(frozen=True, slots=True)
class Id:
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class MailboxArg:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class Qresync:
    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    mailbox: str
    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ListCmd:
    """LIST (RFC 9051 §6.3.9, RFC 5258) and LSUB (RFC 3501 §6.3.9)."""

    reference: str
    patterns: tuple[str, ...]
    select_opts: frozenset[str] = frozenset()
    return_opts: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()  # RFC 5819 RETURN (STATUS (...))
    lsub: bool = False
    extended: bool = False  # any RFC 5258 syntax was used


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    items: tuple[str, ...]  # upper-case


@dataclass(frozen=True, slots=True)
class CatText:
    """A CATENATE ``TEXT literal`` part (RFC 4469 §5), or ``UTF8 (literal8)`` (RFC 6855 §4)."""

    data: bytes
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class CatUrl:
    """A CATENATE ``URL astring`` part (RFC 4469 §5): an IMAP URL (RFC 5092)."""

    url: str


CatPart = CatText | CatUrl


@dataclass(frozen=True, slots=True)
class AppendMessage:
    flags: tuple[str, ...]
    internal_date: float | None
    data: bytes
    binary: bool = False
    utf8: bool = False  # RFC 6855 §4: the data came as ``UTF8 (literal8)``
    catenate: tuple[CatPart, ...] = ()  # RFC 4469: the message is built from these parts


@dataclass(frozen=True, slots=True)
class Append:
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True)
class Section:
    """BODY[...] / BINARY[...] section (RFC 9051 §6.4.5)."""

    part: tuple[int, ...] = ()
    text: str | None = None  # HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def render(self) -> str:
        pieces = [".".join(str(p) for p in self.part)] if self.part else []
        if self.text is not None:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return f"[{spec}]"


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One fetch attribute. ``name`` is upper-case: FLAGS, UID, INTERNALDATE, RFC822.SIZE,
    ENVELOPE, BODY (no section: structure), BODYSTRUCTURE, BODY[] (with section), BINARY,
    BINARY.SIZE, RFC822, RFC822.HEADER, RFC822.TEXT, MODSEQ, SAVEDATE, EMAILID, THREADID."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (offset, length)
    peek: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None  # RFC 7162 §3.1.4.1
    vanished: bool = False  # RFC 7162 §3.2.6


@dataclass(frozen=True, slots=True)
class Store:
    sequence: SequenceSet
    mode: str  # "+", "-" or "" (replace)
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True, slots=True)
class CopyMove:
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Expunge:
    sequence: SequenceSet | None  # UID EXPUNGE (RFC 4315 §2.1)


# -- SEARCH keys (RFC 9051 §6.4.4) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyAll:
    pass


@dataclass(frozen=True, slots=True)
class KeyFlag:
    flag: str  # canonical flag or keyword
    present: bool


@dataclass(frozen=True, slots=True)
class KeyRecent:
    """RFC 3501 §6.4.4 RECENT (True) / OLD (False); NEW is RECENT UNSEEN. \\Recent is kept
    per server process (``hato.servers.imap.recent``)."""

    recent: bool


@dataclass(frozen=True, slots=True)
class KeyDate:
    field: str  # "internal", "sent", "saved"
    op: str  # "before", "on", "since"
    date: datetime.date


@dataclass(frozen=True, slots=True)
class KeySize:
    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class KeyHeader:
    name: str  # lower-case header field name
    value: str


@dataclass(frozen=True, slots=True)
class KeyText:
    body_only: bool  # BODY vs TEXT
    value: str


@dataclass(frozen=True, slots=True)
class KeySequence:
    sequence: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class KeyModSeq:
    modseq: int


@dataclass(frozen=True, slots=True)
class KeyWithin:
    older: bool
    seconds: int


@dataclass(frozen=True, slots=True)
class KeyObjectId:
    kind: str  # EMAILID or THREADID
    value: str


@dataclass(frozen=True, slots=True)
class KeySaveDateSupported:
    pass


@dataclass(frozen=True, slots=True)
class KeyNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class KeyOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class KeyAnd:
    keys: tuple[SearchKey, ...]


SearchKey = (
    KeyAll | KeyFlag | KeyRecent | KeyDate | KeySize | KeyHeader | KeyText | KeySequence
    | KeyModSeq | KeyWithin | KeyObjectId | KeySaveDateSupported | KeyNot | KeyOr | KeyAnd
)


@dataclass(frozen=True, slots=True)
class Search:
    key: SearchKey
    charset: str | None = None
    returns: tuple[str, ...] | None = None  # None: plain SEARCH response; () means ALL


@dataclass(frozen=True, slots=True)
class SortCriterion:
    """RFC 5256 §5 sort-criterion (and RFC 5957 DISPLAYFROM/DISPLAYTO); ``key`` upper-case."""

    key: str
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Sort:
    """SORT / UID SORT (RFC 5256 §3): sort criteria, charset, search criteria."""

    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Thread:
    """THREAD / UID THREAD (RFC 5256 §3): algorithm (upper-case), charset, search criteria."""

    algorithm: str
    charset: str
    key: SearchKey


@dataclass(frozen=True, slots=True)
class QuotaRootArg:
    """GETQUOTA quota-root-name (RFC 9208 §4.1.1)."""

    root: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """SETQUOTA quota-root-name setquota-list (RFC 9208 §4.1.3); resource names upper-case."""

    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Compress:
    """COMPRESS algorithm (RFC 4978 §3), upper-case."""

    algorithm: str


Args = (
    NoArgs | Login | Authenticate | Enable | Id | MailboxArg | Select | Create | Rename
    | ListCmd | Status | Append | Fetch | Store | CopyMove | Expunge | Search | Sort | Thread
    | QuotaRootArg | SetQuota | Compress
)


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str  # upper-case command name (without the UID prefix)
    args: Args = NoArgs()
    uid: bool = False
