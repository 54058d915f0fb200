"""Rendering of FETCH ENVELOPE, BODY and BODYSTRUCTURE from the MIME codec's part tree.

Implements RFC 9051 §7.5.2 ENVELOPE (fields as the MIME codec extracts them: raw, unfolded,
RFC 2047 words left encoded) and BODY/BODYSTRUCTURE (body-type-mpart, body-type-basic,
body-type-text with body-fld-lines, body-type-msg with the encapsulated message's envelope,
body and lines; extension data body-ext-1part and body-ext-mpart only for BODYSTRUCTURE).
Parameters are sent as written (RFC 2231 forms undecoded), type and subtype upper-case as in
the RFC examples, the transfer encoding defaulting to "7BIT" (RFC 2045 §6.1).

Left out: body-extension fields beyond location (none are defined).
"""

from __future__ import annotations

from hato.codec.imap.response import nstring, string
from hato.codec.mime import Envelope, EnvelopeAddress, Part, decode_encapsulated, envelope

MAX_DEPTH = 60


def _address_list(addresses: tuple[EnvelopeAddress, ...] | None) -> bytes:
    if not addresses:
        return b"NIL"
    parts = [
        b"(" + b" ".join(nstring(v) for v in (a.name, a.adl, a.mailbox, a.host)) + b")"
        for a in addresses
    ]
    return b"(" + b"".join(parts) + b")"


def render_envelope(env: Envelope) -> bytes:
    """RFC 9051 §7.5.2: (date subject from sender reply-to to cc bcc in-reply-to message-id)."""
    fields = [
        nstring(env.date), nstring(env.subject),
        _address_list(env.from_), _address_list(env.sender), _address_list(env.reply_to),
        _address_list(env.to), _address_list(env.cc), _address_list(env.bcc),
        nstring(env.in_reply_to), nstring(env.message_id),
    ]
    return b"(" + b" ".join(fields) + b")"


def envelope_of(part: Part, data: bytes) -> bytes:
    return render_envelope(envelope(part, data))


def _params(params: tuple[tuple[str, str], ...]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(string(k.upper()) + b" " + string(v) for k, v in params) + b")"


def _disposition(part: Part) -> bytes:
    if part.disposition is None:
        return b"NIL"
    return b"(" + string(part.disposition.upper()) + b" " + _params(
        part.disposition_raw_params) + b")"


def _language(part: Part) -> bytes:
    if not part.language:
        return b"NIL"
    if len(part.language) == 1:
        return string(part.language[0])
    return b"(" + b" ".join(string(lang) for lang in part.language) + b")"


def render_body(part: Part, data: bytes, *, extensible: bool, depth: int = 0) -> bytes:
    """BODY (``extensible=False``) or BODYSTRUCTURE (``True``) of ``part``."""
    if part.content_type == "multipart" and part.children and depth < MAX_DEPTH:
        children = b"".join(
            render_body(c, data, extensible=extensible, depth=depth + 1) for c in part.children
        )
        out = children + b" " + string(part.subtype.upper())
        if extensible:
            out += b" " + b" ".join(
                [_params(part.raw_params), _disposition(part), _language(part),
                 nstring(part.location)]
            )
        return b"(" + out + b")"
    kind = part.content_type.upper()
    subtype = part.subtype.upper()
    if part.content_type == "multipart":
        # A multipart without parts (broken boundaries) is shown as what it carries: text.
        kind, subtype = "TEXT", "PLAIN"
    fields = [
        string(kind), string(subtype), _params(part.raw_params),
        nstring(part.content_id), nstring(part.description),
        string(part.transfer_encoding.upper() or "7BIT"), b"%d" % part.size,
    ]
    if kind == "MESSAGE" and subtype in ("RFC822", "GLOBAL"):
        inner: tuple[Part, bytes] | None = None
        if part.message is not None:
            inner = (part.message, data)
        else:
            inner = decode_encapsulated(part, data)
        if inner is not None and depth < MAX_DEPTH:
            fields += [
                envelope_of(inner[0], inner[1]),
                render_body(inner[0], inner[1], extensible=extensible, depth=depth + 1),
                b"%d" % part.lines,
            ]
        else:
            # RFC 9051 §9 body-type-basic must not be MESSAGE/RFC822: show it as opaque data.
            fields[0], fields[1] = string("APPLICATION"), string("OCTET-STREAM")
    elif kind == "TEXT":
        fields.append(b"%d" % part.lines)
    if extensible:
        fields += [nstring(part.md5), _disposition(part), _language(part), nstring(part.location)]
    return b"(" + b" ".join(fields) + b")"
