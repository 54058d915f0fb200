"""Helpers of the inbound-integration tests: a real store and an ``InboundSmtpService`` with
session hooks (verifier, limits, SRS) on loopback ephemeral ports, an outbound queue runner
that is never started (tests read the queue the sessions filled), and a blocking smtplib
client run in a worker thread so one event loop serves both."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpkit import PASSWORD, credentials

from hato.core.address import Address
from hato.core.dns import StaticResolver
from hato.outbound.dkim_sign import DkimKeys
from hato.outbound.queue import OutboundSettings, QueueRunner
from hato.outbound.srs import Srs
from hato.policy.authn import Authenticator
from hato.policy.inbound import InboundSettings, InboundVerifier
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode
from hato.servers.smtp import SmtpListener, SmtpSettings
from hato.servers.smtp_hooks import SessionHooks
from hato.servers.smtp_inbound import InboundSmtpService
from hato.store.queue import QueueEntry
from hato.store.sqlite import SqliteStore, open_store

HOST = "127.0.0.1"
HOSTNAME = "mx.example.test"
SECRET = b"test secret for srs"


@dataclass
class World:
    store: SqliteStore
    service: InboundSmtpService
    runner: QueueRunner | None
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def mx(self) -> int:
        return self.service.port_for(Role.MX, TlsMode.NONE)

    @property
    def submission(self) -> int:
        return self.service.port_for(Role.SUBMISSION, TlsMode.NONE)

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
async def world(
    tmp_path: Path,
    *,
    hooks: SessionHooks | None = None,
    outbound: bool = True,
    accounts: Sequence[str] = ("alice@example.test", "bob@example.test"),
    aliases: dict[str, list[str]] | None = None,
) -> AsyncIterator[World]:
    """A store with example.test (and the given accounts/aliases) and the service running."""
    store = await open_store(tmp_path / "data")
    runner = None
    service = None
    try:
        await store.add_domain("example.test")
        ids = {}
        for address in accounts:
            account = await store.add_account(address, credentials())
            ids[address] = account.id
        for source, targets in (aliases or {}).items():
            await store.add_alias(source, targets)
        if outbound:
            settings = OutboundSettings(hostname=HOSTNAME, mta_sts=False, dane=False)
            runner = QueueRunner(settings, store=store, resolver=StaticResolver({}))
        listeners = (
            SmtpListener(Listener(HOST, 0, TlsMode.NONE), Role.MX),
            SmtpListener(Listener(HOST, 0, TlsMode.NONE), Role.SUBMISSION),
        )
        service = InboundSmtpService(
            SmtpSettings(hostname=HOSTNAME, listeners=listeners),
            store,
            Authenticator(store, plaintext_on_loopback=True),
            hooks=hooks or SessionHooks(),
            outbound=runner,
        )
        await service.start()
        yield World(store, service, runner, ids)
    finally:
        if service is not None:
            await service.stop(timeout=2)
        await store.close()


def verifier(zone: dict[str, Any], **settings: Any) -> InboundVerifier:
    return InboundVerifier(StaticResolver(zone), InboundSettings(HOSTNAME, **settings))


def srs() -> Srs:
    return Srs([SECRET])


def dkim_keys(tmp_path: Path, domain: str) -> tuple[DkimKeys, dict[str, Any]]:
    """Keys for ``domain`` and the zone entries publishing them."""
    keys = DkimKeys(tmp_path / "dkim")
    records = keys.generate(domain)
    return keys, {r.name: {"TXT": [r.value]} for r in records}


class SmtpFailure(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def _send(
    port: int,
    sender: str,
    rcpts: Sequence[str],
    data: bytes,
    *,
    login: str | None,
    helo: str,
    bdat: bool,
) -> str:
    with smtplib.SMTP(HOST, port, local_hostname=helo, timeout=20) as client:
        client.ehlo(helo)
        if login is not None:
            client.login(login, PASSWORD)
        code, text = client.mail(sender)
        if code != 250:
            raise SmtpFailure(code, text.decode())
        accepted = 0
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            if code == 250:
                accepted += 1
            elif len(rcpts) == 1:
                raise SmtpFailure(code, text.decode())
        if not accepted:
            raise SmtpFailure(554, "no valid recipients")
        if bdat:
            client.send(f"BDAT {len(data)} LAST\r\n".encode() + data)
            code, text = client.getreply()
        else:
            code, text = client.data(data)
        if code != 250:
            raise SmtpFailure(code, text.decode())
        return text.decode()


async def send(
    port: int,
    sender: str,
    rcpts: Sequence[str],
    data: bytes,
    *,
    login: str | None = None,
    helo: str = "client.example.net",
    bdat: bool = False,
) -> str:
    """One transaction from a worker thread; the final reply text, or SmtpFailure."""
    return await asyncio.to_thread(
        _send, port, sender, rcpts, data, login=login, helo=helo, bdat=bdat
    )


def message(author: str, *, subject: str = "hello", to: str = "bob@example.test") -> bytes:
    return (
        f"From: Someone <{author}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\nHello there.\r\n"
    ).encode()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
