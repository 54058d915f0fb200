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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hato.codec.imap import response
from hato.codec.imap.sequence import SequenceSet, SequenceSetError, format_set
from hato.servers.imap.outcome import CommandFailed
from hato.servers.imap.recent import RecentClaims
from hato.store.api import MailStore
from hato.store.model import ChangeKind, Mailbox, Message

RECENT = "\\Recent"


class MailboxGone(Exception):
    """The selected mailbox was deleted by another session."""


@dataclass(slots=True)
class Selected:
    """What one session knows of its selected mailbox: UIDs in sequence order, each message
    as last reported to the client, and the account MODSEQ the view is current to."""

    mailbox_id: int
    name: str
    uidvalidity: int
    read_only: bool
    uids: list[int]
    messages: dict[int, Message]
    modseq: int  # account MODSEQ the view is current to (the change-log watermark)
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

    def flags_of(self, message: Message) -> list[str]:
        """The flags to show (RFC 3501 §2.3.2: plus \\Recent for IMAP4rev1 sessions)."""
        flags = response.sorted_flags(message.flags)
        if self.legacy and message.uid in self.recent:
            flags.append(RECENT)
        return flags

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int:
        """1-based sequence number of ``uid`` (which must be in the view)."""
        return bisect.bisect_left(self.uids, uid) + 1

    def uidnext_hint(self) -> int:
        return (self.uids[-1] + 1) if self.uids else 1

    def remember(self, message: Message) -> None:
        if message.uid in self.messages:
            self.messages[message.uid] = message

    def remove(self, uid: int) -> int:
        """Drop ``uid`` from the view; return the sequence number it had."""
        index = bisect.bisect_left(self.uids, uid)
        del self.uids[index]
        self.messages.pop(uid, None)
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
        gone = sorted(set(uids) & set(self.messages), reverse=True)
        if not gone:
            return
        if vanished:
            for uid in gone:
                self.remove(uid)
            write(response.untagged(b"VANISHED " + format_set(gone).encode("ascii")))
            return
        for uid in gone:
            write(response.untagged(b"%d EXPUNGE" % self.remove(uid)))


async def open_selected(
    store: MailStore,
    mailbox: Mailbox,
    *,
    read_only: bool,
    display_name: str,
    claims: RecentClaims | None = None,
    legacy: bool = True,
) -> Selected:
    # The account MODSEQ is read first, then the mailbox's own HIGHESTMODSEQ, then the
    # message list: a change in between is seen twice (and de-duplicated by ``sync``), never
    # missed, and every change up to the reported HIGHESTMODSEQ is in the list (RFC 7162
    # §3.1.2.1, so a QRESYNC client caching it loses nothing).
    modseq = await store.highest_modseq(mailbox.account_id)
    current = await store.get_mailbox_by_id(mailbox.id) or mailbox
    messages = await store.list_messages(mailbox.id)
    uids = [m.uid for m in messages]
    key = (mailbox.id, mailbox.uidvalidity)
    recent = claims.claim(key, uids, read_only=read_only) if claims is not None else set()
    return Selected(
        mailbox_id=mailbox.id,
        name=display_name,
        uidvalidity=mailbox.uidvalidity,
        read_only=read_only,
        uids=uids,
        messages={m.uid: m for m in messages},
        modseq=modseq,
        highest=current.highest_modseq,
        recent=recent,
        legacy=legacy,
        claims=claims,
    )


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
            if change.uid in selected.messages:
                selected.pending_expunge.add(change.uid)
                selected.expunge_modseq[change.uid] = change.modseq
        else:
            fetch.append(change.uid)
    last = selected.uids[-1] if selected.uids else 0
    added: list[int] = []
    if fetch:
        for message in await store.get_messages(selected.mailbox_id, sorted(set(fetch))):
            known = selected.messages.get(message.uid)
            if known is None:
                # Only UIDs above the view's last are new; the store assigns UIDs in commit
                # order, so anything else was already expunged again.
                if message.uid > last:
                    selected.uids.append(message.uid)
                    selected.messages[message.uid] = message
                    last = message.uid
                    added.append(message.uid)
                continue
            if message.uid in selected.pending_expunge:
                continue
            if known.flags != message.flags or (condstore and known.modseq != message.modseq):
                selected.messages[message.uid] = message
                write(flags_fetch(selected, message, condstore=condstore))
            else:
                selected.messages[message.uid] = message
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


def flags_fetch(selected: Selected, message: Message, *, condstore: bool) -> bytes:
    """``* n FETCH (UID u FLAGS (...) [MODSEQ (m)])`` for a flag change."""
    body = b"%d FETCH (UID %d FLAGS %s" % (
        selected.seq_of(message.uid), message.uid,
        response.flag_list(selected.flags_of(message)),
    )
    if condstore:
        body += b" MODSEQ (%d)" % message.modseq
    return response.untagged(body + b")")


def resolve(selected: Selected, sequence: SequenceSet, *, uid: bool) -> list[int]:
    """The UIDs (ascending) a command's sequence set names in this view.

    RFC 5182 §2.1: "$" is the saved search result; RFC 9051 §9 seq-number: a message
    sequence number beyond the view (or "*" in an empty mailbox) is a BAD command."""
    if sequence.saved:
        present = set(selected.uids)
        return [u for u in selected.saved if u in present]
    if uid:
        return sequence.resolve_uids(selected.uids)
    try:
        numbers = sequence.resolve_numbers(selected.exists)
    except SequenceSetError:
        raise CommandFailed("message sequence number out of range", bad=True) from None
    return [selected.uids[n - 1] for n in numbers]
