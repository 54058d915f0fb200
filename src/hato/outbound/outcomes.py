"""How an attempt ends for a queue entry: recipient statuses, retry, expiry, delay notices.

After each attempt (``queue``) the replies become one checked ``QueueUpdate``, handed to the
``settler`` (many outcomes per store transaction): per-recipient status (2xx delivered, 5xx
failed, 4xx or no reply pending), DELIVERED / BOUNCED when nothing is pending, else
DEFERRED with exponential backoff (``settings.backoff``); past the entry's expiry the
pending recipients fail with X.4.7 (RFC 5321 §4.5.4.1, RFC 3463); a delay notice once
after ``delay_warning`` for recipients whose NOTIFY allows it (RFC 3461 §4.1); "relayed"
notices for SUCCESS requests handed to a server without DSN (RFC 3461 §5.2.3); the DSN of
``notices`` stored in the same write. ``bounce`` gives up on a waiting entry by hand, and
``housekeeping`` is the runner's hourly tidy-up: final entries purged after
``keep_final``, expired MTA-STS policies dropped and the others refreshed before they
expire (RFC 8461 §3.3).

Leaves out: sending (``queue``, ``client``), the DSN format (``dsn``, ``notices``).

Security: nothing from the network but reply texts, which are stored and quoted in DSNs
as received (bounded by the client codec).
"""

from __future__ import annotations

from hato.core.clock import Clock
from hato.core.errors import Conflict, NotFound
from hato.outbound.client import TransactionResult
from hato.outbound.dsn import Action, wants
from hato.outbound.mtasts import PolicyCache
from hato.outbound.notices import Notifier, report
from hato.outbound.settings import OutboundSettings, backoff
from hato.outbound.settler import Outcome, Settler
from hato.store.api import MailStore
from hato.store.queue import (
    Notice,
    QueueEntry,
    QueueRecipient,
    QueueState,
    QueueUpdate,
    RcptStatus,
    RecipientUpdate,
)

_ACTIVE = frozenset({QueueState.ACTIVE})


class Outcomes:
    """Turns attempts into queue changes for the runner (and ``hato queue bounce``)."""

    def __init__(
        self,
        settings: OutboundSettings,
        *,
        store: MailStore,
        clock: Clock,
        settler: Settler,
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.settler = settler
        self.notifier = notifier

    async def settle_all(
        self, entry: QueueEntry, reply: str, *, remote: str | None, temporary: bool
    ) -> None:
        status = RcptStatus.PENDING if temporary else RcptStatus.FAILED
        updates = [RecipientUpdate(i, status, reply, remote) for i in entry.pending]
        await self.finish(entry, updates, peer_dsn=True)

    async def settle(
        self, entry: QueueEntry, result: TransactionResult, *, remote: str, peer_dsn: bool
    ) -> None:
        updates: list[RecipientUpdate] = []
        for i in entry.pending:
            reply = result.final_for(i)
            if reply is None:
                updates.append(RecipientUpdate(i, RcptStatus.PENDING, "451 4.4.2 No reply", remote))
            elif reply.positive:
                updates.append(RecipientUpdate(i, RcptStatus.DELIVERED, str(reply), remote))
            elif reply.permanent:
                updates.append(RecipientUpdate(i, RcptStatus.FAILED, str(reply), remote))
            else:
                updates.append(RecipientUpdate(i, RcptStatus.PENDING, str(reply), remote))
        if _plainly_delivered(entry, updates, peer_dsn=peer_dsn):
            # The common outcome, without the merging below: every recipient delivered,
            # none failed before, no "relayed" notice due (RFC 3461 §5.2.3).
            change = QueueUpdate(
                QueueState.DELIVERED,
                next_attempt=self.clock.now(),
                recipients=tuple(updates),
                attempted=True,
                expected=_ACTIVE,
            )
            fields = {"id": entry.id, "domain": entry.domain, "delivered": len(entry.recipients)}
            await self.settler.add(Outcome(entry.id, change, fields))
            return
        await self.finish(entry, updates, peer_dsn=peer_dsn)

    async def finish(
        self, entry: QueueEntry, updates: list[RecipientUpdate], *, peer_dsn: bool
    ) -> None:
        now = self.clock.now()
        by_index = {u.index: u for u in updates}
        if now >= entry.expires:
            # RFC 5321 §4.5.4.1: give up; RFC 3463 X.4.7 delivery time expired
            for i, u in list(by_index.items()):
                if u.status is RcptStatus.PENDING:
                    last = u.reply or entry.last_error or ""
                    by_index[i] = RecipientUpdate(
                        i,
                        RcptStatus.FAILED,
                        f"Delivery time expired (4.4.7); last: {last}",
                        u.remote_mta,
                    )
        merged = list(entry.recipients)
        for i, u in by_index.items():
            r = merged[i]
            merged[i] = QueueRecipient(
                r.address, r.notify, r.orcpt, u.status, u.reply, u.remote_mta
            )
        pending = [r for r in merged if r.status is RcptStatus.PENDING]
        failed = [r for r in merged if r.status is RcptStatus.FAILED]
        last_error = next(
            (u.reply for u in by_index.values() if u.status is not RcptStatus.DELIVERED), None
        )
        notice: Notice | None = None
        delay_notified: bool | None = None
        if not pending:
            state = QueueState.BOUNCED if failed else QueueState.DELIVERED
            reports = [report(r, Action.FAILED) for r in failed if wants(r, Action.FAILED)]
            newly = {i for i, u in by_index.items() if u.status is RcptStatus.DELIVERED}
            if not peer_dsn:  # RFC 3461 §5.2.3: "relayed" to a host without DSN support
                reports += [
                    report(merged[i], Action.RELAYED)
                    for i in sorted(newly)
                    if merged[i].notify and "SUCCESS" in (merged[i].notify or ())
                ]
            if reports:
                notice = await self.notifier.notice(entry, reports, retry_until=None)
            next_attempt = now
        else:
            state = QueueState.DEFERRED
            next_attempt = now + backoff(entry.attempts + 1, self.settings)
            if not entry.delay_notified and now - entry.created >= self.settings.delay_warning:
                reports = [report(r, Action.DELAYED) for r in pending if wants(r, Action.DELAYED)]
                if reports:
                    notice = await self.notifier.notice(entry, reports, retry_until=entry.expires)
                    delay_notified = True
        change = QueueUpdate(
            state,
            next_attempt=next_attempt,
            last_error=last_error,
            recipients=tuple(by_index.values()),
            attempted=True,
            delay_notified=delay_notified,
            notice=notice,
            expected=frozenset({QueueState.ACTIVE}),
        )
        fields = {
            "id": entry.id,
            "domain": entry.domain,
            "delivered": sum(1 for r in merged if r.status is RcptStatus.DELIVERED),
            "failed": len(failed),
            "pending": len(pending),
            "error": last_error or "",
            "dsn": notice is not None,
        }
        await self.settler.add(Outcome(entry.id, change, fields))  # logged once committed

    async def bounce(self, entry_id: int, reason: str) -> QueueEntry:
        """Give up on a waiting (queued, deferred or held) entry now: every pending
        recipient fails with ``reason`` and the sender gets a DSN (``hato queue bounce``)."""
        entry = await self.store.get_queue_entry(entry_id)
        if entry is None:
            raise NotFound(f"no queue entry {entry_id}")
        waiting = frozenset({QueueState.QUEUED, QueueState.DEFERRED, QueueState.HELD})
        if entry.state not in waiting:
            raise Conflict(f"queue entry {entry_id} is {entry.state.value}")
        updates = tuple(RecipientUpdate(i, RcptStatus.FAILED, reason) for i in entry.pending)
        failed = [
            QueueRecipient(r.address, r.notify, r.orcpt, RcptStatus.FAILED, reason)
            for i, r in enumerate(entry.recipients)
            if i in entry.pending
        ]
        reports = [report(r, Action.FAILED) for r in failed if wants(r, Action.FAILED)]
        notice = await self.notifier.notice(entry, reports, retry_until=None) if reports else None
        change = QueueUpdate(
            QueueState.BOUNCED,
            last_error=reason,
            recipients=updates,
            notice=notice,
            expected=waiting,
        )
        return await self.store.update_queue(entry_id, change)


def _plainly_delivered(
    entry: QueueEntry, updates: list[RecipientUpdate], *, peer_dsn: bool
) -> bool:
    """Every pending recipient delivered now, none failed earlier, and no "relayed" DSN
    owed (the peer takes DSN duty over, or nobody asked for SUCCESS)."""
    if any(u.status is not RcptStatus.DELIVERED for u in updates):
        return False
    if any(r.status is RcptStatus.FAILED for r in entry.recipients):
        return False
    if peer_dsn:
        return True
    return not any("SUCCESS" in (entry.recipients[u.index].notify or ()) for u in updates)


async def housekeeping(
    settings: OutboundSettings, *, store: MailStore, sts: PolicyCache, now: float
) -> None:
    """The hourly tidy-up: purge final entries older than ``keep_final``, drop expired
    MTA-STS policies and refresh the others in the background (RFC 8461 §3.3: before
    they expire)."""
    await store.purge_queue(before=now - settings.keep_final)
    await sts.purge()  # expired MTA-STS policies
    if settings.mta_sts:
        sts.refresh_in_background()  # RFC 8461 §3.3: before expiry
