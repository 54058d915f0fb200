"""The daily reporting ``Service``: DMARC aggregate reports and TLS reports about yesterday.

Once a day at 00:05 UTC (and at start, for the last complete day) it builds, for the UTC day
that just ended (RFC 7489 §7.2 and RFC 8460 §4.1: 24 hours from 00:00 UTC):

* DMARC aggregate reports (RFC 7489 §7.2, Appendix C) with
  ``hato.policy.dmarc_reporting.daily_reports``: one per policy domain whose record has a
  ``rua``, sent only to URIs passing the external-destination check of §7.1 and whose ``!size``
  limit the message fits (§7.2.1);
* TLS reports (RFC 8460 §4) for every recipient domain we had sessions with that publishes an
  ``_smtp._tls`` record (§3): JSON, gzip, the §5.3 email to its ``mailto:`` URIs and an HTTPS
  POST to its ``https:`` URIs (§5.4).

Mail goes out through the outbound queue from the configured reporting address, which the
queue runner DKIM-signs as mail of a local domain (RFC 8460 §3 requires a DKIM signature;
RFC 7489 §7.2.1.1 requires the reports to pass DMARC), with NOTIFY=NEVER (no bounce loops),
expiring after 24 hours (RFC 8460 §5.5: retry up to 24 hours); TLS reports are queued as
"TLS-Required: No" (RFC 8460 §3: reports MUST be delivered despite TLS failures), and the
runner leaves such sessions out of the next report. Report URIs in our own domains are never
used (we would mail ourselves reports about our own mail, every day). Each (kind, domain,
day) is queued once: the store logs it in the same unit of work that queues it, so restarts
never duplicate a report. After the day is done, data older than ``keep`` is purged.

Leaves out: DMARC error reports (RFC 7489 §7.2.2) and failure reports (§7.3), the random
delay of RFC 8460 §4.1 (a fixed 00:05), days missed while the server was down longer than
a day (only the last complete day is caught up at start).

Security: sends only to addresses the policy domains publish (DMARC ones verified per §7.1);
reports hold addresses and counts, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hato.core import log
from hato.core.clock import Clock, SystemClock
from hato.core.dns import Resolver
from hato.core.errors import HatoError
from hato.mailauth.orgdomain import PublicSuffixList
from hato.outbound import tlsrpt_report as tlsrpt
from hato.outbound.queue import entries_for
from hato.policy.dmarc_reporting import Reporter, daily_reports
from hato.store.api import MailStore, ReportStore
from hato.store.queue import NewQueueEntry, QueueRecipient
from hato.store.reporting import TlsReportStore

DAY = 86400
SEND_AT = 300.0  # 00:05 UTC
RECHECK = 3600.0  # wake at least hourly (retries of deferred work, clock jumps)
LOG_KEEP = 31 * DAY  # how long the sent-report log remembers a day


class ReportingStore(MailStore, ReportStore, TlsReportStore, Protocol):
    """What the service needs from the store (the SQLite backend implements all three)."""


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """The app maps the ``[reports]`` configuration onto this."""

    hostname: str  # our name in DMARC reports (receiver, RFC 7489 §7.2.1.1 filename)
    from_address: str  # From, envelope sender, DMARC email and TLS contact-info
    org_name: str
    https: bool = True  # POST TLS reports to https: URIs (RFC 8460 §5.4)
    keep: float = 7 * DAY  # evaluations / session counts kept after their day
    expire: float = DAY  # RFC 8460 §5.5: redelivery for up to 24 hours

    @property
    def submitter(self) -> str:
        """RFC 8460 §5.3: TLS-Report-Submitter MUST be the domain of contact-info."""
        return self.from_address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What one run did for one report."""

    kind: str  # "dmarc" or "tls"
    domain: str
    report_id: str
    queued: tuple[int, ...] = ()  # queue entry ids
    posted: int = 0  # https URIs that accepted the report


def due_day(now: float) -> int:
    """The last UTC day whose report time (00:05 the next day) has come."""
    return int((now - SEND_AT) // DAY) * DAY - DAY


def next_run(now: float) -> float:
    """The next 00:05 UTC after ``now``."""
    return due_day(now) + 2 * DAY + SEND_AT


def _ours(address: str, domains: set[str]) -> bool:
    domain = address.rpartition("@")[2].rstrip(".").lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


class ReportService:
    """The ``Service`` that sends our daily reports (see the module docstring)."""

    name = "reports"

    def __init__(
        self,
        settings: ReportSettings,
        *,
        store: ReportingStore,
        resolver: Resolver,
        clock: Clock | None = None,
        https_context: ssl.SSLContext | None = None,
        psl: PublicSuffixList | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.clock = clock or SystemClock()
        self.https_context = https_context
        self.psl = psl
        self.wake = wake  # tells the queue runner that reports were queued
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._done: int | None = None  # the day fully handled by this process

    # -- Service -------------------------------------------------------------------------
    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, *, timeout: float) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _pending = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()  # a half-done day is finished by the next start (idempotent)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_due()
            except HatoError as exc:
                log.event("report.run.failed", level=logging.ERROR, error=exc.detail)
            except Exception as exc:  # a bug must not end the daily loop for good
                log.event("report.internal_error", level=logging.ERROR, error=repr(exc)[:300])
            delay = next_run(self.clock.now()) - self.clock.now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(max(delay, 1.0), RECHECK))

    # -- one run -------------------------------------------------------------------------
    async def run_due(self) -> list[ReportOutcome]:
        """Report the last complete day unless this process already finished it."""
        day = due_day(self.clock.now())
        if self._done == day:
            return []
        outcomes, complete = await self.run_day(day)
        if complete:
            self._done = day
        return outcomes

    async def run_day(self, day: int) -> tuple[list[ReportOutcome], bool]:
        """Queue (or post) every report of ``day`` not sent yet; then purge old data.
        Returns the outcomes and whether nothing is left to retry."""
        ours = {d.name for d in await self.store.list_domains()}
        ours.add(self.settings.hostname.lower())
        outcomes = await self._dmarc(day, ours)
        tls, complete = await self._tls(day, ours)
        outcomes += tls
        before = day + DAY - self.settings.keep
        await self.store.purge_dmarc_evaluations(before=before)
        await self.store.purge_tls_sessions(before=before)
        await self.store.purge_sent_reports(before=day - LOG_KEEP)
        if any(o.queued for o in outcomes) and self.wake is not None:
            self.wake()
        return outcomes, complete

    async def _entries(
        self, message: bytes, recipients: Sequence[str], *, tls_optional: bool
    ) -> list[NewQueueEntry]:
        """Store the report message and make its queue entries (one per domain)."""
        writer = self.store.blobs.writer()
        try:
            writer.write(message)
        except BaseException:
            writer.abort()
            raise
        blob = await asyncio.to_thread(writer.commit)
        return entries_for(
            blob_size=blob.size,
            blob_id=blob.id,
            sender=self.settings.from_address,
            # RFC 3461 §4.1 NOTIFY=NEVER: a report that cannot be delivered bounces to nobody
            recipients=[QueueRecipient(a, notify=frozenset()) for a in recipients],
            now=self.clock.now(),
            expire_after=self.settings.expire,
            tls_optional=tls_optional,
        )

    def _deliverable(
        self, kind: str, domain: str, addresses: Sequence[str], ours: set[str]
    ) -> list[str]:
        kept = [a for a in addresses if not _ours(a, ours)]
        if len(kept) < len(addresses):
            # never mail ourselves reports about our own mail (a daily loop)
            log.event("report.destination.local", kind=kind, domain=domain)
        return kept

    async def _dmarc(self, day: int, ours: set[str]) -> list[ReportOutcome]:
        """RFC 7489 §7.2: the aggregate reports of ``day``."""
        reporter = Reporter(
            org_name=self.settings.org_name,
            email=self.settings.from_address,
            receiver=self.settings.hostname,
        )
        reports = await daily_reports(
            self.store, self.resolver, day_start=day, reporter=reporter, psl=self.psl
        )
        outcomes = []
        for report in reports:
            domain = report.policy_domain
            if await self.store.sent_report("dmarc", domain, day) is not None:
                continue
            to = self._deliverable("dmarc", domain, report.recipients, ours)
            entries = await self._entries(report.message, to, tls_optional=False) if to else []
            ids = await self.store.queue_report(
                kind="dmarc", domain=domain, day=day, report_id=report.report_id, entries=entries
            )
            if ids is None:
                continue
            log.event("report.dmarc.queued", domain=domain, recipients=len(to), day=day)
            outcomes.append(ReportOutcome("dmarc", domain, report.report_id, tuple(ids)))
        return outcomes

    async def _tls(self, day: int, ours: set[str]) -> tuple[list[ReportOutcome], bool]:
        """RFC 8460 §4: the TLS reports of ``day``; False when an HTTPS POST should be
        retried later (§5.5)."""
        outcomes = []
        complete = True
        for domain in await self.store.tls_policy_domains(day=day):
            if await self.store.sent_report("tls", domain, day) is not None:
                continue
            record = await tlsrpt.lookup_record(self.resolver, domain)
            if record is None:
                continue  # RFC 8460 §3: the domain does not implement TLSRPT
            rows = await self.store.tls_sessions(day=day, policy_domain=domain)
            report_id = f"{day}.{domain}@{self.settings.submitter}"  # §5.3 "<id-left@id-right>"
            document = tlsrpt.build_report(
                rows,
                organization=self.settings.org_name,
                contact=self.settings.from_address,
                report_id=report_id,
                day=day,
            )
            compressed = tlsrpt.render(document)
            posted = 0
            urls = record.https if self.settings.https else ()
            for url in urls:
                if await tlsrpt.post_report(
                    url, compressed, resolver=self.resolver, context=self._https_context()
                ):
                    posted += 1
                    log.event("report.tls.posted", domain=domain, day=day)
            to = self._deliverable("tls", domain, record.mailto, ours)
            if urls and not posted and not to:
                complete = False  # RFC 8460 §5.5: try the POST again later today
                log.event("report.tls.post_failed", level=logging.WARNING, domain=domain)
                continue
            entries: list[NewQueueEntry] = []
            if to:
                message = tlsrpt.build_message(
                    document,
                    compressed,
                    submitter=self.settings.submitter,
                    from_address=self.settings.from_address,
                    to_addresses=to,
                    day=day,
                    date=self.clock.now(),
                )
                entries = await self._entries(message, to, tls_optional=True)
            ids = await self.store.queue_report(
                kind="tls", domain=domain, day=day, report_id=report_id, entries=entries
            )
            if ids is None:
                continue
            log.event("report.tls.queued", domain=domain, recipients=len(to), day=day)
            outcomes.append(ReportOutcome("tls", domain, report_id, tuple(ids), posted))
        return outcomes, complete

    def _https_context(self) -> ssl.SSLContext:
        if self.https_context is None:
            context = ssl.create_default_context()
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.https_context = context
        return self.https_context
