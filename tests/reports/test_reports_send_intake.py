"""Incoming reports for our report addresses (parsed and stored besides delivery; TLS reports
only with the reporting domain's DKIM signature, RFC 8460 §3), the addresses ``hato dns
records`` publishes, the ``_smtp._tls`` grammar (RFC 8460 §3), session outcome mapping and
the store's TLS-RPT tables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from reports_kit import DAY, DAY0, open_test_store, sessions

from hato.app.config import Config, ServerConfig
from hato.app.config_dns import DnsConfig, make_resolver
from hato.app.config_reports import ReportsConfig, report_intake
from hato.codec.smtp_events import Envelope, Recipient
from hato.codec.smtp_params import MailParams, RcptParams
from hato.codec.smtp_params import Path as SmtpPath
from hato.core.address import Address
from hato.core.clock import FixedClock
from hato.core.dns import StaticResolver, TlsaRecord
from hato.core.errors import UsageError
from hato.delivery.local import ReceivedMessage
from hato.delivery.report_intake import ReportIntake
from hato.mailauth import dmarc_report as fmt
from hato.mailauth.dmarc import parse_record as parse_dmarc
from hato.outbound import tlsrpt_report as tlsrpt
from hato.outbound.dkim_sign import DkimKeys
from hato.outbound.tlspolicy import HostPolicy, Requirement
from hato.outbound.tlsrpt_sessions import session_outcome, tlsa_strings
from hato.store.model import BlobRef
from hato.store.queue import NewQueueEntry, QueueRecipient
from hato.store.sqlite import SqliteStore, open_store

T = TypeVar("T")


def with_store(tmp_path: Path, work: Callable[[SqliteStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await open_test_store(tmp_path, FixedClock(DAY0 + DAY + 400))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def tls_report_message(*, about: str = "hato.test", submitter: str = "sender.test") -> bytes:
    rows = sessions(DAY0, about)
    document = tlsrpt.build_report(
        rows,
        organization="Sender",
        contact=f"tlsrpt@{submitter}",
        report_id=f"{DAY0}.{about}@{submitter}",
        day=DAY0,
    )
    return tlsrpt.build_message(
        document,
        tlsrpt.render(document),
        submitter=submitter,
        from_address=f"tlsrpt@{submitter}",
        to_addresses=[f"tls-reports@{about}"],
        day=DAY0,
        date=DAY0 + DAY + 600,
    )


def dmarc_report_message() -> bytes:
    report = fmt.AggregateReport(
        org_name="Receiver",
        email="agg@receiver.test",
        report_id="r1",
        begin=DAY0,
        end=DAY0 + DAY - 1,
        policy=fmt.PolicyPublished("hato.test", "reject"),
        records=(fmt.ReportRecord("192.0.2.1", 3, "none", "pass", "pass", "hato.test"),),
    )
    return fmt.build_aggregate_report(
        report,
        receiver="receiver.test",
        from_address="agg@receiver.test",
        to_addresses=["dmarc-reports@hato.test"],
        message_id="<r1@receiver.test>",
        date=DAY0 + DAY,
    )


def signing(tmp_path: Path, *domains: str) -> tuple[DkimKeys, StaticResolver]:
    keys = DkimKeys(tmp_path / "dkim")
    zone: dict[str, Any] = {}
    for domain in domains:
        for record in keys.generate(domain):
            zone[record.name] = {"TXT": [record.value]}
    return keys, StaticResolver(zone)


def test_dns_records_publish_the_addresses_intake_accepts(tmp_path: Path) -> None:
    from hato.app.cli_dns import records

    for reports, dmarc_to, tls_to in (
        (ReportsConfig(), "dmarc-reports@hato.test", "tls-reports@hato.test"),
        (ReportsConfig(dmarc_address="agg", tls_address="tls"), "agg@hato.test", "tls@hato.test"),
    ):
        config = Config(
            server=ServerConfig(hostname="mx.hato.test", data_dir=tmp_path), reports=reports
        )
        lines = records(config, "hato.test")
        (dmarc_line,) = [line for line in lines if line.startswith("_dmarc.hato.test.")]
        (tls_line,) = [line for line in lines if line.startswith("_smtp._tls.hato.test.")]
        dmarc = parse_dmarc(dmarc_line.split('"')[1])
        assert [fmt.mailto_address(u) for u in dmarc.rua] == [dmarc_to]
        tls = tlsrpt.parse_record(tls_line.split('"')[1])
        assert tls is not None and tls.mailto == (tls_to,)
        store = asyncio.run(open_store(tmp_path / "data"))
        try:
            intake = report_intake(  # what the app wires for incoming mail
                reports,
                resolver=make_resolver(DnsConfig(nameservers=("127.0.0.1",))),
                store=store,
            )
        finally:
            asyncio.run(store.close())
        assert intake is not None
        assert intake.wants([dmarc_to], {"hato.test"}) and intake.wants([tls_to], {"hato.test"})
        assert not intake.wants(["postmaster@hato.test"], {"hato.test"})
        assert not intake.wants([dmarc_to], {"elsewhere.test"})


def test_signed_tls_report_is_stored_unsigned_ones_are_ignored(tmp_path: Path) -> None:
    keys, resolver = signing(tmp_path, "sender.test", "evil.test")
    plain = tls_report_message()
    signed = keys.sign(plain, "sender.test") + plain
    wrong_signer = keys.sign(plain, "evil.test") + plain

    async def work(store: SqliteStore) -> tuple[int, int, int, int]:
        intake = ReportIntake(store, resolver)
        unsigned = await intake.ingest(plain, our_domains={"hato.test"})
        foreign = await intake.ingest(wrong_signer, our_domains={"hato.test"})
        good = await intake.ingest(signed, our_domains={"hato.test"})
        again = await intake.ingest(signed, our_domains={"hato.test"})  # stored once
        return len(unsigned), len(foreign), len(good), len(again)

    assert with_store(tmp_path, work) == (0, 0, 1, 0)


def test_after_delivery_stores_reports_for_report_addresses_only(tmp_path: Path) -> None:
    data = dmarc_report_message()

    def received(blob: BlobRef, rcpt: str) -> ReceivedMessage:
        envelope = Envelope(
            sender=SmtpPath(Address.parse("agg@receiver.test")),
            params=MailParams(),
            recipients=[Recipient(SmtpPath(Address.parse(rcpt)), RcptParams())],
        )
        return ReceivedMessage(envelope=envelope, blob=blob, targets=(), received_at=DAY0)

    async def work(store: SqliteStore) -> tuple[int, list[Any]]:
        writer = store.blobs.writer()
        writer.write(data)
        blob = await asyncio.to_thread(writer.commit)
        intake = ReportIntake(store, StaticResolver({}))
        ignored = await intake.after_delivery(received(blob, "bob@hato.test"))
        stored = await intake.after_delivery(received(blob, "DMARC-Reports@hato.test"))
        return len(ignored), stored

    ignored, stored = with_store(tmp_path, work)
    assert ignored == 0
    assert [(r.kind, r.domain, r.org_name, r.report_id) for r in stored] == [
        ("dmarc", "hato.test", "Receiver", "r1")
    ]


@pytest.mark.parametrize(
    ("text", "rua"),
    [
        ("v=TLSRPTv1;rua=mailto:reports@example.com", ("mailto:reports@example.com",)),
        (
            "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
            ("https://reporting.example.com/v1/tlsrpt",),
        ),
        (
            "v=TLSRPTv1 ; rua=mailto:a@example.com , https://r.example.com/x ;",
            ("mailto:a@example.com", "https://r.example.com/x"),
        ),
        ("v=TLSRPTv1; ext=1; rua=mailto:a@example.com", ("mailto:a@example.com",)),
        ("v=TLSRPTv1", None),  # rua is required
        ("v=TLSRPTv1;", None),
        ("v=TLSRPTv2; rua=mailto:a@example.com", None),
        ("v=TLSRPTv1; rua=", None),
        ("v=TLSRPTv1; rua=mailto:a@example.com; =x", None),
        ("v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com", None),
    ],
)
def test_tlsrpt_record_grammar(text: str, rua: tuple[str, ...] | None) -> None:
    """RFC 8460 §3 tlsrpt-record."""
    record = tlsrpt.parse_record(text)
    assert (record.rua if record else None) == rua


def test_more_than_one_record_means_no_tlsrpt() -> None:
    """RFC 8460 §3: if the number of resulting records is not one, assume no TLSRPT."""
    resolver = StaticResolver(
        {
            "_smtp._tls.two.test": {"TXT": ["v=TLSRPTv1; rua=mailto:a@two.test"] * 2},
            "_smtp._tls.one.test": {"TXT": ["v=TLSRPTv1; rua=mailto:a@one.test", "v=spf1 -all"]},
        }
    )

    async def main() -> tuple[Any, Any, Any]:
        return (
            await tlsrpt.lookup_record(resolver, "two.test"),
            await tlsrpt.lookup_record(resolver, "one.test"),
            await tlsrpt.lookup_record(resolver, "none.test"),
        )

    two, one, none = asyncio.run(main())
    assert two is None and none is None
    assert one is not None and one.mailto == ("a@one.test",)


def test_outcomes_before_connecting() -> None:
    def outcome(policy: HostPolicy) -> Any:
        return session_outcome(
            day=DAY0,
            domain="Bücher.test",
            mx_host="MX.x.test.",
            policy=policy,
            sts=None,
            client=None,
        )

    mismatch = outcome(HostPolicy(Requirement.PKIX, source="mta-sts", usable=False))
    assert (mismatch.result_type, mismatch.policy_domain, mismatch.receiving_mx) == (
        "validation-failure",
        "xn--bcher-kva.test",  # RFC 8460 §4.4: A-labels
        "mx.x.test",
    )
    dnssec = outcome(HostPolicy(Requirement.DANE, source="dane", usable=False, error="x"))
    assert (dnssec.policy_type, dnssec.result_type) == ("tlsa", "dnssec-invalid")
    assert outcome(HostPolicy(Requirement.PKIX, source="requiretls", usable=False)) is None
    tlsa = HostPolicy(Requirement.DANE, (TlsaRecord(3, 1, 1, bytes.fromhex("ab01" * 16)),))
    assert outcome(tlsa) is None  # usable and never connected: nothing happened yet
    assert tlsa_strings(tlsa) == ("3 1 1 " + "AB01" * 16,)  # RFC 8460 §4.5


def test_store_counts_and_logs_reports_once(tmp_path: Path) -> None:
    async def work(store: SqliteStore) -> Any:
        await store.record_tls_sessions(sessions(DAY0))
        await store.record_tls_sessions(sessions(DAY0)[:1])  # the same key: counts add up
        await store.record_tls_sessions(sessions(DAY0 + DAY, "later.test"))
        rows = await store.tls_sessions(day=DAY0)
        writer = store.blobs.writer()
        writer.write(b"Subject: r\r\n\r\nx\r\n")
        blob = await asyncio.to_thread(writer.commit)
        entry = NewQueueEntry(blob, "r@hato.test", (QueueRecipient("a@x.test"),), DAY0 + 9 * DAY)
        first = await store.queue_report(
            kind="tls", domain="x.test", day=DAY0, report_id="i", entries=[entry]
        )
        second = await store.queue_report(
            kind="tls", domain="x.test", day=DAY0, report_id="i", entries=[entry]
        )
        with pytest.raises(UsageError):
            await store.queue_report(kind="spam", domain="x.test", day=DAY0, report_id="i")
        domains = await store.tls_policy_domains(day=DAY0 + DAY)
        purged = await store.purge_tls_sessions(before=DAY0 + DAY)
        return rows, first, second, len(await store.list_queue()), domains, purged

    rows, first, second, queued, domains, purged = with_store(tmp_path, work)
    assert [(r.result_type, r.sessions) for r in rows] == [
        ("certificate-host-mismatch", 2),
        ("success", 10),
    ]
    assert first is not None and len(first) == 1 and second is None and queued == 1
    assert domains == ["later.test"] and purged == 2
