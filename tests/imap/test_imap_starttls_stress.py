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
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from imap_harness import EnvFactory, ImapEnv

from hato.servers.base import TlsMode

HELPER = Path(__file__).with_name("imaplib2_starttls_client.py")


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)  # one octet at a time: nothing after the line is consumed
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def _plain_starttls(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    assert _line(sock).startswith(b"* OK")
    sock.sendall(b"a STARTTLS\r\n")
    assert _line(sock).startswith(b"a OK")
    return sock


def _until_tagged(read: Callable[[], bytes], tag: bytes) -> bytes:
    data = b""
    while b"\r\n" + tag + b" OK" not in b"\r\n" + data:
        chunk = read()
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def _socket_client(env: ImapEnv, context: ssl.SSLContext) -> None:
    """The command in its own write, right after the handshake."""
    with context.wrap_socket(_plain_starttls(env.ports[TlsMode.STARTTLS]),
                             server_hostname="localhost") as tls:
        tls.sendall(b"b CAPABILITY\r\n")
        data = _until_tagged(lambda: tls.recv(65536), b"b")
        assert b"* CAPABILITY " in data and b"STARTTLS" not in data  # RFC 9051 §6.2.1


def _bio_client(env: ImapEnv, context: ssl.SSLContext) -> None:
    """The client's Finished and the command in ONE write: the server reads the command in the
    same step that completes its handshake."""
    sock = _plain_starttls(env.ports[TlsMode.STARTTLS])
    with sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        tls.write(b"b CAPABILITY\r\n")
        sock.sendall(outgoing.read())

        def read() -> bytes:
            while True:
                try:
                    return tls.read(65536)
                except ssl.SSLWantReadError:
                    data = sock.recv(65536)
                    if not data:
                        return b""
                    incoming.write(data)

        assert b"* CAPABILITY " in _until_tagged(read, b"b")


def _imaplib_client(env: ImapEnv, context: ssl.SSLContext) -> None:
    client = imaplib.IMAP4("127.0.0.1", env.ports[TlsMode.STARTTLS], timeout=20)
    try:
        client.starttls(ssl_context=context)
        typ, _ = client.capability()
        assert typ == "OK"
    finally:
        client.logout()


def _hammer(client: Callable[[], None], *, threads: int, each: int) -> list[str]:
    failures: list[str] = []

    def worker() -> None:
        for _ in range(each):
            try:
                client()
            except Exception as exc:  # collected, asserted on by the caller
                failures.append(repr(exc))

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in running), "a client hung"
    return failures


def test_concurrent_starttls_then_command(imap_env: EnvFactory) -> None:
    env = imap_env()
    context = ssl.create_default_context(cafile=str(env.cert_file))
    for client in (_socket_client, _bio_client, _imaplib_client):
        failures = _hammer(lambda c=client: c(env, context), threads=12, each=15)  # type: ignore[misc]
        assert failures == [], (client.__name__, failures[:3])


def _has_ticket(env: ImapEnv, context: ssl.SSLContext, *, starttls: bool) -> bool:
    if starttls:
        tls = context.wrap_socket(_plain_starttls(env.ports[TlsMode.STARTTLS]),
                                  server_hostname="localhost")
    else:
        sock = socket.create_connection(("127.0.0.1", env.ports[TlsMode.IMPLICIT]), timeout=20)
        tls = context.wrap_socket(sock, server_hostname="localhost")
    with tls:
        tls.sendall(b"b CAPABILITY\r\n")  # tickets come before the answer (TLS 1.3)
        _until_tagged(lambda: tls.recv(65536), b"b")
        assert tls.version() == "TLSv1.3"
        session = tls.session
        assert session is not None
        return session.has_ticket


def test_no_session_tickets_after_starttls(imap_env: EnvFactory) -> None:
    env = imap_env()
    context = ssl.create_default_context(cafile=str(env.cert_file))
    assert not _has_ticket(env, context, starttls=True)
    assert _has_ticket(env, context, starttls=False)  # implicit TLS keeps resumption


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
