"""Helpers of the Sieve-through-SMTP tests: a real SQLite store with two accounts, the
inbound SMTP service on a loopback ephemeral port (MX role, no TLS) with an outbound queue
that is never started (tests read the queue the sessions filled), and a blocking smtplib
client run in a worker thread so one event loop serves both."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hato.core.address import Address
from hato.core.dns import StaticResolver
from hato.delivery.sieve import DEFAULT_SETTINGS, SieveSettings
from hato.outbound.queue import OutboundSettings, QueueRunner
from hato.policy.authn import Authenticator
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode
from hato.servers.smtp import SmtpListener, SmtpSettings
from hato.servers.smtp_hooks import SessionHooks
from hato.servers.smtp_inbound import InboundSmtpService
from hato.store.model import Credentials
from hato.store.queue import QueueEntry
from hato.store.sqlite import SqliteStore, open_store

HOST = "127.0.0.1"
HOSTNAME = "mx.example.test"
# never used to log in: the tests only deliver over the MX role
CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")


@dataclass
class SieveWorld:
    store: SqliteStore
    service: InboundSmtpService
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.service.port_for(Role.MX, TlsMode.NONE)

    async def script(self, user: str, text: str) -> None:
        await self.store.put_script(self.ids[user], "s", text, activate=True)

    async def mailbox(self, address: str, name: str = "INBOX") -> list[bytes]:
        account = await self.store.get_account(Address.parse(address).key)
        assert account is not None
        box = await self.store.get_mailbox(account.id, name)
        if box is None:
            return []
        found = await self.store.list_messages(box.id)
        return [self.store.blobs.read(m.blob_id) for m in found]

    async def queue(self) -> list[QueueEntry]:
        return await self.store.list_queue()

    def body(self, entry: QueueEntry) -> bytes:
        return self.store.blobs.read(entry.blob_id)[entry.strip_prefix :]


@asynccontextmanager
async def sieve_world(
    tmp_path: Path,
    accounts: Sequence[str] = ("alice@example.test", "bob@example.test"),
    *,
    sieve: SieveSettings = DEFAULT_SETTINGS,
) -> AsyncIterator[SieveWorld]:
    """The world; ``sieve``: the [sieve] settings (as wiring hands them to the hooks)."""
    store = await open_store(tmp_path / "data")
    service = None
    try:
        await store.add_domain("example.test")
        ids = {a: (await store.add_account(a, CREDS)).id for a in accounts}
        settings = OutboundSettings(hostname=HOSTNAME, mta_sts=False, dane=False)
        runner = QueueRunner(settings, store=store, resolver=StaticResolver({}))
        listener = SmtpListener(Listener(HOST, 0, TlsMode.NONE), Role.MX)
        service = InboundSmtpService(
            SmtpSettings(hostname=HOSTNAME, listeners=(listener,)),
            store,
            Authenticator(store, plaintext_on_loopback=True),
            hooks=SessionHooks(sieve=sieve),
            outbound=runner,
        )
        await service.start()
        yield SieveWorld(store, service, ids)
    finally:
        if service is not None:
            await service.stop(timeout=2)
        await store.close()


def _send(port: int, sender: str, rcpts: Sequence[str], data: bytes) -> None:
    with smtplib.SMTP(HOST, port, local_hostname="client.example.net", timeout=20) as client:
        client.sendmail(sender, list(rcpts), data)


async def smtp_send(port: int, sender: str, rcpts: Sequence[str], data: bytes) -> None:
    """One SMTP transaction from a worker thread (smtplib raises on any refusal)."""
    await asyncio.to_thread(_send, port, sender, rcpts, data)


def mail(subject: str = "hello", *, extra: str = "") -> bytes:
    return (
        f"{extra}From: Someone <someone@remote.example>\r\nTo: bob@example.test\r\n"
        f"Subject: {subject}\r\nX-Spam-Score: 7\r\n"
        "Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.example>\r\n\r\nHello there.\r\n"
    ).encode()
