"""Sieve notifications: the enotify extension (RFC 5435) with the mailto method (RFC 5436).

Implements RFC 5435 §3 (notify :from :importance :options :message, options as
"name=value"), §4-§5 (valid_notify_method, notify_method_capability with "online" answered
"maybe" for mailto), and RFC 5436 §2 (mailto URIs per RFC 6068: recipients, header fields,
body; §2.3 headers the script may not set are dropped), with the checks done at compile time
when the URI is a constant and at run time otherwise. Leaves out: methods other than mailto
(xmpp, tel, sms).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from hato.codec.sieve.addresses import parse_mailbox
from hato.codec.sieve.language import Cmd

_TO_CHARS = re.compile(r"[A-Za-z0-9\-._~!$'()*+,:@%]*\Z")
_QCHAR = re.compile(r"[A-Za-z0-9\-._~!$'()*+,;:@%/?]*\Z")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_OPTION = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)\Z", re.DOTALL)
# RFC 5436 §2.3: header fields a mailto URI must not set on the notification
UNSAFE_HEADERS = frozenset(
    {
        "auto-submitted",
        "received",
        "return-path",
        "message-id",
        "date",
        "from",
        "sender",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
        "x-sieve",
        "delivered-to",
    }
)


@dataclass(frozen=True, slots=True)
class MailtoUri:
    """A parsed mailto URI: recipients (To, then Cc, Bcc from header fields), the other header
    fields in order, and the body. ``mailboxes`` maps each recipient address to the mailbox as
    the URI wrote it (RFC 6068 §2: "addr-spec" or a display name with it), for the header."""

    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    subject: str | None
    body: str | None
    mailboxes: tuple[tuple[str, str], ...] = ()


def method_of(uri: str) -> str:
    """The URI scheme, lower-cased ("" when there is none)."""
    colon = uri.find(":")
    if colon <= 0 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+\-.]*", uri[:colon]):
        return ""
    return uri[:colon].lower()


def _split_list(text: str) -> list[str]:
    """Split an address list at its commas, but not inside a quoted display name (RFC 5322
    §3.4: a quoted-string may hold ",")."""
    items, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def _recipients(text: str, errors: list[str], written: dict[str, str]) -> list[str]:
    out: list[str] = []
    for raw in _split_list(urllib.parse.unquote(text)):
        if not raw.strip():
            continue
        address, reason = parse_mailbox(raw)
        if address is None:
            errors.append(f"invalid recipient '{raw}': {reason}")
            continue
        out.append(address)
        written.setdefault(address.lower(), raw.strip(" \t\r\n"))
    return out


def parse_mailto(uri: str) -> tuple[MailtoUri | None, list[str]]:
    """RFC 6068 mailto URI: the parsed value, or None and the reasons."""
    errors: list[str] = []
    rest = uri[len("mailto:") :] if uri.lower().startswith("mailto:") else uri
    to_part, _, query = rest.partition("?")
    for ch in to_part:
        if not _TO_CHARS.match(ch):
            errors.append(f"invalid character '{ch}' in 'to' part")
            return None, errors
    written: dict[str, str] = {}
    to = _recipients(to_part, errors, written)
    cc: list[str] = []
    bcc: list[str] = []
    headers: list[tuple[str, str]] = []
    subject: str | None = None
    body: str | None = None
    for field in query.split("&") if query else ():
        name, eq, value = field.partition("=")
        for ch in name:
            if not _QCHAR.match(ch):
                errors.append(f"invalid character '{ch}' in header field name part")
                return None, errors
        for ch in value:
            if not _QCHAR.match(ch):
                errors.append(f"invalid character '{ch}' in header field value part")
                return None, errors
        hname = urllib.parse.unquote(name)
        hvalue = urllib.parse.unquote(value)
        if not eq or not _FIELD_NAME.match(hname):
            errors.append("invalid header field name")
            return None, errors
        key = hname.lower()
        if key == "to":
            to.extend(_recipients(value, errors, written))
        elif key == "cc":
            cc.extend(_recipients(value, errors, written))
        elif key == "bcc":
            bcc.extend(_recipients(value, errors, written))
        elif key == "subject":
            subject = hvalue
        elif key == "body":
            body = hvalue
        elif key not in UNSAFE_HEADERS:
            headers.append((hname, hvalue))
    if errors:
        return None, errors
    parsed = MailtoUri(
        tuple(to), tuple(cc), tuple(bcc), tuple(headers), subject, body, tuple(written.items())
    )
    return parsed, []


def uri_errors(uri: str) -> list[str]:
    """Why ``uri`` is not a usable notification method ([] when it is)."""
    method = method_of(uri)
    if method != "mailto":
        return [f"invalid method '{method or uri}'"]
    parsed, errors = parse_mailto(uri)
    if parsed is not None and not (parsed.to or parsed.cc or parsed.bcc):
        return ["mailto URI: no recipients"]
    return [f"mailto URI: {e}" for e in errors]


def option_errors(option: str) -> list[str]:
    """RFC 5435 §3.4: an option is "name=value", the name starting with a letter."""
    if not option:
        return ["empty option specified"]
    m = _OPTION.match(option)
    if m is None:
        return [f"invalid option name specified in option '{option}'"]
    if "\r" in m.group(2) or "\n" in m.group(2):
        shown = option.replace("\r", "?").replace("\n", "?")
        return [f"invalid option value specified in option '{shown}'"]
    return []


def from_errors(sender: str) -> list[str]:
    address, reason = parse_mailbox(sender)
    if address is None:
        return [f"specified :from address '{sender}' is invalid for the mailto method: {reason}"]
    return []


def check_notify(cmd: Cmd) -> list[str]:
    """Compile-time errors of a notify command (constant arguments only)."""
    out: list[str] = []
    method = cmd.string(0).constant
    if method is not None:
        out.extend(uri_errors(method))
    sender = cmd.tag_string("from")
    if sender is not None and sender.constant is not None:
        out.extend(from_errors(sender.constant))
    for option in cmd.tag_strings("options") or ():
        if option.constant is not None:
            out.extend(option_errors(option.constant))
    importance = cmd.tag_string("importance")
    if importance is not None and importance.constant not in (None, "1", "2", "3"):
        out.append(f"invalid :importance value '{importance.constant}'")
    return [f"notify command: {m}" for m in out]


def capability(uri: str, name: str) -> str | None:
    """RFC 5435 §5: notify_method_capability; mailto answers "online" with "maybe"."""
    if uri_errors(uri):
        return None
    if name.lower() == "online":
        return "maybe"
    return None
