"""One SMTP connection: the thin loop between the socket, the codec, policy and delivery.

Implements the server behaviour around hato.codec.smtp: envelope decisions from
hato.policy.smtp (RFC 5321 §3.6.2 relay refusal, RFC 6409 §6.1 sender ownership), recipient
resolution and local delivery from hato.delivery (RFC 5321 §4.4 trace fields), AUTH through
hato.policy.authn (RFC 4954 §4; SASL-IR), the STARTTLS upgrade (RFC 3207 §4.2), timeouts
(RFC 5321 §4.5.3.2, reset by every read; a session time limit; 421 4.4.2 on expiry) and the
one function that maps errors to replies (``reply_for_error``).

Remote recipients (and local aliases forwarding elsewhere) are queued for the outbound
runner in the same unit of work as the local copies when the service has one; every local
copy goes through the recipient's Sieve script, whose outgoing actions are queued in that
same unit of work (``hato.delivery.local.deliver_message``); when every recipient's script
refuses the message, the end of DATA gets the refusal (RFC 5429 §2.1.1/§2.2: 550 5.7.1).

The optional ``SessionHooks`` of the service (hato.servers.smtp_hooks) add, on the MX role,
the inbound verification of ``hato.policy.inbound`` at the end of DATA/BDAT (the message is
spooled for it, ``SpooledMessage``; p=quarantine delivers to Junk), per-account submission
limits (451 4.7.1 at MAIL or RCPT) and SRS for forwarded mail and its bounces.

Leaves out: content filters (spam, virus), DNSBL, greylisting; verification of mail on the
submission role (authenticated users are trusted) or on an MX without hooks.

Security: "250 OK" after DATA/BDAT only once the body is durable (fsynced, or journalled in
the committed transaction of its copies) and every copy is committed; a message that is not
accepted is aborted (its temporary file removed) whatever ends the transaction; passwords
only pass to the Authenticator; logs carry no bodies.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hato.codec.smtp import (
    BYE,
    EXPN_REPLY,
    GO_AHEAD_TLS,
    HELP_REPLY,
    OK,
    START_DATA,
    VRFY_REPLY,
    Auth,
    AuthResponse,
    Bdat,
    ChunkEnd,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Event,
    Expn,
    Help,
    Mail,
    Noop,
    Offer,
    Quit,
    Rcpt,
    Rejected,
    Rset,
    ServerConnection,
    StartTls,
    Vrfy,
)
from hato.codec.smtp_data import DataProblem
from hato.codec.smtp_events import Envelope
from hato.core import log
from hato.core.address import Address
from hato.core.errors import (
    AddressError,
    AuthError,
    HatoError,
    ProtocolError,
    QuotaExceeded,
    TemporaryStoreError,
)
from hato.core.reply import Reply
from hato.delivery.local import (
    Delivered,
    IncomingMessage,
    ReceivedMessage,
    SpooledMessage,
    TraceInfo,
    deliver_local,
    deliver_message,
    received_header,
    return_path_header,
    tls_cipher_token,
)
from hato.delivery.recipients import Resolution, merge_targets
from hato.delivery.sieve_send import Sending
from hato.policy.authn import SaslExchange
from hato.policy.inbound import JUNK, InboundAction
from hato.policy.smtp import (
    Role,
    Verdict,
    check_recipient,
    check_sender,
    owns_sender,
)
from hato.servers.base import TlsMode
from hato.servers.smtp_hooks import (
    SessionHooks,
    SpoolFacts,
    queue_entries,
    srs_recipient,
    submission_limit,
    verify_spooled,
)
from hato.store.model import Account, BlobRef
from hato.store.queue import NewQueueEntry

if TYPE_CHECKING:
    from hato.servers.smtp import Connection, SmtpListener, SmtpService

TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")  # RFC 3463 X.4.2
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down")  # RFC 3463 X.3.2
MAIL_LOOP = Reply(554, "5.4.6", "Mail loop detected: too many Received fields")  # RFC 5321 §6.3
DATA_PROBLEMS = {
    DataProblem.BARE_LINE_END: Reply(500, "5.5.2", "Bare CR or LF in message"),  # §2.3.8
    DataProblem.LINE_TOO_LONG: Reply(500, "5.5.2", "Line too long"),  # RFC 5321 §4.5.3.1.6
    DataProblem.TOO_BIG: Reply(552, "5.3.4", "Message too big"),  # RFC 1870 §6.3
}


def reply_for_error(exc: HatoError, *, quota_permanent: bool) -> Reply:
    """The one place where errors become SMTP replies; details stay in the log."""
    if isinstance(exc, QuotaExceeded):
        if quota_permanent:
            return Reply(552, "5.2.2", "Mailbox full")  # RFC 3463 X.2.2
        return Reply(452, "4.2.2", "Mailbox full")
    if isinstance(exc, AuthError):
        if exc.temporary:
            return Reply(454, "4.7.0", "Temporary authentication failure")  # RFC 4954 §6
        return Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6
    if isinstance(exc, AddressError):
        return Reply(501, "5.1.3", "Bad address syntax")
    if isinstance(exc, ProtocolError):
        return Reply(500, "5.5.2", "Syntax error")
    return Reply(451, "4.3.0", "Temporary failure, try again later")  # StoreError and others


def make_codec(service: SmtpService, spec: SmtpListener) -> ServerConnection:
    codec = ServerConnection(limits=service.settings.limits)
    codec.session.tls = spec.listener.tls is TlsMode.IMPLICIT
    return codec


@dataclass(slots=True)
class Transaction:
    """Server-side state of one mail transaction (the codec holds the wire envelope)."""

    id: str
    sender: Address | None
    recipients: list[Address] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    incoming: IncomingMessage | SpooledMessage | None = None
    return_path: bytes = b""  # our trace fields, for a spooled message's final body
    received: bytes = b""


class SmtpSession:
    def __init__(self, service: SmtpService, spec: SmtpListener, conn: Connection) -> None:
        self.service = service
        self.settings = service.settings
        self.spec = spec
        self.role = spec.role
        self.conn = conn
        self.codec = conn.codec
        self.remote_ip = conn.remote_ip
        self.resolver = service.resolver
        self.account: Account | None = None  # set by AUTH
        self.txn: Transaction | None = None
        self.transactions = 0
        self.conn_id = ""
        self._sasl: SaslExchange | None = None
        self._chunk_size = 0
        hooks = getattr(service, "hooks", None)
        self.hooks: SessionHooks = hooks if isinstance(hooks, SessionHooks) else SessionHooks()

    @property
    def tls_active(self) -> bool:
        return self.codec.session.tls

    def _offer(self) -> Offer:
        tls = self.tls_active
        auth: tuple[str, ...] = ()
        if self.role is Role.SUBMISSION:  # the MX offers no AUTH: it relays for nobody
            auth = tuple(
                self.service.authenticator.mechanisms(secure=tls, remote_ip=self.remote_ip)
            )
        starttls = self.spec.listener.tls is TlsMode.STARTTLS and self.service.tls is not None
        return Offer(starttls=starttls and not tls, auth=auth, requiretls=tls)

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        self.conn_id = log.new_connection_id()
        log.event(
            "smtp.connect",
            remote_ip=self.remote_ip,
            role=self.role.value,
            port=self.spec.listener.port,
            tls=self.tls_active,
        )
        reason = "closed"
        try:
            self.codec.offer = self._offer()
            greeting = Reply(220, None, f"{self.settings.hostname} ESMTP Hato")
            self.conn.write(self.codec.send_greeting(greeting))
            reason = await self._loop()
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
            reason = f"connection error: {type(exc).__name__}"
        except Exception as exc:  # a bug must end this session only, and be logged
            log.event("smtp.internal_error", level=logging.ERROR, error=repr(exc)[:300])
            reason = "internal error"
        finally:
            self._end_transaction()
            try:
                if not self.conn.stalled:
                    await self.conn.flush()
            except (ConnectionError, OSError):
                pass
            self.conn.close()
            log.event("smtp.disconnect", reason=reason, transactions=self.transactions)

    async def _loop(self) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.session_timeout
        codec = self.codec
        while not codec.closed:
            event = codec.next_event()
            if event is not None:
                await self._dispatch(event)
                continue
            if self.conn.closed:
                return "client closed"
            if self.service.stopping and codec.envelope is None:
                self.conn.write(codec.send_greeting(SHUTTING_DOWN))
                return "shutdown"
            await self.conn.flush()
            remaining = min(self.settings.idle_timeout, deadline - loop.time())
            if remaining <= 0 or not await self.conn.wait_data(remaining):
                # RFC 5321 §4.5.3.2: the server may close an idle connection (421)
                self.conn.write(codec.send_greeting(TIMEOUT))
                return "timeout"
        return "quit"

    async def _dispatch(self, event: Event) -> None:
        try:
            reply = await self._handle(event)
        except HatoError as exc:
            log.event("smtp.error", kind=type(exc).__name__, detail=exc.detail)
            reply = reply_for_error(exc, quota_permanent=self.settings.quota_permanent)
            self._abort_message()
        if reply is None:
            return
        self.conn.write(self.codec.send(reply))
        if self.codec.envelope is None:
            self._end_transaction()
        if isinstance(event, StartTls) and reply.code == 220:
            await self._upgrade()

    async def _handle(self, event: Event) -> Reply | None:
        if isinstance(event, DataChunk):
            if self.txn is not None and self.txn.incoming is not None:
                self.txn.incoming.write(event.data)
            return None
        if isinstance(event, Bdat):
            self._chunk_size = event.size
            if self.txn is not None and self.txn.incoming is None:
                await self._start_message()
            return None
        if isinstance(event, DataEnd):
            return await self._finish(event.problem)
        if isinstance(event, ChunkEnd):
            if event.problem is not None or event.last:
                return await self._finish(event.problem)
            return Reply(250, "2.0.0", f"{self._chunk_size} octets received")  # RFC 3030 §4
        if isinstance(event, Ehlo):
            if event.extended:
                return self.codec.ehlo_reply(self.settings.hostname, event.domain)
            return Reply(250, None, f"{self.settings.hostname} greets {event.domain}")
        if isinstance(event, Mail):
            return await self._mail(event)
        if isinstance(event, Rcpt):
            return await self._rcpt(event)
        if isinstance(event, Data):
            await self._start_message()
            return START_DATA
        if isinstance(event, Auth):
            return await self._auth(event)
        if isinstance(event, AuthResponse):
            if event.data is None:
                self._sasl = None
                return Reply(501, "5.7.0", "Authentication cancelled")  # RFC 4954 §4
            return await self._sasl_step(event.data)
        if isinstance(event, Rejected):
            log.event("smtp.command.rejected", reason=event.reason, code=event.reply.code)
            self._sasl = None
            return event.reply
        return self._simple(event)

    def _simple(self, event: Event) -> Reply:
        if isinstance(event, Rset):
            self._end_transaction()
            return OK
        if isinstance(event, Noop):
            return OK
        if isinstance(event, Quit):
            return BYE
        if isinstance(event, Vrfy):
            return VRFY_REPLY
        if isinstance(event, Expn):
            return EXPN_REPLY
        if isinstance(event, Help):
            return HELP_REPLY
        if isinstance(event, StartTls):
            return GO_AHEAD_TLS
        raise ProtocolError(f"unexpected SMTP event {type(event).__name__}")

    # -- envelope ------------------------------------------------------------------------
    async def _mail(self, event: Mail) -> Reply:
        sender = event.path.address
        owned = False
        if self.role is Role.SUBMISSION and self.account is not None and sender is not None:
            owned = await owns_sender(self.service.store, self.account, sender)
        verdict = check_sender(role=self.role, sender=sender, account=self.account, owned=owned)
        if verdict.accepted:
            verdict = self._limit(recipients=0) or verdict
        name = "smtp.mail.accepted" if verdict.accepted else "smtp.mail.rejected"
        log.event(
            name,
            sender=str(sender) if sender else "<>",
            code=verdict.reply.code,
            reasons=",".join(r.value for r in verdict.reasons),
            size=event.params.size,
            body=event.params.body.value,
        )
        if verdict.accepted:
            self.transactions += 1
            self.txn = Transaction(f"{self.conn_id}.{self.transactions}", sender)
        return verdict.reply

    async def _rcpt(self, event: Rcpt) -> Reply:
        assert self.txn is not None
        if event.path.postmaster:
            address = Address.parse(self.settings.postmaster_address)
        else:
            assert event.path.address is not None
            address = event.path.address
        srs = await srs_recipient(
            self.hooks,
            self.resolver,
            address,
            now=self.service.clock.now(),
            outbound=self.service.outbound is not None,
        )
        if srs is not None:
            resolution, verdict = srs
        else:
            resolution = await self.resolver.resolve(address)
            verdict = check_recipient(
                role=self.role,
                authenticated=self.account is not None,
                facts=resolution.facts(),
                outbound=self.service.outbound is not None,
            )
        if verdict.accepted:
            verdict = self._limit(recipients=len(self.txn.recipients) + 1) or verdict
        name = "smtp.rcpt.accepted" if verdict.accepted else "smtp.rcpt.rejected"
        log.event(
            name,
            rcpt=str(address),
            code=verdict.reply.code,
            reasons=",".join(r.value for r in verdict.reasons),
        )
        if verdict.accepted:
            self.txn.recipients.append(address)
            self.txn.resolutions.append(resolution)
        return verdict.reply

    def _limit(self, *, recipients: int) -> Verdict | None:
        return submission_limit(
            self.hooks,
            role=self.role,
            account=self.account,
            now=self.service.clock.now(),
            recipients=recipients,
        )

    # -- message -------------------------------------------------------------------------
    def _trace(self, txn: Transaction, *, smtputf8: bool) -> TraceInfo:
        version = cipher = None
        sslobj = self.conn.ssl_object
        if sslobj is not None:
            version = sslobj.version()
            current = sslobj.cipher()
            if current is not None:
                cipher = tls_cipher_token(current[0], self.service.cipher_ids)
        return TraceInfo(
            hostname=self.settings.hostname,
            helo=self.codec.session.helo or "unknown",
            remote_ip=self.remote_ip,
            extended=self.codec.session.extended,
            tls_version=version,
            tls_cipher=cipher,
            authenticated=self.account is not None,
            smtputf8=smtputf8,
            transaction_id=txn.id,
        )

    async def _start_message(self) -> None:
        txn, envelope = self.txn, self.codec.envelope
        assert txn is not None and envelope is not None
        utf8 = envelope.params.smtputf8
        single = txn.recipients[0] if len(txn.recipients) == 1 else None
        txn.return_path = return_path_header(txn.sender, utf8=utf8)
        txn.received = received_header(
            self._trace(txn, smtputf8=utf8), recipient=single, now=self.service.clock.now()
        )
        if self._verifies:
            try:
                txn.incoming = SpooledMessage(self.hooks.spool_dir)
            except OSError as exc:
                raise TemporaryStoreError(f"cannot create spool file: {exc}") from None
            return
        prefix = txn.return_path + txn.received
        try:
            # inline: a writer keeps a small body in memory (no I/O); one over the journal
            # limit creates its temp file when it outgrows memory, on this thread as the
            # body's writes already are (a thread hop per message costs more than it saves)
            writer = self.service.store.blobs.writer()
        except OSError as exc:
            raise TemporaryStoreError(f"cannot create message file: {exc}") from None
        txn.incoming = IncomingMessage(writer, prefix=prefix)

    @property
    def _verifies(self) -> bool:
        """Inbound verification applies: the MX role of a service with a verifier."""
        return self.role is Role.MX and self.hooks.verifier is not None

    async def _finish(self, problem: DataProblem | None) -> Reply:
        txn = self.txn
        assert txn is not None and txn.incoming is not None
        incoming = txn.incoming
        if problem is not None:
            incoming.abort()
            log.event("smtp.data.rejected", reason=problem.value, id=txn.id)
            return DATA_PROBLEMS[problem]
        if incoming.failed is not None:
            incoming.abort()
            raise TemporaryStoreError(f"writing the message failed: {incoming.failed}")
        if incoming.scan.received > self.settings.max_received:
            incoming.abort()
            log.event("smtp.data.rejected", reason="mail loop", id=txn.id)
            return MAIL_LOOP
        action = InboundAction.ACCEPT
        if isinstance(incoming, SpooledMessage):
            facts = SpoolFacts(
                txn_id=txn.id,
                client_ip=self.remote_ip,
                helo=self.codec.session.helo or "",
                sender=txn.sender,
                recipients=txn.recipients,
                return_path=txn.return_path,
                received=txn.received,
            )
            verified = await verify_spooled(self.hooks, self.service.store, incoming, facts)
            if isinstance(verified, Reply):
                return verified
            blob, action = verified
        else:
            try:
                blob = await incoming.commit()
            except OSError as exc:
                raise TemporaryStoreError(f"committing the message failed: {exc}") from None
        envelope = self.codec.envelope
        assert envelope is not None
        targets = merge_targets(txn.resolutions)
        if action is InboundAction.QUARANTINE:
            # RFC 7489 §6.6.4 / §6.3 p=quarantine: "suspicious": the Junk mailbox
            targets = [dataclasses.replace(t, mailbox=JUNK) for t in targets]
        message = ReceivedMessage(
            envelope=envelope,
            blob=blob,
            targets=tuple(targets),
            received_at=self.service.clock.now(),
            tls_required_no=incoming.scan.tls_required_no,
            strip_prefix=len(txn.return_path),
        )
        remote = await self._outbound_entries(txn, envelope, blob)
        sending = self._sending()
        if sending is None and not remote:
            # no outbound queue: Sieve's outgoing actions are only logged (never lost)
            appended = await deliver_local(self.service.store, message)
            delivered = Delivered(tuple(appended))
        else:
            # one unit of work: local copies (through Sieve), queue entries and what the
            # scripts send, before the 250
            delivered = await deliver_message(
                self.service.store, message, outbound=remote, sending=sending
            )
        if delivered.refusal is not None:
            log.event("smtp.data.rejected", reason="sieve", id=txn.id)
            return delivered.refusal
        if delivered.queued and self.service.outbound is not None:
            self.service.outbound.wake()
        if self.hooks.limiter is not None and self.account is not None:
            self.hooks.limiter.record(
                self.account.id, now=message.received_at, recipients=len(txn.recipients)
            )
        if self.hooks.after_delivery is not None:
            try:
                await self.hooks.after_delivery(message)
            except Exception as exc:  # committed: nothing may stand between it and the 250
                log.event("smtp.after_delivery.failed", level=logging.ERROR, error=repr(exc))
        log.event(
            "smtp.data.accepted",
            id=txn.id,
            size=blob.size,
            recipients=len(txn.recipients),
            copies=len(delivered.appended),
            queued=len(delivered.queued),
            inbound=action.value if self._verifies else "unverified",
            requiretls=message.requiretls,
            tls_required_no=message.tls_required_no,
        )
        return Reply(250, "2.0.0", f"Message accepted, id {txn.id}")

    def _sending(self) -> Sending | None:
        """How Sieve's outgoing actions are sent; None without an outbound queue."""
        runner = self.service.outbound
        if runner is None:
            return None
        return Sending(
            resolver=self.resolver,
            hostname=self.settings.hostname,
            expire_after=runner.settings.expire_after,
            srs=self.hooks.srs,
            signer=self.hooks.signer,
            sieve=self.hooks.sieve,
        )

    async def _outbound_entries(
        self, txn: Transaction, envelope: Envelope, blob: BlobRef
    ) -> list[NewQueueEntry]:
        runner = self.service.outbound
        if runner is None:
            return []
        return await queue_entries(
            self.hooks,
            self.resolver,
            sender=txn.sender,
            recipients=list(zip(txn.recipients, txn.resolutions, strict=True)),
            envelope=envelope,
            blob=blob,
            now=self.service.clock.now(),
            expire_after=runner.settings.expire_after,
            account_id=self.account.id if self.account is not None else None,
            tls_optional=txn.incoming.scan.tls_required_no if txn.incoming else False,
            strip_prefix=len(txn.return_path),
        )

    def _abort_message(self) -> None:
        if self.txn is not None and self.txn.incoming is not None:
            self.txn.incoming.abort()

    def _end_transaction(self) -> None:
        self._abort_message()
        self.txn = None

    # -- AUTH and TLS ----------------------------------------------------------------------
    async def _auth(self, event: Auth) -> Reply:
        try:
            self._sasl = self.service.authenticator.start(
                event.mechanism, remote_ip=self.remote_ip, secure=self.tls_active
            )
        except AuthError:
            # RFC 4954 §6: 538 when the mechanism needs an encrypted connection
            return Reply(538, "5.7.11", "Encryption required for requested mechanism")
        return await self._sasl_step(event.initial)

    async def _sasl_step(self, data: bytes | None) -> Reply:
        exchange = self._sasl
        if exchange is None:
            raise ProtocolError("SASL response without an exchange")
        try:
            step = await exchange.step(data)
        except AuthError:
            self._sasl = None
            raise
        if not step.done:
            # RFC 4954 §4: "334" SP base64 challenge
            return Reply(334, None, base64.b64encode(step.challenge or b"").decode("ascii"))
        self._sasl = None
        self.account = step.account
        log.event("smtp.auth.succeeded", user=step.account.address if step.account else "")
        return Reply(235, "2.7.0", "Authentication successful")

    async def _upgrade(self) -> None:
        self.conn.stop_plaintext()  # before the 220 is flushed: no plaintext after it
        await self.conn.flush()
        tls = self.service.starttls
        assert tls is not None
        try:
            await self.conn.start_tls(tls, timeout=self.settings.tls_handshake_timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            log.event("smtp.tls.failed", error=type(exc).__name__)
            raise ConnectionAbortedError("TLS handshake failed") from None
        self.account = None
        self.codec.offer = self._offer()
        sslobj = self.conn.ssl_object
        log.event("smtp.tls.started", version=sslobj.version() if sslobj else "")
