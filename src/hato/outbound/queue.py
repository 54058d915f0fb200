"""The queue runner: claims due queue entries and delivers them, one connection per worker.

The queue itself lives in the store (``hato.store.queue`` states and transitions, one atomic
write per change); this module is its scheduler and the ``Service`` the app starts. One
attempt: claim due entries (QUEUED, or DEFERRED whose time came) as ACTIVE; group them by
destination; per destination at most ``per_destination`` connections, each reused for
several messages (the next envelope sent ahead with this message's content, RFC 2920
§3.1); route (``routing``, RFC 5321 §5.1), pick the TLS requirement per host
(``tlspolicy``: MTA-STS, DANE, REQUIRETLS; RFC 8689 §4.2.1: REQUIRETLS never for bounces),
send (``client``), then hand the replies to ``outcomes``, which settles every entry in one
checked change (retry with backoff, expiry, delay notices, the DSNs of ``notices``), written
together with the changes of other deliveries by ``settler`` (one store transaction for
many). Every hour ``outcomes.housekeeping`` purges final entries and refreshes MTA-STS
policies. At start, entries left ACTIVE by a crash go back to QUEUED: at most the message in
flight is sent twice (RFC 5321 §6.1 accepts duplicates over loss). Settings, backoff and
the PKIX context live in ``settings`` (re-exported here).

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
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from hato.codec import smtp_client as sc
from hato.core import log
from hato.core.clock import Clock, SystemClock
from hato.core.dns import Resolver
from hato.core.errors import HatoError, UsageError
from hato.outbound.client import (
    DeliveryError,
    Rcpt,
    SmtpClient,
    TlsPolicyError,
    Transaction,
    usage_reply,
)
from hato.outbound.mtasts import HttpsFetcher, PolicyCache, StsPolicy
from hato.outbound.notices import Notifier
from hato.outbound.outcomes import Outcomes, housekeeping
from hato.outbound.routing import Hop, Route, resolve_route
from hato.outbound.settings import OutboundSettings, Signer, backoff, verify_context
from hato.outbound.settler import Settler
from hato.outbound.srs import Srs
from hato.outbound.tlspolicy import HostPolicy, Requirement, host_policy
from hato.outbound.tlsrpt_sessions import TlsSessionLog
from hato.store.api import MailStore, StsPolicyStore
from hato.store.model import BlobRef
from hato.store.queue import NewQueueEntry, QueueEntry, QueueRecipient

# the names the app and the tests import from here (their home is ``settings``)
__all__ = [
    "OutboundSettings",
    "QueueRunner",
    "Signer",
    "backoff",
    "entries_for",
    "verify_context",
]

INLINE_READ = 64 * 1024  # octets: smaller bodies are read on the event loop
# RFC 4954 §4 / RFC 8314 §5.1: credentials go only to the configured relay, so a relay given
# AUTH has its certificate checked (PKIX, RFC 6125 against its name) on STARTTLS and implicit
# TLS alike; a failure defers the message and never sends them.
_RELAY_WITH_AUTH = HostPolicy(Requirement.PKIX, source="relay")
# RFC 8460 §4.3: the report's result type (as tlsrpt_sessions writes it) for a host not used:
# outside the MTA-STS policy, or its TLSA lookup failed.
_UNUSED_RESULT = {"mta-sts": "validation-failure", "dane": "dnssec-invalid"}


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
        self.rng = rng or random.Random()
        self._verify = verify_context(settings.ca_file)
        fetcher = HttpsFetcher(resolver, context=self._verify, port=settings.mta_sts_port)
        # RFC 8461 §5.1: the policy cache persists in the store when it can keep it
        sts_store = store if isinstance(store, StsPolicyStore) else None
        self.sts = PolicyCache(resolver, fetcher, self.clock, store=sts_store)
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._settler = Settler(store)  # settle writes of many deliveries in one transaction
        self.notices = Notifier(
            store=store,
            clock=self.clock,
            hostname=settings.hostname,
            expire_after=settings.expire_after,
            signer=signer,
            srs=srs,  # our SRS addresses: notices go back to the original sender
        )
        self.outcomes = Outcomes(
            settings, store=store, clock=self.clock, settler=self._settler, notifier=self.notices
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.tls_results: Counter[tuple[str, str]] = Counter()  # (domain, result) for TLS-RPT
        self.tls_sink: TlsSessionLog | None = None  # stores outcomes for TLS-RPT (RFC 8460 §4)

    @property
    def signer(self) -> Signer | None:
        """DKIM signer for mail from local domains and for notices (None: no signing)."""
        return self.notices.signer

    @signer.setter
    def signer(self, value: Signer | None) -> None:
        self.notices.signer = value

    @property
    def srs(self) -> Srs | None:
        """Our SRS addresses: notices for them go back to the original sender."""
        return self.notices.srs

    @srs.setter
    def srs(self, value: Srs | None) -> None:
        self.notices.srs = value

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
                    await housekeeping(self.settings, store=self.store, sts=self.sts, now=now)
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
                    await self.outcomes.settle_all(
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
                    await self.outcomes.settle_all(
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
                        await self.outcomes.settle_all(
                            entry, exc.reply, remote=None, temporary=not permanent
                        )
                        continue
                    except UsageError as exc:  # nothing of this message was sent
                        primed = None
                        host = client.host if client else None
                        await self.outcomes.settle_all(
                            entry, usage_reply(exc), remote=host, temporary=False
                        )
                        continue
                    if client.primed is not primed:
                        primed = None  # this transaction ended before its content
                    await self.outcomes.settle(
                        entry, result, remote=client.host, peer_dsn=client.caps.dsn
                    )
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
        signer = self.notices.signer
        if signer is not None and entry.sender:
            domain = entry.sender.rpartition("@")[2]
            data = signer(data, domain) + data
        return data

    async def _open(self, group: _Group, entry: QueueEntry) -> SmtpClient:
        route = group.route
        assert route is not None
        requiretls = entry.requiretls and entry.sender != ""  # RFC 8689 §4.2.1: not bounces
        errors: list[str] = []
        for hop in route.hops:
            if route.relay and hop.auth is not None:
                policy = _RELAY_WITH_AUTH
            else:
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
                self._tls_result(group.domain, _UNUSED_RESULT.get(policy.source, policy.source))
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

    async def bounce(self, entry_id: int, reason: str) -> QueueEntry:
        """Give up on a waiting (queued, deferred or held) entry now: every pending
        recipient fails with ``reason`` and the sender gets a DSN (``hato queue bounce``)."""
        return await self.outcomes.bounce(entry_id, reason)


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
