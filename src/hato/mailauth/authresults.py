"""Authentication-Results (RFC 8601): render our header field, parse others, strip forgeries.

Implements the header field grammar of RFC 8601 §2.2 (authserv-id, version, ``none``,
``method[/version]=result``, ``reason=``, ``ptype.property=pvalue``, CFWS comments anywhere
the ABNF allows them, Appendix B.7), the result values of §2.7, the ``policy`` ptype (§2.4),
the removal of fields claiming our authserv-id or an unsupported version (§5), and the
ARC-Authentication-Results form ``i=N; payload`` (RFC 8617 §4.1.1). Builders turn Hato's
SPF, DKIM, DMARC, ARC and iprev results into method results with the registered properties
(spf: smtp.mailfrom / smtp.helo; dkim: header.d, header.s, header.b; dmarc: header.from and
policy.dmarc (DMARCbis §9.1); arc: smtp.remote-ip, header.oldest-pass (RFC 8617 §6);
iprev: policy.iprev).

Left out: EAI-specific quoting of UTF-8 local-parts (UTF-8 passes through as in RFC 6532),
header folding beyond one result per line.

Security: incoming fields are untrusted; the parser is a bounded linear scanner (nesting of
comments capped), and removal compares authserv-ids after IDNA normalisation so an A-label
spelling of our id is removed too (RFC 8601 §5).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hato.core.address import normalize_domain
from hato.core.errors import AddressError, HatoError

__all__ = [
    "AuthResults",
    "AuthResultsSyntaxError",
    "MethodResult",
    "Property",
    "field_bytes",
    "parse",
    "parse_arc",
    "remove_own",
    "render",
    "split_fields",
]

FIELD = "Authentication-Results"
MAX_COMMENT_DEPTH = 16
_TSPECIALS = set('()<>@,;:\\"/[]?=')  # RFC 2045 §5.1
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")  # RFC 5321 §4.1.2 Keyword
_PROPERTY = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_DOMAINISH = re.compile(r"[^\s;()\"\\]+")


class AuthResultsSyntaxError(HatoError):
    """A header field value that does not follow RFC 8601 §2.2."""

    reply = "malformed Authentication-Results"


@dataclass(frozen=True)
class Property:
    """One ``ptype.property=pvalue`` (RFC 8601 §2.2 propspec)."""

    ptype: str
    name: str
    value: str


@dataclass(frozen=True)
class MethodResult:
    """One resinfo: ``method=result`` with its reason, properties and a comment."""

    method: str
    result: str
    reason: str | None = None
    properties: tuple[Property, ...] = ()
    comment: str | None = None  # rendered right after the result
    version: int | None = None  # method-version

    def get(self, ptype: str, name: str) -> str | None:
        """The value of the first property ``ptype.name`` (case-insensitive), if any."""
        for prop in self.properties:
            if prop.ptype.lower() == ptype.lower() and prop.name.lower() == name.lower():
                return prop.value
        return None


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results field value; no ``results`` means ``none``."""

    authserv_id: str
    results: tuple[MethodResult, ...] = ()
    version: int | None = None

    def by_method(self, method: str) -> list[MethodResult]:
        return [r for r in self.results if r.method.lower() == method.lower()]


# -- rendering ---------------------------------------------------------------------------------


def _is_token(text: str) -> bool:
    """RFC 2045 §5.1 token: no SPACE, CTLs or tspecials."""
    return bool(text) and all(c > " " and c != "\x7f" and c not in _TSPECIALS for c in text)


def _quote(text: str) -> str:
    """RFC 2045 §5.1 value: a token, else a quoted-string (RFC 5322 §3.2.4)."""
    if _is_token(text):
        return text
    clean = re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", " ", text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(text: str) -> str:
    """RFC 8601 §2.2 pvalue: ``[local-part] "@" domain-name`` as is, else a value."""
    local, at, domain = text.rpartition("@")
    if at and re.fullmatch(r"[A-Za-z0-9.-]+|[^\x00-\x7f.][^\s;()\"]*", domain or "-"):
        if not local or _is_token(local.replace("@", "\x00")):
            return text
        return _quote(local) + "@" + domain
    return _quote(text)


def _comment(text: str) -> str:
    clean = re.sub(r"[\x00-\x1f\x7f()\\]", " ", text)  # RFC 5322 §3.2.2 ctext, kept flat
    return f"({clean.strip()})"


def _resinfo(result: MethodResult) -> str:
    method = result.method if result.version is None else f"{result.method}/{result.version}"
    parts = [f"{method}={result.result}"]
    if result.comment:
        parts.append(_comment(result.comment))
    if result.reason is not None:
        parts.append(f"reason={_quote(result.reason)}")
    parts.extend(f"{p.ptype}.{p.name}={_pvalue(p.value)}" for p in result.properties)
    return " ".join(parts)


def render(results: AuthResults) -> str:
    """The field value (without the name), one resinfo per folded line (RFC 5322 §2.2.3)."""
    head = _quote(results.authserv_id)
    if results.version is not None:
        head += f" {results.version}"
    if not results.results:
        return f"{head}; none"  # RFC 8601 §2.2 no-result
    return head + "".join(f";\r\n\t{_resinfo(r)}" for r in results.results)


def field_bytes(results: AuthResults, *, name: str = FIELD) -> bytes:
    """The complete header field with CRLF, ready to prepend (RFC 8601 §4.1)."""
    return f"{name}: {render(results)}\r\n".encode()


# -- parsing -----------------------------------------------------------------------------------


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.comments: list[str] = []

    def error(self, what: str) -> AuthResultsSyntaxError:
        return AuthResultsSyntaxError(f"{what} at offset {self.pos}")

    def cfws(self) -> None:
        """RFC 5322 §3.2.2 CFWS; comment texts are collected."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n":
                self.pos += 1
            elif char == "(":
                self.comments.append(self._comment())
            else:
                break

    def _comment(self) -> str:
        depth = 0
        start = self.pos
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            if char == "(":
                depth += 1
                if depth > MAX_COMMENT_DEPTH:
                    raise self.error("comments nested too deep")
            elif char == ")":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return text[start + 1 : self.pos - 1]
            self.pos += 1
        raise self.error("unterminated comment")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        self.cfws()
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> str | None:
        self.cfws()
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(0)

    def quoted(self) -> str:
        """RFC 5322 §3.2.4 quoted-string (the scanner sits on the opening quote)."""
        out: list[str] = []
        self.pos += 1
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text):
                out.append(text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            elif char in "\r\n":
                self.pos += 1  # folding inside the quotes
            else:
                out.append(char)
                self.pos += 1
        raise self.error("unterminated quoted-string")

    def value(self) -> str:
        """RFC 2045 §5.1 value: token or quoted-string."""
        self.cfws()
        if self.peek() == '"':
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and _is_token(self.text[self.pos]):
            self.pos += 1
        if start == self.pos:
            raise self.error("expected a value")
        return self.text[start : self.pos]

    def pvalue(self) -> str:
        """RFC 8601 §2.2 pvalue: value, or [local-part] "@" domain-name."""
        self.cfws()
        local = ""
        if self.peek() == '"':
            local = self.quoted()
            if self.peek() != "@":
                return local
        found = _DOMAINISH.match(self.text, self.pos)
        if found is None:
            if local:
                return local
            raise self.error("expected a property value")
        self.pos = found.end()
        return local + found.group(0)

    def at_end(self) -> bool:
        self.cfws()
        return self.pos >= len(self.text)


def _parse_payload(scanner: _Scanner) -> AuthResults:
    authserv_id = scanner.value()
    version = None
    digits = scanner.match(re.compile(r"[0-9]+(?![^\s;(])"))
    if digits is not None:
        version = int(digits)  # RFC 8601 §2.2 authres-version
    results: list[MethodResult] = []
    scanner.cfws()
    if scanner.at_end():
        return AuthResults(authserv_id, (), version)  # tolerated: id without results
    scanner.expect(";")
    if scanner.match(re.compile(r"none(?![A-Za-z0-9-])", re.IGNORECASE)) is not None:
        if not scanner.at_end():
            raise scanner.error("text after none")
        return AuthResults(authserv_id, (), version)  # RFC 8601 §2.2 no-result
    while True:
        results.append(_parse_resinfo(scanner))
        if scanner.at_end():
            break
        scanner.expect(";")
        if scanner.at_end():
            break  # a trailing ";" is tolerated
    return AuthResults(authserv_id, tuple(results), version)


def _parse_resinfo(scanner: _Scanner) -> MethodResult:
    """RFC 8601 §2.2 resinfo (the leading ";" already consumed)."""
    first_comment = len(scanner.comments)
    method = scanner.match(_KEYWORD)
    if method is None:
        raise scanner.error("expected a method")
    method_version = None
    scanner.cfws()
    if scanner.peek() == "/":
        scanner.pos += 1
        digits = scanner.match(re.compile(r"[0-9]+"))
        if digits is None:
            raise scanner.error("expected a method version")
        method_version = int(digits)
    scanner.expect("=")
    result = scanner.match(_KEYWORD)
    if result is None:
        raise scanner.error("expected a result")
    reason = None
    properties: list[Property] = []
    while True:
        scanner.cfws()
        if scanner.peek() in ("", ";"):
            break
        word = scanner.match(_PROPERTY)
        if word is None:
            raise scanner.error("expected reason or ptype.property")
        scanner.cfws()
        if word.lower() == "reason" and scanner.peek() == "=" and not properties:
            scanner.pos += 1
            reason = scanner.value()
            continue
        scanner.expect(".")
        name = scanner.match(_PROPERTY)
        if name is None:
            raise scanner.error("expected a property name")
        scanner.expect("=")
        properties.append(Property(word.lower(), name.lower(), scanner.pvalue()))
    comments = scanner.comments[first_comment:]
    return MethodResult(
        method=method.lower(),
        result=result.lower(),
        reason=reason,
        properties=tuple(properties),
        comment=" ".join(c.strip() for c in comments) or None,
        version=method_version,
    )


def parse(value: str) -> AuthResults:
    """Parse an Authentication-Results field value; raises AuthResultsSyntaxError."""
    return _parse_payload(_Scanner(value))


def parse_arc(value: str) -> tuple[int, AuthResults]:
    """Parse an ARC-Authentication-Results value ``i=N; payload`` (RFC 8617 §4.1.1)."""
    scanner = _Scanner(value)
    instance = scanner.match(re.compile(r"i[ \t]*=[ \t]*([0-9]{1,2})", re.IGNORECASE))
    if instance is None:
        raise scanner.error("expected the instance tag i=")
    scanner.expect(";")
    number = int(re.sub(r"[^0-9]", "", instance))
    return number, _parse_payload(scanner)


# -- removal (RFC 8601 §5) ----------------------------------------------------------------------


def _canonical_id(text: str) -> str:
    text = text.strip().rstrip(".")
    try:
        return normalize_domain(text)  # RFC 8601 §5: compare after A-label → U-label
    except AddressError:
        return text.lower()


def split_fields(block: bytes) -> tuple[list[bytes], bytes]:
    """A header block as its fields (with their line ends) and whatever follows the blank line."""
    fields: list[bytes] = []
    lines = block.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line in (b"\r\n", b"\n"):
            return fields, b"".join(lines[index:])
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line  # RFC 5322 §2.2.3: a continuation line
        else:
            fields.append(line)
    return fields, b""


def _claims(field: bytes, ours: set[str]) -> bool:
    name, colon, raw = field.partition(b":")
    if not colon or name.strip().lower() != FIELD.lower().encode():
        return False
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = parse(text)
    except AuthResultsSyntaxError:
        scanner = _Scanner(text)
        try:
            leading = scanner.value()  # the authserv-id of a field we cannot otherwise read
        except AuthResultsSyntaxError:
            return False
        return _canonical_id(leading) in ours
    if parsed.version not in (None, 1):
        return True  # RFC 8601 §5: MUST remove unsupported versions from untrusted peers
    return _canonical_id(parsed.authserv_id) in ours


def remove_own(block: bytes, authserv_ids: str | Iterable[str]) -> bytes:
    """The header block without Authentication-Results fields claiming one of our ids."""
    ids = [authserv_ids] if isinstance(authserv_ids, str) else list(authserv_ids)
    ours = {_canonical_id(i) for i in ids}
    fields, rest = split_fields(block)
    kept: Sequence[bytes] = [f for f in fields if not _claims(f, ours)]
    return b"".join(kept) + rest
