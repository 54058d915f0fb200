"""One SMTP connection: the thin loop between the socket, the codec, policy and delivery.

Implements the server behaviour around hato.codec.smtp: envelope decisions from
hato.policy.smtp (RFC 5321 §3.6.2 relay refusal, RFC 6409 §6.1 sender ownership), recipient
resolution and local delivery from hato.delivery (RFC 5321 §4.4 trace fields), AUTH through
hato.policy.authn (RFC 4954 §4; SASL-IR), the STARTTLS upgrade (RFC 3207 §4.2), timeouts
(RFC 5321 §4.5.3.2, reset by every read; a session time limit; 421 4.4.2 on expiry) and the
one function that maps errors to replies (``reply_for_error``).

Remote recipients (and local aliases forwarding elsewhere) are queued for the outbound
runner in the same unit of work as the local copies when the service has one.

Leaves out: SPF/DKIM/DMARC and content filters (later checks plug in before delivery).

Security: "250 OK" after DATA/BDAT only once the body is fsynced and every copy is
committed; a message that is not accepted is aborted (its temporary file removed) whatever
ends the transaction; passwords only pass to the Authenticator; logs carry no bodies.
"""

from __future__ import annotations

import asyncio
import base64
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
    IncomingMessage,
    ReceivedMessage,
    TraceInfo,
    deliver_local,
    received_header,
    return_path_header,
    tls_cipher_token,
)
from hato.delivery.recipients import Resolution, merge_targets
from hato.outbound.queue import entries_for
from hato.policy.authn import SaslExchange
from hato.policy.smtp import Role, check_recipient, check_sender, owns_sender
from hato.servers.base import TlsMode
from hato.store.model import Account, BlobRef
from hato.store.queue import NewQueueEntry, QueueRecipient

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
    incoming: IncomingMessage | None = None


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
        resolution = await self.resolver.resolve(address)
        verdict = check_recipient(
            role=self.role,
            authenticated=self.account is not None,
            facts=resolution.facts(),
            outbound=self.service.outbound is not None,
        )
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
        prefix = return_path_header(txn.sender, utf8=utf8) + received_header(
            self._trace(txn, smtputf8=utf8), recipient=single, now=self.service.clock.now()
        )
        try:
            # creating the file may wait for a directory fsync of another commit: in a thread
            writer = await asyncio.to_thread(self.service.store.blobs.writer)
        except OSError as exc:
            raise TemporaryStoreError(f"cannot create message file: {exc}") from None
        txn.incoming = IncomingMessage(writer, prefix=prefix)

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
        try:
            blob = await incoming.commit()
        except OSError as exc:
            raise TemporaryStoreError(f"committing the message failed: {exc}") from None
        envelope = self.codec.envelope
        assert envelope is not None
        message = ReceivedMessage(
            envelope=envelope,
            blob=blob,
            targets=tuple(merge_targets(txn.resolutions)),
            received_at=self.service.clock.now(),
            tls_required_no=incoming.scan.tls_required_no,
        )
        remote = self._outbound_entries(txn, envelope, blob)
        if remote:
            # one unit of work: local copies and queue entries, before the 250
            await self.service.store.deliver_and_queue(
                blob, message.targets, remote, internal_date=message.received_at
            )
            assert self.service.outbound is not None
            self.service.outbound.wake()
        else:
            await deliver_local(self.service.store, message)
        log.event(
            "smtp.data.accepted",
            id=txn.id,
            size=blob.size,
            recipients=len(txn.recipients),
            copies=len(message.targets),
            requiretls=message.requiretls,
            tls_required_no=message.tls_required_no,
        )
        return Reply(250, "2.0.0", f"Message accepted, id {txn.id}")

    def _outbound_entries(
        self, txn: Transaction, envelope: Envelope, blob: BlobRef
    ) -> list[NewQueueEntry]:
        """Queue entries for the remote recipients (and remote alias targets), with the
        RFC 3461 parameters of their RCPT; ORCPT defaults to the address the client gave."""
        runner = self.service.outbound
        if runner is None:
            return []
        rcpts: list[QueueRecipient] = []
        for address, resolution, wire in zip(
            txn.recipients, txn.resolutions, envelope.recipients, strict=False
        ):
            params = wire.params
            notify = None if params.notify is None else frozenset(n.value for n in params.notify)
            orcpt = f"{params.orcpt.addr_type};{params.orcpt.address}" if params.orcpt else None
            if not resolution.local_domain:
                # RFC 5321 §2.4: the remote local part keeps its case
                rcpts.append(QueueRecipient(str(address), notify, orcpt))
                continue
            for target in resolution.remote:
                rcpts.append(QueueRecipient(target, notify, orcpt or f"rfc822;{address}"))
        if not rcpts:
            return []
        mail = envelope.params
        utf8 = mail.smtputf8
        return entries_for(
            blob_size=blob.size,
            blob_id=blob.id,
            sender=str(txn.sender) if txn.sender is not None else "",
            recipients=rcpts,
            now=self.service.clock.now(),
            expire_after=runner.settings.expire_after,
            account_id=self.account.id if self.account is not None else None,
            envid=mail.envid,
            ret=mail.ret.value if mail.ret is not None else None,
            body=mail.body.value,
            smtputf8=utf8,
            requiretls=mail.requiretls,
            tls_optional=txn.incoming.scan.tls_required_no if txn.incoming else False,
            strip_prefix=len(return_path_header(txn.sender, utf8=utf8)),
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
        tls = self.service.tls
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
