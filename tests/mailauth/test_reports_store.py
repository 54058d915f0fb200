"""Reporting with the real SQLite store: daily aggregate reports out, received reports in,
and the ``hato report dmarc|tls`` commands."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner
from mailauth_kit import VECTORS

from hato.app.cli import cli
from hato.core.clock import FixedClock
from hato.core.dns import StaticResolver
from hato.mailauth import dmarc_report as fmt
from hato.policy.dmarc_reporting import DAY, Reporter, daily_reports, ingest_report
from hato.store.reports import DmarcEvaluation
from hato.store.sqlite import SqliteStore, open_store

T = TypeVar("T")
REPORTS = VECTORS / "reports" / "stalwart-mail-auth"
DAY0 = 1_700_006_400  # 2023-11-15 00:00 UTC
REPORTER = Reporter("Hato", "dmarc-reports@hato.example", "mx.hato.example")


def _with_store(tmp_path: Path, work: Callable[[SqliteStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await open_store(tmp_path / "data", clock=FixedClock(DAY0 + DAY + 60))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _evaluation(at: float, **changes: Any) -> DmarcEvaluation:
    fields: dict[str, Any] = {
        "policy_domain": "example.com",
        "header_from": "example.com",
        "source_ip": "192.0.2.10",
        "envelope_from": "sender.example",
        "envelope_to": "hato.example",
        "disposition": "reject",
        "dkim_aligned": "fail",
        "spf_aligned": "fail",
        "dkim": (("example.com", "sel", "fail"),),
        "spf": (("sender.example", "mfrom", "pass"),),
        "record": "v=DMARC1; p=reject; rua=mailto:dmarc@example.com",
        "evaluated_at": at,
    }
    fields.update(changes)
    return DmarcEvaluation(**fields)


def test_daily_report_for_a_domain_with_rua(tmp_path: Path) -> None:
    async def work(store: SqliteStore) -> list[Any]:
        for at in (DAY0 + 10, DAY0 + 20, DAY0 + 30):
            await store.record_dmarc_evaluation(_evaluation(at))
        await store.record_dmarc_evaluation(
            _evaluation(
                DAY0 + 40,
                source_ip="198.51.100.1",
                disposition="none",
                dkim_aligned="pass",
                reasons=(("local_policy", "arc=pass"),),
            )
        )
        await store.record_dmarc_evaluation(_evaluation(DAY0 - 5))  # the day before
        await store.record_dmarc_evaluation(  # no rua: no report (RFC 7489 §7.2)
            _evaluation(
                DAY0 + 50,
                policy_domain="norua.example",
                header_from="norua.example",
                record="v=DMARC1; p=none",
            )
        )
        return await daily_reports(
            store, StaticResolver({}), day_start=DAY0 + 3600, reporter=REPORTER
        )

    (out,) = _with_store(tmp_path, work)
    assert out.policy_domain == "example.com"
    assert out.recipients == ("dmarc@example.com",)
    assert out.messages_covered == 4
    message = email.message_from_bytes(out.message, policy=email.policy.default)
    assert message["To"] == "dmarc@example.com"
    (part,) = [p for p in message.walk() if p.get_content_type() == "application/gzip"]
    report = fmt.parse_xml(gzip.decompress(part.get_payload(decode=True)))
    assert (report.begin, report.end) == (DAY0, DAY0 + DAY - 1)  # 00:00 UTC, 24 hours
    assert report.policy == fmt.PolicyPublished("example.com", "reject", "reject")
    assert [(r.source_ip, r.count, r.disposition, r.dkim) for r in report.records] == [
        ("192.0.2.10", 3, "reject", "fail"),
        ("198.51.100.1", 1, "none", "pass"),
    ]
    assert report.records[1].reasons == (fmt.ReportReason("local_policy", "arc=pass"),)
    assert report.records[0].spf_results == (fmt.SpfAuth("sender.example", "pass", "mfrom"),)


def test_size_limit_and_unverified_destinations_drop_the_report(tmp_path: Path) -> None:
    """RFC 7489 §7.2.1: a URI whose size limit the report exceeds MUST NOT be used; §7.1:
    an external destination without authorization is ignored."""

    async def work(store: SqliteStore) -> list[Any]:
        record = "v=DMARC1; p=reject; rua=mailto:a@example.com!100,mailto:b@elsewhere.example"
        await store.record_dmarc_evaluation(_evaluation(DAY0 + 1, record=record))
        return await daily_reports(store, StaticResolver({}), day_start=DAY0, reporter=REPORTER)

    assert _with_store(tmp_path, work) == []


def test_purge(tmp_path: Path) -> None:
    async def work(store: SqliteStore) -> tuple[int, list[str]]:
        await store.record_dmarc_evaluation(_evaluation(DAY0 + 1))
        await store.record_dmarc_evaluation(_evaluation(DAY0 + DAY + 1, policy_domain="b.example"))
        purged = await store.purge_dmarc_evaluations(before=DAY0 + DAY)
        return purged, await store.dmarc_policy_domains(since=0, until=DAY0 * 2)

    assert _with_store(tmp_path, work) == (1, ["b.example"])


def test_ingest_stores_our_reports_once(tmp_path: Path) -> None:
    google = (REPORTS / "dmarc-feedback" / "100.eml").read_bytes()
    tls = (REPORTS / "tlsrpt" / "rpt01.eml").read_bytes()

    async def work(store: SqliteStore) -> tuple[Any, ...]:
        first = await ingest_report(store, google, our_domains=["stalw.art"])
        again = await ingest_report(store, google, our_domains=["stalw.art"])
        tls_stored = await ingest_report(store, tls, our_domains=["company-y.example"])
        foreign = await ingest_report(store, tls, our_domains=["stalw.art"])
        everything = await store.list_feedback_reports()
        return first, again, tls_stored, foreign, everything

    first, again, tls_stored, foreign, everything = _with_store(tmp_path, work)
    assert [(r.kind, r.domain, r.org_name) for r in first] == [("dmarc", "stalw.art", "google.com")]
    assert again == []  # RFC 7489 §7.2.1.1: the Report-ID identifies duplicates
    assert [(r.kind, r.domain) for r in tls_stored] == [("tls", "company-y.example")]
    assert foreign == []  # not about one of our domains
    assert len(everything) == 2
    data = json.loads(first[0].data)
    assert data["records"][0]["source_ip"] == "2a01:4f9:c011:b43c::1"


def test_ingest_refuses_a_message_without_reports(tmp_path: Path) -> None:
    async def work(store: SqliteStore) -> None:
        await ingest_report(store, b"From: a@example.org\r\n\r\nno report here\r\n")

    with pytest.raises(fmt.ReportFormatError):
        _with_store(tmp_path, work)


CONFIG = """\
[server]
hostname = "mail.example.test"
data_dir = "data"
demo = true

[smtp]
submissions_listeners = []

[imap]
tls_listeners = []

[pop3]
tls_listeners = []
"""


def test_report_cli(tmp_path: Path) -> None:
    config = tmp_path / "hato.toml"
    config.write_text(CONFIG)
    runner = CliRunner()

    def hato(*args: str) -> Any:
        return runner.invoke(cli, [*args, "--config", str(config)])

    assert hato("domain", "add", "stalw.art").exit_code == 0
    assert hato("domain", "add", "company-y.example").exit_code == 0
    result = hato("report", "dmarc", "import", str(REPORTS / "dmarc-feedback" / "100.eml"))
    assert result.exit_code == 0, result.output
    assert result.output.endswith("100.eml: 1 new dmarc report\n")
    listing = hato("report", "dmarc", "list")
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split() == ["ID", "DOMAIN", "FROM", "BEGIN", "END", "REPORT-ID"]
    report_id = lines[1].split()[0]
    assert "stalw.art" in lines[1] and "5264580628977113351" in lines[1]
    shown = hato("report", "dmarc", "show", report_id)
    assert shown.exit_code == 0
    assert "2a01:4f9:c011:b43c::1" in shown.output
    as_json = hato("report", "dmarc", "show", report_id, "--json")
    assert json.loads(as_json.output)["org_name"] == "google.com"
    assert hato("report", "tls", "show", report_id).exit_code == 1  # a DMARC report, not TLS
    tls = hato("report", "tls", "import", str(REPORTS / "tlsrpt" / "rpt01.eml"))
    assert tls.output.endswith("rpt01.eml: 1 new tls report\n")
    tls_list = hato("report", "tls", "list", "--domain", "company-y.example")
    tls_id = tls_list.output.splitlines()[1].split()[0]
    tls_show = hato("report", "tls", "show", tls_id)
    assert "certificate-expired×100" in tls_show.output
    bad = tmp_path / "nothing.eml"
    bad.write_bytes(b"Subject: x\r\n\r\nnothing\r\n")
    failed = hato("report", "dmarc", "import", str(bad))
    assert failed.exit_code == 1
    assert failed.output.startswith("error: no DMARC or TLS report")
