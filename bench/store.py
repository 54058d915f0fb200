"""Benchmark of the embedded store (SQLite WAL + blob files).

1. Appends per second: W concurrent writers each write 10 KB text bodies (BlobWriter, commit
   in a worker thread) and ``deliver`` them, as the SMTP server does; group commit batches
   them; each is indexed for full-text search in its delivery, as in production.
   A body up to ``blobs.INLINE_MAX`` is journalled in the delivery's transaction (no fsync of
   its own); a larger one (``--size``) is fsynced with a group fsync of ``blobs/new/``.
2. ``changes_since`` latency on an account with M messages (default 100,000), for a few
   numbers of returned changes n. The account is built through a bulk path (many deliveries
   per unit of work, each with its own MODSEQ); the timed call is the real API.

Usage: ``PYTHONPATH=src python3 bench/store.py [--messages 2000] [--writers 10]
[--big 100000] [--dir DIR]``. Prints a table and markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hato.store.model import Credentials, DeliveryTarget
from hato.store.sqlite import SqliteStore, open_store
from hato.store.sqlite import changes as changes_mod
from hato.store.sqlite import messages as messages_mod
from hato.store.sqlite.db import Unit

CREDS = Credentials(password_hash="bench")
_SYLLABLES = ("ka", "to", "ri", "ne", "mo", "sa", "lu", "pe", "di", "ho", "ve", "zu", "an", "el")
WORDS = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("", "n", "s", "ra")]


def _text(rng: random.Random, size: int) -> bytes:
    """``size`` octets of text lines made of words (as mail bodies are, for the full-text
    index; random bytes would be indexed as a flood of unique trigrams)."""
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choices(WORDS, k=12)) + "\r\n").encode()
    return bytes(out[:size])


async def _account(store: SqliteStore, local: str) -> int:
    if not await store.has_domain("bench.test"):
        await store.add_domain("bench.test")
    return (await store.add_account(f"{local}@bench.test", CREDS)).id


async def bench_appends(data: Path, *, messages: int, writers: int, size: int) -> dict[str, float]:
    store = await open_store(data)
    try:
        account_id = await _account(store, "appends")
        per_writer = messages // writers
        stats0 = store.stats
        dirs0 = getattr(store.blobs, "directory_fsyncs", 0)

        async def writer(n: int) -> None:
            rng = random.Random(n)
            for i in range(per_writer):
                head = f"Subject: bench {n}-{i}\r\n\r\n".encode()
                body = head + _text(rng, size - len(head))
                blob = store.blobs.writer()
                blob.write(body)
                ref = await asyncio.to_thread(blob.commit)
                await store.deliver(ref, [DeliveryTarget(account_id)])

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        elapsed = time.perf_counter() - t0
        stats = store.stats
        units = stats.write_units - stats0.write_units
        commits = stats.commits - stats0.commits
        return {
            "messages": per_writer * writers,
            "seconds": elapsed,
            "per_second": per_writer * writers / elapsed,
            "units_per_commit": units / commits,
            "dir_fsyncs": (getattr(store.blobs, "directory_fsyncs", 0) - dirs0)
            / (per_writer * writers),
        }
    finally:
        await store.close()


async def bench_changes_since(data: Path, *, total: int, ns: list[int]) -> dict[int, float]:
    store = await open_store(data)
    try:
        account_id = await _account(store, "changes")
        blob = store.blobs.writer()
        blob.write(b"Subject: one body shared by all\r\n\r\n" + b"x" * 1000)
        ref = await asyncio.to_thread(blob.commit)
        per_unit = 2000

        def bulk(count: int):  # type: ignore[no-untyped-def]
            def work(unit: Unit) -> None:
                for _ in range(count):
                    unit.memo.pop(changes_mod.MODSEQS, None)  # one MODSEQ per delivery
                    messages_mod.deliver(
                        unit,
                        ref,
                        [DeliveryTarget(account_id)],
                        internal_date=None,
                        blob_exists=store.blobs.exists,
                    )

            return work

        done = 0
        while done < total:
            count = min(per_unit, total - done)
            await store._db.write(bulk(count))  # setup only: the bulk path
            done += count
        top = await store.highest_modseq(account_id)
        results: dict[int, float] = {}
        for n in ns:
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                got = await store.changes_since(account_id, top - n)
                times.append(time.perf_counter() - t0)
                assert len(got) == n, (len(got), n)
            results[n] = statistics.median(times)
        return results
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages to append")
    parser.add_argument("--writers", type=int, default=10, help="concurrent writers")
    parser.add_argument("--size", type=int, default=10 * 1024, help="message size in bytes")
    parser.add_argument("--big", type=int, default=100_000, help="messages in the big account")
    parser.add_argument("--dir", type=Path, default=None, help="data directory parent")
    args = parser.parse_args(argv)
    ns = [n for n in (10, 1_000, 10_000, 100_000) if n <= args.big]

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hato-bench-") as tmp:
        appends = asyncio.run(
            bench_appends(
                Path(tmp) / "a", messages=args.messages, writers=args.writers, size=args.size
            )
        )
        since = asyncio.run(bench_changes_since(Path(tmp) / "c", total=args.big, ns=ns))

    rows = [
        (
            f"appends/s ({appends['messages']:.0f} x {args.size} B, {args.writers} writers)",
            f"{appends['per_second']:.1f}",
        ),
        ("units per commit (group commit)", f"{appends['units_per_commit']:.1f}"),
        ("blobs/new/ fsyncs per message (writers)", f"{appends['dir_fsyncs']:.2f}"),
    ]
    for n, seconds in since.items():
        rows.append((f"changes_since, {n} of {args.big} (ms)", f"{seconds * 1000:.2f}"))
    print(f"{'measure':<46} {'value':>12}")
    for label, value in rows:
        print(f"{label:<46} {value:>12}")
    print()
    header = [f"appends/s ({args.size // 1024} KB, {args.writers} writers)", "units/commit"]
    header += ["new/ fsyncs per message"]
    header += [f"changes_since n={n} (ms)" for n in since]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("| " + " | ".join(value for _label, value in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
