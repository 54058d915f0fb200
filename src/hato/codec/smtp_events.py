"""SMTP server events and state types, shared by the codec and the server.

The events of hato.codec.smtp (one per command, plus body chunks and codec refusals), the
connection state (``Session``, reset by STARTTLS per RFC 3207 §4.2) and the transaction state
(``Envelope``: RFC 5321 §3.3 reverse-path, forward-paths and their ESMTP parameters), what the
connection advertises (``Offer``) and its limits (``Limits``, RFC 5321 §4.5.3.1).

Leaves out: behaviour; this module only defines values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hato.codec.smtp_data import DataProblem
from hato.codec.smtp_params import MailParams, ParamOffer, Path, RcptParams
from hato.core.errors import UsageError
from hato.core.reply import Reply

MIN_RECIPIENTS = 100  # RFC 5321 §4.5.3.1.8: at least 100 recipients must be buffered


class State(enum.Enum):
    CONNECTED = "connected"  # before HELO/EHLO
    GREETED = "greeted"  # HELO/EHLO done, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    BDAT = "bdat"  # between BDAT chunks (RFC 3030 §2)
    DATA = "data"  # reading a DATA body
    CHUNK = "chunk"  # reading the octets of one BDAT chunk
    AUTH = "auth"  # reading SASL responses (RFC 4954 §4)
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Offer:
    """What this connection advertises in EHLO (changes after STARTTLS)."""

    starttls: bool = False
    auth: tuple[str, ...] = ()
    requiretls: bool = False  # RFC 8689 §2: only after TLS
    smtputf8: bool = True
    chunking: bool = True
    dsn: bool = True

    def params(self) -> ParamOffer:
        return ParamOffer(
            binarymime=self.chunking,
            smtputf8=self.smtputf8,
            dsn=self.dsn,
            requiretls=self.requiretls,
        )


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int = 64 * 1024 * 1024
    max_recipients: int = 1000
    max_errors: int = 5  # the 5th error reply becomes 421 and the session closes
    max_transactions: int = 100  # messages per session

    def __post_init__(self) -> None:
        if self.max_recipients < MIN_RECIPIENTS:  # RFC 5321 §4.5.3.1.8
            raise UsageError(f"max_recipients must be at least {MIN_RECIPIENTS}")


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ehlo:
    domain: str
    extended: bool  # EHLO (True) or HELO (False)


@dataclass(frozen=True, slots=True)
class Mail:
    path: Path
    params: MailParams


@dataclass(frozen=True, slots=True)
class Rcpt:
    path: Path
    params: RcptParams


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Bdat:
    """A BDAT chunk begins; its octets follow as DataChunk events, then ChunkEnd."""

    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message octets (DATA: unstuffed). Needs no reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    size: int
    problem: DataProblem | None


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    size: int  # message octets so far
    last: bool
    problem: DataProblem | None


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Expn:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    topic: str


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    mechanism: str
    initial: bytes | None  # decoded initial response (RFC 4954 §4: "=" is empty)


@dataclass(frozen=True, slots=True)
class AuthResponse:
    data: bytes | None  # None: the client cancelled with "*"


@dataclass(frozen=True, slots=True)
class Rejected:
    """The codec refused a command on its own (syntax, order, limits)."""

    reply: Reply
    reason: str


Event = (
    Ehlo
    | Mail
    | Rcpt
    | Data
    | Bdat
    | DataChunk
    | DataEnd
    | ChunkEnd
    | Rset
    | Noop
    | Quit
    | Vrfy
    | Expn
    | Help
    | StartTls
    | Auth
    | AuthResponse
    | Rejected
)


# -- connection and transaction state ----------------------------------------------------


@dataclass(slots=True)
class Recipient:
    path: Path
    params: RcptParams


@dataclass(slots=True)
class Envelope:
    """One mail transaction: reverse-path, its parameters, the accepted recipients."""

    sender: Path
    params: MailParams
    recipients: list[Recipient] = field(default_factory=list)
    size: int = 0  # message octets received (BDAT: across chunks)


@dataclass(slots=True)
class Session:
    """What the connection knows about its peer (reset by STARTTLS, RFC 3207 §4.2)."""

    state: State = State.CONNECTED
    helo: str | None = None
    extended: bool = False
    tls: bool = False
    authenticated: bool = False
    errors: int = 0
    transactions: int = 0
