"""The POP3 server: asyncio connections around hato.codec.pop3, mail from the store's INBOX.

Implements RFC 1939 (USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP, UIDL; the
maildrop is fixed when the session enters TRANSACTION, §8; deletions happen only in UPDATE,
§6; a 10-minute minimum autologout that closes without UPDATE, §3), RFC 2449 (CAPA with the
same list in both states, RESP-CODES, PIPELINING, EXPIRE NEVER, IMPLEMENTATION), RFC 3206
(AUTH-RESP-CODE, SYS/TEMP, SYS/PERM), RFC 5034 (AUTH with PLAIN, LOGIN, SCRAM-SHA-256), RFC
2595 §4 (STLS) and RFC 8314 §3 (implicit TLS, port 995). Connections, limits, STLS and stop
come from ``hato.servers.connection``.

The RFC 1939 §8 exclusive-access lock is one POP3 session per account at a time ([IN-USE],
RFC 2449 §8.1.2); it does not stop IMAP sessions from expunging meanwhile (RETR of such a
message answers -ERR [SYS/PERM]).

Left out: APOP (the greeting carries no timestamp, RFC 1939 §7), LOGIN-DELAY (none imposed);
mailboxes other than INBOX. Messages retrieved with RETR are flagged \\Seen at QUIT (as Dovecot
does); nothing is deleted except by DELE + QUIT.

Security: passwords only reach hato.policy.authn; plaintext authentication is refused (and
not advertised) before TLS unless the Authenticator allows demo loopback. Input pipelined
after STLS is discarded (RFC 2595 §4, the STARTTLS command-injection class of bugs). Lines are
bounded; too many bad commands close the connection; connections are limited per address.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import BinaryIO

from hato.codec import pop3
from hato.codec.pop3 import Command, Maildrop, Pop3Error, State
from hato.core import log
from hato.core.errors import AuthError, ConfigError, HatoError, StoreError
from hato.policy.authn import Authenticator, AuthLockedOut
from hato.servers.base import Listener, TlsMode
from hato.servers.connection import Acceptor, AcceptorService, Connection, ConnectionLimits
from hato.store.api import MailStore
from hato.store.model import INBOX, SEEN, Account, FlagOp

MIN_IDLE_TIMEOUT = 600.0  # RFC 1939 §3: an autologout timer MUST be at least 10 minutes
_CHUNK = 65536
_Conn = Connection[pop3.LineReader]


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    hostname: str
    listeners: tuple[Listener, ...]
    idle_timeout: float = MIN_IDLE_TIMEOUT
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    max_errors: int = 10  # bad commands before the connection is closed
    tls_handshake_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.idle_timeout < MIN_IDLE_TIMEOUT:
            raise ConfigError("pop3.idle_timeout: RFC 1939 §3 requires at least 600 seconds")
        if self.max_connections < 1 or self.max_connections_per_ip < 1 or self.max_errors < 1:
            raise ConfigError("pop3: connection and error limits must be positive")


class _Transaction:
    """What exists only once the user is logged in (CONVENTIONS.md §4)."""

    def __init__(self, account: Account, mailbox_id: int, drop: Maildrop) -> None:
        self.account = account
        self.mailbox_id = mailbox_id
        self.drop = drop
        self.retrieved: set[int] = set()  # uids sent with RETR


class _Session:
    def __init__(self, server: Pop3Server, conn: _Conn, listener: Listener) -> None:
        self.server = server
        self.conn = conn
        self.listener = listener
        self.secure = listener.tls is TlsMode.IMPLICIT
        self.remote_ip = conn.remote_ip
        self.state = State.AUTHORIZATION
        self.user: str | None = None  # from USER, waiting for PASS
        self.txn: _Transaction | None = None
        self.errors = 0

    @property
    def settings(self) -> Pop3Settings:
        return self.server.settings

    async def send(self, data: bytes) -> None:
        await self.conn.write(data)

    async def run(self) -> None:
        log.new_connection_id()
        log.event(
            "pop3.connect", remote_ip=self.remote_ip, port=self.listener.port, tls=self.secure
        )
        reason = "closed"
        try:
            await self.send(pop3.ok(f"{self.settings.hostname} Hato POP3 server ready"))
            reason = await self._loop()
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            reason = f"connection error: {type(exc).__name__}"
        except Exception as exc:  # a bug: log it, drop this connection, keep serving others
            log.event("pop3.internal_error", error=repr(exc))
            reason = "internal error"
        finally:
            if self.txn is not None:
                self.server.release(self.txn.account.id)
            self.conn.close()
            log.event("pop3.disconnect", reason=reason)

    async def _loop(self) -> str:
        while True:
            try:
                line = await self.conn.read(_command_line, self.settings.idle_timeout)
            except pop3.LineTooLong as exc:
                if not await self._bad(exc):
                    return "too many errors"
                continue
            if line is None:
                # RFC 1939 §3: an expired autologout timer closes without entering UPDATE,
                # and so does a server that is stopping (§6: no UPDATE without QUIT).
                if self.conn.closed:
                    return "eof"
                return "stopping" if self.conn.stopping else "timeout"
            try:
                command = pop3.parse_command(line, self.state)
            except Pop3Error as exc:
                if not await self._bad(exc):
                    return "too many errors"
                continue
            if not await self._dispatch(command):
                return "quit"

    async def _bad(self, exc: Pop3Error) -> bool:
        self.errors += 1
        if self.errors >= self.settings.max_errors:
            await self.send(pop3.err("too many bad commands, closing"))
            return False
        await self.send(exc.line)
        return True

    async def _dispatch(self, command: Command) -> bool:
        handler = getattr(self, f"_cmd_{command.keyword.lower()}")
        try:
            result: bool | None = await handler(*command.args)
        except Pop3Error as exc:
            await self.send(exc.line)
            return True
        except StoreError as exc:
            # CONVENTIONS.md §7: details to the log, a generic reply to the peer.
            log.event("pop3.store_error", command=command.keyword, error=exc.detail)
            code = "SYS/TEMP" if exc.temporary else "SYS/PERM"
            await self.send(pop3.err(exc.reply, code=code))
            return True
        return result is not False

    # -- AUTHORIZATION (RFC 1939 §4, RFC 5034, RFC 2595) ------------------------------------

    def _plaintext_allowed(self) -> bool:
        return bool(self.server.auth.mechanisms(secure=self.secure, remote_ip=self.remote_ip))

    async def _cmd_capa(self) -> None:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        # RFC 2449 §6.7: a site that lets users keep messages indefinitely SHOULD say so.
        # Hato deletes nothing on its own (only DELE + QUIT here, EXPUNGE over IMAP). No
        # LOGIN-DELAY (§6.8): we impose none.
        caps.append("EXPIRE NEVER")
        mechanisms = self.server.auth.mechanisms(secure=self.secure, remote_ip=self.remote_ip)
        if mechanisms:
            caps += ["USER", "SASL " + " ".join(mechanisms)]
        if self.state is State.AUTHORIZATION and self._can_starttls():
            caps.append("STLS")  # RFC 2595 §4: announced in AUTHORIZATION state only
        caps.append("IMPLEMENTATION Hato")
        await self.send(pop3.multiline(pop3.ok("Capability list follows"), caps))

    def _can_starttls(self) -> bool:
        return (
            not self.secure
            and self.listener.tls is TlsMode.STARTTLS
            and self.server.starttls_context is not None
        )

    async def _cmd_stls(self) -> bool:
        if self.secure:
            raise Pop3Error("command not permitted when TLS active")  # RFC 2595 §4 example
        if not self._can_starttls() or self.server.starttls_context is None:
            raise Pop3Error("STLS not available")
        try:
            dropped = await self.conn.start_tls(
                self.server.starttls_context,
                reply=pop3.ok("Begin TLS negotiation"),
                timeout=self.settings.tls_handshake_timeout,
            )
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
            log.event("pop3.tls_failed", error=type(exc).__name__)
            return False
        if dropped:
            log.event("pop3.stls_pipelined_input_dropped", octets=dropped)
        self.secure = True
        self.user = None  # RFC 2595 §4: the server MUST discard knowledge from before TLS
        log.event("pop3.tls", version=self.conn.tls_version)
        return True

    async def _cmd_user(self, name: str) -> None:
        if not self._plaintext_allowed():
            self.user = None
            raise Pop3Error("plaintext authentication disallowed without TLS", code="AUTH")
        self.user = name
        await self.send(pop3.ok("send PASS"))

    async def _cmd_pass(self, password: str) -> None:
        user, self.user = self.user, None
        if user is None:
            raise Pop3Error("USER first")
        try:
            account = await self.server.auth.check_password(
                user, password, remote_ip=self.remote_ip, secure=self.secure
            )
        except AuthError as exc:
            raise self._auth_failure(exc) from None
        await self._enter_transaction(account, mechanism="USER")

    async def _cmd_apop(self, name: str, digest: str) -> None:
        raise Pop3Error("APOP not supported")

    def _auth_failure(self, exc: AuthError) -> Pop3Error:
        if isinstance(exc, AuthLockedOut):
            return Pop3Error("too many failed logins, try again later", code="SYS/TEMP")
        # RFC 3206 §4: [AUTH] marks a problem with the user's credentials.
        return Pop3Error("authentication failed", code="AUTH")

    async def _cmd_auth(self, mechanism: str | None = None, initial: str | None = None) -> None:
        auth = self.server.auth
        if mechanism is None:
            # Not in RFC 5034, but clients (RFC 1734 era) probe mechanisms with a bare AUTH.
            mechanisms = auth.mechanisms(secure=self.secure, remote_ip=self.remote_ip)
            await self.send(pop3.multiline(pop3.ok("SASL mechanisms follow"), mechanisms))
            return
        self.user = None
        if not self._plaintext_allowed():
            # RFC 5034 §4: no password mechanism before STLS (demo loopback excepted).
            raise Pop3Error("authentication disallowed without TLS", code="AUTH")
        data = pop3.parse_initial_response(initial) if initial is not None else None
        try:
            exchange = auth.start(mechanism, remote_ip=self.remote_ip, secure=self.secure)
        except AuthLockedOut as exc:
            raise self._auth_failure(exc) from None
        except AuthError:
            raise Pop3Error("unsupported mechanism") from None
        try:
            while True:
                step = await exchange.step(data)
                if step.done:
                    break
                await self.send(pop3.challenge(step.challenge or b""))
                line = await self.conn.read(_sasl_line, self.settings.idle_timeout)
                if line is None:
                    raise ConnectionResetError("connection closed during AUTH")
                data = pop3.parse_sasl_response(line)
                if data is None:  # RFC 5034 §4: "*" cancels; the server MUST reply -ERR
                    raise Pop3Error("authentication cancelled")
        except AuthError as exc:
            raise self._auth_failure(exc) from None
        assert step.account is not None
        await self._enter_transaction(step.account, mechanism=exchange.mechanism)

    async def _enter_transaction(self, account: Account, *, mechanism: str) -> None:
        if not self.server.acquire(account.id):
            # RFC 2449 §8.1.2: authenticated, but the maildrop is in use.
            raise Pop3Error("maildrop already in use by another POP3 session", code="IN-USE")
        try:
            mailbox = await self.server.store.get_mailbox(account.id, INBOX)
            if mailbox is None:
                raise StoreError(f"account {account.address} has no INBOX")
            # RFC 1939 §8: the maildrop is what is there now; later deliveries wait.
            messages = await self.server.store.list_messages(mailbox.id)
        except BaseException:
            self.server.release(account.id)
            raise
        entries = tuple(
            pop3.DropEntry(m.uid, m.size, pop3.unique_id(mailbox.uidvalidity, m.uid))
            for m in messages
        )
        self.txn = _Transaction(account, mailbox.id, Maildrop(entries))
        self.state = State.TRANSACTION
        count, size = self.txn.drop.totals()
        log.event("pop3.login", user=account.address, mechanism=mechanism, messages=count)
        await self.send(pop3.ok(f"maildrop has {count} messages ({size} octets)"))

    # -- TRANSACTION (RFC 1939 §5, §7) ------------------------------------------------------

    def _drop(self) -> Maildrop:
        assert self.txn is not None
        return self.txn.drop

    async def _cmd_stat(self) -> None:
        await self.send(self._drop().stat())

    async def _cmd_list(self, number: str | None = None) -> None:
        await self.send(self._drop().listing(number))

    async def _cmd_uidl(self, number: str | None = None) -> None:
        await self.send(self._drop().uid_listing(number))

    async def _cmd_dele(self, number: str) -> None:
        await self.send(self._drop().delete(number))

    async def _cmd_noop(self) -> None:
        await self.send(pop3.ok())

    async def _cmd_rset(self) -> None:
        await self.send(self._drop().reset())

    async def _cmd_retr(self, number: str) -> None:
        _, entry = self._drop().select(number)
        await self._send_message(entry, pop3.ok(f"{entry.size} octets"), top=None)
        assert self.txn is not None
        self.txn.retrieved.add(entry.uid)

    async def _cmd_top(self, number: str, lines: str) -> None:
        _, entry = self._drop().select(number)
        count = pop3.parse_number(lines, minimum=0)  # RFC 1939 §7: n MUST be non-negative
        await self._send_message(
            entry, pop3.ok("top of message follows"), top=pop3.TopFilter(count)
        )

    async def _send_message(
        self, entry: pop3.DropEntry, first: bytes, *, top: pop3.TopFilter | None
    ) -> None:
        assert self.txn is not None
        found = await self.server.store.get_messages(self.txn.mailbox_id, [entry.uid])
        if not found:
            raise Pop3Error("message was removed by another session", code="SYS/PERM")
        blobs = self.server.store.blobs
        try:
            body: BinaryIO = await asyncio.to_thread(blobs.open, found[0].blob_id)
        except (OSError, HatoError) as exc:
            log.event("pop3.blob_missing", uid=entry.uid, error=str(exc))
            raise Pop3Error("message body unavailable", code="SYS/TEMP") from None
        stuffer = pop3.DotStuffer()
        try:
            await self.send(first)
            while True:
                chunk = await asyncio.to_thread(body.read, _CHUNK)
                if not chunk:
                    break
                if top is not None:
                    chunk = top.feed(chunk)
                await self.send(stuffer.feed(chunk))
                if top is not None and top.done:
                    break
            await self.send(stuffer.finish())
        finally:
            await asyncio.to_thread(body.close)

    async def _cmd_quit(self) -> bool:
        if self.txn is None:
            await self.send(pop3.ok(f"{self.settings.hostname} signing off"))
            return False
        # RFC 1939 §6: QUIT from TRANSACTION enters UPDATE; deletions happen only now.
        self.state = State.UPDATE
        txn = self.txn
        store = self.server.store
        deleted = txn.drop.deleted_uids()
        seen = sorted(txn.retrieved - set(deleted))
        try:
            if seen:
                await store.update_flags(txn.mailbox_id, seen, frozenset({SEEN}), op=FlagOp.ADD)
            if deleted:
                await store.expunge(txn.mailbox_id, deleted)
        except StoreError as exc:
            log.event("pop3.update_failed", error=exc.detail)
            await self.send(pop3.err("some deleted messages not removed", code="SYS/TEMP"))
            return False
        left = len(txn.drop.entries) - len(deleted)
        log.event("pop3.update", deleted=len(deleted), seen=len(seen))
        await self.send(pop3.ok(f"{self.settings.hostname} signing off ({left} messages left)"))
        return False


class Pop3Server(AcceptorService[pop3.LineReader]):
    """The POP3 Service (hato.servers.base.Service).

    ``tls_context`` serves implicit TLS (port 995); ``starttls_context`` the STLS upgrade,
    normally ``hato.servers.tls.starttls_context`` (no TLS 1.3 session tickets); without it
    STLS uses ``tls_context``. ``stop`` closes sessions waiting for a command at once; one
    that ends without QUIT keeps every message (RFC 1939 §6: no UPDATE)."""

    name = "pop3"

    def __init__(
        self,
        settings: Pop3Settings,
        *,
        store: MailStore,
        authenticator: Authenticator,
        tls_context: ssl.SSLContext | None = None,
        starttls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.auth = authenticator
        self.tls_context = tls_context
        self.starttls_context = starttls_context or tls_context
        self._locked: set[int] = set()
        self._listeners = settings.listeners
        self._acceptor = Acceptor(
            self.name,
            buffer=pop3.LineReader,
            serve=self._serve,
            # RFC 3206: SYS/TEMP, a temporary system problem; try again later
            refusal=pop3.err("too many connections, try again later", code="SYS/TEMP"),
            limits=ConnectionLimits.of(settings),
            tls_context=tls_context,
        )

    def acquire(self, account_id: int) -> bool:
        """RFC 1939 §8: one session holds an account's maildrop at a time."""
        if account_id in self._locked:
            return False
        self._locked.add(account_id)
        return True

    def release(self, account_id: int) -> None:
        self._locked.discard(account_id)

    async def _serve(self, conn: _Conn, listener: Listener) -> None:
        await _Session(self, conn, listener).run()


def _command_line(lines: pop3.LineReader) -> bytes | None:
    return lines.next_line(pop3.MAX_COMMAND_LINE)  # RFC 2449 §4: 255 octets with CRLF


def _sasl_line(lines: pop3.LineReader) -> bytes | None:
    # RFC 5034 §4: responses as long as the mechanisms need, whatever the command limit.
    return lines.next_line(pop3.MAX_SASL_LINE)
