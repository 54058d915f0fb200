"""The queue runner: claims due queue entries, delivers them, retries, expires, bounces.

The queue itself lives in the store (``hato.store.queue`` states and transitions, one atomic
write per change); this module is its scheduler and the ``Service`` the app starts. One
attempt: claim due entries (QUEUED, or DEFERRED whose time came) as ACTIVE; group them by
destination; per destination at most ``per_destination`` connections, each reused for
several messages (the next envelope sent ahead with this message's content, RFC 2920
§3.1); route (``routing``), pick the TLS requirement per host (``tlspolicy``, MTA-STS, DANE,
REQUIRETLS), send (``client``), then settle every entry in one checked change, written
together with the changes of other deliveries by ``settler`` (one store transaction for
many): per-recipient status, DELIVERED / BOUNCED / DEFERRED with
exponential backoff (5 minutes doubling to 4 hours), a bounce after expiry (5 days by
default; RFC 5321 §4.5.4.1 suggests at least 4-5 days), a delay notice after 4 hours where
NOTIFY allows it (RFC 3461 §4.1), and the DSN of ``dsn`` stored in the same write (into the
sender's INBOX for local senders, queued otherwise). At start, entries left ACTIVE by a
crash go back to QUEUED: at most the message in flight is sent twice (RFC 5321 §6.1 accepts
duplicates over loss).

TLS-RPT (RFC 8460 §4): session outcomes are counted in ``tls_results`` and, when ``tls_sink``
is set, stored for the daily reports of ``hato.outbound.reports``.

Leaves out: several runner processes on one store.

Security: this module sends mail to the internet: only to hosts routing names; bodies are
never logged; AUTH credentials are only used over TLS (see ``client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hato.codec import smtp_client as sc
from hato.core import log
from hato.core.address import Address
from hato.core.clock import Clock, SystemClock
from hato.core.dns import Resolver
from hato.core.errors import Conflict, HatoError, NotFound, UsageError
from hato.outbound.client import (
    DeliveryError,
    Rcpt,
    SmtpClient,
    Timeouts,
    TlsPolicyError,
    Transaction,
    TransactionResult,
    usage_reply,
)
from hato.outbound.dsn import (
    Action,
    RecipientReport,
    build_dsn,
    notice_recipient,
    should_notify,
    sign_dsn,
    status_of,
    wants,
)
from hato.outbound.mtasts import HttpsFetcher, PolicyCache, StsPolicy
from hato.outbound.routing import Hop, Relay, Route, resolve_route
from hato.outbound.settler import Outcome, Settler
from hato.outbound.srs import Srs
from hato.outbound.tlspolicy import HostPolicy, host_policy
from hato.outbound.tlsrpt_sessions import TlsSessionLog
from hato.store.api import MailStore, StsPolicyStore
from hato.store.model import BlobRef, DeliveryTarget
from hato.store.queue import (
    NewQueueEntry,
    Notice,
    QueueEntry,
    QueueRecipient,
    QueueState,
    QueueUpdate,
    RcptStatus,
    RecipientUpdate,
)

Signer = Callable[[bytes, str], bytes]  # (message, sender domain) -> header fields to prepend
INLINE_READ = 64 * 1024  # octets: smaller bodies are read on the event loop


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """What the queue runner needs; the app maps the ``[outbound]`` config onto it."""

    hostname: str
    port: int = 25  # RFC 5321 §4.5.4: SMTP relays use port 25
    transports: dict[str, Relay] = field(default_factory=dict)
    smarthost: Relay | None = None
    retry_base: float = 300.0  # first retry after 5 minutes, doubling
    retry_max: float = 4 * 3600.0  # at most 4 hours between attempts
    expire_after: float = 5 * 86400.0  # RFC 5321 §4.5.4.1: give up after 4-5 days
    delay_warning: float = 4 * 3600.0  # delay DSN after 4 hours (RFC 3461 §4.1 DELAY)
    max_connections: int = 50
    per_destination: int = 4
    batch: int = 200
    lease: float = 3600.0
    poll_interval: float = 5.0
    keep_final: float = 86400.0  # DELIVERED/BOUNCED entries kept for ``hato queue list``
    ca_file: Path | None = None  # trust anchors for MTA-STS / REQUIRETLS (system store: None)
    mta_sts: bool = True
    mta_sts_port: int = 443
    dane: bool = True
    prefer_ipv6: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)


def backoff(attempts: int, settings: OutboundSettings) -> float:
    """5 minutes, 10, 20, ... capped at 4 hours: the delay after ``attempts`` failures."""
    exponent = max(0, min(attempts - 1, 30))
    return float(min(settings.retry_base * (2**exponent), settings.retry_max))


def verify_context(ca_file: Path | None) -> ssl.SSLContext:
    """PKIX verification (RFC 6125 host names) for MTA-STS, REQUIRETLS and smarthosts."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(slots=True)
class _Group:
    route_key: str
    domain: str
    entries: deque[QueueEntry]
    route: Route | None = None
    sts: StsPolicy | None = None


class QueueRunner:
    """The outbound ``Service``: ``start()`` recovers and runs the loop, ``stop()`` ends it."""

    name = "outbound"

    def __init__(
        self,
        settings: OutboundSettings,
        *,
        store: MailStore,
        resolver: Resolver,
        clock: Clock | None = None,
        signer: Signer | None = None,
        rng: random.Random | None = None,
        srs: Srs | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.clock = clock or SystemClock()
        self.signer = signer
        self.srs = srs  # our SRS addresses: notices go back to the original sender
        self.rng = rng or random.Random()
        self._verify = verify_context(settings.ca_file)
        fetcher = HttpsFetcher(resolver, context=self._verify, port=settings.mta_sts_port)
        # RFC 8461 §5.1: the policy cache persists in the store when it can keep it
        sts_store = store if isinstance(store, StsPolicyStore) else None
        self.sts = PolicyCache(resolver, fetcher, self.clock, store=sts_store)
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._settler = Settler(store)  # settle writes of many deliveries in one transaction
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.tls_results: Counter[tuple[str, str]] = Counter()  # (domain, result) for TLS-RPT
        self.tls_sink: TlsSessionLog | None = None  # stores outcomes for TLS-RPT (RFC 8460 §4)

    # -- Service -------------------------------------------------------------------------
    async def start(self) -> None:
        recovered = await self.store.recover_queue()
        if recovered:
            log.event("outbound.recovered", entries=recovered)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, *, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _pending = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()  # entries in flight stay ACTIVE: the next start re-queues them
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sts.aclose()  # a policy refresh still running

    def wake(self) -> None:
        """Something was queued: look at the queue now (thread-safe from the loop only)."""
        self._wake.set()

    async def _loop(self) -> None:
        last_purge = 0.0
        while not self._stopping:
            try:
                worked = await self.run_once()
                now = self.clock.now()
                if now - last_purge > 3600:
                    last_purge = now
                    await self.store.purge_queue(before=now - self.settings.keep_final)
                    await self.sts.purge()  # expired MTA-STS policies
                    if self.settings.mta_sts:
                        self.sts.refresh_in_background()  # RFC 8461 §3.3: before expiry
            except HatoError as exc:
                log.event("outbound.loop.error", level=logging.ERROR, error=exc.detail)
                worked = 0
            if worked or self._stopping:
                continue
            delay = self.settings.poll_interval
            due = await self.store.next_queue_due()
            if due is not None:
                delay = max(0.0, min(delay, due - self.clock.now()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- one pass ------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim the due entries and try them all; returns how many were tried."""
        entries = await self.store.claim_queue(limit=self.settings.batch, lease=self.settings.lease)
        if not entries:
            return 0
        groups: dict[str, _Group] = {}
        for entry in entries:
            domain = entry.domain
            relay = self.settings.transports.get(domain) or self.settings.smarthost
            key = f"relay:{relay.host}:{relay.port}" if relay else f"mx:{domain}"
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(key, domain, deque())
            group.entries.append(entry)
        try:
            await asyncio.gather(*(self._run_group(g) for g in groups.values()))
        finally:
            await self._settler.drain()  # every outcome committed before the next claim
        return len(entries)

    async def _run_group(self, group: _Group) -> None:
        try:
            group.route = await resolve_route(
                group.domain,
                resolver=self.resolver,
                port=self.settings.port,
                transports=self.settings.transports,
                smarthost=self.settings.smarthost,
                local_names=(self.settings.hostname,),
                rng=self.rng,
                prefer_ipv6=self.settings.prefer_ipv6,
            )
            route = group.route
            if route.error is not None:
                for entry in group.entries:
                    await self._settle_all(
                        entry, route.error, remote=None, temporary=route.temporary
                    )
                return
            if self.settings.mta_sts and route.via_mx:
                group.sts = await self.sts.policy(group.domain)
            workers = min(self.settings.per_destination, len(group.entries))
            await asyncio.gather(*(self._worker(group) for _ in range(workers)))
        except Exception as exc:  # a bug must not leave entries ACTIVE until restart
            log.event("outbound.internal_error", level=logging.ERROR, error=repr(exc)[:300])
            for entry in group.entries:
                with contextlib.suppress(HatoError):
                    await self._settle_all(
                        entry, "451 4.3.0 Internal error", remote=None, temporary=True
                    )

    async def _worker(self, group: _Group) -> None:
        client: SmtpClient | None = None
        flags: tuple[bool, bool] | None = None
        # The next entry's message is read while this one is sent; with PIPELINING its
        # envelope goes out in the same group as this message's content (``transact``:
        # one round trip per message). Outcomes go to the settler: the next message does
        # not wait for the store (a crash before their commit resends them, as a crash
        # before any settle always did: RFC 5321 §6.1 prefers duplicates to loss).
        ahead: tuple[QueueEntry, asyncio.Future[bytes]] | None = None
        primed: Transaction | None = None  # the transaction of ``ahead``, sent ahead
        async with self._slots:
            try:
                while ahead is not None or group.entries:
                    if ahead is None:
                        entry = group.entries.popleft()
                        reading = self._message_soon(entry)
                    else:
                        (entry, reading), ahead = ahead, None
                    if group.entries:
                        following = group.entries.popleft()
                        ahead = (following, self._message_soon(following))
                    want = _tls_flags(entry)
                    if client is not None and flags != want:
                        await client.quit()
                        client = None
                    tx, primed = primed, None
                    try:
                        message = await reading
                        if client is None:
                            client = await self._open(group, entry)
                            flags = want
                        if tx is None or client.primed is not tx:
                            tx = client.prepare(
                                entry.sender, _rcpts(entry), message, _options(entry, message)
                            )
                        primed = _ahead_transaction(client, ahead, want)
                        result = await client.transact(tx, following=primed)
                    except DeliveryError as exc:
                        primed = None
                        if client is not None:
                            await client.close()
                        client = None
                        permanent = isinstance(exc, TlsPolicyError) and want[0]
                        await self._settle_all(
                            entry, exc.reply, remote=None, temporary=not permanent
                        )
                        continue
                    except UsageError as exc:  # nothing of this message was sent
                        primed = None
                        host = client.host if client else None
                        await self._settle_all(
                            entry, usage_reply(exc), remote=host, temporary=False
                        )
                        continue
                    if client.primed is not primed:
                        primed = None  # this transaction ended before its content
                    await self._settle(entry, result, remote=client.host, peer_dsn=client.caps.dsn)
            finally:
                if ahead is not None:  # not tried: back to the group (settled by the caller)
                    following, read = ahead
                    if not read.cancel() and not read.cancelled():
                        read.exception()  # done: retrieved, so never reported as lost
                    group.entries.appendleft(following)
                if client is not None:
                    await client.quit()  # with a transaction sent ahead: no QUIT, a close

    def _message_soon(self, entry: QueueEntry) -> asyncio.Future[bytes]:
        """The message to send for ``entry``: a small body is read right here (a page-cache
        read costs less than the hop to a worker thread), a larger one in a worker thread."""
        if entry.size > INLINE_READ:
            return asyncio.ensure_future(self._message(entry))
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._signed(entry, self.store.blobs.read(entry.blob_id)))
        except Exception as exc:  # raised where the message is awaited, as for a large one
            future.set_exception(exc)
        return future

    async def _message(self, entry: QueueEntry) -> bytes:
        data = await asyncio.to_thread(self.store.blobs.read, entry.blob_id)
        return self._signed(entry, data)

    def _signed(self, entry: QueueEntry, data: bytes) -> bytes:
        data = data[entry.strip_prefix :]
        if self.signer is not None and entry.sender:
            domain = entry.sender.rpartition("@")[2]
            data = self.signer(data, domain) + data
        return data

    async def _open(self, group: _Group, entry: QueueEntry) -> SmtpClient:
        route = group.route
        assert route is not None
        requiretls = entry.requiretls and entry.sender != ""  # RFC 8689 §4.2.1: not bounces
        errors: list[str] = []
        for hop in route.hops:
            policy = await host_policy(
                hop.name,
                resolver=self.resolver,
                port=hop.port,
                mx_secure=route.secure,
                addresses_secure=hop.secure,  # RFC 7672 §2.2.2
                sts=group.sts,
                via_mx=route.via_mx,
                requiretls=requiretls and not route.relay,
                tls_optional=entry.tls_optional,
                dane=self.settings.dane and not route.relay,  # RFC 7672 §2.2.1, §2.2.2
                domain=group.domain,  # RFC 7672 §3.2.2: a DANE-TA reference identifier
            )
            if not policy.usable:
                errors.append(policy.error or "host not usable")
                self._tls_result(
                    group.domain, "mx-mismatch" if policy.source == "mta-sts" else policy.source
                )
                await self._tls_report(group, hop, policy, None, entry=entry)
                continue
            client = await self._connect_hop(group, hop, policy, errors, entry=entry)
            if client is not None:
                return client
        reply = errors[-1] if errors else "451 4.4.1 No usable host"
        detail = f"{group.domain}: {'; '.join(errors)}"
        if any(".7.10" in e for e in errors):
            raise TlsPolicyError(detail, reply=reply)
        raise DeliveryError(detail, reply=reply)

    async def _connect_hop(
        self, group: _Group, hop: Hop, policy: HostPolicy, errors: list[str], *, entry: QueueEntry
    ) -> SmtpClient | None:
        for address in hop.addresses:
            for try_tls in (True, False):
                client = SmtpClient(
                    hop.name,
                    address,
                    hop.port,
                    helo_name=self.settings.hostname,
                    policy=policy,
                    verify_context=self._verify,
                    implicit_tls=hop.implicit_tls,
                    auth=hop.auth,
                    timeouts=self.settings.timeouts,
                    try_tls=try_tls,
                )
                try:
                    await client.connect()
                except TlsPolicyError as exc:
                    self._tls_result(group.domain, client.tls.failure or "validation-failure")
                    await self._tls_report(
                        group, hop, policy, client, entry=entry, detail=exc.detail
                    )
                    errors.append(exc.reply)
                    log.event(
                        "outbound.tls.failed", host=hop.name, address=address, error=exc.detail
                    )
                    if policy.required and not policy.report_only:
                        break  # RFC 8461 §4.2 / RFC 7672 §2.2: never fall back to plaintext
                    continue  # opportunistic: a failed handshake is retried in plaintext
                except DeliveryError as exc:
                    errors.append(exc.reply)
                    log.event(
                        "outbound.connect.failed", host=hop.name, address=address, error=exc.detail
                    )
                    break
                self._tls_result(group.domain, "success" if client.tls.used else "no-tls")
                await self._tls_report(group, hop, policy, client, entry=entry, tried_tls=try_tls)
                return client
        return None

    def _tls_result(self, domain: str, result: str) -> None:
        self.tls_results[(domain, result)] += 1

    async def _tls_report(
        self,
        group: _Group,
        hop: Hop,
        policy: HostPolicy,
        client: SmtpClient | None,
        *,
        entry: QueueEntry,
        tried_tls: bool = True,
        detail: str = "",
    ) -> None:
        """RFC 8460 §4: store an MX session's outcome, except for "TLS-Required: No" entries
        such as our own TLS reports (RFC 8460 §3)."""
        route, sink = group.route, self.tls_sink
        if sink is not None and route is not None and route.via_mx and not entry.tls_optional:
            await sink.record(
                domain=group.domain,
                mx_host=hop.name,
                policy=policy,
                sts=group.sts,
                client=client,
                tried_tls=tried_tls,
                detail=detail,
            )

    # -- settling ------------------------------------------------------------------------
    async def _settle_all(
        self, entry: QueueEntry, reply: str, *, remote: str | None, temporary: bool
    ) -> None:
        status = RcptStatus.PENDING if temporary else RcptStatus.FAILED
        updates = [RecipientUpdate(i, status, reply, remote) for i in entry.pending]
        await self._finish(entry, updates, peer_dsn=True)

    async def _settle(
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
            await self._settler.add(Outcome(entry.id, change, fields))
            return
        await self._finish(entry, updates, peer_dsn=peer_dsn)

    async def _finish(
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
            reports = [_report(r, Action.FAILED) for r in failed if wants(r, Action.FAILED)]
            newly = {i for i, u in by_index.items() if u.status is RcptStatus.DELIVERED}
            if not peer_dsn:  # RFC 3461 §5.2.3: "relayed" to a host without DSN support
                reports += [
                    _report(merged[i], Action.RELAYED)
                    for i in sorted(newly)
                    if merged[i].notify and "SUCCESS" in (merged[i].notify or ())
                ]
            if reports:
                notice = await self._notice(entry, reports, retry_until=None)
            next_attempt = now
        else:
            state = QueueState.DEFERRED
            next_attempt = now + backoff(entry.attempts + 1, self.settings)
            if not entry.delay_notified and now - entry.created >= self.settings.delay_warning:
                reports = [_report(r, Action.DELAYED) for r in pending if wants(r, Action.DELAYED)]
                if reports:
                    notice = await self._notice(entry, reports, retry_until=entry.expires)
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
        await self._settler.add(Outcome(entry.id, change, fields))  # logged once committed

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
        reports = [_report(r, Action.FAILED) for r in failed if wants(r, Action.FAILED)]
        notice = await self._notice(entry, reports, retry_until=None) if reports else None
        change = QueueUpdate(
            QueueState.BOUNCED,
            last_error=reason,
            recipients=updates,
            notice=notice,
            expected=waiting,
        )
        return await self.store.update_queue(entry_id, change)

    async def _notice(
        self, entry: QueueEntry, reports: list[RecipientReport], *, retry_until: float | None
    ) -> Notice | None:
        if not should_notify(entry):
            return None  # RFC 3461 §6.2: no DSN to the null reverse-path
        # a notice for mail we forwarded under SRS goes back to the original sender
        to = notice_recipient(entry.sender, self.srs, now=self.clock.now())
        original = await asyncio.to_thread(self.store.blobs.read, entry.blob_id)
        data = build_dsn(
            entry,
            reports,
            original[entry.strip_prefix :],
            hostname=self.settings.hostname,
            now=self.clock.now(),
            retry_until=retry_until,
            to=to,
        )
        if self.signer is not None:  # DKIM by the From domain: the null path has none
            data = await asyncio.to_thread(sign_dsn, data, self.settings.hostname, self.signer)
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
            expires=self.clock.now() + self.settings.expire_after,
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


def _report(recipient: QueueRecipient, action: Action) -> RecipientReport:
    default = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action.value, "2.0.0")
    status = status_of(recipient.reply, default=default)
    if action is Action.FAILED and recipient.reply and "(4.4.7)" in recipient.reply:
        status = "4.4.7"  # RFC 3463: delivery time expired
    if action is Action.RELAYED:
        status = "2.0.0"
    return RecipientReport(recipient, action, status, recipient.reply, recipient.remote_mta)


_ACTIVE = frozenset({QueueState.ACTIVE})


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


def _tls_flags(entry: QueueEntry) -> tuple[bool, bool]:
    """What a connection must provide for ``entry``: REQUIRETLS (RFC 8689 §4.2.1: not for
    bounces) and "TLS-Required: No" (§4.2.2). Entries with other flags need another one."""
    return (entry.requiretls and entry.sender != "", entry.tls_optional)


def _ahead_transaction(
    client: SmtpClient,
    ahead: tuple[QueueEntry, asyncio.Future[bytes]] | None,
    want: tuple[bool, bool],
) -> Transaction | None:
    """The next entry's transaction, to send ahead on ``client`` (RFC 2920 §3.1), when it
    can go on this connection and its message is read already."""
    if ahead is None or not client.caps.pipelining:
        return None
    following, reading = ahead
    if _tls_flags(following) != want or not reading.done() or reading.cancelled():
        return None
    if reading.exception() is not None:
        return None  # raised again where this entry is tried
    message = reading.result()
    try:
        return client.prepare(
            following.sender, _rcpts(following), message, _options(following, message)
        )
    except UsageError:
        return None  # bounced on its own turn


def _rcpts(entry: QueueEntry) -> list[Rcpt]:
    return [
        Rcpt(i, entry.recipients[i].address, entry.recipients[i].notify, entry.recipients[i].orcpt)
        for i in entry.pending
    ]


def _options(entry: QueueEntry, message: bytes) -> sc.MailOptions:
    return sc.MailOptions(
        size=len(message),
        body=entry.body,
        smtputf8=entry.smtputf8,
        ret=entry.ret,
        envid=entry.envid,
        requiretls=entry.requiretls and entry.sender != "",
    )


def entries_for(
    *,
    blob_size: int,
    blob_id: str,
    sender: str,
    recipients: Sequence[QueueRecipient],
    now: float,
    expire_after: float,
    account_id: int | None = None,
    envid: str | None = None,
    ret: str | None = None,
    body: str = "7BIT",
    smtputf8: bool = False,
    requiretls: bool = False,
    tls_optional: bool = False,
    strip_prefix: int = 0,
) -> list[NewQueueEntry]:
    """Queue entries for the remote recipients of one message: one per destination domain
    (recipients of one domain travel in one transaction)."""

    by_domain: dict[str, list[QueueRecipient]] = {}
    for rcpt in recipients:
        by_domain.setdefault(rcpt.domain, []).append(rcpt)
    blob = BlobRef(blob_id, blob_size)
    return [
        NewQueueEntry(
            blob=blob,
            sender=sender,
            recipients=tuple(rcpts),
            expires=now + expire_after,
            account_id=account_id,
            envid=envid,
            ret=ret,
            body=body,
            smtputf8=smtputf8,
            requiretls=requiretls,
            tls_optional=tls_optional,
            strip_prefix=strip_prefix,
        )
        for rcpts in by_domain.values()
    ]
