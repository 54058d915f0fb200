"""An asyncio SMTP client session on the sans-IO client codec (``hato.codec.smtp_client``).

Implements the client side of RFC 5321 §3 and §4 (greeting, EHLO with a HELO fallback per
§4.1.4 when EHLO is refused, mail transactions, RSET between messages on one connection --
sent in the same PIPELINING group as the next MAIL, RFC 2920 §3.1 --, QUIT), the client
timeouts of §4.5.3.2 (greeting 5 min, MAIL/RCPT 5 min, DATA initiation 2 min, data blocks
3 min, final dot 10 min), STARTTLS with a second EHLO (RFC 3207 §4.2),
PIPELINING (RFC 2920 §3.1: MAIL, RCPT and DATA sent as one group, replies read in order),
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
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from hato.codec import smtp_client as sc
from hato.core.errors import HatoError, ProtocolError, UsageError
from hato.outbound.tlspolicy import HostPolicy, Requirement, dane_matches

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


class SmtpClient:
    """One connection to one host. Use ``connect`` then ``send`` (repeatedly) then ``quit``."""

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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = sc.ReplyParser()
        self._pending: list[sc.ServerReply] = []
        self.caps = sc.Capabilities()
        self.tls = TlsOutcome(used=False)
        self.greeting: sc.ServerReply | None = None
        self.transactions = 0

    # -- plumbing ------------------------------------------------------------------------
    async def _read_reply(self, timeout: float) -> sc.ServerReply:
        assert self._reader is not None
        while not self._pending:
            for reply in self._parser.replies():
                self._pending.append(reply)
            if self._pending:
                break
            data = await asyncio.wait_for(self._reader.read(65536), timeout)
            if not data:
                raise DeliveryError(
                    f"{self.host}: connection closed", reply="451 4.4.2 Connection lost"
                )
            self._parser.feed(data)
        return self._pending.pop(0)

    async def _write(self, data: bytes, timeout: float | None = None) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await asyncio.wait_for(self._writer.drain(), timeout or self.timeouts.block)

    async def _command(self, data: bytes, timeout: float) -> sc.ServerReply:
        await self._write(data)
        return await self._read_reply(timeout)

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
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.address,
                self.port,
                ssl=context,
                server_hostname=self.host if context is not None else None,
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
        assert self._writer is not None
        context = self._tls_context()
        try:
            await asyncio.wait_for(
                self._writer.start_tls(context, server_hostname=self.host),
                self.timeouts.command,
            )
        except ssl.SSLCertVerificationError as exc:
            kind = "certificate-host-mismatch" if "match" in str(exc) else "certificate-not-trusted"
            raise self._tls_failure(kind, str(exc)) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise self._tls_failure("validation-failure", f"handshake: {exc}") from None
        self._parser = sc.ReplyParser()
        self._pending = []
        self._after_tls()

    def _after_tls(self) -> None:
        assert self._writer is not None
        sslobj = self._writer.get_extra_info("ssl_object")
        version = sslobj.version() if sslobj is not None else None
        if self.policy.requirement is Requirement.DANE:
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            if not der or not dane_matches(der, self.policy.tlsa):
                raise self._tls_failure("tlsa-invalid", "certificate matches no TLSA record")
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

    async def send(
        self, sender: str, rcpts: Sequence[Rcpt], message: bytes, options: sc.MailOptions
    ) -> TransactionResult:
        """One mail transaction. Raises UsageError when the message needs an extension the
        server lacks (a permanent problem of this message), DeliveryError when the session
        broke (the caller retries later)."""
        reset = self.transactions > 0  # RFC 5321 §4.1.1.5: a fresh transaction after RSET
        self.transactions += 1
        utf8 = options.smtputf8
        mail = sc.mail_from(sender, options, self.caps)
        lines = [
            sc.rcpt_to(r.address, notify=r.notify, orcpt=r.orcpt, caps=self.caps, utf8=utf8)
            for r in rcpts
        ]
        try:
            if self.caps.pipelining:
                return await self._send_pipelined(mail, rcpts, lines, message, reset=reset)
            if reset:
                await self._reset(await self._command(sc.RSET, self.timeouts.command))
            return await self._send_stepwise(mail, rcpts, lines, message)
        except (OSError, TimeoutError, ssl.SSLError, ProtocolError) as exc:
            raise DeliveryError(
                f"{self.host}: {type(exc).__name__}: {exc}", reply="451 4.4.2 Connection broken"
            ) from None

    async def _reset(self, reply: sc.ServerReply) -> None:
        if not reply.positive:
            raise DeliveryError(f"{self.host}: RSET {reply}", reply=_as_reply(reply))

    async def _send_pipelined(
        self,
        mail: bytes,
        rcpts: Sequence[Rcpt],
        lines: list[bytes],
        message: bytes,
        *,
        reset: bool,
    ) -> TransactionResult:
        result = TransactionResult()
        chunking = self.caps.chunking
        # RFC 2920 §3.1: RSET, MAIL and RCPT may appear anywhere in a group, DATA is the
        # last command of a group; BDAT needs accepted recipients. One round trip.
        group = (sc.RSET if reset else b"") + mail + b"".join(lines)
        await self._write(group + (b"" if chunking else sc.DATA))
        if reset:
            await self._reset(await self._read_reply(self.timeouts.command))
        result.mail = await self._read_reply(self.timeouts.command)
        for rcpt in rcpts:
            result.rcpts[rcpt.index] = await self._read_reply(self.timeouts.command)
        accepted = result.mail.positive and any(r.positive for r in result.rcpts.values())
        if chunking:
            if accepted:
                result.data = await self._send_bdat(message)
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
            return result
        result.data = await self._send_data_body(message)
        return result

    async def _send_stepwise(
        self, mail: bytes, rcpts: Sequence[Rcpt], lines: list[bytes], message: bytes
    ) -> TransactionResult:
        result = TransactionResult()
        result.mail = await self._command(mail, self.timeouts.command)
        if not result.mail.positive:
            return result
        for rcpt, line in zip(rcpts, lines, strict=True):
            result.rcpts[rcpt.index] = await self._command(line, self.timeouts.command)
        if not any(r.positive for r in result.rcpts.values()):
            return result
        if self.caps.chunking:
            result.data = await self._send_bdat(message)
            return result
        reply = await self._command(sc.DATA, self.timeouts.data_init)
        if reply.code != 354:
            result.data = reply
            return result
        result.data = await self._send_data_body(message)
        return result

    async def _send_data_body(self, message: bytes) -> sc.ServerReply:
        stuffer = sc.DotStuffer()
        for start in range(0, len(message), CHUNK):
            await self._write(stuffer.feed(message[start : start + CHUNK]), self.timeouts.block)
        await self._write(stuffer.finish(), self.timeouts.block)
        return await self._read_reply(self.timeouts.final)

    async def _send_bdat(self, message: bytes) -> sc.ServerReply:
        reply: sc.ServerReply | None = None
        for piece in sc.bdat_chunks(message, chunk_size=CHUNK):
            await self._write(piece, self.timeouts.block)
            reply = await self._read_reply(self.timeouts.final)
            if not reply.positive:
                return reply  # RFC 3030 §2: a failed chunk ends the transaction
        assert reply is not None
        return reply

    async def quit(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, HatoError):
                await self._command(sc.QUIT, 10.0)
        await self.close()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 5.0)


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
