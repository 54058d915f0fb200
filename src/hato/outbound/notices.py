"""The queue's delivery status notifications: build, sign, store and address one DSN.

When an attempt ends with recipients failed, delayed or relayed (``outcomes``), this module
turns their reports into the notice stored with the entry's state change: the RFC 3464
message of ``dsn`` (original content per RET, RFC 3461 §4.3), no notice for the null
reverse-path (RFC 3461 §6.2), DKIM-signed by the notice's From domain (our host name) when a
signer is set, sent from the null reverse-path (RFC 5321 §4.5.5) and addressed to the
original sender when the reverse-path is one of our SRS addresses. A notice for a local
account goes straight into its INBOX; any other is queued as a new entry.

Leaves out: the DSN format itself (``dsn``), deciding which recipients are reported
(``outcomes``).

Security: notices quote the original message as the sender asked (RET); they go only to
the entry's reverse-path (or the sender behind our own valid SRS address), never to an
address taken from the message.
"""

from __future__ import annotations

import asyncio

from hato.core.address import Address
from hato.core.clock import Clock
from hato.core.errors import HatoError
from hato.outbound.dsn import (
    Action,
    RecipientReport,
    build_dsn,
    notice_recipient,
    should_notify,
    sign_dsn,
    status_of,
)
from hato.outbound.settings import Signer
from hato.outbound.srs import Srs
from hato.store.api import MailStore
from hato.store.model import DeliveryTarget
from hato.store.queue import NewQueueEntry, Notice, QueueEntry, QueueRecipient


class Notifier:
    """Builds the ``Notice`` of one entry; ``signer`` and ``srs`` may be set after start."""

    def __init__(
        self,
        *,
        store: MailStore,
        clock: Clock,
        hostname: str,
        expire_after: float,
        signer: Signer | None = None,
        srs: Srs | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.hostname = hostname
        self.expire_after = expire_after
        self.signer = signer
        self.srs = srs  # our SRS addresses: notices go back to the original sender

    async def notice(
        self, entry: QueueEntry, reports: list[RecipientReport], *, retry_until: float | None
    ) -> Notice | None:
        """The DSN for ``reports``, stored as a blob and addressed; None when none is due."""
        if not should_notify(entry):
            return None  # RFC 3461 §6.2: no DSN to the null reverse-path
        # a notice for mail we forwarded under SRS goes back to the original sender
        to = notice_recipient(entry.sender, self.srs, now=self.clock.now())
        original = await asyncio.to_thread(self.store.blobs.read, entry.blob_id)
        data = build_dsn(
            entry,
            reports,
            original[entry.strip_prefix :],
            hostname=self.hostname,
            now=self.clock.now(),
            retry_until=retry_until,
            to=to,
        )
        if self.signer is not None:  # DKIM by the From domain: the null path has none
            data = await asyncio.to_thread(sign_dsn, data, self.hostname, self.signer)
        writer = self.store.blobs.writer()
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        blob = await asyncio.to_thread(writer.commit)
        target = await self._local_account(entry, to)
        if target is not None:
            return Notice(blob, local=(DeliveryTarget(target),))
        bounce = NewQueueEntry(
            blob=blob,
            sender="",  # RFC 5321 §4.5.5: notifications use the null reverse-path
            recipients=(QueueRecipient(to),),
            expires=self.clock.now() + self.expire_after,
            smtputf8=not to.isascii(),
        )
        return Notice(blob, remote=(bounce,))

    async def _local_account(self, entry: QueueEntry, to: str) -> int | None:
        if entry.account_id is not None and to == entry.sender:
            account = await self.store.get_account_by_id(entry.account_id)
            if account is not None:
                return account.id
        try:
            key = Address.parse(to).key
        except HatoError:
            return None
        account = await self.store.get_account(key)
        return account.id if account is not None else None


def report(recipient: QueueRecipient, action: Action) -> RecipientReport:
    """The per-recipient part of a DSN (RFC 3464 §2.3) for ``recipient`` and ``action``."""
    default = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action.value, "2.0.0")
    status = status_of(recipient.reply, default=default)
    if action is Action.FAILED and recipient.reply and "(4.4.7)" in recipient.reply:
        status = "4.4.7"  # RFC 3463: delivery time expired
    if action is Action.RELAYED:
        status = "2.0.0"
    return RecipientReport(recipient, action, status, recipient.reply, recipient.remote_mta)
