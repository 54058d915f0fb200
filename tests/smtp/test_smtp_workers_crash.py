"""SMTP worker processes (``[smtp] workers``) under crashes and next to the other services:
SIGKILL of the main process while clients send (nothing acknowledged lost, no orphan
worker, no temporary file left), IMAP IDLE in the main process woken by a worker's delivery,
Sieve run in the worker, a client vanishing mid-DATA, and the memory of a worker receiving a
large message. Real processes, real sockets, the production wiring (hato.app.wiring)."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import random
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from smtpkit import (
    HOST,
    RUNNER,
    SRC,
    RawClient,
    mx_config,
    proc_status_kib,
    seed_store,
    start_senders,
    started,
    stored_inboxes,
)

from hato.app.wiring import build_services
from hato.policy.authn import make_credentials
from hato.servers.imap import ImapService
from hato.servers.smtp_workers import SmtpWorkerPool
from hato.store.remote import LOG_MIN
from hato.store.sqlite import open_store
from hato.store.sqlite.blobs import INLINE_MAX

WORKER_MODULE = b"hato.servers.smtp_worker"
ALICE = "alice@example.test"
PASSWORD = "pw"


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- the crash test: run_smtp_server.py --workers, SIGKILL of the main process ----------------

ROUNDS = 6
CLIENTS = 10
RECIPIENTS = ["alice@example.test", "bob@example.test"]
FILLER = (b"0123456789abcdef" * 4 + b"\r\n") * 30
LARGE_FILLER = (b"L" * 76 + b"\r\n") * (INLINE_MAX // 78 + 40)  # over the journal limit
MEDIUM_FILLER = (b"M" * 76 + b"\r\n") * (LOG_MIN // 78 + 400)  # to the worker's body log


def crash_body(token: str) -> bytes:
    # three in ten messages are larger than INLINE_MAX: the worker spools them to tmp/, then
    # fsyncs them, and the main process renames them into the blob directory; three in ten
    # are larger than LOG_MIN: the worker appends them to its body log and fsyncs that
    if token.endswith(("0", "4", "8")):
        filler = LARGE_FILLER
    elif token.endswith(("2", "5", "7")):
        filler = MEDIUM_FILLER
    else:
        filler = FILLER
    return (
        f"Message-ID: <{token}@crash.test>\r\nSubject: crash\r\n\r\n".encode()
        + filler
        + f"END {token}\r\n".encode()
    )


def live_workers(cwd: Path) -> set[int]:
    """Worker processes (not zombies: their cmdline is empty) started from ``cwd``: the
    working directory of the server process, which its workers inherit."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if WORKER_MODULE not in (entry / "cmdline").read_bytes():
                continue
            if os.readlink(entry / "cwd") != str(cwd):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def start_with_workers(
    data_dir: Path, cwd: Path, workers: int
) -> tuple[subprocess.Popen[str], int, set[int]]:
    """run_smtp_server.py --workers over ``data_dir``; returns it, its MX port and the pids
    of its workers."""
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(data_dir), "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        cwd=cwd,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), f"server did not start: {line!r}"
    pids = proc.stdout.readline().split()
    assert pids[0] == "WORKERS", pids
    return proc, int(line.split()[1]), {int(p) for p in pids[1:]}


def test_sigkill_of_the_main_process_loses_nothing_and_leaves_no_worker(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    asyncio.run(seed_store(data_dir, RECIPIENTS))
    rng = random.Random(5321)
    acked: list[str] = []
    spooled = logged = 0
    for round_no in range(ROUNDS):
        proc, port, pids = start_with_workers(data_dir, cwd, 2)
        try:
            assert len(pids) == 2 and proc.pid not in pids
            assert live_workers(cwd) == pids  # the scan used after the kill does see them
            stop = threading.Event()
            threads = start_senders(
                port,
                f"r{round_no}",
                acked,
                stop,
                clients=CLIENTS,
                body=crash_body,
                recipients=RECIPIENTS,
            )
            deadline = time.monotonic() + rng.uniform(0.1, 0.6)
            while time.monotonic() < deadline:
                spooled += any(p.suffix == ".tmp" for p in (data_dir / "tmp").iterdir())
                logged += any(p.suffix == ".log" for p in (data_dir / "tmp").iterdir())
                time.sleep(0.005)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        # the workers see the end of their channels and exit by themselves: nobody waits for
        # them (their parent is gone), none is left serving sessions against a dead store
        try:
            _wait(lambda: not live_workers(cwd), 10, f"the workers {sorted(pids)} to exit")
        finally:
            for pid in live_workers(cwd):  # a failed test leaves no orphan behind either
                os.kill(pid, signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        assert proc.stdout is not None
        proc.stdout.close()
    assert len(acked) > ROUNDS * CLIENTS, len(acked)  # the test really sent mail
    assert spooled, "no large body was ever spooled to tmp/ by a worker"
    assert logged, "no worker ever had a body log in tmp/"
    print(f"acknowledged: {len(acked)}")
    found = asyncio.run(stored_inboxes(data_dir, RECIPIENTS))  # the final restart
    for user in RECIPIENTS:
        tokens = []
        for data in found[user]:
            head, _, rest = data.partition(b"\r\nMessage-ID: <")
            assert head.startswith(b"Return-Path: <x@remote.test>\r\nReceived: from crash.test")
            token = rest.split(b"@", 1)[0].decode()
            assert data.endswith(crash_body(token)), "a stored message is incomplete"
            tokens.append(token)
        assert set(acked) <= set(tokens), "an acknowledged message was lost"
        assert len(tokens) == len(set(tokens)), "a message was stored twice"
    assert list((data_dir / "tmp").iterdir()) == []


# -- in-process: build_services with workers, and an IMAP listener --------------------------


class Running:
    def __init__(self, store: Any, services: list[Any], data_dir: Path) -> None:
        self.store = store
        self.services = services
        self.data_dir = data_dir
        (self.pool,) = [s for s in services if isinstance(s, SmtpWorkerPool)]
        imap = [s for s in services if isinstance(s, ImapService)]
        self.imap = imap[0] if imap else None

    @property
    def port(self) -> int:
        return self.pool.port(0)

    @property
    def imap_port(self) -> int:
        assert self.imap is not None
        return self.imap.bound[0][1][1]

    async def send(self, rcpt: str, body: bytes) -> Any:
        def work() -> Any:
            with smtplib.SMTP(HOST, self.port, timeout=30) as client:
                return client.sendmail("a@remote.test", [rcpt], body)

        return await asyncio.to_thread(work)

    async def mailbox(self, address: str, name: str = "INBOX") -> list[bytes]:
        account = await self.store.get_account(address)
        box = await self.store.get_mailbox(account.id, name)
        if box is None:
            return []
        return [self.store.blobs.read(m.blob_id) for m in await self.store.list_messages(box.id)]

    def temp_files(self) -> list[str]:
        return [p.name for p in (self.data_dir / "tmp").iterdir()]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, *, workers: int, imap: bool = False, **smtp: Any
) -> AsyncIterator[Running]:
    data_dir = tmp_path / "data"
    imap_section = {"listeners": [], "tls_listeners": ["127.0.0.1:0"] if imap else []}
    config = mx_config(data_dir, tmp_path, sections={"imap": imap_section}, workers=workers, **smtp)
    store = await open_store(data_dir)
    await store.add_domain("example.test")
    await store.add_account(ALICE, make_credentials(PASSWORD))
    services = build_services(config, store)
    try:
        async with started(services):
            yield Running(store, services, data_dir)
    finally:
        await store.close()


def test_imap_idle_in_the_main_process_sees_a_message_a_worker_received(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, workers=2, imap=True) as hato:
            idling = threading.Event()
            seen: list[bytes] = []

            def watch() -> None:
                context = ssl._create_unverified_context()
                client = imaplib.IMAP4_SSL(HOST, hato.imap_port, ssl_context=context, timeout=10)
                try:
                    assert client.login(ALICE, PASSWORD)[0] == "OK"
                    assert client.select("INBOX") == ("OK", [b"0"])
                    tag = client._new_tag().decode()
                    client.send(f"{tag} IDLE\r\n".encode())  # RFC 2177 §3
                    assert client.readline().startswith(b"+ ")
                    idling.set()
                    seen.append(client.readline())  # the EXISTS pushed while idling
                    client.send(b"DONE\r\n")
                    while not (line := client.readline()).startswith(tag.encode()):
                        seen.append(line)
                    assert line.startswith(f"{tag} OK".encode()), line
                    typ, data = client.fetch("1", "(BODY.PEEK[])")
                    assert typ == "OK"
                    (fetched,) = [part for part in data if isinstance(part, tuple)]
                    seen.append(fetched[1])
                    client.logout()
                finally:
                    if client.state != "LOGOUT":
                        with contextlib.suppress(OSError):
                            client.shutdown()

            watcher = asyncio.create_task(asyncio.to_thread(watch))
            if not await asyncio.to_thread(idling.wait, 10):
                await asyncio.wait_for(watcher, 10)  # raises what went wrong there
                raise AssertionError("the IMAP client never got to IDLE")
            started = time.monotonic()
            body = b"Subject: pushed\r\n\r\nfrom a worker\r\n"
            assert await hato.send(ALICE, body) == {}
            await asyncio.wait_for(watcher, 10)
            assert seen[0] == b"* 1 EXISTS\r\n"
            assert time.monotonic() - started < 5
            assert seen[-1].endswith(body)

    asyncio.run(main())


def test_sieve_runs_in_the_worker(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, workers=1) as hato:
            assert await hato.send(ALICE, b"Subject: before\r\n\r\nno script yet\r\n") == {}
            account = await hato.store.get_account(ALICE)
            # RFC 5228 §4.1: fileinto a missing mailbox may keep in INBOX instead: create it
            await hato.store.create_mailbox(account.id, "Lists")
            # put after the worker has served a message: it must not use a stale script
            await hato.store.put_script(
                account.id, "lists", 'require "fileinto";\nfileinto "Lists";\n', activate=True
            )
            assert await hato.send(ALICE, b"Subject: after\r\n\r\nfiled\r\n") == {}
            inbox = await hato.mailbox(ALICE)
            lists = await hato.mailbox(ALICE, "Lists")
            assert len(inbox) == 1 and inbox[0].endswith(
                b"Subject: before\r\n\r\nno script yet\r\n"
            )
            assert len(lists) == 1 and lists[0].endswith(b"Subject: after\r\n\r\nfiled\r\n")

    asyncio.run(main())


def test_a_client_vanishing_mid_data_leaves_no_temp_file_and_the_worker_serves_on(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with running(tmp_path, workers=1, max_connections_per_ip=1) as hato:
            (pid,) = hato.pool.worker_pids

            def vanish() -> None:
                with RawClient(hato.port) as client:
                    assert client.code() == 220
                    assert client.cmd("EHLO vanish.test")[-1].startswith("250")
                    assert client.cmd("MAIL FROM:<a@remote.test>")[0].startswith("250")
                    assert client.cmd(f"RCPT TO:<{ALICE}>")[0].startswith("250")
                    assert client.cmd("DATA")[0].startswith("354")
                    client.send(b"Subject: cut\r\n\r\n" + (b"v" * 76 + b"\r\n") * 5000)
                    # over INLINE_MAX: the worker spools it to a file of the store's tmp/
                    _wait(lambda: bool(hato.temp_files()), 10, "the spool file")
                    # the client vanishes: RST, no end of data
                    client.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )

            await asyncio.to_thread(vanish)
            await asyncio.to_thread(_wait, lambda: not hato.temp_files(), 10, "tmp/ to empty")

            def admitted() -> bool:  # max_connections_per_ip=1: the worker released it
                try:
                    with smtplib.SMTP(HOST, hato.port, timeout=10) as client:
                        body = b"Subject: next\r\n\r\nstill served\r\n"
                        assert client.sendmail("a@remote.test", [ALICE], body) == {}
                        return True
                except smtplib.SMTPConnectError as exc:
                    assert exc.smtp_code == 421, exc
                    return False

            await asyncio.to_thread(_wait, admitted, 10, "the connection to be released")
            assert hato.pool.worker_pids == [pid]  # the same worker, not a replacement
            (stored_body,) = await hato.mailbox(ALICE)
            assert stored_body.endswith(b"still served\r\n")
            assert hato.temp_files() == []

    asyncio.run(main())


MEGABYTES = 20


def test_a_worker_streams_twenty_megabytes_without_growing_memory(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, workers=1) as hato:
            (pid,) = hato.pool.worker_pids
            line = b"m" * 76 + b"\r\n"
            body = b"Subject: big\r\n\r\n" + line * (MEGABYTES * 1_000_000 // len(line))

            def work() -> int:
                with smtplib.SMTP(HOST, hato.port, timeout=120) as client:
                    warm = b"Subject: warm\r\n\r\n" + line * (INLINE_MAX // len(line) + 10)
                    assert client.sendmail("x@remote.test", [ALICE], warm) == {}
                    before = proc_status_kib(pid, "VmHWM")  # the worker's peak RSS so far
                    assert client.sendmail("x@remote.test", [ALICE], body) == {}
                    return proc_status_kib(pid, "VmHWM") - before

            growth = await asyncio.to_thread(work)
            assert growth < 10 * 1024, f"the worker's peak RSS grew by {growth} KiB"
            assert hato.pool.worker_pids == [pid]
            bodies = await hato.mailbox(ALICE)
            assert len(bodies) == 2 and bodies[1].endswith(body)

    asyncio.run(main())
