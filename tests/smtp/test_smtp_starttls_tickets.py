"""SMTP STARTTLS gets no TLS 1.3 session tickets, as IMAP, POP3 and ManageSieve (the tickets,
sent right after the handshake, raced with threaded clients' first command: see
tests/imap/test_imap_starttls_stress.py); implicit TLS (RFC 8314 §3) keeps resumption. Through
``hato serve``'s wiring: submission in the main process, the MX in a worker process."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import starttls_kit as kit
from hato.app.config import parse_config
from hato.app.wiring import build_services
from hato.ops.tls import make_self_signed
from hato.policy.smtp import Role
from hato.servers.base import TlsMode
from hato.servers.smtp import SmtpService
from hato.servers.smtp_workers import SmtpWorkerPool
from hato.store.sqlite import open_store
from starttls_kit import Dialect


def _ehlo_done(data: bytes) -> bool:
    return b"\r\n250 " in b"\r\n" + data and data.endswith(b"\r\n")  # RFC 5321 §4.2.1


def _dialect(port: int) -> Dialect:
    return Dialect(
        port=port,
        hello=b"EHLO client.example\r\n",
        hello_done=_ehlo_done,
        starttls=b"STARTTLS\r\n",
        go_ahead=b"220 ",
        greeting_done=lambda data: data.startswith(b"220 ") and data.endswith(b"\r\n"),
        command=b"EHLO client.example\r\n",
        answered=_ehlo_done,
    )


def test_starttls_without_tickets_implicit_with(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hostnames=["localhost"], loopback=True)
    config = parse_config(
        {
            "server": {"hostname": "mx.example.test", "data_dir": str(tmp_path / "data")},
            "tls": {"cert": str(cert), "key": str(key)},
            "smtp": {
                "mx_listeners": ["127.0.0.1:0"],
                "submission_listeners": ["127.0.0.1:0"],
                "submissions_listeners": ["127.0.0.1:0"],
                "workers": 1,
            },
            "imap": {"listeners": [], "tls_listeners": []},
            "pop3": {"listeners": [], "tls_listeners": []},
            "managesieve": {"listeners": []},
            "http": {"listeners": [], "tls_listeners": []},
        },
        base_dir=tmp_path,
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    async def main() -> list[tuple[bool, bool]]:
        store = await open_store(config.server.data_dir)
        services: list[Any] = build_services(config, store)
        for service in services:
            await service.start()
        try:
            (smtp,) = [s for s in services if isinstance(s, SmtpService)]
            (pool,) = [s for s in services if isinstance(s, SmtpWorkerPool)]
            submission = smtp.port_for(Role.SUBMISSION, TlsMode.STARTTLS)
            submissions = _dialect(smtp.port_for(Role.SUBMISSION, TlsMode.IMPLICIT))
            return [
                await asyncio.to_thread(kit.tickets, context, _dialect(submission), submissions),
                await asyncio.to_thread(kit.tickets, context, _dialect(pool.port(0)), submissions),
            ]
        finally:
            for service in reversed(services):
                await service.stop(timeout=5)
            await store.close()

    in_process, worker = asyncio.run(main())
    assert in_process == (False, True)
    assert worker == (False, True)
