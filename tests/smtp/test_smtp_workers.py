"""MX sessions in SMTP worker processes (``[smtp] workers``; hato.servers.smtp_workers,
hato.servers.smtp_worker, hato.store.remote): real worker processes, real sockets, the
production wiring (hato.app.wiring), the store in the main process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from smtpkit import mx_config, started

from dnsserver import DnsServer
from hato.app.wiring import build_services
from hato.core.errors import ScriptQuotaExceeded, SieveError
from hato.policy.authn import make_credentials
from hato.servers.smtp_workers import SmtpWorkerPool
from hato.servers.worker_rpc import decode_error, encode_error
from hato.store.fulltext import TextScope
from hato.store.remote import LOG_MIN
from hato.store.sqlite import open_store
from hato.store.sqlite.blobs import INLINE_MAX


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in its own event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def _config(tmp_path: Path, sections: dict[str, Any] | None = None, **smtp: Any) -> Any:
    return mx_config(tmp_path / "data", tmp_path, sections=sections, **{"workers": 2, **smtp})


class Running:
    def __init__(self, store: Any, services: list[Any]) -> None:
        self.store = store
        self.services = services
        (self.pool,) = [s for s in services if isinstance(s, SmtpWorkerPool)]

    @property
    def port(self) -> int:
        return self.pool.port(0)

    async def send(
        self, rcpt: str, body: bytes, sender: str = "a@remote.test", *, starttls: bool = False
    ) -> Any:
        def work() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                if starttls:
                    client.starttls(context=ssl._create_unverified_context())
                return client.sendmail(sender, [rcpt], body)

        return await asyncio.to_thread(work)

    async def inbox(self, address: str) -> list[bytes]:
        account = await self.store.get_account(address)
        mailbox = await self.store.get_mailbox(account.id, "INBOX")
        messages = await self.store.list_messages(mailbox.id)
        return [self.store.blobs.read(m.blob_id) for m in messages]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, sections: dict[str, Any] | None = None, **smtp: Any
) -> AsyncIterator[Running]:
    config = _config(tmp_path, sections, **smtp)
    store = await open_store(config.server.data_dir)
    await store.add_domain("example.test")
    await store.add_account("alice@example.test", make_credentials("pw"), quota_bytes=200_000)
    services = build_services(config, store)
    try:
        async with started(services):
            yield Running(store, services)
    finally:
        await store.close()


def test_error_tree_crosses_processes_with_its_fields() -> None:
    exc = ScriptQuotaExceeded("over", limit="count", reply="too many scripts")
    back = decode_error(encode_error(exc))
    assert type(back) is ScriptQuotaExceeded  # pickle alone would fail: ``limit`` is keyword-only
    assert back.detail == "over" and back.limit == "count" and str(back) == str(exc)
    assert back.reply == "too many scripts"
    sieve = decode_error(encode_error(SieveError([(3, "unknown test")])))
    assert isinstance(sieve, SieveError) and sieve.errors == ((3, "unknown test"),)


@sync
async def test_worker_stores_messages_in_the_main_process(tmp_path: Path) -> None:
    async with running(tmp_path) as hato:
        pids = hato.pool.worker_pids
        assert len(pids) == 2 and os.getpid() not in pids
        small = b"Subject: small\r\n\r\nhello\r\n"
        large = b"Subject: large\r\n\r\n" + (b"x" * 76 + b"\r\n") * (INLINE_MAX // 78 + 50)
        assert await hato.send("alice@example.test", small, starttls=True) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await hato.send("nobody@example.test", small)
        assert refused.value.recipients["nobody@example.test"][0] == 550
        bodies = await hato.inbox("alice@example.test")
        assert len(bodies) == 1 and bodies[0].endswith(small)
        assert bodies[0].startswith(b"Return-Path: <a@remote.test>\r\nReceived: ")
        assert b"with ESMTPS" in bodies[0]  # RFC 3848: the worker's STARTTLS, in its trace field
        # a body over the journal limit: fsynced by the worker, renamed by the main process
        await hato.store.set_quota("alice@example.test", None)
        assert await hato.send("alice@example.test", large) == {}
        bodies = await hato.inbox("alice@example.test")
        assert len(bodies) == 2 and bodies[1].endswith(large)
        assert not list((tmp_path / "data" / "tmp").iterdir())


@sync
async def test_a_body_from_the_workers_body_log_is_stored_searchable_and_the_log_goes(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "data" / "tmp"
    medium = b"Subject: medium\r\n\r\n" + b"kumquat\r\n" + (b"m" * 76 + b"\r\n") * 1000
    assert LOG_MIN < len(medium) <= INLINE_MAX  # appended to the log, not shipped
    async with running(tmp_path, workers=1) as hato:
        await hato.store.set_quota("alice@example.test", None)
        assert await hato.send("alice@example.test", medium) == {}
        assert [p.suffix for p in tmp.iterdir()] == [".log"]  # the worker's open log
        bodies = await hato.inbox("alice@example.test")  # read from the log meanwhile
        assert len(bodies) == 1 and bodies[0].endswith(medium)
        account = await hato.store.get_account("alice@example.test")
        inbox = await hato.store.get_mailbox(account.id, "INBOX")
        hits = await hato.store.search_text(inbox.id, "kumquat", scope=TextScope.BODY)
        assert hits is not None and len(hits.uids) == 1 and not hits.unindexed
        await asyncio.to_thread(hato.store.blobs.flush)  # the janitor writes its file
        message = (await hato.store.list_messages(inbox.id))[0]
        assert hato.store.blobs.read(message.blob_id) == bodies[0]
    assert list(tmp.iterdir()) == []  # the worker stopped: its log closed and deleted


@sync
async def test_full_body_logs_are_closed_and_deleted_once_their_bodies_have_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's log beyond its size limit is closed (the worker tells the main process
    after that log's last body); the main process deletes it once the janitor has written
    the files of its bodies. Only the log in use stays."""
    from hato.store import remote

    monkeypatch.setattr(remote, "LOG_SEGMENT", 150_000)  # told to the worker at start
    tmp = tmp_path / "data" / "tmp"
    bodies = [
        f"Subject: {i}\r\n\r\n".encode() + (f"{i:02d}".encode() * 38 + b"\r\n") * 700
        for i in range(7)
    ]
    assert all(LOG_MIN < len(b) < 150_000 for b in bodies)
    async with running(tmp_path, workers=1) as hato:
        await hato.store.set_quota("alice@example.test", None)
        seen: set[Path] = set()
        for body in bodies:
            assert await hato.send("alice@example.test", body) == {}
            seen.update(tmp.glob("*.log"))
        assert len(seen) == 3  # ~55 KB each: a new log with the fourth and the seventh body
        await asyncio.to_thread(hato.store.blobs.flush)  # the janitor writes every file
        logs = list(tmp.glob("*.log"))
        assert len(logs) == 1, logs  # only the one the worker still appends to
        stored = await hato.inbox("alice@example.test")
        assert [s[s.index(b"Subject: ") :] for s in stored] == bodies
    assert list(tmp.iterdir()) == []


@sync
async def test_a_verified_body_rewritten_in_a_thread_goes_to_the_body_log(
    tmp_path: Path,
) -> None:
    """With inbound verification (the default) the worker writes the final body again, in
    a thread, with its Authentication-Results field: a medium one goes to its body log."""
    zone = {
        "remote.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "1.0.0.127.in-addr.arpa": {"PTR": ["localhost"]},
        "localhost": {"A": ["127.0.0.1"]},
    }
    medium = b"Subject: checked\r\n\r\n" + (b"v" * 76 + b"\r\n") * 1000
    with DnsServer(zone) as dns:
        sections = {
            "inbound": {"verify": True},
            "dns": {"nameservers": [dns.host], "port": dns.port, "timeout": 2.0},
        }
        async with running(tmp_path, sections, workers=1) as hato:
            await hato.store.set_quota("alice@example.test", None)
            assert await hato.send("alice@example.test", medium) == {}
            tmp = tmp_path / "data" / "tmp"
            assert [p.suffix for p in tmp.iterdir()] == [".log"]
            (stored,) = await hato.inbox("alice@example.test")
    assert stored.endswith(medium)
    assert b"Authentication-Results: mx.example.test;" in stored
    assert b"spf=pass" in stored


@sync
async def test_quota_error_from_the_main_process_becomes_452(tmp_path: Path) -> None:
    async with running(tmp_path) as hato:
        body = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 3000  # over 200,000 octets
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await hato.send("alice@example.test", body)
        assert refused.value.smtp_code == 452  # RFC 3463 X.2.2, temporary by default
        assert await hato.inbox("alice@example.test") == []


@sync
async def test_limits_are_counted_over_all_workers(tmp_path: Path) -> None:
    async with running(tmp_path, max_connections_per_ip=3) as hato:
        clients = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", hato.port))
            clients.append(sock)
            assert (await asyncio.to_thread(sock.recv, 512)).startswith(b"220 ")
        extra = socket.create_connection(("127.0.0.1", hato.port))
        assert (await asyncio.to_thread(extra.recv, 512)).startswith(b"421 4.7.0")
        extra.close()
        clients.pop().close()
        for _ in range(50):  # the worker reports the end of that connection
            await asyncio.sleep(0.05)
            again = socket.create_connection(("127.0.0.1", hato.port))
            reply = await asyncio.to_thread(again.recv, 512)
            again.close()
            if reply.startswith(b"220 "):
                break
        else:
            pytest.fail("the closed connection was never released")
        for sock in clients:
            sock.close()


@sync
async def test_a_killed_worker_is_replaced_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as hato:
        await hato.store.set_quota("alice@example.test", None)
        for i in range(4):
            assert (
                await hato.send("alice@example.test", f"Subject: {i}\r\n\r\n.\r\n".encode()) == {}
            )
        victim = hato.pool.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(200):
            await asyncio.sleep(0.05)
            pids = hato.pool.worker_pids
            if len(pids) == 2 and victim not in pids:
                break
        else:
            pytest.fail("the killed worker was not replaced")
        for i in range(4, 8):
            assert (
                await hato.send("alice@example.test", f"Subject: {i}\r\n\r\n.\r\n".encode()) == {}
            )
        assert len(await hato.inbox("alice@example.test")) == 8


@sync
async def test_stop_ends_the_workers(tmp_path: Path) -> None:
    async with running(tmp_path) as hato:
        pids = hato.pool.worker_pids
        port = hato.port
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


@sync
async def test_no_worker_running_means_421_not_a_silent_close(tmp_path: Path) -> None:
    async with running(tmp_path, workers=1) as hato:
        (victim,) = hato.pool.worker_pids
        os.kill(victim, signal.SIGKILL)
        for _ in range(100):  # the main process sees the channel close
            await asyncio.sleep(0.01)
            if not hato.pool.worker_pids:
                break
        else:
            pytest.fail("the dead worker was not noticed")
        sock = socket.create_connection(("127.0.0.1", hato.port))
        reply = await asyncio.to_thread(sock.recv, 512)
        sock.close()
        assert reply.startswith(b"421 4.3.2 ")  # RFC 5321 §3.8, RFC 3463 X.3.2
        for _ in range(200):  # then the replacement serves
            await asyncio.sleep(0.05)
            if hato.pool.worker_pids:
                break
        assert await hato.send("alice@example.test", b"Subject: back\r\n\r\nok\r\n") == {}


@sync
async def test_workers_log_bodies_themselves_while_the_journal_budget_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hato.servers import smtp_workers
    from hato.store.sqlite import blobs, refs

    # a small budget for bodies waiting in memory: it runs short after a few messages (these
    # bodies are journalled and wait for their files, not stored in the database for good)
    monkeypatch.setattr(blobs, "INLINE_BUDGET", 40_000)
    monkeypatch.setattr(blobs, "STORED_MAX", 100)
    monkeypatch.setattr(refs, "STORED_MAX", 100)
    monkeypatch.setattr(smtp_workers, "_PRESSURE_MARGIN", 20_000)
    caplog.set_level("INFO", logger="hato")
    installed: list[str] = []  # how each shipped body arrived: "body", "file" or "log"
    real_install = blobs.FileBlobStore.install
    real_install_logged = blobs.FileBlobStore.install_logged

    def install(self: Any, blob_id: str, size: int, **kwargs: Any) -> Any:
        installed.append("file" if kwargs.get("temp") else "body")
        return real_install(self, blob_id, size, **kwargs)

    def install_logged(self: Any, blob_id: str, size: int, **kwargs: Any) -> Any:
        installed.append("log")
        return real_install_logged(self, blob_id, size, **kwargs)

    monkeypatch.setattr(blobs.FileBlobStore, "install", install)
    monkeypatch.setattr(blobs.FileBlobStore, "install_logged", install_logged)
    async with running(tmp_path, workers=1) as hato:
        await hato.store.set_quota("alice@example.test", None)
        sent = []
        for i in range(8):
            body = f"Subject: {i}\r\n\r\n".encode() + (b"z" * 70 + b"\r\n") * 100
            sent.append(body)
            assert await hato.send("alice@example.test", body) == {}
        stored = await hato.inbox("alice@example.test")
        assert [s[s.index(b"Subject: ") :] for s in stored] == sent  # intact, whichever way
        events = [r.getMessage() for r in caplog.records if "body_pressure" in r.getMessage()]
        assert events and events[0].endswith("pressed=True")
        assert installed[0] == "body" and "log" in installed  # the worker logged them
        hato.store.blobs.flush()  # the janitor writes the journalled bodies' files
        assert await hato.send("alice@example.test", sent[0]) == {}
        events = [r.getMessage() for r in caplog.records if "body_pressure" in r.getMessage()]
        assert events[-1].endswith("pressed=False")  # shipped for the journal again
