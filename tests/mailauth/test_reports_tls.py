"""SMTP TLS reports (RFC 8460 §4): the JSON format and report emails (§5.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mailauth_kit import VECTORS

from hato.mailauth import dmarc_report as fmt
from hato.mailauth import tlsrpt

TLS = VECTORS / "reports" / "stalwart-mail-auth" / "tlsrpt"
MOX = VECTORS / "reports" / "mox" / "tlsreports"


def test_rfc8460_example_report() -> None:
    """rpt01 is the RFC 8460 Appendix B example."""
    report = tlsrpt.parse_json((TLS / "rpt01.json").read_bytes())
    assert (report.organization_name, report.report_id) == (
        "Company-X",
        "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    )
    assert (report.begin, report.end) == (1459468800.0, 1459555199.0)
    (policy,) = report.policies
    assert (policy.policy_type, policy.policy_domain) == ("sts", "company-y.example")
    assert policy.policy_strings[0] == "version: STSv1"
    assert (policy.successful, policy.failed) == (5326, 303)
    assert [(f.result_type, f.failed_session_count) for f in policy.failures] == [
        ("certificate-expired", 100),
        ("starttls-not-supported", 200),
        ("validation-failure", 3),
    ]
    assert policy.failures[2].failure_reason_code == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"


def test_report_without_policy_domain_is_tolerated() -> None:
    report = tlsrpt.parse_json((TLS / "rpt03.json").read_bytes())
    assert [p.policy_type for p in report.policies] == ["no-policy-found", "invalid-policy-type"]
    assert report.domains == ()


@pytest.mark.parametrize("name", ["rpt01", "rpt02"])
def test_report_emails_carry_the_same_report(name: str) -> None:
    """RFC 8460 §5.3: application/tlsrpt+gzip attachment."""
    files = fmt.report_attachments((TLS / f"{name}.eml").read_bytes())
    assert [kind for kind, _ in files] == ["tls"]
    from_mail = tlsrpt.parse_json(files[0][1])
    assert from_mail == tlsrpt.parse_json((TLS / f"{name}.json").read_bytes())


@pytest.mark.parametrize("path", sorted(MOX.glob("*.eml")), ids=lambda p: p.name)
def test_real_report_emails(path: Path) -> None:
    ((kind, content),) = fmt.report_attachments(path.read_bytes())
    assert kind == "tls"
    report = tlsrpt.parse_json(content)
    assert report.domains == ("test.xmox.nl",)
    assert report.begin < report.end
    assert sum(p.successful for p in report.policies) >= 2


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"organization-name": "x", "report-id": "1"}',
        json.dumps(
            {
                "organization-name": "x",
                "report-id": "1",
                "date-range": {"start-datetime": "yesterday", "end-datetime": "today"},
            }
        ).encode(),
        json.dumps(
            {
                "organization-name": "x",
                "report-id": "1",
                "date-range": {
                    "start-datetime": "2020-01-01T00:00:00Z",
                    "end-datetime": "2020-01-01T23:59:59Z",
                },
                "policies": [
                    {
                        "policy": {"policy-type": "sts"},
                        "summary": {"total-successful-session-count": -1},
                    }
                ],
            }
        ).encode(),
    ],
)
def test_malformed_reports_raise_report_format_error(document: bytes) -> None:
    with pytest.raises(fmt.ReportFormatError):
        tlsrpt.parse_json(document)
