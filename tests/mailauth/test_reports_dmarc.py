"""DMARC aggregate reports (RFC 7489 §7.1, §7.2, Appendix C): parse others', build ours."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mailauth_kit import VECTORS

from hato.core.dns import TIMEOUT, StaticResolver
from hato.mailauth import dmarc_report as fmt

REPORTS = VECTORS / "reports"
STALWART = REPORTS / "stalwart-mail-auth" / "dmarc-feedback"


def _snake(value: Any) -> str:
    """Stalwart's enum spelling → the XML token (TrustedForwarder → trusted_forwarder)."""
    if value is None:
        return ""
    text = str(value)
    special = {"MailFrom": "mfrom", "Unspecified": ""}
    if text in special:
        return special[text]
    return re.sub(r"(?<!^)([A-Z])", r"_\1", text).lower()


_DMARCBIS = {"sampled_out": "other"}


def _compare(report: fmt.AggregateReport, expected: dict[str, Any]) -> None:
    meta = expected["report_metadata"]
    assert (report.org_name, report.email, report.report_id) == (
        meta["org_name"],
        meta["email"],
        meta["report_id"],
    )
    assert report.extra_contact_info == (meta["extra_contact_info"] or "")
    assert (report.begin, report.end) == (meta["date_range"]["begin"], meta["date_range"]["end"])
    assert float(report.version or 0) == expected["version"]
    published = expected["policy_published"]
    assert report.policy.domain == published["domain"]
    assert report.policy.p == _snake(published["p"])
    assert report.policy.sp == _snake(published["sp"])
    assert report.policy.np == _snake(published.get("np"))
    for ours, theirs in (("adkim", "adkim"), ("aspf", "aspf")):
        if published[theirs] != "Unspecified":
            assert getattr(report.policy, ours) == published[theirs][0].lower()
    assert len(report.records) == len(expected["record"])
    for got, want in zip(report.records, expected["record"], strict=True):
        row = want["row"]
        assert (got.source_ip, got.count) == (row["source_ip"], row["count"])
        evaluated = row["policy_evaluated"]
        assert (got.disposition, got.dkim, got.spf) == (
            _snake(evaluated["disposition"]),
            _snake(evaluated["dkim"]),
            _snake(evaluated["spf"]),
        )
        # Stalwart follows DMARCbis, which dropped RFC 7489's "sampled_out": it reads "other";
        # we keep the RFC 7489 Appendix C token.
        assert [(_DMARCBIS.get(r.type, r.type), r.comment) for r in got.reasons] == [
            (_snake(r["type_"]), r["comment"] or "") for r in evaluated["reason"]
        ]
        ids = want["identifiers"]
        assert (got.header_from, got.envelope_from, got.envelope_to) == (
            ids["header_from"],
            ids["envelope_from"] or "",
            ids["envelope_to"] or "",
        )
        assert [(d.domain, d.selector, d.result, d.human_result) for d in got.dkim_results] == [
            (d["domain"], d["selector"] or "", _snake(d["result"]), d["human_result"] or "")
            for d in want["auth_results"]["dkim"]
        ]
        assert [(s.domain, s.scope, s.result) for s in got.spf_results] == [
            (s["domain"], _snake(s["scope"]), _snake(s["result"]))
            for s in want["auth_results"]["spf"]
        ]


XML_FILES = sorted(STALWART.glob("*.xml"))
EML_FILES = sorted(STALWART.glob("*.eml"))


@pytest.mark.parametrize("path", XML_FILES, ids=[p.name for p in XML_FILES])
def test_stalwart_xml_reports(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text())
    _compare(fmt.parse_xml(path.read_bytes()), expected)


@pytest.mark.parametrize("path", EML_FILES, ids=[p.name for p in EML_FILES])
def test_stalwart_report_emails(path: Path) -> None:
    """Report emails: zip, gzip and octet-stream attachments (RFC 7489 §7.2.1.1)."""
    files = fmt.report_attachments(path.read_bytes())
    assert [kind for kind, _ in files] == ["dmarc"]
    expected = json.loads(path.with_suffix(".json").read_text())
    _compare(fmt.parse_xml(files[0][1]), expected)


def test_vector_counts() -> None:
    assert (len(XML_FILES), len(EML_FILES)) == (5, 5)


@pytest.mark.parametrize(
    ("name", "records", "messages"),
    [
        ("163.com!example.com!1337270400!1337356799.20120518163.xml", 50, None),
        ("good.com!example.com!1337270400!1337356799.xml", 754, None),
        ("yeah.net!example.com!1337270400!1337356799.20120518.xml", 254, None),
    ],
)
def test_opendmarc_real_reports(name: str, records: int, messages: int | None) -> None:
    report = fmt.parse_xml((REPORTS / "opendmarc" / name).read_bytes())
    assert len(report.records) == records
    assert report.policy.domain == "example.com"
    assert report.begin < report.end
    assert all(r.count >= 1 and r.source_ip for r in report.records)


def test_malformed_opendmarc_report_is_refused_cleanly() -> None:
    bad = REPORTS / "opendmarc" / "bad.com!example.com!1337140800!1337227200.xml"
    with pytest.raises(fmt.ReportFormatError, match="not well-formed"):
        fmt.parse_xml(bad.read_bytes())


MOX = sorted((REPORTS / "mox" / "dmarc-reports").glob("*.eml"))


@pytest.mark.parametrize("path", MOX, ids=[p.name for p in MOX])
def test_mox_real_report_emails(path: Path) -> None:
    files = fmt.report_attachments(path.read_bytes())
    assert [kind for kind, _ in files] == ["dmarc"]
    report = fmt.parse_xml(files[0][1])
    assert report.org_name and report.report_id and report.policy.domain
    assert 0 < report.begin < report.end
    assert report.message_count >= 1


def test_doctype_is_refused() -> None:
    """Entity expansion attacks: reports never need a DTD."""
    bomb = b'<?xml version="1.0"?><!DOCTYPE f [<!ENTITY a "aaaa">]><feedback>&a;</feedback>'
    with pytest.raises(fmt.ReportFormatError, match="DTD"):
        fmt.parse_xml(bomb)


def test_decompression_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "MAX_REPORT_SIZE", 10_000)
    message = _mail_with(
        gzip.compress(b"<feedback>" + b" " * 50_000), "application/gzip", "r.xml.gz"
    )
    with pytest.raises(fmt.ReportFormatError, match="too large"):
        fmt.report_attachments(message)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("r.xml", b"<feedback>" + b" " * 50_000)
    with pytest.raises(fmt.ReportFormatError, match="too large"):
        fmt.report_attachments(_mail_with(archive.getvalue(), "application/zip", "r.zip"))


def _mail_with(payload: bytes, ctype: str, filename: str) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = "reports@example.net"
    message["Subject"] = "Report"
    message.set_content("report attached")
    main, sub = ctype.split("/")
    message.add_attachment(payload, maintype=main, subtype=sub, filename=filename)
    return message.as_bytes()


REPORT = fmt.AggregateReport(
    org_name="Hato",
    email="dmarc-reports@hato.example",
    report_id="example.com.1700006400",
    begin=1700006400,
    end=1700092799,
    policy=fmt.PolicyPublished("example.com", "reject", "quarantine", pct=100, fo="0"),
    records=fmt.aggregate(
        [
            fmt.ReportRecord(
                "192.0.2.10",
                1,
                "reject",
                "fail",
                "fail",
                "example.com",
                "sender.example",
                reasons=(fmt.ReportReason("local_policy", "arc=pass as[1].d=x.example"),),
                dkim_results=(fmt.DkimAuth("example.org", "fail", "sel"),),
                spf_results=(fmt.SpfAuth("sender.example", "pass", "mfrom"),),
            )
        ]
        * 3
        + [fmt.ReportRecord("2001:db8::1", 2, "none", "pass", "fail", "example.com")]
    ),
)


def test_aggregate_merges_identical_rows() -> None:
    assert [(r.source_ip, r.count) for r in REPORT.records] == [
        ("192.0.2.10", 3),
        ("2001:db8::1", 2),
    ]
    assert REPORT.message_count == 5


def test_rendered_xml_parses_back() -> None:
    xml = fmt.render_xml(REPORT)
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert b"<version>1.0</version>" in xml  # Appendix C: MUST be 1.0
    assert fmt.parse_xml(xml) == REPORT


def test_report_message_layout() -> None:
    """RFC 7489 §7.2.1.1: MIME message, gzip part, filename and Subject ABNF."""
    raw = fmt.build_aggregate_report(
        REPORT,
        receiver="mx.hato.example",
        from_address="dmarc-reports@hato.example",
        to_addresses=["dmarc@example.com"],
        message_id="<example.com.1700006400@mx.hato.example>",
        date=1700092800,
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    subject = " ".join(str(message["Subject"]).split())
    assert subject == (
        "Report Domain: example.com Submitter: mx.hato.example Report-ID: <example.com.1700006400>"
    )
    (part,) = [p for p in message.walk() if p.get_content_type() == "application/gzip"]
    assert part.get_filename() == "mx.hato.example!example.com!1700006400!1700092799.xml.gz"
    assert fmt.parse_xml(gzip.decompress(part.get_payload(decode=True))) == REPORT
    assert fmt.report_attachments(raw) == [("dmarc", fmt.render_xml(REPORT))]


def test_filename_unique_id_must_be_alphanumeric() -> None:
    assert fmt.report_filename("r.example", "d.example", 1, 2, unique_id="a1") == (
        "r.example!d.example!1!2!a1.xml.gz"
    )
    with pytest.raises(fmt.ReportFormatError):
        fmt.report_filename("r.example", "d.example", 1, 2, unique_id="a-1")


def test_size_limits() -> None:
    assert fmt.uri_size_limit("mailto:a@example.com!10m") == 10 * 1024 * 1024
    assert fmt.uri_size_limit("mailto:a@example.com!500") == 500
    assert fmt.uri_size_limit("mailto:a@example.com") is None
    assert fmt.mailto_address("mailto:dmarc%2Bx@example.com!10m") == "dmarc+x@example.com"
    assert fmt.mailto_address("https://example.com/r") is None


@pytest.mark.parametrize(
    ("zone", "uris", "expected"),
    [
        # same organizational domain: no check needed (§7.1 first paragraph)
        ({}, ["mailto:dmarc@reports.example.com"], ["mailto:dmarc@reports.example.com"]),
        # external, authorized (§7.1 steps 4-7)
        (
            {"example.com._report._dmarc.thirdparty.example": {"TXT": ["v=DMARC1"]}},
            ["mailto:rua@thirdparty.example"],
            ["mailto:rua@thirdparty.example"],
        ),
        # external, not authorized, or authorized by a non-DMARC record (§7.1 step 6)
        ({}, ["mailto:rua@thirdparty.example"], []),
        (
            {"example.com._report._dmarc.thirdparty.example": {"TXT": ["v=spf1 -all"]}},
            ["mailto:rua@thirdparty.example"],
            [],
        ),
        # override to the same destination host (§7.1 step 8)
        (
            {
                "example.com._report._dmarc.thirdparty.example": {
                    "TXT": ["v=DMARC1; rua=mailto:other@thirdparty.example"]
                }
            },
            ["mailto:rua@thirdparty.example"],
            ["mailto:other@thirdparty.example"],
        ),
        # override to another host: neither may be used (§7.1 last paragraph)
        (
            {
                "example.com._report._dmarc.thirdparty.example": {
                    "TXT": ["v=DMARC1; rua=mailto:x@elsewhere.example"]
                }
            },
            ["mailto:rua@thirdparty.example"],
            [],
        ),
        # DNS failure: cannot verify now (§7.1 step 4)
        (
            {"example.com._report._dmarc.thirdparty.example": {"TXT": TIMEOUT}},
            ["mailto:rua@thirdparty.example", "mailto:d@example.com"],
            ["mailto:d@example.com"],
        ),
        # only mailto is defined (§7.2.1.2)
        ({}, ["https://example.com/dmarc"], []),
    ],
)
def test_external_destination_verification(
    zone: dict[str, Any], uris: list[str], expected: list[str]
) -> None:
    resolver = StaticResolver(zone)
    assert asyncio.run(fmt.authorized_uris(resolver, "example.com", uris)) == expected
