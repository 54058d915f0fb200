"""Helpers of the outbound tests: a store with a local sender, a loopback DNS server, test
certificates, a queue runner pointed at them, and free ports shared by several 127.0.0.x."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dnsserver import DnsServer
from hato.core.clock import FixedClock
from hato.mailauth.resolver import DnsPythonResolver
from hato.ops.tls import make_self_signed
from hato.outbound.client import Timeouts
from hato.outbound.queue import OutboundSettings, QueueRunner, entries_for
from hato.servers.tls import server_context
from hato.store.model import BlobRef, Credentials
from hato.store.queue import QueueRecipient
from hato.store.sqlite import SqliteStore, open_store

CREDS = Credentials(password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
SENDER = "alice@example.test"


def shared_port(hosts: Sequence[str]) -> int:
    """A port free on every one of ``hosts`` (MX delivery uses one port for all hosts)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        ok = True
        for host in hosts:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise OSError("no shared free port")


def certificate(directory: Path, name: str, *also: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (and ``also``), made once per directory."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if not cert.exists():
        make_self_signed(cert, key, hostnames=[name, *also])
    return cert, key


def server_tls(directory: Path, name: str, *also: str) -> ssl.SSLContext:
    return server_context(*certificate(directory, name, *also))


def ca_bundle(directory: Path, names: Sequence[str]) -> Path:
    bundle = directory / "ca.pem"
    bundle.write_bytes(b"".join(certificate(directory, n)[0].read_bytes() for n in names))
    return bundle


def message(subject: str = "hello", *, extra: str = "") -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: someone\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n{extra}\r\n"
        "Body line one.\r\n.leading dot line\r\n"
    ).encode()


RETURN_PATH = f"Return-Path: <{SENDER}>\r\n".encode()


@dataclass
class World:
    store: SqliteStore
    dns: DnsServer
    clock: FixedClock
    settings: OutboundSettings
    alice_id: int
    runner: QueueRunner | None = None

    def make_runner(self, **overrides: Any) -> QueueRunner:
        settings = replace(self.settings, **overrides)
        resolver = DnsPythonResolver([self.dns.host], port=self.dns.port, timeout=5.0)
        self.runner = QueueRunner(
            settings, store=self.store, resolver=resolver, clock=self.clock, signer=None
        )
        return self.runner

    async def queue(
        self,
        recipients: Sequence[str | QueueRecipient],
        *,
        data: bytes | None = None,
        sender: str = SENDER,
        **kw: Any,
    ) -> list[int]:
        body = RETURN_PATH + (data if data is not None else message())
        writer = self.store.blobs.writer()
        writer.write(body)
        blob: BlobRef = await asyncio.to_thread(writer.commit)
        rcpts = [r if isinstance(r, QueueRecipient) else QueueRecipient(r) for r in recipients]
        entries = entries_for(
            blob_size=blob.size,
            blob_id=blob.id,
            sender=sender,
            recipients=rcpts,
            now=self.clock.now(),
            expire_after=self.settings.expire_after,
            account_id=self.alice_id if sender == SENDER else None,
            strip_prefix=len(RETURN_PATH),
            **kw,
        )
        return await self.store.enqueue(entries)

    async def inbox(self) -> list[bytes]:
        box = await self.store.get_mailbox(self.alice_id, "INBOX")
        assert box is not None
        return [self.store.blobs.read(m.blob_id) for m in await self.store.list_messages(box.id)]


async def open_world(tmp_path: Path, dns: DnsServer, *, port: int, **settings: Any) -> World:
    clock = FixedClock()
    store = await open_store(tmp_path / "data", clock=clock)
    await store.add_domain("example.test")
    alice = await store.add_account(SENDER, CREDS)
    base = OutboundSettings(
        hostname="out.example.test",
        port=port,
        timeouts=Timeouts(
            connect=2.0, greeting=5.0, command=5.0, data_init=5.0, block=5.0, final=5.0
        ),
        mta_sts_port=settings.pop("mta_sts_port", 443),
        **settings,
    )
    return World(store, dns, clock, base, alice.id)
