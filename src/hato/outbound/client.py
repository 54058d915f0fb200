"""An asyncio SMTP client session on the sans-IO client codec (``hato.codec.smtp_client``).

Implements the client side of RFC 5321 §3 and §4 (greeting, EHLO with a HELO fallback per
§4.1.4 when EHLO is refused, several mail transactions on one connection -- RSET only after
a transaction left open, §4.1.1.5, in the same PIPELINING group as the next MAIL --, QUIT,
and a close without QUIT that drops a transaction sent ahead, §3.8), the client
timeouts of §4.5.3.2 (greeting 5 min, MAIL/RCPT 5 min, DATA initiation 2 min, data blocks
3 min, final dot 10 min), STARTTLS with a second EHLO (RFC 3207 §4.2),
PIPELINING (RFC 2920 §3.1: MAIL, RCPT and DATA sent as one group, replies read in order;
the next transaction's group may follow a message's content in the same write),
CHUNKING (RFC 3030 §2: BDAT instead of DATA when offered), AUTH PLAIN/LOGIN over TLS for a
smarthost (RFC 4954 §4), and the TLS requirements decided by ``hato.outbound.tlspolicy``
(verified certificate for MTA-STS/REQUIRETLS, TLSA match for DANE, none in opportunistic mode).

Leaves out: SMTP over SOCKS/proxies, LMTP, AUTH mechanisms other than PLAIN and LOGIN.

Security: with a required TLS policy the client never sends MAIL in the clear and closes the
connection after a failed verification; credentials are only sent after TLS is up; replies
are bounded by the codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hato.codec import smtp_client as sc
from hato.core.errors import HatoError, ProtocolError, UsageError
from hato.outbound import dane
from hato.outbound.channel import Channel
from hato.outbound.tlspolicy import HostPolicy, Requirement

GREETING_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.1
COMMAND_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.2/.3: MAIL and RCPT
DATA_INIT_TIMEOUT = 120.0  # RFC 5321 §4.5.3.2.4
BLOCK_TIMEOUT = 180.0  # RFC 5321 §4.5.3.2.5
FINAL_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6
CHUNK = 1 << 20  # BDAT chunk size


class DeliveryError(HatoError):
    """A session failed as a whole (connect, greeting, TLS, protocol). ``reply`` is the text
    recorded for the recipients (e.g. "451 4.4.1 connection refused")."""

    temporary = True
    reply = "451 4.4.1 Delivery failed"


class TlsPolicyError(DeliveryError):
    """The TLS requirement for this host could not be met."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    greeting: float = GREETING_TIMEOUT
    command: float = COMMAND_TIMEOUT
    data_init: float = DATA_INIT_TIMEOUT
    block: float = BLOCK_TIMEOUT
    final: float = FINAL_TIMEOUT


@dataclass(frozen=True, slots=True)
class Rcpt:
    """One forward-path to send (``index`` is the queue recipient index)."""

    index: int
    address: str
    notify: frozenset[str] | None = None
    orcpt: str | None = None


@dataclass(slots=True)
class TransactionResult:
    """Replies of one mail transaction: per recipient index, and for the data."""

    mail: sc.ServerReply | None = None
    rcpts: dict[int, sc.ServerReply] = field(default_factory=dict)
    data: sc.ServerReply | None = None

    def final_for(self, index: int) -> sc.ServerReply | None:
        """The reply deciding recipient ``index``: its RCPT refusal, else the data reply,
        else the MAIL refusal (None when nothing decided it)."""
        if self.mail is not None and not self.mail.positive:
            return self.mail
        rcpt = self.rcpts.get(index)
        if rcpt is None or not rcpt.positive:
            return rcpt
        return self.data


@dataclass(frozen=True, slots=True)
class TlsOutcome:
    """What happened with TLS on this session (TLS-RPT, RFC 8460 result types)."""

    used: bool
    version: str | None = None
    failure: str | None = None  # e.g. "certificate-host-mismatch", "starttls-not-supported"


@dataclass(slots=True, eq=False)
class Transaction:
    """One mail transaction rendered for this connection's capabilities (``prepare``)."""

    rcpts: Sequence[Rcpt]
    message: bytes
    mail: bytes  # the MAIL command line
    lines: list[bytes]  # the RCPT command lines
    envelope: bytes  # MAIL + RCPT lines: one piece of a command group (RFC 2920 §3.1)


class SmtpClient:
    """One connection to one host. Use ``connect`` then ``send`` (repeatedly) then ``quit``.

    Several transactions on one connection: after a completed transaction (the reply to the
    end of its data) the server's buffers are clear (RFC 5321 §4.1.1.4), so the next MAIL
    follows directly; RSET (§4.1.1.5) is sent only after a transaction that stopped before
    its data (refused recipients, refused DATA). With PIPELINING, ``transact`` can send the
    next transaction's envelope (and DATA) in the same group as this message's content
    (RFC 2920 §3.1: "the actual transfer of message content is explicitly allowed to be the
    first 'command' in a group"): one round trip per message.
    """

    def __init__(
        self,
        host: str,
        address: str,
        port: int,
        *,
        helo_name: str,
        policy: HostPolicy,
        verify_context: ssl.SSLContext,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        timeouts: Timeouts | None = None,
        try_tls: bool = True,
    ) -> None:
        self.host = host
        self.address = address
        self.port = port
        self.helo_name = helo_name
        self.policy = policy
        self._verify_context = verify_context
        self._implicit = implicit_tls
        self._auth = auth
        self.timeouts = timeouts or Timeouts()
        self._try_tls = try_tls
        self._channel: Channel | None = None
        self._dirty = False  # a transaction was left open: RSET before the next MAIL
        self._primed: Transaction | None = None  # its envelope is on the wire already
        self._primed_reset = False  # ... preceded by RSET
        self.caps = sc.Capabilities()
        self.tls = TlsOutcome(used=False)
        self.greeting: sc.ServerReply | None = None
        self.transactions = 0

    # -- plumbing ------------------------------------------------------------------------
    async def _read_reply(self, timeout: float) -> sc.ServerReply:
        channel = self._channel
        assert channel is not None
        if channel.replies:
            return channel.replies.popleft()
        return await channel.reply(timeout)

    async def _write(self, data: bytes, timeout: float | None = None) -> None:
        channel = self._channel
        assert channel is not None
        channel.write(data)
        if channel.paused:
            await channel.drain(timeout or self.timeouts.block)

    async def _command(self, data: bytes, timeout: float) -> sc.ServerReply:
        await self._write(data)
        return await self._read_reply(timeout)

    @property
    def primed(self) -> Transaction | None:
        """The transaction whose envelope was sent ahead; it must be the next ``transact``."""
        return self._primed

    @property
    def _sni(self) -> str:
        """RFC 7672 §8.1: with DANE the SNI name is the TLSA base domain."""
        return self.policy.base_domain or self.host

    def _tls_context(self) -> ssl.SSLContext:
        if self.policy.requirement is Requirement.PKIX:
            return self._verify_context
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # DANE checks the TLSA match itself after the handshake
        return ctx

    # -- session -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect, read the greeting, EHLO, STARTTLS as the policy says, AUTH if asked."""
        try:
            await self._connect()
        except (OSError, TimeoutError, ssl.SSLError, ProtocolError) as exc:
            await self.close()
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                raise self._tls_failure("certificate-not-trusted", str(exc)) from None
            raise DeliveryError(
                f"{self.host} [{self.address}]: {type(exc).__name__}: {exc}",
                reply=f"451 4.4.1 Connection to {self.host} failed",
            ) from None
        except DeliveryError:
            await self.close()
            raise

    async def _connect(self) -> None:
        context = self._tls_context() if self._implicit else None
        channel = self._channel = Channel()
        await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                lambda: channel,
                self.address,
                self.port,
                ssl=context,
                server_hostname=self._sni if context is not None else None,
            ),
            self.timeouts.connect,
        )
        if self._implicit:
            self._after_tls()
        greeting = await self._read_reply(self.timeouts.greeting)
        self.greeting = greeting
        if not greeting.positive:  # RFC 5321 §3.1: 554 greeting: no service
            raise DeliveryError(f"{self.host} greeting {greeting}", reply=_as_reply(greeting))
        await self._ehlo()
        if not self.tls.used:
            if self.caps.starttls and self._try_tls:
                reply = await self._command(sc.STARTTLS, self.timeouts.command)
                if reply.code != 220:
                    if self.policy.required:
                        raise self._tls_failure("starttls-not-supported", str(reply))
                else:
                    await self._start_tls()
                    await self._ehlo()  # RFC 3207 §4.2: discard knowledge, EHLO again
            elif self.policy.required:
                raise self._tls_failure("starttls-not-supported", "STARTTLS not offered")
        if self._auth is not None:
            await self._authenticate(*self._auth)

    async def _ehlo(self) -> None:
        reply = await self._command(sc.ehlo(self.helo_name), self.timeouts.command)
        if reply.positive:
            self.caps = sc.Capabilities.parse(reply)
            return
        # RFC 5321 §4.1.4: a server refusing EHLO may still accept HELO
        reply = await self._command(sc.helo(self.helo_name), self.timeouts.command)
        if not reply.positive:
            raise DeliveryError(f"{self.host} HELO {reply}", reply=_as_reply(reply))
        self.caps = sc.Capabilities(extended=False)

    async def _start_tls(self) -> None:
        channel = self._channel
        assert channel is not None and channel.transport is not None
        context = self._tls_context()
        try:
            transport = await asyncio.wait_for(
                asyncio.get_running_loop().start_tls(
                    channel.transport, channel, context, server_hostname=self._sni
                ),
                self.timeouts.command,
            )
        except ssl.SSLCertVerificationError as exc:
            channel.connection_lost(None)  # asyncio closed the transport: nothing to wait for
            kind = "certificate-host-mismatch" if "match" in str(exc) else "certificate-not-trusted"
            raise self._tls_failure(kind, str(exc)) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            channel.connection_lost(None)
            raise self._tls_failure("validation-failure", f"handshake: {exc}") from None
        if transport is None:
            raise self._tls_failure("validation-failure", "handshake: connection closed")
        assert isinstance(transport, asyncio.Transport)
        channel.restart(transport)
        self._after_tls()

    def _after_tls(self) -> None:
        channel = self._channel
        assert channel is not None and channel.transport is not None
        sslobj = channel.transport.get_extra_info("ssl_object")
        version = sslobj.version() if sslobj is not None else None
        if self.policy.requirement is Requirement.DANE:
            chain = dane.peer_chain(sslobj) if sslobj is not None else []
            names = self.policy.names or (self.host,)
            verdict = dane.verify(chain, self.policy.tlsa, names=names, now=time.time())
            if not verdict.ok:
                raise self._tls_failure(verdict.failure, verdict.reason)
        self.tls = TlsOutcome(used=True, version=version)

    def _tls_failure(self, kind: str, detail: str) -> TlsPolicyError:
        self.tls = TlsOutcome(used=False, failure=kind)
        # RFC 8689 §4.2.1 / RFC 3463 X.7.10: encryption needed
        return TlsPolicyError(
            f"{self.host}: TLS required ({self.policy.source}): {detail}",
            reply=f"451 4.7.10 TLS required by {self.policy.source} policy failed: {kind}",
        )

    async def _authenticate(self, username: str, password: str) -> None:
        if not self.tls.used:
            raise DeliveryError(
                f"{self.host}: refusing AUTH without TLS", reply="451 4.7.10 TLS required for AUTH"
            )
        if "PLAIN" in self.caps.auth:
            reply = await self._command(sc.auth_plain(username, password), self.timeouts.command)
        elif "LOGIN" in self.caps.auth:
            first, user, secret = sc.auth_login_steps(username, password)
            reply = await self._command(first, self.timeouts.command)
            if reply.code == 334:
                reply = await self._command(user, self.timeouts.command)
            if reply.code == 334:
                reply = await self._command(secret, self.timeouts.command)
        else:
            raise DeliveryError(
                f"{self.host}: no AUTH mechanism in common",
                reply="451 4.7.0 No common AUTH mechanism",
            )
        if reply.code != 235:  # RFC 4954 §6
            raise DeliveryError(f"{self.host}: AUTH {reply}", reply=_as_reply(reply))

    # -- transactions --------------------------------------------------------------------
    def prepare(
        self, sender: str, rcpts: Sequence[Rcpt], message: bytes, options: sc.MailOptions
    ) -> Transaction:
        """Render one transaction for this server. UsageError when the message needs an
        extension the server lacks (a permanent problem of this message)."""
        utf8 = options.smtputf8
        mail = sc.mail_from(sender, options, self.caps)
        lines = [
            sc.rcpt_to(r.address, notify=r.notify, orcpt=r.orcpt, caps=self.caps, utf8=utf8)
            for r in rcpts
        ]
        return Transaction(rcpts, message, mail, lines, mail + b"".join(lines))

    async def send(
        self, sender: str, rcpts: Sequence[Rcpt], message: bytes, options: sc.MailOptions
    ) -> TransactionResult:
        """One mail transaction (``prepare`` then ``transact``)."""
        return await self.transact(self.prepare(sender, rcpts, message, options))

    async def transact(
        self, tx: Transaction, *, following: Transaction | None = None
    ) -> TransactionResult:
        """Send ``tx``. With PIPELINING and a ``following`` transaction (prepared on this
        client), its envelope goes out with this message's content, and it must be the
        next ``transact`` of this client (``primed``). Raises DeliveryError when the session
        broke (the caller retries later)."""
        primed = self._primed is tx
        if self._primed is not None and not primed:
            raise DeliveryError(
                f"{self.host}: transaction out of step", reply="451 4.3.0 Internal error"
            )
        self._primed = None
        self.transactions += 1
        try:
            if self.caps.pipelining:
                return await self._send_pipelined(tx, following, primed=primed)
            return await self._send_stepwise(tx)
        except (OSError, TimeoutError, ssl.SSLError, ProtocolError) as exc:
            self._primed = None
            raise DeliveryError(
                f"{self.host}: {type(exc).__name__}: {exc}", reply="451 4.4.2 Connection broken"
            ) from None

    def _check_reset(self, reply: sc.ServerReply) -> None:
        if not reply.positive:
            raise DeliveryError(f"{self.host}: RSET {reply}", reply=_as_reply(reply))

    async def _send_pipelined(
        self, tx: Transaction, following: Transaction | None, *, primed: bool
    ) -> TransactionResult:
        chunking = self.caps.chunking
        command = self.timeouts.command
        if primed:
            reset = self._primed_reset
        else:
            reset = self._dirty
            # RFC 2920 §3.1: RSET, MAIL and RCPT may appear anywhere in a group, DATA is the
            # last command of a group; BDAT waits for the RCPT replies (RFC 3030 §2).
            group = (sc.RSET if reset else b"") + tx.envelope
            await self._write(group if chunking else group + sc.DATA)
        if reset:
            self._check_reset(await self._read_reply(command))
        result = TransactionResult()
        result.mail = mail = await self._read_reply(command)
        self._dirty = mail.positive  # a reverse-path is buffered until the transaction ends
        accepted = False
        for rcpt in tx.rcpts:
            reply = result.rcpts[rcpt.index] = await self._read_reply(command)
            accepted = accepted or reply.positive
        accepted = accepted and mail.positive
        if chunking:
            if accepted:
                result.data = await self._send_bdat(tx.message, following)
            return result
        data_reply = await self._read_reply(self.timeouts.data_init)
        if data_reply.code != 354:
            if accepted:
                result.data = data_reply
            return result
        if not accepted:
            # RFC 2920 §3.1: the server accepted DATA with no valid recipient: send an
            # empty body so the session stays in step, its reply is ignored
            await self._write(b".\r\n")
            await self._read_reply(self.timeouts.final)
            self._dirty = False
            return result
        result.data = await self._send_data_body(tx.message, following)
        return result

    async def _send_stepwise(self, tx: Transaction) -> TransactionResult:
        command = self.timeouts.command
        if self._dirty:  # RFC 5321 §4.1.1.5: RSET clears the transaction left open
            self._check_reset(await self._command(sc.RSET, command))
            self._dirty = False
        result = TransactionResult()
        result.mail = await self._command(tx.mail, command)
        if not result.mail.positive:
            return result
        self._dirty = True
        for rcpt, line in zip(tx.rcpts, tx.lines, strict=True):
            result.rcpts[rcpt.index] = await self._command(line, command)
        if not any(r.positive for r in result.rcpts.values()):
            return result
        if self.caps.chunking:
            result.data = await self._send_bdat(tx.message, None)
            return result
        reply = await self._command(sc.DATA, self.timeouts.data_init)
        if reply.code != 354:
            result.data = reply
            return result
        result.data = await self._send_data_body(tx.message, None)
        return result

    async def _send_data_body(
        self, message: bytes, following: Transaction | None
    ) -> sc.ServerReply:
        """The content, dot-stuffed, then ".": RFC 5321 §4.1.1.4 clears the transaction
        whatever the reply, so the next envelope may follow in the same group."""
        stuffer = sc.DotStuffer()
        end = len(message)
        start = 0
        while end - start > CHUNK:
            await self._write(stuffer.feed(message[start : start + CHUNK]), self.timeouts.block)
            start += CHUNK
        tail = stuffer.feed(message[start:] if start else message) + stuffer.finish()
        if following is not None:
            tail += following.envelope + sc.DATA
            self._primed, self._primed_reset = following, False
        await self._write(tail, self.timeouts.block)
        reply = await self._read_reply(self.timeouts.final)
        self._dirty = False
        return reply

    async def _send_bdat(self, message: bytes, following: Transaction | None) -> sc.ServerReply:
        reply: sc.ServerReply | None = None
        pieces = sc.bdat_chunks(message, chunk_size=CHUNK)
        piece = next(pieces)
        for later in itertools.chain(pieces, (None,)):
            if later is None and following is not None:
                # RFC 3030 §2 leaves the state after a refused BDAT LAST open: RSET first
                piece += sc.RSET + following.envelope
                self._primed, self._primed_reset = following, True
            await self._write(piece, self.timeouts.block)
            reply = await self._read_reply(self.timeouts.final)
            if not reply.positive:
                return reply  # RFC 3030 §2: a failed chunk ends the transaction (RSET next)
            if later is None:
                break
            piece = later
        assert reply is not None
        self._dirty = False
        return reply

    async def quit(self) -> None:
        channel = self._channel
        if channel is not None and self._primed is None and not channel.eof:
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, HatoError):
                await self._command(sc.QUIT, 10.0)
        # With a transaction sent ahead, no QUIT: closing mid-transaction makes the server
        # drop it (RFC 5321 §3.8).
        await self.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._primed = None
        if channel is not None:
            await channel.close()


def _as_reply(reply: sc.ServerReply) -> str:
    return str(reply)


def usage_reply(exc: UsageError) -> str:
    """The recipient-level reply recorded when a message cannot be sent to this server."""
    text = exc.detail
    if "SMTPUTF8" in text:
        return f"553 5.6.7 {text}"  # RFC 6531 §3.5: non-ASCII address, peer lacks SMTPUTF8
    if "REQUIRETLS" in text:
        return f"550 5.7.30 {text}"  # RFC 8689 §4.2.1: REQUIRETLS support required
    if "BINARYMIME" in text:
        return f"554 5.6.3 {text}"  # RFC 3463 X.6.3: conversion required but not supported
    return f"554 5.6.0 {text}"
