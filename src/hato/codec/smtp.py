"""Server side of SMTP, sans-IO: bytes in, events out; replies in, bytes out.

Implements the command grammar and ordering of RFC 5321 §4.1 (§4.1.4 order of commands, as
the ``ALLOWED`` table), the limits of §4.5.3.1 (command line 512 octets plus the extension
allowances of RFC 1870 §3, RFC 3030 §3, RFC 3461 §5.4, RFC 4954 §3, RFC 6531 §3.1 and
RFC 8689 §2; recipients §4.5.3.1.10), PIPELINING (RFC 2920: commands are parsed one at a time
from the buffer, each after the previous reply), the EHLO keywords of 8BITMIME (RFC 6152),
SIZE (RFC 1870), CHUNKING/BINARYMIME (RFC 3030), DSN (RFC 3461), SMTPUTF8 (RFC 6531),
ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207, with the §4.2 rule: everything the
client sent before TLS is forgotten, including pipelined bytes after STARTTLS), AUTH framing
(RFC 4954 §4: base64, "*" cancel, the 12288-octet response line), REQUIRETLS (RFC 8689 §2)
and the error-count limit (RFC 5321 §4.5.3.1.9 leaves the policy to the server).

State changes are driven by the replies the server sends: ``send(reply)`` applies the effect
of the reply to the pending event (a MAIL answered 250 opens the ``Envelope``, a DATA answered
354 switches to the dot-reader, a STARTTLS answered 220 resets the ``Session``).

Leaves out: every decision about senders, recipients, authentication and storage (the
server and hato.policy make those), the client side, LMTP, VRFY/EXPN lookups, TURN/ETRN.

Security: every buffer is bounded by the line limits; bytes pipelined after STARTTLS are
discarded; bare CR/LF in commands and bodies are refused.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools

from hato.codec.smtp_data import ChunkReader, DotReader
from hato.codec.smtp_events import (
    Auth,
    AuthResponse,
    Bdat,
    ChunkEnd,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Envelope,
    Event,
    Expn,
    Help,
    Limits,
    Mail,
    Noop,
    Offer,
    Quit,
    Rcpt,
    Recipient,
    Rejected,
    Rset,
    Session,
    StartTls,
    State,
    Vrfy,
)
from hato.codec.smtp_params import (
    Body,
    ParameterError,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    split_path,
)
from hato.core.errors import UsageError
from hato.core.reply import Reply

__all__ = [
    "ALLOWED",
    "Auth",
    "AuthResponse",
    "Bdat",
    "ChunkEnd",
    "Data",
    "DataChunk",
    "DataEnd",
    "Ehlo",
    "Envelope",
    "Event",
    "Expn",
    "Help",
    "Limits",
    "Mail",
    "Noop",
    "Offer",
    "Quit",
    "Rcpt",
    "Recipient",
    "Rejected",
    "Rset",
    "ServerConnection",
    "Session",
    "StartTls",
    "State",
    "Verb",
    "Vrfy",
]

MAX_COMMAND_LINE = 512  # RFC 5321 §4.5.3.1.4: 512 octets incl. CRLF
# MAIL grows by SIZE 26 (RFC 1870 §3), BODY=BINARYMIME 16 (RFC 3030 §3), SMTPUTF8 10
# (RFC 6531 §3.1), REQUIRETLS 11 (RFC 8689 §2), AUTH 500 (RFC 4954 §3), RET 14 + ENVID 107
# (RFC 3461 §5.4); RCPT by NOTIFY+ORCPT 530 (RFC 3461 §5.4).
MAX_MAIL_LINE = MAX_COMMAND_LINE + 26 + 16 + 10 + 11 + 500 + 14 + 107
MAX_RCPT_LINE = MAX_COMMAND_LINE + 530
MAX_AUTH_LINE = 12288  # RFC 4954 §4: 12288 octets suffice for SASL responses


class Verb(enum.Enum):
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"


_ANY = frozenset({State.CONNECTED, State.GREETED, State.MAIL, State.RCPT, State.BDAT})
_IDLE = frozenset({State.GREETED})
# RFC 5321 §4.1.4 (order of commands), RFC 3030 §2 (BDAT), RFC 3207 §4 and RFC 4954 §4
# (STARTTLS and AUTH not inside a mail transaction).
ALLOWED: dict[Verb, frozenset[State]] = {
    Verb.EHLO: _ANY,
    Verb.HELO: _ANY,
    Verb.MAIL: _IDLE,
    Verb.RCPT: frozenset({State.MAIL, State.RCPT}),
    Verb.DATA: frozenset({State.RCPT}),
    Verb.BDAT: frozenset({State.RCPT, State.BDAT}),
    Verb.RSET: _ANY,
    Verb.NOOP: _ANY,
    Verb.QUIT: _ANY,
    Verb.VRFY: _ANY,
    Verb.EXPN: _ANY,
    Verb.HELP: _ANY,
    Verb.STARTTLS: _IDLE,
    Verb.AUTH: _IDLE,
}
_LINE_LIMIT = {Verb.MAIL: MAX_MAIL_LINE, Verb.RCPT: MAX_RCPT_LINE}
_BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
# RFC 5321 §3.3: DATA or BDAT with no accepted recipient may get 554 "no valid recipients"
_NO_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
_SEQUENCE_REPLIES: dict[tuple[Verb, State], Reply] = {
    (Verb.DATA, State.MAIL): _NO_RECIPIENTS,
    (Verb.BDAT, State.MAIL): _NO_RECIPIENTS,
    (Verb.MAIL, State.MAIL): Reply(503, "5.5.1", "Nested MAIL command"),
    (Verb.MAIL, State.RCPT): Reply(503, "5.5.1", "Nested MAIL command"),
    (Verb.DATA, State.BDAT): Reply(503, "5.5.1", "DATA not allowed after BDAT"),  # RFC 3030 §2
    (Verb.AUTH, State.MAIL): Reply(503, "5.5.1", "AUTH not allowed in a mail transaction"),
    (Verb.AUTH, State.RCPT): Reply(503, "5.5.1", "AUTH not allowed in a mail transaction"),
}
OK = Reply(250, "2.0.0", "OK")
BYE = Reply(221, "2.0.0", "Bye")
GO_AHEAD_TLS = Reply(220, "2.0.0", "Ready to start TLS")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
# RFC 5321 §3.5.3: 252 when the server will not verify but will accept mail for the user
VRFY_REPLY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_REPLY = Reply(502, "5.5.1", "EXPN is disabled")  # RFC 5321 §3.5.2, §7.3
HELP_REPLY = Reply.lines(
    214,
    "2.0.0",
    [
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        "See RFC 5321",
    ],
)
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")


def _reject(code: int, enhanced: str, text: str) -> Rejected:
    return Rejected(Reply(code, enhanced, text), text)


class _TooLong:
    pass


_TOO_LONG = _TooLong()
# Replies are immutable values and most repeat on every transaction (250 after MAIL and RCPT,
# 354): each is rendered once, not on every send.
_wire = functools.lru_cache(maxsize=256)(Reply.to_bytes)


class ServerConnection:
    """One SMTP server connection. Call ``next_event`` until it returns None (feed more bytes
    with ``receive_data``); answer every event except Bdat and DataChunk with ``send``."""

    def __init__(self, *, limits: Limits | None = None, offer: Offer | None = None) -> None:
        self.limits = limits or Limits()
        self.offer = offer or Offer()
        self.session = Session()
        self.envelope: Envelope | None = None
        self._buffer = bytearray()
        self._pending: Event | None = None
        self._discarding = False  # dropping the rest of an over-long line
        self._dot: DotReader | None = None
        self._chunk: ChunkReader | None = None
        self._chunk_reply: Reply | None = None  # BDAT refused before its octets were read
        self._chunk_state = State.GREETED  # where the session returns after a chunk

    @property
    def closed(self) -> bool:
        return self.session.state is State.CLOSED

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        if self.session.state is not State.CLOSED:
            self._buffer += data

    def discard_input(self) -> int:
        """Drop every buffered input byte (RFC 3207 §4.2, just before the TLS handshake)."""
        dropped = len(self._buffer)
        self._buffer.clear()
        self._discarding = False
        return dropped

    # -- parsing ---------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed (or the connection closed)."""
        if self._pending is not None:
            raise UsageError("reply to the previous SMTP event before reading the next")
        state = self.session.state
        if state is State.CLOSED:
            return None
        if state is State.DATA:
            event: Event | None = self._next_data()
        elif state is State.CHUNK:
            event = self._next_chunk()
        else:
            limit = MAX_AUTH_LINE if state is State.AUTH else MAX_MAIL_LINE
            line = self._take_line(limit)
            if line is None:
                return None
            if isinstance(line, _TooLong):
                event = _reject(500, "5.5.2", "Line too long")  # RFC 5321 §4.5.3.1.4
            elif state is State.AUTH:
                event = self._auth_response(line)
            else:
                event = self._command(line)
        if event is not None and not isinstance(event, (Bdat, DataChunk)):
            self._pending = event
        return event

    def _take_line(self, limit: int) -> bytes | _TooLong | None:
        buf = self._buffer
        if self._discarding:
            end = buf.find(b"\r\n")
            if end < 0:
                del buf[: max(len(buf) - 1, 0)]  # keep a trailing CR
                return None
            del buf[: end + 2]
            self._discarding = False
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= limit:
                self._discarding = True
                del buf[: len(buf) - 1]
                return _TOO_LONG
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]
        if end + 2 > limit:
            return _TOO_LONG
        return line

    def _command(self, line: bytes) -> Event | None:
        if b"\r" in line or b"\n" in line:  # RFC 5321 §2.3.8: no bare CR or LF
            return _reject(500, "5.5.2", "Bare CR or LF in command")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return _reject(500, "5.5.2", "Command is not valid UTF-8")
        word, _, arg = text.partition(" ")
        try:
            verb = Verb(word.upper())
        except ValueError:
            return _reject(500, "5.5.1", "Command not recognised")  # RFC 5321 §4.2.4
        if len(line) + 2 > _LINE_LIMIT.get(verb, MAX_COMMAND_LINE):
            return _reject(500, "5.5.2", "Line too long")  # RFC 5321 §4.5.3.1.4
        if not text.isascii() and verb not in (Verb.MAIL, Verb.RCPT):
            return _reject(500, "5.5.2", "Non-ASCII characters in command")  # RFC 6531 §3.3
        state = self.session.state
        if verb is Verb.BDAT:
            return self._bdat(arg, allowed=state in ALLOWED[verb])
        if state not in ALLOWED[verb]:
            reply = _SEQUENCE_REPLIES.get((verb, state), _BAD_SEQUENCE)
            if state is State.CONNECTED and verb in (Verb.MAIL, Verb.STARTTLS, Verb.AUTH):
                reply = Reply(503, "5.5.1", "Send HELO/EHLO first")  # RFC 5321 §4.1.4
            return Rejected(reply, f"{verb.value} in state {state.value}")
        return self._parse_verb(verb, arg)

    def _parse_verb(self, verb: Verb, arg: str) -> Event:
        if verb in (Verb.EHLO, Verb.HELO):
            return self._ehlo(arg, extended=verb is Verb.EHLO)
        if verb is Verb.MAIL:
            return self._mail(arg)
        if verb is Verb.RCPT:
            return self._rcpt(arg)
        if verb is Verb.VRFY:
            if not arg.strip():
                return _reject(501, "5.5.4", "VRFY needs an argument")  # RFC 5321 §4.1.1.6
            return Vrfy(arg)
        if verb is Verb.EXPN:
            return Expn(arg)
        if verb is Verb.HELP:
            return Help(arg)
        if verb is Verb.NOOP:
            return Noop()  # RFC 5321 §4.1.1.9: a NOOP argument is ignored
        if verb is Verb.AUTH:
            return self._auth(arg)
        if arg:  # DATA, RSET, QUIT, STARTTLS take no argument
            return _reject(501, "5.5.4", f"{verb.value} takes no argument")
        if verb is Verb.DATA:
            assert self.envelope is not None
            if self.envelope.params.body is Body.BINARY:
                # RFC 3030 §3: DATA after BODY=BINARYMIME MUST get 503
                return _reject(503, "5.5.1", "BINARYMIME requires BDAT")
            return Data()
        if verb is Verb.STARTTLS:
            return self._starttls()
        return Rset() if verb is Verb.RSET else Quit()

    def _ehlo(self, arg: str, *, extended: bool) -> Event:
        domain = arg.strip(" ")
        # RFC 5321 §4.1.1.1: "EHLO" SP ( Domain / address-literal ); one token, no spaces.
        if not domain or " " in domain or not domain.isprintable():
            return _reject(501, "5.5.4", "Syntax: EHLO domain")
        return Ehlo(domain, extended)

    def _mail(self, arg: str) -> Event:
        if self.session.transactions >= self.limits.max_transactions:
            return _reject(421, "4.7.0", "Too many messages in this session, try again later")
        if arg[:5].upper() != "FROM:":
            return _reject(501, "5.5.4", "Syntax: MAIL FROM:<address>")  # RFC 5321 §4.1.1.2
        try:
            bracketed, rest = split_path(arg[5:])
            path = parse_path(bracketed, sender=True)
            params = parse_mail_params(rest, self.offer.params())
        except ParameterError as exc:
            return Rejected(exc.smtp_reply, exc.detail)
        if path.needs_smtputf8 and not params.smtputf8:
            # RFC 6531 §3.5: an ASCII-only MAIL gets 550 with X.6.7
            return _reject(550, "5.6.7", "Non-ASCII address needs SMTPUTF8")
        if params.size is not None and params.size > self.limits.max_message_size:
            # RFC 1870 §6.1: the declared size exceeds the fixed maximum
            return _reject(552, "5.3.4", "Message size exceeds fixed maximum message size")
        return Mail(path, params)

    def _rcpt(self, arg: str) -> Event:
        assert self.envelope is not None
        if arg[:3].upper() != "TO:":
            return _reject(501, "5.5.4", "Syntax: RCPT TO:<address>")  # RFC 5321 §4.1.1.3
        if len(self.envelope.recipients) >= self.limits.max_recipients:
            return _reject(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
        smtputf8 = self.envelope.params.smtputf8
        try:
            bracketed, rest = split_path(arg[3:])
            path = parse_path(bracketed, sender=False)
            params = parse_rcpt_params(rest, self.offer.params(), smtputf8=smtputf8)
        except ParameterError as exc:
            return Rejected(exc.smtp_reply, exc.detail)
        if path.needs_smtputf8 and not smtputf8:
            # RFC 6531 §3.5: a recipient needing SMTPUTF8 gets 553 with X.6.7
            return _reject(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
        return Rcpt(path, params)

    def _bdat(self, arg: str, *, allowed: bool) -> Event | None:
        parts = arg.split(" ")
        last = len(parts) == 2 and parts[1].upper() == "LAST"
        # RFC 3030 §2: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CRLF
        if not (len(parts) == 1 or last) or not parts[0].isdigit() or not parts[0].isascii():
            return _reject(501, "5.5.4", "Syntax: BDAT size [LAST]")
        size = int(parts[0])
        reply: Reply | None = None
        if not self.offer.chunking:
            reply = Reply(502, "5.5.1", "CHUNKING not offered")
        elif not allowed:
            state = self.session.state
            reply = _SEQUENCE_REPLIES.get((Verb.BDAT, state), _BAD_SEQUENCE)
        envelope_size = self.envelope.size if self.envelope is not None else 0
        self._chunk = ChunkReader(
            size,
            last=last,
            discard=reply is not None,
            max_size=self.limits.max_message_size,
            base=envelope_size,
        )
        self._chunk_reply = reply
        self._chunk_state = self.session.state
        self.session.state = State.CHUNK
        if reply is not None:
            return self._next_chunk()  # RFC 3030 §2: the octets are read even when refused
        return Bdat(size, last)

    def _next_chunk(self) -> Event | None:
        chunk = self._chunk
        assert chunk is not None
        while not chunk.done:
            if not self._buffer:
                return None
            data = chunk.read(self._buffer)
            if data:
                return DataChunk(data)
        self._chunk = None
        self.session.state = self._chunk_state
        if self._chunk_reply is not None:
            reply, self._chunk_reply = self._chunk_reply, None
            return Rejected(reply, "BDAT refused")
        if self.envelope is not None:
            self.envelope.size = chunk.size
        return ChunkEnd(chunk.size, chunk.last, chunk.problem)

    def _next_data(self) -> Event | None:
        dot = self._dot
        assert dot is not None
        while not dot.done:
            if not self._buffer:
                return None
            before = len(self._buffer)
            data = dot.read(self._buffer)
            if data:
                return DataChunk(data)
            if len(self._buffer) == before and not dot.done:
                return None  # an incomplete line: wait for more
        self._dot = None
        if self.envelope is not None:
            self.envelope.size = dot.size
        return DataEnd(dot.size, dot.problem)

    def _starttls(self) -> Event:
        if self.session.tls:
            return _reject(503, "5.5.1", "TLS already active")  # RFC 3207 §4.2
        if not self.offer.starttls:
            return _reject(502, "5.5.1", "STARTTLS not offered")
        return StartTls()

    def _auth(self, arg: str) -> Event:
        if self.session.authenticated:
            return _reject(503, "5.5.1", "Already authenticated")  # RFC 4954 §4
        if not self.offer.auth:
            if not self.session.tls and self.offer.starttls:
                # RFC 4954 §6: 538 when the mechanism needs an encrypted connection
                return _reject(538, "5.7.11", "Encryption required for authentication")
            return _reject(502, "5.5.1", "AUTH not offered")
        words = arg.split(" ")
        if not words[0] or len(words) > 2:
            return _reject(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
        mechanism = words[0].upper()
        if mechanism not in self.offer.auth:
            return _reject(504, "5.5.4", "Unrecognised authentication mechanism")  # RFC 4954 §4
        if len(words) == 1:
            return Auth(mechanism, None)
        decoded = _b64(words[1], empty_marker=True)
        if decoded is None:
            return _reject(501, "5.5.2", "Invalid base64 in initial response")  # RFC 4954 §4
        return Auth(mechanism, decoded)

    def _auth_response(self, line: bytes) -> Event:
        text = line.decode("ascii", "replace")
        if text == "*":
            return AuthResponse(None)  # RFC 4954 §4: "*" cancels the exchange
        decoded = _b64(text, empty_marker=False)
        if decoded is None:
            return _reject(501, "5.5.2", "Invalid base64 in response")  # RFC 4954 §4
        return AuthResponse(decoded)

    # -- replies ---------------------------------------------------------------------------

    def send_greeting(self, reply: Reply) -> bytes:
        """The 220 greeting (or 421/554 refusal, which closes) — RFC 5321 §3.1."""
        if reply.code != 220:
            self.session.state = State.CLOSED
        return _wire(reply)

    def send(self, reply: Reply) -> bytes:
        """Render the reply to the pending event and apply its effect on the state."""
        event, self._pending = self._pending, None
        if event is None:
            raise UsageError("no SMTP event is waiting for a reply")
        session = self.session
        if reply.is_error and not isinstance(event, Quit):
            session.errors += 1
            if session.errors >= self.limits.max_errors and reply.code != 421:
                reply = TOO_MANY_ERRORS
        if reply.code == 421:  # RFC 5321 §3.8: 421 closes the connection
            session.state = State.CLOSED
            self.envelope = None
            return _wire(reply)
        self._apply(event, reply)
        return _wire(reply)

    def _apply(self, event: Event, reply: Reply) -> None:
        session = self.session
        ok = reply.is_positive
        if isinstance(event, Ehlo) and ok:
            session.state, session.helo, session.extended = (
                State.GREETED,
                event.domain,
                event.extended,
            )
            self.envelope = None  # RFC 5321 §4.1.4: EHLO implies RSET
        elif isinstance(event, Mail) and ok:
            session.state = State.MAIL
            self.envelope = Envelope(event.path, event.params)
        elif isinstance(event, Rcpt) and ok:
            assert self.envelope is not None
            session.state = State.RCPT
            self.envelope.recipients.append(Recipient(event.path, event.params))
        elif isinstance(event, Data) and reply.code == 354:
            assert self.envelope is not None
            session.state = State.DATA
            self._dot = DotReader(max_size=self.limits.max_message_size)
        elif isinstance(event, DataEnd) or (isinstance(event, ChunkEnd) and (event.last or not ok)):
            session.state = State.GREETED  # the transaction ends with the reply (RFC 3030 §2)
            self.envelope = None
            if ok:
                session.transactions += 1
        elif isinstance(event, ChunkEnd):
            session.state = State.BDAT
        elif isinstance(event, Rset) and session.state is not State.CONNECTED:
            session.state = State.GREETED  # RFC 5321 §4.1.1.5: HELO state kept
            self.envelope = None
        elif isinstance(event, Quit):
            session.state = State.CLOSED
        elif isinstance(event, StartTls) and reply.code == 220:
            # RFC 3207 §4.2: discard all knowledge from before TLS, and every byte the
            # client pipelined after STARTTLS (the command-injection defence).
            self.discard_input()
            self.session = Session(tls=True, errors=session.errors)
            self.envelope = None
        elif isinstance(event, (Auth, AuthResponse)):
            if reply.code == 334:
                session.state = State.AUTH
            else:
                session.state = State.GREETED
                session.authenticated = session.authenticated or reply.code == 235
        elif isinstance(event, Rejected) and session.state is State.AUTH:
            session.state = State.GREETED  # a malformed SASL response ends the exchange

    def ehlo_reply(self, hostname: str, client: str) -> Reply:
        """The EHLO reply listing this connection's extensions (no enhanced code,
        RFC 2034 §3)."""
        lines = [f"{hostname} greets {client}", "PIPELINING"]
        lines.append(f"SIZE {self.limits.max_message_size}")  # RFC 1870 §4
        lines += ["8BITMIME", "ENHANCEDSTATUSCODES"]  # RFC 6152, RFC 2034
        if self.offer.chunking:
            lines += ["CHUNKING", "BINARYMIME"]  # RFC 3030
        if self.offer.dsn:
            lines.append("DSN")  # RFC 3461
        if self.offer.smtputf8:
            lines.append("SMTPUTF8")  # RFC 6531
        if self.offer.starttls and not self.session.tls:
            lines.append("STARTTLS")  # RFC 3207
        if self.offer.auth:
            lines.append("AUTH " + " ".join(self.offer.auth))  # RFC 4954 §3
        if self.offer.requiretls and self.session.tls:
            lines.append("REQUIRETLS")  # RFC 8689 §2: only after TLS
        lines.append("HELP")
        return Reply.lines(250, None, lines)


def _b64(text: str, *, empty_marker: bool) -> bytes | None:
    if empty_marker and text == "=":
        return b""  # RFC 4954 §4: "=" is a zero-length initial response
    if not empty_marker and text == "":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
