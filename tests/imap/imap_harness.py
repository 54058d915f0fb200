"""Test harness for the IMAP server: handles to a server running on loopback over a real SQLite
store, and an imaplib client whose every received byte is kept for the strict response-grammar
checker (``hato.codec.imap.grammar``)."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hato.codec.imap.grammar import check_stream
from hato.servers.base import TlsMode
from hato.servers.imap import ImapService
from hato.store.model import Account, DeliveryTarget
from hato.store.sqlite import SqliteStore

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors"
T = TypeVar("T")
ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "s3cret pass"


class _Tap:
    """Records the bytes an imaplib client reads, so the test can check their grammar."""

    transcript: bytearray

    def read(self, size: int) -> bytes:
        data: bytes = super().read(size)  # type: ignore[misc]
        self.transcript += data
        return data

    def readline(self) -> bytes:
        data: bytes = super().readline()  # type: ignore[misc]
        self.transcript += data
        return data


class CheckedIMAP4(_Tap, imaplib.IMAP4):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.transcript = bytearray()
        super().__init__(*args, **kwargs)


class CheckedIMAP4_SSL(_Tap, imaplib.IMAP4_SSL):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.transcript = bytearray()
        super().__init__(*args, **kwargs)


@dataclass
class ImapEnv:
    loop: asyncio.AbstractEventLoop
    store: SqliteStore
    service: ImapService
    alice: Account
    bob: Account
    cert_file: Path
    ports: dict[TlsMode, int]
    clients: list[CheckedIMAP4] = field(default_factory=list)
    password = PASSWORD

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def deliver(self, message: bytes, account: Account | None = None,
                mailbox: str = "INBOX") -> int:
        async def work() -> int:
            writer = self.store.blobs.writer()
            writer.write(message)
            ref = await asyncio.to_thread(writer.commit)
            target = DeliveryTarget((account or self.alice).id, mailbox)
            return (await self.store.deliver(ref, [target]))[0].uid

        return self.call(work())

    def uidvalidity(self, name: str = "INBOX") -> int:
        async def work() -> int:
            mailbox = await self.store.get_mailbox(self.alice.id, name)
            assert mailbox is not None
            return mailbox.uidvalidity

        return self.call(work())

    def client(self, *, login: bool = True, tls: bool = False) -> CheckedIMAP4:
        if tls:
            context = ssl.create_default_context(cafile=str(self.cert_file))
            client: CheckedIMAP4 = CheckedIMAP4_SSL(  # type: ignore[assignment]
                "127.0.0.1", self.ports[TlsMode.IMPLICIT], ssl_context=context, timeout=20)
        else:
            client = CheckedIMAP4("127.0.0.1", self.ports[TlsMode.STARTTLS], timeout=20)
        self.clients.append(client)
        if login:
            client.login(ALICE, PASSWORD)
        return client

    def check_grammar(self) -> None:
        for client in self.clients:
            check_stream(bytes(client.transcript))

    @staticmethod
    def message(subject: str, body: str = "Hello.\r\n", *, sender: str = "sender@example.net",
                extra: str = "") -> bytes:
        return (
            f"From: Sender <{sender}>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n{extra}"
            f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\n{body}"
        ).encode()


EnvFactory = Callable[..., ImapEnv]
