"""Address lists of From/To/Cc/Bcc/Reply-To/Sender fields, groups included.

Implements RFC 5322 §3.4 (address, mailbox, name-addr, angle-addr, group, addr-spec) and
§3.2 lexical tokens (atoms, quoted strings with quoted-pairs, nested comments, domain
literals), the obsolete forms of §4.4 (routes ``<@a,@b:user@host>``, CFWS around dots,
empty list members, phrases with dots) and RFC 6532 §3.2 (UTF-8 in names and addresses).
Display names are given both as written (``raw_name``: quotes removed, RFC 2047 words left
encoded, as IMAP ENVELOPE sends them) and decoded (``name``).

Leniency: a comment stands in for a missing display name (``user@host (Name)``); a bare
word without "@" is a local part without a domain; unbalanced quotes, brackets and comments
end at the end of the field. Leaves out: address validation (see ``hato.core.address``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hato.codec.mime.headers import decode_words

_ATOM_STOP = frozenset('()<>[]:;@\\,"' + " \t\r\n")
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff]+"  # RFC 5322 §3.2.3, RFC 6532 §3.2
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox: display name (decoded and raw), obsolete route, local part and domain."""

    name: str | None
    raw_name: str | None
    route: str | None  # RFC 5322 §4.4 obs-route without the final ":", e.g. "@a.example,@b"
    local: str | None  # as an RFC 5322 local-part: quoted when it is not a dot-atom
    domain: str | None

    @property
    def address(self) -> str | None:
        """``local@domain`` (or whichever of the two is present), None when neither is."""
        if self.local is None:
            return self.domain
        return self.local if self.domain is None else f"{self.local}@{self.domain}"


@dataclass(frozen=True, slots=True)
class Group:
    """An RFC 5322 §3.4 group: ``display-name ":" [group-list] ";"``."""

    name: str | None
    raw_name: str | None
    members: tuple[Mailbox, ...]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "atom", "quoted", "comment", "literal", or the special character itself
    text: str
    space_before: bool


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    space = False
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            space = True
            i += 1
            continue
        if c == '"':
            chars: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1  # RFC 5322 §3.2.1 quoted-pair
                if text[i] not in "\r\n":
                    chars.append(text[i])
                i += 1
            tokens.append(_Token("quoted", "".join(chars), space))
            i += 1
        elif c == "(":
            depth = 0
            chars = []
            while i < n:
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if ch == "(":
                    depth += 1
                    if depth > 1:
                        chars.append(ch)
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                    chars.append(ch)
                elif ch not in "\r\n":
                    chars.append(ch)
                i += 1
            tokens.append(_Token("comment", " ".join("".join(chars).split()), space))
            space = True  # RFC 5322 §3.2.2: a comment separates like whitespace
            continue
        elif c == "[":
            end = text.find("]", i)
            end = n if end < 0 else end + 1
            tokens.append(_Token("literal", "".join(text[i:end].split()), space))
            i = end
        elif c in _ATOM_STOP:
            tokens.append(_Token(c, c, space))
            i += 1
        else:
            start = i
            while i < n and text[i] not in _ATOM_STOP:
                i += 1
            tokens.append(_Token("atom", text[start:i], space))
        space = False
    return tokens


def parse_address_list(text: str) -> tuple[Mailbox | Group, ...]:
    """Parse an address-list field body (already unfolded; ``str``). Never raises."""
    out: list[Mailbox | Group] = []
    group: list[Mailbox] | None = None
    group_name: tuple[str | None, str | None] = (None, None)
    segment: list[_Token] = []
    angle = False
    for tok in _tokenize(text):
        kind = tok.kind
        if angle:
            segment.append(tok)
            if kind == ">":
                angle = False
            continue
        if kind == "<":
            angle = True
            segment.append(tok)
        elif kind == ",":
            _flush(segment, group if group is not None else out)
        elif kind == ":" and group is None:
            # RFC 5322 §3.4: group = display-name ":" [group-list] ";"
            group_name = _names(_phrase(segment), [t.text for t in segment if t.kind == "comment"])
            segment = []
            group = []
        elif kind == ";" and group is not None:
            _flush(segment, group)
            out.append(Group(group_name[0], group_name[1], tuple(group)))
            group = None
        else:
            segment.append(tok)
        if kind in (",", ";"):
            segment = []
    if group is not None:  # group missing its ";"
        _flush(segment, group)
        out.append(Group(group_name[0], group_name[1], tuple(group)))
    else:
        _flush(segment, out)
    return tuple(out)


def _flush(segment: list[_Token], into: list[Mailbox] | list[Mailbox | Group]) -> None:
    mailbox = _mailbox(segment)
    segment.clear()
    if mailbox is not None:
        into.append(mailbox)


def _mailbox(tokens: list[_Token]) -> Mailbox | None:
    if not tokens:
        return None
    comments = [t.text for t in tokens if t.kind == "comment" and t.text]
    lt = next((k for k, t in enumerate(tokens) if t.kind == "<"), None)
    if lt is not None:
        gt = next((k for k, t in enumerate(tokens) if t.kind == ">" and k > lt), len(tokens))
        phrase = _phrase(tokens[:lt]) or _phrase(tokens[gt + 1 :])
        route, local, domain = _addr_spec(tokens[lt + 1 : gt], angle=True)
        if local is None and domain is None and not phrase and route is None:
            return None
    else:
        words = [t for t in tokens if t.kind != "comment"]
        at = max((k for k, t in enumerate(words) if t.kind == "@"), default=None)
        if at is None:
            if not words:
                return None
            if len([t for t in words if t.kind in ("atom", "quoted")]) == 1 and len(words) == 1:
                return _make("", comments, route=None, local=_local(words), domain=None)
            return _make(_phrase(words), comments, route=None, local=None, domain=None)
        # the addr-spec is the run of local-part words before "@"; whitespace inside it is
        # only allowed around dots (RFC 5322 §4.4 obs-local-part), else it ends the phrase
        start = at
        while start > 0 and words[start - 1].kind in ("atom", "quoted"):
            prev = words[start - 1]
            if start < at:
                cur = words[start]
                dotted = prev.text.endswith(".") or cur.text.startswith(".")
                if cur.space_before and not dotted:
                    break
            start -= 1
        phrase = _phrase(words[:start])
        route, local, domain = _addr_spec(words[start:], angle=False)
    return _make(phrase, comments, route=route, local=local, domain=domain)


def _make(
    phrase: str, comments: list[str], *, route: str | None, local: str | None, domain: str | None
) -> Mailbox:
    name, raw = _names(phrase, comments)
    return Mailbox(name, raw, route, local, domain)


def _names(phrase: str, comments: list[str]) -> tuple[str | None, str | None]:
    raw = phrase if phrase.strip() else " ".join(c for c in comments if c)
    if not raw.strip():
        return None, None
    return decode_words(raw), raw


def _phrase(tokens: list[_Token]) -> str:
    """Display-name words as written: quoted strings unquoted, specials such as "." and "@"
    kept, one space where the source had whitespace or a comment (RFC 5322 §3.2.5)."""
    out: list[str] = []
    for tok in tokens:
        if tok.kind == "comment" or tok.kind in "<>,;:":
            continue
        if out and tok.space_before:
            out.append(" ")
        out.append(tok.text)
    return "".join(out)


def _addr_spec(tokens: list[_Token], *, angle: bool) -> tuple[str | None, str | None, str | None]:
    """(route, local, domain) from the tokens of an addr-spec, or of an angle-addr's inside."""
    words = [t for t in tokens if t.kind not in ("comment", ">")]
    route: str | None = None
    if angle:
        colon = next((k for k, t in enumerate(words) if t.kind == ":"), None)
        if colon is not None and words and words[0].kind == "@":
            # RFC 5322 §4.4: obs-route = obs-domain-list ":"
            route = "".join(t.text for t in words[:colon]) or None
            words = words[colon + 1 :]
    at = max((k for k, t in enumerate(words) if t.kind == "@"), default=None)
    if at is None:
        local = _local(words)
        return route, local, None
    local = _local(words[:at])
    domain = "".join(t.text for t in words[at + 1 :] if t.kind in ("atom", "literal"))
    return route, local, domain or None


def _local(words: list[_Token]) -> str | None:
    """RFC 5322 §3.4.1 local-part (obs-local-part: words and dots, CFWS dropped); returned in
    its canonical form, quoted only when it is not a dot-atom."""
    parts: list[str] = []
    quoted = False
    for tok in words:
        if tok.kind in ("atom", "quoted", ":"):  # ":" kept for URLs in List-* fields
            parts.append(tok.text)
            quoted = quoted or tok.kind == "quoted"
    if not parts:
        return None
    local = "".join(parts)
    if quoted and not _DOT_ATOM.fullmatch(local):
        escaped = local.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return local


_MSG_ID = re.compile(r"<([^<>]*)>")


def parse_msg_ids(text: str) -> tuple[str, ...]:
    """The ids of a Message-ID, In-Reply-To or References field body (RFC 5322 §3.6.4:
    ``"<" id-left "@" id-right ">"``), without the angle brackets; empty ``<>`` is skipped.
    Ids written without brackets (obsolete or broken mailers) are the whitespace-separated
    words of the field, comments removed."""
    if "<" in text:
        return tuple(m.strip() for m in _MSG_ID.findall(text) if m.strip())
    return tuple(_phrase([t for t in _tokenize(text) if t.kind != "comment"]).split())
