"""End to end: a user submits over SMTP (AUTH on submission) to a local and a remote
recipient; both are committed in one unit of work before the 250, the queue runner then
delivers the remote copy to a sink found through the loopback DNS server; an unknown remote
user comes back as a DSN in the sender's INBOX."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path

from outbound_kit import certificate, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.core.clock import SystemClock
from hato.mailauth.resolver import DnsPythonResolver
from hato.outbound.client import Timeouts
from hato.outbound.queue import OutboundSettings, QueueRunner
from hato.policy.authn import Authenticator, make_credentials
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode
from hato.servers.smtp import SmtpListener, SmtpService, SmtpSettings
from hato.servers.tls import server_context
from hato.store.queue import QueueState
from hato.store.sqlite import open_store

PASSWORD = "correct horse battery"


def submit(port: int, rcpts: list[str], body: bytes, **mail_options: str) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # implicit TLS (RFC 8314 §3.3): the STARTTLS upgrade is covered by tests/smtp
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=ctx) as client:
        client.login("alice@example.test", PASSWORD)
        client.sendmail("alice@example.test", rcpts, body, rcpt_options=["NOTIFY=FAILURE,DELAY"])


def test_submission_queues_remote_and_runner_delivers(tmp_path: Path) -> None:
    port = shared_port(["127.0.0.2"])
    cert, key = certificate(tmp_path, "out.example.test")

    async def main() -> None:
        store = await open_store(tmp_path / "data")
        await store.add_domain("example.test")
        creds = await asyncio.to_thread(make_credentials, PASSWORD)
        alice = await store.add_account("alice@example.test", creds)
        bob = await store.add_account("bob@example.test", creds)
        await store.add_alias("fwd@example.test", ["Far.Away@remote.test"])
        with DnsServer(
            {
                "remote.test": {"MX": [(10, "mx.remote.test")]},
                "mx.remote.test": {"A": ["127.0.0.2"]},
            }
        ) as dns:
            resolver = DnsPythonResolver([dns.host], port=dns.port, timeout=5.0)
            settings = OutboundSettings(
                hostname="out.example.test",
                port=port,
                mta_sts=False,
                poll_interval=0.05,
                timeouts=Timeouts(connect=2, greeting=5, command=5, data_init=5, block=5, final=5),
            )
            runner = QueueRunner(settings, store=store, resolver=resolver, clock=SystemClock())
            smtp_settings = SmtpSettings(
                hostname="out.example.test",
                listeners=(
                    SmtpListener(Listener("127.0.0.1", 0, TlsMode.IMPLICIT), Role.SUBMISSION),
                ),
            )
            service = SmtpService(
                smtp_settings,
                store,
                Authenticator(store),
                tls=server_context(cert, key),
                outbound=runner,
            )
            sink = await Sink(
                "127.0.0.2", port, rcpt_replies={"nobody@remote.test": "550 5.1.1 No such user"}
            ).start()
            await service.start()
            await runner.start()
            try:
                sub = service.port_for(Role.SUBMISSION, TlsMode.IMPLICIT)
                body = (
                    b"From: alice@example.test\r\nTo: Remote <Someone@remote.test>\r\n"
                    b"Subject: out\r\n\r\nHello world.\r\n"
                )
                before = store.stats.commits
                await asyncio.to_thread(
                    submit,
                    sub,
                    ["Someone@remote.test", "bob@example.test", "fwd@example.test"],
                    body,
                )
                assert store.stats.commits >= before + 1
                box = await store.get_mailbox(bob.id, "INBOX")
                assert box is not None and len(await store.list_messages(box.id)) == 1
                for _ in range(200):
                    if sink.delivered:
                        break
                    await asyncio.sleep(0.05)
                (txn,) = sink.delivered
                # RFC 5321 §2.4: the remote local part keeps its case; the alias target too
                assert sorted(r for r, _ in txn.rcpts) == [
                    "Far.Away@remote.test",
                    "Someone@remote.test",
                ]
                params = dict(txn.rcpts)
                assert "NOTIFY=DELAY,FAILURE" in params["Someone@remote.test"]
                assert "ORCPT=rfc822;fwd@example.test" in params["Far.Away@remote.test"]
                assert txn.data.startswith(b"Received: from ")  # no Return-Path relayed
                assert b"Return-Path:" not in txn.data
                await asyncio.to_thread(submit, sub, ["nobody@remote.test"], body)
                inbox = await store.get_mailbox(alice.id, "INBOX")
                assert inbox is not None
                for _ in range(200):
                    if await store.list_messages(inbox.id):
                        break
                    await asyncio.sleep(0.05)
                (dsn,) = await store.list_messages(inbox.id)
                raw = store.blobs.read(dsn.blob_id)
                assert b"Final-Recipient: rfc822; nobody@remote.test" in raw
                assert b"550 5.1.1 No such user" in raw
                states = [e.state for e in await store.list_queue()]
                assert states == [QueueState.DELIVERED, QueueState.BOUNCED]
            finally:
                await runner.stop(timeout=5)
                await service.stop(timeout=2)
                await sink.stop()
                await store.close()

    asyncio.run(main())
