"""Sieve "editheader" (RFC 5293): addheader and deleteheader on the message being processed.

Implements RFC 5293 §4 (addheader [:last]: at the top, or the end with :last; a value with
non-ASCII text is RFC 2047-encoded as UTF-8, line breaks become folding white space and long
values are folded), §5 (deleteheader [:index n [:last]] [COMPARATOR] [MATCH-TYPE] name
[value-patterns]), §6 (Received and Auto-Submitted can never be deleted, Subject can always
be added and deleted; more protected names via SieveLimits; refused edits are ignored) and §7
(later tests and actions see the edited header). Edits rewrite the message bytes; the runtime
keeps the original for the implicit keep after an error. Leaves out: nothing.
"""

from __future__ import annotations

import base64
import re

from hato.codec.sieve.language import Cmd
from hato.codec.sieve.matchtypes import Matcher
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")  # RFC 5322 §3.6.8
_MAX_LINE = 76


def encode_value(value: str) -> str:
    """A field body for ``value``: ASCII as it is, else RFC 2047 B-encoded UTF-8 words."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)  # RFC 5322 §2.2.3: a fold is unfolded
    value = value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    if value.isascii():
        return value
    words: list[str] = []
    chunk = ""
    for ch in value:
        if len((chunk + ch).encode("utf-8")) > 45:  # keeps each encoded word under 75
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return " ".join(f"=?UTF-8?B?{base64.b64encode(w.encode('utf-8')).decode()}?=" for w in words)


def fold(name: str, value: str) -> str:
    """``name: value`` folded at spaces so lines stay near 76 octets (RFC 5322 §2.2.3)."""
    line = f"{name}: "
    out: list[str] = []
    for word in value.split(" "):
        if len(line) + len(word) > _MAX_LINE and line.strip() and not line.endswith(": "):
            out.append(line.rstrip(" "))
            line = "\t"
        line += word + " "
    out.append(line[:-1])
    return "\r\n".join(out) + "\r\n"


def _protected(rt: Runtime, name: str, *, adding: bool) -> bool:
    key = name.lower()
    if key == "subject":
        return False  # RFC 5293 §6: "MUST permit both addition and deletion of" Subject
    if not adding and key in ("received", "auto-submitted"):
        return True  # RFC 5293 §6: "MUST NOT permit attempts to delete" these
    forbid = rt.limits.editheader_forbid_add if adding else rt.limits.editheader_forbid_delete
    return key in forbid


def _addheader(rt: Runtime, cmd: Cmd) -> None:
    name = rt.expand(cmd.string(0))
    if not _FIELD_NAME.match(name):
        raise runtime_error(cmd, f"addheader action: specified field name `{name}' is invalid")
    if _protected(rt, name, adding=True):
        return  # RFC 5293 §6: protected fields are left alone
    field = fold(name, encode_value(rt.expand(cmd.string(1))))
    if len(field.encode("utf-8")) > rt.limits.max_header_size:
        raise runtime_error(
            cmd,
            f"addheader action: specified header field `{name}' exceeds the size limit of "
            f"{rt.limits.max_header_size} bytes",
        )
    data = rt.message
    raw = field.encode("utf-8")
    if "last" in cmd.tags:
        root = rt.part
        end = root.headers[-1].end if root.headers else 0
        rt.set_message(data[:end] + raw + data[end:])
    else:
        rt.set_message(raw + data)


def _deleteheader(rt: Runtime, cmd: Cmd) -> None:
    name = rt.expand(cmd.string(0))
    if not _FIELD_NAME.match(name):
        raise runtime_error(cmd, f"deleteheader action: specified field name `{name}' is invalid")
    if _protected(rt, name, adding=False):
        return
    root = rt.part
    fields = root.header_all(name)
    if not fields:
        return
    index = cmd.tag_number("index")
    if index is not None:
        pos = len(fields) - index if "last" in cmd.tags else index - 1
        fields = (fields[pos],) if 0 <= pos < len(fields) else ()
    patterns = cmd.args[1]
    if isinstance(patterns, tuple):
        assert cmd.match is not None and cmd.comparator is not None
        keys = rt.expand_all(patterns)
        matcher = Matcher(cmd.match, cmd.comparator)
        fallback = root.param("charset")
        fields = tuple(
            f for f in fields if matcher.any([f.text(fallback_charset=fallback)], keys) is not None
        )
    if not fields:
        return
    data = rt.message
    out: list[bytes] = []
    pos = 0
    for field in sorted(fields, key=lambda f: f.start):
        out.append(data[pos : field.start])
        pos = field.end
    out.append(data[pos:])
    rt.set_message(b"".join(out))


COMMANDS: dict[str, CommandFn] = {"addheader": _addheader, "deleteheader": _deleteheader}
TESTS: dict[str, TestFn] = {}
