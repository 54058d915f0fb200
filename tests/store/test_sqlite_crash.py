"""SQLite backend: crash safety of blob writes and deliveries under SIGKILL.

A child process (crash_child.py) writes blobs and delivers them from several concurrent
writers; it is killed with SIGKILL at random moments, several rounds on one data directory.
After each round the store is reopened and must hold every message the child reported as
committed (with the right SHA-256), no temp file, and no blob that no message refers to.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from storekit import db_rows

from hato.store.sqlite import open_store

CHILD = Path(__file__).with_name("crash_child.py")
SRC = Path(__file__).resolve().parents[2] / "src"
ROUNDS = 8


def _run_child(data: Path, seed: int, kill_after: float) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == b"ready\n", (first, proc.stderr.read() if proc.stderr else b"")
        time.sleep(kill_after)
        assert proc.poll() is None, "the child died by itself"
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    text = out.decode()
    # A line cut by the kill was never reported: only complete lines count.
    return text.split("\n")[:-1]


async def _verify(
    data: Path, alive: dict[tuple[int, int], str], gone: set[tuple[int, int]]
) -> None:
    store = await open_store(data)
    try:
        assert sorted(os.listdir(data / "tmp")) == []  # no temp file or marker left
        referenced: set[str] = set()
        acc = await store.get_account("crash@example.test")
        assert acc is not None
        for box in await store.list_mailboxes(acc.id):
            referenced |= {m.blob_id for m in await store.list_messages(box.id)}
        for (mailbox_id, uid), digest in alive.items():
            (msg,) = await store.get_messages(mailbox_id, [uid])
            assert msg.blob_id == digest
            assert hashlib.sha256(store.blobs.read(msg.blob_id)).hexdigest() == digest
        for mailbox_id, uid in gone:  # an expunge that returned is durable too
            assert await store.get_messages(mailbox_id, [uid]) == []
        on_disk = {p.name for p in (data / "blobs").rglob("*") if p.is_file()}
        # small bodies are stored in the database (refs.STORED_MAX), never as files
        stored = {str(r[0]) for r in db_rows(data, "SELECT blob_id FROM blob_bodies")}
        assert not on_disk & stored
        assert on_disk | stored == referenced  # no unreferenced blob, no missing one
    finally:
        await store.close()


def test_sigkill_during_blob_writes_and_deliveries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(20240607)
    alive: dict[tuple[int, int], str] = {}
    gone: set[tuple[int, int]] = set()
    reported = 0
    for seed in range(ROUNDS):
        lines = _run_child(data, seed, kill_after=rng.uniform(0.05, 0.5))
        for line in lines:
            kind, mailbox_id, uid, *rest = line.split()
            key = (int(mailbox_id), int(uid))
            if kind == "ok":
                alive[key] = rest[0]
                reported += 1
            elif kind == "drop":
                del alive[key]  # in flight at the kill: either outcome is correct
            else:
                gone.add(key)
        asyncio.run(_verify(data, alive, gone))
    assert reported > ROUNDS  # the child did real work before being killed
