"""Settings of the HTTP service, independent of the TOML schema (``hato.app.wiring`` maps them).

Left out: webmail, admin and JSON API settings (not built yet).

Security: ``metrics_token`` is a secret read by the app layer from a file; it never reaches a
log line (``repr=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hato.core.errors import ConfigError
from hato.servers.base import Listener
from hato.web.autoconfig import MailPorts
from hato.web.mtasts import MtaStsPolicy


@dataclass(frozen=True, slots=True)
class WebSettings:
    hostname: str  # this host's name: where clients connect, the MX named by MTA-STS
    listeners: tuple[Listener, ...]  # TlsMode.NONE: plaintext HTTP; TlsMode.IMPLICIT: HTTPS
    mta_sts: MtaStsPolicy
    ports: MailPorts = field(default_factory=MailPorts)
    metrics_token: str | None = field(default=None, repr=False)
    max_body: int = 64 * 1024  # request bodies (autodiscover POST) larger than this get 413
    # Request line + header fields still incomplete past this size get 400 (h11's limit: a
    # header block that arrives within one socket read may exceed it by up to that read).
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1000  # concurrent connections; more get 503
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    hsts_max_age: int = 31_536_000  # RFC 6797 §6.1.1: Strict-Transport-Security max-age

    def __post_init__(self) -> None:
        if self.max_body < 1 or self.max_header_bytes < 1024 or self.max_connections < 1:
            raise ConfigError("http: size and connection limits must be positive")
        if self.metrics_token is not None and not self.metrics_token:
            raise ConfigError("http.metrics_token_file: the token is empty")
