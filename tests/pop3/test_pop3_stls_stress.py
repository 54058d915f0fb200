"""STLS under load (RFC 2595 §4): many clients upgrade at once and send CAPA the moment the
handshake ends - in its own write, in the same TCP segment as the client's Finished, from a
reader thread and a writer thread at once (as imaplib2 does for IMAP), and from poplib.

Regression: STARTTLS connections get no TLS 1.3 session tickets (``hato.servers.tls``), which
raced with threaded clients' first command after the handshake."""

from __future__ import annotations

import asyncio
import poplib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import starttls_kit as kit
from hato.app.config import parse_config
from hato.app.wiring import build_services
from hato.ops.tls import make_self_signed
from hato.servers.base import TlsMode
from hato.servers.managesieve import ManageSieveServer
from hato.servers.pop3 import Pop3Server
from hato.store.sqlite import open_store
from starttls_kit import Dialect


def _capa_done(data: bytes) -> bool:
    return data.endswith(b"\r\n.\r\n")  # RFC 1939 §3: a multi-line response ends CRLF.CRLF


def _dialect(env: Any, mode: TlsMode = TlsMode.STARTTLS) -> Dialect:
    return Dialect(
        port=env.ports[mode],
        starttls=b"STLS\r\n",
        go_ahead=b"+OK",
        greeting_done=lambda data: data.endswith(b"\r\n"),
        command=b"CAPA\r\n",
        answered=_capa_done,
    )


def _check(answer: bytes) -> None:
    lines = answer.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and b"USER" in lines
    assert b"STLS" not in lines  # RFC 2595 §4: STLS is not offered once TLS is active


def _poplib_client(env: Any, context: ssl.SSLContext) -> None:
    client = poplib.POP3("127.0.0.1", env.ports[TlsMode.STARTTLS], timeout=20)
    try:
        client.stls(context)
        assert "USER" in client.capa()
        client.quit()
    finally:
        client.close()


ClientFn = Callable[[Dialect, ssl.SSLContext], bytes]


@pytest.mark.parametrize("client", [kit.socket_client, kit.bio_client, kit.threaded_client])
def test_concurrent_stls_then_command(pop3_env: Any, client: ClientFn) -> None:
    env = pop3_env()
    dialect, context = _dialect(env), env.client_context()
    failures = kit.hammer(lambda: _check(client(dialect, context)), threads=10, each=20)
    assert failures == [], failures[:3]


def test_concurrent_poplib_stls(pop3_env: Any) -> None:
    env = pop3_env()
    context = env.client_context()
    failures = kit.hammer(lambda: _poplib_client(env, context), threads=10, each=20)
    assert failures == [], failures[:3]


def test_no_session_tickets_after_stls(pop3_env: Any) -> None:
    env = pop3_env()
    # Implicit TLS (RFC 8314 §3) keeps resumption: the greeting follows the tickets.
    assert kit.tickets(
        env.client_context(), _dialect(env), _dialect(env, TlsMode.IMPLICIT)
    ) == (False, True)


def test_serve_wiring_gives_stls_a_context_without_tickets(tmp_path: Path) -> None:
    """``hato serve`` (app.wiring) hands POP3 and ManageSieve a STARTTLS context without
    session tickets, and keeps the implicit-TLS one as it was."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hostnames=["localhost"], loopback=True)
    config = parse_config(
        {
            "server": {"hostname": "mail.example.test", "data_dir": str(tmp_path / "data")},
            "tls": {"cert": str(cert), "key": str(key)},
            "smtp": {"mx_listeners": [], "submission_listeners": [], "submissions_listeners": []},
            "imap": {"listeners": [], "tls_listeners": []},
            "pop3": {"listeners": ["127.0.0.1:0"], "tls_listeners": ["127.0.0.1:0"]},
            "managesieve": {"listeners": ["127.0.0.1:0"]},
            "http": {"listeners": [], "tls_listeners": []},
        },
        base_dir=tmp_path,
    )

    async def main() -> list[Any]:
        store = await open_store(config.server.data_dir)
        try:
            return [s for s in build_services(config, store)
                    if isinstance(s, Pop3Server | ManageSieveServer)]
        finally:
            await store.close()

    servers = asyncio.run(main())
    assert len(servers) == 2
    for server in servers:
        assert server.starttls_context is not None and server.tls_context is not None
        assert server.starttls_context.num_tickets == 0
        assert server.tls_context.num_tickets > 0
