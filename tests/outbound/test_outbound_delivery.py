"""Queue runner against test sinks on 127.0.0.x, routed by a loopback DNS server: STARTTLS,
MX order and fallback, retries with backoff, bounces (DSN into the sender's INBOX), null MX,
SMTPUTF8, connection reuse, expiry and delay notices, crash recovery."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from outbound_kit import World, open_world, server_tls, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.outbound.settings import OutboundSettings, backoff
from hato.store.queue import QueueRecipient, QueueState, RcptStatus

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
ZONE = {
    "remote.test": {"MX": [(10, "mx1.remote.test"), (20, "mx2.remote.test")]},
    "mx1.remote.test": {"A": ["127.0.0.2"]},
    "mx2.remote.test": {"A": ["127.0.0.3"]},
    "nomx.test": {"A": ["127.0.0.4"]},
    "nullmx.test": {"MX": [(0, ".")]},
}


def scenario(tmp_path: Path, body: Callable[[World, int], Awaitable[Any]], **settings: Any) -> Any:
    port = shared_port(HOSTS)

    async def main() -> Any:
        with DnsServer(ZONE) as dns:
            world = await open_world(tmp_path, dns, port=port, mta_sts=False, **settings)
            try:
                return await body(world, port)
            finally:
                await world.store.close()

    return asyncio.run(main())


def test_backoff_doubles_from_five_minutes_to_four_hours() -> None:
    s = OutboundSettings(hostname="h")
    assert [backoff(n, s) for n in range(1, 8)] == [300, 600, 1200, 2400, 4800, 9600, 14400]
    assert backoff(50, s) == 14400


def test_starttls_delivery_and_return_path_stripped(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.2", port, tls=server_tls(tmp_path, "mx1.remote.test")).start()
        try:
            (eid,) = await world.queue(["x@remote.test", "y@remote.test"])
            assert await world.make_runner().run_once() == 1
            (txn,) = sink.delivered
            assert txn.tls and txn.sender == "alice@example.test"
            assert [r for r, _ in txn.rcpts] == ["x@remote.test", "y@remote.test"]
            assert txn.data.startswith(b"From: Alice")  # Return-Path is for final delivery only
            assert b"\r\n.leading dot line\r\n" in txn.data
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.DELIVERED
            assert all(r.status is RcptStatus.DELIVERED for r in entry.recipients)
            assert entry.recipients[0].remote_mta == "mx1.remote.test"
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_falls_back_to_next_mx_and_to_implicit_mx(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        backup = await Sink("127.0.0.3", port).start()  # mx1 (127.0.0.2) listens nowhere
        implicit = await Sink("127.0.0.4", port).start()
        try:
            await world.queue(["x@remote.test"])
            await world.queue(["z@nomx.test"])
            assert await world.make_runner().run_once() == 2
            assert len(backup.delivered) == 1 and not backup.delivered[0].tls
            assert [r for r, _ in implicit.delivered[0].rcpts] == ["z@nomx.test"]
        finally:
            await backup.stop()
            await implicit.stop()

    scenario(tmp_path, body)


def test_temporary_failure_is_retried_after_backoff(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        replies: dict[str, str | list[str]] = {
            "x@remote.test": ["451 4.3.0 Try again later", "250 2.1.5 Ok"]
        }
        sink = await Sink("127.0.0.2", port, rcpt_replies=replies).start()
        try:
            (eid,) = await world.queue(["x@remote.test"])
            runner = world.make_runner()
            await runner.run_once()
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.DEFERRED
            assert entry.attempts == 1 and entry.next_attempt == world.clock.now() + 300
            assert entry.recipients[0].reply == "451 4.3.0 Try again later"
            world.clock.advance(299)
            assert await runner.run_once() == 0  # not due yet
            world.clock.advance(1)
            assert await runner.run_once() == 1
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.DELIVERED
            assert len(sink.delivered) == 1
            assert await world.inbox() == []  # no notice for a delivered message
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def dsn_parts(raw: bytes) -> tuple[str, str, Any]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, status, returned = msg.get_payload()  # type: ignore[misc]
    return human.get_content(), status.as_string(), returned


def test_permanent_failure_bounces_into_sender_inbox(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        replies: dict[str, str | list[str]] = {
            "bad@remote.test": "550 5.1.1 <bad@remote.test>: Recipient address rejected"
        }
        sink = await Sink("127.0.0.2", port, rcpt_replies=replies).start()
        try:
            (eid,) = await world.queue(
                [
                    QueueRecipient("good@remote.test"),
                    QueueRecipient("bad@remote.test", orcpt="rfc822;Bad@Remote.test"),
                ],
                envid="ENV-42",
            )
            await world.make_runner().run_once()
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.BOUNCED
            assert [r.status for r in entry.recipients] == [RcptStatus.DELIVERED, RcptStatus.FAILED]
            (dsn,) = await world.inbox()
            assert b"\r\nAuto-Submitted: auto-replied\r\n" in dsn
            human, status, returned = dsn_parts(dsn)
            assert "Recipient address rejected" in human  # the remote reply is quoted
            assert "Original-Envelope-Id: ENV-42" in status
            assert "Final-Recipient: rfc822; bad@remote.test" in status
            assert "Original-Recipient: rfc822;Bad@Remote.test" in status
            assert "Action: failed" in status and "Status: 5.1.1" in status
            assert "Remote-MTA: dns; mx1.remote.test" in status
            assert "good@remote.test" not in status
            assert returned.get_content_type() == "message/rfc822"  # RET absent: full
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_notify_never_null_sender_and_ret_hdrs(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink(
            "127.0.0.2", port, rcpt_replies={"bad@remote.test": "550 5.1.1 No such user"}
        ).start()
        try:
            await world.queue([QueueRecipient("bad@remote.test", notify=frozenset())])
            await world.queue(["bad@remote.test"], sender="")  # a bounce never gets a bounce
            await world.queue(["bad@remote.test"], ret="HDRS")
            await world.make_runner().run_once()
            (dsn,) = await world.inbox()
            _human, _status, returned = dsn_parts(dsn)
            assert returned.get_content_type() == "text/rfc822-headers"
            assert b"Body line one" not in dsn  # RFC 3461 §4.3 RET=HDRS
            assert [e.state for e in await world.store.list_queue()] == [QueueState.BOUNCED] * 3
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_null_mx_and_missing_domain_bounce_at_once(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        await world.queue(["x@nullmx.test"])
        await world.queue(["x@does-not-exist.test"])
        await world.make_runner().run_once()
        entries = await world.store.list_queue()
        assert [e.state for e in entries] == [QueueState.BOUNCED, QueueState.BOUNCED]
        assert entries[0].recipients[0].reply is not None
        assert entries[0].recipients[0].reply.startswith("556 5.1.10")  # RFC 7505 §4.2
        dsns = await world.inbox()
        assert len(dsns) == 2  # groups run concurrently: either DSN may come first
        assert sum(b"Status: 5.1.10" in d for d in dsns) == 1

    scenario(tmp_path, body)


def test_smtputf8_needed_but_not_offered_is_a_clear_bounce(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.2", port, capabilities=("PIPELINING", "8BITMIME")).start()
        try:
            await world.queue(["jörg@remote.test"], smtputf8=True)
            await world.make_runner().run_once()
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.BOUNCED
            assert entry.recipients[0].reply is not None
            assert entry.recipients[0].reply.startswith("553 5.6.7")  # RFC 6531 §3.5
            assert not sink.transactions  # nothing was sent
            (dsn,) = await world.inbox()
            assert b"SMTPUTF8" in dsn
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_connection_reused_and_chunking_used(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        caps = ("PIPELINING", "CHUNKING", "8BITMIME", "DSN")
        sink = await Sink("127.0.0.2", port, capabilities=caps).start()
        try:
            for n in range(3):
                await world.queue([f"u{n}@remote.test"])
            await world.make_runner(per_destination=1).run_once()
            assert len(sink.sessions) == 1 and len(sink.delivered) == 3
            assert {t.command for t in sink.delivered} == {"BDAT"}
            # each later transaction was sent ahead with the BDAT LAST before it, after an
            # RSET (RFC 3030 §2 leaves the state after a refused BDAT LAST open)
            assert sink.sessions[0].commands.count("RSET") == 2
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_dsn_parameters_passed_on(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.2", port).start()
        try:
            rcpt = QueueRecipient(
                "x@remote.test",
                notify=frozenset({"SUCCESS", "FAILURE"}),
                orcpt="rfc822;x@remote.test",
            )
            await world.queue([rcpt], envid="abc+1", ret="HDRS", body="8BITMIME")
            await world.make_runner().run_once()
            (txn,) = sink.delivered
            assert set(txn.mail_params) >= {"RET=HDRS", "ENVID=abc+2B1", "BODY=8BITMIME"}
            assert txn.rcpts[0][1] == ["NOTIFY=FAILURE,SUCCESS", "ORCPT=rfc822;x@remote.test"]
            assert await world.inbox() == []  # the next hop does DSN: no "relayed" notice
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_delay_notice_then_expiry_bounce(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink(
            "127.0.0.2", port, rcpt_replies={"x@remote.test": "452 4.2.2 Full"}
        ).start()
        try:
            (eid,) = await world.queue(["x@remote.test"])
            runner = world.make_runner(expire_after=8 * 3600.0)
            await runner.run_once()
            assert await world.inbox() == []
            for _ in range(3):
                entry = await world.store.get_queue_entry(eid)
                assert entry is not None
                world.clock.advance(entry.next_attempt - world.clock.now())
                await runner.run_once()
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.DEFERRED
            world.clock.advance(4 * 3600)
            await runner.run_once()  # 4 h after queueing: one delay notice
            (delay,) = await world.inbox()
            assert b"Action: delayed" in delay and b"Will-Retry-Until:" in delay
            world.clock.advance(4 * 3600)
            await runner.run_once()  # past expiry: bounced
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.BOUNCED
            _delay, bounce = await world.inbox()
            assert b"Status: 4.4.7" in bounce and b"452 4.2.2 Full" in bounce
        finally:
            await sink.stop()

    scenario(tmp_path, body, expire_after=8 * 3600.0)


def test_crash_recovery_resends_only_the_message_in_flight(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.2", port).start()
        try:
            (eid,) = await world.queue(["x@remote.test"])
            await world.store.claim_queue(limit=10, lease=3600)  # an attempt that never reported
            runner = world.make_runner()
            assert await runner.run_once() == 0
            await runner.start()  # recovers ACTIVE entries, then its loop delivers them
            for _ in range(100):
                entry = await world.store.get_queue_entry(eid)
                if entry is not None and entry.state is QueueState.DELIVERED:
                    break
                await asyncio.sleep(0.05)
            await runner.stop(timeout=5)
            assert len(sink.delivered) == 1
        finally:
            await sink.stop()

    scenario(tmp_path, body, poll_interval=0.05)


@pytest.mark.parametrize("reply", ["554 5.7.1 Go away", "421 4.3.2 Busy"])
def test_greeting_refusal(tmp_path: Path, reply: str) -> None:
    async def body(world: World, port: int) -> None:
        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(reply.encode() + b"\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(refuse, "127.0.0.2", port)
        try:
            await world.queue(["x@remote.test"])
            await world.make_runner().run_once()
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.DEFERRED  # try later (mx2 is down too)
        finally:
            server.close()
            await server.wait_closed()

    scenario(tmp_path, body)
