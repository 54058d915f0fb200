"""The daily reporting service with the real store and a loopback DNS server: a fixed clock
across midnight, one report per domain and day (DMARC, RFC 7489 §7.2; TLS, RFC 8460 §4),
their bytes read back with Hato's own parsers, idempotency across restarts, no report without
rua, §7.1 external destination verification, purging, HTTPS POST (RFC 8460 §5.4)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from reports_kit import (
    DAY,
    DAY0,
    SETTINGS,
    evaluation,
    open_test_store,
    parse,
    service,
    sessions,
    zone,
)

from dnsserver import DnsServer
from hato.core.clock import FixedClock
from hato.mailauth import dmarc_report as fmt
from hato.mailauth.tlsrpt import parse_json
from hato.ops.tls import make_self_signed
from hato.outbound.reports import SEND_AT, due_day, next_run
from hato.policy.dmarc_reporting import ingest_report
from hato.store.sqlite import SqliteStore

T = TypeVar("T")
Body = Callable[[SqliteStore, DnsServer, FixedClock], Awaitable[T]]


def run(tmp_path: Path, body: Body[T], *, extra_zone: dict[str, Any] | None = None) -> T:
    async def main() -> T:
        with DnsServer({**zone(), **(extra_zone or {})}) as dns:
            clock = FixedClock(DAY0 + DAY - 60)  # 23:59 UTC on day 0
            store = await open_test_store(tmp_path, clock)
            try:
                return await body(store, dns, clock)
            finally:
                await store.close()

    return asyncio.run(main())


async def record_day0(store: SqliteStore) -> None:
    for at in (DAY0 + 10, DAY0 + 20):
        await store.record_dmarc_evaluation(evaluation(at))
    await store.record_dmarc_evaluation(  # RFC 7489 §7.2: no rua, no report
        evaluation(
            DAY0 + 30,
            policy_domain="norua.test",
            header_from="norua.test",
            record="v=DMARC1; p=none",
        )
    )
    await store.record_tls_sessions(sessions(DAY0))
    await store.record_tls_sessions(sessions(DAY0, "other.test"))  # no _smtp._tls record
    await store.record_tls_sessions(sessions(DAY0, "none.test"))  # no TXT at all


def test_schedule_is_0005_utc() -> None:
    assert due_day(DAY0 + DAY + SEND_AT) == DAY0
    assert due_day(DAY0 + DAY + SEND_AT - 1) == DAY0 - DAY
    assert next_run(DAY0 + DAY - 60) == DAY0 + DAY + SEND_AT
    assert next_run(DAY0 + DAY + SEND_AT) == DAY0 + 2 * DAY + SEND_AT


def test_reports_are_queued_once_after_midnight(tmp_path: Path) -> None:
    async def body(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> Any:
        await record_day0(store)
        svc = service(store, dns, clock)
        before_midnight = await svc.run_due()
        clock.advance(60 + 240)  # 00:04: not yet
        early = await svc.run_due()
        clock.advance(60)  # 00:05 UTC
        outcomes = await svc.run_due()
        again = await svc.run_due()
        queue = await store.list_queue()
        entries = {e.recipients[0].address: e for e in queue}
        messages = {a: (parse(store, e), store.blobs.read(e.blob_id)) for a, e in entries.items()}
        stored = await ingest_report(
            store, messages["tlsrpt@tls.test"][1], our_domains=["tls.test", "sender.test"]
        )
        stored += await ingest_report(
            store, messages["dmarc@sender.test"][1], our_domains=["sender.test"]
        )
        return before_midnight, early, outcomes, again, entries, messages, stored

    before_midnight, early, outcomes, again, entries, messages, stored = run(tmp_path, body)
    assert before_midnight == [] and early == [] and again == []
    assert sorted((o.kind, o.domain) for o in outcomes) == [
        ("dmarc", "sender.test"),
        ("tls", "tls.test"),
    ]
    assert set(entries) == {"dmarc@sender.test", "tlsrpt@tls.test"}
    for entry in entries.values():
        assert entry.sender == SETTINGS.from_address
        assert entry.recipients[0].notify == frozenset()  # RFC 3461 NOTIFY=NEVER
        assert entry.expires == DAY0 + DAY + SEND_AT + DAY  # RFC 8460 §5.5: 24 hours
    assert entries["tlsrpt@tls.test"].tls_optional  # RFC 8460 §3: despite TLS failures
    assert not entries["dmarc@sender.test"].tls_optional

    # DMARC: RFC 7489 §7.2.1.1 message, Appendix C document
    dmarc, raw = messages["dmarc@sender.test"]
    assert dmarc["From"] == SETTINGS.from_address
    assert re.fullmatch(
        r"Report Domain: sender\.test Submitter: mx\.hato\.test Report-ID: <[^>]+>",
        str(dmarc["Subject"]),
    )
    ((kind, xml),) = fmt.report_attachments(raw)
    report = fmt.parse_xml(xml)
    assert kind == "dmarc"
    assert (report.org_name, report.email) == ("Hato Test", SETTINGS.from_address)
    assert (report.begin, report.end) == (DAY0, DAY0 + DAY - 1)
    assert report.policy.domain == "sender.test" and report.message_count == 2

    # TLS: RFC 8460 §5.3 message
    tls, raw = messages["tlsrpt@tls.test"]
    assert tls.get_content_type() == "multipart/report"
    assert tls.get_param("report-type") == "tlsrpt"
    assert tls["TLS-Report-Domain"] == "tls.test"
    assert tls["TLS-Report-Submitter"] == "hato.test"  # the domain of contact-info
    assert re.fullmatch(
        r"Report Domain: tls\.test Submitter: hato\.test Report-ID: <[^@>]+@[^@>]+>",
        str(tls["Subject"]),
    )
    text, attachment = list(tls.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    # RFC 8460 §5.1 filename
    assert attachment.get_filename() == f"hato.test!tls.test!{DAY0}!{DAY0 + DAY - 1}.json.gz"
    compressed = attachment.get_payload(decode=True)
    assert compressed[:2] == b"\x1f\x8b"  # RFC 8460 §5.2: gzip
    document = json.loads(gzip.decompress(compressed))
    # RFC 8460 §4.4 schema
    assert set(document) == {
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    }
    assert document["date-range"] == {
        "start-datetime": "2023-11-15T00:00:00Z",
        "end-datetime": "2023-11-15T23:59:59Z",
    }
    assert document["contact-info"] == SETTINGS.from_address
    (policy,) = document["policies"]
    assert policy["policy"] == {
        "policy-type": "sts",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.tls.test", "max_age: 86400"],
        "policy-domain": "tls.test",
        "mx-host": ["mx.tls.test"],
    }
    assert policy["summary"] == {
        "total-successful-session-count": 5,
        "total-failure-session-count": 2,
    }
    assert policy["failure-details"] == [
        {
            "result-type": "certificate-host-mismatch",
            "sending-mta-ip": "127.0.0.1",
            "receiving-mx-hostname": "mx.tls.test",
            "receiving-mx-helo": "mx.tls.test",
            "receiving-ip": "127.0.0.9",
            "failed-session-count": 2,
            "failure-reason-code": "hostname mismatch",
        }
    ]
    parsed = parse_json(gzip.decompress(compressed))
    assert parsed.begin == DAY0 and parsed.domains == ("tls.test",)
    assert (parsed.policies[0].successful, parsed.policies[0].failed) == (5, 2)
    assert parsed.report_id == document["report-id"]
    # both messages go through our own intake parser
    assert sorted(r.kind for r in stored) == ["dmarc", "tls"]


def test_restart_does_not_send_again(tmp_path: Path) -> None:
    async def first(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> int:
        await record_day0(store)
        clock.advance(60 + SEND_AT)
        await service(store, dns, clock).run_due()
        return len(await store.list_queue())

    async def second(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> Any:
        clock.advance(60 + SEND_AT + 3600)  # the same day, later: a restarted server
        fresh = service(store, dns, clock)
        due = await fresh.run_due()
        direct, complete = await fresh.run_day(DAY0)
        sent = await store.sent_report("tls", "tls.test", DAY0)
        return due, direct, complete, len(await store.list_queue()), sent

    assert run(tmp_path, first) == 2
    due, direct, complete, queued, sent = run(tmp_path, second)  # store reopened
    assert due == [] and direct == [] and complete
    assert queued == 2
    assert sent is not None and sent.recipients == 1


def test_external_destinations_need_authorization(tmp_path: Path) -> None:
    """RFC 7489 §7.1: a rua in another organization needs its _report._dmarc record; §7.2.1:
    a URI whose size limit the report exceeds is not used; rua in our own domains: none."""
    extra = {
        "authorized.test._report._dmarc.thirdparty.test": {"TXT": ["v=DMARC1"]},
        "selfish.test._report._dmarc.hato.test": {"TXT": ["v=DMARC1"]},
    }

    async def body(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> Any:
        cases = {
            "unauthorized.test": "v=DMARC1; p=none; rua=mailto:agg@thirdparty.test",
            "authorized.test": "v=DMARC1; p=none; rua=mailto:agg@thirdparty.test",
            "small.test": "v=DMARC1; p=none; rua=mailto:dmarc@small.test!100",
            "selfish.test": "v=DMARC1; p=none; rua=mailto:dmarc@hato.test",
        }
        for domain, record in cases.items():
            await store.record_dmarc_evaluation(
                evaluation(DAY0 + 5, policy_domain=domain, header_from=domain, record=record)
            )
        clock.advance(60 + SEND_AT)
        outcomes = await service(store, dns, clock).run_due()
        queue = await store.list_queue()
        logged = {d: await store.sent_report("dmarc", d, DAY0) for d in cases}
        return outcomes, queue, logged

    outcomes, queue, logged = run(tmp_path, body, extra_zone=extra)
    assert [e.recipients[0].address for e in queue] == ["agg@thirdparty.test"]
    assert {o.domain for o in outcomes} == {"authorized.test", "selfish.test"}
    assert logged["unauthorized.test"] is None and logged["small.test"] is None
    selfish = logged["selfish.test"]
    assert selfish is not None and selfish.recipients == 0  # never mailed to ourselves


def test_data_is_purged_after_the_report(tmp_path: Path) -> None:
    async def body(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> Any:
        await record_day0(store)
        clock.advance(60 + SEND_AT)
        await service(store, dns, clock).run_due()  # keep 7 days: still there
        kept = len(await store.tls_sessions(day=DAY0))
        await service(store, dns, clock, keep=0.0).run_day(DAY0)
        left = await store.dmarc_evaluations(since=0, until=DAY0 + DAY)
        return kept, left, await store.tls_sessions(day=DAY0)

    kept, evaluations, tls_rows = run(tmp_path, body)
    assert kept == 6 and evaluations == [] and tls_rows == []


def test_service_catches_up_at_start_and_stops(tmp_path: Path) -> None:
    async def body(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> int:
        await record_day0(store)
        clock.advance(60 + SEND_AT + 7200)  # started at 02:05, after the report time
        svc = service(store, dns, clock)
        await svc.start()
        try:
            for _ in range(200):
                if len(await store.list_queue()) == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            await svc.stop(timeout=5.0)
        return len(await store.list_queue())

    assert run(tmp_path, body) == 2


async def report_server(
    tmp_path: Path, statuses: list[int], received: list[tuple[bytes, bytes]]
) -> tuple[asyncio.Server, ssl.SSLContext]:
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    make_self_signed(cert, key, hostnames=["reports.web.test"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await reader.readexactly(length)
        received.append((head, body))
        status = statuses.pop(0)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    return server, ssl.create_default_context(cafile=str(cert))


def test_https_report_is_posted_and_retried(tmp_path: Path) -> None:
    """RFC 8460 §5.4: POST application/tlsrpt+gzip; only a 2xx answer counts (§5.5 retry)."""
    received: list[tuple[bytes, bytes]] = []
    statuses = [500, 201]

    async def body(store: SqliteStore, dns: DnsServer, clock: FixedClock) -> Any:
        server, context = await report_server(tmp_path, statuses, received)
        port = server.sockets[0].getsockname()[1]
        dns.set("reports.web.test", "A", ["127.0.0.1"])
        dns.set(
            "_smtp._tls.web.test",
            "TXT",
            [f"v=TLSRPTv1; rua=https://reports.web.test:{port}/v1/tlsrpt"],
        )
        try:
            await store.record_tls_sessions(sessions(DAY0, "web.test"))
            clock.advance(60 + SEND_AT)
            svc = service(store, dns, clock, https_context=context)
            failed = await svc.run_due()
            logged_after_failure = await store.sent_report("tls", "web.test", DAY0)
            clock.advance(3600)
            posted = await svc.run_due()
            return failed, logged_after_failure, posted, await store.list_queue()
        finally:
            server.close()
            await server.wait_closed()

    failed, logged_after_failure, posted, queue = run(tmp_path, body)
    assert failed == [] and logged_after_failure is None
    assert [(o.kind, o.domain, o.posted, o.queued) for o in posted] == [("tls", "web.test", 1, ())]
    assert queue == []
    head, data = received[-1]
    assert head.startswith(b"POST /v1/tlsrpt HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/tlsrpt+gzip\r\n" in head
    document = json.loads(gzip.decompress(data))
    assert document["policies"][0]["policy"]["policy-domain"] == "web.test"
