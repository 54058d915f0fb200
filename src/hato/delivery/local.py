"""Local delivery of one received message: trace header fields, the streamed body, the commit.

Implements RFC 5321 §4.4 (a Received field prepended, with FROM/BY/WITH/ID and a FOR clause
only when there is exactly one recipient, since the body is shared by all recipients; a
Return-Path field at final delivery), the WITH protocol names of RFC 3848 §2 and
RFC 6531 §3.7.3, the "tls" clause of RFC 8314 §4.3, mail-loop detection by counting Received
fields (RFC 5321 §6.3), the TLS-Required header field of RFC 8689 §3/§4.1, and the durable
hand-off: the body is fsynced (``BlobWriter.commit`` in a worker thread) and then every copy
is stored in one unit of work (``MailStore.deliver``), so "250 OK" means every copy is on disk.

Leaves out: content filters, DSN generation (RET/ENVID/NOTIFY/ORCPT travel on the
envelope for the outbound queue, which comes later).

Security: the body is streamed (never held whole in memory); header scanning keeps at most one
line prefix; peer-supplied strings in trace fields are reduced to safe tokens.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import re
from dataclasses import dataclass

from hato.codec.smtp_events import Envelope
from hato.core.address import Address
from hato.delivery.sieve import sieve_committed, sieve_plan
from hato.store.api import BlobWriter, MailStore
from hato.store.model import Appended, BlobRef, DeliveryTarget

MAX_RECEIVED = 100  # RFC 5321 §6.3: a simple count of Received fields, "at least 100"
_HELO_TOKEN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.IPv]{2,60}\]")
# RFC 8314 §4.3: tls-cipher-name = ALPHA *(ALPHA / DIGIT / "_")
_CIPHER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TLS_REQUIRED_NO = re.compile(rb"tls-required:[ \t]*no[ \t]*\r?\n?", re.IGNORECASE)
_HEAD = 64  # octets of each header line kept for matching


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What the Received field says about the connection and transaction."""

    hostname: str  # this server
    helo: str
    remote_ip: str
    extended: bool  # EHLO rather than HELO
    tls_version: str | None = None
    tls_cipher: str | None = None
    authenticated: bool = False
    smtputf8: bool = False
    transaction_id: str = ""


def protocol_name(info: TraceInfo) -> str:
    """WITH keyword: RFC 3848 §2 (ESMTP, ESMTPA, ESMTPS, ESMTPSA) and RFC 6531 §3.7.3 (UTF8SMTP,
    UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA)."""
    if not info.extended:
        return "SMTP"
    base = "UTF8SMTP" if info.smtputf8 else "ESMTP"
    return base + ("S" if info.tls_version else "") + ("A" if info.authenticated else "")


def _ip_literal(ip: str) -> str:
    """RFC 5321 §4.1.3 address literal for the TCP-info of the FROM clause."""
    if ":" in ip:
        return f"[IPv6:{ip}]"
    return f"[{ip}]"


def path_text(address: Address | None, *, utf8: bool) -> str:
    """A path for a header field: UTF-8 only in SMTPUTF8 transactions (RFC 6532 §3.2),
    A-labels otherwise."""
    if address is None:
        return "<>"
    domain = address.domain if utf8 else address.ascii_domain()
    return f"<{address.local}@{domain}>"


def received_header(info: TraceInfo, *, recipient: Address | None, now: float) -> bytes:
    """The Received field (RFC 5321 §4.4 Stamp), folded, ending in CRLF."""
    literal = _ip_literal(info.remote_ip)
    helo = info.helo if _HELO_TOKEN.fullmatch(info.helo) else literal
    lines = [f"Received: from {helo} ({literal})"]
    by = f"by {info.hostname} (Hato) with {protocol_name(info)}"
    if info.transaction_id:
        by += f" id {info.transaction_id}"
    lines.append(by)
    if info.tls_version and info.tls_cipher:
        # RFC 8314 §4.3: the "tls" clause (the version goes in a comment)
        lines.append(f"({info.tls_version}) tls {info.tls_cipher}")
    if recipient is not None:
        # RFC 5321 §4.4: FOR holds exactly one path; only written for a single recipient
        lines.append(f"for {path_text(recipient, utf8=info.smtputf8)}")
    stamp = datetime.datetime.fromtimestamp(now).astimezone()  # local time with offset
    lines[-1] += f"; {email.utils.format_datetime(stamp)}"
    return ("\r\n\t".join(lines) + "\r\n").encode("utf-8")


def return_path_header(sender: Address | None, *, utf8: bool) -> bytes:
    """RFC 5321 §4.4: final delivery records the reverse-path."""
    return f"Return-Path: {path_text(sender, utf8=utf8)}\r\n".encode()


def tls_cipher_token(name: str, ids: dict[str, int]) -> str:
    """RFC 8314 §4.3: the registered cipher suite name, else its four hex digits."""
    if _CIPHER_NAME.fullmatch(name):
        return name
    code = ids.get(name)
    return f"0x{code & 0xFFFF:04X}" if code is not None else "0x0000"


class HeaderScan:
    """Counts Received fields and finds ``TLS-Required: No`` in the header section of a
    streamed message, keeping at most one line prefix in memory."""

    def __init__(self) -> None:
        self.received = 0
        self.tls_required_no = False
        self.done = False
        self._head = b""
        self._bol = True

    def feed(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size and not self.done:
            nl = data.find(b"\n", pos)
            end = size if nl < 0 else nl + 1
            if self._bol:
                self._head = data[pos : min(end, pos + _HEAD)]
            elif len(self._head) < _HEAD:
                self._head += data[pos : min(end, pos + _HEAD - len(self._head))]
            self._bol = nl >= 0
            if self._bol:
                self._line(self._head)
            pos = end

    def _line(self, head: bytes) -> None:
        if head in (b"\r\n", b"\n"):
            self.done = True  # RFC 5322 §2.1: an empty line ends the header section
        elif head[:9].lower() == b"received:":
            self.received += 1
        elif _TLS_REQUIRED_NO.fullmatch(head):
            self.tls_required_no = True


class IncomingMessage:
    """A message being received: trace fields first, then the body as it arrives."""

    def __init__(self, writer: BlobWriter, *, prefix: bytes) -> None:
        self._writer = writer
        self.scan = HeaderScan()
        self.failed: OSError | None = None
        self._finished = False
        self._write(prefix)

    def _write(self, data: bytes) -> None:
        if self.failed is not None:
            return
        try:
            self._writer.write(data)
        except OSError as exc:
            self.failed = exc  # e.g. disk full: reported when the body ends

    def write(self, data: bytes) -> None:
        self.scan.feed(data)
        self._write(data)

    @property
    def size(self) -> int:
        return self._writer.size

    async def commit(self) -> BlobRef:
        """fsync and install the body (blocking work in a thread)."""
        self._finished = True
        return await asyncio.to_thread(self._writer.commit)

    def abort(self) -> None:
        if not self._finished:
            self._finished = True
            self._writer.abort()


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """What the SMTP server hands to delivery: the committed body, where its copies go, and
    the transaction's envelope with every parameter the outbound queue and DSNs will need
    (reverse-path; RET, ENVID, BODY, SMTPUTF8, REQUIRETLS of RFC 3461 §4 / RFC 6531 /
    RFC 8689; per recipient NOTIFY and ORCPT)."""

    envelope: Envelope
    blob: BlobRef
    targets: tuple[DeliveryTarget, ...]
    received_at: float
    tls_required_no: bool = False  # RFC 8689 §4.1: "TLS-Required: No" seen in the header

    @property
    def requiretls(self) -> bool:
        """RFC 8689 §4.1: tagged by the MAIL parameter (which overrides the header field)."""
        return self.envelope.params.requiretls


async def deliver_local(store: MailStore, message: ReceivedMessage) -> list[Appended]:
    """Store one copy per target in one unit of work (all or none); QuotaExceeded names the
    account over quota and stores nothing. Sieve scripts choose the copies (delivery.sieve)."""
    plan = await sieve_plan(
        store,
        blob=message.blob,
        envelope=message.envelope,
        targets=message.targets,
        now=message.received_at,
    )
    appended = await store.deliver(message.blob, plan.targets, internal_date=message.received_at)
    await sieve_committed(store, plan, now=message.received_at)
    return appended
