"""MIME message codec: part tree with byte offsets, ENVELOPE data, header decoding, charsets.

Sans-IO and pure: bytes in, frozen values out; nothing here raises on broken mail. Used by the
IMAP server (ENVELOPE, BODYSTRUCTURE, BODY[section], BINARY[section], SEARCH), the full-text
index and the filters. Standards: RFC 5322, RFC 2045-2047, RFC 2183, RFC 2231, RFC 6532,
RFC 9051 §6.4.5.1 and §7.5.2 (see each module). Leaves out: generating MIME.
"""

from hato.codec.mime.addresses import Group, Mailbox, parse_address_list
from hato.codec.mime.charsets import canonical_charset, decode
from hato.codec.mime.content import (
    decode_body,
    decode_encapsulated,
    html_to_text,
    iter_text,
    text_and_problems,
    text_content,
)
from hato.codec.mime.dates import parse_date
from hato.codec.mime.envelope import Envelope, EnvelopeAddress, envelope
from hato.codec.mime.headers import Header, decode_unstructured, decode_words, unfold
from hato.codec.mime.params import MimeValue, parse_mime_value
from hato.codec.mime.structure import (
    MAX_DEPTH,
    MAX_PARTS,
    Part,
    find_section,
    header_value,
    parse_message,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Envelope",
    "EnvelopeAddress",
    "Group",
    "Header",
    "Mailbox",
    "MimeValue",
    "Part",
    "canonical_charset",
    "decode",
    "decode_body",
    "decode_encapsulated",
    "decode_unstructured",
    "decode_words",
    "envelope",
    "find_section",
    "header_value",
    "html_to_text",
    "iter_text",
    "parse_address_list",
    "parse_date",
    "parse_message",
    "parse_mime_value",
    "text_and_problems",
    "text_content",
    "unfold",
]
