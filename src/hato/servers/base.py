"""What every protocol server shares: listener descriptions and the Service lifecycle.

``hato serve`` (app.wiring) builds one Service per protocol and starts them all in one asyncio
process; on SIGTERM it calls ``stop`` so in-flight transactions finish within a timeout.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable
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


async def close_listeners(servers: Iterable[asyncio.Server]) -> None:
    """Close listening servers without dropping a connection accepted just before.

    CPython gh-109564: a socket accepted in the loop iteration before ``Server.close()`` gets
    its transport one iteration later, fails ``Server._attach``'s assertion there and is
    dropped unclosed. So stop accepting first, let the accepts already made attach (their
    task runs before our next turn, and the service then turns them away as it is stopping),
    and only then close."""
    servers = list(servers)
    loop = asyncio.get_running_loop()
    for server in servers:
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)
    for server in servers:
        server.close()
