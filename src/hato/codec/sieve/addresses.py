"""Outgoing addresses in Sieve scripts (redirect, vacation :from/:addresses, mailto): one
RFC 5322 §3.4 mailbox, checked strictly, and the address parts of RFC 5228 §2.7.4/RFC 5233.

``parse_mailbox`` accepts ``local@domain`` and ``Name <local@domain>`` (atoms, quoted strings,
comments) and returns the bare ``local@domain`` (a quoted local part that is a dot-atom
unquoted, RFC 5322 §3.4.1) or a reason in Pigeonhole's words. RFC 5228 §4.2: redirect takes
exactly one address. ``parse_path`` reads an SMTP path (RFC 5321 §4.1.2, source routes
dropped) for the envelope test. Leaves out: group syntax and source routes in mailboxes,
internationalised local parts (RFC 6532) in outgoing addresses.
"""

from __future__ import annotations

import re

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*\Z")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+\Z")
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\Z"
)
_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]*\]")
_DELIMS = set(' \t\r\n@<>,;:"()[]\\')


class _Scan:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def cfws(self) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r\n":
                self.pos += 1
            elif ch == "(":
                depth = 0
                while self.pos < len(self.text):
                    c = self.text[self.pos]
                    if c == "\\":
                        self.pos += 1
                    elif c == "(":
                        depth += 1
                    elif c == ")":
                        depth -= 1
                        if depth == 0:
                            self.pos += 1
                            break
                    self.pos += 1
            else:
                return

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def quoted(self) -> str | None:
        if self.peek() != '"':
            return None
        out = ['"']
        self.pos += 1
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos : self.pos + 2])
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
            if ch == '"':
                return "".join(out)
        return None

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _DELIMS:
            self.pos += 1
        return self.text[start : self.pos]


def _addr_spec(scan: _Scan) -> tuple[str | None, str]:
    """local@domain at the scanner's position: (address, "") or (None, reason)."""
    scan.cfws()
    local = scan.quoted()
    if local is not None:
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_ATOM.match(inner):
            # RFC 5322 §3.4.1 / RFC 5321 §4.1.2: a quoted local part that is a dot-atom is
            # the same mailbox unquoted; the unquoted form is the canonical one
            local = inner
    if local is None:
        local = scan.word()
        # obsolete local parts with leading, trailing or doubled dots are still seen in the
        # wild (Japanese mobile carriers); they are accepted as RFC 5322 §4.4 obs-local-part
        if not local or not _LOCAL.match(local):
            return None, "invalid local part"
    scan.cfws()
    if scan.peek() != "@":
        return None, f"invalid or lonely local part '{local}' (expecting '@')"
    scan.pos += 1
    scan.cfws()
    if scan.peek() == "[":
        m = _LITERAL.match(scan.text, scan.pos)
        if m is None:
            return None, "invalid or missing domain"
        domain = m.group(0)
        scan.pos = m.end()
    else:
        domain = scan.word()
        if not domain or not _DOMAIN.match(domain):
            return None, "invalid or missing domain"
    return f"{local}@{domain}", ""


def parse_mailbox(text: str) -> tuple[str | None, str]:
    """One mailbox (RFC 5322 §3.4): ``(local@domain, "")`` or ``(None, reason)``."""
    if not text.strip(" \t\r\n"):
        return None, "empty address"
    scan = _Scan(text)
    scan.cfws()
    angle = text.find("<")
    if angle >= 0 and ('"' not in text[:angle]):
        # name-addr: phrase "<" addr-spec ">"
        scan.pos = angle + 1
        scan.cfws()
        if scan.pos >= len(text):
            return None, "missing domain"
        address, reason = _addr_spec(scan)
        if address is None:
            return None, reason
        scan.cfws()
        if scan.peek() != ">":
            return None, "missing '>'"
        scan.pos += 1
    else:
        if scan.peek() == '"':
            start = scan.pos
            if scan.quoted() is None:
                return None, "invalid local part"
            scan.cfws()
            if scan.peek() == "<":
                scan.pos += 1
                address, reason = _addr_spec(scan)
                if address is None:
                    return None, reason
                scan.cfws()
                if scan.peek() != ">":
                    return None, "missing '>'"
                scan.pos += 1
            else:
                scan.pos = start
                address, reason = _addr_spec(scan)
        else:
            address, reason = _addr_spec(scan)
        if address is None:
            return None, reason
    scan.cfws()
    if scan.pos < len(text):
        return None, f"not a single address (found '{text[scan.pos]}')"
    return address, ""


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of ``local@domain`` (the last "@" splits; a bare name has no
    domain)."""
    at = address.rfind("@")
    if at < 0:
        return address, ""
    return address[:at], address[at + 1 :]


def address_part(address: str, part: str, *, delimiter: str = "+") -> str | None:
    """RFC 5228 §2.7.4 :all/:localpart/:domain and RFC 5233 §4 :user/:detail. None when the
    part does not exist (an address without a detail has no :detail, RFC 5233 §4)."""
    local, domain = split_address(address)
    if part == "all":
        return address
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    if not delimiter:
        return local if part == "user" else None
    # RFC 5233 §4: the detail starts at the first delimiter character
    cut = min((i for i in (local.find(d) for d in delimiter) if i >= 0), default=-1)
    if part == "user":
        return local if cut < 0 else local[:cut]
    if part == "detail":
        return None if cut < 0 else local[cut + 1 :]
    return None


# RFC 5321 §4.1.2 Path, read leniently the way mail is met in practice: local parts may hold
# any dots (older Japanese mobile addresses), domain labels "_" and edge "-"
_PATH_LOCAL = re.compile(
    r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\x80-\U0010ffff]+|\"(?:[^\"\\]|\\.)*\")\Z"
)
_PATH_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9_\-\x80-\U0010ffff]+(?:\.[A-Za-z0-9_\-\x80-\U0010ffff]+)*|\[[\x21-\x5a\x5e-\x7e]*\])\Z"
)
_ROUTE_DOMAIN = re.compile(r"@[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\Z")


def parse_path(text: str) -> str | None:
    """The address of an SMTP path (RFC 5321 §4.1.2 Path / Reverse-path): "" for the null
    path <>, the bare mailbox otherwise (source routes dropped, §C), None when malformed.
    Angle brackets are optional; a local part alone (e.g. MAILER-DAEMON) is accepted."""
    text = text.strip()
    if text in ("", "<>"):
        return ""
    if text.startswith("<"):
        if not text.endswith(">"):
            return None
        text = text[1:-1]
    if "<" in text or ">" in text:
        return None
    if text.startswith("@"):  # RFC 5321 §4.1.2 A-d-l: "@" domain *("," "@" domain) ":"
        route, colon, text = text.partition(":")
        if not colon or not all(_ROUTE_DOMAIN.match(hop) for hop in route.split(",")):
            return None
    local, at, domain = text.rpartition("@") if not text.endswith('"') else ("", "", text)
    if not at:
        return text if _PATH_LOCAL.match(text) else None
    if not local or not _PATH_LOCAL.match(local) or not _PATH_DOMAIN.match(domain):
        return None
    return text
