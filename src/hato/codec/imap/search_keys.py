"""Parser for the SEARCH command's program: return options, CHARSET and the search-key tree.

Implements RFC 9051 §6.4.4 (search-key, search-program, search-return-opts), RFC 3501 §6.4.4
keys still sent by IMAP4rev1 clients (NEW, OLD, RECENT), RFC 4731 §3.1 ESEARCH return options
(MIN MAX ALL COUNT), RFC 5182 SAVE and ``$``, RFC 7162 §3.1.5 MODSEQ (with the optional entry
name and type, which Hato treats as the message's MODSEQ), RFC 5032 OLDER/YOUNGER, RFC 8514
SAVEDBEFORE/SAVEDON/SAVEDSINCE/SAVEDATESUPPORTED, RFC 8474 EMAILID/THREADID.

Left out: FUZZY (RFC 6203), FILTER (RFC 5466), ANNOTATION searches. CHARSET other than UTF-8
and US-ASCII gives ``NO [BADCHARSET (UTF-8 US-ASCII)]`` (RFC 9051 §6.4.4).
"""

from __future__ import annotations

import datetime

from hato.codec.imap.commands import (
    KeyAll,
    KeyAnd,
    KeyDate,
    KeyFlag,
    KeyHeader,
    KeyModSeq,
    KeyNot,
    KeyObjectId,
    KeyOr,
    KeyRecent,
    KeySaveDateSupported,
    KeySequence,
    KeySize,
    KeyText,
    KeyWithin,
    Search,
    SearchKey,
)
from hato.codec.imap.scanner import Scanner

MAX_DEPTH = 50  # nesting bound: NOT/OR/parentheses (no recursion error on hostile input)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
CHARSETS = ("UTF-8", "US-ASCII")

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "SUBJECT": "subject", "TO": "to"}
_DATE_KEYS = {
    "BEFORE": ("internal", "before"),
    "ON": ("internal", "on"),
    "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"),
    "SENTON": ("sent", "on"),
    "SENTSINCE": ("sent", "since"),
    "SAVEDBEFORE": ("saved", "before"),
    "SAVEDON": ("saved", "on"),
    "SAVEDSINCE": ("saved", "since"),
}


def parse_search(s: Scanner) -> Search:
    """``SEARCH [RETURN (...)] [CHARSET x] key *(SP key)`` after the command name."""
    s.sp()
    returns: tuple[str, ...] | None = None
    if s.peek_word().upper() == "RETURN":
        s.keyword()
        s.sp()
        s.expect(b"(")
        opts: list[str] = []
        while s.peek() != 0x29:
            if opts:
                s.sp()
            opt = s.keyword()
            if opt not in RETURN_OPTIONS:
                raise s.error(f"unknown SEARCH return option {opt[:40]}")
            opts.append(opt)
        s.expect(b")")
        s.sp()
        returns = tuple(opts)
    charset: str | None = None
    if s.peek_word().upper() == "CHARSET":
        s.keyword()
        s.sp()
        charset = s.astring_text().upper()
        if charset not in CHARSETS:
            raise s.error("unsupported charset", status="NO",
                          code="BADCHARSET (" + " ".join(CHARSETS) + ")")
        s.sp()
    keys = [_key(s, 0)]
    while s.peek() == 0x20:
        s.sp()
        keys.append(_key(s, 0))
    key: SearchKey = keys[0] if len(keys) == 1 else KeyAnd(tuple(keys))
    return Search(key, charset, returns)


def parse_keys(s: Scanner) -> SearchKey:
    """``search-key *(SP search-key)`` (the criteria after the charset of SORT and THREAD,
    RFC 5256 §5 search-criteria): one key, or their AND."""
    keys = [_key(s, 0)]
    while s.peek() == 0x20:
        s.sp()
        keys.append(_key(s, 0))
    return keys[0] if len(keys) == 1 else KeyAnd(tuple(keys))


def _date(s: Scanner) -> datetime.date:
    """RFC 9051 §9 date = date-text / DQUOTE date-text DQUOTE; date-text = d[d]-Mon-yyyy."""
    text = s.quoted_text() if s.peek() == 0x22 else s.atom()
    parts = text.split("-")
    try:
        if len(parts) != 3 or not 1 <= len(parts[0]) <= 2 or len(parts[2]) != 4:
            raise ValueError
        if not (parts[0].isdigit() and parts[2].isdigit()):
            raise ValueError
        return datetime.date(int(parts[2]), _MONTHS.index(parts[1].upper()) + 1, int(parts[0]))
    except ValueError:
        raise s.error("invalid date") from None


def _key(s: Scanner, depth: int) -> SearchKey:
    if depth > MAX_DEPTH:
        raise s.error("search program nested too deeply")
    head = s.peek()
    if head == 0x28:
        s.expect(b"(")
        keys = [_key(s, depth + 1)]
        while s.peek() == 0x20:
            s.sp()
            keys.append(_key(s, depth + 1))
        s.expect(b")")
        return keys[0] if len(keys) == 1 else KeyAnd(tuple(keys))
    if head is not None and (0x30 <= head <= 0x39 or head in (0x2A, 0x24)):
        return KeySequence(s.sequence_set(), uid=False)
    name = s.keyword()
    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return KeyFlag(flag, present)
    if name == "ALL":
        return KeyAll()
    if name == "RECENT":
        return KeyRecent(True)
    if name == "NEW":
        # RFC 3501 §6.4.4: NEW is functionally equivalent to "(RECENT UNSEEN)".
        return KeyAnd((KeyRecent(True), KeyFlag("\\Seen", False)))
    if name == "OLD":
        return KeyRecent(False)
    if name == "SAVEDATESUPPORTED":
        return KeySaveDateSupported()
    s.sp()
    if name in ("KEYWORD", "UNKEYWORD"):
        return KeyFlag(s.flag(), name == "KEYWORD")
    if name in _HEADER_KEYS:
        return KeyHeader(_HEADER_KEYS[name], s.astring_text())
    if name == "HEADER":
        field = s.astring_text()
        s.sp()
        return KeyHeader(field.lower(), s.astring_text())
    if name in ("BODY", "TEXT"):
        return KeyText(name == "BODY", s.astring_text())
    if name in _DATE_KEYS:
        field, op = _DATE_KEYS[name]
        return KeyDate(field, op, _date(s))
    if name in ("LARGER", "SMALLER"):
        return KeySize(name == "LARGER", s.number64())
    if name == "UID":
        return KeySequence(s.sequence_set(), uid=True)
    if name == "NOT":
        return KeyNot(_key(s, depth + 1))
    if name == "OR":
        left = _key(s, depth + 1)
        s.sp()
        return KeyOr(left, _key(s, depth + 1))
    if name == "MODSEQ":
        # RFC 7162 §3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer
        if s.peek() == 0x22:
            s.quoted_text()
            s.sp()
            if s.keyword() not in ("PRIV", "SHARED", "ALL"):
                raise s.error("invalid MODSEQ entry type")
            s.sp()
        return KeyModSeq(s.number64())
    if name in ("OLDER", "YOUNGER"):
        return KeyWithin(name == "OLDER", s.nz_number())  # RFC 5032 §3
    if name in ("EMAILID", "THREADID"):
        return KeyObjectId(name, s.atom())  # RFC 8474 §4.1 objectid = 1*255(ALPHA/DIGIT/"_"/"-")
    raise s.error(f"unknown search key {name[:40]}")
