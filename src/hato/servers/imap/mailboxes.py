"""IMAP mailbox commands: SELECT/EXAMINE, CLOSE/UNSELECT, CREATE, DELETE, RENAME,
SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB and STATUS.

Implements RFC 9051 §6.3.2-§6.3.11 and §6.4.2 (CLOSE), RFC 3501 §6.3.9 LSUB, RFC 3691 UNSELECT,
RFC 5258 LIST-EXTENDED (selection SUBSCRIBED, RECURSIVEMATCH, SPECIAL-USE; return SUBSCRIBED,
CHILDREN, SPECIAL-USE; CHILDINFO), RFC 5819 LIST-STATUS, RFC 3348/RFC 9051 \\HasChildren and
\\HasNoChildren, RFC 6154 special-use attributes and CREATE-SPECIAL-USE, RFC 8438 STATUS=SIZE,
RFC 7162 §3.1.2 HIGHESTMODSEQ (per mailbox: the highest MODSEQ of its messages and expunges,
also in STATUS, §3.1.7), §3.2.5 SELECT/EXAMINE with QRESYNC (``qresync.py``), §3.2.11 the
CLOSED response code, RFC 7889 APPENDLIMIT, RFC 3501 §2.3.2 \\Recent counts (``recent.py``),
RFC 9208 §4.1.4 STATUS DELETED-STORAGE.

Left out: \\Marked/\\Unmarked, \\Remote (no remote mailboxes).
"""

from __future__ import annotations

import re

from hato.codec.imap import response
from hato.codec.imap.commands import Command, Create, ListCmd, MailboxArg, Rename, Select, Status
from hato.codec.imap.states import State
from hato.servers.imap import qresync
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.selected import open_selected
from hato.servers.imap.session import Session
from hato.store.model import (
    DELETED,
    HIERARCHY_SEPARATOR,
    INBOX,
    SPECIAL_USES,
    Mailbox,
    Message,
)

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
MAX_NAME_OCTETS = 1000


def _account_id(session: Session) -> int:
    assert session.account is not None
    return session.account.id


def valid_name(name: str) -> str:
    """Refuse names the store must never hold (RFC 9051 §5.1)."""
    if name.endswith(HIERARCHY_SEPARATOR):
        # RFC 9051 §6.3.4: a trailing separator only declares intent to create children.
        name = name.rstrip(HIERARCHY_SEPARATOR)
    parts = name.split(HIERARCHY_SEPARATOR)
    if not name or any(not p for p in parts) or len(name.encode("utf-8")) > MAX_NAME_OCTETS:
        raise CommandFailed("invalid mailbox name", code="CANNOT")
    # RFC 6855 §3: no controls (C0, DEL, C1), no U+2028 / U+2029 in mailbox names.
    if any(ch in name for ch in "%*\u2028\u2029") or any(
        ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name
    ):
        raise CommandFailed("mailbox names cannot contain wildcards or controls", code="CANNOT")
    return name


async def find_mailbox(session: Session, wire: str) -> Mailbox:
    name = session.decode_mailbox(wire)
    mailbox = await session.store.get_mailbox(_account_id(session), name)
    if mailbox is None:
        raise CommandFailed("no such mailbox", code="NONEXISTENT")
    return mailbox


# -- SELECT / EXAMINE / CLOSE / UNSELECT -----------------------------------------------------


def _deselect(session: Session) -> None:
    if session.selected is not None:
        # RFC 9051 §6.3.2 / RFC 7162 §3.2.11: the previous mailbox is closed.
        session.untagged(b"OK [CLOSED] previous mailbox closed")
    session.selected = None
    session.state = State.AUTHENTICATED


async def cmd_select(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Select)
    read_only = command.name == "EXAMINE"
    _deselect(session)
    params = command.args.qresync
    if params is not None and not session.qresync:
        # RFC 7162 §3.2.5: BAD unless the client issued ENABLE QRESYNC.
        raise CommandFailed("QRESYNC parameter without ENABLE QRESYNC", bad=True)
    mailbox = await find_mailbox(session, command.args.mailbox)
    if command.args.condstore:
        session.condstore = True  # RFC 7162 §3.1.8
    selected = await open_selected(session.store, mailbox, read_only=read_only,
                                   display_name=mailbox.name, claims=session.recent,
                                   legacy=not session.rev2,
                                   views=session.content_cache.views)
    flags = [*SYSTEM_FLAGS, *selected.keywords()]
    session.untagged(b"FLAGS " + response.flag_list(flags))
    # RFC 9051 §7.1: PERMANENTFLAGS; "\*" = new keywords can be created. None when read-only.
    permanent = response.flag_list([*flags, "\\*"]) if not read_only else b"()"
    session.untagged(b"OK [PERMANENTFLAGS " + permanent + b"] flags permitted")
    session.untagged(b"%d EXISTS" % selected.exists)
    if not session.rev2:
        session.untagged(b"%d RECENT" % len(selected.recent))  # RFC 3501 §7.3.2
        unseen = selected.first_unseen()
        if unseen is not None:
            session.untagged(b"OK [UNSEEN %d] first unseen" % unseen)
    session.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % selected.uidvalidity)
    # RFC 8474 §4.2: SELECT/EXAMINE report the MAILBOXID in an untagged OK.
    session.untagged(b"OK [MAILBOXID (" + mailbox_object_id(mailbox).encode("ascii") + b")] Ok")
    uidnext = max(mailbox.uidnext, selected.uidnext_hint())
    session.untagged(b"OK [UIDNEXT %d] predicted next UID" % uidnext)
    # RFC 7162 §3.1.2.1: the highest MODSEQ of the messages of this mailbox.
    session.untagged(b"OK [HIGHESTMODSEQ %d] highest" % selected.reported_highest)
    if session.rev2:
        # RFC 9051 §6.3.2: a LIST response with the mailbox name as the client should use it.
        session.untagged(b'LIST () "/" ' + session.encode_mailbox(mailbox.name))
    if params is not None:
        await qresync.resync_select(session, selected, params=params, uidnext=uidnext)
    session.selected = selected
    session.state = State.SELECTED
    code = "READ-ONLY" if read_only else "READ-WRITE"
    return Outcome(f"{command.name} completed", code)


async def cmd_close(session: Session, command: Command) -> Outcome:
    selected = session.selected
    assert selected is not None
    if not selected.read_only:
        # RFC 9051 §6.4.2: CLOSE expunges \Deleted messages silently (no EXPUNGE responses).
        await session.store.expunge(selected.mailbox_id)
    session.selected = None
    session.state = State.AUTHENTICATED
    return Outcome("CLOSE completed")


async def cmd_unselect(session: Session, command: Command) -> Outcome:
    session.selected = None  # RFC 3691 §2 / RFC 9051 §6.4.3: no expunge
    session.state = State.AUTHENTICATED
    return Outcome("UNSELECT completed")


# -- CREATE / DELETE / RENAME / SUBSCRIBE -----------------------------------------------------


async def cmd_create(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Create)
    name = valid_name(session.decode_mailbox(command.args.mailbox))
    if name == INBOX:
        raise CommandFailed("INBOX always exists", code="ALREADYEXISTS")  # RFC 9051 §6.3.4
    uses = [u for u in command.args.special_use]
    canonical = {u.lower(): u for u in SPECIAL_USES}
    if len(uses) > 1 or any(u.lower() not in canonical for u in uses):
        # RFC 6154 §3: USEATTR when the special-use attribute is not supported.
        raise CommandFailed("unsupported special-use attribute", code="USEATTR")
    special = canonical[uses[0].lower()] if uses else None
    created = await session.store.create_mailbox(_account_id(session), name, special_use=special)
    # RFC 8474 §4.1: the tagged OK of CREATE carries the new mailbox's MAILBOXID.
    return Outcome("CREATE completed", code=f"MAILBOXID ({mailbox_object_id(created)})")


async def cmd_delete(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, MailboxArg)
    name = session.decode_mailbox(command.args.mailbox)
    if name == INBOX:
        raise CommandFailed("INBOX cannot be deleted", code="CANNOT")  # RFC 9051 §6.3.5
    mailbox = await find_mailbox(session, command.args.mailbox)
    if session.selected is not None and session.selected.mailbox_id == mailbox.id:
        _deselect(session)
    await session.store.delete_mailbox(_account_id(session), mailbox.name)
    return Outcome("DELETE completed")


async def cmd_rename(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Rename)
    old = session.decode_mailbox(command.args.old)
    new = valid_name(session.decode_mailbox(command.args.new))
    if new == INBOX:
        raise CommandFailed("cannot rename to INBOX", code="ALREADYEXISTS")  # RFC 9051 §6.3.6
    await find_mailbox(session, command.args.old)
    renamed = await session.store.rename_mailbox(_account_id(session), old, new)
    if session.selected is not None and session.selected.mailbox_id == renamed.id:
        session.selected.name = renamed.name
    return Outcome("RENAME completed")


async def cmd_subscribe(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, MailboxArg)
    mailbox = await find_mailbox(session, command.args.mailbox)
    subscribe = command.name == "SUBSCRIBE"
    await session.store.set_subscribed(_account_id(session), mailbox.name, subscribe)
    return Outcome(f"{command.name} completed")


# -- LIST / LSUB --------------------------------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """RFC 9051 §6.3.9: "*" matches anything, "%" anything but the hierarchy separator."""
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append("[^" + re.escape(HIERARCHY_SEPARATOR) + "]*")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


async def cmd_list(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, ListCmd)
    args = command.args
    if not args.lsub and len(args.patterns) == 1 and args.patterns[0] == "" and not args.extended:
        # RFC 9051 §6.3.9: empty pattern asks for the hierarchy delimiter and root.
        session.untagged(b'LIST (\\Noselect) "/" ""')
        return Outcome("LIST completed")
    mailboxes = await session.store.list_mailboxes(_account_id(session))
    by_name = {m.name: m for m in mailboxes}
    names = set(by_name)
    for name in list(by_name):  # ancestors of existing names, which may not exist themselves
        parts = name.split(HIERARCHY_SEPARATOR)
        names.update(HIERARCHY_SEPARATOR.join(parts[:i]) for i in range(1, len(parts)))
    reference = session.decode_mailbox(args.reference) if args.reference else ""
    regexes = [pattern_regex(session.decode_mailbox(reference + p)) for p in args.patterns if p]
    subscribed_sel = "SUBSCRIBED" in args.select_opts or args.lsub
    special_sel = "SPECIAL-USE" in args.select_opts
    recursive = "RECURSIVEMATCH" in args.select_opts
    show_subscribed = subscribed_sel or "SUBSCRIBED" in args.return_opts
    verb = b"LSUB" if args.lsub else b"LIST"
    for name in sorted(names, key=lambda n: (n != INBOX, n)):
        if not any(r.fullmatch(name) for r in regexes):
            continue
        mailbox = by_name.get(name)
        prefix = name + HIERARCHY_SEPARATOR
        children = [m for n, m in by_name.items() if n.startswith(prefix)]
        childinfo = False
        if subscribed_sel and (mailbox is None or not mailbox.subscribed):
            # RFC 5258 §3.5: with RECURSIVEMATCH a parent of subscribed mailboxes is listed
            # with CHILDINFO; LSUB lists it as \Noselect (RFC 3501 §6.3.9).
            if not (recursive or args.lsub) or not any(c.subscribed for c in children):
                continue
            childinfo = True
        if special_sel and (mailbox is None or mailbox.special_use is None):
            continue
        attributes: list[str] = []
        if mailbox is None:
            attributes.append("\\NonExistent" if session.rev2 or args.extended else "\\Noselect")
        if not args.lsub:
            attributes.append("\\HasChildren" if children else "\\HasNoChildren")
        if show_subscribed and mailbox is not None and mailbox.subscribed and not args.lsub:
            attributes.append("\\Subscribed")
        if args.lsub and childinfo:
            attributes.append("\\Noselect")
        if mailbox is not None and mailbox.special_use and not args.lsub:
            attributes.append(mailbox.special_use)
        line = b"%s %s \"/\" %s" % (
            verb, response.flag_list(attributes), session.encode_mailbox(name))
        if childinfo and not args.lsub:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        session.untagged(line)
        if args.status_items and mailbox is not None:
            # RFC 5819 §2: the STATUS response follows the LIST response.
            await _status_response(session, mailbox, args.status_items)
    return Outcome(f"{verb.decode()} completed")


# -- STATUS ---------------------------------------------------------------------------------------


def mailbox_object_id(mailbox: Mailbox) -> str:
    """RFC 8474 §4 MAILBOXID: "F" and the UIDVALIDITY. UIDVALIDITY comes from one store-wide
    counter, so no two mailboxes ever share it (not even a deleted and a new one, which a
    reused row id could), and RENAME keeps it, as §4.1 requires of the MAILBOXID."""
    return f"F{mailbox.uidvalidity}"


async def _recent_count(session: Session, mailbox: Mailbox) -> int:
    """RFC 3501 §6.3.10 STATUS RECENT: messages no session has been told about yet, plus
    those this session holds \\Recent for when the mailbox is selected here."""
    selected = session.selected
    mine = len(selected.recent) if selected is not None and \
        selected.mailbox_id == mailbox.id else 0
    key = (mailbox.id, mailbox.uidvalidity)
    if mailbox.uidnext - 1 <= session.recent.high_water(key):
        return mine
    uids = [m.uid for m in await session.store.list_messages(mailbox.id)]
    return mine + session.recent.unclaimed(key, uids)


async def _status_response(session: Session, mailbox: Mailbox, items: tuple[str, ...]) -> None:
    values: list[bytes] = []
    deleted: list[Message] | None = None
    for item in items:
        if item == "MESSAGES":
            value = b"%d" % mailbox.message_count
        elif item == "UIDNEXT":
            value = b"%d" % mailbox.uidnext
        elif item == "UIDVALIDITY":
            value = b"%d" % mailbox.uidvalidity
        elif item == "UNSEEN":
            value = b"%d" % mailbox.unseen_count
        elif item == "SIZE":
            value = b"%d" % mailbox.size_bytes  # RFC 8438 §2 (RFC 9051 §6.3.11)
        elif item == "RECENT":
            value = b"%d" % await _recent_count(session, mailbox)
        elif item in ("DELETED", "DELETED-STORAGE"):
            if deleted is None:
                messages = await session.store.list_messages(mailbox.id)
                deleted = [m for m in messages if DELETED in m.flags]
            if item == "DELETED":
                value = b"%d" % len(deleted)
            else:
                # RFC 9208 §4.1.4: storage EXPUNGE would free, in STORAGE units of 1024
                # octets (§5.1); the sum of RFC822.SIZE of the \Deleted messages, rounded up.
                value = b"%d" % -(-sum(m.size for m in deleted) // 1024)
        elif item == "HIGHESTMODSEQ":
            session.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
            # RFC 7162 §3.1.7: the mailbox's HIGHESTMODSEQ, as SELECT would report it.
            value = b"%d" % max(mailbox.highest_modseq, 1)
        elif item == "MAILBOXID":
            value = b"(" + mailbox_object_id(mailbox).encode("ascii") + b")"  # RFC 8474 §4.3
        else:  # APPENDLIMIT (RFC 7889 §3)
            value = b"%d" % session.settings.append_limit
        values.append(item.encode("ascii") + b" " + value)
    session.untagged(b"STATUS " + session.encode_mailbox(mailbox.name) + b" ("
                     + b" ".join(values) + b")")


async def cmd_status(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Status)
    mailbox = await find_mailbox(session, command.args.mailbox)
    await _status_response(session, mailbox, command.args.items)
    return Outcome("STATUS completed")
