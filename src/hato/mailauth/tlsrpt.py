"""SMTP TLS Reporting (RFC 8460): parse the JSON aggregate reports others send about us.

Implements the report schema of RFC 8460 §4.3/§4.4 (organization-name, date-range with
RFC 3339 date-times, contact-info, report-id, policies with policy-type, policy-string,
policy-domain, mx-host, summary counts and failure-details with the result types of §4.3)
as frozen values; unknown fields are ignored (§4.4 "SHOULD ignore").

Left out: generating TLS reports about our own outbound sessions (needs the outbound TLS
results), the ``_smtp._tls`` TXT record (§3, ops' DNS records), HTTPS report submission.

Security: reports come from strangers; the JSON is size-bounded by the caller
(``hato.mailauth.dmarc_report.report_attachments``) and every field is type-checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hato.mailauth.dmarc_report import ReportFormatError

__all__ = ["FailureDetail", "PolicyResult", "TlsReport", "parse_json"]


@dataclass(frozen=True)
class FailureDetail:
    """RFC 8460 §4.4 failure-details entry."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    additional_information: str = ""
    failure_reason_code: str = ""


@dataclass(frozen=True)
class PolicyResult:
    """One policies[] entry: the policy applied and its session counts (RFC 8460 §4.4)."""

    policy_type: str  # tlsa, sts, no-policy-found
    policy_domain: str
    policy_strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    successful: int = 0
    failed: int = 0
    failures: tuple[FailureDetail, ...] = ()


@dataclass(frozen=True)
class TlsReport:
    """An RFC 8460 aggregate report."""

    organization_name: str
    report_id: str
    begin: float  # POSIX seconds
    end: float
    contact_info: str = ""
    policies: tuple[PolicyResult, ...] = ()

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.policy_domain for p in self.policies if p.policy_domain))


def _str(obj: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ReportFormatError(f"TLS report: {key} missing")  # RFC 8460 §4.4
        return ""
    if not isinstance(value, str):
        raise ReportFormatError(f"TLS report: {key} is not a string")
    return value


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportFormatError(f"TLS report: {key} is not a count")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReportFormatError("TLS report: expected a list of strings")
    return tuple(value)


def _time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("z", "Z")).timestamp()  # RFC 3339
    except ValueError:
        raise ReportFormatError(f"TLS report: bad date-time {text[:40]!r}") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportFormatError(f"TLS report: {what} is not an object")
    return value


def _policy(entry: Any) -> PolicyResult:
    entry = _object(entry, "policies[]")
    policy = _object(entry.get("policy"), "policy")
    summary = _object(entry.get("summary", {}), "summary")
    failures = tuple(
        FailureDetail(
            result_type=_str(f, "result-type", required=True),
            failed_session_count=_count(f, "failed-session-count"),
            sending_mta_ip=_str(f, "sending-mta-ip"),
            receiving_mx_hostname=_str(f, "receiving-mx-hostname"),
            receiving_mx_helo=_str(f, "receiving-mx-helo"),
            receiving_ip=_str(f, "receiving-ip"),
            additional_information=_str(f, "additional-information"),
            failure_reason_code=_str(f, "failure-reason-code"),
        )
        for f in (_object(x, "failure-details[]") for x in entry.get("failure-details") or [])
    )
    return PolicyResult(
        policy_type=_str(policy, "policy-type", required=True),
        policy_domain=_str(policy, "policy-domain").rstrip(".").lower(),  # tolerated missing
        policy_strings=_strings(policy.get("policy-string")),
        mx_hosts=_strings(policy.get("mx-host")),
        successful=_count(summary, "total-successful-session-count"),
        failed=_count(summary, "total-failure-session-count"),
        failures=failures,
    )


def parse_json(data: bytes) -> TlsReport:
    """Parse one RFC 8460 JSON report; raises ReportFormatError."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportFormatError(f"TLS report is not JSON: {exc}") from None
    document = _object(document, "report")
    dates = _object(document.get("date-range"), "date-range")
    policies = document.get("policies") or []
    if not isinstance(policies, list):
        raise ReportFormatError("TLS report: policies is not a list")
    return TlsReport(
        organization_name=_str(document, "organization-name", required=True),
        report_id=_str(document, "report-id", required=True),
        begin=_time(_str(dates, "start-datetime", required=True)),
        end=_time(_str(dates, "end-datetime", required=True)),
        contact_info=_str(document, "contact-info"),
        policies=tuple(_policy(p) for p in policies),
    )
