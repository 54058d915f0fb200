"""Modified UTF-7 for mailbox names, as IMAP4rev1 and Dovecot's Maildir++ directories use it.

Implements RFC 3501 §5.1.3 (encode and strict decode). Used by the Maildir export/import to
name folder directories the way Dovecot does without its ``UTF-8`` mail_location option.

Leaves out: the RFC 2152 (plain UTF-7) variant, and lenient decoding of malformed names
(a malformed name raises ValueError; the caller decides what to do).
"""

from __future__ import annotations

import base64
import re

# RFC 3501 §5.1.3: 0x20-0x25 and 0x27-0x7e represent themselves; "&" becomes "&-".
_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")
_SHIFTED = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode(name: str) -> str:
    """Encode a Unicode mailbox name in modified UTF-7."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        direct = _DIRECT.match(name, pos)
        if direct:
            out.append(direct.group())
            pos = direct.end()
            continue
        if name[pos] == "&":
            out.append("&-")  # RFC 3501 §5.1.3: "&" is represented by "&-"
            pos += 1
            continue
        end = pos
        while end < len(name) and not _DIRECT.match(name, end) and name[end] != "&":
            end += 1
        raw = name[pos:end].encode("utf-16-be")
        # RFC 3501 §5.1.3: modified BASE64 uses "," instead of "/", without padding.
        b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
        out.append(f"&{b64}-")
        pos = end
    return "".join(out)


def decode(text: str) -> str:
    """Decode a modified UTF-7 name; ValueError when it breaks RFC 3501 §5.1.3 syntax."""
    out: list[str] = []
    pos = 0
    previous_shift_end = -1
    while pos < len(text):
        amp = text.find("&", pos)
        if amp < 0:
            chunk = text[pos:]
            pos = len(text)
        else:
            chunk = text[pos:amp]
        if chunk:
            if not _DIRECT.fullmatch(chunk):
                raise ValueError(f"character outside printable US-ASCII in {text!r}")
            out.append(chunk)
        if amp < 0:
            break
        shifted = _SHIFTED.match(text, amp)
        if shifted is None:
            raise ValueError(f"unterminated modified BASE64 in {text!r}")
        b64 = shifted.group(1)
        if not b64:
            out.append("&")
        else:
            if previous_shift_end == amp:
                # RFC 3501 §5.1.3: null shifts ("-&" while in BASE64) are not permitted.
                raise ValueError(f"null shift in {text!r}")
            padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(padded, validate=True)
                decoded = raw.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"invalid modified BASE64 in {text!r}") from None
            if any(0x20 <= ord(ch) <= 0x7E for ch in decoded):
                # RFC 3501 §5.1.3: BASE64 MUST NOT encode printable US-ASCII.
                raise ValueError(f"printable US-ASCII encoded in BASE64 in {text!r}")
            if encode(decoded) != f"&{b64}-":
                raise ValueError(f"non-canonical modified BASE64 in {text!r}")
            out.append(decoded)
            previous_shift_end = shifted.end()
        pos = shifted.end()
    return "".join(out)
