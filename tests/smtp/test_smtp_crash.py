"""Durability: SIGKILL the server at random moments while 10 clients send; every message that
got "250" must be in its mailboxes afterwards, complete, and no temporary file may remain."""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import smtplib
import threading
import time
from pathlib import Path

from smtpkit import HOST, seed_store, start_server_process

from hato.store.sqlite import open_store

ROUNDS = 20
CLIENTS = 10
RECIPIENTS = ["alice@example.test", "bob@example.test"]
FILLER = (b"0123456789abcdef" * 4 + b"\r\n") * 30


def body(token: str) -> bytes:
    return (
        f"Message-ID: <{token}@crash.test>\r\nSubject: crash\r\n\r\n".encode()
        + FILLER
        + f"END {token}\r\n".encode()
    )


async def stored(data_dir: Path) -> dict[str, list[bytes]]:
    store = await open_store(data_dir)  # starting up sweeps what a crash left behind
    try:
        out: dict[str, list[bytes]] = {}
        for user in RECIPIENTS:
            account = await store.get_account(user)
            inbox = await store.get_mailbox(account.id, "INBOX")
            assert inbox is not None
            messages = await store.list_messages(inbox.id)
            blobs = []
            for message in messages:
                data = store.blobs.read(message.blob_id)
                assert hashlib.sha256(data).hexdigest() == message.blob_id
                blobs.append(data)
            out[user] = blobs
        return out
    finally:
        await store.close()


def sender(port: int, ident: str, acked: list[str], stop: threading.Event) -> None:
    n = 0
    try:
        with smtplib.SMTP(HOST, port, timeout=5) as client:
            client.ehlo("crash.test")
            while not stop.is_set():
                token = f"{ident}.{n}"
                n += 1
                client.sendmail("x@remote.test", RECIPIENTS, body(token))
                acked.append(token)  # only after the 250 to the end of data
    except (smtplib.SMTPException, OSError):
        pass


def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(seed_store(data_dir, RECIPIENTS))
    rng = random.Random(8314)
    acked: list[str] = []
    for round_no in range(ROUNDS):
        proc, port = start_server_process(data_dir)
        stop = threading.Event()
        threads = [
            threading.Thread(target=sender, args=(port, f"r{round_no}c{i}", acked, stop))
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(acked) > ROUNDS, len(acked)  # the test really sent mail
    print(f"acknowledged: {len(acked)}")
    found = asyncio.run(stored(data_dir))
    for user in RECIPIENTS:
        tokens = []
        for data in found[user]:
            head, _, rest = data.partition(b"\r\nMessage-ID: <")
            assert head.startswith(b"Return-Path: <x@remote.test>\r\nReceived: from crash.test")
            token = rest.split(b"@", 1)[0].decode()
            assert data.endswith(body(token)), "a stored message is incomplete"
            tokens.append(token)
        assert set(acked) <= set(tokens), "an acknowledged message was lost"
        assert len(tokens) == len(set(tokens))
    assert [p.name for p in (data_dir / "tmp").iterdir() if p.name.endswith(".tmp")] == []
