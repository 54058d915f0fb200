"""The ``[reports]`` configuration section: the DMARC and TLS reports we send and receive.

Outgoing: the daily DMARC aggregate reports (RFC 7489 §7.2) and TLS reports (RFC 8460 §4)
of ``hato.outbound.reports``, sent from ``from_address``. Incoming: the local parts that
receive reports in every local domain, which ``hato dns records`` publishes as ``rua``
(RFC 7489 §6.3, RFC 8460 §3) and ``hato.delivery.report_intake`` parses on arrival.

Left out: per-domain report addresses, the random send delay of RFC 8460 §4.1.

Security: report addresses are plain local parts and an address (validated); no secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hato.app.config_outbound import Text
from hato.app.confkinds import Duration, Flag, Kind, fail, setting
from hato.core.address import Address
from hato.core.clock import Clock
from hato.core.dns import Resolver
from hato.core.errors import AddressError
from hato.delivery.report_intake import IntakeStore, ReportIntake
from hato.mailauth.orgdomain import registrable_domain
from hato.outbound.queue import QueueRunner, verify_context
from hato.outbound.reports import ReportingStore, ReportService, ReportSettings
from hato.outbound.tlsrpt_sessions import TlsSessionLog
from hato.store.api import MailStore

# RFC 5322 §3.2.3 dot-atom-text
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
DEFAULT_SENDER = "noreply-dmarc-support"


@dataclass(frozen=True)
class LocalPart(Kind):
    """The local part of an address (RFC 5322 dot-atom-text)."""

    label = "local part"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, str) or not _LOCAL_PART.fullmatch(value) or len(value) > 64:
            raise fail(path, 'a local part like "dmarc-reports"', got=value)
        return value.lower()


@dataclass(frozen=True)
class MailAddress(Kind):
    """An address, or "" for the default."""

    label = "address"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if value == "":
            return ""
        if not isinstance(value, str):
            raise fail(path, 'an address like "reports@example.com"', got=value)
        try:
            return str(Address.parse(value))
        except AddressError:
            raise fail(path, 'an address like "reports@example.com"', got=value) from None


@dataclass(frozen=True, slots=True)
class ReportsConfig:
    """DMARC aggregate and TLS reports: the ones we send every day and the ones we receive."""

    enabled: bool = setting(
        True,
        Flag(),
        doc="Send a DMARC aggregate report (RFC 7489 §7.2) to every domain that asks for one "
        "and a TLS report (RFC 8460) to every recipient domain publishing _smtp._tls, once a "
        "day at 00:05 UTC, about the day before.",
    )
    from_address: str = setting(
        "",
        MailAddress(),
        doc='Sender of our reports; "" means noreply-dmarc-support@ the domain of '
        "server.hostname. Use an address of a local domain with DKIM keys: reports must be "
        "DKIM-signed (RFC 8460 §3, RFC 7489 §7.2.1.1).",
    )
    org_name: str = setting(
        "", Text(), doc='Organization named in our reports; "" means server.hostname.'
    )
    dmarc_address: str = setting(
        "dmarc-reports",
        LocalPart(),
        doc="Local part, in each local domain, that receives DMARC aggregate reports: "
        "'hato dns records' publishes it as rua=mailto: and arriving reports are stored "
        "(create it as an account or alias).",
    )
    tls_address: str = setting(
        "tls-reports",
        LocalPart(),
        doc="Local part, in each local domain, that receives TLS reports (RFC 8460 §3 rua); "
        "published and parsed like dmarc_address.",
    )
    https: bool = setting(
        True, Flag(), doc="Also POST TLS reports to https: report URIs (RFC 8460 §5.4)."
    )
    keep: float = setting(
        7 * 86400.0,
        Duration(),
        doc="How long DMARC evaluations and TLS session counts are kept once their day has "
        "been reported.",
    )


def report_settings(hostname: str, config: ReportsConfig) -> ReportSettings:
    """The reporting service's settings from ``[reports]`` and ``server.hostname``."""
    domain = registrable_domain(hostname) or hostname
    return ReportSettings(
        hostname=hostname,
        from_address=config.from_address or f"{DEFAULT_SENDER}@{domain}",
        org_name=config.org_name or hostname,
        https=config.https,
        keep=config.keep,
    )


def report_service(
    hostname: str,
    config: ReportsConfig,
    *,
    resolver: Resolver,
    store: MailStore,
    runner: QueueRunner,
    clock: Clock,
) -> ReportService | None:
    """The daily reporting service, with the runner recording TLS sessions for it; None when
    reports are disabled or the store keeps no reporting data."""
    if not config.enabled or not hasattr(store, "queue_report"):
        return None
    backend = cast(ReportingStore, store)  # the SQLite store implements every part
    runner.tls_sink = TlsSessionLog(backend, clock=clock)
    return ReportService(
        report_settings(hostname, config),
        store=backend,
        resolver=resolver,
        clock=clock,
        https_context=verify_context(runner.settings.ca_file),
        wake=runner.wake,
    )


def report_intake(
    config: ReportsConfig, *, resolver: Resolver, store: MailStore
) -> ReportIntake | None:
    """Parses mail for the report addresses (``hato.delivery.report_intake``); the SMTP
    session calls its ``after_delivery`` for every committed message); None when reports
    are disabled or the store keeps no reporting data."""
    if not config.enabled or not hasattr(store, "queue_report"):
        return None
    return ReportIntake(
        cast(IntakeStore, store),
        resolver,
        local_parts=(config.dmarc_address, config.tls_address),
    )
