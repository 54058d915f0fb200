"""Settings of the IMAP server (the app layer maps the ``[imap]`` config section onto them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hato.core.errors import ConfigError
from hato.servers.base import Listener

MIN_IDLE_TIMEOUT = 30 * 60.0  # RFC 9051 §5.4: the autologout timer is at least 30 minutes


@dataclass(frozen=True, slots=True)
class ImapSettings:
    hostname: str
    listeners: tuple[Listener, ...] = ()
    cert_file: Path | None = None
    key_file: Path | None = None
    idle_timeout: float = MIN_IDLE_TIMEOUT
    max_line: int = 64 * 1024  # bytes per command line (literals not included)
    max_literal: int = 64 * 1024  # literals of commands other than APPEND
    append_limit: int = 50 * 1024 * 1024  # RFC 7889 APPENDLIMIT
    max_discard: int = 1024 * 1024  # a refused non-synchronizing literal up to this is skipped
    max_connections: int = 1000
    fetch_batch: int = 200  # messages read from the store per round of a large FETCH
    idle_poll: float = 30.0  # seconds between store waits inside IDLE (wake-ups are immediate)

    def __post_init__(self) -> None:
        if self.idle_timeout < MIN_IDLE_TIMEOUT:
            raise ConfigError(
                f"imap.idle_timeout: {self.idle_timeout:g} s is below the 30 minutes "
                "RFC 9051 §5.4 requires"
            )
        for name in ("max_line", "max_literal", "append_limit", "max_connections"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"imap.{name}: must be positive")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("imap: cert_file and key_file go together")

    @property
    def tls_available(self) -> bool:
        return self.cert_file is not None
