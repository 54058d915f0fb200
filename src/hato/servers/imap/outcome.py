"""How an IMAP command handler ends: an Outcome for the tagged OK, or CommandFailed for NO/BAD.

Implements the status responses of RFC 9051 §7.1 as values: the session renders them in one
place (``Session._finish``), handlers never write tagged lines themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hato.core.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class Outcome:
    """A successful command: ``tag OK [code] text``."""

    text: str = "done"
    code: str | None = None
    after: Callable[[], Awaitable[None]] | None = None  # run once the OK is sent (STARTTLS)


class CommandFailed(ProtocolError):
    """A refused command: ``tag NO|BAD [code] text`` (RFC 9051 §7.1.2, §7.1.3)."""

    reply = "command failed"

    def __init__(self, text: str, *, code: str | None = None, bad: bool = False) -> None:
        super().__init__(text, reply=text)
        self.code = code
        self.status = "BAD" if bad else "NO"
