"""Domain types of the outbound queue at the store boundary: entries, states, transitions.

A queue entry is one message for one destination domain (recipients are grouped by
destination when the message is queued), with per-recipient status. Its state is explicit
(CONVENTIONS.md §9): ``QueueState`` with the allowed transitions in ``TRANSITIONS``; the store
checks every change against that table and applies it in one atomic unit of work.
The DSN fields keep what RFC 3461 §4 parameters said at submission (RET, ENVID, NOTIFY,
ORCPT) so bounces and relaying can honour them.

Leaves out: scheduling policy (retry delays, expiry, concurrency) which is
``hato.outbound.queue``'s; wire types (no SMTP replies here, only their text).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hato.store.model import BlobRef, DeliveryTarget


class QueueState(enum.Enum):
    QUEUED = "queued"  # waiting for its first (or an immediate) attempt
    ACTIVE = "active"  # claimed by the queue runner: an attempt is in flight
    DEFERRED = "deferred"  # a temporary failure: waits until next_attempt
    HELD = "held"  # stopped by an administrator until released
    DELIVERED = "delivered"  # final: every recipient done, none failed
    BOUNCED = "bounced"  # final: at least one recipient failed (a DSN was generated)

    @property
    def final(self) -> bool:
        return self in (QueueState.DELIVERED, QueueState.BOUNCED)


_Q = QueueState
# Allowed state changes. ACTIVE -> QUEUED is crash recovery (an attempt that never reported).
TRANSITIONS: dict[QueueState, frozenset[QueueState]] = {
    _Q.QUEUED: frozenset({_Q.ACTIVE, _Q.HELD, _Q.BOUNCED}),
    _Q.ACTIVE: frozenset({_Q.DELIVERED, _Q.BOUNCED, _Q.DEFERRED, _Q.QUEUED, _Q.HELD}),
    _Q.DEFERRED: frozenset({_Q.ACTIVE, _Q.QUEUED, _Q.HELD, _Q.BOUNCED}),
    _Q.HELD: frozenset({_Q.QUEUED, _Q.BOUNCED}),
    _Q.DELIVERED: frozenset(),
    _Q.BOUNCED: frozenset(),
}
# States whose entries still need their body (their blob stays referenced).
LIVE_STATES = tuple(s for s in QueueState if not s.final)


def allowed(current: QueueState, new: QueueState) -> bool:
    return new in TRANSITIONS[current]


class RcptStatus(enum.Enum):
    PENDING = "pending"  # not yet delivered (maybe deferred: see ``reply``)
    DELIVERED = "delivered"  # the next hop accepted it (2yz to the end of data)
    FAILED = "failed"  # permanent failure (5yz, or expired)


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    """One forward-path of a queue entry and how it fared.

    ``notify`` is None when no NOTIFY was given, empty for NOTIFY=NEVER, else a subset of
    {"SUCCESS", "FAILURE", "DELAY"} (RFC 3461 §4.1); ``orcpt`` is ``addr-type;address``
    decoded (RFC 3461 §4.2).
    """

    address: str
    notify: frozenset[str] | None = None
    orcpt: str | None = None
    status: RcptStatus = RcptStatus.PENDING
    reply: str | None = None  # the last reply about this recipient (remote text quoted)
    remote_mta: str | None = None  # host that gave ``reply``

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class NewQueueEntry:
    """A message to queue for one destination. ``sender`` is "" for the null reverse-path."""

    blob: BlobRef
    sender: str
    recipients: tuple[QueueRecipient, ...]
    expires: float
    next_attempt: float | None = None  # None: now
    account_id: int | None = None  # the submitting account (DSNs go to its INBOX)
    envid: str | None = None  # RFC 3461 §4.4
    ret: str | None = None  # "FULL" / "HDRS" (RFC 3461 §4.3)
    body: str = "7BIT"  # "7BIT" / "8BITMIME" / "BINARYMIME"
    smtputf8: bool = False
    requiretls: bool = False  # RFC 8689 §4.1 tagged by REQUIRETLS
    tls_optional: bool = False  # RFC 8689 §5 "TLS-Required: No"
    strip_prefix: int = 0  # octets at the start of the blob not to send (Return-Path)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: int
    state: QueueState
    blob_id: str
    size: int
    sender: str
    recipients: tuple[QueueRecipient, ...]
    created: float
    expires: float
    next_attempt: float
    attempts: int
    account_id: int | None = None
    envid: str | None = None
    ret: str | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    requiretls: bool = False
    tls_optional: bool = False
    strip_prefix: int = 0
    last_error: str | None = None
    delay_notified: bool = False
    updated: float = 0.0

    @property
    def domain(self) -> str:
        return self.recipients[0].domain if self.recipients else ""

    @property
    def pending(self) -> tuple[int, ...]:
        """Indexes of the recipients still to deliver."""
        return tuple(i for i, r in enumerate(self.recipients) if r.status is RcptStatus.PENDING)


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    index: int
    status: RcptStatus
    reply: str | None = None
    remote_mta: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A generated message (a DSN) stored in the same unit of work as a queue transition:
    copies into local mailboxes and/or new queue entries, all sharing ``blob``."""

    blob: BlobRef
    local: tuple[DeliveryTarget, ...] = ()
    remote: tuple[NewQueueEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """One atomic change of a queue entry (checked against ``TRANSITIONS``)."""

    state: QueueState
    next_attempt: float | None = None  # None: unchanged
    last_error: str | None = None
    recipients: tuple[RecipientUpdate, ...] = ()
    attempted: bool = False  # count one more delivery attempt
    delay_notified: bool | None = None
    notice: Notice | None = None
    expected: frozenset[QueueState] = field(default_factory=frozenset)  # empty: any allowed
