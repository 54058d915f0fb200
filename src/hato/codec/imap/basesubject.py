"""The "base subject" of RFC 5256 and the i;unicode-casemap collation that SORT and THREAD use.

Implements RFC 5256 §2.1 steps (1)-(7) exactly, with the §5 ABNF for subj-trailer, subj-leader,
subj-blob, subj-refwd and subj-fwd-hdr/-trl (all case-insensitive), the "is a reply or
forward" test of the REFERENCES algorithm (§3: a subj-refwd, a "(fwd)" trailer or a
subj-fwd-hdr/-trl was removed), and RFC 5256 §7's collation: i;unicode-casemap (RFC 5051 §2:
each character's simple titlecase mapping, then its full decomposition; the results compare
as UTF-8 octets), which orders ASCII exactly as i;ascii-casemap does.

Left out: RFC 2047 decoding (step 1 starts from the decoded subject given by
``hato.codec.mime.envelope``); translations of "re"/"fwd" (RFC 5256 §7: not specified).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# RFC 5256 §5: subj-blob = "[" *BLOBCHAR "]" *WSP; BLOBCHAR is any CHAR8 except "[" and "]".
_BLOB = r"\[[^\[\]\x00]*\][ \t]*"
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD = rf"(?:re|fwd?)[ \t]*(?:{_BLOB})?:"
# subj-leader = (*subj-blob subj-refwd) / WSP
_LEADER = re.compile(rf"(?:{_BLOB})*{_REFWD}|[ \t]", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)
_SPACES = re.compile(r"[ \t\r\n]+")
_FWD_TRAILER = "(fwd)"  # subj-trailer = "(fwd)" / WSP
_FWD_HDR = "[fwd:"  # subj-fwd-hdr
_FWD_TRL = "]"  # subj-fwd-trl


@dataclass(frozen=True, slots=True)
class BaseSubject:
    text: str  # the base subject (not case-folded)
    reply: bool  # a reply or forward by RFC 5256 §3 REFERENCES' definition

    @property
    def key(self) -> str:
        """The collation key (RFC 5256 §7: i;unicode-casemap)."""
        return casemap(self.text)


def base_subject(decoded: str | None) -> BaseSubject:
    """RFC 5256 §2.1 on an RFC 2047-decoded subject (None when the field is absent: the empty
    string, RFC 5256 §3)."""
    # (1) tabs and continuations to space, runs of spaces to one space
    text = _SPACES.sub(" ", decoded or "")
    reply = False
    while True:
        # (2) remove subj-trailer text at the end, repeatedly
        while True:
            if text.endswith((" ", "\t")):
                text = text[:-1]
            elif text.lower().endswith(_FWD_TRAILER):
                text = text[: -len(_FWD_TRAILER)]
                reply = True
            else:
                break
        # (3)-(5): leaders, then a blob prefix when it leaves a non-empty subj-base; repeat
        while True:
            changed = False
            # (3) remove subj-leader prefix text (repeated: subject = *subj-leader ...)
            while (match := _LEADER.match(text)) is not None:
                if match.group(0) not in (" ", "\t"):
                    reply = True  # a subj-refwd was removed
                text = text[match.end() :]
                changed = True
            # (4) a subj-blob prefix, if removing it leaves a non-empty subj-base
            match = _BLOB_PREFIX.match(text)
            if match is not None and text[match.end() :].strip(" \t"):
                text = text[match.end() :]
                changed = True
            if not changed:  # (5) until no matches remain
                break
        # (6) "[fwd:" ... "]" around the whole text: remove both and repeat from (2)
        if text.lower().startswith(_FWD_HDR) and text.endswith(_FWD_TRL):
            text = text[len(_FWD_HDR) : -len(_FWD_TRL)]
            reply = True
            continue
        return BaseSubject(text, reply)  # (7)


def casemap(text: str) -> str:
    """RFC 5051 §2 i;unicode-casemap: simple titlecase, then full decomposition."""
    out: list[str] = []
    for char in text:
        title = char.title()
        # The simple (one-character) titlecase mapping of UnicodeData.txt; where Python only
        # knows a multi-character special casing (e.g. "ß" -> "Ss") the simple mapping is the
        # character itself.
        mapped = title if len(title) == 1 else char
        out.append(unicodedata.normalize("NFKD", mapped))
    return "".join(out)


def collation_key(text: str) -> bytes:
    """Octets that sort as i;unicode-casemap orders ``text`` (RFC 5051 §2: "the resulting
    strings are compared octet by octet" as UTF-8)."""
    return casemap(text).encode("utf-8", "surrogatepass")
