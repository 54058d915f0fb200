"""STARTTLS under load, for any line protocol: clients that upgrade and send their next command
the moment the handshake ends, in the ways real clients do it, and a pool of threads to run
many of them at once.

A ``Dialect`` says how one protocol gets to the handshake (greeting, STARTTLS/STLS, go-ahead)
and when the answer to the first command under TLS is complete. The clients:
 - ``socket_client``: the command in its own write right after the handshake;
 - ``bio_client``: the client's Finished and the command in ONE write, so the server reads the
   command in the same step that completes its handshake;
 - ``threaded_client``: a reader thread that polls the socket and reads what arrives while the
   main thread writes the command, as imaplib2/offlineimap do (one TLS connection used by two
   threads: TLS 1.3 session tickets after STARTTLS wake the reader into SSL_read while the
   writer is in SSL_write, the race of ``hato.servers.tls``).

Used by tests/imap, tests/pop3 and tests/managesieve (their conftest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT = 20.0


@dataclass(frozen=True)
class Dialect:
    port: int
    starttls: bytes  # the command, with CRLF
    go_ahead: bytes  # how the server's positive answer to it starts
    greeting_done: Callable[[bytes], bool]  # the greeting has been read completely
    command: bytes  # sent the moment the handshake ends
    answered: Callable[[bytes], bool]  # everything the server owes after the handshake came
    hello: bytes = b""  # sent before STARTTLS (SMTP's EHLO), its answer read line by line
    hello_done: Callable[[bytes], bool] = lambda data: True


def read_line(sock: socket.socket) -> bytes:
    """One line, one octet at a time: nothing after it is consumed (the TLS layer's bytes)."""
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def plain_upgrade(dialect: Dialect) -> socket.socket:
    """Connect, read the greeting, send STARTTLS and read the go-ahead."""
    sock = socket.create_connection(("127.0.0.1", dialect.port), timeout=TIMEOUT)
    greeting = b""
    while not dialect.greeting_done(greeting):
        greeting += read_line(sock)
    if dialect.hello:
        sock.sendall(dialect.hello)
        answer = b""
        while not dialect.hello_done(answer):
            answer += read_line(sock)
    sock.sendall(dialect.starttls)
    answer = read_line(sock)
    assert answer.startswith(dialect.go_ahead), answer
    return sock


def _until(read: Callable[[], bytes], done: Callable[[bytes], bool]) -> bytes:
    data = b""
    while not done(data):
        chunk = read()
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def socket_client(dialect: Dialect, context: ssl.SSLContext) -> bytes:
    with context.wrap_socket(plain_upgrade(dialect), server_hostname="localhost") as tls:
        tls.sendall(dialect.command)
        return _until(lambda: tls.recv(65536), dialect.answered)


def bio_client(dialect: Dialect, context: ssl.SSLContext) -> bytes:
    with plain_upgrade(dialect) as sock:
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
        tls.write(dialect.command)
        sock.sendall(outgoing.read())  # the Finished and the command together

        def read() -> bytes:
            while True:
                try:
                    return tls.read(65536)
                except ssl.SSLWantReadError:
                    data = sock.recv(65536)
                    if not data:
                        return b""
                    incoming.write(data)

        return _until(read, dialect.answered)


def threaded_client(dialect: Dialect, context: ssl.SSLContext) -> bytes:
    """imaplib2's way: a reader thread that polls the socket and reads once it is readable
    (a read of 0 octets is retried, as imaplib2 does), and the command written from another
    thread at the same time."""
    with context.wrap_socket(plain_upgrade(dialect), server_hostname="localhost") as tls:
        received: list[bytes] = []
        errors: list[BaseException] = []

        def reader() -> None:
            data, zeros = b"", 0
            poller = select.poll()
            poller.register(tls.fileno(), select.POLLIN)
            try:
                while not dialect.answered(data):
                    if not tls.pending() and not poller.poll(TIMEOUT * 1000):
                        raise TimeoutError(f"no answer after {data!r}")
                    chunk = tls.recv(65536)
                    if not chunk:
                        zeros += 1
                        if zeros > 5:
                            raise EOFError(data)
                        time.sleep(0.1)
                        continue
                    zeros, data = 0, data + chunk
                received.append(data)
            except BaseException as exc:  # reported by the writer thread below
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()  # polling before the command goes out
        tls.sendall(dialect.command)
        thread.join(timeout=TIMEOUT + 5)
        assert not thread.is_alive(), "the answer never came"
        if errors:
            raise errors[0]
        return received[0]


def hammer(client: Callable[[], object], *, threads: int, each: int) -> list[str]:
    """Run ``client`` ``threads * each`` times from ``threads`` threads; the failures."""
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


def _has_ticket(tls: ssl.SSLSocket, dialect: Dialect) -> bool:
    with tls:
        tls.sendall(dialect.command)
        _until(lambda: tls.recv(65536), dialect.answered)  # TLS 1.3 tickets come before it
        assert tls.version() == "TLSv1.3"
        session = tls.session
        assert session is not None
        return session.has_ticket


def tickets(context: ssl.SSLContext, starttls: Dialect, implicit: Dialect) -> tuple[bool, bool]:
    """Whether a session gets a TLS 1.3 session ticket after STARTTLS, and over implicit TLS
    (``implicit.port``), each sending the dialect's command and reading its answer."""
    upgraded = context.wrap_socket(plain_upgrade(starttls), server_hostname="localhost")
    raw = socket.create_connection(("127.0.0.1", implicit.port), timeout=TIMEOUT)
    direct = context.wrap_socket(raw, server_hostname="localhost")
    return _has_ticket(upgraded, starttls), _has_ticket(direct, implicit)
