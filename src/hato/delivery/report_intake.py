"""Incoming reports: mail for our report addresses is parsed and stored besides its delivery.

A message whose envelope names one of the configured report local parts (by default
``dmarc-reports`` and ``tls-reports``, the ``rua`` addresses ``hato dns records`` publishes)
in one of our domains is handed to ``hato.policy.dmarc_reporting.ingest_report``, which
stores each DMARC aggregate report (RFC 7489 §7.2) and TLS report (RFC 8460 §4) about one of
our domains once. The message itself is delivered normally (the address must exist as an
account or alias); intake never changes the SMTP answer.

TLS reports count only with a valid DKIM signature of the reporting domain (RFC 8460 §3:
"Reports lacking such a signature MUST be ignored"): a passing signature whose d= is the
``TLS-Report-Submitter`` domain or a parent of it.

Hook: the SMTP session calls ``ReportIntake.after_delivery(message)`` once the message is
committed (both the local-only and the local-plus-queue path).

Leaves out: DMARC failure reports (RFC 7489 §7.3, ``report-type=feedback-report``).

Security: report mail comes from strangers: the parsers are bounded
(``hato.mailauth.dmarc_report``), reports about other domains are dropped, and any failure
is logged and swallowed (the message is already delivered).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from hato.core.clock import Clock, SystemClock
from hato.core.dns import Resolver
from hato.core.errors import HatoError
from hato.core.log import event
from hato.delivery.local import ReceivedMessage
from hato.mailauth import dkim
from hato.mailauth.dmarc_report import ReportFormatError, report_attachments
from hato.policy.dmarc_reporting import ingest_report
from hato.store.api import MailStore, ReportStore
from hato.store.reports import FeedbackReport

DEFAULT_LOCAL_PARTS = ("dmarc-reports", "tls-reports")


class IntakeStore(MailStore, ReportStore):
    """The store the intake needs: blobs and domains, and the received-report tables."""


def _header(message: bytes, name: str) -> str:
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return str(parsed.get(name, "") or "").strip()


def signed_by_submitter(verification: dkim.DkimVerification, submitter: str) -> bool:
    """RFC 8460 §3: a valid DKIM signature by the reporting domain."""
    submitter = submitter.rstrip(".").lower()
    return bool(submitter) and any(
        submitter == r.domain or submitter.endswith("." + r.domain)
        for r in verification.passing()
        if r.domain
    )


@dataclass
class ReportIntake:
    """Parses report mail for our report addresses (see the module docstring)."""

    store: IntakeStore
    resolver: Resolver
    local_parts: Collection[str] = DEFAULT_LOCAL_PARTS
    clock: Clock | None = None

    def _candidates(self, recipients: Sequence[str]) -> set[str]:
        parts = {p.lower() for p in self.local_parts}
        found = set()
        for address in recipients:
            local, _, domain = address.rpartition("@")
            if local.lower() in parts:
                found.add(domain.rstrip(".").lower())
        return found

    def wants(self, recipients: Sequence[str], domains: Collection[str]) -> bool:
        """True when a recipient is a report address of one of ``domains``."""
        return any(d in domains for d in self._candidates(recipients))

    async def after_delivery(self, message: ReceivedMessage) -> list[FeedbackReport]:
        """Store the reports of a delivered message sent to a report address (the SMTP
        session's hook; never raises)."""
        recipients = [
            r.path.address.key for r in message.envelope.recipients if r.path.address is not None
        ]
        if not self._candidates(recipients):
            return []  # the common case costs no store access
        try:
            domains = {d.name for d in await self.store.list_domains()}
            if not self.wants(recipients, domains):
                return []
            data = await asyncio.to_thread(self.store.blobs.read, message.blob.id)
            return await self.ingest(data, our_domains=domains)
        except (HatoError, OSError) as exc:
            event("report.intake.failed", level=logging.WARNING, error=str(exc)[:200])
            return []

    async def ingest(self, data: bytes, *, our_domains: Collection[str]) -> list[FeedbackReport]:
        """Parse and store one report message; unreadable or unsigned TLS reports are
        logged and dropped."""
        try:
            kinds = {kind for kind, _content in report_attachments(data)}
        except ReportFormatError as exc:
            event("report.intake.unreadable", error=exc.detail[:200])
            return []
        if "tls" in kinds:
            verification = await dkim.verify(
                data, resolver=self.resolver, clock=self.clock or SystemClock()
            )
            submitter = _header(data, "TLS-Report-Submitter")
            if not signed_by_submitter(verification, submitter):
                # RFC 8460 §3: reports lacking the reporting domain's signature MUST be ignored
                event("report.intake.unsigned", submitter=submitter[:100])
                return []
        try:
            stored = await ingest_report(self.store, data, our_domains=our_domains)
        except ReportFormatError as exc:
            event("report.intake.unreadable", error=exc.detail[:200])
            return []
        event("report.intake.stored", reports=len(stored))
        return stored
