"""The ``[inbound]`` configuration section: sender authentication of mail from the internet.

Configures ``hato.policy.inbound`` on the MX listeners: SPF (RFC 7208), DKIM (RFC 6376), ARC
(RFC 8617 §7.2.1 trusted sealers), DMARC (RFC 7489: p=reject refused with 550 5.7.1,
p=quarantine delivered to Junk, DNS trouble answered 451 so the sender retries, §6.6.3) and
the Authentication-Results field (RFC 8601, ``authserv_id``), plus SRS for forwarded mail.
The resolver is the one of ``[dns]``.

Left out: per-domain overrides of the DMARC decision beyond ``local_overrides``.

Security: ``verify = false`` accepts forged senders (a test or demo set-up without DNS);
``local_overrides`` exempts whole networks or domains from DMARC: keep it short.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hato.app.confkinds import Duration, Flag, Kind, fail, setting, show
from hato.core.address import normalize_domain
from hato.core.clock import Clock
from hato.core.dns import Resolver
from hato.core.errors import AddressError, ConfigError
from hato.delivery.local import ReceivedMessage
from hato.delivery.sieve import DEFAULT_SETTINGS, SieveSettings
from hato.outbound.srs import Srs
from hato.policy.inbound import InboundSettings, InboundVerifier
from hato.policy.ratelimit import SubmissionLimiter, SubmissionLimits
from hato.servers.smtp_hooks import SessionHooks
from hato.store.api import ReportStore

SPOOL_DIR = "spool"  # under data_dir: messages waiting for their verdict (anonymous files)


@dataclass(frozen=True)
class Domains(Kind):
    """A list of domain names."""

    label = "list of domain names"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, list):
            raise fail(path, 'a list of domain names like ["example.net"]', got=value)
        out: list[str] = []
        for i, item in enumerate(value):
            try:
                if not isinstance(item, str):
                    raise AddressError(str(item))
                out.append(normalize_domain(item))
            except AddressError:
                raise fail(f"{path}[{i}]", "a domain name", got=item) from None
        return tuple(out)

    def render(self, value: Any) -> str:
        return show(list(value))


@dataclass(frozen=True)
class DomainsOrNetworks(Kind):
    """A list of domain names and IP networks (``192.0.2.0/24``, ``2001:db8::/32``)."""

    label = "list of domains or networks"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, list):
            raise fail(path, 'a list like ["lists.example.org", "192.0.2.0/24"]', got=value)
        out: list[str] = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if not isinstance(item, str):
                raise fail(where, "a domain name or an IP network", got=item)
            if "/" in item or ":" in item or item.replace(".", "").isdigit():
                try:
                    out.append(str(ipaddress.ip_network(item, strict=False)))
                except ValueError:
                    raise fail(where, "an IP network like 192.0.2.0/24", got=item) from None
                continue
            try:
                out.append(normalize_domain(item))
            except AddressError:
                raise fail(where, "a domain name or an IP network", got=item) from None
        return tuple(out)

    def render(self, value: Any) -> str:
        return show(list(value))


@dataclass(frozen=True)
class ServiceId(Kind):
    """The authserv-id: "" (the server's host name) or a domain name."""

    label = "domain name"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if value == "":
            return ""
        try:
            if not isinstance(value, str):
                raise AddressError(str(value))
            return normalize_domain(value)
        except AddressError:
            raise fail(path, 'a domain name, or "" for the host name', got=value) from None


@dataclass(frozen=True, slots=True)
class InboundConfig:
    """Checks on mail from the internet (the MX listeners): SPF, DKIM, ARC, DMARC; SRS."""

    verify: bool = setting(
        True,
        Flag(),
        doc="Verify SPF, DKIM, ARC and DMARC of every message received on the MX listeners "
        "and act on the sender domain's DMARC policy: p=reject is refused (550 5.7.1), "
        "p=quarantine goes to the recipient's Junk mailbox, a DNS failure is answered 451 so "
        "the sender retries. The result is recorded in an Authentication-Results header "
        "field (RFC 8601). Needs working DNS (see [dns]); the demo turns it off.",
        demo=False,
    )
    authserv_id: str = setting(
        "",
        ServiceId(),
        doc='The authentication service identifier in Authentication-Results fields; "" '
        "uses server.hostname. Incoming fields claiming it are removed (RFC 8601 §5).",
    )
    trusted_arc_sealers: tuple[str, ...] = setting(
        (),
        Domains(),
        doc="Domains whose ARC seals are trusted to vouch for mail they forwarded (mailing "
        "lists, forwarders): a DMARC failure is then overridden (RFC 8617 §7.2.1).",
    )
    local_overrides: tuple[str, ...] = setting(
        (),
        DomainsOrNetworks(),
        doc="Known forwarders and mailing lists exempt from DMARC rejection and quarantine "
        "(RFC 7489 Appendix C trusted_forwarder): IP networks of the client, or domains it "
        "authenticates as (host name confirmed by iprev, SPF-pass domain, DKIM d=).",
    )
    timeout: float = setting(
        15.0, Duration(minimum=0.1), doc="Time limit of each check (a timeout is a temperror)."
    )
    srs: bool = setting(
        True,
        Flag(),
        doc="Rewrite the envelope sender of mail forwarded from remote senders (aliases with "
        "remote targets, Sieve redirect) with SRS, so SPF passes at the destination, and "
        "route bounces to those SRS addresses back to the original sender. The secret is "
        "kept in <data_dir>/srs.key.",
    )


def session_hooks(
    config: InboundConfig,
    *,
    hostname: str,
    data_dir: Path,
    resolver: Resolver,
    limits: SubmissionLimits,
    clock: Clock,
    reports: ReportStore | None = None,
    signer: Callable[[bytes, str], bytes] | None = None,
    after_delivery: Callable[[ReceivedMessage], Awaitable[object]] | None = None,
    sieve: SieveSettings = DEFAULT_SETTINGS,
) -> SessionHooks:
    """The SMTP sessions' hooks this section (and the [smtp] limits) describe."""
    verifier = None
    spool = None
    if config.verify:
        settings = InboundSettings(
            authserv_id=config.authserv_id or hostname,
            trusted_arc_sealers=config.trusted_arc_sealers,
            local_overrides=config.local_overrides,
            timeout=config.timeout,
            receiver=hostname,
        )
        verifier = InboundVerifier(resolver, settings, clock=clock, reports=reports)
        spool = data_dir / SPOOL_DIR
        try:
            spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"server.data_dir: cannot create {spool}: {exc.strerror}") from None
    return SessionHooks(
        verifier=verifier,
        spool_dir=spool,
        limiter=SubmissionLimiter(limits) if limits.active else None,
        srs=Srs.from_data_dir(data_dir) if config.srs else None,
        signer=signer,
        after_delivery=after_delivery,
        sieve=sieve,
    )
