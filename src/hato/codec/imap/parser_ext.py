"""Command arguments of the IMAP extensions added in the second wave: SORT, THREAD, QUOTA,
COMPRESS, and the APPEND data forms of CATENATE and UTF8.

Implements the client grammar of RFC 5256 §5 (sort, thread, sort-criteria, search-criteria
with a mandatory charset), RFC 5957 §4 (DISPLAYFROM, DISPLAYTO sort keys), RFC 9208 §7
(getquota, getquotaroot, setquota), RFC 4978 §5 (compress), RFC 4469 §5 (append-data =/
"CATENATE" SP "(" cat-part *(SP cat-part) ")", cat-part = text-literal / url) and RFC 6855 §4
(utf8-literal = "UTF8" SP "(" literal8 ")" as append-data and as cat-part).

Left out: ESORT return options (RFC 5267), RFC 7162 §3.1.9's MODSEQ sort key (not defined:
only the search key is). Charsets other than UTF-8 and US-ASCII are refused with
``NO [BADCHARSET]`` (RFC 5256 §3: both MUST be implemented).
"""

from __future__ import annotations

from hato.codec.imap.commands import (
    CatPart,
    CatText,
    CatUrl,
    Compress,
    QuotaRootArg,
    SetQuota,
    Sort,
    SortCriterion,
    Thread,
)
from hato.codec.imap.framing import Literal
from hato.codec.imap.scanner import Scanner
from hato.codec.imap.search_keys import CHARSETS, parse_keys

# RFC 5256 §5 sort-key, RFC 5957 §4 sort-key =/ "DISPLAYFROM" / "DISPLAYTO"
SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
MAX_CAT_PARTS = 64  # parts of one CATENATE (each URL part is a store read)


def _charset(s: Scanner) -> str:
    """RFC 5256 §5: charset = atom / quoted (mandatory for SORT and THREAD)."""
    charset = (s.quoted_text() if s.peek() == 0x22 else s.atom()).upper()
    if charset not in CHARSETS:
        raise s.error("unsupported charset", status="NO",
                      code="BADCHARSET (" + " ".join(CHARSETS) + ")")
    return charset


def parse_sort(s: Scanner) -> Sort:
    """``SORT SP sort-criteria SP search-criteria`` after the command name."""
    s.sp()
    s.expect(b"(")
    criteria: list[SortCriterion] = []
    while True:
        word = s.keyword()
        reverse = False
        if word == "REVERSE":  # RFC 5256 §5: ["REVERSE" SP] sort-key
            reverse = True
            s.sp()
            word = s.keyword()
        if word not in SORT_KEYS:
            raise s.error(f"unknown sort key {word[:40]}")
        criteria.append(SortCriterion(word, reverse))
        if s.peek() != 0x20:
            break
        s.sp()
    s.expect(b")")
    s.sp()
    charset = _charset(s)
    s.sp()
    return Sort(tuple(criteria), charset, parse_keys(s))


def parse_thread(s: Scanner) -> Thread:
    """``THREAD SP thread-alg SP search-criteria`` after the command name."""
    s.sp()
    algorithm = s.keyword()
    if algorithm not in THREAD_ALGORITHMS:
        raise s.error(f"unsupported threading algorithm {algorithm[:40]}")
    s.sp()
    charset = _charset(s)
    s.sp()
    return Thread(algorithm, charset, parse_keys(s))


def parse_getquota(s: Scanner) -> QuotaRootArg:
    s.sp()
    return QuotaRootArg(s.astring_text())  # RFC 9208 §7: quota-root-name = astring


def parse_setquota(s: Scanner) -> SetQuota:
    s.sp()
    root = s.astring_text()
    s.sp()
    s.expect(b"(")
    limits: list[tuple[str, int]] = []
    while s.peek() != 0x29:
        if limits:
            s.sp()
        name = s.keyword()  # RFC 9208 §7: resource-name = atom
        s.sp()
        limits.append((name, s.number64()))  # resource-limit = number64
    s.expect(b")")
    return SetQuota(root, tuple(limits))


def parse_compress(s: Scanner) -> Compress:
    s.sp()
    return Compress(s.keyword())  # RFC 4978 §5: algorithm = "DEFLATE" (checked by the server)


def utf8_literal(s: Scanner) -> bytes:
    """RFC 6855 §4: utf8-literal = "UTF8" SP "(" literal8 ")" (after the "UTF8" keyword)."""
    s.sp()
    s.expect(b"(")
    literal = s.literal()
    if not literal.binary:
        raise s.error("UTF8 data must be a literal8 (~{n})")
    s.expect(b")")
    return literal.data


def _text_literal(s: Scanner) -> bytes:
    """RFC 4469 §5: text-literal = "TEXT" SP literal (after "TEXT"); literal8 is refused."""
    s.sp()
    literal: Literal = s.literal()
    if literal.binary or 0 in literal.data:
        raise s.error("TEXT takes a literal without NUL")  # RFC 9051 §9: literal = *CHAR8
    return literal.data


def catenate(s: Scanner) -> tuple[CatPart, ...]:
    """RFC 4469 §5 ``"(" cat-part *(SP cat-part) ")"`` (after "CATENATE" SP)."""
    s.expect(b"(")
    parts: list[CatPart] = []
    while True:
        word = s.keyword()
        if word == "TEXT":
            parts.append(CatText(_text_literal(s)))
        elif word == "URL":  # url = "URL" SP astring
            s.sp()
            parts.append(CatUrl(s.astring_text()))
        elif word == "UTF8":  # RFC 6855 §4: cat-part =/ utf8-literal
            parts.append(CatText(utf8_literal(s), utf8=True))
        else:
            raise s.error(f"unknown CATENATE part {word[:40]}")
        if len(parts) > MAX_CAT_PARTS:
            raise s.error("too many CATENATE parts")
        if s.peek() != 0x20:
            break
        s.sp()
    s.expect(b")")
    return tuple(parts)
