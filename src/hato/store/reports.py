"""Domain types of DMARC and TLS reporting at the store boundary.

``DmarcEvaluation`` is one message's DMARC evaluation as RFC 7489 §6.6.5 asks receivers to
keep it for aggregate reports (§7.2, the fields of Appendix C ``record``); the reporting job
groups them into report rows. ``FeedbackReport`` is a report somebody sent us about one of
our domains (a DMARC aggregate report, RFC 7489 §7.2, or a TLS report, RFC 8460 §4), kept
with its parsed content as JSON text.

Leaves out: the XML/JSON formats themselves (``hato.mailauth.dmarc_report``,
``hato.mailauth.tlsrpt``) and failure reports (RFC 7489 §7.3).
"""

from __future__ import annotations

from dataclasses import dataclass

REPORT_KINDS = ("dmarc", "tls")


@dataclass(frozen=True, slots=True)
class DmarcEvaluation:
    """One evaluated message (RFC 7489 Appendix C RecordType, count 1)."""

    policy_domain: str  # where the DMARC record was found
    header_from: str  # RFC5322.From domain
    source_ip: str
    envelope_from: str  # RFC5321.MailFrom domain (HELO domain for a null path)
    envelope_to: str | None
    disposition: str  # none / quarantine / reject: what we did
    dkim_aligned: str  # pass / fail (PolicyEvaluatedType dkim)
    spf_aligned: str  # pass / fail
    reasons: tuple[tuple[str, str], ...] = ()  # (PolicyOverrideType, comment)
    dkim: tuple[tuple[str, str, str], ...] = ()  # (domain, selector, result)
    spf: tuple[tuple[str, str, str], ...] = ()  # (domain, scope, result)
    record: str = ""  # the DMARC record text as published
    evaluated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """A report received about one of our domains."""

    id: int
    kind: str  # "dmarc" or "tls"
    org_name: str
    report_id: str
    domain: str  # the policy domain the report is about
    begin: float
    end: float
    received_at: float
    data: str  # the parsed report as JSON text
