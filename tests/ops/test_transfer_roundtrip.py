"""Export/import against the real SQLite store: round trips, errors, bounded memory."""

from __future__ import annotations

import logging
import os
import re
import tracemalloc
from pathlib import Path

import pytest
from mail_setup import Snapshot, WithStore, populate, snapshot
from mbox_corpus import Sample, render_mboxrd

from hato.core.errors import QuotaExceeded, UsageError
from hato.ops import maildir, transfer
from hato.store.api import MailStore
from hato.store.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    Account,
    Credentials,
)

NAME = r"(\d+\.P\d+Q\d+R[0-9a-f]+\.[^,]+,S=(\d+)):2,([A-Za-z]*)"


def maildir_view(root: Path) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    """Folder directory -> messages (bytes, flags incl. keywords, mtime) in uidlist order,
    read with the format rules stated independently here."""
    view = {}
    for folder in [root, *sorted(p for p in root.iterdir() if p.name.startswith("."))]:
        assert sorted(p.name for p in (folder / "tmp").iterdir()) == []
        assert sorted(p.name for p in (folder / "new").iterdir()) == []
        keywords = {}
        if (folder / "dovecot-keywords").exists():
            for line in (folder / "dovecot-keywords").read_text().splitlines():
                index, name = line.split(" ", 1)
                keywords["abcdefghijklmnopqrstuvwxyz"[int(index)]] = name
        order = {}
        for line in (folder / "dovecot-uidlist").read_text().splitlines()[1:]:
            uid, stem = line.split(" :")
            order[stem] = int(uid)
        messages = []
        for path in (folder / "cur").iterdir():
            match = re.fullmatch(NAME, path.name)
            assert match, path.name
            data = path.read_bytes()
            assert int(match.group(2)) == len(data)
            assert list(match.group(3)) == sorted(match.group(3))  # ASCII order
            letters = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
            flags = frozenset(letters.get(c) or keywords[c] for c in match.group(3))
            messages.append((order[match.group(1)], data, flags, path.stat().st_mtime_ns))
        messages.sort(key=lambda m: m[0])
        view[folder.name if folder != root else ""] = [
            (data, flags, mtime // 1_000_000_000) for _, data, flags, mtime in messages
        ]
    return view


def test_maildir_round_trip(with_store: WithStore, tmp_path: Path, corpus: list[Sample]) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    progress: list[tuple[int, int]] = []

    async def scenario(store: MailStore, account: Account) -> tuple[Snapshot, Snapshot]:
        await populate(store, account, corpus[:150])
        exported = await transfer.export_maildir(
            store, account, first, progress=lambda d, t: progress.append((d, t))
        )
        assert exported == 150
        other = await store.add_account("v@example.test", Credentials(password_hash="-"))
        assert await transfer.import_maildir(store, other, first) == 150
        assert await transfer.export_maildir(store, other, second) == 150
        return await snapshot(store, account), await snapshot(store, other)

    original, imported = with_store(scenario)
    assert progress == [(i, 150) for i in range(1, 151)]
    # Same mailboxes, subscriptions, messages (bytes), flags, keywords and internal dates.
    assert imported == original
    assert sum(len(m) for _, m in original.values()) == 150
    assert not original["Junk"][0] and not original["a"][0] and original["a/b"][0]
    view = maildir_view(first)
    assert view == maildir_view(second)
    assert sorted(view) == sorted(
        [
            "",
            ".Archive",
            ".Drafts",
            ".Junk",
            ".Sent",
            ".Trash",
            ".a",
            ".a.b",
            ".&ZeVnLIqe-",
            ".x\\2ey",
            ".Entw&APw-rfe",
            ".Entw&APw-rfe.2024",
            ".Tom &- Jerry",
        ]
    )
    for name, (_, messages) in original.items():
        folder = "" if name == "INBOX" else maildir.folder_dirname(name)
        assert view[folder] == [(data, flags, int(date)) for data, flags, date in messages]
    for folder in view:
        assert (first / folder / "maildirfolder").exists() == (folder != "")
    assert (first / "subscriptions").read_bytes().startswith(b"V\t2\n\n")


def test_mbox_round_trip_is_byte_exact(
    with_store: WithStore, tmp_path: Path, corpus: list[Sample]
) -> None:
    source, copy = tmp_path / "in.mbox", tmp_path / "out.mbox"
    source.write_bytes(render_mboxrd(corpus))
    seen: list[tuple[int, int]] = []

    async def scenario(store: MailStore, account: Account) -> Snapshot:
        imported = await transfer.import_mbox(
            store,
            account,
            source,
            mailbox="Archive/2023",
            progress=lambda d, t: seen.append((d, t)),
        )
        assert imported == 1000
        assert await transfer.export_mbox(store, account, copy, mailbox="Archive/2023") == 1000
        return await snapshot(store, account)

    state = with_store(scenario)
    assert copy.read_bytes() == source.read_bytes()
    assert seen[-1] == (1000, 1000) and len(seen) == 1000
    _, messages = state["Archive/2023"]
    assert [m[0] for m in messages] == [s.stored for s in corpus]  # CRLF in the store
    assert [m[1] for m in messages] == [s.flags for s in corpus]  # from Status:/X-Status:
    assert [m[2] for m in messages] == [s.date for s in corpus]


def test_import_maildir_new_messages_lf_files_and_foreign_names(
    with_store: WithStore, tmp_path: Path
) -> None:
    root = tmp_path / "Maildir"
    for folder in (root, root / ".Lists.dev"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    files = {
        root / "cur" / "1600000000.M1P1.mx,S=30:2,RS": b"Subject: one\n\nLF body\nline\n",
        root / "new" / "1600000005.M2P1.mx,S=20": b"Subject: two\r\n\r\nCRLF\r\n",
        root / "cur" / "1600000010.M3P1.mx:2,": b"Subject: three\n\n",
        root / ".Lists.dev" / "cur" / "16.M4P1.mx:2,Sab": b"Subject: four\n\n\xe6\x97\xa5\n",
    }
    for i, (path, data) in enumerate(files.items()):
        path.write_bytes(data)
        os.utime(path, (1_500_000_000 + i, 1_500_000_000 + i))
    (root / ".Lists.dev" / "dovecot-keywords").write_bytes(b"0 $Forwarded\n1 Work\n")
    (root / "tmp" / "1600000030.M5P1.mx").write_bytes(b"Subject: half-delivered\n\n")

    async def scenario(store: MailStore, account: Account) -> Snapshot:
        assert await transfer.import_maildir(store, account, root) == 4
        return await snapshot(store, account)

    state = with_store(scenario)
    assert state["INBOX"][1] == [
        (b"Subject: one\r\n\r\nLF body\r\nline\r\n", frozenset({ANSWERED, SEEN}), 1_500_000_000.0),
        (b"Subject: two\r\n\r\nCRLF\r\n", frozenset(), 1_500_000_001.0),  # new/: unseen
        (b"Subject: three\r\n\r\n", frozenset(), 1_500_000_002.0),
    ]
    assert state["Lists/dev"][1] == [
        (
            b"Subject: four\r\n\r\n\xe6\x97\xa5\r\n",
            frozenset({SEEN, "$Forwarded", "Work"}),
            1_500_000_003.0,
        )
    ]


def test_not_a_maildir(with_store: WithStore, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    async def scenario(store: MailStore, account: Account) -> None:
        with pytest.raises(UsageError, match="is not a Maildir"):
            await transfer.import_maildir(store, account, tmp_path / "empty")

    with_store(scenario)


def test_not_an_mbox_names_the_line_and_stores_nothing(
    with_store: WithStore, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"Dear diary,\nFrom today on\n")

    async def scenario(store: MailStore, account: Account) -> int:
        with pytest.raises(UsageError, match=r"notes\.txt: line 1 is not an mbox"):
            await transfer.import_mbox(store, account, bad)
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        return len(await store.list_messages(inbox.id))

    assert with_store(scenario) == 0


def test_exports_refuse_to_overwrite(with_store: WithStore, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    (tmp_path / "old.mbox").write_bytes(b"mine")

    async def scenario(store: MailStore, account: Account) -> None:
        with pytest.raises(UsageError, match="is not empty"):
            await transfer.export_maildir(store, account, tmp_path / "full")
        with pytest.raises(UsageError, match="already exists"):
            await transfer.export_mbox(store, account, tmp_path / "old.mbox")
        with pytest.raises(UsageError, match="no mailbox 'Nope'"):
            await transfer.export_mbox(store, account, tmp_path / "x.mbox", mailbox="Nope")
        # An empty mailbox exports as an empty file.
        assert await transfer.export_mbox(store, account, tmp_path / "empty.mbox") == 0

    with_store(scenario)
    assert (tmp_path / "full" / "keep").read_text() == "mine"
    assert (tmp_path / "old.mbox").read_bytes() == b"mine"
    assert (tmp_path / "empty.mbox").read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_memory_stays_bounded_for_a_big_mbox(with_store: WithStore, tmp_path: Path) -> None:
    big = tmp_path / "big.mbox"
    line = b"0123456789" * 100 + b"\n"
    with open(big, "wb") as fp:
        fp.write(b"From MAILER-DAEMON Tue Nov 14 22:13:20 2023\nSubject: big\n\n")
        for _ in range(16 * 1024 * 1024 // len(line)):
            fp.write(line)
        fp.write(b"x" * (3 * 1024 * 1024) + b"\n\n")  # one 3 MiB line, too
    out = tmp_path / "out.mbox"

    async def scenario(store: MailStore, account: Account) -> tuple[int, int]:
        tracemalloc.start()
        try:
            assert await transfer.import_mbox(store, account, big) == 1
            _, import_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert await transfer.export_mbox(store, account, out) == 1
            _, export_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return import_peak, export_peak

    import_peak, export_peak = with_store(scenario)
    assert import_peak < 2 * 1024 * 1024, import_peak
    assert export_peak < 2 * 1024 * 1024, export_peak
    assert out.stat().st_size == big.stat().st_size
    with open(out, "rb") as a, open(big, "rb") as b:
        while chunk := a.read(1 << 20):
            assert chunk == b.read(1 << 20)


def test_import_stops_at_quota_and_says_where(
    with_store: WithStore, tmp_path: Path, corpus: list[Sample], caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "in.mbox"
    samples = corpus[:30]
    source.write_bytes(render_mboxrd(samples))
    quota = sum(len(s.stored) for s in samples[:12]) + 1

    async def scenario(store: MailStore, account: Account) -> list[bytes]:
        await store.set_quota(account.address, quota)
        with pytest.raises(QuotaExceeded):
            await transfer.import_mbox(store, account, source)
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        return [store.blobs.read(m.blob_id) for m in await store.list_messages(inbox.id)]

    with caplog.at_level(logging.INFO, logger="hato"):
        stored = with_store(scenario)
    # Messages stored before the error stay, in order; the log names where it stopped.
    assert stored == [s.stored for s in samples[:12]]
    messages = [r.getMessage() for r in caplog.records]
    [failed] = [m for m in messages if "transfer.import.failed" in m]
    assert "imported=12" in failed and "error=QuotaExceeded" in failed
    assert re.search(r'where="[^"]*in\.mbox: line \d+"', failed), failed
