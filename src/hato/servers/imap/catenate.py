"""CATENATE and UTF8 APPEND data: the octets an APPEND stores.

Implements RFC 4469 §3 (APPEND with CATENATE: the message is the TEXT literals and the data of
the URL parts joined in order; a URL names a message or message part of the same account on
this server, read as BODY.PEEK[section]<partial> without setting \\Seen; a URL that is
invalid, names another server or user, a mailbox or message that does not exist or a
UIDVALIDITY that does not match fails the command with ``NO [BADURL url]``; a result above the
APPEND limit fails with ``NO [TOOBIG]``, §5 / RFC 7889), relative URLs against the selected
mailbox, and RFC 6855 §4 (``UTF8 (literal8)`` data; without ENABLE UTF8=ACCEPT an APPEND whose
header fields hold 8-bit characters is refused with NO).

Left out: URLAUTH-authorized URLs of other users (RFC 4467); the 8-bit header rule is not
applied to IMAP4rev2 sessions (RFC 9051 §6.3.12 permits 8-bit data in APPEND).

Security: URL parts only reach the logged-in account's own mailboxes (``MailStore`` lookups
by its account id); the result is bounded by ``append_limit`` while it is assembled.
"""

from __future__ import annotations

import asyncio

from hato.codec.imap.commands import AppendMessage, CatText
from hato.codec.imap.imapurl import BadUrl, MessageUrl, parse_message_url
from hato.codec.mime import parse_message
from hato.servers.imap.fetch import section_bytes
from hato.servers.imap.outcome import CommandFailed
from hato.servers.imap.session import Session
from hato.store.model import HIERARCHY_SEPARATOR, INBOX

_URL_TEXT_MAX = 200  # characters of a bad URL echoed in the BADURL response code


def _bad_url(url: str) -> CommandFailed:
    # RFC 4469 §5: url-resp-text = 1*(any TEXT-CHAR except "]")
    shown = "".join(c for c in url[:_URL_TEXT_MAX] if 0x20 <= ord(c) <= 0x7E and c != "]")
    return CommandFailed("invalid or unknown URL", code=f"BADURL {shown or '?'}")


def _mailbox_name(session: Session, wire: str) -> str:
    """A URL's mailbox: as the session decodes names (modified UTF-7 for IMAP4rev1) when it
    is ASCII, else UTF-8 (RFC 5092 §3.2: URLs carry mailbox names %-encoded in UTF-8)."""
    if wire.isascii():
        return session.decode_mailbox(wire)
    head, sep, rest = wire.partition(HIERARCHY_SEPARATOR)
    return INBOX + sep + rest if head.upper() == INBOX else wire


async def _url_data(session: Session, url: str) -> bytes:
    assert session.account is not None
    try:
        parsed: MessageUrl = parse_message_url(url)
    except BadUrl:
        raise _bad_url(url) from None
    if parsed.host is not None and parsed.host != session.settings.hostname.lower():
        raise _bad_url(url)  # RFC 4469 §3: only this server's messages
    if parsed.user is not None and parsed.user.lower() not in (
        session.account.address.lower(), session.account.address.split("@")[0].lower()
    ):
        raise _bad_url(url)  # another user's mailbox: that would need URLAUTH
    if parsed.mailbox is None:
        selected = session.selected
        if selected is None:
            raise _bad_url(url)  # a relative URL needs a selected mailbox
        mailbox_id, uidvalidity = selected.mailbox_id, selected.uidvalidity
    else:
        try:
            name = _mailbox_name(session, parsed.mailbox)
        except CommandFailed:
            raise _bad_url(url) from None
        mailbox = await session.store.get_mailbox(session.account.id, name)
        if mailbox is None:
            raise _bad_url(url)
        mailbox_id, uidvalidity = mailbox.id, mailbox.uidvalidity
    if parsed.uidvalidity is not None and parsed.uidvalidity != uidvalidity:
        raise _bad_url(url)  # RFC 5092 §6: the UIDs are from another UIDVALIDITY epoch
    found = await session.store.get_messages(mailbox_id, [parsed.uid])
    if not found:
        raise _bad_url(url)
    try:
        data = await asyncio.to_thread(session.store.blobs.read, found[0].blob_id)
    except FileNotFoundError:
        raise _bad_url(url) from None  # expunged meanwhile
    if parsed.section is not None:
        part = section_bytes(parse_message(data), data, parsed.section)
        if part is None:
            raise _bad_url(url)  # no such part
        data = part
    if parsed.partial is not None:
        offset, length = parsed.partial  # RFC 5550 §5: ;PARTIAL=offset[.length]
        data = data[offset:] if length is None else data[offset : offset + length]
    return data


def _eight_bit_header(data: bytes) -> bool:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    header = data if end < 0 else data[:end]
    return any(b >= 0x80 for b in header)


async def message_data(session: Session, message: AppendMessage) -> bytes:
    """The octets to store for one APPEND message."""
    limit = session.settings.append_limit
    if message.catenate:
        out = bytearray()
        for part in message.catenate:
            out += part.data if isinstance(part, CatText) else await _url_data(session, part.url)
            if len(out) > limit:
                # RFC 4469 §5 / RFC 7889 §4: TOOBIG when the result exceeds the limit.
                raise CommandFailed("message too large", code="TOOBIG")
        data = bytes(out)
    else:
        data = message.data
    if not session.utf8 and not session.rev2 and _eight_bit_header(data):
        # RFC 6855 §4: without ENABLE UTF8=ACCEPT, 8-bit characters in header fields: NO.
        raise CommandFailed("8-bit header fields need ENABLE UTF8=ACCEPT", code="CANNOT")
    return data
