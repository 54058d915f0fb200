"""Streaming: receiving a 50 MB message must not raise the server's memory by more than
~10 MB (the body goes to the blob writer as it arrives, never held whole)."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

from smtpkit import HOST, proc_status_kib, seed_store, start_server_process

MEGABYTES = 50


def test_fifty_megabytes_stream_without_growing_memory(tmp_path: Path) -> None:
    asyncio.run(seed_store(tmp_path / "data", ["alice@example.test"]))
    proc, port = start_server_process(tmp_path / "data")
    line = b"m" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (MEGABYTES * 1_000_000 // len(line))
    try:
        with smtplib.SMTP(HOST, port, timeout=120) as client:
            client.sendmail("x@remote.test", ["alice@example.test"], b"Subject: warm\r\n\r\nup\r\n")
            before = proc_status_kib(proc.pid, "VmHWM")  # peak resident set so far
            assert client.sendmail("x@remote.test", ["alice@example.test"], body) == {}
            growth = proc_status_kib(proc.pid, "VmHWM") - before
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert growth < 10 * 1024, f"peak RSS grew by {growth} KiB"
    blobs = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in blobs) > len(body)  # stored whole, trace fields added
