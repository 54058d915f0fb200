"""The \\Recent flag of IMAP4rev1: which session was the first to be told about a message.

Implements RFC 3501 §2.3.2 \\Recent ("this session is the first session to have been
notified about this message; if the session is read-write, subsequent sessions will not see
\\Recent set for this message"), §6.3.2 (EXAMINE does not make messages lose \\Recent) and
the RECENT counts of §7.3.2 and STATUS (§6.3.10). The claims are kept in memory per mailbox
for the server process, shared by all its sessions: UIDs only grow (RFC 9051 §2.3.1.1), so
"every UID up to the highest one a read-write session was told about" is the set of claimed
UIDs.

Left out: persistence. After a restart the first session that selects a mailbox sees its
messages as \\Recent again; several server processes (scale-out) each keep their own claims.
IMAP4rev2 removed \\Recent (RFC 9051 Appendix E item 3): sessions that enabled it never see it.
"""

from __future__ import annotations

from collections.abc import Iterable

MailboxKey = tuple[int, int]  # (mailbox id, UIDVALIDITY): a recreated mailbox starts afresh


class RecentClaims:
    """Per mailbox: the highest UID a read-write session has been told about."""

    def __init__(self) -> None:
        self._claimed: dict[MailboxKey, int] = {}

    def claim(self, mailbox_id: MailboxKey, uids: Iterable[int], *, read_only: bool) -> set[int]:
        """The UIDs among ``uids`` that no session was told about before: \\Recent for the
        caller. A read-write caller claims them (RFC 3501 §2.3.2); EXAMINE does not
        (RFC 3501 §6.3.2)."""
        high = self._claimed.get(mailbox_id, 0)
        recent = {uid for uid in uids if uid > high}
        if recent and not read_only:
            self._claimed[mailbox_id] = max(recent)
        return recent

    def unclaimed(self, mailbox_id: MailboxKey, uids: Iterable[int]) -> int:
        """How many of ``uids`` nobody has claimed yet (STATUS RECENT)."""
        high = self._claimed.get(mailbox_id, 0)
        return sum(1 for uid in uids if uid > high)

    def high_water(self, mailbox_id: MailboxKey) -> int:
        return self._claimed.get(mailbox_id, 0)

    def forget(self, mailbox_id: MailboxKey) -> None:
        """The mailbox is gone."""
        self._claimed.pop(mailbox_id, None)
