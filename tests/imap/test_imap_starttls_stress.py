"""STARTTLS under load (RFC 9051 §6.2.1): many clients upgrade at once and send their next
command the moment the handshake ends - in its own write, in the same TCP segment as the
client's Finished, from imaplib, and from imaplib2 (offlineimap), which reads and writes from
two threads.

Regression: imaplib2 hung about once in 500 STARTTLS connections (CAPABILITY never answered)
because the server's TLS 1.3 session tickets reached its reader thread while its writer thread
sent the command; STARTTLS connections now get no tickets (``hato.servers.imap.service``)."""

from __future__ import annotations

import imaplib
import json
import shutil
import ssl
import subprocess
from pathlib import Path

from imap_harness import EnvFactory, ImapEnv

from hato.servers.base import TlsMode
from starttls_kit import Dialect, bio_client, hammer, socket_client, tickets

HELPER = Path(__file__).with_name("imaplib2_starttls_client.py")


def _dialect(env: ImapEnv, mode: TlsMode) -> Dialect:
    return Dialect(
        port=env.ports[mode],
        starttls=b"a STARTTLS\r\n",
        go_ahead=b"a OK",
        greeting_done=lambda data: data.startswith(b"* OK") and data.endswith(b"\r\n"),
        command=b"b CAPABILITY\r\n",
        answered=lambda data: b"\r\nb OK" in b"\r\n" + data,
    )


def _socket_client(env: ImapEnv, context: ssl.SSLContext) -> None:
    """The command in its own write, right after the handshake."""
    data = socket_client(_dialect(env, TlsMode.STARTTLS), context)
    assert b"* CAPABILITY " in data and b"STARTTLS" not in data  # RFC 9051 §6.2.1


def _bio_client(env: ImapEnv, context: ssl.SSLContext) -> None:
    """The client's Finished and the command in ONE write: the server reads the command in the
    same step that completes its handshake."""
    assert b"* CAPABILITY " in bio_client(_dialect(env, TlsMode.STARTTLS), context)


def _imaplib_client(env: ImapEnv, context: ssl.SSLContext) -> None:
    client = imaplib.IMAP4("127.0.0.1", env.ports[TlsMode.STARTTLS], timeout=20)
    try:
        client.starttls(ssl_context=context)
        typ, _ = client.capability()
        assert typ == "OK"
    finally:
        client.logout()


def test_concurrent_starttls_then_command(imap_env: EnvFactory) -> None:
    env = imap_env()
    context = ssl.create_default_context(cafile=str(env.cert_file))
    for client in (_socket_client, _bio_client, _imaplib_client):
        failures = hammer(lambda c=client: c(env, context), threads=12, each=15)  # type: ignore[misc]
        assert failures == [], (client.__name__, failures[:3])


def test_no_session_tickets_after_starttls(imap_env: EnvFactory) -> None:
    env = imap_env()
    context = ssl.create_default_context(cafile=str(env.cert_file))
    upgraded, direct = tickets(
        context, _dialect(env, TlsMode.STARTTLS), _dialect(env, TlsMode.IMPLICIT)
    )
    assert not upgraded
    assert direct  # implicit TLS keeps resumption


def test_imaplib2_starttls_does_not_hang(imap_env: EnvFactory) -> None:
    # offlineimap's imaplib2, in the system Python that offlineimap itself runs on.
    offlineimap = shutil.which("offlineimap")
    assert offlineimap is not None, "offlineimap is not installed: run scripts/test.sh"
    python = Path(offlineimap).read_text().splitlines()[0].removeprefix("#!").split()[0]
    env = imap_env()
    result = subprocess.run(
        [python, str(HELPER), str(env.ports[TlsMode.STARTTLS]), str(env.cert_file), "8", "40"],
        capture_output=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(result.stdout.decode().splitlines()[-1])
    assert report == {"failures": [], "alive": 0}
