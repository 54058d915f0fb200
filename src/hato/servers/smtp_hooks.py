"""What the SMTP session adds around a mail transaction beyond the envelope rules.

``SessionHooks`` (all optional, set by the app layer on ``InboundSmtpService``) and the steps
the session (hato.servers.smtp_session) calls:

* ``verify_spooled``: the end-of-DATA/BDAT verification of ``hato.policy.inbound`` on the MX
  role (SPF RFC 7208, DKIM RFC 6376, ARC RFC 8617, iprev, DMARC RFC 7489): p=reject → the
  verdict's 550 5.7.1 (§10.3), temperror → 451 4.4.3 (§6.6.3), p=quarantine → the Junk
  mailbox; the final body gets our Authentication-Results field above the trace fields we
  add (RFC 8601 §4.1/§7.1; Return-Path stays first, RFC 5321 §4.4) and loses incoming ones
  claiming our authserv-id (RFC 8601 §5). SPF is checked here too, not at MAIL FROM: RFC 7208
  §2.4 allows either, DMARC needs it with DKIM, and one verdict keeps the decision in one
  place; the cost is that a message failing SPF is received in full (an SPF fail alone never
  rejects: DMARC decides). Messages are verified at most ``verify_slots`` at a time (each is
  read into memory once, as the DKIM verifier needs it whole);
* ``submission_limit``: per-account limits (``hato.policy.ratelimit``, 451 4.7.1);
* ``srs_recipient``: RCPT TO one of our SRS addresses (``hato.outbound.srs``) is checked
  (hash, age) and routed back to the original sender;
* ``queue_entries``: the remote recipients' queue entries with their RFC 3461 parameters;
  mail forwarded for a remote sender (aliases, SRS bounces) leaves with an SRS reverse-path
  of the forwarding domain, so SPF passes at the destination (RFC 7208 §2.4).

Leaves out: content filters (spam, virus), DNSBL, greylisting; verification on the
submission role (authenticated users are trusted).

Security: the spool file is anonymous and closed whatever happens; verification never
raises for DNS or message problems (a temperror answers 451); details of a verdict go to the
log, the peer gets the verdict's generic reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hato.codec.smtp_events import Envelope
from hato.core import log
from hato.core.address import Address
from hato.core.errors import TemporaryStoreError
from hato.core.reply import Reply
from hato.delivery.local import ReceivedMessage, SpooledMessage, split_header, write_blob
from hato.delivery.recipients import RecipientResolver, Resolution
from hato.delivery.sieve import DEFAULT_SETTINGS, SieveSettings
from hato.outbound.queue import entries_for
from hato.outbound.srs import Srs, is_srs
from hato.policy.inbound import InboundAction, InboundFacts, InboundVerifier, prepare_header
from hato.policy.ratelimit import SubmissionLimiter
from hato.policy.smtp import Role, Verdict, check_recipient, check_srs_recipient
from hato.store.api import MailStore
from hato.store.model import Account, BlobRef
from hato.store.queue import NewQueueEntry, QueueRecipient


@dataclass
class SessionHooks:
    """What a service adds around each transaction; every part is optional."""

    verifier: InboundVerifier | None = None  # the MX role: checks at the end of DATA
    spool_dir: Path | None = None  # where messages wait for their verdict (None: $TMPDIR)
    limiter: SubmissionLimiter | None = None  # per-account submission limits
    srs: Srs | None = None  # sender rewriting for forwarded mail, SRS bounces at RCPT
    verify_slots: int = 4  # messages verified at once (each is read into memory once)
    # called once a message is committed (e.g. report intake); errors are the callee's
    after_delivery: Callable[[ReceivedMessage], Awaitable[object]] | None = None
    # DKIM signer for what Sieve sends from <> (the queue signs only non-null senders)
    signer: Callable[[bytes, str], bytes] | None = None
    sieve: SieveSettings = DEFAULT_SETTINGS  # the [sieve] settings local delivery runs with
    slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(max(1, self.verify_slots))


def submission_limit(
    hooks: SessionHooks, *, role: Role, account: Account | None, now: float, recipients: int
) -> Verdict | None:
    """Per-account submission limits (hato.policy.ratelimit); None when within them (or
    when they do not apply: the MX role, no authenticated account)."""
    limiter = hooks.limiter
    if limiter is None or account is None or role is not Role.SUBMISSION:
        return None
    verdict = limiter.check(account.id, now=now, recipients=recipients, user=account.address)
    return None if verdict.accepted else verdict


async def srs_recipient(
    hooks: SessionHooks,
    resolver: RecipientResolver,
    address: Address,
    *,
    now: float,
    outbound: bool,
) -> tuple[Resolution, Verdict] | None:
    """RCPT TO one of our SRS addresses: where it goes and the verdict; None for any other
    address (which the usual resolution handles)."""
    srs = hooks.srs
    if srs is None or not is_srs(address.unquoted_local):
        return None
    if not await resolver.is_local_domain(address):
        return None
    back = srs.reverse(address, now=now)
    if back.address is None:
        log.event("smtp.srs.invalid", rcpt=str(address), reason=back.reason)
        verdict = check_srs_recipient(valid=False, outbound=outbound)
        return Resolution(address.key, local_domain=True), verdict
    original = Address.parse(back.address)
    if await resolver.is_local_domain(original):
        resolution = await resolver.resolve(original)
        verdict = check_recipient(
            role=Role.MX, authenticated=False, facts=resolution.facts(), outbound=outbound
        )
        return resolution, verdict
    log.event("smtp.srs.reversed", rcpt=str(address), to=back.address)
    resolution = Resolution(address.key, local_domain=True, remote=(back.address,))
    return resolution, check_srs_recipient(valid=True, outbound=outbound)


@dataclass(frozen=True, slots=True)
class SpoolFacts:
    """The transaction facts ``verify_spooled`` needs besides the message."""

    txn_id: str
    client_ip: str
    helo: str
    sender: Address | None
    recipients: Sequence[Address]
    return_path: bytes  # our trace fields, in front of the final body
    received: bytes


async def verify_spooled(
    hooks: SessionHooks, store: MailStore, spool: SpooledMessage, facts: SpoolFacts
) -> tuple[BlobRef, InboundAction] | Reply:
    """Verify a spooled message; its final body (committed) and the action on acceptance or
    quarantine, else the reply for the end of DATA."""
    verifier = hooks.verifier
    assert verifier is not None
    async with hooks.slots:  # bounds the memory of messages read for verification
        try:
            data = await asyncio.to_thread(spool.read)
        except OSError as exc:
            raise TemporaryStoreError(f"reading the spooled message failed: {exc}") from None
        finally:
            spool.abort()
        first = facts.recipients[0] if facts.recipients else None
        verdict = await verifier.evaluate(
            InboundFacts(
                client_ip=facts.client_ip,
                helo=facts.helo,
                mail_from=str(facts.sender) if facts.sender is not None else "",
                message=data,
                recipient_domain=first.domain if first is not None else None,
            )
        )
        if verdict.action in (InboundAction.REJECT, InboundAction.TEMPFAIL):
            assert verdict.reply is not None
            log.event(
                "smtp.data.rejected",
                reason=verdict.action.value,
                id=facts.txn_id,
                reasons=",".join(r.value for r in verdict.reasons),
                code=verdict.reply.code,
            )
            return verdict.reply
        end = split_header(data)
        # RFC 8601 §5: drop fields claiming our authserv-id; §4.1 / §7.1: ours goes above
        # the other trace fields we add (Return-Path stays first, RFC 5321 §4.4)
        header = prepare_header(facts.received + data[:end], verdict, verifier.settings.authserv_id)
        try:
            blob = await write_blob(store, [facts.return_path, header, memoryview(data)[end:]])
        except OSError as exc:
            raise TemporaryStoreError(f"storing the message failed: {exc}") from None
    return blob, verdict.action


async def queue_entries(
    hooks: SessionHooks,
    resolver: RecipientResolver,
    *,
    sender: Address | None,
    recipients: Sequence[tuple[Address, Resolution]],
    envelope: Envelope,
    blob: BlobRef,
    now: float,
    expire_after: float,
    account_id: int | None,
    tls_optional: bool,
    strip_prefix: int,
) -> list[NewQueueEntry]:
    """Queue entries for the remote recipients (and remote alias targets, SRS bounces),
    with the RFC 3461 parameters of their RCPT; ORCPT defaults to the address the client
    gave. ``recipients`` pairs each accepted RCPT address with its resolution, in the order
    of ``envelope.recipients``."""
    reverse_path = str(sender) if sender is not None else ""
    remote_sender = sender is not None and not await resolver.is_local_domain(sender)
    groups: dict[str, list[QueueRecipient]] = {}
    for (address, resolution), wire in zip(recipients, envelope.recipients, strict=False):
        params = wire.params
        notify = None if params.notify is None else frozenset(n.value for n in params.notify)
        orcpt = f"{params.orcpt.addr_type};{params.orcpt.address}" if params.orcpt else None
        if not resolution.local_domain:
            # RFC 5321 §2.4: the remote local part keeps its case
            groups.setdefault(reverse_path, []).append(QueueRecipient(str(address), notify, orcpt))
            continue
        if not resolution.remote:
            continue
        forwarded = reverse_path
        if remote_sender and hooks.srs is not None:
            # we forward for ``address``'s domain: SPF at the destination checks that domain
            forwarded = hooks.srs.forward(reverse_path, domain=address.domain, now=now)
        for target in resolution.remote:
            rcpt = QueueRecipient(target, notify, orcpt or f"rfc822;{address}")
            groups.setdefault(forwarded, []).append(rcpt)
    mail = envelope.params
    entries: list[NewQueueEntry] = []
    for path, rcpts in groups.items():
        entries += entries_for(
            blob_size=blob.size,
            blob_id=blob.id,
            sender=path,
            recipients=rcpts,
            now=now,
            expire_after=expire_after,
            account_id=account_id,
            envid=mail.envid,
            ret=mail.ret.value if mail.ret is not None else None,
            body=mail.body.value,
            smtputf8=mail.smtputf8 or not path.isascii(),
            requiretls=mail.requiretls,
            tls_optional=tls_optional,
            strip_prefix=strip_prefix,
        )
    return entries
