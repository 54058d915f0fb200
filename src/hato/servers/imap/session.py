"""One IMAP connection: the state machine, the command loop and the any-state commands.

Implements RFC 9051 §3 (states; the allowed commands per state are the table in
``hato.codec.imap.states``), §5.4 (autologout after the idle timeout, at least 30 minutes),
§5.5 (commands run one at a time in the order received; untagged updates at command end),
§6.1 (CAPABILITY, NOOP, LOGOUT), §6.3.1 ENABLE with RFC 5161 (IMAP4rev2, CONDSTORE),
§6.3.10 NAMESPACE (RFC 2342), §7.1 status responses (mapped from errors in ``_finish`` only),
RFC 2971 ID, and IMAP4rev1 (RFC 3501) behaviour until the client enables IMAP4rev2 (modified
UTF-7 mailbox names, SEARCH instead of ESEARCH, RECENT in SELECT). ENABLE also takes QRESYNC
(RFC 7162 §3.2.3: implies CONDSTORE; VANISHED instead of EXPUNGE from then on, HIGHESTMODSEQ in
the tagged OK of EXPUNGE, §3.2.7) and UTF8=ACCEPT (RFC 6855 §3: UTF-8 mailbox names as quoted
strings, no modified UTF-7; SEARCH with a CHARSET is then BAD).

Left out: NOTIFY (not advertised).

Security: nothing is read before authentication except command lines bounded by the framer;
STARTTLS discards bytes pipelined after it (RFC 9051 §6.2.1, the STARTTLS injection attack);
passwords never reach the log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from hato.codec.imap import mutf7, response
from hato.codec.imap.commands import Command, Enable, Id, Search
from hato.codec.imap.framing import (
    Fatal,
    FrameEvent,
    Framer,
    Line,
    Mode,
    NeedContinuation,
    RawCommand,
    Refused,
)
from hato.codec.imap.parser import CommandSyntaxError, parse_command
from hato.codec.imap.states import ALLOWED, NO_EXPUNGE_DURING, State
from hato.core import log
from hato.core.clock import Clock
from hato.core.errors import (
    AlreadyExists,
    AuthError,
    HatoError,
    NotFound,
    QuotaExceeded,
    StoreError,
)
from hato.policy.authn import Authenticator
from hato.servers.imap.cache import ContentCache
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.recent import RecentClaims
from hato.servers.imap.selected import MailboxGone, Selected, sync
from hato.servers.imap.settings import ImapSettings
from hato.store.api import MailStore
from hato.store.model import HIERARCHY_SEPARATOR, INBOX, Account

Handler = Callable[["Session", Command], Awaitable[Outcome]]


class Stream(Protocol):
    """The byte stream of one connection (see ``service.py``)."""

    async def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    async def start_tls(self, context: ssl.SSLContext) -> None: ...


class Session:
    def __init__(
        self,
        *,
        settings: ImapSettings,
        store: MailStore,
        authenticator: Authenticator,
        stream: Stream,
        remote_ip: str,
        secure: bool,
        tls_context: ssl.SSLContext | None,
        clock: Clock,
        handlers: Mapping[str, Handler],
        recent: RecentClaims | None = None,
        content_cache: ContentCache | None = None,
    ) -> None:
        self.settings = settings
        self.handlers = handlers
        self.store = store
        self.auth = authenticator
        self.stream = stream
        self.remote_ip = remote_ip
        self.secure = secure
        self.tls_context = tls_context
        self.clock = clock
        self.state = State.NOT_AUTHENTICATED
        self.account: Account | None = None
        self.selected: Selected | None = None
        self.rev2 = False  # RFC 9051 §6.3.1: after ENABLE IMAP4rev2
        self.condstore = False  # RFC 7162 §3.1: CONDSTORE enabled for this connection
        self.qresync = False  # RFC 7162 §3.2.3: after ENABLE QRESYNC
        self.utf8 = False  # RFC 6855 §3: after ENABLE UTF8=ACCEPT
        self.compressed = False  # RFC 4978: COMPRESS DEFLATE is active
        self.recent = recent if recent is not None else RecentClaims()
        # Rendered ENVELOPE/BODYSTRUCTURE by blob id, shared by the service's sessions.
        self.content_cache = content_cache if content_cache is not None else ContentCache()
        self.framer = self._new_framer()
        self._out: list[bytes] = []

    def _new_framer(self) -> Framer:
        return Framer(
            max_line=self.settings.max_line,
            max_literal=self.settings.max_literal,
            append_limit=self.settings.append_limit,
            max_discard=self.settings.max_discard,
        )

    # -- output ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._out.append(data)

    def untagged(self, body: bytes) -> None:
        self._out.append(response.untagged(body))

    async def flush(self) -> None:
        if self._out:
            self.stream.write(b"".join(self._out))
            self._out.clear()
        await self.stream.drain()

    # -- capabilities ----------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "ID", "ENABLE", "IDLE", "SASL-IR"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls_context is not None and not self.secure:
                caps.append("STARTTLS")
            mechanisms = self.auth.mechanisms(secure=self.secure, remote_ip=self.remote_ip)
            if mechanisms:
                caps.extend(f"AUTH={m}" for m in mechanisms)
            else:
                caps.append("LOGINDISABLED")  # RFC 9051 §6.2.3 / §7.2.2
            return caps
        caps += [
            "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED",
            "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE", "MULTIAPPEND", "BINARY",
            "ESEARCH", "SEARCHRES", "CONDSTORE", "STATUS=SIZE", "SAVEDATE", "OBJECTID",
            "WITHIN", f"APPENDLIMIT={self.settings.append_limit}",
            # second wave: RFC 7162 §3.2.2, RFC 5256 §3 (+ RFC 5957 SORT=DISPLAY), RFC 9208 §5,
            # RFC 4469, RFC 6855 §3, RFC 4978 §5
            "QRESYNC", "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
            "QUOTA", "QUOTA=RES-STORAGE", "CATENATE", "UTF8=ACCEPT",
        ]
        if not self.compressed:
            caps.append("COMPRESS=DEFLATE")
        return caps

    def capability_code(self) -> str:
        return "CAPABILITY " + " ".join(self.capabilities())

    # -- mailbox names ---------------------------------------------------------------------

    def decode_mailbox(self, wire: str) -> str:
        """A mailbox name from the client, as the store names it."""
        if not self.rev2 and not self.utf8:
            try:
                wire = mutf7.decode(wire)  # RFC 3501 §5.1.3
            except ValueError:
                raise CommandFailed("invalid modified UTF-7 mailbox name", bad=True) from None
        head, sep, rest = wire.partition(HIERARCHY_SEPARATOR)
        if head.upper() == INBOX:  # RFC 9051 §5.1: INBOX is case-insensitive
            wire = INBOX + sep + rest
        return wire

    def encode_mailbox(self, name: str) -> bytes:
        if self.utf8:
            return response.utf8_mailbox(name)  # RFC 6855 §3: UTF-8 in quoted strings
        return response.mailbox(name if self.rev2 else mutf7.encode(name))

    # -- the command loop ------------------------------------------------------------------

    async def run(self) -> None:
        code = self.capability_code()
        self.write(response.status("*", "OK", f"{self.settings.hostname} IMAP ready", code))
        try:
            while self.state is not State.LOGOUT:
                event = self.framer.next_event()
                if event is None:
                    await self.flush()
                    if not await self._receive():
                        return
                    continue
                await self._on_event(event)
            await self.flush()
        except MailboxGone:
            self.write(response.status("*", "BYE", "selected mailbox was deleted"))
            await self.flush()

    async def _receive(self) -> bool:
        """Read more bytes into the framer; False at EOF or autologout."""
        try:
            data = await asyncio.wait_for(self.stream.read(), self.settings.idle_timeout)
        except TimeoutError:
            # RFC 9051 §5.4: autologout
            self.write(response.status("*", "BYE", "autologout; idle for too long"))
            await self.flush()
            return False
        if not data:
            return False
        self.framer.feed(data)
        return True

    async def read_line(self) -> bytes | None:
        """The next raw client line (AUTHENTICATE, IDLE); None at EOF or for an overlong line."""
        self.framer.mode = Mode.LINE
        try:
            while True:
                event = self.framer.next_event()
                if isinstance(event, Line):
                    return event.data
                if event is not None:
                    return None
                await self.flush()
                if not await self._receive():
                    self.state = State.LOGOUT
                    return None
        finally:
            self.framer.mode = Mode.COMMAND

    async def _on_event(self, event: FrameEvent) -> None:
        if isinstance(event, NeedContinuation):
            self.write(response.continuation("Ready for literal data"))
            await self.flush()
        elif isinstance(event, Refused):
            self.write(response.status(event.tag or "*", event.status, event.text, event.code))
        elif isinstance(event, Fatal):
            self.write(response.status("*", "BYE", event.text, event.code))
            self.state = State.LOGOUT
        elif isinstance(event, RawCommand):
            try:
                command = parse_command(event)
            except CommandSyntaxError as exc:
                self.write(response.status(exc.tag or "*", exc.status, exc.detail, exc.code))
                return
            await self.execute(command)
        elif isinstance(event, Line):  # only in line mode; never reached in command mode
            self.write(response.status("*", "BAD", "unexpected line"))

    async def execute(self, command: Command) -> None:
        log.event("imap.command", level=logging.DEBUG, command=command.name, uid=command.uid)
        allowed = ALLOWED.get(command.name, frozenset())
        if self.state not in allowed:
            self.write(response.status(
                command.tag, "BAD", f"{command.name} not allowed in this state"))
            return
        if self.utf8 and isinstance(command.args, Search) and command.args.charset is not None:
            # RFC 6855 §3: after ENABLE UTF8=ACCEPT a SEARCH with a charset is rejected (BAD).
            self.write(response.status(command.tag, "BAD", "no CHARSET after UTF8=ACCEPT"))
            return
        try:
            outcome = await self.handlers[command.name](self, command)
        except Exception as exc:  # every error becomes a reply here, and only here
            status, code, text = self._error_reply(exc)
            await self._updates(command)
            self.write(response.status(command.tag, status, text, code))
            return
        await self._updates(command)
        code = outcome.code
        if code is None and command.name == "EXPUNGE" and self.qresync \
                and self.selected is not None:
            # RFC 7162 §3.2.7 / §3.2.9: the new per-mailbox MODSEQ in the tagged OK.
            code = f"HIGHESTMODSEQ {self.selected.reported_highest}"
        self.write(response.status(command.tag, "OK", outcome.text, code))
        if outcome.after is not None:
            await self.flush()
            await outcome.after()

    async def _updates(self, command: Command) -> None:
        if self.selected is None or self.account is None or self.state is not State.SELECTED:
            return
        allow_expunge = command.name not in NO_EXPUNGE_DURING
        await sync(
            self.store, self.account.id, self.selected,
            allow_expunge=allow_expunge,
            condstore=self.condstore,
            write=self.write,
            qresync=self.qresync,
        )
        if not allow_expunge and self.condstore and self.selected.pending_expunge:
            # RFC 7162 §3.2 and §6: MODSEQs above a delayed expunge's may have been sent, so
            # the client must hold its HIGHESTMODSEQ below that expunge.
            self.untagged(b"OK [HIGHESTMODSEQ %d] expunges pending"
                          % self.selected.reported_highest)

    def _error_reply(self, exc: Exception) -> tuple[str, str | None, str]:
        """The one place errors become IMAP status responses (RFC 9051 §7.1 codes)."""
        if isinstance(exc, MailboxGone):
            raise exc
        if isinstance(exc, CommandFailed):
            return exc.status, exc.code, exc.detail
        if isinstance(exc, AuthError):
            log.event("imap.auth.failed", remote_ip=self.remote_ip)
            return "NO", "AUTHENTICATIONFAILED", "authentication failed"
        if isinstance(exc, NotFound):
            return "NO", "NONEXISTENT", "no such mailbox or message"
        if isinstance(exc, AlreadyExists):
            return "NO", "ALREADYEXISTS", "mailbox already exists"
        if isinstance(exc, QuotaExceeded):
            return "NO", "OVERQUOTA", "mailbox full"
        if isinstance(exc, StoreError) and exc.temporary:
            return "NO", "UNAVAILABLE", "temporary failure, try again"
        if isinstance(exc, HatoError):
            return "NO", "CANNOT", exc.reply
        log.event("imap.bug", error=type(exc).__name__, detail=str(exc)[:200])
        return "NO", "SERVERBUG", "internal error"


# -- any-state commands (RFC 9051 §6.1) -----------------------------------------------------


async def cmd_capability(session: Session, command: Command) -> Outcome:
    session.untagged(("CAPABILITY " + " ".join(session.capabilities())).encode("ascii"))
    return Outcome("CAPABILITY completed")


async def cmd_noop(session: Session, command: Command) -> Outcome:
    return Outcome("NOOP completed")


async def cmd_logout(session: Session, command: Command) -> Outcome:
    session.untagged(b"BYE logging out")  # RFC 9051 §6.1.3: BYE before the tagged OK
    session.state = State.LOGOUT
    return Outcome("LOGOUT completed")


async def cmd_id(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Id)
    # RFC 2971 §3.3: the server's own fields; the version is not revealed.
    session.untagged(b'ID ("name" "Hato")')
    return Outcome("ID completed")


async def cmd_enable(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Enable)
    enabled: list[str] = []
    for capability in command.args.capabilities:
        # RFC 5161 §3.1: ENABLED lists only what this command newly enabled.
        if capability == "IMAP4REV2" and not session.rev2:
            session.rev2 = True
            enabled.append("IMAP4rev2")
            if session.selected is not None:
                session.selected.legacy = False  # RFC 9051: no \Recent in IMAP4rev2
        elif capability == "CONDSTORE" and not session.condstore:
            session.condstore = True
            enabled.append("CONDSTORE")
        elif capability == "QRESYNC" and not session.qresync:
            # RFC 7162 §3.2.3: QRESYNC is a CONDSTORE-enabling command.
            session.qresync = session.condstore = True
            enabled.append("QRESYNC")
        elif capability == "UTF8=ACCEPT" and not session.utf8:
            session.utf8 = True  # RFC 6855 §3
            enabled.append("UTF8=ACCEPT")
    session.untagged(" ".join(["ENABLED", *enabled]).encode("ascii"))
    return Outcome("ENABLE completed")


async def cmd_namespace(session: Session, command: Command) -> Outcome:
    # RFC 2342 §5 / RFC 9051 §6.3.10: one personal namespace, no shared ones.
    session.untagged(b'NAMESPACE (("" "/")) NIL NIL')
    return Outcome("NAMESPACE completed")


async def cmd_check(session: Session, command: Command) -> Outcome:
    return Outcome("CHECK completed")  # RFC 3501 §6.4.1: every change is already durable
