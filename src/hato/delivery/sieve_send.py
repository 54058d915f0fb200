"""Sieve actions that send mail, carried out through the outbound queue (or local delivery).

Turns the outgoing part of Sieve decisions (``hato.delivery.sieve``) into queue entries and
local copies committed in the same unit of work as the received message:

* redirect (RFC 5228 §4.2): the received body itself (its Received fields preserved, ours
  included, so the count grows), to local accounts as extra copies or queued for remote
  addresses with an ``X-Sieve-Redirected-From`` field naming the account first; the
  envelope sender is the one ``SieveLimits.redirect_envelope_from`` (in ``Sending.sieve``,
  the ``[sieve]`` settings) chooses (by default the
  original), rewritten with SRS when it is a remote sender (``SenderRewriter``,
  hato.outbound.srs) so SPF passes at the destination; an empty sender stays empty (§4.2
  MUST). Loop control (§4.2 MUST): a message that already carries ``loop_limit`` Received
  fields stamped by this host, or an X-Sieve-Redirected-From field naming the account or
  the recipient address, is not redirected again (an error: the implicit keep applies,
  RFC 5228 §2.10.6);
* vacation (RFC 5230 §5.1: MAIL FROM <>, RCPT NOTIFY=NEVER; §4.2 the reply is recorded as
  sent only when queued), notify by mailto (RFC 5436 §2), both composed by
  ``hato.codec.sieve.compose``;
* report (Pigeonhole's vnd.dovecot.report): an RFC 5965 feedback report about the message
  as received (``hato.codec.sieve.ext_report``), from <>, its From chosen by
  ``SieveLimits.report_from``; never to the account that runs the script (the extension's
  §3 MUST: a report that would reach it is dropped and logged);
* reject (RFC 5429 §2.2.1: an MDN) and ereject (§2.1.2: a DSN, RFC 3464 with the reason,
  Action: failed) to the envelope sender when the refusal cannot be given at the SMTP level,
  never to the null reverse-path (RFC 3461 §6.2, RFC 3798 §2.1; logged, §2.1 SHOULD), and
  ``refusal_reply`` for the protocol-level refusal (§2.5: multi-line 550 5.7.1, US-ASCII).

Generated messages to local addresses are stored directly (they do not run the recipient's
Sieve script, so two vacation scripts cannot answer each other forever).

Leaves out: combining several redirects into one transaction (one entry per destination
domain already groups them), ``envelope :auth`` for redirect decisions.

Security: message content is never logged; generated messages go only to the envelope sender
or to addresses the script owner wrote; every queued entry expires like any other.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hato.codec.sieve import compose
from hato.codec.sieve.actions import Action, Notify, Redirect, Reject, Report, Vacation
from hato.codec.sieve.ext_report import report_message
from hato.codec.smtp_events import Envelope
from hato.core import log
from hato.core.address import Address
from hato.core.errors import AddressError
from hato.core.reply import Reply
from hato.delivery.recipients import RecipientResolver, Resolution
from hato.delivery.sieve import (
    DEFAULT_SETTINGS,
    Decision,
    SievePlan,
    SieveSettings,
    sieve_envelope,
    write_body,
)
from hato.store.api import MailStore
from hato.store.model import BlobRef, DeliveryTarget
from hato.store.queue import NewQueueEntry, QueueRecipient

REDIRECT_LOOP_LIMIT = 3  # our own Received fields on a message we will not redirect again
REFUSAL_LINE = 400  # RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets
ASCII_REFUSAL = "Message refused by the recipient's mail filter"  # RFC 5429 §2.1.1


class SenderRewriter(Protocol):
    """SRS (hato.outbound.srs.Srs): the reverse-path for mail we forward for ``domain``."""

    def forward(self, sender: str, *, domain: str, now: float) -> str: ...


@dataclass(frozen=True, slots=True)
class Sending:
    """What carrying out outgoing Sieve actions needs (built by the SMTP server)."""

    resolver: RecipientResolver
    hostname: str
    expire_after: float
    srs: SenderRewriter | None = None
    loop_limit: int = REDIRECT_LOOP_LIMIT
    # DKIM (hato.outbound.dkim_sign): (message, domain) -> fields to prepend; b"" without keys
    signer: Callable[[bytes, str], bytes] | None = None
    sieve: SieveSettings = DEFAULT_SETTINGS  # the [sieve] settings (limits, programs, policy)


@dataclass(frozen=True, slots=True)
class Received:
    """The received message the actions are about."""

    blob: BlobRef
    envelope: Envelope
    strip_prefix: int  # octets of our Return-Path field at the start of the blob
    now: float


@dataclass
class Sends:
    """What the outgoing actions add to the delivery's unit of work."""

    targets: list[DeliveryTarget] = field(default_factory=list)  # more copies of the blob
    entries: list[NewQueueEntry] = field(default_factory=list)
    notices: list[tuple[BlobRef, list[DeliveryTarget]]] = field(default_factory=list)
    sent: list[Action] = field(default_factory=list)  # actions carried out


def refusal_reply(reasons: Sequence[str]) -> Reply:
    """RFC 5429 §2.5: the reason as a (multi-line) 550 with enhanced code 5.7.1."""
    lines: list[str] = []
    for reason in dict.fromkeys(reasons):
        text = reason if reason.isascii() else ASCII_REFUSAL  # RFC 5429 §2.1.1: US-ASCII only
        for raw in text.replace("\r\n", "\n").split("\n"):
            raw = raw.rstrip()
            while len(raw) > REFUSAL_LINE:
                cut = raw.rfind(" ", 0, REFUSAL_LINE)
                cut = cut if cut > 0 else REFUSAL_LINE
                lines.append(raw[:cut])
                raw = raw[cut:].lstrip()
            lines.append(raw)
    while lines and not lines[-1]:
        lines.pop()
    return Reply.lines(550, "5.7.1", lines or [ASCII_REFUSAL])


def protocol_refusal(plan: SievePlan, targets: Sequence[DeliveryTarget]) -> Reply | None:
    """The SMTP-level refusal when every local target refused the message (RFC 5429 §2.2
    condition 2: a single recipient, or all recipients refused; the caller makes sure there
    are no remote recipients), else None. A ``reject`` reason that is not US-ASCII is only
    sent as an MDN (§2.2 condition 1)."""
    if not targets:
        return None
    decided = {account_id: d for account_id, d in plan.decisions}
    reasons: list[str] = []
    for target in targets:
        decision = decided.get(target.account_id)
        if decision is None or decision.rejected is None:
            return None
        if decision.targets or decision.pending or decision.edited:
            return None
        if not decision.ereject and not decision.rejected.isascii():
            return None
        reasons.append(decision.rejected)
    return refusal_reply(reasons)


def _own_received(message: bytes, hostname: str) -> int:
    end = message.find(b"\r\n\r\n")
    header = message if end < 0 else message[:end]
    stamp = re.compile(rb"\n[ \t]+by " + re.escape(hostname.encode()) + rb" \(Hato\)", re.I)
    return len(stamp.findall(header))


def _from_domain(message: bytes) -> str:
    """The domain of the From field of a message we composed (ASCII header, RFC 5322)."""
    end = message.find(b"\r\n\r\n")
    header = (message if end < 0 else message[:end]).decode("utf-8", "replace")
    unfolded = re.sub(r"\r\n[ \t]", " ", header)
    for line in unfolded.split("\r\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "from":
            return email.utils.parseaddr(value)[1].rpartition("@")[2].lower()
    return ""


def _remote(address: Address, resolution: Resolution) -> tuple[str, ...]:
    """The remote addresses to queue; RFC 5321 §2.4: a remote local part keeps its case."""
    return resolution.remote if resolution.local_domain else (str(address),)


class _Sender:
    """Carries out the outgoing actions of one delivery."""

    def __init__(self, store: MailStore, sending: Sending, received: Received) -> None:
        self.store = store
        self.sending = sending
        self.received = received
        self.sends = Sends()
        self._message: bytes | None = None
        sender = received.envelope.sender.address
        self.sender = str(sender) if sender is not None else ""

    async def message(self) -> bytes:
        if self._message is None:
            self._message = await asyncio.to_thread(self.store.blobs.read, self.received.blob.id)
        return self._message

    async def _is_local(self, address: str) -> bool:
        try:
            return await self.sending.resolver.is_local_domain(Address.parse(address))
        except AddressError:
            return False

    def _entry(
        self,
        blob: BlobRef,
        sender: str,
        recipient: QueueRecipient,
        *,
        strip: int,
        account_id: int | None = None,
    ) -> NewQueueEntry:
        params = self.received.envelope.params
        return NewQueueEntry(
            blob=blob,
            sender=sender,
            recipients=(recipient,),
            expires=self.received.now + self.sending.expire_after,
            account_id=account_id,
            body=params.body.value,
            smtputf8=params.smtputf8 or not (sender + recipient.address).isascii(),
            strip_prefix=strip,
        )

    async def redirect(self, account_id: int, user: str, action: Redirect) -> bool:
        """True when the redirect was carried out (queued or stored)."""
        message = await self.message()
        strip = self.received.strip_prefix
        hops = _own_received(message[strip:], self.sending.hostname)
        limits = self.sending.sieve.limits
        envelope = sieve_envelope(
            self.received.envelope, user, delimiter=limits.subaddress_delimiter
        )
        users = (user, envelope.to)
        if hops >= self.sending.loop_limit or compose.redirect_loop(message[strip:], users=users):
            # RFC 5228 §4.2: loop control; a detected loop is an error (implicit keep)
            log.event("sieve.redirect.loop", account=account_id, to=action.address, hops=hops)
            return False
        try:
            address = Address.parse(action.address)
        except AddressError:
            log.event("sieve.redirect.invalid", account=account_id)
            return False
        resolution = await self.sending.resolver.resolve(address)
        if resolution.loop or not (resolution.targets or resolution.remote):
            log.event("sieve.redirect.undeliverable", account=account_id, to=action.address)
            return False
        blob, data = self.received.blob, message
        if action.message is not None and action.message != message:
            # editheader changed the header (RFC 5293): send the edited message
            prefix = message[:strip]
            strip = strip if action.message.startswith(prefix) else 0
            data = action.message
            blob = await write_body(self.store, data)
        if resolution.targets:
            # local copies are stored without running Sieve again: no loop to mark
            if blob is self.received.blob:
                self.sends.targets.extend(resolution.targets)
            else:
                self.sends.notices.append((blob, list(resolution.targets)))
        original = compose.redirect_sender("", envelope=envelope, user_email=user)
        sender = compose.redirect_sender(
            limits.redirect_envelope_from, envelope=envelope, user_email=user
        )
        srs = self.sending.srs
        if sender and sender == original and srs and not await self._is_local(sender):
            domain = user.rpartition("@")[2]
            sender = srs.forward(sender, domain=domain, now=self.received.now)
        remote = _remote(address, resolution)
        if remote:
            # RFC 5228 §4.2 loop control where the message comes back through another
            # server's Sieve (or ours): the field names the user who redirected it
            marked = data[:strip] + compose.mark_redirected(data[strip:], user=user)
            blob = await write_body(self.store, marked)
        for target in remote:
            self.sends.entries.append(
                self._entry(blob, sender, QueueRecipient(target), strip=strip)
            )
        log.event(
            "sieve.redirect.queued",
            account=account_id,
            to=action.address,
            local=len(resolution.targets),
            remote=len(resolution.remote),
            srs=sender != original,
        )
        return True

    async def generated(
        self, account_id: int, outgoing: compose.Outgoing, *, what: str, never_notify: bool
    ) -> bool:
        """Send a message Sieve composed (vacation, notification, MDN, DSN)."""
        try:
            address = Address.parse(outgoing.recipient)
        except AddressError:
            log.event(f"sieve.{what}.invalid", account=account_id)
            return False
        path = f"<{outgoing.sender}>" if outgoing.sender else "<>"
        prefix = f"Return-Path: {path}\r\n".encode()  # RFC 5321 §4.4 for local copies
        resolution = await self.sending.resolver.resolve(address)
        if resolution.loop or not (resolution.targets or resolution.remote):
            log.event(f"sieve.{what}.undeliverable", account=account_id)
            return False
        data = outgoing.message
        signer = self.sending.signer
        if signer is not None and not outgoing.sender:
            # the queue signs by the envelope sender's domain, which <> has none of: sign
            # for the author domain (RFC 6376 §1.2: any domain may sign; DMARC wants the
            # From domain, RFC 7489 §3.1.1), so the reply passes DMARC where it arrives
            domain = _from_domain(data)
            if domain:
                data = await asyncio.to_thread(signer, data, domain) + data
        blob = await write_body(self.store, prefix + data)
        if resolution.targets:
            self.sends.notices.append((blob, list(resolution.targets)))
        # RFC 5230 §5.1: NOTIFY=NEVER for auto-replies (an empty set renders as NEVER)
        notify: frozenset[str] | None = frozenset() if never_notify else None
        for target in _remote(address, resolution):
            rcpt = QueueRecipient(target, notify)
            self.sends.entries.append(
                self._entry(blob, outgoing.sender, rcpt, strip=len(prefix), account_id=None)
            )
        log.event(
            f"sieve.{what}.queued",
            account=account_id,
            local=len(resolution.targets),
            remote=len(resolution.remote),
        )
        return True

    async def report(self, account_id: int, user: str, action: Report) -> bool:
        """The RFC 5965 report ``action`` asks for; never to ``user``'s own account."""
        try:
            resolution = await self.sending.resolver.resolve(Address.parse(action.recipient))
        except AddressError:
            log.event("sieve.report.invalid", account=account_id)
            return False
        if any(t.account_id == account_id for t in resolution.targets):
            # vnd.dovecot.report §3: "MUST NOT allow sending report messages to the mail
            # account running this Sieve script"
            log.event("sieve.report.own_account", account=account_id)
            return False
        limits = self.sending.sieve.limits
        envelope = sieve_envelope(
            self.received.envelope, user, delimiter=limits.subaddress_delimiter
        )
        outgoing = report_message(
            action,
            original=(await self.message())[self.received.strip_prefix :],
            envelope=envelope,
            user=user,
            now=self.received.now,
            setting=limits.report_from,
            user_email=limits.user_email,
            hostname=self.sending.hostname,
        )
        return await self.generated(account_id, outgoing, what="report", never_notify=True)

    async def refusal(self, account_id: int, user: str, decision: Decision) -> None:
        """RFC 5429 §2.2.1 MDN for reject, §2.1.2 DSN for ereject; none to <>."""
        assert decision.rejected is not None
        if not self.sender:
            # RFC 5429 §2.1/§2.2: no MDN/DSN to the null reverse-path; SHOULD log why
            log.event("sieve.reject.no_notice", account=account_id, reason="null sender")
            return
        original = (await self.message())[self.received.strip_prefix :]
        now = self.received.now
        if decision.ereject:
            outgoing: compose.Outgoing | None = compose.Outgoing(
                "",
                self.sender,
                ereject_dsn(
                    decision.rejected,
                    original=original,
                    user=user,
                    envelope_sender=self.sender,
                    hostname=self.sending.hostname,
                    now=now,
                ),
            )
        else:
            outgoing = compose.reject_mdn(
                Reject(decision.rejected),
                original=original,
                user=user,
                envelope_sender=self.sender,
                now=now,
            )
        if outgoing is not None:
            what = "ereject" if decision.ereject else "reject"
            await self.generated(account_id, outgoing, what=what, never_notify=True)


async def prepare_sends(
    store: MailStore, plan: SievePlan, *, received: Received, sending: Sending
) -> Sends:
    """Queue entries and extra copies for every outgoing action of ``plan``."""
    out = _Sender(store, sending, received)
    for account_id, decision in plan.decisions:
        account = await store.get_account_by_id(account_id)
        user = account.address if account is not None else ""
        kept = bool(decision.targets)
        for action in decision.pending:
            if isinstance(action, Redirect):
                if await out.redirect(account_id, user, action):
                    out.sends.sent.append(action)
                elif not kept and not action.copy:
                    # an ignored redirect must not cancel the implicit keep (RFC 5228 §4.2)
                    out.sends.targets.append(DeliveryTarget(account_id))
                    kept = True
            elif isinstance(action, Vacation):
                reply = compose.vacation_reply(action, now=received.now)
                if reply is not None and await out.generated(
                    account_id, reply, what="vacation", never_notify=True
                ):
                    out.sends.sent.append(action)
            elif isinstance(action, Report):
                if await out.report(account_id, user, action):
                    out.sends.sent.append(action)
            elif isinstance(action, Notify):
                limits = sending.sieve.limits
                notes = compose.notifications(
                    action,
                    user=user,
                    envelope_sender=out.sender,
                    now=received.now,
                    setting=limits.notify_envelope_from,
                    envelope=sieve_envelope(
                        received.envelope, user, delimiter=limits.subaddress_delimiter
                    ),
                    user_email=user,
                )
                sent = [
                    await out.generated(account_id, n, what="notify", never_notify=False)
                    for n in notes
                ]
                if any(sent):
                    out.sends.sent.append(action)
        if decision.rejected is not None:
            await out.refusal(account_id, user, decision)
    return out.sends


def ereject_dsn(
    reason: str,
    *,
    original: bytes,
    user: str,
    envelope_sender: str,
    hostname: str,
    now: float,
) -> bytes:
    """RFC 5429 §2.1.2: a non-delivery report (RFC 3464 multipart/report,
    report-type=delivery-status, Action: failed) with the reason in its human-readable part
    and the original header (text/rfc822-headers, RFC 3462 §2)."""
    end = original.find(b"\r\n\r\n")
    header = original[: end + 2] if end >= 0 else original
    boundary = "hato-dsn-" + hashlib.sha256(original).hexdigest()[:16]
    date = email.utils.formatdate(now, localtime=False)
    digest = hashlib.sha256(f"{user}{now}{boundary}".encode()).hexdigest()[:24]
    text = reason.replace("\r\n", "\n").replace("\n", "\r\n")
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{envelope_sender}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{digest}.dsn@{hostname}>\r\n"
        "Auto-Submitted: auto-replied\r\n"  # RFC 3834 §5
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
    )
    body = (
        "This is a MIME-encapsulated message.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"Your message to <{user}> was refused by the recipient's mail filtering program.\r\n"
        "The reason given is as follows:\r\n\r\n"
        f"{text}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {hostname}\r\n"  # RFC 3464 §2.2.2
        f"Arrival-Date: {date}\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {user}\r\n"  # RFC 3464 §2.3.2
        "Action: failed\r\n"  # RFC 5429 §2.1.2: MUST be "failed"
        "Status: 5.7.1\r\n"  # RFC 3463 X.7.1: delivery not authorized, message refused
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
    )
    return (
        (head + body).encode("utf-8", "surrogateescape")
        + header
        + (f"\r\n--{boundary}--\r\n".encode())
    )
