"""Rendering of IMAP server responses to bytes: status lines, strings, literals, flag lists.

Implements RFC 9051 §4.3 (quoted string vs literal: a quoted string is used only for short
printable 7-bit text, anything else — CR, LF, NUL, 8-bit, long — is sent as a literal, which is
valid for IMAP4rev1 and IMAP4rev2 alike), §4.5 NIL, §7.1 status responses with response codes,
§9 date-time for INTERNALDATE, RFC 3516 literal8 (``~{n}``) for BINARY data containing NUL.

Left out: non-synchronizing literals (RFC 9051 §9: never sent by a server).
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Iterable

from hato.codec.imap.scanner import ASTRING_CHARS

CRLF = b"\r\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_QUOTED = 1024
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")  # what a quoted string may carry (escaped)
_ATOM = re.compile(b"[" + re.escape(bytes(sorted(ASTRING_CHARS))) + b"]+")  # ASTRING-CHARs


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """``{n}CRLF`` data (RFC 9051 §4.3) or ``~{n}CRLF`` data (RFC 3516 literal8)."""
    return (b"~" if binary else b"") + b"{%d}\r\n" % len(data) + data


def string(data: bytes | str) -> bytes:
    """A quoted string when that is possible, else a literal."""
    raw = _bytes(data)
    if len(raw) <= MAX_QUOTED and _PRINTABLE.fullmatch(raw):
        if b"\\" in raw or b'"' in raw:
            raw = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + raw + b'"'
    return literal(raw)


def nstring(data: bytes | str | None) -> bytes:
    return b"NIL" if data is None else string(data)


def astring(data: bytes | str) -> bytes:
    """An atom when every character is an ASTRING-CHAR (and it is not NIL), else a string."""
    raw = _bytes(data)
    if raw and _ATOM.fullmatch(raw) and raw.upper() != b"NIL":
        return raw
    return string(raw)


def mailbox(name: str) -> bytes:
    """A mailbox name for LIST/STATUS responses (RFC 9051 §9 mailbox = "INBOX" / astring)."""
    return astring(name)


def utf8_mailbox(name: str) -> bytes:
    """A mailbox name as a UTF-8 quoted string (RFC 6855 §3 uQUOTED-CHAR: only after ENABLE
    UTF8=ACCEPT); an atom when that is possible, a literal for controls or long names."""
    raw = name.encode("utf-8")
    if raw and raw.upper() != b"NIL" and all(b in ASTRING_CHARS for b in raw):
        return raw
    if len(raw) <= MAX_QUOTED and all(b >= 0x20 and b != 0x7F for b in raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(raw)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("utf-8") for f in flags) + b")"


def sorted_flags(flags: Iterable[str]) -> list[str]:
    """System flags first (in RFC order), then keywords alphabetically: stable output."""
    order = {"\\Answered": 0, "\\Flagged": 1, "\\Deleted": 2, "\\Seen": 3, "\\Draft": 4}
    return sorted(flags, key=lambda f: (order.get(f, 5), f))


def date_time(timestamp: float) -> bytes:
    """RFC 9051 §9 date-time in UTC: ``"dd-Mon-yyyy hh:mm:ss +0000"`` (date-day-fixed)."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.UTC)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        moment.day, _MONTHS[moment.month - 1].encode("ascii"), moment.year,
        moment.hour, moment.minute, moment.second,
    )


def text(value: str) -> bytes:
    """resp-text: no CR/LF, printable ASCII only (IMAP4rev1 text is 7-bit)."""
    cleaned = "".join(c if 0x20 <= ord(c) <= 0x7E else "?" for c in value)
    return cleaned.encode("ascii") or b"done"


def status(tag: str, state: str, message: str, code: str | None = None) -> bytes:
    """``tag OK|NO|BAD [code] text`` (or ``*`` untagged, also for BYE/PREAUTH)."""
    head = f"{tag} {state} ".encode("ascii")
    if code:
        head += b"[" + code.encode("utf-8") + b"] "
    return head + text(message) + CRLF


def untagged(body: bytes) -> bytes:
    return b"* " + body + CRLF


def continuation(message: str = "Ready") -> bytes:
    return b"+ " + text(message) + CRLF


def continuation_data(data: bytes) -> bytes:
    """``+ base64`` (RFC 9051 §7.6 continue-req with base64, for AUTHENTICATE)."""
    return b"+ " + base64.b64encode(data) + CRLF
