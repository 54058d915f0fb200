"""What every protocol server shares: listener descriptions and the Service lifecycle.

``hato serve`` (app.wiring) builds one Service per protocol and starts them all in one asyncio
process; on SIGTERM it calls ``stop`` so in-flight transactions finish within a timeout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class TlsMode(enum.Enum):
    NONE = "none"  # plaintext only (tests)
    STARTTLS = "starttls"  # plaintext, upgraded by STARTTLS/STLS (RFC 3207, RFC 2595)
    IMPLICIT = "implicit"  # TLS from the first byte (RFC 8314 §3)


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    tls: TlsMode


class Service(Protocol):
    """A running protocol server."""

    name: str

    async def start(self) -> None:
        """Binds every listener; raises ListenError naming the address when one is taken."""
        ...

    async def stop(self, *, timeout: float) -> None:
        """Stops accepting, lets in-flight sessions finish for up to ``timeout`` seconds,
        then closes the rest."""
        ...
