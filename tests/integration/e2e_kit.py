"""Helpers of the end-to-end tests: whole Hato instances (``hato serve`` subprocesses with
their own configuration, data directory, certificate and DKIM keys) on their own loopback
addresses, sharing one MX port (the ``[outbound] port`` every instance delivers to), with
DNS from ``tests/dnsserver.py``; clients are smtplib and imaplib over TLS."""

from __future__ import annotations

import asyncio
import imaplib
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hato.ops.tls import make_self_signed
from hato.outbound.dkim_sign import DkimKeys
from hato.policy.authn import make_credentials
from hato.store.sqlite import open_store

SRC = Path(__file__).resolve().parents[2] / "src"
PASSWORD = "end to end secret"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def shared_port(hosts: Sequence[str]) -> int:
    """A port free on every one of ``hosts`` (MX delivery uses one port for all hosts)."""
    for _ in range(50):
        port = free_port(hosts[0])
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


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed test certificates
    return ctx


@dataclass
class Instance:
    """One Hato installation: ``domain`` served as ``mx.<domain>`` on ``ip``."""

    root: Path
    domain: str
    ip: str
    mx_port: int
    dns_port: int
    users: Sequence[str] = ()
    aliases: dict[str, list[str]] = field(default_factory=dict)
    inbound: str = "verify = true"
    proc: subprocess.Popen[bytes] | None = None
    submissions: int = 0
    imaps: int = 0

    @property
    def hostname(self) -> str:
        return f"mx.{self.domain}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    def write_config(self) -> Path:
        self.submissions = free_port(self.ip)
        self.imaps = free_port(self.ip)
        config = self.root / "hato.toml"
        config.write_text(
            f"""\
[server]
hostname = "{self.hostname}"
data_dir = "{self.data_dir}"
shutdown_timeout = "3s"

[tls]
cert = "{self.root / "cert.pem"}"
key = "{self.root / "key.pem"}"

[smtp]
mx_listeners = ["{self.ip}:{self.mx_port}"]
submission_listeners = []
submissions_listeners = ["{self.ip}:{self.submissions}"]

[imap]
listeners = []
tls_listeners = ["{self.ip}:{self.imaps}"]

[pop3]
listeners = []
tls_listeners = []

[managesieve]
listeners = []

[http]
listeners = []
tls_listeners = []

[outbound]
port = {self.mx_port}
mta_sts = false
dane = false

[dns]
nameservers = ["127.0.0.1"]
port = {self.dns_port}
timeout = "2s"

[inbound]
{self.inbound}
"""
        )
        return config

    async def seed(self) -> dict[str, list[str]]:
        """Store, accounts, aliases, certificate, DKIM keys; the DKIM records to publish."""
        self.root.mkdir(parents=True, exist_ok=True)
        make_self_signed(
            self.root / "cert.pem", self.root / "key.pem", hostnames=[self.hostname]
        )
        store = await open_store(self.data_dir)
        try:
            await store.add_domain(self.domain)
            creds = await asyncio.to_thread(make_credentials, PASSWORD)
            for user in self.users:
                await store.add_account(user, creds)
            for source, targets in self.aliases.items():
                await store.add_alias(source, targets)
        finally:
            await store.close()
        records = DkimKeys(self.data_dir / "dkim").generate(self.domain)
        return {r.name: [r.value] for r in records}

    def start(self) -> None:
        config = self.write_config()
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hato.app.cli", "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.hostname} exited: {self.log.read_text()}")
            if b"event=serve.ready" in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.hostname} did not start: {self.log.read_text()}")

    def stop(self) -> str:
        """SIGTERM, wait; returns the log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.log.read_text(errors="replace")

    def submit(self, user: str, rcpts: Sequence[str], data: bytes) -> None:
        with smtplib.SMTP_SSL(
            self.ip, self.submissions, context=client_tls(), timeout=20
        ) as client:
            client.login(user, PASSWORD)
            client.sendmail(user, list(rcpts), data)

    def fetch(self, user: str, *, count: int = 1, timeout: float = 30.0) -> list[bytes]:
        """The INBOX messages of ``user`` once there are ``count`` (polling over IMAPS)."""
        deadline = time.monotonic() + timeout
        while True:
            with imaplib.IMAP4_SSL(self.ip, self.imaps, ssl_context=client_tls()) as imap:
                imap.login(user, PASSWORD)
                typ, data = imap.select("INBOX")
                assert typ == "OK"
                exists = int(data[0] or b"0")
                if exists >= count:
                    found = []
                    for n in range(1, exists + 1):
                        typ, parts = imap.fetch(str(n), "(BODY.PEEK[])")
                        assert typ == "OK"
                        item = parts[0]
                        assert isinstance(item, tuple)
                        found.append(item[1])
                    imap.logout()
                    return found
                imap.logout()
            if time.monotonic() > deadline:
                raise AssertionError(f"{user}: {count} message(s) never arrived")
            time.sleep(0.3)
