"""What IMAP SEARCH TEXT and BODY match: the searchable text of a message, one rule for all.

RFC 9051 §6.4.4: ``TEXT`` matches messages containing the string "in the header (including
MIME header fields) or body", ``BODY`` "in the body"; matching is a case-insensitive substring
test. Both a backend's full-text index and a server's scan of messages use ``extract`` and
``matches`` here, so an index answer and a scan answer never differ.

The searchable text of a message (``extract``) is the sequence of pieces
``hato.codec.mime.iter_text`` yields, case-folded (``str.casefold``: full Unicode case
folding, so "STRASSE" finds "Straße"): first the decoded field values of the message's own
header (the ``header`` pieces), then everything else (the ``body`` pieces: text parts decoded
from their charsets to Unicode, HTML reduced to its text, attachment file names, header fields
and text of encapsulated messages). ``TEXT`` searches every piece, ``BODY`` the body pieces. A
match lies within one piece: a needle never spans two pieces.

Leaves out: word or fuzzy matching (RFC 6203), Unicode normalisation beyond case folding
(NFC and NFD spellings of one text stay different, as in a byte-wise substring test), and
text inside non-text attachments (PDF, office documents).

Security: the text comes from untrusted mail; extraction is the MIME codec's linear-time work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hato.codec.mime import Part, decode_unstructured, iter_text, parse_message


class TextScope(enum.Enum):
    """Which pieces of a message a text search looks at (RFC 9051 §6.4.4)."""

    TEXT = "text"  # header and body
    BODY = "body"  # body only


@dataclass(frozen=True, slots=True)
class TextHits:
    """A store's answer to a text search in one mailbox.

    ``uids``: messages whose indexed text contains the query. ``unindexed``: messages the
    index holds no text for (not yet indexed, or too large to index); the caller tests those
    itself (``extract`` + ``matches``). Every other message of the mailbox does not match.
    """

    uids: frozenset[int]
    unindexed: frozenset[int]


@dataclass(frozen=True, slots=True)
class SearchableText:
    """The case-folded searchable pieces of one message (see the module docstring)."""

    header: tuple[str, ...]
    body: tuple[str, ...]

    def pieces(self, scope: TextScope) -> tuple[str, ...]:
        return self.body if scope is TextScope.BODY else self.header + self.body


def extract(data: bytes, root: Part | None = None) -> SearchableText:
    """The searchable text of the message ``data`` (``root``: its part tree when the caller
    has parsed it already). Never raises on broken mail."""
    if root is None:
        root = parse_message(data)
    fallback = root.param("charset")
    header: list[str] = []
    for field in root.headers:
        value = decode_unstructured(field.raw, fallback_charset=fallback)
        if value:
            header.append(value)
    pieces = list(iter_text(root, data))
    # iter_text walks the part tree pre-order and yields a message's own header values
    # first, exactly as computed above: what follows them is the body.
    if pieces[: len(header)] == header:
        body = pieces[len(header) :]
    else:  # not reached with iter_text as documented; never lose text if it changes
        body = pieces
    return SearchableText(
        header=tuple(p.casefold() for p in header), body=tuple(p.casefold() for p in body)
    )


def fold(query: str) -> str:
    """The needle a query searches for: RFC 9051 §6.4.4 matching is case-insensitive."""
    return query.casefold()


def matches(text: SearchableText, query: str, *, scope: TextScope) -> bool:
    """Does one piece of ``text`` in ``scope`` contain ``query`` (case-insensitively)?"""
    needle = fold(query)
    return any(needle in piece for piece in text.pieces(scope))
