"""IMAP URLs that name a message or a part of one, as CATENATE uses them.

Implements the RFC 5092 §11 productions for a message part reference: ``imapurl`` with
``iserver`` (``imap://[user[;AUTH=..]@]host[:port]``), the absolute path form
(``/enc-mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=enc-section][/;PARTIAL=o[.l]]``, RFC 5092
§6 and RFC 5550 §5 for PARTIAL), relative references against the selected mailbox
(``;UID=n/...``, RFC 3986 §5.2 resolution as RFC 4469 §3 allows), percent-decoding of the
mailbox and section (RFC 5092 §3), and the section-spec grammar of RFC 9051 §9 (through the
command parser, so BODY[] sections and URL sections accept exactly the same text).

Left out: URLAUTH (RFC 4467: ``;EXPIRE=`` / ``;URLAUTH=`` make a URL invalid here), search
and list URLs (only message parts can be catenated). Invalid URLs raise ``BadUrl``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from hato.codec.imap.commands import Fetch, Section
from hato.codec.imap.framing import RawCommand
from hato.codec.imap.parser import CommandSyntaxError, parse_command
from hato.core.errors import ProtocolError

# RFC 5092 §11: bchar = achar / ":" / "@" / "/"; achar = uchar / "&" / "="; uchar =
# unreserved / pct-encoded / sub-delims-sh ("!" "$" "'" "(" ")" "*" "+" ",").
_BCHARS = r"[A-Za-z0-9\-._~!$'()*+,&=:@/]|%[0-9A-Fa-f]{2}"
_PATH = re.compile(
    rf"(?P<mailbox>(?:{_BCHARS})+?)?"
    r"(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?"
    r"/;UID=(?P<uid>[1-9][0-9]{0,9})"
    rf"(?:/;SECTION=(?P<section>(?:{_BCHARS})+?))?"
    r"(?:/;PARTIAL=(?P<offset>[0-9]{1,10})(?:\.(?P<length>[1-9][0-9]{0,9}))?)?",
    re.IGNORECASE,
)
_SERVER = re.compile(
    r"imap://(?:(?P<user>[^@/;]+)(?:;AUTH=[^@/]+)?@)?(?P<host>\[[^\]]+\]|[^:/]+)(?::[0-9]+)?",
    re.IGNORECASE,
)
MAX_NUMBER = 4_294_967_295


class BadUrl(ProtocolError):
    """Not an IMAP URL Hato can resolve (RFC 4469 §3: the BADURL response code)."""

    reply = "invalid URL"


@dataclass(frozen=True, slots=True)
class MessageUrl:
    """A message (part) named by an IMAP URL; ``mailbox`` as the client wrote it (modified
    UTF-7 or UTF-8, percent-decoded), None for a relative URL (the selected mailbox)."""

    mailbox: str | None
    uidvalidity: int | None
    uid: int
    section: Section | None = None
    partial: tuple[int, int | None] | None = None  # RFC 5550: offset and optional length
    host: str | None = None  # from an absolute URL ("imap://host/...")
    user: str | None = None


def _decode(text: str, what: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise BadUrl(f"{what} is not UTF-8 after percent-decoding") from None


def _section(spec: str) -> Section:
    """RFC 9051 §9 section-spec, parsed by the FETCH grammar of the command parser."""
    if any(c in spec for c in "\r\n\x00[]"):
        raise BadUrl("invalid section")
    raw = RawCommand((b"u FETCH 1 BODY.PEEK[" + spec.encode("utf-8") + b"]",))
    try:
        command = parse_command(raw)
    except CommandSyntaxError:
        raise BadUrl("invalid section") from None
    assert isinstance(command.args, Fetch)
    section = command.args.items[0].section
    assert section is not None
    return section


def parse_message_url(url: str) -> MessageUrl:
    """Parse an absolute (``imap://``), absolute-path (``/INBOX...``) or relative
    (``;UID=...``) IMAP URL naming a message or message part."""
    host = user = None
    relative = False
    server = _SERVER.match(url)
    if server is not None:
        host = _decode(server.group("host"), "host").lower()
        user = _decode(server.group("user"), "user") if server.group("user") else None
        path = url[server.end() :]
        if not path.startswith("/"):
            raise BadUrl("no message in URL")
        path = path[1:]
    elif url.startswith("/"):
        path = url[1:]
    elif url[:5].upper() == ";UID=":
        relative = True  # RFC 3986 §5.2.2 against the selected mailbox's URL
        path = "/" + url
    else:
        raise BadUrl("not an IMAP message URL")
    match = _PATH.fullmatch(path)
    if match is None:
        raise BadUrl("not an IMAP message URL")
    if not relative and match.group("mailbox") is None:
        raise BadUrl("no mailbox in URL")
    uid = int(match.group("uid"))
    uidvalidity = int(match.group("uidvalidity")) if match.group("uidvalidity") else None
    if uid > MAX_NUMBER or (uidvalidity or 0) > MAX_NUMBER:
        raise BadUrl("number out of range")  # RFC 9051 §9: nz-number is 32-bit
    mailbox = _decode(match.group("mailbox"), "mailbox") if match.group("mailbox") else None
    section = _section(_decode(match.group("section"), "section")) \
        if match.group("section") else None
    partial: tuple[int, int | None] | None = None
    if match.group("offset") is not None:
        length = match.group("length")
        partial = (int(match.group("offset")), int(length) if length else None)
    return MessageUrl(mailbox, uidvalidity, uid, section, partial, host, user)
