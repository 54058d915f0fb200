"""Durability: SIGKILL the server at random moments while 10 clients send; every message that
got "250" must be in its mailboxes afterwards, complete, and no temporary file may remain."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from pathlib import Path

from smtpkit import seed_store, start_senders, start_server_process, stored_inboxes

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


def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(seed_store(data_dir, RECIPIENTS))
    rng = random.Random(8314)
    acked: list[str] = []
    for round_no in range(ROUNDS):
        proc, port = start_server_process(data_dir)
        stop = threading.Event()
        threads = start_senders(
            port, f"r{round_no}", acked, stop, clients=CLIENTS, body=body, recipients=RECIPIENTS
        )
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
    found = asyncio.run(stored_inboxes(data_dir, RECIPIENTS))
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
