"""IMAP commands of the Not Authenticated state: STARTTLS, LOGIN, AUTHENTICATE.

Implements RFC 9051 §6.2.1 STARTTLS (no other command may follow in the same packet: data
pipelined after it is discarded), §6.2.2 AUTHENTICATE (base64 continuation exchange, "*"
cancels with BAD, additional data on success sent as a final challenge), RFC 4959 SASL-IR
initial responses, §6.2.3 LOGIN (refused with PRIVACYREQUIRED while LOGINDISABLED is
advertised), the RFC 5530 response codes AUTHENTICATIONFAILED and PRIVACYREQUIRED. Passwords
are checked by ``hato.policy.authn.Authenticator`` (PLAIN, LOGIN, SCRAM-SHA-256; TLS required
except on loopback in demo mode; brute-force lock-out).

Left out: SCRAM-SHA-256-PLUS (channel binding), EXTERNAL, OAUTHBEARER.

Security: credentials only pass to the Authenticator; nothing about them is logged here; the
reply to a failed login does not say whether the account exists.
"""

from __future__ import annotations

import base64
import binascii

from hato.codec.imap import response
from hato.codec.imap.commands import Authenticate, Command, Login
from hato.codec.imap.states import State
from hato.core import log
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.session import Session
from hato.store.model import Account


async def cmd_starttls(session: Session, command: Command) -> Outcome:
    context = session.tls_context
    if context is None or session.secure:
        raise CommandFailed("STARTTLS not available", bad=True)

    async def handshake() -> None:
        # Bytes the client pipelined after STARTTLS came in the clear: drop them
        # (RFC 9051 §6.2.1; the STARTTLS command-injection attack).
        session.framer = session._new_framer()
        await session.stream.start_tls(context)
        session.secure = True

    # RFC 9051 §6.2.1: the tagged OK goes out in plaintext, then the TLS handshake starts.
    return Outcome("begin TLS negotiation now", after=handshake)


def _require_plaintext_allowed(session: Session) -> None:
    if not session.auth.mechanisms(secure=session.secure, remote_ip=session.remote_ip):
        # RFC 9051 §6.2.3: LOGIN while LOGINDISABLED is advertised; RFC 5530 PRIVACYREQUIRED.
        raise CommandFailed("TLS required before authentication", code="PRIVACYREQUIRED")


def _logged_in(session: Session, account: Account) -> Outcome:
    session.account = account
    session.state = State.AUTHENTICATED
    log.event("imap.login", user=account.address, remote_ip=session.remote_ip)
    # RFC 9051 §6.2.3: capabilities may change after login; send them in the OK.
    return Outcome("logged in", session.capability_code())


async def cmd_login(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Login)
    _require_plaintext_allowed(session)
    account = await session.auth.check_password(
        command.args.userid, command.args.password,
        remote_ip=session.remote_ip, secure=session.secure,
    )
    return _logged_in(session, account)


async def cmd_authenticate(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Authenticate)
    _require_plaintext_allowed(session)
    exchange = session.auth.start(
        command.args.mechanism, remote_ip=session.remote_ip, secure=session.secure
    )
    data = command.args.initial  # RFC 4959: initial response (None when absent)
    while True:
        step = await exchange.step(data)
        if step.done:
            if step.account is None:
                raise CommandFailed("authentication failed", code="AUTHENTICATIONFAILED")
            return _logged_in(session, step.account)
        session.write(response.continuation_data(step.challenge or b""))
        await session.flush()
        line = await session.read_line()
        if line is None:
            raise CommandFailed("authentication exchange aborted", bad=True)
        if line == b"*":
            # RFC 9051 §6.2.2: "*" cancels the exchange; the server answers BAD.
            raise CommandFailed("authentication cancelled", bad=True)
        try:
            data = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise CommandFailed("invalid base64 in authentication response", bad=True) from None
