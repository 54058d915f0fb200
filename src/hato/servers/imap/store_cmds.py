"""IMAP commands that change messages: STORE, EXPUNGE, UID EXPUNGE, COPY, MOVE, APPEND.

Implements RFC 9051 §6.4.6 STORE (FLAGS, +FLAGS, -FLAGS, .SILENT; a FETCH FLAGS response per
message otherwise), §6.4.3 EXPUNGE, §6.4.7 COPY (TRYCREATE when the target is missing), §6.4.8
MOVE with RFC 6851 §4.3 (untagged COPYUID before the EXPUNGE responses), §6.3.12 APPEND with RFC
3502 MULTIAPPEND, RFC 4315 UIDPLUS (UID EXPUNGE, APPENDUID, COPYUID), RFC 7162 §3.1.3
UNCHANGEDSINCE (MODIFIED response code, FETCH with MODSEQ even with .SILENT), RFC 3516 literal8
APPEND data, RFC 7889 APPENDLIMIT (enforced by the framer before the literal is read).

APPEND data may be built by CATENATE (RFC 4469) or sent as UTF8 (RFC 6855 §4): ``catenate.py``.
EXPUNGE responses become VANISHED once QRESYNC is enabled (RFC 7162 §3.2.7, §3.2.9).

Left out: MULTIAPPEND is all-or-nothing by compensation (messages appended before a failing one
are expunged again), not in one store transaction.
"""

from __future__ import annotations

import asyncio

from hato.codec.imap.commands import Append, Command, CopyMove, Expunge, Store
from hato.codec.imap.sequence import format_set, format_uid_list
from hato.servers.imap import catenate
from hato.servers.imap.mailboxes import find_mailbox
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.selected import Selected, flags_fetch, resolve
from hato.servers.imap.session import Session
from hato.store.model import DELETED, SYSTEM_FLAGS, FlagOp, canonical_flag

_OPS = {"+": FlagOp.ADD, "-": FlagOp.REMOVE, "": FlagOp.REPLACE}


def storable_flags(flags: tuple[str, ...]) -> frozenset[str]:
    """RFC 9051 §2.3.2: the system flags and keywords; \\Recent and unknown system flags
    cannot be stored."""
    result = set()
    for flag in flags:
        canonical = canonical_flag(flag)
        if canonical.startswith("\\") and canonical not in SYSTEM_FLAGS:
            raise CommandFailed(f"flag {flag[:40]} cannot be stored", bad=True)
        result.add(canonical)
    return frozenset(result)


def _writable(session: Session) -> Selected:
    selected = session.selected
    assert selected is not None
    if selected.read_only:
        raise CommandFailed("mailbox is read-only", code="READ-ONLY")
    return selected


async def cmd_store(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Store)
    args = command.args
    selected = _writable(session)
    flags = storable_flags(args.flags)
    if args.unchanged_since is not None:
        session.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    uids = [u for u in resolve(selected, args.sequence, uid=command.uid)
            if u not in selected.pending_expunge]
    if not uids:
        return Outcome("STORE completed")
    update = await session.store.update_flags(
        selected.mailbox_id, uids, flags, op=_OPS[args.mode], unchanged_since=args.unchanged_since
    )
    changed = {m.uid for m in update.updated}
    for message in update.updated:
        selected.remember(message)
    refused = set(update.modified)
    for uid in uids:
        if uid in refused or uid not in selected:
            continue
        if uid in changed and args.unchanged_since is not None and args.silent:
            # RFC 7162 §3.1.3: a FETCH with MODSEQ even for .SILENT.
            session.untagged(b"%d FETCH (UID %d MODSEQ (%d))" % (
                selected.seq_of(uid), uid, selected.modseq_of(uid)))
        elif not args.silent:
            # RFC 9051 §6.4.6: the new flags of every message named (changed or not).
            session.write(flags_fetch(selected, uid, condstore=session.condstore))
    if refused:
        # RFC 7162 §3.1.3: MODIFIED names the messages that failed the UNCHANGEDSINCE test.
        numbers = sorted(refused) if command.uid else [selected.seq_of(u) for u in refused]
        return Outcome("conditional STORE failed", f"MODIFIED {format_set(numbers)}")
    return Outcome("STORE completed")


async def _announce_expunged(session: Session, selected: Selected, uids: list[int]) -> None:
    # RFC 7162 §3.2.7 / §3.2.9: VANISHED instead of EXPUNGE once QRESYNC is enabled.
    selected.announce_expunged(uids, vanished=session.qresync, write=session.write)


async def cmd_expunge(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Expunge)
    selected = _writable(session)
    if command.args.sequence is None:
        removed = await session.store.expunge(selected.mailbox_id)
    else:
        # RFC 4315 §2.1: UID EXPUNGE removes only the named messages that are \Deleted.
        uids = resolve(selected, command.args.sequence, uid=True)
        current = await session.store.get_messages(selected.mailbox_id, uids)
        targets = [m.uid for m in current if DELETED in m.flags]
        removed = await session.store.expunge(selected.mailbox_id, targets) if targets else []
    await _announce_expunged(session, selected, removed)
    return Outcome("EXPUNGE completed")


async def cmd_copy(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, CopyMove)
    selected = session.selected
    assert selected is not None
    move = command.name == "MOVE"
    if move:
        _writable(session)
    uids = [u for u in resolve(selected, command.args.sequence, uid=command.uid)
            if u not in selected.pending_expunge]
    try:
        target = await find_mailbox(session, command.args.mailbox)
    except CommandFailed:
        # RFC 9051 §6.4.7: TRYCREATE when the destination does not exist.
        raise CommandFailed("no such mailbox", code="TRYCREATE") from None
    if not uids:
        return Outcome(f"{command.name} completed (no messages)")
    if move:
        pairs = await session.store.move(selected.mailbox_id, uids, target.id)
    else:
        pairs = await session.store.copy(selected.mailbox_id, uids, target.id)
    pairs.sort()
    sources = format_uid_list([p[0] for p in pairs])
    code = f"COPYUID {target.uidvalidity} {sources} {format_uid_list([p[1] for p in pairs])}"
    if not move:
        return Outcome("COPY completed", code)
    # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGE responses.
    session.untagged(b"OK [" + code.encode("ascii") + b"] moved")
    await _announce_expunged(session, selected, [p[0] for p in pairs])
    return Outcome("MOVE completed")


async def cmd_append(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Append)
    try:
        target = await find_mailbox(session, command.args.mailbox)
    except CommandFailed:
        raise CommandFailed("no such mailbox", code="TRYCREATE") from None  # RFC 9051 §6.3.12
    prepared = []
    for message in command.args.messages:
        # RFC 4469 CATENATE / RFC 6855 §4 UTF8 data (catenate.py): the octets to store.
        data = await catenate.message_data(session, message)
        if not data:
            raise CommandFailed("empty message", code="CANNOT")
        prepared.append((storable_flags(message.flags), message, data))
    appended: list[int] = []
    uidvalidity = target.uidvalidity
    try:
        for flags, message, data in prepared:
            writer = session.store.blobs.writer()
            try:
                writer.write(data)
                ref = await asyncio.to_thread(writer.commit)
            except BaseException:
                writer.abort()
                raise
            result = await session.store.append(
                target.id, ref, flags=flags, internal_date=message.internal_date
            )
            uidvalidity = result.uidvalidity
            appended.append(result.uid)
    except BaseException:
        if appended:
            # RFC 3502 §6.3.11: MULTIAPPEND is all or nothing.
            await session.store.expunge(target.id, appended)
        raise
    return Outcome("APPEND completed", f"APPENDUID {uidvalidity} {format_uid_list(appended)}")



