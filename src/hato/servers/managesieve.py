"""The ManageSieve server: asyncio connections around hato.codec.managesieve, scripts in the store.

Implements RFC 5804: capabilities at connect, after STARTTLS and after AUTHENTICATE /
UNAUTHENTICATE (§1.7), AUTHENTICATE with SASL PLAIN, LOGIN, SCRAM-SHA-1 and SCRAM-SHA-256 through
hato.policy.authn, with initial response, "*" cancel and no re-authentication (§2.1), STARTTLS
(§2.2), LOGOUT (§2.3), CAPABILITY (§2.4), HAVESPACE (§2.5), PUTSCRIPT validated by the Sieve
parser with line numbers in the NO (§2.6), LISTSCRIPTS (§2.7), SETACTIVE (§2.8), GETSCRIPT
(§2.9), DELETESCRIPT refusing the active script (§2.10), RENAMESCRIPT (§2.11), CHECKSCRIPT
(§2.12), NOOP with TAG (§2.13), UNAUTHENTICATE (§2.14.1), response codes (§1.3), script
quotas (§1.5), a BYE after too many failed logins, too long idle (§1.2, at least 30
minutes once authenticated) or when the server stops (TRYLATER). Connections, limits,
STARTTLS and stop come from ``hato.servers.connection``.

The EXTLISTS capability (RFC 6134 §2.8) names the URI schemes of the external lists
delivery answers (``hato.delivery.sieve.ext_lists``).

SASL: SCRAM-SHA-1 and PLAIN over TLS, the two §2.1 makes mandatory, plus SCRAM-SHA-256 (RFC
7677) and LOGIN. An account created before SCRAM-SHA-1 keys existed gets them at its next
password login (PLAIN/LOGIN on any protocol); until then SCRAM-SHA-1 fails for it.

Left out: SASL security layers and proxy authorisation, REFERRAL, LANGUAGE, WARNINGS (the parser
reports no warnings).

Security: passwords only reach hato.policy.authn; SASL mechanisms are offered only over TLS
(or on loopback in demo mode). Input pipelined after STARTTLS is discarded (the STARTTLS
command-injection class of bugs). Lines and literals are bounded; too many bad commands or
failed logins close the connection; connections are limited in total and per address.
Script content is never logged.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from hato.codec import managesieve as ms
from hato.codec.managesieve import Code, Command, ManageSieveError, State
from hato.core import log
from hato.core.errors import (
    AlreadyExists,
    AuthError,
    ConfigError,
    Conflict,
    NotFound,
    ScriptQuotaExceeded,
    StoreError,
    UsageError,
)
from hato.delivery.sieve import (
    DEFAULT_SETTINGS,
    EXT_LIST_SCHEMES,
    NOTIFY_METHODS,
    SieveSettings,
    check_script,
)
from hato.policy.authn import Authenticator, AuthLockedOut
from hato.servers.base import Listener, TlsMode
from hato.servers.connection import Acceptor, AcceptorService, Connection, ConnectionLimits
from hato.store.api import MailStore
from hato.store.model import Account, ScriptQuota

MIN_IDLE_TIMEOUT = 1800.0  # RFC 5804 §1.2: autologout at least 30 minutes after login
_Conn = Connection[ms.FrameReader]
_QUOTA_CODES = {"size": "QUOTA/MAXSIZE", "count": "QUOTA/MAXSCRIPTS", "total": "QUOTA"}


@dataclass(frozen=True, slots=True)
class ManageSieveSettings:
    hostname: str
    listeners: tuple[Listener, ...]
    max_script_size: int = 1024**2  # octets of one script (QUOTA/MAXSIZE)
    max_scripts: int | None = 100  # per account (QUOTA/MAXSCRIPTS)
    max_total_size: int | None = 10 * 1024**2  # all scripts of an account (QUOTA)
    login_timeout: float = 60.0  # RFC 5804 §1.2: may be shorter before authentication
    idle_timeout: float = MIN_IDLE_TIMEOUT
    max_connections: int = 500
    max_connections_per_ip: int = 20
    max_errors: int = 10  # bad commands before BYE
    max_auth_failures: int = 3  # failed AUTHENTICATEs before BYE (RFC 5804 §2.1 example)
    tls_handshake_timeout: float = 30.0
    sieve: SieveSettings = DEFAULT_SETTINGS  # what scripts may require ([sieve] section)

    def __post_init__(self) -> None:
        if self.idle_timeout < MIN_IDLE_TIMEOUT:
            raise ConfigError("managesieve.idle_timeout: RFC 5804 §1.2 requires 1800 seconds")
        if min(self.max_connections, self.max_connections_per_ip, self.max_errors) < 1:
            raise ConfigError("managesieve: connection and error limits must be positive")
        if self.max_script_size < 1 or self.max_auth_failures < 1:
            raise ConfigError("managesieve: script size and login limits must be positive")

    @property
    def quota(self) -> ScriptQuota:
        return ScriptQuota(
            max_scripts=self.max_scripts,
            max_script_size=self.max_script_size,
            max_total_size=self.max_total_size,
        )


class _Session:
    def __init__(self, server: ManageSieveServer, conn: _Conn, listener: Listener) -> None:
        self.server = server
        self.conn = conn
        self.listener = listener
        self.secure = listener.tls is TlsMode.IMPLICIT
        self.remote_ip = conn.remote_ip
        self.account: Account | None = None
        self.errors = 0
        self.auth_failures = 0

    @property
    def settings(self) -> ManageSieveSettings:
        return self.server.settings

    @property
    def state(self) -> State:
        return State.NONAUTH if self.account is None else State.AUTH

    async def send(self, data: bytes) -> None:
        await self.conn.write(data)

    async def run(self) -> None:
        log.new_connection_id()
        log.event(
            "managesieve.connect",
            remote_ip=self.remote_ip,
            port=self.listener.port,
            tls=self.secure,
        )
        reason = "closed"
        try:
            await self.send(self._capabilities())  # RFC 5804 §1.7: sent upon connection
            reason = await self._loop()
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            reason = f"connection error: {type(exc).__name__}"
        except Exception as exc:  # a bug: log it, drop this connection, keep serving others
            log.event("managesieve.internal_error", error=repr(exc))
            reason = "internal error"
        finally:
            self.conn.close()
            log.event("managesieve.disconnect", reason=reason)

    def _capabilities(self) -> bytes:
        # RFC 5804 §2.1: servers MUST implement SCRAM-SHA-1 and PLAIN over TLS.
        mechanisms = self.server.auth.mechanisms(
            secure=self.secure, remote_ip=self.remote_ip, scram_sha1=True
        )
        authed = self.account is not None
        return ms.Capabilities(
            implementation="Hato",
            sasl=tuple(mechanisms),  # empty before STARTTLS unless demo loopback (§1.7)
            sieve=tuple(sorted(self.settings.sieve.extensions)),
            # RFC 5804 §1.7: SHOULD NOT be advertised after STARTTLS or AUTHENTICATE.
            starttls=self._can_starttls() and not authed,
            maxredirects=self.settings.sieve.limits.max_redirects,
            notify=NOTIFY_METHODS,
            extlists=EXT_LIST_SCHEMES,
            owner=self.account.address if self.account is not None else None,
        ).render()

    def _can_starttls(self) -> bool:
        return (
            not self.secure
            and self.listener.tls is TlsMode.STARTTLS
            and self.server.starttls_context is not None
        )

    async def _loop(self) -> str:
        while True:
            timeout = (
                self.settings.login_timeout if self.account is None else self.settings.idle_timeout
            )
            try:
                frame = await self.conn.read(ms.FrameReader.next_frame, timeout)
            except ms.InputTooLong as exc:
                if not await self._bad(self._too_long(exc)):
                    return "too many errors"
                continue
            if frame is None:
                if self.conn.closed:
                    return "eof"
                if self.conn.stopping:
                    # RFC 5804 §1.2: BYE when the server closes the connection.
                    await self.send(
                        ms.bye("server shutting down, try again later", code=Code("TRYLATER"))
                    )
                    return "stopping"
                # RFC 5804 §1.2: BYE before closing an idle connection.
                await self.send(ms.bye("idle timeout, closing connection"))
                return "timeout"
            try:
                command = ms.parse_command(frame, self.state)
            except ManageSieveError as exc:
                if not await self._bad(exc.response):
                    return "too many errors"
                continue
            outcome = await self._dispatch(command)
            if outcome is not None:
                return outcome

    @staticmethod
    def _too_long(exc: ms.InputTooLong) -> bytes:
        if exc.literal_size is not None and exc.command == "PUTSCRIPT":
            return ms.no("script is too large", code=Code("QUOTA/MAXSIZE"))  # RFC 5804 §1.3
        return exc.response

    async def _bad(self, response: bytes) -> bool:
        self.errors += 1
        if self.errors >= self.settings.max_errors:
            await self.send(ms.bye("too many bad commands, closing connection"))
            return False
        await self.send(response)
        return True

    async def _dispatch(self, command: Command) -> str | None:
        """Runs one command; returns why the session ends, or None to go on."""
        handler = getattr(self, f"_cmd_{command.name.lower()}")
        try:
            result: str | None = await handler(*command.args)
        except ManageSieveError as exc:
            await self.send(exc.response)
            return None
        except StoreError as exc:
            await self.send(self._store_error(command, exc))
            return None
        except UsageError as exc:
            await self.send(ms.no(exc.detail))  # e.g. a forbidden script name (RFC 5804 §1.6)
            return None
        return result

    @staticmethod
    def _store_error(command: Command, exc: StoreError) -> bytes:
        """RFC 5804 §1.3 response codes for store refusals (the one mapping of this server)."""
        if isinstance(exc, ScriptQuotaExceeded):
            return ms.no("quota exceeded", code=Code(_QUOTA_CODES.get(exc.limit, "QUOTA")))
        if isinstance(exc, NotFound):
            return ms.no("there is no script by that name", code=Code("NONEXISTENT"))
        if isinstance(exc, AlreadyExists):
            return ms.no("a script by that name already exists", code=Code("ALREADYEXISTS"))
        if isinstance(exc, Conflict):
            return ms.no("you may not delete the active script", code=Code("ACTIVE"))
        log.event("managesieve.store_error", command=command.name, error=exc.detail)
        if exc.temporary:
            return ms.no("temporary server failure, try again later", code=Code("TRYLATER"))
        return ms.no(exc.reply)

    # -- any state (RFC 5804 §2.3, §2.4, §2.13) ---------------------------------------------
    async def _cmd_capability(self) -> None:
        await self.send(self._capabilities())

    async def _cmd_logout(self) -> str:
        await self.send(ms.ok("Logout completed"))  # RFC 5804 §2.3: MUST reply OK
        return "logout"

    async def _cmd_noop(self, tag: str | None = None) -> None:
        if tag is None:
            await self.send(ms.ok("NOOP completed"))
        else:  # RFC 5804 §2.13: echo the string in a TAG response code
            await self.send(ms.ok("Done", code=Code("TAG", tag)))

    # -- non-authenticated state (RFC 5804 §2.1, §2.2) --------------------------------------
    async def _cmd_starttls(self) -> str | None:
        context = self.server.starttls_context
        if not self._can_starttls() or context is None:
            raise ManageSieveError("STARTTLS is not available on this connection")
        try:
            dropped = await self.conn.start_tls(
                context,
                reply=ms.ok("Begin TLS negotiation now"),
                timeout=self.settings.tls_handshake_timeout,
            )
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
            log.event("managesieve.tls_failed", error=type(exc).__name__)
            return "tls failed"
        if dropped:
            log.event("managesieve.starttls_pipelined_input_dropped", octets=dropped)
        self.secure = True
        log.event("managesieve.tls", version=self.conn.tls_version)
        # RFC 5804 §2.2: the server MUST re-issue the capabilities (without STARTTLS).
        await self.send(self._capabilities())
        return None

    async def _cmd_authenticate(self, mechanism: str, initial: str | None = None) -> str | None:
        auth = self.server.auth
        if not auth.mechanisms(secure=self.secure, remote_ip=self.remote_ip):
            raise ManageSieveError("use STARTTLS first", code=Code("ENCRYPT-NEEDED"))
        try:
            exchange = auth.start(mechanism, remote_ip=self.remote_ip, secure=self.secure)
        except AuthLockedOut:
            raise ManageSieveError("too many failed logins", code=Code("TRYLATER")) from None
        except AuthError:
            raise ManageSieveError("unsupported mechanism") from None
        data = ms.decode_sasl(initial) if initial is not None else None
        if initial is not None and data is None:
            raise ManageSieveError("authentication cancelled")
        try:
            while True:
                step = await exchange.step(data)
                if step.done:
                    break
                await self.send(ms.challenge(step.challenge or b""))
                frame = await self.conn.read(ms.FrameReader.next_frame, self.settings.login_timeout)
                if frame is None:
                    raise ConnectionResetError("connection closed during AUTHENTICATE")
                data = ms.parse_sasl_response(frame)
                if data is None:  # RFC 5804 §2.1: "*" cancels; the server MUST reply NO
                    raise ManageSieveError("authentication cancelled")
        except AuthError as exc:
            return await self._auth_failed(exc)
        assert step.account is not None
        self.account = step.account
        log.event("managesieve.login", user=step.account.address, mechanism=exchange.mechanism)
        await self.send(ms.ok("Logged in"))
        return None

    async def _auth_failed(self, exc: AuthError) -> str | None:
        self.auth_failures += 1
        if self.auth_failures >= self.settings.max_auth_failures:
            # RFC 5804 §1.2: BYE for too many failed authentication attempts.
            await self.send(ms.bye("Too many failed authentication attempts"))
            return "too many failed logins"
        if isinstance(exc, AuthLockedOut):
            await self.send(ms.no("too many failed logins", code=Code("TRYLATER")))
        else:
            await self.send(ms.no("Authentication failed"))
        return None

    # -- authenticated state (RFC 5804 §2.5-§2.12, §2.14.1) ---------------------------------
    def _account(self) -> Account:
        assert self.account is not None
        return self.account

    async def _cmd_unauthenticate(self) -> None:
        # RFC 5804 §2.14.1: MUST NOT fail in authenticated state; TLS stays.
        log.event("managesieve.logout", user=self._account().address)
        self.account = None
        await self.send(ms.ok("Unauthenticated"))

    async def _cmd_havespace(self, name: str, size: int) -> None:
        await self.server.store.check_script_space(
            self._account().id, name, size, quota=self.settings.quota
        )
        await self.send(ms.ok())

    async def _checked(self, content: str) -> None:
        """RFC 5804 §2.6/§2.12: NO with "line N: message" lines when the script is invalid."""
        if not content:
            raise ManageSieveError("an empty script is not allowed")  # §2.6: SHOULD disallow
        scripts = {
            s.name: s.content for s in await self.server.store.list_scripts(self._account().id)
        }
        errors = await asyncio.to_thread(
            check_script, content, scripts=scripts, settings=self.settings.sieve
        )
        if errors:
            raise ManageSieveError(ms.error_text(errors))

    async def _cmd_putscript(self, name: str, content: str) -> None:
        account = self._account()
        size = len(content.encode("utf-8"))
        if size > self.settings.max_script_size:
            raise ManageSieveError("script is too large", code=Code("QUOTA/MAXSIZE"))
        await self._checked(content)
        await self.server.store.put_script(account.id, name, content, quota=self.settings.quota)
        log.event("managesieve.script.put", user=account.address, script=name, size=size)
        await self.send(ms.ok())

    async def _cmd_checkscript(self, content: str) -> None:
        # RFC 5804 §2.12: MUST NOT check whether the script would go over quota.
        await self._checked(content)
        await self.send(ms.ok())

    async def _cmd_listscripts(self) -> None:
        scripts = await self.server.store.list_scripts(self._account().id)
        lines = b"".join(ms.script_line(s.name, active=s.active) for s in scripts)
        await self.send(lines + ms.ok())

    async def _cmd_setactive(self, name: str) -> None:
        await self.server.store.set_active_script(self._account().id, name or None)
        log.event("managesieve.script.active", user=self._account().address, script=name)
        await self.send(ms.ok())

    async def _cmd_getscript(self, name: str) -> None:
        script = await self.server.store.get_script(self._account().id, name)
        if script is None:
            raise NotFound(f"script {name!r}")
        await self.send(ms.script_body(script.content) + ms.ok())

    async def _cmd_deletescript(self, name: str) -> None:
        await self.server.store.delete_script(self._account().id, name)
        log.event("managesieve.script.deleted", user=self._account().address, script=name)
        await self.send(ms.ok())

    async def _cmd_renamescript(self, old: str, new: str) -> None:
        await self.server.store.rename_script(self._account().id, old, new)
        await self.send(ms.ok())


class ManageSieveServer(AcceptorService[ms.FrameReader]):
    """The ManageSieve Service (hato.servers.base.Service).

    ``tls_context`` serves implicit TLS; ``starttls_context`` the STARTTLS upgrade, normally
    ``hato.servers.tls.starttls_context`` (no TLS 1.3 session tickets); without it STARTTLS
    uses ``tls_context``. ``stop`` sends sessions waiting for a command a BYE at once."""

    name = "managesieve"

    def __init__(
        self,
        settings: ManageSieveSettings,
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
        max_literal = max(settings.max_script_size, 16384)
        self._listeners = settings.listeners
        self._acceptor = Acceptor(
            self.name,
            buffer=lambda: ms.FrameReader(max_literal=max_literal),
            serve=self._serve,
            refusal=ms.bye("too many connections, try again later"),
            limits=ConnectionLimits.of(settings),
            tls_context=tls_context,
        )

    async def _serve(self, conn: _Conn, listener: Listener) -> None:
        await _Session(self, conn, listener).run()
