"""Benchmark: outbound throughput, Hato's queue runner vs Debian Postfix, to Postfix's smtp-sink.

Both relay the same load (N messages of 2 KB, one recipient each) to one ``smtp-sink`` on
127.0.0.3, in the same run. Each starts with its whole load already queued, so only the
sending side is timed:

* Hato: N queue entries are stored (``MailStore.enqueue``), then a ``QueueRunner`` (transport
  override to the sink, 10 connections to the destination, connection reuse) is started; the
  clock stops when every entry is DELIVERED (state change committed per message).
* Postfix: a private instance (``tests/smtp/postfixkit.py``) receives the N messages with
  ``smtp-source`` while ``header_checks`` puts them on hold; then ``postsuper -H ALL`` and
  ``postqueue -f`` release them and the clock stops when the log holds N ``status=sent``
  (relayhost = the sink, destination concurrency 10, connection cache on).

Usage (as root, from the project root):
    PYTHONPATH=src python3 bench/smtp_send.py [--messages 1000]
Prints a Markdown table row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "smtp"))  # postfixkit: the private Postfix helper

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
POSTSUPER = shutil.which("postsuper") or "/usr/sbin/postsuper"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
SINK_HOST = "127.0.0.3"
CONCURRENCY = 10
BODY = ("Subject: bench\r\n\r\n" + "x" * 78 + "\r\n") * 25


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [SMTP_SINK, "-u", "nobody", f"{SINK_HOST}:{port}", "512"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((SINK_HOST, port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("smtp-sink did not start")


async def hato_run(data_dir: Path, port: int, messages: int) -> float:
    from hato.core.dns import StaticResolver
    from hato.outbound.queue import OutboundSettings, QueueRunner
    from hato.outbound.routing import Relay
    from hato.store.queue import NewQueueEntry, QueueRecipient, QueueState
    from hato.store.sqlite import open_store
    from hato.store.sqlite.db import Unit

    store = await open_store(data_dir)
    try:
        entries = []
        for n in range(messages):
            writer = store.blobs.writer()
            writer.write(f"Message-ID: <{n}@bench.test>\r\n{BODY}".encode())
            blob = await asyncio.to_thread(writer.commit)
            entries.append(
                NewQueueEntry(
                    blob=blob,
                    sender="bench@example.test",
                    recipients=(QueueRecipient(f"user{n}@sink.test"),),
                    expires=time.time() + 86400,
                )
            )
        for start in range(0, len(entries), 500):
            await store.enqueue(entries[start : start + 500])
        settings = OutboundSettings(
            hostname="out.example.test",
            transports={"sink.test": Relay(SINK_HOST, port)},
            per_destination=CONCURRENCY,
            batch=1000,
            mta_sts=False,
            poll_interval=0.05,
        )
        runner = QueueRunner(settings, store=store, resolver=StaticResolver())
        started = time.monotonic()
        await runner.start()
        final = tuple(s.value for s in QueueState if s.final)

        def live(unit: Unit) -> int:
            # A COUNT, not list_queue: the probe must not load the store it measures.
            sql = "SELECT count(*) FROM queue WHERE state NOT IN (?, ?)"
            return int(unit.conn.execute(sql, final).fetchone()[0])

        while await store._read(live):
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        await runner.stop(timeout=5)
        delivered = await store.list_queue([QueueState.DELIVERED])
        if len(delivered) != messages:
            raise RuntimeError(f"hato delivered {len(delivered)} of {messages}")
        return elapsed
    finally:
        await store.close()


def postfix_run(base: Path, port: int, messages: int) -> float:
    from postfixkit import PostfixInstance

    postfix = PostfixInstance(
        base,
        settings={
            "relayhost": f"[{SINK_HOST}]:{port}",
            "smtp_tls_security_level": "none",
            "header_checks": "static:HOLD",
            "default_destination_concurrency_limit": str(CONCURRENCY),
            "smtp_connection_cache_on_demand": "yes",
            "queue_run_delay": "1s",
        },
    )
    postfix.start()
    try:
        subprocess.run(
            [
                SMTP_SOURCE,
                "-s",
                "10",
                "-m",
                str(messages),
                "-l",
                str(len(BODY)),
                "-f",
                "bench@example.test",
                "-t",
                "user@sink.test",
                f"127.0.0.1:{postfix.port}",
            ],
            check=True,
            timeout=600,
        )
        config = str(postfix.config)
        deadline = time.monotonic() + 120
        while postfix.read_log().count(": hold: header") < messages:
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not hold every message")
            time.sleep(0.1)
        started = time.monotonic()
        subprocess.run([POSTSUPER, "-c", config, "-H", "ALL"], check=True, capture_output=True)
        subprocess.run([POSTQUEUE, "-c", config, "-f"], check=True, capture_output=True)
        deadline = time.monotonic() + 600
        while postfix.read_log().count("status=sent") < messages:
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not send every message")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        postfix.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    port = free_port(SINK_HOST)
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="hato-bench-send-") as tmp:
            hato = asyncio.run(hato_run(Path(tmp) / "hato", port, args.messages))
            postfix = postfix_run(Path(tmp) / "postfix", port, args.messages)
    finally:
        sink.terminate()
        sink.wait(10)
    n = args.messages
    print("| messages | Hato msg/s | Postfix msg/s | Hato / Postfix |")
    print("|---|---|---|---|")
    print(f"| {n} | {n / hato:.1f} | {n / postfix:.1f} | {postfix / hato:.2f} |")


if __name__ == "__main__":
    main()
