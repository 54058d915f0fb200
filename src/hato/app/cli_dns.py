"""``hato dns records DOMAIN`` and ``hato dkim rotate DOMAIN``: what to publish in the DNS.

``dns records`` prints, in zone-file syntax, every record a domain served by this host needs:
MX (RFC 5321 §5.1), SPF (RFC 7208 §3: ``v=spf1 mx -all``), DKIM keys (RFC 6376 §3.6.1,
RFC 8463 §4), DMARC (RFC 7489 §6.3), MTA-STS (RFC 8461 §3.1 TXT, whose id is the hash of
the policy the HTTP service serves, see ``hato.web.mtasts``, and the policy host), TLS-RPT
(RFC 8460 §3), client autoconfiguration (Thunderbird ``autoconfig`` host) and SRV
records (RFC 6186 §3, RFC 8314 §5.1), and the PTR the host's addresses need (RFC 1912 §2.1,
checked by receivers through iprev, RFC 8601 §3).

Left out: pushing records to DNS providers' APIs; checking what is published (``hato
doctor``).

Security: prints public keys only; private DKIM keys stay in the data directory (0600).
"""

from __future__ import annotations

from pathlib import Path

import click

from hato.app.cli_base import config_option, domain_name
from hato.app.config import Config, load_config
from hato.app.wiring import mta_sts_policy
from hato.core.address import domain_to_ascii
from hato.outbound.dkim_sign import DkimKeys, KeyRecord
from hato.web.mtasts import sts_record


def dkim_keys(config: Config) -> DkimKeys:
    return DkimKeys(config.server.data_dir / "dkim")


def _txt(value: str) -> str:
    """A TXT value in zone-file syntax: quoted, split into 255-octet strings (RFC 1035 §3.3)."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join(f'"{p}"' for p in parts)


def records(config: Config, domain: str, *, ips: tuple[str, ...] = ()) -> list[str]:
    host = domain_to_ascii(config.server.hostname)
    name = domain_to_ascii(domain)
    keys: list[KeyRecord] = dkim_keys(config).records(domain)
    # the report addresses hato.delivery.report_intake parses ([reports] section)
    dmarc_rua = f"{config.reports.dmarc_address}@{name}"
    tls_rua = f"{config.reports.tls_address}@{name}"
    out = [
        f"; Records for {name} served by {host}",
        f"{name}. 3600 IN MX 10 {host}.",
        f"{name}. 3600 IN TXT {_txt('v=spf1 mx -all')}",
    ]
    out += [f"{k.name}. 3600 IN TXT {_txt(k.value)}" for k in keys]
    if not keys:
        out.append(f"; no DKIM keys for {name}: run 'hato dkim rotate {name}'")
    out += [
        f"_dmarc.{name}. 3600 IN TXT "
        + _txt(f"v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:{dmarc_rua}"),
        f"_mta-sts.{name}. 3600 IN TXT {_txt(sts_record(mta_sts_policy(config)))}",
        f"mta-sts.{name}. 3600 IN CNAME {host}.",
        f"_smtp._tls.{name}. 3600 IN TXT {_txt(f'v=TLSRPTv1; rua=mailto:{tls_rua}')}",
        f"autoconfig.{name}. 3600 IN CNAME {host}.",
        f"_submissions._tcp.{name}. 3600 IN SRV 0 1 465 {host}.",
        f"_submission._tcp.{name}. 3600 IN SRV 0 1 587 {host}.",
        f"_imaps._tcp.{name}. 3600 IN SRV 0 1 993 {host}.",
        f"_imap._tcp.{name}. 3600 IN SRV 0 1 143 {host}.",
        f"_pop3s._tcp.{name}. 3600 IN SRV 0 1 995 {host}.",
    ]
    out.append(
        f"; reports arrive at {dmarc_rua} and {tls_rua}: create them as accounts or aliases "
        f"(e.g. 'hato alias add {dmarc_rua} postmaster@{name}')"
    )
    if ips:
        for ip in ips:
            out.append(f"; at your hosting provider: PTR of {ip} -> {host}.")
    else:
        out.append(f"; at your hosting provider: PTR of each public address of {host} -> {host}.")
    return out


@click.group("dns")
def dns_group() -> None:
    """DNS records to publish for your domains."""


@dns_group.command("records")
@click.argument("domain")
@click.option("--ip", "ips", multiple=True, help="Public address of this host (for PTR).")
@config_option
def dns_records(domain: str, ips: tuple[str, ...], config_path: Path) -> None:
    """Print every record DOMAIN needs: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV, PTR."""
    config = load_config(config_path)
    click.echo("\n".join(records(config, domain_name(domain), ips=ips)))


@click.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys of local domains."""


@dkim_group.command("rotate")
@click.argument("domain")
@config_option
def dkim_rotate(domain: str, config_path: Path) -> None:
    """Create new RSA-2048 and Ed25519 keys for DOMAIN (new selectors, now active) and print
    their records; keep the old records published until mail signed with them is delivered."""
    config = load_config(config_path)
    for key in dkim_keys(config).generate(domain_name(domain)):
        click.echo(f"{key.name}. 3600 IN TXT {_txt(key.value)}")
