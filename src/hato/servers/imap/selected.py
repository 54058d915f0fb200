"""The selected-mailbox snapshot of one IMAP session and its synchronisation with the store.

Implements RFC 9051 §2.3.1.2 (message sequence numbers are positions in this session's view,
changed only by EXPUNGE responses this session sends), §5.2 and §7.4 (EXISTS, EXPUNGE and
FETCH FLAGS updates for other sessions' and deliveries' changes), §7.5.1 (EXPUNGE responses
never while FETCH, STORE or SEARCH runs: expunges wait in ``pending_expunge`` until a command
that allows them), RFC 7162 §3.1.4 (MODSEQ in unsolicited FETCH once CONDSTORE is enabled).
Changes are read from ``MailStore.changes_since`` (the per-account change log), so several
connections, POP3 and local delivery on one mailbox stay consistent.

With QRESYNC enabled (RFC 7162 §3.2.10.2) expunges are announced as one ``VANISHED uid-set``
instead of EXPUNGE responses. The HIGHESTMODSEQ the session reports is per mailbox (RFC 7162
§3.1.2.1): the mailbox's highest MODSEQ when it was opened, raised by every change of this
mailbox the session has been told about; while expunges wait (RFC 7162 §3.2, §6) it is held
below the lowest waiting expunge. \\Recent (RFC 3501 §2.3.2) comes from the process-wide
claims in ``recent.py`` and is shown to IMAP4rev1 sessions only.

Left out: nothing of the above.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hato.codec.imap import response
from hato.codec.imap.sequence import STAR, SequenceSet, SequenceSetError, format_set
from hato.servers.imap.cache import FrozenView, ViewCache
from hato.servers.imap.outcome import CommandFailed
from hato.servers.imap.recent import RecentClaims
from hato.store.api import MailStore
from hato.store.model import SEEN, SYSTEM_FLAGS, ChangeKind, Mailbox, Message

RECENT = "\\Recent"
KEEP_VIEW_ABOVE = 4096  # views of mailboxes with more messages are kept for the next SELECT


class MailboxGone(Exception):
    """The selected mailbox was deleted by another session."""


class FlagSets:
    """The distinct flag sets of one view, each stored once and named by its index; with the
    rendered flag list of each (RFC 9051 §7.5.2 FLAGS) cached on first use."""

    __slots__ = ("_ids", "_rendered", "sets")

    def __init__(self, sets: Iterable[frozenset[str]] = ()) -> None:
        self.sets: list[frozenset[str]] = list(sets)
        self._ids = {flags: i for i, flags in enumerate(self.sets)}
        self._rendered: dict[tuple[int, bool], bytes] = {}

    def id_of(self, flags: frozenset[str]) -> int:
        index = self._ids.get(flags)
        if index is None:
            index = self._ids[flags] = len(self.sets)
            self.sets.append(flags)
        return index

    def rendered(self, index: int, *, recent: bool) -> bytes:
        """``(\\Seen ...)``, with \\Recent appended when ``recent`` (RFC 3501 §2.3.2)."""
        key = (index, recent)
        text = self._rendered.get(key)
        if text is None:
            flags = response.sorted_flags(self.sets[index])
            if recent:
                flags.append(RECENT)
            text = self._rendered[key] = response.flag_list(flags)
        return text


@dataclass(slots=True, eq=False)
class Selected:
    """What one session knows of its selected mailbox: UIDs in sequence order, each message's
    MODSEQ and flags as last reported to the client, and the account MODSEQ the view is
    current to. Kept as parallel arrays (4 + 8 + 4 bytes a message) with the distinct flag
    sets in ``flag_sets``: no object per message, so an idle session on a big mailbox is
    small."""

    mailbox_id: int
    name: str
    uidvalidity: int
    read_only: bool
    uids: array[int]  # ascending; position + 1 is the message sequence number
    modseq: int  # account MODSEQ the view is current to (the change-log watermark)
    modseqs: array[int] = field(default_factory=lambda: array("Q"))
    flag_ids: array[int] = field(default_factory=lambda: array("I"))
    flag_sets: FlagSets = field(default_factory=FlagSets)
    pending_expunge: set[int] = field(default_factory=set)
    saved: list[int] = field(default_factory=list)  # RFC 5182 SEARCHRES "$" (UIDs)
    highest: int = 0  # RFC 7162 §3.1.2.1 per-mailbox HIGHESTMODSEQ known to the client
    expunge_modseq: dict[int, int] = field(default_factory=dict)  # waiting expunges' MODSEQs
    recent: set[int] = field(default_factory=set)  # RFC 3501 §2.3.2: \Recent for this session
    legacy: bool = True  # an IMAP4rev1 session: \Recent is shown
    claims: RecentClaims | None = None

    @property
    def reported_highest(self) -> int:
        """HIGHESTMODSEQ to report: below every expunge not yet announced (RFC 7162 §3.2:
        "the server MUST send the HIGHESTMODSEQ response code with a lower value than the
        EXPUNGE's mod-sequence")."""
        if self.expunge_modseq:
            return max(min(min(self.expunge_modseq.values()) - 1, self.highest), 1)
        return max(self.highest, 1)

    @property
    def exists(self) -> int:
        return len(self.uids)

    # -- lookups ---------------------------------------------------------------------------
    def index(self, uid: int) -> int:
        """Position of ``uid`` in the view, or -1 when it is not there."""
        uids = self.uids
        i = bisect.bisect_left(uids, uid)
        return i if i < len(uids) and uids[i] == uid else -1

    def __contains__(self, uid: int) -> bool:
        return self.index(uid) >= 0

    def seq_of(self, uid: int) -> int:
        """1-based sequence number of ``uid`` (which must be in the view)."""
        return bisect.bisect_left(self.uids, uid) + 1

    def flags(self, uid: int) -> frozenset[str]:
        """The flags of ``uid`` (in the view) as last reported."""
        return self.flag_sets.sets[self.flag_ids[self.index(uid)]]

    def modseq_of(self, uid: int) -> int:
        """The MODSEQ of ``uid`` (in the view) as last reported."""
        return self.modseqs[self.index(uid)]

    def uidnext_hint(self) -> int:
        return (self.uids[-1] + 1) if self.uids else 1

    def keywords(self) -> list[str]:
        """The keywords set on some message of the view (RFC 9051 §7.3.5 FLAGS), sorted."""
        sets = self.flag_sets.sets
        used = {flag for i in set(self.flag_ids) for flag in sets[i]}
        return sorted(used - set(SYSTEM_FLAGS))

    def first_unseen(self) -> int | None:
        """Sequence number of the first message without \\Seen (RFC 3501 §7.1 UNSEEN)."""
        present = set(self.flag_ids)
        firsts = [self.flag_ids.index(i) for i, flags in enumerate(self.flag_sets.sets)
                  if SEEN not in flags and i in present]  # array.index: a C-level scan
        return min(firsts) + 1 if firsts else None

    def freeze(self) -> FrozenView:
        """A copy of the view for ``ViewCache`` (the arrays are copied: C-level)."""
        return FrozenView(uids=array("I", self.uids), modseqs=array("Q", self.modseqs),
                          flag_ids=array("I", self.flag_ids),
                          flag_sets=tuple(self.flag_sets.sets), modseq=self.modseq,
                          highest=self.highest)

    # -- changes ---------------------------------------------------------------------------
    def record(self, uid: int, flags: frozenset[str], modseq: int) -> bool:
        """Note ``uid``'s flags and MODSEQ as now reported; False if it is not in the view."""
        i = self.index(uid)
        if i < 0:
            return False
        self.flag_ids[i] = self.flag_sets.id_of(flags)
        self.modseqs[i] = modseq
        return True

    def shown(self, index: int, message: Message, *, record: bool) -> bytes:
        """The rendered FLAGS of ``message``, at ``index`` in the view (with \\Recent when
        due); with ``record`` the view notes its flags and MODSEQ as now reported."""
        flag_id = self.flag_sets.id_of(message.flags)
        if record:
            self.flag_ids[index] = flag_id
            self.modseqs[index] = message.modseq
        return self.flag_sets.rendered(flag_id,
                                       recent=self.legacy and message.uid in self.recent)

    def remember(self, message: Message) -> None:
        self.record(message.uid, message.flags, message.modseq)

    def add(self, message: Message) -> None:
        """Append a new message (its UID is above every UID of the view)."""
        self.uids.append(message.uid)
        self.modseqs.append(message.modseq)
        self.flag_ids.append(self.flag_sets.id_of(message.flags))

    def remove(self, uid: int) -> int:
        """Drop ``uid`` from the view; return the sequence number it had."""
        index = bisect.bisect_left(self.uids, uid)
        del self.uids[index]
        del self.modseqs[index]
        del self.flag_ids[index]
        self.pending_expunge.discard(uid)
        self.expunge_modseq.pop(uid, None)
        self.recent.discard(uid)
        return index + 1

    def announce_expunged(
        self, uids: Iterable[int], *, vanished: bool, write: Callable[[bytes], None]
    ) -> None:
        """Remove ``uids`` (those in the view) and tell the client: one ``VANISHED uid-set``
        once QRESYNC is enabled (RFC 7162 §3.2.10.2: only UIDs the client knows), else an
        EXPUNGE per message, highest sequence number first (RFC 9051 §7.5.1)."""
        gone = sorted({u for u in uids if u in self}, reverse=True)
        if not gone:
            return
        if vanished:
            for uid in gone:
                self.remove(uid)
            write(response.untagged(b"VANISHED " + format_set(gone).encode("ascii")))
            return
        for uid in gone:
            write(response.untagged(b"%d EXPUNGE" % self.remove(uid)))


def _discard(data: bytes) -> None:
    """Where the untagged responses of bringing a kept view up to date go: the client has
    not seen that view, it learns the result from SELECT's own responses."""


async def open_selected(
    store: MailStore,
    mailbox: Mailbox,
    *,
    read_only: bool,
    display_name: str,
    claims: RecentClaims | None = None,
    legacy: bool = True,
    views: ViewCache | None = None,
) -> Selected:
    key = (mailbox.id, mailbox.uidvalidity)
    selected: Selected | None = None
    keep = views is not None and mailbox.message_count > KEEP_VIEW_ABOVE
    if views is not None and keep:
        frozen = views.get(key)
        if frozen is not None:
            selected = await _thaw(store, mailbox, frozen, read_only=read_only,
                                   display_name=display_name, legacy=legacy)
            if selected is None:
                views.drop(key)
    if selected is None:
        # The account MODSEQ, the mailbox's own HIGHESTMODSEQ and the message list are read
        # in one transaction: every change up to the reported HIGHESTMODSEQ is in the list
        # (RFC 7162 §3.1.2.1, so a QRESYNC client caching it loses nothing), and ``sync``
        # picks up every change after the account MODSEQ.
        snapshot = await store.snapshot_mailbox(mailbox.id)
        selected = Selected(
            mailbox_id=mailbox.id,
            name=display_name,
            uidvalidity=mailbox.uidvalidity,
            read_only=read_only,
            uids=snapshot.uids,
            modseqs=snapshot.modseqs,
            flag_ids=snapshot.flag_ids,
            flag_sets=FlagSets(snapshot.flag_sets),
            modseq=snapshot.account_modseq,
            highest=snapshot.mailbox.highest_modseq,
            legacy=legacy,
        )
    if views is not None and keep:
        views.put(key, selected.freeze())
    if claims is not None:
        # Only UIDs above the claimed high-water mark can be \Recent (``recent.py``).
        uids = selected.uids
        fresh = uids[bisect.bisect_right(uids, claims.high_water(key)) :]
        selected.recent = claims.claim(key, fresh, read_only=read_only)
        selected.claims = claims
    return selected


async def _thaw(
    store: MailStore,
    mailbox: Mailbox,
    frozen: FrozenView,
    *,
    read_only: bool,
    display_name: str,
    legacy: bool,
) -> Selected | None:
    """A copy of a kept view brought up to date from the change log (the same steps as
    ``sync``, without telling anyone); None when the mailbox is gone."""
    # Read before the changes: every change up to this MODSEQ is then among them.
    account_modseq = await store.highest_modseq(mailbox.account_id)
    selected = Selected(
        mailbox_id=mailbox.id,
        name=display_name,
        uidvalidity=mailbox.uidvalidity,
        read_only=read_only,
        uids=array("I", frozen.uids),
        modseqs=array("Q", frozen.modseqs),
        flag_ids=array("I", frozen.flag_ids),
        flag_sets=FlagSets(frozen.flag_sets),
        modseq=frozen.modseq,
        highest=frozen.highest,
        legacy=legacy,
    )
    try:
        await sync(store, mailbox.account_id, selected, allow_expunge=True, condstore=False,
                   write=_discard)
    except MailboxGone:
        return None
    selected.modseq = max(selected.modseq, account_modseq)
    return selected


async def sync(
    store: MailStore,
    account_id: int,
    selected: Selected,
    *,
    allow_expunge: bool,
    condstore: bool,
    write: Callable[[bytes], None],
    qresync: bool = False,
) -> None:
    """Bring the view up to date and write the untagged responses that say so."""
    changes = await store.changes_since(account_id, selected.modseq, mailbox_id=selected.mailbox_id)
    if changes:
        selected.modseq = max(selected.modseq, max(c.modseq for c in changes))
        # Every change of this mailbox up to here is now known to the client (below).
        selected.highest = max(selected.highest, selected.modseq)
    fetch: list[int] = []
    for change in changes:
        if change.kind is ChangeKind.MAILBOX_DELETED and change.mailbox_id == selected.mailbox_id:
            raise MailboxGone(selected.name)
        if change.uid is None:
            continue
        if change.kind is ChangeKind.MESSAGE_EXPUNGED:
            if change.uid in selected:
                selected.pending_expunge.add(change.uid)
                selected.expunge_modseq[change.uid] = change.modseq
        else:
            fetch.append(change.uid)
    last = selected.uids[-1] if selected.uids else 0
    added: list[int] = []
    if fetch:
        for message in await store.get_messages(selected.mailbox_id, sorted(set(fetch))):
            index = selected.index(message.uid)
            if index < 0:
                # Only UIDs above the view's last are new; the store assigns UIDs in commit
                # order, so anything else was already expunged again.
                if message.uid > last:
                    selected.add(message)
                    last = message.uid
                    added.append(message.uid)
                continue
            if message.uid in selected.pending_expunge:
                continue
            known = selected.flag_sets.sets[selected.flag_ids[index]]
            report = known != message.flags or (
                condstore and selected.modseqs[index] != message.modseq)
            selected.record(message.uid, message.flags, message.modseq)
            if report:
                write(flags_fetch(selected, message.uid, condstore=condstore))
    if allow_expunge and selected.pending_expunge:
        selected.announce_expunged(list(selected.pending_expunge), vanished=qresync, write=write)
    if added:
        write(response.untagged(b"%d EXISTS" % selected.exists))
        if selected.claims is not None:
            selected.recent |= selected.claims.claim(
                (selected.mailbox_id, selected.uidvalidity), added, read_only=selected.read_only)
        if selected.legacy:
            # RFC 3501 §7.3.2: RECENT whenever the size of the mailbox changes.
            write(response.untagged(b"%d RECENT" % len(selected.recent)))


def flags_fetch(selected: Selected, uid: int, *, condstore: bool) -> bytes:
    """``* n FETCH (UID u FLAGS (...) [MODSEQ (m)])`` for ``uid`` as the view now holds it."""
    index = selected.index(uid)
    flags = selected.flag_sets.rendered(selected.flag_ids[index],
                                        recent=selected.legacy and uid in selected.recent)
    body = b"%d FETCH (UID %d FLAGS %s" % (index + 1, uid, flags)
    if condstore:
        body += b" MODSEQ (%d)" % selected.modseqs[index]
    return response.untagged(body + b")")


def resolve(selected: Selected, sequence: SequenceSet, *, uid: bool) -> list[int]:
    """The UIDs (ascending) a command's sequence set names in this view.

    RFC 5182 §2.1: "$" is the saved search result; RFC 9051 §9 seq-number: a message
    sequence number beyond the view (or "*" in an empty mailbox) is a BAD command."""
    if sequence.saved:
        return [u for u in selected.saved if u in selected]
    uids = selected.uids
    if uid:
        if len(sequence.ranges) == 1 and uids:
            # One range (the common case): a slice of the view, no set or sort.
            low, high = sequence.ranges[0]
            low = uids[-1] if low == STAR else low
            high = uids[-1] if high == STAR else high
            low, high = min(low, high), max(low, high)
            return uids[bisect.bisect_left(uids, low) : bisect.bisect_right(uids, high)].tolist()
        return sequence.resolve_uids(uids)
    try:
        numbers = sequence.resolve_numbers(selected.exists)
    except SequenceSetError:
        raise CommandFailed("message sequence number out of range", bad=True) from None
    return [uids[n - 1] for n in numbers]
