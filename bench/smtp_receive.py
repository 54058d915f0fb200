"""Benchmark: SMTP receive throughput of Hato vs Debian Postfix (Maildir), plus peak memory.

Drives both servers with Postfix's ``smtp-source`` (10 sessions, messages of 1 KB and 100 KB,
several messages per session) in the same run, and reports messages per second accepted *and
stored*: for Hato "250" already means durable (journalled in the committed WAL, or fsynced);
for Postfix the clock stops when the last message is in the Maildir (local delivery via
``virtual_mailbox_domains``). Also reports Hato's CPU per message (user + system, all
threads, from /proc) and what runs behind delivery: how long (and how much CPU) its
full-text indexer and its blob janitor (bodies from the database journal into files) took
to catch up after the run. Then measures Hato's peak RSS growth while it receives one 50 MB
message.

Usage (as root, from the project root):
    PYTHONPATH=src python3 bench/smtp_receive.py [--small 4000] [--large 1500] [--rounds 5]
    PYTHONPATH=src python3 bench/smtp_receive.py --hato-only [--size 1024] [--profile FILE]
Prints a Markdown table for docs/benchmarks.md. ``--hato-only`` runs Hato alone (``--small``
messages of ``--size`` octets) and prints its CPU per message by thread; ``--profile FILE``
does that with the server's event loop thread under cProfile (``time.thread_time``) and
writes the stats to FILE. ``--serve DIR`` is the internal server mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pwd
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "smtp"))  # postfixkit: the private Postfix helper

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SESSIONS = 10
DOMAIN = "example.test"
RCPT = f"alice@{DOMAIN}"


# -- Hato, in its own process ---------------------------------------------------------------
def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of every thread of this process, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        name = names.get(int(task.name), "other")
        name = "to_thread workers" if name.startswith("asyncio_") else name.partition(":")[0]
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return found


def _measure(data_dir: Path, profile: Path | None, store: Any) -> None:
    """SIGUSR1 starts a measurement (and the profiler), SIGUSR2 ends it: CPU by thread and
    the store's commits and write units written to ``cpu.json`` in ``data_dir``, the stats
    to ``profile``."""
    profiler = cProfile.Profile(time.thread_time) if profile is not None else None
    start: dict[str, float] = {}

    def begin() -> None:
        start.clear()
        start.update(_thread_cpu())
        start["commits"], start["units"] = store.stats.commits, store.stats.write_units
        if profiler is not None:
            profiler.enable()

    def end() -> None:
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        spent = {k: v - start.get(k, 0.0) for k, v in _thread_cpu().items()}
        commits = store.stats.commits - start["commits"]
        units = store.stats.write_units - start["units"]
        (data_dir / "cpu.json").write_text(json.dumps({"cpu": spent, "commits": [commits, units]}))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, begin)
    loop.add_signal_handler(signal.SIGUSR2, end)


def _config(data_dir: Path, workers: int) -> Any:
    """The production configuration of an MX on a loopback port: ``hato serve`` with no
    other listener, inbound verification off (Postfix checks no SPF/DKIM/DMARC here either),
    no per-connection message limit (smtp-source sends every message of a session over one
    connection) and ``workers`` SMTP worker processes."""
    from hato.app.config import parse_config
    from hato.ops.tls import make_self_signed

    # a certificate, as on a real MX: STARTTLS is offered (smtp-source does not use it)
    cert, key = data_dir / "cert.pem", data_dir / "key.pem"
    if not cert.exists():
        make_self_signed(cert, key, hostnames=["mx.example.test"], loopback=True)
    none: dict[str, list[str]] = {"listeners": [], "tls_listeners": []}
    return parse_config(
        {
            "server": {"hostname": "mx.example.test", "data_dir": str(data_dir)},
            "tls": {"cert": str(cert), "key": str(key)},
            "smtp": {
                "mx_listeners": ["127.0.0.1:0"],
                "submission_listeners": [],
                "submissions_listeners": [],
                "max_connections_per_ip": 100,
                "max_messages_per_connection": 100_000,
                "workers": workers,
            },
            "inbound": {"verify": False},
            "imap": none,
            "pop3": none,
            "managesieve": {"listeners": []},
            "http": none,
        },
        base_dir=data_dir,
    )


async def _serve(data_dir: Path, workers: int, profile: Path | None = None) -> None:
    from hato.app.wiring import build_services
    from hato.core import log
    from hato.servers.smtp import SmtpService
    from hato.servers.smtp_workers import SmtpWorkerPool
    from hato.store.sqlite import open_store

    # Events at INFO to standard error, as ``hato serve`` logs them (the parent points it at
    # a file: Postfix logs to its maillog file too); the workers inherit it.
    log.configure("info")
    store = await open_store(data_dir)
    services = build_services(_config(data_dir, workers), store)
    for service in services:
        await service.start()
    _measure(data_dir, profile, store)
    for service in services:
        if isinstance(service, SmtpWorkerPool):
            port = service.port(0)
            (data_dir / "workers.json").write_text(json.dumps(service.worker_pids))
        elif isinstance(service, SmtpService):
            port = service.addresses[0][2]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for service in reversed(services):
        await service.stop(timeout=5)
    await store.close()


async def _seed(data_dir: Path) -> None:
    """Domain and account, made here so the server process never runs argon2 (64 MiB)."""
    from hato.policy.authn import make_credentials
    from hato.store.sqlite import open_store

    store = await open_store(data_dir)
    try:
        await store.add_domain(DOMAIN)
        await store.add_account(RCPT, make_credentials("bench"))
    finally:
        await store.close()


class Hato:
    def __init__(self, data_dir: Path, profile: Path | None = None, *, workers: int) -> None:
        asyncio.run(_seed(data_dir))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        extra = ["--profile", str(profile)] if profile is not None else []
        self.data_dir = data_dir
        self._log = (data_dir / "hato.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(data_dir), "--workers", str(workers), *extra],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"hato did not start: {line!r}")
        self.port = int(line.split()[1])

    def pids(self) -> list[int]:
        """The server process and its SMTP workers."""
        listed = self.data_dir / "workers.json"
        workers = json.loads(listed.read_text()) if listed.exists() else []
        return [self.proc.pid, *workers]

    def cpu_seconds(self) -> float:
        """CPU time of the server and its workers so far (user + system, every thread)."""
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def status(self, field: str) -> int:
        """A /proc/PID/status field in KiB (VmRSS, VmHWM), summed over the server and its
        workers."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def smtp_source(port: int, *, count: int, size: int) -> float:
    """Seconds for ``count`` messages of ``size`` octets over SESSIONS sessions."""
    started = time.perf_counter()
    subprocess.run(
        [SMTP_SOURCE, "-d", "-s", str(SESSIONS), "-m", str(count), "-l", str(size),
         "-f", "bench@source.test", "-t", RCPT, "-M", "source.test", f"127.0.0.1:{port}"],
        check=True,
        timeout=900,
    )  # fmt: skip
    return time.perf_counter() - started


@dataclass(frozen=True)
class HatoRun:
    rate: float  # messages per second accepted and stored
    cpu_ms: float  # server CPU per message while receiving
    behind_s: float  # seconds until the work behind delivery was done after the run
    behind_cpu_ms: float  # server CPU per message meanwhile


def _work_behind(data: Path) -> int:
    """Work left behind delivery: full-text documents waiting for the background indexer
    (textindex.py) and journalled bodies (in the database or, by reference, in a worker's
    body log) whose file the blob janitor (janitor.py) has not written to its address yet
    (the journal row itself goes with a later transaction)."""
    db = data / "hato.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (pending,) = conn.execute("SELECT count(*) FROM fulltext_docs WHERE state = 1").fetchone()
        journal = [str(r[0]) for r in conn.execute("SELECT blob_id FROM blob_journal")]
        journal += [str(r[0]) for r in conn.execute("SELECT blob_id FROM blob_log")]
    blobs = data / "blobs"
    return int(pending) + sum(not (blobs / b[:2] / b[2:4] / b).exists() for b in journal)


def hato_run(work: Path, *, count: int, size: int, workers: int, tag: str = "") -> HatoRun:
    data = work / f"hato-{size}{tag}"
    server = Hato(data, workers=workers)
    try:
        smtp_source(server.port, count=10, size=size)  # warm up (imports, first fsyncs)
        cpu = server.cpu_seconds()
        seconds = smtp_source(server.port, count=count, size=size)
        received = server.cpu_seconds()
        # Text indexing and the bodies' files come behind delivery: how long and how much
        # CPU until they caught up.
        started = time.perf_counter()
        deadline = time.monotonic() + 900
        while _work_behind(data) and time.monotonic() < deadline:
            time.sleep(0.05)
        behind_s = time.perf_counter() - started
        done = server.cpu_seconds()
        return HatoRun(
            rate=count / seconds,
            cpu_ms=(received - cpu) * 1000 / count,
            behind_s=behind_s,
            behind_cpu_ms=(done - received) * 1000 / count,
        )
    finally:
        server.stop()


def hato_only(work: Path, *, count: int, size: int, profile: Path | None, workers: int) -> None:
    """Hato alone: msg/s and its CPU per message by thread (the event loop under cProfile
    with ``profile``)."""
    data = work / f"hato-{size}"
    server = Hato(data, profile, workers=workers)
    try:
        smtp_source(server.port, count=10, size=size)  # warm up (imports, first fsyncs)
        server.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        every = server.cpu_seconds()
        seconds = smtp_source(server.port, count=count, size=size)
        server.proc.send_signal(signal.SIGUSR2)
        every = server.cpu_seconds() - every
        report = data / "cpu.json"
        deadline = time.monotonic() + 60
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        measured = json.loads(report.read_text())
        spent: dict[str, float] = measured["cpu"]
        commits, units = measured["commits"]
    finally:
        server.stop()
    total = sum(spent.values())
    print(
        f"hato: {count / seconds:.1f} msg/s; CPU {1000 * every / count:.3f} ms/msg, "
        f"of which the main process {1000 * total / count:.3f} ms/msg; "
        f"{units / max(commits, 1):.1f} write units per commit"
    )
    for name, value in sorted(spent.items(), key=lambda kv: -kv[1]):
        if value > 0:
            print(f"  {name}: {1000 * value / count:.3f} ms/msg")
    if profile is not None:
        import pstats

        loop_cpu = pstats.Stats(str(profile)).total_tt  # type: ignore[attr-defined]
        print(f"event loop thread CPU (profiled): {1000 * loop_cpu / count:.3f} ms/msg")


# -- Postfix delivering to Maildir --------------------------------------------------------------
def postfix_run(work: Path, *, count: int, size: int, tag: str = "") -> float:
    from postfixkit import PostfixInstance

    user = pwd.getpwnam("postfix")
    base = work / f"postfix-{size}{tag}"
    mail = base / "mail"
    postfix = PostfixInstance(
        base,
        settings={
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": str(mail),
            "virtual_mailbox_maps": f"static:{DOMAIN}/alice/",  # trailing "/": Maildir
            "virtual_uid_maps": f"static:{user.pw_uid}",
            "virtual_gid_maps": f"static:{user.pw_gid}",
            "virtual_minimum_uid": str(min(user.pw_uid, 100)),
            "message_size_limit": "0",
            "virtual_mailbox_limit": "0",
        },
    )
    mail.mkdir()
    shutil.chown(mail, user=user.pw_uid, group=user.pw_gid)
    postfix.start()
    maildir = mail / DOMAIN / "alice" / "new"
    try:
        smtp_source(postfix.port, count=10, size=size)
        _wait_files(maildir, 10)
        started = time.perf_counter()
        smtp_source(postfix.port, count=count, size=size)
        _wait_files(maildir, 10 + count)
        return count / (time.perf_counter() - started)
    finally:
        postfix.stop()


def _wait_files(directory: Path, count: int) -> None:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if directory.is_dir() and len(os.listdir(directory)) >= count:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{directory}: fewer than {count} messages delivered")


# -- Hato memory while receiving 50 MB ------------------------------------------------------------
def hato_peak_rss(work: Path, *, workers: int, megabytes: int = 50) -> tuple[int, int, float]:
    """(baseline KiB, peak growth KiB, seconds) for one message of ``megabytes`` MB."""
    server = Hato(work / "hato-rss", workers=workers)
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (megabytes * 1_000_000 // len(line))
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=120) as client:
            client.sendmail("bench@source.test", [RCPT], b"Subject: warm\r\n\r\nup\r\n")
            baseline = server.status("VmHWM")
            started = time.perf_counter()
            client.sendmail("bench@source.test", [RCPT], body)
            seconds = time.perf_counter() - started
        return baseline, server.status("VmHWM") - baseline, seconds
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Long runs: this VM stalls for about 50 ms now and then, which a run of a few hundred
    # messages (0.3 s) cannot average out (docs/benchmarks.md).
    parser.add_argument("--small", type=int, default=8000, help="1 KB messages per server")
    parser.add_argument("--large", type=int, default=1500, help="100 KB messages per server")
    parser.add_argument("--hato-only", action="store_true", help="Hato alone, CPU by thread")
    parser.add_argument("--size", type=int, default=1024, help="message size for --hato-only")
    parser.add_argument("--profile", type=Path, help="--hato-only under cProfile, stats here")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="[smtp] workers for Hato (default: one per CPU but one, which the main process "
        "uses; 0: sessions in the main process)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating Hato/Postfix runs")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.workers, args.profile))
        return
    with tempfile.TemporaryDirectory(prefix="hato-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        if args.hato_only or args.profile:
            profile = args.profile.resolve() if args.profile else None
            hato_only(work, count=args.small, size=args.size, profile=profile, workers=args.workers)
            return
        rows = []
        for label, size, count in (("1 KB", 1024, args.small), ("100 KB", 102_400, args.large)):
            for round_ in range(1, args.rounds + 1):  # alternating: the machine's state drifts
                tag = f"-{round_}"
                hato = hato_run(work, count=count, size=size, workers=args.workers, tag=tag)
                postfix = postfix_run(work, count=count, size=size, tag=tag)
                rows.append((label, round_, count, hato, postfix))
        baseline, growth, seconds = hato_peak_rss(work, workers=args.workers)
    print(
        f"smtp-source -d -s {SESSIONS}, one recipient, {os.cpu_count()} CPUs, "
        f"Hato with [smtp] workers = {args.workers}, {args.rounds} alternating rounds\n"
    )
    print(
        "| message size | round | messages | Hato msg/s | Postfix msg/s | Hato / Postfix "
        "| Hato CPU ms/msg | after the run: index and files caught up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, round_, count, hato, postfix in rows:
        print(
            f"| {label} | {round_} | {count} | {hato.rate:.0f} | {postfix:.0f} "
            f"| {hato.rate / postfix:.2f}× | {hato.cpu_ms:.2f} "
            f"| {hato.behind_s:.1f} s, {hato.behind_cpu_ms:.2f} CPU ms/msg |"
        )
    for label in ("1 KB", "100 KB"):
        mine = [r for r in rows if r[0] == label]
        ratios = sorted(h.rate / p for _l, _r, _c, h, p in mine)
        print(
            f"| {label} | median | | {statistics.median(h.rate for *_, h, _p in mine):.0f} "
            f"| {statistics.median(p for *_, p in mine):.0f} "
            f"| **{statistics.median(ratios):.2f}×** (min {ratios[0]:.2f}×) | | |"
        )
    print(
        f"\nHato peak RSS while receiving one 50 MB message: baseline {baseline / 1024:.1f} MiB,"
        f" growth {growth / 1024:.1f} MiB, {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
