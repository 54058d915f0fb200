"""Benchmark: outbound throughput, Hato's queue runner vs Debian Postfix, to Postfix's smtp-sink.

Both relay the same load (N messages of 2 KB, one recipient each) to one ``smtp-sink`` on
127.0.0.3, in the same run. Each starts with its whole load already queued and durable, so
only the sending side is timed:

* Hato: N queue entries are stored (``MailStore.enqueue``), the blob janitor is flushed and
  one write absorbs its journal cleanup; then a ``QueueRunner`` (transport override to the
  sink, 10 connections to the destination) is started; the clock stops when every entry is
  DELIVERED (committed).
* Postfix: a private instance (``tests/smtp/postfixkit.py``) receives the N messages with
  ``smtp-source`` while ``header_checks`` puts them on hold; then ``postsuper -H ALL`` and
  ``postqueue -f`` release them and the clock stops when the log holds N ``status=sent``
  (relayhost = the sink, destination concurrency 10, connection cache on).

Beside msg/s it prints the CPU time per message spent while sending: every thread of this
process for Hato, Postfix's master with its daemons and reaped children for Postfix (Linux
``/proc``). ``--hato-only`` runs Hato alone and prints its CPU by thread; ``--profile FILE``
does that under cProfile (the event loop thread, ``time.thread_time``).

Usage (as root, from the project root):
    PYTHONPATH=src python3 bench/smtp_send.py [--messages 1000] [--hato-only] [--profile F]
Prints a Markdown table row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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


async def hato_run(
    data_dir: Path,
    port: int,
    messages: int,
    *,
    profiler: cProfile.Profile | None = None,
    cpu: dict[str, float] | None = None,
) -> float:
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
        # Like Postfix's queue files, the bodies are durable at their address before the
        # clock starts: the blob janitor's fsyncs of the load do not count as sending.
        await asyncio.to_thread(store.blobs.flush)
        await store.purge_queue(before=0)  # a write: its prologue drops the journal rows
        await asyncio.sleep(0.5)
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
        cpu_started = thread_cpu()
        if profiler is not None:
            profiler.enable()
        await runner.start()
        final = tuple(s.value for s in QueueState if s.final)

        def live(unit: Unit) -> int:
            # A COUNT, not list_queue: the probe must not load the store it measures.
            sql = "SELECT count(*) FROM queue WHERE state NOT IN (?, ?)"
            return int(unit.conn.execute(sql, final).fetchone()[0])

        deadline = time.monotonic() + 600
        while await store._read(live):
            if time.monotonic() > deadline:
                raise RuntimeError("hato did not send every message")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        if profiler is not None:
            profiler.disable()
        if cpu is not None:
            cpu.update(cpu_by_thread(cpu_started, thread_cpu()))
        await runner.stop(timeout=5)
        delivered = await store.list_queue([QueueState.DELIVERED])
        if len(delivered) != messages:
            raise RuntimeError(f"hato delivered {len(delivered)} of {messages}")
        return elapsed
    finally:
        await store.close()


def postfix_run(base: Path, port: int, messages: int, cpu: list[float] | None = None) -> float:
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
        master = int((base / "queue" / "pid" / "master.pid").read_text().split()[0])
        started = time.monotonic()
        cpu_started = tree_cpu(master)
        subprocess.run([POSTSUPER, "-c", config, "-H", "ALL"], check=True, capture_output=True)
        subprocess.run([POSTQUEUE, "-c", config, "-f"], check=True, capture_output=True)
        deadline = time.monotonic() + 600
        while postfix.read_log().count("status=sent") < messages:
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not send every message")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        if cpu is not None:
            cpu.append(tree_cpu(master) - cpu_started)
        return elapsed
    finally:
        postfix.stop()


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process ``root`` and its descendants, plus those of
    the children it reaped (Linux ``/proc``): Postfix's master and its daemons."""
    tick = os.sysconf("SC_CLK_TCK")
    fields: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        fields[int(proc.name)] = stat
        children.setdefault(int(stat[1]), []).append(int(proc.name))  # ppid
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stat = fields.get(pid)
        if stat is None:
            continue
        total += int(stat[11]) + int(stat[12])  # utime, stime
        if pid == root:
            total += int(stat[13]) + int(stat[14])  # cutime, cstime: reaped children
        stack.extend(children.get(pid, ()))
    return total / tick


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by thread id (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


def cpu_by_thread(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU spent between two ``thread_cpu`` snapshots, by thread name (worker threads of the
    default executor added up under one name)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    spent: dict[str, float] = {}
    for tid, seconds in after.items():
        name = names.get(tid, "exited thread")
        if name.startswith("asyncio_"):
            name = "to_thread workers"
        elif name.startswith("hato-db"):
            name = name.partition(":")[0]
        spent[name] = spent.get(name, 0.0) + seconds - before.get(tid, 0.0)
    return spent


def hato_only(data_dir: Path, port: int, messages: int, profile: Path | None) -> None:
    """Hato's run alone: msg/s and the process CPU time per message (every thread: the event
    loop, the database thread, blob reads); with ``profile``, under cProfile counting the
    event loop thread's CPU time (``time.thread_time``), stats written to ``profile``."""
    import pstats

    profiler = cProfile.Profile(time.thread_time) if profile is not None else None
    cpu: dict[str, float] = {}
    elapsed = asyncio.run(hato_run(data_dir, port, messages, profiler=profiler, cpu=cpu))
    total = sum(cpu.values())
    print(f"hato: {messages / elapsed:.1f} msg/s; process CPU {1000 * total / messages:.3f} ms/msg")
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        if seconds > 0:
            print(f"  {name}: {1000 * seconds / messages:.3f} ms/msg")
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        loop_cpu = pstats.Stats(str(profile)).total_tt  # type: ignore[attr-defined]
        print(f"event loop thread CPU (profiled): {1000 * loop_cpu / messages:.3f} ms/msg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--hato-only", action="store_true", help="Hato alone, with its CPU/msg")
    parser.add_argument(
        "--profile", metavar="FILE", help="Hato alone under cProfile; stats written to FILE"
    )
    args = parser.parse_args()
    port = free_port(SINK_HOST)
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="hato-bench-send-") as tmp:
            if args.hato_only or args.profile:
                profile = Path(args.profile) if args.profile else None
                hato_only(Path(tmp) / "hato", port, args.messages, profile)
                return
            hato_cpu: dict[str, float] = {}
            postfix_cpu: list[float] = []
            hato = asyncio.run(hato_run(Path(tmp) / "hato", port, args.messages, cpu=hato_cpu))
            postfix = postfix_run(Path(tmp) / "postfix", port, args.messages, postfix_cpu)
    finally:
        sink.terminate()
        sink.wait(10)
    n = args.messages
    hato_ms = 1000 * sum(hato_cpu.values()) / n
    postfix_ms = 1000 * postfix_cpu[0] / n
    print(
        "| messages | Hato msg/s | Postfix msg/s | Hato / Postfix "
        "| Hato CPU ms/msg | Postfix CPU ms/msg |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {n} | {n / hato:.1f} | {n / postfix:.1f} | {postfix / hato:.2f} "
        f"| {hato_ms:.2f} | {postfix_ms:.2f} |"
    )


if __name__ == "__main__":
    main()
