"""Helpers of the reporting tests: a store with local domains, DMARC evaluations and TLS
session rows of one day, a report service pointed at a loopback DNS server, and readers that
take a queued report apart again with Hato's own parsers."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from email.message import Message
from pathlib import Path
from typing import Any

from dnsserver import DnsServer
from hato.core.clock import FixedClock
from hato.mailauth.resolver import DnsPythonResolver
from hato.outbound.reports import ReportService, ReportSettings
from hato.store.queue import QueueEntry
from hato.store.reporting import TlsSessionCount
from hato.store.reports import DmarcEvaluation
from hato.store.sqlite import SqliteStore, open_store

DAY = 86400
DAY0 = 1_700_006_400  # 2023-11-15 00:00 UTC
SETTINGS = ReportSettings(
    hostname="mx.hato.test",
    from_address="noreply-dmarc-support@hato.test",
    org_name="Hato Test",
)
DMARC_RECORD = "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test"


def zone() -> dict[str, Any]:
    """sender.test asks for DMARC reports; tls.test for TLS reports; norua.test for none."""
    return {
        "_dmarc.sender.test": {"TXT": [DMARC_RECORD]},
        "_dmarc.norua.test": {"TXT": ["v=DMARC1; p=none"]},
        "_smtp._tls.tls.test": {"TXT": ["v=TLSRPTv1; rua=mailto:tlsrpt@tls.test"]},
        "_smtp._tls.other.test": {"TXT": ["v=spf1 -all"]},  # not a TLSRPT record
    }


def evaluation(at: float, **changes: Any) -> DmarcEvaluation:
    fields: dict[str, Any] = {
        "policy_domain": "sender.test",
        "header_from": "sender.test",
        "source_ip": "192.0.2.10",
        "envelope_from": "sender.test",
        "envelope_to": "hato.test",
        "disposition": "none",
        "dkim_aligned": "pass",
        "spf_aligned": "pass",
        "dkim": (("sender.test", "sel", "pass"),),
        "spf": (("sender.test", "mfrom", "pass"),),
        "record": DMARC_RECORD,
        "evaluated_at": at,
    }
    fields.update(changes)
    return DmarcEvaluation(**fields)


def sessions(day: int, domain: str = "tls.test") -> list[TlsSessionCount]:
    sts = ("version: STSv1", "mode: enforce", "mx: mx.tls.test", "max_age: 86400")
    ok = TlsSessionCount(
        day=day,
        policy_domain=domain,
        policy_type="sts",
        result_type="success",
        policy_strings=sts,
        mx_hosts=("mx.tls.test",),
        sessions=5,
    )
    bad = replace(
        ok,
        result_type="certificate-host-mismatch",
        sending_ip="127.0.0.1",
        receiving_mx="mx.tls.test",
        receiving_helo="mx.tls.test",
        receiving_ip="127.0.0.9",
        reason_code="hostname mismatch",
        sessions=2,
    )
    return [ok, bad]


async def open_test_store(tmp_path: Path, clock: FixedClock) -> SqliteStore:
    store = await open_store(tmp_path / "data", clock=clock)
    if not await store.has_domain("hato.test"):
        await store.add_domain("hato.test")
    return store


def service(store: SqliteStore, dns: DnsServer, clock: FixedClock, **changes: Any) -> ReportService:
    resolver = DnsPythonResolver([dns.host], port=dns.port, timeout=2.0)
    context = changes.pop("https_context", None)
    return ReportService(
        replace(SETTINGS, **changes),
        store=store,
        resolver=resolver,
        clock=clock,
        https_context=context,
    )


def parse(store: SqliteStore, entry: QueueEntry) -> Message:
    data = store.blobs.read(entry.blob_id)[entry.strip_prefix :]
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    return email.message_from_bytes(data, policy=email.policy.default)
