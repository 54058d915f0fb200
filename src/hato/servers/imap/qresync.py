"""QRESYNC: quick mailbox resynchronisation from the change log.

Implements RFC 7162 §3.2.5 (SELECT/EXAMINE with ``QRESYNC (uidvalidity modseq [known-uids
[seq-match]])``: after the usual untagged responses, when the UIDVALIDITY matches, a
``VANISHED (EARLIER)`` response for the known UIDs expunged since ``modseq`` and a FETCH
(UID, FLAGS, MODSEQ) for every known message changed since then, §3.2.5.1) and §3.2.6 (the
VANISHED modifier of UID FETCH: ``VANISHED (EARLIER)`` before the FETCH responses, for the UIDs
of the set expunged since CHANGEDSINCE). Expunges come from the store's change log, which keeps
every expunge with its MODSEQ (``MailStore.changes_since``; RFC 7162 §3.2: "the server MUST
associate the incremented mod-sequence with the UIDs of the expunged messages").

Left out: the message sequence match data of §3.2.5.2 is checked for syntax only: it lets a
server that forgot old expunges narrow the VANISHED range, and Hato forgets none (§5.3: "If
the queue contains data back to the requested mod-sequence, this data can be ignored").
"""

from __future__ import annotations

from hato.codec.imap.commands import Qresync
from hato.codec.imap.sequence import SequenceSet, format_set
from hato.servers.imap.selected import Selected, flags_fetch
from hato.servers.imap.session import Session
from hato.store.model import ChangeKind


async def expunged_since(
    session: Session, selected: Selected, *, modseq: int, uids: SequenceSet | None, largest: int
) -> list[int]:
    """UIDs of the selected mailbox expunged after ``modseq`` (in ``uids`` when given, "*"
    standing for ``largest``), excluding those still in the session's view."""
    assert session.account is not None
    changes = await session.store.changes_since(
        session.account.id, modseq, mailbox_id=selected.mailbox_id)
    gone = [
        c.uid for c in changes
        if c.kind is ChangeKind.MESSAGE_EXPUNGED and c.uid is not None
        and c.uid not in selected
        and (uids is None or uids.contains_uid(c.uid, largest))
    ]
    return sorted(gone)


def vanished_earlier(session: Session, uids: list[int]) -> None:
    """RFC 7162 §3.2.10.1: does not change the message count or sequence numbers."""
    if uids:
        session.untagged(b"VANISHED (EARLIER) " + format_set(uids).encode("ascii"))


async def resync_select(
    session: Session, selected: Selected, *, params: Qresync, uidnext: int
) -> None:
    """The QRESYNC part of SELECT/EXAMINE (RFC 7162 §3.2.5), after the usual responses."""
    if params.uidvalidity != selected.uidvalidity:
        return  # §3.2.5: ignore the remaining parameters; the client sees the new UIDVALIDITY
    # §3.2.5.1: without known UIDs the client knows "1:<maxuid>", maxuid = UIDNEXT - 1.
    largest = uidnext - 1
    known = params.known_uids
    gone = await expunged_since(session, selected, modseq=params.modseq, uids=known,
                                largest=largest)
    vanished_earlier(session, gone)  # §3.2.6: VANISHED (EARLIER) before any FETCH
    for index, modseq in enumerate(selected.modseqs):
        if modseq <= params.modseq:
            continue
        uid = selected.uids[index]
        if known is not None and not known.contains_uid(uid, largest):
            continue
        # §3.2.5.1: "FETCH responses that MUST contain UIDs" (and MODSEQ, §3.2.4).
        session.write(flags_fetch(selected, uid, condstore=True))
