"""Domain types at the store boundary: never wire types (no IMAP sequence sets, no SMTP replies).

Times are POSIX seconds (float, UTC). Flags are strings: the RFC 9051 §2.3.2 system flags
(``\\Seen`` ...) and keywords (``$Forwarded``, ``Junk`` ...); matching of system flags is
case-insensitive on input, so backends store them in the canonical spelling below.
"""

from __future__ import annotations

import enum
import unicodedata
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hato.core.errors import UsageError

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
SYSTEM_FLAGS = (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)
_CANONICAL_SYSTEM = {f.lower(): f for f in SYSTEM_FLAGS}

INBOX = "INBOX"
# RFC 6154 §2 special-use attributes of the mailboxes every new account gets.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    (INBOX, None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)
SPECIAL_USES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)
HIERARCHY_SEPARATOR = "/"


def canonical_flag(flag: str) -> str:
    """System flags in canonical case; keywords unchanged (RFC 9051 §2.3.2)."""
    return _CANONICAL_SYSTEM.get(flag.lower(), flag)


def canonical_flags(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(canonical_flag(f) for f in flags)


@dataclass(frozen=True, slots=True)
class Domain:
    name: str  # canonical (lower-case U-label) form, see hato.core.address.normalize_domain


@dataclass(frozen=True, slots=True)
class Credentials:
    """What is stored for password checks: an argon2id hash, and SCRAM keys.

    ``scram_sha256`` and ``scram_sha1`` are ``"<iterations>$<b64 salt>$<b64 StoredKey>$<b64
    ServerKey>"`` (RFC 5802 §3; RFC 7677 for SHA-256), derived when the password is set; None
    disables that SCRAM mechanism for the account (accounts made before SCRAM-SHA-1 existed get
    its keys at their next password login).
    """

    password_hash: str
    scram_sha256: str | None = None
    scram_sha1: str | None = None


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str  # canonical lookup key, local@domain (see Address.key)
    domain: str
    credentials: Credentials = field(repr=False)
    quota_bytes: int | None  # None: unlimited
    enabled: bool
    used_bytes: int = 0
    message_count: int = 0


@dataclass(frozen=True, slots=True)
class Alias:
    """One address that expands to several targets: local account keys or remote addresses."""

    source: str  # canonical key; "@domain" is a catch-all for that domain
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    account_id: int
    name: str  # full hierarchical name, "/"-separated, NFC UTF-8 (RFC 9051 §5.1)
    uidvalidity: int
    uidnext: int
    special_use: str | None
    subscribed: bool
    highest_modseq: int  # highest MODSEQ of any message in this mailbox (RFC 7162 §3.1.2.1)
    message_count: int = 0
    unseen_count: int = 0
    size_bytes: int = 0


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A stored message body: content-addressed (SHA-256 hex of its bytes)."""

    id: str
    size: int


@dataclass(frozen=True, slots=True)
class Message:
    mailbox_id: int
    uid: int
    blob_id: str
    size: int
    internal_date: float
    flags: frozenset[str]
    modseq: int
    saved_date: float
    email_id: int  # RFC 8474 OBJECTID EMAILID: the same for every copy of one delivered message
    thread_id: int  # RFC 8474 §5.2 THREADID: fixed when stored, the same for every copy


@dataclass(frozen=True, slots=True)
class MailboxSnapshot:
    """Every message of one mailbox in UID order, as columns rather than one object each: what
    an IMAP session keeps of its selected mailbox. ``flag_ids[i]`` indexes ``flag_sets``
    (each distinct flag set once). The arrays are fresh for each snapshot: the caller owns
    them. ``account_modseq`` and ``highest_modseq`` (the mailbox's, RFC 7162 §3.1.2.1) are
    read in the same transaction as the messages."""

    mailbox: Mailbox
    account_modseq: int
    uids: array[int]  # typecode "I": RFC 9051 §9 nz-number fits 32 bits
    modseqs: array[int]  # typecode "Q"
    flag_ids: array[int]  # typecode "I"
    flag_sets: tuple[frozenset[str], ...]


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """Where one recipient's copy goes; a missing mailbox falls back to INBOX."""

    account_id: int
    mailbox: str = INBOX
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Appended:
    account_id: int
    mailbox_id: int
    uid: int
    modseq: int
    uidvalidity: int


class FlagOp(enum.Enum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """Result of update_flags: the messages whose flags now are as listed (with new modseq),
    and the UIDs refused by an UNCHANGEDSINCE test (RFC 7162 §3.1.3)."""

    updated: tuple[Message, ...]
    modified: tuple[int, ...]  # uids failing UNCHANGEDSINCE


class ChangeKind(enum.Enum):
    MESSAGE_ADDED = "message_added"
    FLAGS_CHANGED = "flags_changed"
    MESSAGE_EXPUNGED = "message_expunged"
    MAILBOX_CREATED = "mailbox_created"
    MAILBOX_DELETED = "mailbox_deleted"
    MAILBOX_RENAMED = "mailbox_renamed"
    MAILBOX_SUBSCRIPTION = "mailbox_subscription"


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of an account's change log; ``uid`` is None for mailbox-level changes."""

    modseq: int
    kind: ChangeKind
    mailbox_id: int
    uid: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    used_bytes: int
    message_count: int
    quota_bytes: int | None


# -- Sieve scripts (RFC 5804 §1.4-§1.6) ------------------------------------------------------
MAX_SCRIPT_NAME = 512  # characters; RFC 5804 §1.6: servers MUST allow at least 128
_NAME_FORBIDDEN = {"\u2028", "\u2029"}  # RFC 5804 §1.6: LINE and PARAGRAPH SEPARATOR


def script_name(name: str) -> str:
    """The stored (NFC) form of a Sieve script name; UsageError naming the problem."""
    name = unicodedata.normalize("NFC", name)  # RFC 5804 §1.6: Net-Unicode (RFC 5198 §2)
    if not name:
        raise UsageError("a script name must not be empty")  # RFC 5804 §1.6
    for ch in name:
        # RFC 5804 §1.6: no 0000-001F, 007F, 0080-009F, 2028, 2029
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in _NAME_FORBIDDEN:
            raise UsageError(f"script name {name[:40]!r} contains a forbidden character")
        if unicodedata.category(ch) == "Cs":
            raise UsageError("script name contains a lone surrogate")
    if len(name) > MAX_SCRIPT_NAME:
        # RFC 5804 §1.6: refuse, never truncate, a name over the limit
        raise UsageError(f"script name is longer than {MAX_SCRIPT_NAME} characters")
    return name


@dataclass(frozen=True, slots=True)
class SieveScript:
    """One of an account's Sieve scripts; at most one per account is active (RFC 5804 §1.4)."""

    account_id: int
    name: str
    content: str
    active: bool
    updated: float

    @property
    def size(self) -> int:
        """Octets of the UTF-8 content (what quotas and HAVESPACE count)."""
        return len(self.content.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ScriptQuota:
    """Per-account limits on Sieve scripts (RFC 5804 §1.5); None: unlimited."""

    max_scripts: int | None = None
    max_script_size: int | None = None  # octets of one script
    max_total_size: int | None = None  # octets of all scripts of the account

    def problem(self, sizes: Mapping[str, int], name: str, size: int) -> str | None:
        """Which limit storing ``size`` octets as ``name`` would break, given the account's
        current ``sizes`` by name (a script of the same name is replaced): "size", "count",
        "total" or None (the ``limit`` of ScriptQuotaExceeded)."""
        if self.max_script_size is not None and size > self.max_script_size:
            return "size"
        replaced = name in sizes
        if self.max_scripts is not None and not replaced and len(sizes) >= self.max_scripts:
            return "count"
        total = sum(sizes.values()) - sizes.get(name, 0) + size
        if self.max_total_size is not None and total > self.max_total_size:
            return "total"
        return None
