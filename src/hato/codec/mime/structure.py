"""The MIME part tree of a message, with byte offsets, parsed in one pass over the bytes.

Implements RFC 5322 §2.1 (header, blank line, body), RFC 2045 §5-§6 (Content-Type with the
§5.2 default of text/plain; charset=us-ascii, an invalid Content-Type treated as that default,
Content-Transfer-Encoding defaulting to 7bit), RFC 2046 §5.1 (multipart bodies: boundary
delimiters compared as line prefixes per §5.1.1, the CRLF before a delimiter belonging to the
delimiter, preamble and epilogue, message/rfc822 as the §5.1.5 default inside
multipart/digest), §5.2.1 (message/rfc822 encapsulation), RFC 6532 §3.7 (message/global),
RFC 2183 (Content-Disposition), RFC 3282 (Content-Language), RFC 2557 §4 (Content-Location)
and the IMAP part numbering of RFC 9051 §6.4.5.1 (``find_section``).

Broken input never raises: a multipart without any delimiter becomes a text/plain leaf, a
missing close delimiter ends the part at the next enclosing delimiter or at the end of data,
a delimiter line is matched against every enclosing boundary, the longest match winning
(innermost on a tie, boundaries compared on their first 70 characters), nesting deeper
than ``MAX_DEPTH`` is not parsed further, a message stops being split after ``MAX_PARTS``
parts, and every such repair is recorded in ``Part.problems``. Bodies are never decoded here.

Leaves out: message/partial reassembly and message/external-body retrieval (RFC 2046 §5.2.2-3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hato.codec.mime.headers import (
    Header,
    decode_unstructured,
    header_bytes_to_str,
    split_headers,
    unfold,
)
from hato.codec.mime.params import MimeValue, parse_mime_value

MAX_DEPTH = 50  # parts nested deeper than this are leaves (no recursion limit, no blow-up)
MAX_PARTS = 10_000  # beyond this many parts in one message the rest is not split (as Dovecot)

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Part:
    """One entity: the message itself, a body part of a multipart, or an encapsulated message.

    Offsets index the ``data`` given to :func:`parse_message`. The header block runs from
    ``header_start`` to ``header_end`` (its blank line included, when there is one); the body
    from ``body_start`` (== ``header_end``) to ``body_end``, without the line break that
    precedes a boundary delimiter (RFC 2046 §5.1.1). ``data[header_start:body_end]`` is the
    IMAP ``BODY[n]`` of a part's MIME header plus content.

    ``message`` is the encapsulated message of a message/rfc822 or message/global part; it is
    None when that body is transfer-encoded (allowed for message/global, RFC 6532 §3.5) or
    nested beyond ``MAX_DEPTH``. ``content_type == "multipart"`` implies ``children``.
    """

    header_start: int
    header_end: int
    body_start: int
    body_end: int
    headers: tuple[Header, ...]
    content_type: str
    subtype: str
    params: Params
    raw_params: Params
    disposition: str | None
    disposition_params: Params
    disposition_raw_params: Params
    language: tuple[str, ...] | None
    location: str | None
    content_id: str | None
    description: str | None
    md5: str | None
    transfer_encoding: str
    lines: int
    children: tuple[Part, ...]
    message: Part | None
    problems: tuple[str, ...]

    @property
    def mime_type(self) -> str:
        """``type/subtype``, lower-cased."""
        return f"{self.content_type}/{self.subtype}"

    @property
    def size(self) -> int:
        """Octets of the (still transfer-encoded) body: IMAP body-fld-octets."""
        return self.body_end - self.body_start

    def param(self, name: str) -> str | None:
        """A decoded Content-Type parameter (case-insensitive name), or None."""
        name = name.lower()
        return next((v for k, v in self.params if k == name), None)

    def header(self, name: str) -> Header | None:
        """The first header field called ``name`` (case-insensitive), or None."""
        key = name.lower()
        return next((h for h in self.headers if h.key == key), None)

    def header_all(self, name: str) -> tuple[Header, ...]:
        """Every header field called ``name``, in order."""
        key = name.lower()
        return tuple(h for h in self.headers if h.key == key)

    def walk(self) -> Iterator[Part]:
        """This part and every part below it (children and encapsulated messages), pre-order."""
        yield self
        for child in self.children:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()


def parse_message(data: bytes) -> Part:
    """Parse a whole message (CRLF or bare LF line ends) into its part tree. Never raises."""
    return _Parser(data).entity(0, (), depth=0, digest=False)[0]


@dataclass(frozen=True, slots=True)
class _Delimiter:
    level: int  # index into the boundary stack (0 = outermost)
    start: int  # offset of the "--" that starts the delimiter line
    next: int  # offset after the delimiter line's line break
    close: bool  # "--boundary--": the close delimiter


_IDENTITY = frozenset({"7bit", "8bit", "binary"})


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.parts = 0  # entities started so far (MAX_PARTS)

    def find_delimiter(self, pos: int, stack: tuple[bytes, ...]) -> _Delimiter | None:
        """The next delimiter line of any boundary in ``stack`` at or after line start ``pos``."""
        if not stack:
            return None
        data = self.data
        i = pos
        while True:
            if data.startswith(b"--", i):
                best = -1
                for level in range(len(stack) - 1, -1, -1):
                    boundary = stack[level]
                    # RFC 2046 §5.1.1: the boundary is a prefix of the line; when several
                    # enclosing boundaries match, the longest wins (innermost on a tie)
                    if data.startswith(boundary, i + 2) and (
                        best < 0 or len(boundary) > len(stack[best])
                    ):
                        best = level
                if best >= 0:
                    after = i + 2 + len(stack[best])
                    nl = data.find(b"\n", after)
                    return _Delimiter(
                        level=best,
                        start=i,
                        next=self.n if nl < 0 else nl + 1,
                        close=data.startswith(b"--", after),
                    )
            j = data.find(b"\n--", i)
            if j < 0:
                return None
            i = j + 1

    def end_before(self, floor: int, delim: _Delimiter | None) -> int:
        """Where content ends: before the delimiter's preceding line break, or at end of data."""
        if delim is None:
            return self.n
        pos = delim.start
        data = self.data
        if pos > floor and data[pos - 1] == 0x0A:
            pos -= 1
            if pos > floor and data[pos - 1] == 0x0D:
                pos -= 1
        return max(pos, floor)

    def entity(
        self, start: int, stack: tuple[bytes, ...], *, depth: int, digest: bool
    ) -> tuple[Part, _Delimiter | None]:
        """Parse the entity at ``start``; it ends at the next delimiter of ``stack`` that its own
        multiparts do not consume (returned too, None at end of data)."""
        self.parts += 1
        block = split_headers(self.data, start, end=self.n, stop=stack)
        problems = list(block.problems)
        draft = _Draft(start, block.end, headers=block.headers, problems=problems, digest=digest)
        own: tuple[bytes, ...] = ()
        if draft.ctype == "multipart":
            boundary = next((v for k, v in draft.params if k == "boundary"), "")
            if depth >= MAX_DEPTH:
                problems.append(f"nesting deeper than {MAX_DEPTH} levels not parsed")
            elif self.parts >= MAX_PARTS:
                problems.append(f"more than {MAX_PARTS} parts: the rest is not split")
            elif not boundary:
                problems.append("multipart without boundary parameter")  # RFC 2046 §5.1.1
            else:
                # RFC 2046 §5.1.1: a boundary has at most 70 characters; longer ones are
                # compared on their first 70 (as Dovecot does), so nested near-equal long
                # boundaries resolve to the innermost
                own = (boundary.encode("utf-8", "replace")[:70],)
        cut: _Delimiter | None = None
        if block.cut:
            cut = self.find_delimiter(draft.body_start, stack)
        elif block.complete and stack and self.data.startswith(b"--", block.end):
            after_blank = self.find_delimiter(block.end, (*stack, *own))
            if after_blank is not None and after_blank.level < len(stack):
                # RFC 2046 §5.1.1: the blank line's CRLF is that delimiter's: there is no body
                cut = after_blank
                draft.body_start = self.end_before(start, after_blank)
        if cut is not None or block.cut:
            return self.bodiless(draft), cut
        if own:
            children, delim = self.multipart_body(draft, (*stack, *own), depth=depth)
            if children:
                end = self.end_before(draft.body_start, delim)
                return self.finish(draft, end, children=children), delim
            problems.append("no boundary delimiter found: body treated as text/plain")
        if draft.ctype == "multipart":
            draft.ctype, draft.subtype = "text", "plain"  # RFC 2045 §5.2: unusable type
        elif draft.ctype == "message" and draft.subtype in ("rfc822", "global"):
            if draft.cte not in _IDENTITY:
                problems.append("encapsulated message is transfer-encoded: not parsed in place")
            elif depth >= MAX_DEPTH:
                problems.append(f"nesting deeper than {MAX_DEPTH} levels not parsed")
            elif self.parts >= MAX_PARTS:
                problems.append(f"more than {MAX_PARTS} parts: the rest is not split")
            else:
                message, delim = self.entity(draft.body_start, stack, depth=depth + 1, digest=False)
                return self.finish(draft, message.body_end, message=message), delim
        delim = self.find_delimiter(draft.body_start, stack)
        return self.finish(draft, self.end_before(draft.body_start, delim)), delim

    def bodiless(self, draft: _Draft) -> Part:
        """An entity whose header block runs into an enclosing delimiter: no body at all."""
        if draft.ctype == "multipart":
            draft.problems.append("no boundary delimiter found: body treated as text/plain")
            draft.ctype, draft.subtype = "text", "plain"
        elif draft.ctype == "message" and draft.subtype in ("rfc822", "global"):
            empty = _Draft(
                draft.body_start, draft.body_start, headers=(), problems=[], digest=False
            )
            empty.problems.append("encapsulated message is empty")
            message = self.finish(empty, draft.body_start)
            return self.finish(draft, draft.body_start, message=message)
        return self.finish(draft, draft.body_start)

    def multipart_body(
        self, draft: _Draft, inner: tuple[bytes, ...], *, depth: int
    ) -> tuple[tuple[Part, ...], _Delimiter | None]:
        """The body parts between the delimiters of ``inner[-1]`` (RFC 2046 §5.1.1), and the
        delimiter of an enclosing boundary that ends the epilogue (None: end of data)."""
        mine = len(inner) - 1
        children: list[Part] = []
        delim = self.find_delimiter(draft.body_start, inner)  # skips the preamble
        closed = False
        while delim is not None and delim.level == mine:
            if delim.close or self.parts >= MAX_PARTS:
                closed = True
                if not delim.close:
                    draft.problems.append(f"more than {MAX_PARTS} parts: the rest is not split")
                delim = self.find_delimiter(delim.next, inner[:-1])  # skips the epilogue
                break
            child, delim = self.entity(
                delim.next, inner, depth=depth + 1, digest=draft.subtype == "digest"
            )
            children.append(child)
        if children and not closed:
            draft.problems.append("missing closing boundary")
        return tuple(children), delim

    def finish(
        self,
        draft: _Draft,
        body_end: int,
        *,
        children: tuple[Part, ...] = (),
        message: Part | None = None,
    ) -> Part:
        mime = draft.mime
        disposition: MimeValue | None = None
        disp = mime.get("content-disposition")
        if disp is not None:
            disposition = parse_mime_value(_structured(disp), with_subtype=False)
        language_field = mime.get("content-language")
        language = None
        if language_field is not None:  # RFC 3282 §2: 1#Language-Tag
            tags = [t.strip() for t in _without_comments(_structured(language_field)).split(",")]
            language = tuple(t for t in tags if t) or None
        lines = 0
        body_start = draft.body_start
        if draft.ctype in ("text", "message") and not children:
            # IMAP body-fld-lines (text/*, message/rfc822): line breaks, as Dovecot counts
            lines = self.data.count(b"\n", body_start, body_end)
        return Part(
            header_start=draft.start,
            header_end=body_start,
            body_start=body_start,
            body_end=body_end,
            headers=draft.headers,
            content_type=draft.ctype,
            subtype=draft.subtype,
            params=draft.params,
            raw_params=draft.raw_params,
            disposition=disposition.type if disposition else None,
            disposition_params=disposition.params if disposition else (),
            disposition_raw_params=disposition.raw_params if disposition else (),
            language=language,
            location=_raw(mime.get("content-location"), compact=True),
            content_id=_raw(mime.get("content-id")),
            description=_raw(mime.get("content-description")),
            md5=_raw(mime.get("content-md5")),
            transfer_encoding=draft.cte,
            lines=lines,
            children=children,
            message=message,
            problems=tuple(draft.problems),
        )


class _Draft:
    """The header-derived fields of an entity while its body is being parsed."""

    def __init__(
        self,
        start: int,
        body_start: int,
        *,
        headers: tuple[Header, ...],
        problems: list[str],
        digest: bool,
    ) -> None:
        self.start = start
        self.body_start = body_start
        self.headers = headers
        self.problems = problems
        self.mime: dict[str, Header] = {}  # the first of each Content-* field
        for field in headers:
            if field.key.startswith("content-"):
                if field.key not in self.mime:
                    self.mime[field.key] = field
                elif field.key == "content-type":
                    problems.append("several Content-Type fields: the first one used")
        self.ctype, self.subtype, self.params, self.raw_params = _content_type(
            self.mime.get("content-type"), digest=digest, problems=problems
        )
        self.cte = _first_token(self.mime.get("content-transfer-encoding")) or "7bit"


def _structured(header: Header) -> str:
    return header_bytes_to_str(unfold(header.raw))


def _raw(field: Header | None, *, compact: bool = False) -> str | None:
    """A field body as written (unfolded, trimmed; RFC 2047 words left encoded)."""
    if field is None:
        return None
    text = _structured(field).strip(" \t\r\n")
    if compact:  # RFC 2557 §4.4.2: whitespace inserted by folding a URI is not part of it
        text = "".join(text.split())
    return text


def _first_token(field: Header | None) -> str | None:
    if field is None:
        return None
    words = _without_comments(_structured(field)).split()
    return words[0].lower() if words else None


def _without_comments(text: str) -> str:
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(c)
    return "".join(out)


def _content_type(
    field: Header | None, *, digest: bool, problems: list[str]
) -> tuple[str, str, Params, Params]:
    """(type, subtype, params, raw params) with the RFC 2045 §5.2 defaults."""
    default = ("message", "rfc822") if digest else ("text", "plain")  # RFC 2046 §5.1.5
    if field is None:
        return (*default, (), ())
    value = parse_mime_value(_structured(field))
    if value is None:
        problems.append("invalid Content-Type: default assumed")  # RFC 2045 §5.2
        return (*default, (), ())
    if value.subtype is None or "/" in value.subtype:
        problems.append("invalid Content-Type: text/plain assumed")  # RFC 2045 §5.2
        return ("text", "plain", value.params, value.raw_params)
    return (value.type, value.subtype, value.params, value.raw_params)


def find_section(root: Part, section: tuple[int, ...]) -> Part | None:
    """The part an IMAP section number names (RFC 9051 §6.4.5.1), or None.

    ``()`` is the whole message. A message that is not multipart has a part 1: its own body.
    A message/rfc822 or message/global part's sub-numbers address its encapsulated message
    the same way (3.1 is the encapsulated message's first part, or its body if not multipart).
    """
    current = root
    for depth, number in enumerate(section):
        if number < 1:
            return None
        if depth == 0:
            container: Part | None = root
        elif current.message is not None:
            container = current.message
        elif current.children:
            container = None
        else:
            return None
        if container is None:
            children = current.children
        elif container.children:
            children = container.children
        else:
            if number != 1:
                return None
            current = container
            continue
        if number > len(children):
            return None
        current = children[number - 1]
    return current


def header_value(part: Part, name: str) -> str | None:
    """The first ``name`` field of ``part`` as decoded unstructured text (RFC 2047 words and
    8-bit text decoded, folds shown as one space), or None when the field is absent."""
    field = part.header(name)
    if field is None:
        return None
    return decode_unstructured(field.raw, fallback_charset=part.param("charset"))
