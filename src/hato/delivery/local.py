"""Local delivery of one received message: trace header fields, the streamed body, the commit.

Implements RFC 5321 §4.4 (a Received field prepended, with FROM/BY/WITH/ID and a FOR clause
only when there is exactly one recipient, since the body is shared by all recipients; a
Return-Path field at final delivery), the WITH protocol names of RFC 3848 §2 and
RFC 6531 §3.7.3, the "tls" clause of RFC 8314 §4.3, mail-loop detection by counting Received
fields (RFC 5321 §6.3), the TLS-Required header field of RFC 8689 §3/§4.1, and the durable
hand-off: the body is made durable (``BlobWriter.commit``: a large one fsynced in a worker
thread; a small one, committed inline, is journalled by the unit of work that stores it)
and every copy is stored in one unit of work (``MailStore.deliver``), so "250 OK" means the
body and every copy are on disk.

``deliver_message`` is the one delivery path of the SMTP server: every local copy goes through
the account's Sieve script (``delivery.sieve``), and the remote recipients' queue entries plus
what the scripts send (``delivery.sieve_send``: redirect, vacation, notify, reject MDN /
ereject DSN) are committed with the copies in one unit of work (``deliver_and_queue``); when
every recipient's script refused the message, nothing is stored and the refusal is returned
for the end of DATA (RFC 5429 §2.1.1/§2.2).

Messages to verify first (``hato.policy.inbound`` on the MX) are spooled
(``SpooledMessage``): the client's data goes to an anonymous temporary file, and the final
body is written once the verdict is known (``write_blob``), with the trace fields and our
Authentication-Results field in front. Cost: the body is written twice (spool, then the final
file) and read into memory once at the end of DATA, which the DKIM verifier needs anyway.

Leaves out: content filters (spam, virus).

Security: the body is streamed (never held whole in memory while it arrives); header scanning
keeps at most one line prefix; peer-supplied strings in trace fields are reduced to safe tokens.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hato.codec.smtp_events import Envelope
from hato.core import log
from hato.core.address import Address
from hato.core.errors import StoreError
from hato.core.reply import Reply
from hato.delivery.sieve import sieve_committed, sieve_plan, store_edited
from hato.delivery.sieve_send import Received, Sending, prepare_sends, protocol_refusal
from hato.store.api import BlobWriter, MailStore
from hato.store.model import Appended, BlobRef, DeliveryTarget
from hato.store.queue import NewQueueEntry

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
    lines[-1] += f"; {_date_time(int(now))}"
    return ("\r\n\t".join(lines) + "\r\n").encode("utf-8")


@functools.lru_cache(maxsize=4)
def _date_time(second: int) -> str:
    """RFC 5322 §3.3 date-time of a second, local time with its offset (the same for every
    message of that second: computed once)."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(second).astimezone())


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
        """Make the body durable and install it: inline when the writer says that costs no
        fsync (a small body, journalled by the unit that stores it), else without blocking
        the event loop (in a thread, or in an SMTP worker's shared body-log fdatasync)."""
        self._finished = True
        return await self._writer.commit_async()

    def abort(self) -> None:
        if not self._finished:
            self._finished = True
            self._writer.abort()


class SpooledMessage:
    """A message to verify before it is stored: the client's data streams into an anonymous
    temporary file (unlinked from the start, so nothing is left behind whatever ends the
    process; memory stays bounded however slowly it arrives) and is read back once at the
    end of DATA, when the trace fields and our Authentication-Results field are known."""

    def __init__(self, directory: Path | None) -> None:
        self.scan = HeaderScan()
        self.failed: OSError | None = None
        self._size = 0
        # lives as long as the transaction (closed by abort); OSError: the caller answers 451
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115

    def write(self, data: bytes) -> None:
        self.scan.feed(data)
        if self.failed is not None:
            return
        try:
            self._file.write(data)
            self._size += len(data)
        except OSError as exc:
            self.failed = exc  # e.g. disk full: reported when the body ends

    @property
    def size(self) -> int:
        return self._size

    def read(self) -> bytes:
        """The whole message (blocking: call it in a thread)."""
        self._file.flush()
        self._file.seek(0)
        return self._file.read()

    def abort(self) -> None:
        self._file.close()


def split_header(message: bytes) -> int:
    """Where the header section ends (after the CRLF of its last field; RFC 5322 §2.1)."""
    end = message.find(b"\r\n\r\n")
    if message.startswith(b"\r\n"):
        return 0
    return len(message) if end < 0 else end + 2


async def write_blob(store: MailStore, parts: Sequence[bytes | memoryview]) -> BlobRef:
    """A new body made of ``parts``, fsynced and installed (blocking work in a thread)."""

    def work() -> BlobRef:
        writer = store.blobs.writer()
        try:
            for part in parts:
                writer.write(bytes(part))
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    return await asyncio.to_thread(work)


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
    strip_prefix: int = 0  # octets of our Return-Path field at the start of ``blob``

    @property
    def requiretls(self) -> bool:
        """RFC 8689 §4.1: tagged by the MAIL parameter (which overrides the header field)."""
        return self.envelope.params.requiretls


async def deliver_local(store: MailStore, message: ReceivedMessage) -> list[Appended]:
    """Store one copy per target in one unit of work (all or none); QuotaExceeded names the
    account over quota and stores nothing. Sieve scripts choose the copies (delivery.sieve);
    without an outbound queue their outgoing actions are only logged (never losing mail)."""
    plan = await sieve_plan(
        store,
        blob=message.blob,
        envelope=message.envelope,
        targets=message.targets,
        now=message.received_at,
        strip_prefix=message.strip_prefix,
    )
    appended = await store_edited(store, plan, now=message.received_at)  # RFC 5293 §7
    appended += await store.deliver(message.blob, plan.targets, internal_date=message.received_at)
    await sieve_committed(store, plan, now=message.received_at)
    return appended


@dataclass(frozen=True, slots=True)
class Delivered:
    """The outcome of ``deliver_message``: stored copies and queue entries, or a refusal
    (RFC 5429 §2.5) to send instead of 250, in which case nothing was stored."""

    appended: tuple[Appended, ...] = ()
    queued: tuple[int, ...] = ()
    refusal: Reply | None = None


async def deliver_message(
    store: MailStore,
    message: ReceivedMessage,
    *,
    outbound: Sequence[NewQueueEntry] = (),
    sending: Sending | None = None,
) -> Delivered:
    """Every local copy (through each account's Sieve script), the remote recipients'
    queue entries (``outbound``) and what the scripts send, in one unit of work before the
    SMTP 250. ``sending`` None: no outbound queue (``deliver_local``'s behaviour)."""
    now = message.received_at
    plan = await sieve_plan(
        store,
        blob=message.blob,
        envelope=message.envelope,
        targets=message.targets,
        now=now,
        sending=sending is not None,
        strip_prefix=message.strip_prefix,
        settings=sending.sieve if sending is not None else None,
    )
    if sending is None:
        edited = await store_edited(store, plan, now=now)  # RFC 5293 §7: edited copies
        if outbound:
            appended, ids = await store.deliver_and_queue(
                message.blob, plan.targets, outbound, internal_date=now
            )
        else:
            appended, ids = await store.deliver(message.blob, plan.targets, internal_date=now), []
        await sieve_committed(store, plan, now=now)
        return Delivered(tuple(edited + appended), tuple(ids))
    if not outbound:
        # RFC 5429 §2.1.1 / §2.2 condition 2: every recipient refused: refuse over SMTP
        refusal = protocol_refusal(plan, message.targets)
        if refusal is not None:
            log.event("sieve.reject.smtp", targets=len(message.targets))
            return Delivered(refusal=refusal)
    received = Received(message.blob, message.envelope, message.strip_prefix, now)
    sends = await prepare_sends(store, plan, received=received, sending=sending)
    targets = _unique(list(plan.targets) + sends.targets)
    entries = list(outbound) + sends.entries
    edited = await store_edited(store, plan, now=now)  # RFC 5293 §7: edited copies
    if entries:
        appended, ids = await store.deliver_and_queue(
            message.blob, targets, entries, internal_date=now
        )
    else:
        appended, ids = await store.deliver(message.blob, targets, internal_date=now), []
    appended = edited + appended
    for blob, local in sends.notices:
        try:
            appended += await store.deliver(blob, local, internal_date=now)
        except StoreError as exc:  # e.g. the sender's mailbox is full: the notice is dropped
            log.event("sieve.notice.failed", error=exc.detail)
    await sieve_committed(store, plan, now=now, sent=sends.sent)
    return Delivered(tuple(appended), tuple(ids))


def _unique(targets: list[DeliveryTarget]) -> list[DeliveryTarget]:
    """One copy per (account, mailbox): a redirect to oneself adds nothing."""
    seen: dict[tuple[int, str], DeliveryTarget] = {}
    for target in targets:
        seen.setdefault((target.account_id, target.mailbox), target)
    return list(seen.values())
