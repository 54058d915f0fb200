"""The ``[outbound]`` configuration section: the queue runner, routing, TLS policy, DKIM.

Defaults follow RFC 5321 §4.5.4.1 (retry intervals of at least 30 minutes are suggested; we
start at 5 minutes and double up to 4 hours, and give up after 5 days, within the "at least
4-5 days" the RFC asks for) and RFC 3461 §4.1 (a delay notice after 4 hours).

Left out: per-domain TLS policy overrides, rate limits (see the SMTP section).

Security: the smarthost password is never written in the configuration file; it is read from
``smarthost_password_file`` (keep that file 0600).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hato.app.confkinds import Count, Duration, FilePath, Flag, Kind, fail, setting, show
from hato.core.address import normalize_domain
from hato.core.errors import AddressError
from hato.outbound.queue import OutboundSettings
from hato.outbound.routing import Relay


@dataclass(frozen=True)
class HostPort(Kind):
    """``"host"``, ``"host:port"`` or ``"[v6]:port"``; "" for none."""

    label = "host:port"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if value == "":
            return ""
        if not isinstance(value, str):
            raise fail(path, 'a "host:port" like "smtp.example.com:587"', got=value)
        try:
            Relay.parse(value, default_port=587)
        except ValueError:
            raise fail(path, 'a "host:port" like "smtp.example.com:587"', got=value) from None
        return value


@dataclass(frozen=True)
class Text(Kind):
    label = "string"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, str) or any(ord(c) < 32 for c in value):
            raise fail(path, "a one-line string", got=value)
        return value


@dataclass(frozen=True)
class Transports(Kind):
    """A table ``domain = "host:port"``."""

    label = "table of domain = host:port"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, dict):
            raise fail(path, 'a table like { "example.net" = "10.0.0.5:25" }', got=value)
        out: list[tuple[str, str]] = []
        for domain, target in value.items():
            try:
                name = normalize_domain(domain)
            except AddressError:
                raise fail(f"{path}.{domain}", "a domain name key", got=domain) from None
            out.append((name, HostPort().parse(target, f"{path}.{domain}", base_dir=base_dir)))
        return tuple(out)

    def render(self, value: Any) -> str:
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{show(k)} = {show(v)}" for k, v in value) + " }"


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """Outbound delivery: the queue, MX routing, TLS policy (MTA-STS, DANE) and DKIM."""

    port: int = setting(
        25,
        Count(minimum=1),
        doc="TCP port of remote MX hosts (RFC 5321 §4.5.4: 25). Only tests change it.",
    )
    smarthost: str = setting(
        "",
        HostPort(),
        doc='Relay all outgoing mail through this host ("host:port"; 465 means implicit TLS, '
        'otherwise STARTTLS), e.g. your provider\'s submission server. "" delivers directly '
        "to each domain's MX hosts.",
    )
    smarthost_username: str = setting(
        "", Text(), doc='User name for AUTH at the smarthost (RFC 4954); "" for no AUTH.'
    )
    smarthost_password_file: Path | None = setting(  # noqa: RUF009
        None, FilePath(), doc="File holding the smarthost password (one line; keep it 0600)."
    )
    transports: tuple[tuple[str, str], ...] = setting(
        (),
        Transports(),
        doc="Per-domain next hops overriding MX lookup, e.g. "
        '{ "partner.example" = "10.1.2.3:25" }.',
    )
    retry_min: float = setting(
        300.0, Duration(minimum=1.0), doc="First retry delay after a temporary failure; doubles."
    )
    retry_max: float = setting(
        14400.0, Duration(minimum=1.0), doc="Longest delay between two attempts."
    )
    expire: float = setting(
        5 * 86400.0,
        Duration(minimum=3600.0),
        doc="Give up and bounce after this long (RFC 5321 §4.5.4.1: at least 4-5 days).",
    )
    delay_warning: float = setting(
        4 * 3600.0,
        Duration(minimum=0.0),
        doc="Send a delay notice (RFC 3464 Action: delayed) once a message has waited this "
        "long, where the recipient's NOTIFY allows it (RFC 3461 §4.1).",
    )
    max_connections: int = setting(50, Count(minimum=1), doc="Outgoing connections in total.")
    per_destination: int = setting(
        4, Count(minimum=1), doc="Outgoing connections to one destination domain at once."
    )
    mta_sts: bool = setting(
        True, Flag(), doc="Honour MTA-STS policies of recipient domains (RFC 8461)."
    )
    dane: bool = setting(
        True,
        Flag(),
        doc="Honour DANE TLSA records when the resolver validates DNSSEC (RFC 7672).",
    )
    ca_file: Path | None = setting(  # noqa: RUF009
        None,
        FilePath(),
        doc="Trust anchors (PEM) for verifying MX certificates under MTA-STS and REQUIRETLS, "
        "and the certificate of a smarthost or transport that uses AUTH; the system store "
        "when not set.",
    )
    dkim: bool = setting(
        True,
        Flag(),
        doc="Sign mail from local domains with their DKIM keys (RSA-2048 and Ed25519, created "
        "by 'hato domain add').",
    )


def outbound_settings(
    hostname: str, config: OutboundConfig, *, password: str | None = None
) -> OutboundSettings:
    """The queue runner's settings from the ``[outbound]`` section (``password``: the
    smarthost password read from ``smarthost_password_file``)."""
    smarthost = None
    if config.smarthost:
        relay = Relay.parse(config.smarthost, default_port=587)
        auth = (config.smarthost_username, password or "") if config.smarthost_username else None
        smarthost = Relay(relay.host, relay.port, implicit_tls=relay.implicit_tls, auth=auth)
    return OutboundSettings(
        hostname=hostname,
        port=config.port,
        transports={d: Relay.parse(t) for d, t in config.transports},
        smarthost=smarthost,
        retry_base=config.retry_min,
        retry_max=config.retry_max,
        expire_after=config.expire,
        delay_warning=config.delay_warning,
        max_connections=config.max_connections,
        per_destination=config.per_destination,
        ca_file=config.ca_file,
        mta_sts=config.mta_sts,
        dane=config.dane,
    )


def read_smarthost_password(config: OutboundConfig) -> str | None:
    """The first line of ``smarthost_password_file`` (None when not configured)."""
    if config.smarthost_password_file is None:
        return None
    text = config.smarthost_password_file.read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""
