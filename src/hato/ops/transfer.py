"""Export and import of an account's mail as Maildir++ and mboxrd: the users' exit path.

Maildir (``hato.ops.maildir``): every mailbox of the account, in the layout Dovecot reads with
``mail_location = maildir:DIR`` (INBOX at the top, ``a/b`` as ``.a.b``, names in modified
UTF-7 per RFC 3501 §5.1.3), flags in the ``:2,`` suffix, keywords through ``dovecot-keywords``,
the internal date as the file's mtime, UIDs in ``dovecot-uidlist`` and subscriptions in
``subscriptions``. Files are written to ``tmp/`` and renamed into ``cur/``; message bytes are
written exactly as stored (CRLF line ends, which Dovecot serves unchanged). Import reads the
same layout (``new/`` messages arrive unseen) and turns a file with LF line ends into CRLF.

mbox (``hato.ops.mbox``): one mailbox in mboxrd (RFC 4155). Stored messages have CRLF line
ends; the file has LF line ends: CRLF becomes LF on export and LF becomes CRLF on import.

Leaves out: special-use attributes (not part of either format), and atomicity of a whole
import (messages imported before an error stay; the error names where it stopped).

Security: reads and writes only under the paths the operator passes; an export refuses a
destination that already holds data; message bodies are never logged.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from hato.core.clock import Clock, SystemClock
from hato.core.errors import UsageError
from hato.core.log import event
from hato.ops import maildir, mbox
from hato.store.api import BlobStore, BlobWriter, MailStore
from hato.store.model import INBOX, Account, BlobRef, Mailbox, Message

Progress = Callable[[int, int], None]
_T = TypeVar("_T")
_COPY_CHUNK = 64 * 1024


# -- shared -----------------------------------------------------------------------------------


async def _mailbox_for_import(store: MailStore, account: Account, name: str) -> Mailbox:
    existing = await store.get_mailbox(account.id, name)
    if existing is not None:
        return existing
    return await store.create_mailbox(account.id, name)


async def _fill_blob(
    store: MailStore, fill: Callable[[BlobWriter], _T | None]
) -> tuple[BlobWriter, _T] | None:
    """Stream one body into a new blob writer: ``fill`` writes it (in a thread) and returns
    what it learnt, or None when there was nothing to store (the writer is aborted then)."""
    writer = store.blobs.writer()
    try:
        result = await asyncio.to_thread(fill, writer)
    except BaseException:
        writer.abort()
        raise
    if result is None:
        writer.abort()
        return None
    return writer, result


@dataclass(slots=True)
class _Pending:
    commit: asyncio.Future[BlobRef]
    writer: BlobWriter
    mailbox_id: int
    flags: frozenset[str]
    internal_date: float


class _AppendPipeline:
    """Commits up to DEPTH blobs at once (each commit waits on fsync) and appends them in
    their source order, so UIDs follow the order of the mbox or Maildir."""

    DEPTH = 8

    def __init__(self, store: MailStore, *, total: int, progress: Progress | None) -> None:
        self._store = store
        self._total = total
        self._progress = progress
        self._inflight: collections.deque[_Pending] = collections.deque()
        self.done = 0

    async def put(
        self, writer: BlobWriter, mailbox_id: int, *, flags: frozenset[str], internal_date: float
    ) -> None:
        commit = asyncio.ensure_future(asyncio.to_thread(writer.commit))
        self._inflight.append(_Pending(commit, writer, mailbox_id, flags, internal_date))
        if len(self._inflight) >= self.DEPTH:
            await self._append_oldest()

    async def drain(self) -> None:
        while self._inflight:
            await self._append_oldest()

    async def _append_oldest(self) -> None:
        pending = self._inflight.popleft()
        try:
            blob = await pending.commit
        except BaseException:
            pending.writer.abort()
            raise
        await self._store.append(
            pending.mailbox_id, blob, flags=pending.flags, internal_date=pending.internal_date
        )
        self.done += 1
        if self._progress is not None:
            self._progress(self.done, max(self._total, self.done))

    async def abandon(self) -> None:
        """After an error: wait for the commits under way; their blobs stay unreferenced
        (the store sweeps those), writers whose commit failed are aborted."""
        while self._inflight:
            pending = self._inflight.popleft()
            try:
                await pending.commit
            except BaseException:
                pending.writer.abort()


def _log_failure(
    kind: str, account: Account, *, pipeline: _AppendPipeline, exc: Exception, where: str
) -> None:
    """An import stopped: say where, and how many messages it had stored."""
    event(
        "transfer.import.failed",
        level=logging.ERROR,
        format=kind,
        account=account.address,
        imported=pipeline.done,
        where=where,
        error=type(exc).__name__,
    )


def _refuse_non_empty_dir(dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir():
            raise UsageError(f"export destination {dest} exists and is not a directory")
        if any(dest.iterdir()):
            raise UsageError(f"export destination {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)


# -- Maildir export ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NameParts:
    timestamp: int
    run: str
    pid: int
    host: str

    def base(self, seq: int) -> str:
        # Maildir unique part: P<pid> (process), Q<n> (deliveries by it), R<random> (this run).
        return maildir.base_name(
            self.timestamp, f"P{self.pid}Q{seq}R{self.run}", hostname=self.host
        )


def _write_maildir_message(
    blobs: BlobStore, message: Message, *, folder: Path, base: str, info: str
) -> str:
    """tmp/<base> <- body, fsync, mtime = internal date, rename to cur/<base>,S=<size><info>;
    returns the name without the info suffix (what dovecot-uidlist records)."""
    tmp = folder / "tmp" / base
    with blobs.open(message.blob_id) as src, open(tmp, "xb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
    stamp_ns = round(message.internal_date * 1_000_000_000)
    os.utime(tmp, ns=(stamp_ns, stamp_ns))  # Dovecot: the mtime is the INTERNALDATE
    name = maildir.file_name(base, size)
    os.rename(tmp, folder / "cur" / f"{name}{info}")
    return name


def _finish_folder(folder: Path, *, keywords: bytes | None, uidlist: bytes) -> None:
    if keywords is not None:
        maildir.write_control_file(folder / maildir.KEYWORDS_FILE, keywords)
    maildir.write_control_file(folder / maildir.UIDLIST_FILE, uidlist)
    maildir.fsync_dir(folder / "cur")
    maildir.fsync_dir(folder)


async def export_maildir(
    store: MailStore,
    account: Account,
    dest: Path,
    *,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> int:
    """Write every mailbox of ``account`` as a Maildir++ tree at ``dest`` (absent or empty);
    returns the number of messages written."""
    mailboxes = sorted(await store.list_mailboxes(account.id), key=lambda m: m.name)
    contents = [(mb, await store.list_messages(mb.id)) for mb in mailboxes]
    total = sum(len(messages) for _, messages in contents)
    await asyncio.to_thread(_refuse_non_empty_dir, dest)
    names = _NameParts(
        int((clock or SystemClock()).now()), secrets.token_hex(4), os.getpid(), socket.gethostname()
    )
    done = 0
    for mailbox, messages in contents:
        inbox = mailbox.name.upper() == INBOX
        folder = dest if inbox else dest / maildir.folder_dirname(mailbox.name)
        await asyncio.to_thread(maildir.make_maildir, folder, folder=not inbox)
        letters, dropped = maildir.assign_keywords(m.flags for m in messages)
        if dropped:
            event("transfer.maildir.keywords_dropped", mailbox=mailbox.name, keywords=len(dropped))
        entries: list[tuple[int, str]] = []
        for message in messages:
            done += 1
            base = names.base(done)
            info = maildir.info_suffix(message.flags, letters)
            name = await asyncio.to_thread(
                _write_maildir_message, store.blobs, message, folder=folder, base=base, info=info
            )
            entries.append((message.uid, name))
            if progress is not None:
                progress(done, total)
        uidlist = maildir.render_uidlist(
            entries,
            uidvalidity=mailbox.uidvalidity,
            uidnext=mailbox.uidnext,
            guid=secrets.token_hex(16),
        )
        keywords = maildir.render_keywords(letters) if letters else None
        await asyncio.to_thread(_finish_folder, folder, keywords=keywords, uidlist=uidlist)
    subscribed = [mb.name for mb in mailboxes if mb.subscribed]
    await asyncio.to_thread(
        maildir.write_control_file,
        dest / maildir.SUBSCRIPTIONS_FILE,
        maildir.render_subscriptions(subscribed),
    )
    event("transfer.export.done", format="maildir", account=account.address, messages=done)
    return done


# -- Maildir import ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MaildirFile:
    path: Path
    flags: frozenset[str]


def _scan_folder(folder: Path) -> list[_MaildirFile]:
    """The messages of one Maildir folder in delivery order (dovecot-uidlist when present)."""
    letters: dict[str, str] = {}
    keywords_path = folder / maildir.KEYWORDS_FILE
    if keywords_path.is_file():
        letters = maildir.parse_keywords(keywords_path.read_bytes())
    uids: dict[str, int] = {}
    uidlist_path = folder / maildir.UIDLIST_FILE
    if uidlist_path.is_file():
        uids = maildir.parse_uidlist(uidlist_path.read_bytes())
    found: list[tuple[tuple[int, int, tuple[tuple[int, int | str], ...]], _MaildirFile]] = []
    for sub in ("cur", "new"):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.name.startswith(".") or not path.is_file():
                continue
            parsed = maildir.parse_file_name(path.name, in_new=sub == "new")
            flags = set(parsed.flags)
            flags.update(letters[c] for c in parsed.keyword_letters if c in letters)
            uid = uids.get(parsed.base)
            key = (0 if uid is not None else 1, uid or 0, maildir.natural_key(path.name))
            found.append((key, _MaildirFile(path, frozenset(flags))))
    found.sort(key=lambda item: item[0])
    return [item for _, item in found]


def _scan_maildir(src: Path) -> list[tuple[str, list[_MaildirFile]]]:
    if not (src / "cur").is_dir() and not (src / "new").is_dir():
        raise UsageError(f"{src} is not a Maildir (it has no cur/ or new/ directory)")
    folders = [(INBOX, _scan_folder(src))]
    for entry in sorted(src.iterdir(), key=lambda p: p.name):
        if not entry.name.startswith(".") or entry.name in (".", ".."):
            continue
        if not entry.is_dir() or not ((entry / "cur").is_dir() or (entry / "new").is_dir()):
            continue
        try:
            name = maildir.folder_name(entry.name)
        except maildir.MaildirFormatError as exc:
            raise UsageError(f"{entry}: {exc}") from None
        folders.append((name, _scan_folder(entry)))
    return folders


def _copy_maildir_file(path: Path, writer: BlobWriter) -> float | None:
    """Copy one message file into ``writer``; a file whose first line ends in a bare LF is a
    Unix-convention file and its bare LFs become CRLF. Returns the mtime (INTERNALDATE), or
    None when the file vanished since the scan (a live Maildir renames files: new/ -> cur/,
    flag changes), in which case the caller skips it."""
    try:
        with open(path, "rb") as fp:
            mtime = os.fstat(fp.fileno()).st_mtime_ns / 1_000_000_000
            piece = fp.readline(_COPY_CHUNK)
            lf_file = piece.endswith(b"\n") and not piece.endswith(b"\r\n")
            previous_cr = False
            while piece:
                bare_lf = piece.endswith(b"\n") and not piece.endswith(b"\r\n")
                if lf_file and bare_lf and not (piece == b"\n" and previous_cr):
                    piece = piece[:-1] + b"\r\n"
                writer.write(piece)
                previous_cr = piece.endswith(b"\r")
                piece = fp.readline(_COPY_CHUNK)
    except FileNotFoundError:  # only open() raises it
        return None
    return mtime


async def import_maildir(
    store: MailStore,
    account: Account,
    src: Path,
    *,
    progress: Progress | None = None,
) -> int:
    """Import a Maildir++ tree into ``account`` (mailboxes created as needed); returns the
    number of messages imported."""
    folders = await asyncio.to_thread(_scan_maildir, src)
    pipeline = _AppendPipeline(
        store, total=sum(len(files) for _, files in folders), progress=progress
    )
    imported: list[str] = []
    current = src
    try:
        for name, files in folders:
            mailbox = await _mailbox_for_import(store, account, name)
            imported.append(mailbox.name)
            for item in files:
                current = item.path
                filled = await _fill_blob(store, functools.partial(_copy_maildir_file, item.path))
                if filled is None:
                    event("transfer.maildir.vanished", level=logging.WARNING, file=str(item.path))
                    continue
                writer, mtime = filled
                await pipeline.put(writer, mailbox.id, flags=item.flags, internal_date=mtime)
        await pipeline.drain()
    except Exception as exc:
        _log_failure("maildir", account, pipeline=pipeline, exc=exc, where=str(current))
        raise
    finally:
        await pipeline.abandon()
    done = pipeline.done
    subscriptions_path = src / maildir.SUBSCRIPTIONS_FILE
    if subscriptions_path.is_file():
        data = await asyncio.to_thread(subscriptions_path.read_bytes)
        wanted = {n.upper() if n.upper() == INBOX else n for n in maildir.parse_subscriptions(data)}
        for name in imported:
            await store.set_subscribed(account.id, name, name in wanted)
    event("transfer.import.done", format="maildir", account=account.address, messages=done)
    return done


# -- mbox -------------------------------------------------------------------------------------


def _append_mbox_message(blobs: BlobStore, message: Message, out: BinaryIO) -> None:
    with blobs.open(message.blob_id) as src:
        sender = mbox.envelope_sender(src.read(mbox.MAX_HEADER_SCAN))
        src.seek(0)
        mbox.write_message(src, out, sender=sender, internal_date=message.internal_date)


def _open_new_file(dest: Path) -> tuple[Path, BinaryIO]:
    if dest.exists():
        raise UsageError(f"export destination {dest} already exists")
    if not dest.parent.is_dir():
        raise UsageError(f"directory {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    return tmp, open(tmp, "xb")


def _close_new_file(tmp: Path, out: BinaryIO, *, dest: Path, keep: bool) -> None:
    try:
        if keep:
            out.flush()
            os.fsync(out.fileno())
    finally:
        out.close()
    if keep:
        os.rename(tmp, dest)
        maildir.fsync_dir(dest.parent)
    else:
        tmp.unlink(missing_ok=True)


async def export_mbox(
    store: MailStore,
    account: Account,
    dest: Path,
    *,
    mailbox: str = INBOX,
    progress: Progress | None = None,
) -> int:
    """Write one mailbox of ``account`` as an mboxrd file ``dest`` (which must not exist),
    CRLF turned into LF; returns the number of messages written. The file appears whole
    (written under a temporary name, fsynced, renamed)."""
    found = await store.get_mailbox(account.id, mailbox)
    if found is None:
        raise UsageError(f"{account.address} has no mailbox {mailbox!r}")
    messages = await store.list_messages(found.id)
    tmp, out = await asyncio.to_thread(_open_new_file, dest)
    finished = False
    try:
        for done, message in enumerate(messages, start=1):
            await asyncio.to_thread(_append_mbox_message, store.blobs, message, out)
            if progress is not None:
                progress(done, len(messages))
        finished = True
    finally:
        await asyncio.to_thread(_close_new_file, tmp, out, dest=dest, keep=finished)
    event("transfer.export.done", format="mbox", account=account.address, messages=len(messages))
    return len(messages)


def _count_mbox(src: Path) -> int:
    with open(src, "rb") as fp:
        return mbox.count_messages(fp)


async def import_mbox(
    store: MailStore,
    account: Account,
    src: Path,
    *,
    mailbox: str = INBOX,
    progress: Progress | None = None,
) -> int:
    """Import an mboxrd file into one mailbox of ``account`` (created when missing), LF
    turned into CRLF; returns the number of messages imported. Internal dates come from the
    separator lines, flags from ``Status:``/``X-Status:`` headers when present."""
    if not src.is_file():
        raise UsageError(f"{src} is not a file")
    total = await asyncio.to_thread(_count_mbox, src)
    target = await _mailbox_for_import(store, account, mailbox)
    pipeline = _AppendPipeline(store, total=total, progress=progress)
    fp = await asyncio.to_thread(open, src, "rb")
    reader = mbox.Reader(fp, name=str(src))
    try:
        while True:
            filled = await _fill_blob(store, lambda writer: reader.next_message(writer.write))
            if filled is None:
                break
            writer, entry = filled
            await pipeline.put(writer, target.id, flags=entry.flags, internal_date=entry.date)
        await pipeline.drain()
    except Exception as exc:
        _log_failure(
            "mbox", account, pipeline=pipeline, exc=exc, where=f"{src}: line {reader.line}"
        )
        raise
    finally:
        await pipeline.abandon()
        await asyncio.to_thread(fp.close)
    done = pipeline.done
    event("transfer.import.done", format="mbox", account=account.address, messages=done)
    return done
