"""Helpers of the SMTP tests: a real store, a real SmtpService on loopback ephemeral ports
(MX plain, submission with STARTTLS, submissions with implicit TLS) run in a background event
loop, so blocking clients (smtplib, swaks, raw sockets) can drive it from the test thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hato.app.config import parse_config
from hato.codec.smtp import Limits
from hato.core.address import Address
from hato.ops.tls import make_self_signed
from hato.policy.authn import Authenticator, make_credentials
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode
from hato.servers.smtp import SmtpListener, SmtpService, SmtpSettings
from hato.servers.tls import server_context
from hato.store.model import Credentials
from hato.store.sqlite import open_store

T = TypeVar("T")
VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "smtp"
PASSWORD = "correct horse battery"
HOST = "127.0.0.1"
_CREDENTIALS: list[Credentials] = []


def credentials() -> Credentials:
    """One argon2id/SCRAM credential set for every test account (hashing is slow)."""
    if not _CREDENTIALS:
        _CREDENTIALS.append(make_credentials(PASSWORD))
    return _CREDENTIALS[0]


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def default_settings(**overrides: Any) -> SmtpSettings:
    listeners = (
        SmtpListener(Listener(HOST, 0, TlsMode.NONE), Role.MX),
        SmtpListener(Listener(HOST, 0, TlsMode.STARTTLS), Role.SUBMISSION),
        SmtpListener(Listener(HOST, 0, TlsMode.IMPLICIT), Role.SUBMISSION),
        SmtpListener(Listener(HOST, 0, TlsMode.STARTTLS), Role.MX),
    )
    base = SmtpSettings(
        hostname="mx.example.test",
        listeners=listeners,
        limits=Limits(),
        postmaster="postmaster@example.test",
    )
    return dataclasses.replace(base, **overrides)


RUNNER = Path(__file__).with_name("run_smtp_server.py")
SRC = Path(__file__).resolve().parents[2] / "src"


async def seed_store(data_dir: Path, users: list[str]) -> None:
    """Create a store with the users' domains and accounts (for server subprocesses)."""
    store = await open_store(data_dir)
    try:
        for user in users:
            domain = user.rsplit("@", 1)[1]
            if not await store.has_domain(domain):
                await store.add_domain(domain)
            await store.add_account(user, credentials())
    finally:
        await store.close()


def start_server_process(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    """run_smtp_server.py over ``data_dir`` in a subprocess; returns it and its MX port."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), f"server did not start: {line!r}"
    return proc, int(line.split()[1])


def proc_status_kib(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Harness:
    """A store and an SmtpService running in their own event loop thread."""

    def __init__(
        self,
        data_dir: Path,
        tls_files: tuple[Path, Path],
        settings: SmtpSettings,
        *,
        demo: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.tls = server_context(*tls_files)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store: Any = None
        self.service: SmtpService | None = None
        self.demo = demo

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(store)`` in the server's loop."""
        return self.run(fn(self.store))

    async def _start(self) -> None:
        self.store = await open_store(self.data_dir)
        await self.store.add_domain("example.test")
        await self.store.add_domain("other.test")
        for user in ("alice", "bob", "carol"):
            await self.store.add_account(f"{user}@example.test", credentials())
        await self.store.add_account("dave@other.test", credentials())
        await self.store.add_alias("postmaster@example.test", ["alice@example.test"])
        auth = Authenticator(self.store, plaintext_on_loopback=self.demo)
        self.service = SmtpService(self.settings, self.store, auth, tls=self.tls)
        await self.service.start()

    def start(self) -> Harness:
        self.run(self._start())
        return self

    def port(self, role: Role = Role.MX, tls: TlsMode = TlsMode.NONE) -> int:
        assert self.service is not None
        return self.service.port_for(role, tls)

    @property
    def mx(self) -> int:
        return self.port(Role.MX, TlsMode.NONE)

    @property
    def submission(self) -> int:
        return self.port(Role.SUBMISSION, TlsMode.STARTTLS)

    @property
    def submissions(self) -> int:
        return self.port(Role.SUBMISSION, TlsMode.IMPLICIT)

    def messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """The bodies stored in ``mailbox`` of the account ``address``."""

        async def read(store: Any) -> list[bytes]:
            account = await store.get_account(Address.parse(address).key)
            box = await store.get_mailbox(account.id, mailbox)
            if box is None:
                return []
            found = await store.list_messages(box.id)
            return [store.blobs.read(m.blob_id) for m in found]

        return self.call(read)

    def temp_files(self) -> list[str]:
        return [n for n in os.listdir(self.data_dir / "tmp") if n.endswith(".tmp")]

    def close(self) -> None:
        async def shutdown() -> None:
            if self.service is not None:
                await self.service.stop(timeout=2)
                # a connection asyncio accepted just before stop() may still be between
                # accept and connection_made: let it arrive and be closed before the loop ends
                await asyncio.sleep(0.1)
            if self.store is not None:
                await self.store.close()

        try:
            self.run(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class RawClient:
    """A line-oriented SMTP client over a plain socket, for transcripts and odd input."""

    def __init__(self, port: int, *, timeout: float = 10) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self) -> str:
        raw = self.file.readline()
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def reply(self) -> list[str]:
        """One complete (possibly multi-line) reply; [] at end of stream."""
        lines: list[str] = []
        while True:
            text = self.line()
            if not text:
                return lines
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return lines

    def code(self) -> int:
        reply = self.reply()
        return int(reply[-1][:3]) if reply else 0

    def cmd(self, text: str) -> list[str]:
        self.send(text + "\r\n")
        return self.reply()

    def starttls(self) -> None:
        self.file.close()
        self.sock = client_tls().wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the crash tests (test_smtp_crash.py, test_smtp_workers_crash.py) -------------------------
def keep_sending(
    port: int,
    ident: str,
    acked: list[str],
    stop: threading.Event,
    *,
    body: Callable[[str], bytes],
    recipients: list[str],
) -> None:
    """Send messages ``body(token)`` over one connection until ``stop`` or the server dies;
    ``acked`` gets each token once its message got the 250 to the end of data."""
    n = 0
    try:
        with smtplib.SMTP(HOST, port, timeout=5) as client:
            client.ehlo("crash.test")
            while not stop.is_set():
                token = f"{ident}.{n}"
                n += 1
                client.sendmail("x@remote.test", recipients, body(token))
                acked.append(token)  # only after the 250 to the end of data
    except (smtplib.SMTPException, OSError):
        pass


def start_senders(
    port: int,
    prefix: str,
    acked: list[str],
    stop: threading.Event,
    *,
    clients: int,
    body: Callable[[str], bytes],
    recipients: list[str],
) -> list[threading.Thread]:
    """``clients`` threads running ``keep_sending`` (idents ``{prefix}c{i}``), started."""
    threads = [
        threading.Thread(
            target=keep_sending,
            args=(port, f"{prefix}c{i}", acked, stop),
            kwargs={"body": body, "recipients": recipients},
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    return threads


async def stored_inboxes(data_dir: Path, users: list[str]) -> dict[str, list[bytes]]:
    """Every user's INBOX bodies, each checked against its content address (opening the
    store first sweeps what a crash left behind)."""
    store = await open_store(data_dir)
    try:
        out: dict[str, list[bytes]] = {}
        for user in users:
            account = await store.get_account(user)
            assert account is not None
            inbox = await store.get_mailbox(account.id, "INBOX")
            assert inbox is not None
            blobs = []
            for message in await store.list_messages(inbox.id):
                data = store.blobs.read(message.blob_id)
                assert hashlib.sha256(data).hexdigest() == message.blob_id
                blobs.append(data)
            out[user] = blobs
        return out
    finally:
        await store.close()


# -- the production wiring with workers (run_smtp_server.py, test_smtp_workers*.py) -----------
def mx_config(
    data_dir: Path, cert_dir: Path, *, sections: dict[str, Any] | None = None, **smtp: Any
) -> Any:
    """A configuration with the MX listener only, on a loopback port (with a self-signed
    certificate in ``cert_dir``: STARTTLS offered), inbound verification off and no other
    listener; ``smtp`` adds to ``[smtp]``, ``sections`` replaces whole sections."""
    cert, key = cert_dir / "cert.pem", cert_dir / "key.pem"
    if not cert.exists():
        make_self_signed(cert, key, hostnames=["mx.example.test"], loopback=True)
    data: dict[str, Any] = {
        "server": {"hostname": "mx.example.test", "data_dir": str(data_dir)},
        "tls": {"cert": str(cert), "key": str(key)},
        "smtp": {
            "mx_listeners": ["127.0.0.1:0"],
            "submission_listeners": [],
            "submissions_listeners": [],
            **smtp,
        },
        "inbound": {"verify": False},
        "imap": {"listeners": [], "tls_listeners": []},
        "pop3": {"listeners": [], "tls_listeners": []},
        "managesieve": {"listeners": []},
        "http": {"listeners": [], "tls_listeners": []},
        **(sections or {}),
    }
    return parse_config(data, base_dir=cert_dir)


@contextlib.asynccontextmanager
async def started(services: Sequence[Any]) -> AsyncIterator[None]:
    """Start ``services`` in order; stop the started ones in reverse order at the end."""
    running: list[Any] = []
    try:
        for service in services:
            await service.start()
            running.append(service)
        yield
    finally:
        for service in reversed(running):
            await service.stop(timeout=5)
