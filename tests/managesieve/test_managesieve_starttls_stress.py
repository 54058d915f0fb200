"""STARTTLS under load (RFC 5804 §2.2): many clients upgrade at once and send CAPABILITY the
moment the handshake ends, before reading the capabilities the server re-issues - in its own
write, in the same TCP segment as the client's Finished, and from a reader thread and a writer
thread at once (as imaplib2 does for IMAP).

Regression: STARTTLS connections get no TLS 1.3 session tickets (``hato.servers.tls``), which
raced with threaded clients' first command after the handshake."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest

import starttls_kit as kit
from hato.servers.base import TlsMode
from starttls_kit import Dialect


def _oks(data: bytes) -> int:
    return sum(1 for line in data.split(b"\r\n") if line == b"OK" or line.startswith(b"OK "))


def _dialect(env: Any, mode: TlsMode = TlsMode.STARTTLS) -> Dialect:
    return Dialect(
        port=env.ports[mode],
        starttls=b"STARTTLS\r\n",
        go_ahead=b'OK "Begin TLS negotiation now"',
        greeting_done=lambda data: _oks(data) == 1,  # RFC 5804 §1.7: capabilities, then OK
        command=b"CAPABILITY\r\n",
        # RFC 5804 §2.2: the re-issued capabilities, then the answer to CAPABILITY.
        answered=lambda data: data.endswith(b"\r\n") and _oks(data) >= 2,
    )


def _check(answer: bytes) -> None:
    first, second = answer.split(b"\r\nOK\r\n")[:2]
    for listing in (first, second):
        assert b'"IMPLEMENTATION" "Hato"' in listing and b'"SASL" "' in listing
        assert b'"STARTTLS"' not in listing  # RFC 5804 §1.7: not after STARTTLS


@pytest.mark.parametrize("client", [kit.socket_client, kit.bio_client, kit.threaded_client])
def test_concurrent_starttls_then_command(
    sieve_env: Any, client: Callable[[Dialect, ssl.SSLContext], bytes]
) -> None:
    env = sieve_env()
    dialect, context = _dialect(env), env.client_context()
    failures = kit.hammer(lambda: _check(client(dialect, context)), threads=10, each=20)
    assert failures == [], failures[:3]


def test_no_session_tickets_after_starttls(sieve_env: Any) -> None:
    env = sieve_env()
    # Implicit TLS keeps resumption: the capabilities greeting follows the tickets.
    assert kit.tickets(
        env.client_context(), _dialect(env), _dialect(env, TlsMode.IMPLICIT)
    ) == (False, True)
