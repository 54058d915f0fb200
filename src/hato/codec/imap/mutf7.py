"""Modified UTF-7 mailbox names for IMAP4rev1 clients (RFC 3501 §5.1.3).

IMAP4rev2 (RFC 9051 §5.1) and UTF8=ACCEPT sessions use UTF-8 names; IMAP4rev1 sessions send and
receive names in modified UTF-7, which ``encode``/``decode`` convert. Decoding is strict (RFC
9051 Appendix A.1: a name that is not valid modified UTF-7 is refused), so one name has one form.

Left out: nothing. (``hato.ops.mutf7`` has the same conversion for the Maildir exporter, which
sits above this layer.)
"""

from __future__ import annotations

import base64
import binascii
import re

_SHIFT = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode(name: str) -> str:
    """Unicode name to modified UTF-7: printable ASCII stands for itself, "&" is "&-",
    everything else is UTF-16BE in modified base64 ("," for "/", no padding)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
                       + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """Modified UTF-7 to Unicode; raises ValueError for anything that is not the canonical
    encoding of some name (8-bit characters, bad base64, "&" not closed, non-minimal forms)."""
    if not text.isascii() or any(not 0x20 <= ord(c) <= 0x7E for c in text):
        raise ValueError("mailbox name is not 7-bit printable")
    out: list[str] = []
    pos = 0
    while pos < len(text):
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:amp])
        match = _SHIFT.match(text, amp)
        if match is None:
            raise ValueError("unterminated & sequence in mailbox name")
        body = match.group(1)
        if not body:
            out.append("&")
        else:
            padded = body.replace(",", "/") + "=" * (-len(body) % 4)
            try:
                decoded = base64.b64decode(padded, validate=True).decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError("invalid modified base64 in mailbox name") from None
            if any(0x20 <= ord(c) <= 0x7E for c in decoded):
                raise ValueError("printable ASCII must not be base64-encoded")
            out.append(decoded)
        pos = match.end()
    result = "".join(out)
    if encode(result) != text:
        raise ValueError("mailbox name is not in canonical modified UTF-7")
    return result
