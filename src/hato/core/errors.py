"""One error tree for Hato.

Every error carries ``temporary`` (may succeed on retry) and a generic ``reply`` text that is
safe to show a peer; details stay in the exception message for the log (CONVENTIONS.md §7).
Each server maps these to protocol replies in exactly one function.
"""

from __future__ import annotations


class HatoError(Exception):
    """Root of every error Hato raises on purpose."""

    temporary: bool = False
    reply: str = "internal error"

    def __init__(self, detail: str = "", *, reply: str | None = None) -> None:
        super().__init__(detail or self.reply)
        self.detail = detail or self.reply
        if reply is not None:
            self.reply = reply


class ConfigError(HatoError):
    """The configuration file is missing, unreadable or invalid (detail names the key path)."""

    reply = "configuration error"


class UsageError(HatoError):
    """A CLI or API caller passed bad input; the detail is one line naming the problem."""

    reply = "bad input"


class AddressError(UsageError):
    """An e-mail address or domain is syntactically invalid."""

    reply = "invalid address"


class StoreError(HatoError):
    """The mail store failed or refused an operation."""

    reply = "storage error"


class TemporaryStoreError(StoreError):
    """The store failed in a way that may succeed on retry (disk full, locked database)."""

    temporary = True
    reply = "temporary storage failure"


class NotFound(StoreError):
    """A domain, account, alias, mailbox or message does not exist."""

    reply = "not found"


class AlreadyExists(StoreError):
    """A domain, account, alias or mailbox already exists."""

    reply = "already exists"


class Conflict(StoreError):
    """The operation conflicts with existing data (e.g. removing a domain with accounts)."""

    reply = "conflict"


class QuotaExceeded(StoreError):
    """Appending would take an account over its quota."""

    temporary = True
    reply = "mailbox full"


class ScriptQuotaExceeded(QuotaExceeded):
    """Storing a Sieve script would exceed a script quota (RFC 5804 §1.5). ``limit`` names
    which: "count" (scripts per account), "size" (one script) or "total" (all scripts)."""

    temporary = False
    reply = "script quota exceeded"

    def __init__(self, detail: str = "", *, limit: str, reply: str | None = None) -> None:
        super().__init__(detail, reply=reply)
        self.limit = limit


class SchemaVersionError(StoreError):
    """The database was written by a newer Hato than this one."""

    reply = "database from a newer version"


class AuthError(HatoError):
    """Authentication failed (wrong credentials, disabled account, locked out)."""

    reply = "authentication failed"


class ProtocolError(HatoError):
    """A peer violated the protocol; the codec turns this into a reply."""

    reply = "protocol error"


class ListenError(HatoError):
    """A listener could not be started (port taken, address unavailable, bad TLS material)."""

    reply = "cannot listen"


class SieveError(UsageError):
    """A Sieve script failed to compile, or failed at run time; ``errors`` lists
    ``(line, message)`` pairs in the order found (line 0 when no line applies)."""

    reply = "sieve script error"

    def __init__(self, errors: list[tuple[int, str]] | tuple[tuple[int, str], ...]) -> None:
        self.errors: tuple[tuple[int, str], ...] = tuple(errors)
        super().__init__("; ".join(f"line {ln}: {msg}" if ln else msg for ln, msg in self.errors))
