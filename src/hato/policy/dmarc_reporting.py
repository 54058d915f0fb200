"""DMARC aggregate reporting jobs: daily reports out (RFC 7489 §7.2), received reports in.

``daily_reports`` turns the evaluations stored by the inbound pipeline (RFC 7489 §6.6.5) for
one UTC day (§7.2: 24-hour periods starting 00:00 UTC) into one report message per policy
domain whose record asks for aggregate reports (``rua``), sent only to URIs that pass the
external-destination check of §7.1 and whose size limit the message fits (§7.2.1).
``ingest_report`` reads a report email sent to us (DMARC aggregate XML in gzip/zip/plain,
or an RFC 8460 TLS report) and stores each report about one of our domains once.

Left out: sending (the outbound queue takes the returned messages), the short "report could
not be sent" error report (§7.2.2).

Security: received reports are untrusted input, parsed with the bounded parsers of
``hato.mailauth.dmarc_report`` / ``tlsrpt``; reports about domains that are not ours are
dropped, so strangers cannot fill the store with data about others.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass

from hato.core.dns import Resolver
from hato.core.log import event
from hato.mailauth import dmarc_report as fmt
from hato.mailauth.dmarc import DmarcRecordError, parse_record
from hato.mailauth.orgdomain import PublicSuffixList
from hato.mailauth.tlsrpt import parse_json
from hato.store.api import ReportStore
from hato.store.reports import DmarcEvaluation, FeedbackReport

__all__ = ["DAY", "OutgoingReport", "Reporter", "daily_reports", "ingest_report"]

DAY = 86400  # RFC 7489 §7.2: reports SHOULD cover 24 hours from 00:00 UTC


@dataclass(frozen=True)
class Reporter:
    """Who we are in the reports we send (RFC 7489 Appendix C report_metadata)."""

    org_name: str
    email: str  # also the From of the report message
    receiver: str  # our host/domain name: the filename's "receiver" and the Submitter
    extra_contact_info: str = ""


@dataclass(frozen=True)
class OutgoingReport:
    """One report message ready for the outbound queue."""

    policy_domain: str
    recipients: tuple[str, ...]
    message: bytes
    report_id: str
    messages_covered: int


def _record(evaluation: DmarcEvaluation) -> fmt.ReportRecord:
    return fmt.ReportRecord(
        source_ip=evaluation.source_ip,
        count=1,
        disposition=evaluation.disposition,
        dkim=evaluation.dkim_aligned,
        spf=evaluation.spf_aligned,
        header_from=evaluation.header_from,
        envelope_from=evaluation.envelope_from,
        envelope_to=evaluation.envelope_to or "",
        reasons=tuple(fmt.ReportReason(t, c) for t, c in evaluation.reasons),
        dkim_results=tuple(fmt.DkimAuth(d, r, s) for d, s, r in evaluation.dkim),
        spf_results=tuple(fmt.SpfAuth(d, r, scope) for d, scope, r in evaluation.spf),
    )


async def daily_reports(
    store: ReportStore,
    resolver: Resolver,
    *,
    day_start: float,
    reporter: Reporter,
    psl: PublicSuffixList | None = None,
) -> list[OutgoingReport]:
    """The aggregate reports for the UTC day starting at ``day_start`` (aligned down)."""
    begin = int(day_start) - int(day_start) % DAY
    end = begin + DAY
    reports: list[OutgoingReport] = []
    for domain in await store.dmarc_policy_domains(since=begin, until=end):
        evaluations = await store.dmarc_evaluations(since=begin, until=end, policy_domain=domain)
        if not evaluations:
            continue
        try:
            record = parse_record(evaluations[-1].record)  # the newest policy seen (§7.2)
        except DmarcRecordError:
            continue
        if not record.rua:
            continue  # RFC 7489 §7.2: reports go only where "rua" asks for them
        uris = await fmt.authorized_uris(resolver, domain, record.rua, psl=psl)
        if not uris:
            event("dmarc.report.no_destination", domain=domain)
            continue
        report_id = f"{domain}.{begin}"
        sp = record.subdomain_policy or record.policy
        policy = fmt.PolicyPublished(
            domain=domain,
            p=record.policy.value,
            sp=sp.value,
            adkim=record.adkim,
            aspf=record.aspf,
            pct=record.pct,
            fo=":".join(record.fo),
            np=record.nonexistent_policy.value if record.nonexistent_policy else "",
        )
        report = fmt.AggregateReport(
            org_name=reporter.org_name,
            email=reporter.email,
            report_id=report_id,
            begin=begin,
            end=end - 1,
            policy=policy,
            records=fmt.aggregate(_record(e) for e in evaluations),
            extra_contact_info=reporter.extra_contact_info,
        )
        addresses = [a for a in (fmt.mailto_address(u) for u in uris) if a]
        message = fmt.build_aggregate_report(
            report,
            receiver=reporter.receiver,
            from_address=reporter.email,
            to_addresses=addresses,
            message_id=f"<{report_id}@{reporter.receiver}>",
            date=end,
        )
        recipients = []
        for uri, address in zip(uris, (fmt.mailto_address(u) for u in uris), strict=True):
            limit = fmt.uri_size_limit(uri)
            if address and (limit is None or len(message) <= limit):  # RFC 7489 §7.2.1
                recipients.append(address)
        if recipients:
            reports.append(
                OutgoingReport(domain, tuple(recipients), message, report_id, report.message_count)
            )
    return reports


def _ours(domain: str, domains: Collection[str] | None) -> bool:
    if domains is None:
        return True
    domain = domain.rstrip(".").lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


async def ingest_report(
    store: ReportStore, message: bytes, *, our_domains: Collection[str] | None = None
) -> list[FeedbackReport]:
    """Store the reports of one report email; returns the newly stored ones.

    Raises ReportFormatError when the message holds no readable report at all.
    """
    files = fmt.report_attachments(message)
    if not files:
        raise fmt.ReportFormatError("no DMARC or TLS report found in the message")
    stored: list[FeedbackReport] = []
    problems = 0
    for kind, content in files:
        try:
            if kind == "dmarc":
                dmarc = fmt.parse_xml(content)
                domain = dmarc.policy.domain
                org, rid = dmarc.org_name, dmarc.report_id
                begin, end = float(dmarc.begin), float(dmarc.end)
                data = json.dumps(asdict(dmarc))
                domains = [domain]
            else:
                tls = parse_json(content)
                domains = list(tls.domains)
                domain = domains[0] if domains else ""
                org, rid = tls.organization_name, tls.report_id
                begin, end = tls.begin, tls.end
                data = json.dumps(asdict(tls))
        except fmt.ReportFormatError as exc:
            problems += 1
            event("report.ingest.unreadable", kind=kind, error=str(exc)[:120])
            continue
        if not domain or not any(_ours(d, our_domains) for d in domains):
            event("report.ingest.foreign", kind=kind, domain=domain)
            continue
        saved = await store.add_feedback_report(
            kind=kind,
            org_name=org,
            report_id=rid,
            domain=domain,
            begin=begin,
            end=end,
            data=data,
        )
        if saved is not None:
            stored.append(saved)
    if problems == len(files):
        raise fmt.ReportFormatError("no readable report in the message")
    return stored
