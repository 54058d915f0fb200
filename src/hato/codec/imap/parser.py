"""Sans-IO IMAP command parser: a framed command (line segments + literals) to a typed Command.

Implements the client command grammar of RFC 9051 §9 (and RFC 3501 §9 forms still sent by
IMAP4rev1 clients: LSUB, CHECK, RECENT/NEW/OLD search keys, RFC822.* fetch items) with the
extension syntax listed in ``commands.py``. Parsing is strict: SP is exactly one space
(RFC 9051 §9 note 2), NUL is refused outside literal8 (note 3), keywords are case-insensitive
(note 1). Every syntax error raises CommandSyntaxError carrying the tag (when known) and a
short reason for the tagged BAD.

The second-wave extensions (SORT/THREAD, QUOTA, COMPRESS, CATENATE and UTF8 APPEND data) are
parsed in ``parser_ext.py``.

Left out: METADATA, NOTIFY commands (BAD "unknown command").
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
from collections.abc import Callable

from hato.codec.imap import parser_ext, search_keys
from hato.codec.imap.commands import (
    Append,
    AppendMessage,
    Args,
    Authenticate,
    Command,
    CopyMove,
    Create,
    Enable,
    Expunge,
    Fetch,
    FetchItem,
    Id,
    ListCmd,
    Login,
    MailboxArg,
    Qresync,
    Rename,
    Section,
    Select,
    Status,
    Store,
)
from hato.codec.imap.framing import RawCommand
from hato.codec.imap.scanner import CommandSyntaxError, Scanner
from hato.codec.imap.sequence import SequenceSet

__all__ = ["CommandSyntaxError", "parse_command"]

_NO_ARGS = frozenset(
    {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "NAMESPACE", "IDLE"}
)
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
# RFC 9051 §6.3.11 status-att; RECENT from RFC 3501; HIGHESTMODSEQ RFC 7162 §3.1.6;
# APPENDLIMIT RFC 7889 §3.
STATUS_ITEMS = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
     "HIGHESTMODSEQ", "APPENDLIMIT", "DELETED-STORAGE",  # RFC 9208 §4.1.4 DELETED-STORAGE
     "MAILBOXID"}  # RFC 8474 §4.3
)
_FETCH_MACROS = {
    # RFC 9051 §6.4.5: ALL, FAST, FULL macros.
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_FETCH = frozenset(
    {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
     "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ", "SAVEDATE", "EMAILID", "THREADID"}
)
_SECTION_TEXT = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def parse_command(raw: RawCommand) -> Command:
    """Parse one framed command; raises CommandSyntaxError (never anything else)."""
    s = Scanner(raw.segments)
    tag = s.tag()
    s.tag_value = tag
    s.sp()
    name = s.keyword()
    uid = False
    if name == "UID":
        uid = True
        s.sp()
        name = s.keyword()
        if name not in ("COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD"):
            raise s.error(f"UID {name} is not a command")
    if name in _NO_ARGS:
        s.end()
        return Command(tag, name)
    handler = _HANDLERS.get(name)
    if handler is None:
        raise s.error(f"unknown command {name[:40]}")
    if name == "EXPUNGE" and not uid:
        s.end()
        return Command(tag, name, Expunge(None))
    command = Command(tag, name, handler(s), uid)
    s.end()
    return command


# -- command arguments -----------------------------------------------------------------------


def _login(s: Scanner) -> Login:
    s.sp()
    user = s.astring_text()
    s.sp()
    return Login(user, s.astring_text())


def _authenticate(s: Scanner) -> Authenticate:
    s.sp()
    mechanism = s.atom().upper()
    initial: bytes | None = None
    if s.peek() == 0x20:
        s.sp()
        token = s.atom()  # base64 / "=" (RFC 4959): "+", "/" and "=" are ATOM-CHARs
        if token == "=":
            initial = b""  # RFC 4959 §3: "=" is an empty initial response
        else:
            try:
                initial = base64.b64decode(token.encode("ascii"), validate=True)
            except (binascii.Error, ValueError):
                raise s.error("invalid base64 in initial response") from None
    return Authenticate(mechanism, initial)


def _enable(s: Scanner) -> Enable:
    caps = []
    while True:
        s.sp()
        caps.append(s.atom().upper())
        if s.peek() != 0x20:
            return Enable(tuple(caps))


def _id(s: Scanner) -> Id:
    s.sp()
    if s.try_keyword("NIL"):
        return Id(None)
    s.expect(b"(")
    params: list[tuple[str, str | None]] = []
    while s.peek() != 0x29:
        if params:
            s.sp()
        key = s.string_text()
        s.sp()
        value = s.nstring_text()
        params.append((key, value))
        if len(params) > 30:  # RFC 2971 §3.3: at most 30 field-value pairs
            raise s.error("too many ID parameters")
    s.expect(b")")
    return Id(tuple(params))


def _mailbox_arg(s: Scanner) -> MailboxArg:
    s.sp()
    return MailboxArg(s.mailbox())


def _select(s: Scanner) -> Select:
    s.sp()
    mailbox = s.mailbox()
    condstore = False
    qresync: Qresync | None = None
    if s.peek() == 0x20:
        s.sp()
        s.expect(b"(")
        first = True
        while s.peek() != 0x29:
            if not first:
                s.sp()
            first = False
            param = s.keyword()
            if param == "CONDSTORE":  # RFC 7162 §3.1.8
                condstore = True
            elif param == "QRESYNC":  # RFC 7162 §3.2.5
                s.sp()
                qresync = _qresync(s)
            else:
                raise s.error(f"unknown SELECT parameter {param[:40]}")
        s.expect(b")")
    return Select(mailbox, condstore, qresync)


def _qresync(s: Scanner) -> Qresync:
    s.expect(b"(")
    uidvalidity = s.nz_number()
    s.sp()
    modseq = s.number64()
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if s.peek() == 0x20:
        s.sp()
        if s.peek() != 0x28:
            known = s.sequence_set(allow_saved=False)
            if s.peek() == 0x20:
                s.sp()
        if s.peek() == 0x28:
            s.expect(b"(")
            seqs = s.sequence_set(allow_saved=False)
            s.sp()
            uids = s.sequence_set(allow_saved=False)
            s.expect(b")")
            match = (seqs, uids)
    s.expect(b")")
    return Qresync(uidvalidity, modseq, known, match)


def _create(s: Scanner) -> Create:
    s.sp()
    mailbox = s.mailbox()
    uses: list[str] = []
    if s.peek() == 0x20:
        # RFC 6154 §3: CREATE mailbox (USE (\Sent ...))
        s.sp()
        s.expect(b"(")
        if s.keyword() != "USE":
            raise s.error("unknown CREATE parameter")
        s.sp()
        s.expect(b"(")
        while s.peek() != 0x29:
            if uses:
                s.sp()
            uses.append(s.flag())
        s.expect(b")")
        s.expect(b")")
    return Create(mailbox, tuple(uses))


def _rename(s: Scanner) -> Rename:
    s.sp()
    old = s.mailbox()
    s.sp()
    return Rename(old, s.mailbox())


def _list(s: Scanner) -> ListCmd:
    s.sp()
    select: set[str] = set()
    extended = False
    if s.peek() == 0x28:
        # RFC 5258 §3: list-select-opts
        extended = True
        s.expect(b"(")
        while s.peek() != 0x29:
            if select:
                s.sp()
            opt = s.keyword()
            if opt not in _LIST_SELECT:
                raise s.error(f"unknown LIST selection option {opt[:40]}")
            select.add(opt)
        s.expect(b")")
        # RFC 5258 §3: RECURSIVEMATCH needs a base option (SUBSCRIBED or SPECIAL-USE).
        if "RECURSIVEMATCH" in select and not select & {"SUBSCRIBED", "SPECIAL-USE"}:
            raise s.error("RECURSIVEMATCH without a base selection option")
        s.sp()
    reference = s.mailbox()
    s.sp()
    patterns: list[str] = []
    if s.peek() == 0x28:
        extended = True
        s.expect(b"(")
        while True:
            patterns.append(s.list_mailbox())
            if s.peek() != 0x20:
                break
            s.sp()
        s.expect(b")")
    else:
        patterns.append(s.list_mailbox())
    returns: set[str] = set()
    status_items: tuple[str, ...] = ()
    if s.peek() == 0x20:
        extended = True
        s.sp()
        if s.keyword() != "RETURN":
            raise s.error("expected RETURN")
        s.sp()
        s.expect(b"(")
        while s.peek() != 0x29:
            if returns:
                s.sp()
            opt = s.keyword()
            if opt not in _LIST_RETURN:
                raise s.error(f"unknown LIST return option {opt[:40]}")
            if opt == "STATUS":  # RFC 5819 §2
                s.sp()
                status_items = _status_items(s)
            returns.add(opt)
        s.expect(b")")
    return ListCmd(reference, tuple(patterns), frozenset(select), frozenset(returns),
                   status_items, extended=extended)


def _lsub(s: Scanner) -> ListCmd:
    s.sp()
    reference = s.mailbox()
    s.sp()
    return ListCmd(reference, (s.list_mailbox(),), lsub=True)


def _status_items(s: Scanner) -> tuple[str, ...]:
    s.expect(b"(")
    items: list[str] = []
    while True:
        item = s.keyword()
        if item not in STATUS_ITEMS:
            raise s.error(f"unknown STATUS item {item[:40]}")
        items.append(item)
        if s.peek() != 0x20:
            break
        s.sp()
    s.expect(b")")
    return tuple(items)


def _status(s: Scanner) -> Status:
    s.sp()
    mailbox = s.mailbox()
    s.sp()
    return Status(mailbox, _status_items(s))


def _append(s: Scanner) -> Append:
    s.sp()
    mailbox = s.mailbox()
    messages: list[AppendMessage] = []
    while True:
        # RFC 3502 §6.3.11: MULTIAPPEND repeats [flag-list] [date-time] literal.
        s.sp()
        flags: tuple[str, ...] = ()
        when: float | None = None
        if s.peek() == 0x28:
            flags = s.flag_list()
            s.sp()
        if s.peek() == 0x22:
            when = _date_time(s)
            s.sp()
        word = s.peek_word().upper()
        if word == "CATENATE":  # RFC 4469 §5
            s.keyword()
            s.sp()
            parts = parser_ext.catenate(s)
            messages.append(AppendMessage(flags, when, b"", catenate=parts))
        elif word == "UTF8":  # RFC 6855 §4: append-data =/ utf8-literal
            s.keyword()
            data = parser_ext.utf8_literal(s)
            messages.append(AppendMessage(flags, when, data, binary=True, utf8=True))
        else:
            literal = s.literal()
            messages.append(AppendMessage(flags, when, literal.data, literal.binary))
        if s.peek() != 0x20:
            return Append(mailbox, tuple(messages))


def _date_time(s: Scanner) -> float:
    """RFC 9051 §9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time
    SP zone DQUOTE, as POSIX seconds."""
    text = s.quoted_text()
    if len(text) != 26 or text[2] != "-" or text[6] != "-" or text[11] != " " \
            or text[20] != " ":
        raise s.error("invalid date-time")
    day_text, month_text, year_text = text[0:2], text[3:6].upper(), text[7:11]
    clock, zone = text[12:20], text[21:26]
    day_text = day_text.lstrip(" ")  # date-day-fixed = (SP DIGIT) / 2DIGIT
    try:
        if month_text not in _MONTHS or not (day_text.isdigit() and year_text.isdigit()):
            raise ValueError
        hh, mm, ss = (int(p) for p in clock.split(":")) if clock.count(":") == 2 else (-1,) * 3
        if zone[0] not in "+-" or not zone[1:].isdigit() or len(clock) != 8:
            raise ValueError
        moment = datetime.datetime(int(year_text), _MONTHS[month_text], int(day_text), hh, mm, ss)
    except ValueError:
        raise s.error("invalid date-time") from None
    offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60 * (1 if zone[0] == "+" else -1)
    return float(calendar.timegm(moment.timetuple()) - offset)


def _fetch(s: Scanner) -> Fetch:
    s.sp()
    sequence = s.sequence_set()
    s.sp()
    items: list[FetchItem] = []
    if s.peek() == 0x28:
        s.expect(b"(")
        while True:
            items.append(_fetch_att(s))
            if s.peek() != 0x20:
                break
            s.sp()
        s.expect(b")")
    else:
        word = s.peek_word().upper()
        if word in _FETCH_MACROS:
            s.keyword()
            items.extend(FetchItem(n) for n in _FETCH_MACROS[word])
        else:
            items.append(_fetch_att(s))
    changed_since: int | None = None
    vanished = False
    if s.peek() == 0x20:
        # RFC 7162 §3.1.4.1 / §3.2.6: fetch-modifiers
        s.sp()
        s.expect(b"(")
        first = True
        while s.peek() != 0x29:
            if not first:
                s.sp()
            first = False
            modifier = s.keyword()
            if modifier == "CHANGEDSINCE":
                s.sp()
                changed_since = s.number64()
            elif modifier == "VANISHED":
                vanished = True
            else:
                raise s.error(f"unknown FETCH modifier {modifier[:40]}")
        s.expect(b")")
    return Fetch(sequence, tuple(items), changed_since, vanished)


def _fetch_att(s: Scanner) -> FetchItem:
    name = s.fetch_name()
    if s.peek() != 0x5B:  # "["
        if name not in _SIMPLE_FETCH:
            raise s.error(f"unknown FETCH item {name[:40]}")
        return FetchItem(name)
    if name in ("BODY", "BODY.PEEK"):
        section = _section(s, binary=False)
        partial = _partial(s)
        return FetchItem("BODY[]", section, partial, peek=name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        # RFC 3516 §6.4.5 / RFC 9051 §6.4.5: section-binary = "[" [section-part] "]"
        section = _section(s, binary=True)
        partial = _partial(s) if name != "BINARY.SIZE" else None
        base = "BINARY.SIZE" if name == "BINARY.SIZE" else "BINARY"
        return FetchItem(base, section, partial, peek=name == "BINARY.PEEK")
    raise s.error(f"unknown FETCH item {name[:40]}")


def _section(s: Scanner, *, binary: bool) -> Section:
    s.expect(b"[")
    if s.peek() == 0x5D:
        s.expect(b"]")
        return Section()
    spec = s.section_word()
    pieces = spec.split(".")
    part: list[int] = []
    while pieces and pieces[0].isdigit():
        if pieces[0].startswith("0") or len(pieces[0]) > 10:
            raise s.error("invalid section part number")
        part.append(int(pieces.pop(0)))
    text = ".".join(pieces).upper() or None
    if binary and text is not None:
        raise s.error("BINARY takes only a part number")
    if text is not None and text not in _SECTION_TEXT:
        raise s.error("invalid section")
    if text == "MIME" and not part:
        raise s.error("MIME needs a part number")  # RFC 9051 §9 section-text
    fields: list[str] = []
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        s.sp()
        s.expect(b"(")
        while True:
            fields.append(s.astring_text())
            if s.peek() != 0x20:
                break
            s.sp()
        s.expect(b")")
    s.expect(b"]")
    return Section(tuple(part), text, tuple(fields))


def _partial(s: Scanner) -> tuple[int, int] | None:
    if s.peek() != 0x3C:  # "<"
        return None
    s.expect(b"<")
    offset = s.number64()
    s.expect(b".")
    length = s.number64()
    if length == 0:
        raise s.error("partial length must be non-zero")  # RFC 9051 §9 nz-number64
    s.expect(b">")
    return offset, length


def _store(s: Scanner) -> Store:
    s.sp()
    sequence = s.sequence_set()
    s.sp()
    unchanged: int | None = None
    if s.peek() == 0x28:
        # RFC 7162 §3.1.3: store-modifiers, UNCHANGEDSINCE
        s.expect(b"(")
        if s.keyword() != "UNCHANGEDSINCE":
            raise s.error("unknown STORE modifier")
        s.sp()
        unchanged = s.number64()
        s.expect(b")")
        s.sp()
    item = s.fetch_name()
    mode = ""
    if item[:1] in ("+", "-"):
        mode, item = item[0], item[1:]
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise s.error("expected FLAGS, +FLAGS or -FLAGS")
    s.sp()
    if s.peek() == 0x28:
        flags = s.flag_list()
    else:
        collected = [s.flag()]
        while s.peek() == 0x20:
            s.sp()
            collected.append(s.flag())
        flags = tuple(collected)
    return Store(sequence, mode, item.endswith(".SILENT"), flags, unchanged)


def _copy(s: Scanner) -> CopyMove:
    s.sp()
    sequence = s.sequence_set()
    s.sp()
    return CopyMove(sequence, s.mailbox())


def _uid_expunge(s: Scanner) -> Expunge:
    s.sp()
    return Expunge(s.sequence_set())


_HANDLERS: dict[str, Callable[[Scanner], Args]] = {
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "ID": _id,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _mailbox_arg,
    "SUBSCRIBE": _mailbox_arg,
    "UNSUBSCRIBE": _mailbox_arg,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "SEARCH": search_keys.parse_search,
    "EXPUNGE": _uid_expunge,
    "SORT": parser_ext.parse_sort,  # RFC 5256
    "THREAD": parser_ext.parse_thread,
    "GETQUOTA": parser_ext.parse_getquota,  # RFC 9208
    "GETQUOTAROOT": _mailbox_arg,
    "SETQUOTA": parser_ext.parse_setquota,
    "COMPRESS": parser_ext.parse_compress,  # RFC 4978
}
