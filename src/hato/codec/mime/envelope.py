"""The IMAP ENVELOPE of a message as Python values, raw (as IMAP sends it) and decoded.

Implements RFC 9051 §7.5.2 ENVELOPE (also RFC 3501 §7.4.2): date, subject, from, sender,
reply-to, to, cc, bcc, in-reply-to, message-id; string members are the field bodies as
written, unfolded (RFC 5322 §2.2.3) with RFC 2047 words left encoded; absent fields are
None (NIL), present-but-empty string fields are ""; absent or empty From/To/Cc/Bcc are None;
absent or empty Sender/Reply-To take the value of From; addresses are (name, adl, mailbox,
host) with RFC 5322 groups as a start marker (mailbox = group name, host None) and an end
marker (mailbox and host None). The decoded subject and the parsed date ride along.

Leaves out: rendering to IMAP syntax (the IMAP server quotes and literal-izes). A mailbox
without a local part or domain gets Dovecot's placeholders MISSING_MAILBOX / MISSING_DOMAIN so
that host is never NIL outside a group marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from hato.codec.mime.addresses import Group, Mailbox, parse_address_list
from hato.codec.mime.dates import parse_date
from hato.codec.mime.headers import Header, decode_unstructured, header_bytes_to_str, unfold
from hato.codec.mime.structure import Part

MISSING_MAILBOX = "MISSING_MAILBOX"
MISSING_DOMAIN = "MISSING_DOMAIN"


class EnvelopeAddress(NamedTuple):
    """RFC 9051 §7.5.2 address structure: display name, at-domain-list, mailbox, host."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


Addresses = tuple[EnvelopeAddress, ...]


@dataclass(frozen=True, slots=True)
class Envelope:
    """RFC 9051 §7.5.2 ENVELOPE members in order, plus decoded conveniences."""

    date: str | None
    subject: str | None
    from_: Addresses | None
    sender: Addresses | None
    reply_to: Addresses | None
    to: Addresses | None
    cc: Addresses | None
    bcc: Addresses | None
    in_reply_to: str | None
    message_id: str | None
    subject_text: str | None  # RFC 2047-decoded subject
    date_value: datetime | None  # the Date field parsed (RFC 5322 §3.3), None if unparseable


def envelope(part: Part, data: bytes) -> Envelope:
    """The ENVELOPE of the message whose top-level part is ``part`` (the root from
    :func:`parse_message`, or an encapsulated ``Part.message``). ``data`` is the message
    buffer the part was parsed from (header fields are read from ``part.headers``)."""
    del data  # the header fields were copied out of it while parsing
    charset = part.param("charset")
    from_ = _addresses(part, "from")
    subject_field = part.header("subject")
    date = _string(part.header("date"))
    return Envelope(
        date=date,
        subject=_string(subject_field),
        from_=from_,
        # RFC 9051 §7.5.2: absent or empty Sender / Reply-To are set to the from member
        sender=_addresses(part, "sender") or from_,
        reply_to=_addresses(part, "reply-to") or from_,
        to=_addresses(part, "to"),
        cc=_addresses(part, "cc"),
        bcc=_addresses(part, "bcc"),
        in_reply_to=_string(part.header("in-reply-to")),
        message_id=_string(part.header("message-id")),
        subject_text=(
            decode_unstructured(subject_field.raw, fallback_charset=charset)
            if subject_field is not None
            else None
        ),
        date_value=parse_date(date) if date else None,
    )


def _string(field: Header | None) -> str | None:
    """RFC 9051 §7.5.2: NIL when absent, the empty string when present but empty."""
    if field is None:
        return None
    return header_bytes_to_str(unfold(field.raw)).strip(" \t\r\n")


def _addresses(part: Part, name: str) -> Addresses | None:
    field = part.header(name)
    if field is None:
        return None
    items = parse_address_list(header_bytes_to_str(unfold(field.raw)))
    out: list[EnvelopeAddress] = []
    for item in items:
        if isinstance(item, Group):
            # RFC 9051 §7.5.2: group start marker: mailbox holds the group name, host NIL
            out.append(EnvelopeAddress(None, None, item.raw_name or "", None))
            out.extend(_address(m) for m in item.members)
            out.append(EnvelopeAddress(None, None, None, None))  # end of group marker
        else:
            out.append(_address(item))
    return tuple(out) or None  # RFC 9051 §7.5.2: present but empty is NIL


def _address(mailbox: Mailbox) -> EnvelopeAddress:
    return EnvelopeAddress(
        mailbox.raw_name,
        mailbox.route,
        mailbox.local if mailbox.local is not None else MISSING_MAILBOX,
        mailbox.domain if mailbox.domain is not None else MISSING_DOMAIN,
    )
