"""IMAP benchmark: Hato against Debian's Dovecot, same machine, same run, same mailbox.

1. Preload: generated mail (``imap_corpus.py``) is imported into a Hato store with
   ``hato.ops.transfer.import_mbox`` (INBOX: ``--mix-messages`` messages for the load mix;
   ``Big``: ``--big`` messages), then the account is exported with
   ``hato.ops.transfer.export_maildir`` as the Maildir Dovecot serves (same UIDs, same
   UIDVALIDITY). ``--cache DIR`` keeps the preloaded pair and copies it for later runs.
2. Big mailbox (one client, each server): ``SELECT Big`` (the first one, then the median of
   three more), ``UID FETCH 1:* (FLAGS)`` and ``UID SEARCH TEXT <word>`` (a rare and a
   common word), medians of three.
3. Load mix (``imap_load.py``): ``--clients`` concurrent clients for ``--seconds`` each
   server, same seeded operations; operations per second, errors, median latencies.
4. Idle connections: memory (PSS of the server's process tree) before and after ``--idle``
   connections that logged in, selected INBOX and sit in IDLE.

Server CPU (user + system seconds of the server's process tree, ``tree_cpu_seconds``) is
measured around phases 2 and 3: CPU per operation is less sensitive than wall time to the
other load on a shared machine.

Usage (as root: Dovecot serves the mail as ``nobody``):
``cd /work/main && PYTHONPATH=src .venv/bin/python bench/imap.py [--big 100000]
[--mix-messages 2000] [--clients 10] [--seconds 30] [--idle 200] [--cache DIR]
[--profile hato.prof]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hato.ops.transfer import export_maildir, import_mbox
from hato.policy.authn import make_credentials
from hato.store.sqlite import open_store
from imap_corpus import RARE_WORD, write_mbox
from imap_load import ImapClient, MixResult, login, run_mix
from imap_peers import (
    PASSWORD,
    USER,
    DovecotProcess,
    HatoProcess,
    rss_kib,
    tree_cpu_seconds,
    tree_pss_kib,
)


@dataclass
class ServerResults:
    big: dict[str, float] | None = None
    big_cpu: float = 0.0  # server CPU seconds for the whole big-mailbox phase
    mix: MixResult | None = None
    mix_cpu: float = 0.0  # server CPU seconds during the mix
    idle: dict[str, float] | None = None


CHUNKS = 4  # the big mailbox is imported as this many concurrent mbox streams
COMMON_WORD = "meeting"


# -- preload ----------------------------------------------------------------------------------
async def _preload(work: Path, *, mix: int, big: int) -> None:
    mboxes = work / "mbox"
    mboxes.mkdir()
    write_mbox(mboxes / "inbox.mbox", 1, mix, seed=1)
    per_chunk = -(-big // CHUNKS) if big else 0
    chunks: list[Path] = []
    for i in range(CHUNKS if big else 0):
        path = mboxes / f"big{i}.mbox"
        write_mbox(path, i * per_chunk + 1, min(big, (i + 1) * per_chunk), seed=2)
        chunks.append(path)
    store = await open_store(work / "hato")
    try:
        await store.add_domain("bench.test")
        account = await store.add_account(USER, make_credentials(PASSWORD))
        started = time.perf_counter()
        await import_mbox(store, account, mboxes / "inbox.mbox")
        if chunks:
            await store.create_mailbox(account.id, "Big")
            await asyncio.gather(*(import_mbox(store, account, c, mailbox="Big") for c in chunks))
        await store.index_pending()
        took = time.perf_counter() - started
        print(f"preload: imported {mix + big} messages into Hato in {took:.0f} s "
              f"({(mix + big) / took:.0f}/s)", flush=True)
        started = time.perf_counter()
        await export_maildir(store, account, work / "maildir")
        print(f"preload: exported the Maildir for Dovecot in {time.perf_counter() - started:.0f} s",
              flush=True)
    finally:
        await store.close()
    shutil.rmtree(mboxes)


def clone_tree(src: Path, dst: Path) -> None:
    """Copy a preloaded tree for one run: message files (Hato's content-addressed blobs,
    Maildir messages, both never written in place) are hard-linked, everything else
    (databases, Dovecot's index files) is copied."""
    for dirpath, _dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        target = dst / here.relative_to(src)
        target.mkdir(mode=here.stat().st_mode & 0o777, exist_ok=True)
        linked = "blobs" in here.relative_to(src).parts or here.name in ("cur", "new")
        for name in filenames:
            if linked:
                os.link(here / name, target / name)
            else:
                shutil.copy2(here / name, target / name)


def prepare(work: Path, *, mix: int, big: int, cache: Path | None) -> None:
    if cache is not None:
        cached = cache / f"imap-{mix}-{big}"
        if not (cached / "done").exists():
            if cached.exists():
                shutil.rmtree(cached)
            cached.mkdir(parents=True)
            asyncio.run(_preload(cached, mix=mix, big=big))
            (cached / "done").touch()
        started = time.perf_counter()
        for name in ("hato", "maildir"):
            clone_tree(cached / name, work / name)
        print(f"preload: copied from {cached} in {time.perf_counter() - started:.0f} s",
              flush=True)
        return
    asyncio.run(_preload(work, mix=mix, big=big))


# -- measurements -----------------------------------------------------------------------------
async def _timed(client: ImapClient, command: bytes) -> float:
    started = time.perf_counter()
    client.last = await client.ok(command)
    return time.perf_counter() - started


async def big_mailbox(port: int) -> dict[str, float]:
    client = await login(port, USER, PASSWORD)
    try:
        first = await _timed(client, b"SELECT Big")
        selects = [await _timed(client, b"SELECT Big") for _ in range(3)]
        fetches = [await _timed(client, b"UID FETCH 1:* (FLAGS)") for _ in range(3)]
        rare = [await _timed(client, b"UID SEARCH TEXT " + RARE_WORD.encode()) for _ in range(3)]
        reply = client.last
        assert reply is not None
        hits = sum(len(line.split()) - 2 for line in reply.lines if line.startswith(b"* SEARCH"))
        common = [await _timed(client, b"UID SEARCH TEXT " + COMMON_WORD.encode())
                  for _ in range(3)]
        await client.logout()
    finally:
        await client.close()
    return {
        "select_first": first,
        "select": statistics.median(selects),
        "fetch_flags": statistics.median(fetches),
        "search_rare": statistics.median(rare),
        "search_common": statistics.median(common),
        "rare_hits": float(hits),
    }


async def idle_memory(port: int, pid: int, count: int) -> dict[str, float]:
    await asyncio.sleep(1)
    before_pss, procs_before = tree_pss_kib(pid)
    before_rss = rss_kib(pid)
    clients: list[tuple[ImapClient, bytes]] = []
    semaphore = asyncio.Semaphore(16)

    async def one() -> None:
        async with semaphore:
            client = await login(port, USER, PASSWORD)
            await client.ok(b"SELECT INBOX")
            clients.append((client, await client.start_idle()))

    try:
        await asyncio.gather(*(one() for _ in range(count)))
        await asyncio.sleep(2)
        after_pss, procs_after = tree_pss_kib(pid)
        after_rss = rss_kib(pid)
    finally:
        for client, tag in clients:
            try:
                await client.end_idle(tag)
                await client.logout()
            except Exception:  # closing anyway
                pass
            await client.close()
    return {
        "pss_before_mib": before_pss / 1024,
        "pss_after_mib": after_pss / 1024,
        "per_connection_kib": (after_pss - before_pss) / count,
        "master_rss_growth_kib": (after_rss - before_rss) / count,
        "processes": float(procs_after - procs_before),
    }


def _row(name: str, hato: float, dovecot: float, unit: str = "s", *, higher: bool = False) -> str:
    ratio = (hato / dovecot if higher else dovecot / hato) if hato and dovecot else 0.0
    return f"| {name} | {hato:.3f} {unit} | {dovecot:.3f} {unit} | {ratio:.2f}× |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--mix-messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary dir goes")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile Hato into this")
    parser.add_argument("--only", choices=("big", "mix", "idle"), action="append")
    args = parser.parse_args()
    phases = set(args.only or ("big", "mix", "idle"))
    with tempfile.TemporaryDirectory(prefix="hato-imap-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        prepare(work, mix=args.mix_messages, big=args.big, cache=args.cache)
        dovecot = DovecotProcess(work / "dovecot", work / "maildir")
        try:
            hato = HatoProcess(work / "hato", profile=args.profile)
            try:
                results = asyncio.run(_measure(args, phases, hato, dovecot))
            finally:
                hato.stop()
        finally:
            dovecot.stop()
    _report(args, results)


async def _measure(args: argparse.Namespace, phases: set[str], hato: HatoProcess,
                   dovecot: DovecotProcess) -> dict[str, ServerResults]:
    results = {"hato": ServerResults(), "dovecot": ServerResults()}
    servers = (("dovecot", dovecot.port, dovecot.pid), ("hato", hato.port, hato.pid))
    if "big" in phases and args.big:
        for name, port, pid in servers:
            cpu = tree_cpu_seconds(pid)
            results[name].big = await big_mailbox(port)
            results[name].big_cpu = tree_cpu_seconds(pid) - cpu
            print(f"{name} big mailbox: {results[name].big}, server CPU "
                  f"{results[name].big_cpu:.2f} s", flush=True)
    if "mix" in phases:
        for name, port, pid in servers:
            cpu = tree_cpu_seconds(pid)
            mix = await run_mix(port, clients=args.clients, seconds=args.seconds,
                                uids=args.mix_messages, user=USER, password=PASSWORD)
            results[name].mix = mix
            results[name].mix_cpu = tree_cpu_seconds(pid) - cpu
            print(f"{name} mix: {mix.ops} ops in {mix.seconds:.1f} s = {mix.per_second:.1f}/s, "
                  f"{mix.errors} errors {mix.error_samples}, server CPU "
                  f"{results[name].mix_cpu:.1f} s = "
                  f"{1000 * results[name].mix_cpu / max(mix.ops, 1):.2f} ms/op", flush=True)
    if "idle" in phases:
        for name, port, pid in servers:
            results[name].idle = await idle_memory(port, pid, args.idle)
            print(f"{name} idle: {results[name].idle}", flush=True)
    return results


def _report(args: argparse.Namespace, results: dict[str, ServerResults]) -> None:
    hato, dovecot = results["hato"], results["dovecot"]
    print("\n| measurement | Hato | Dovecot | Hato vs Dovecot |\n|---|---|---|---|")
    if hato.mix is not None and dovecot.mix is not None:
        hm, dm = hato.mix, dovecot.mix
        print(_row(f"mix ops/s ({args.clients} clients, {args.seconds:g} s)", hm.per_second,
                   dm.per_second, "ops/s", higher=True))
        print(f"| mix errors | {hm.errors} | {dm.errors} | |")
        print(_row("mix server CPU per op", 1000 * hato.mix_cpu / max(hm.ops, 1),
                   1000 * dovecot.mix_cpu / max(dm.ops, 1), "ms"))
        for op in sorted(hm.latencies):
            print(_row(f"mix {op} median", hm.latency_ms(op), dm.latency_ms(op), "ms"))
    if hato.big is not None and dovecot.big is not None:
        hb, db = hato.big, dovecot.big
        for key in ("select_first", "select", "fetch_flags", "search_rare", "search_common"):
            print(_row(f"{args.big} msgs: {key}", hb[key], db[key]))
        print(f"| rare word hits | {hb['rare_hits']:.0f} | {db['rare_hits']:.0f} | |")
        print(_row("big mailbox phase: server CPU", hato.big_cpu, dovecot.big_cpu))
    if hato.idle is not None and dovecot.idle is not None:
        hi, di = hato.idle, dovecot.idle
        print(f"| memory per idle connection (PSS, {args.idle} conns) | "
              f"{hi['per_connection_kib']:.0f} KiB | {di['per_connection_kib']:.0f} KiB | "
              f"{di['per_connection_kib'] / max(hi['per_connection_kib'], 1):.2f}× |")
        print(f"| server PSS before / after | {hi['pss_before_mib']:.1f} / "
              f"{hi['pss_after_mib']:.1f} MiB | {di['pss_before_mib']:.1f} / "
              f"{di['pss_after_mib']:.1f} MiB | |")


if __name__ == "__main__":
    main()
