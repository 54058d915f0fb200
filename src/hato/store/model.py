"""Domain types at the store boundary: never wire types (no IMAP sequence sets, no SMTP replies).

Times are POSIX seconds (float, UTC). Flags are strings: the RFC 9051 §2.3.2 system flags
(``\\Seen`` ...) and keywords (``$Forwarded``, ``Junk`` ...); matching of system flags is
case-insensitive on input, so backends store them in the canonical spelling below.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    """What is stored for password checks: an argon2id hash, and SCRAM-SHA-256 keys.

    ``scram_sha256`` is ``"<iterations>$<b64 salt>$<b64 StoredKey>$<b64 ServerKey>"``
    (RFC 5802 §3, RFC 7677), derived when the password is set; None disables SCRAM.
    """

    password_hash: str
    scram_sha256: str | None = None


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
