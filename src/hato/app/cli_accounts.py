"""``hato domain``, ``hato account`` and ``hato alias``: administration of the mail store.

Addresses are canonicalised as the store expects (``Address.key``, ``normalize_domain``);
alias targets in remote domains keep their local part as written, because only the remote
host may interpret its case (RFC 5321 §2.4).

Left out: app passwords, bulk import of accounts from a file.

Security: passwords come only from ``--password-stdin`` or a hidden prompt; the store keeps
argon2id hashes and SCRAM keys (``hato.policy.authn.make_credentials``), never the password.
"""

from __future__ import annotations

from pathlib import Path

import click

from hato.app.cli_base import (
    account_key,
    config_option,
    domain_name,
    human_size,
    parse_quota,
    password_stdin_option,
    read_password,
    run_with_store,
    table,
)
from hato.app.config import load_config
from hato.core.address import Address
from hato.core.errors import NotFound, UsageError
from hato.outbound.dkim_sign import DkimKeys
from hato.policy.authn import make_credentials
from hato.store.api import MailStore

# -- domains -------------------------------------------------------------------------------


@click.group()
def domain() -> None:
    """Manage the domains this server receives mail for."""


@domain.command("add")
@click.argument("name")
@config_option
def domain_add(name: str, config_path: Path) -> None:
    """Add a local domain NAME."""
    canonical = domain_name(name)

    async def work(store: MailStore) -> None:
        await store.add_domain(canonical)

    run_with_store(config_path, work)
    click.echo(f"added domain {canonical}")
    # DKIM keys for outgoing mail (RSA-2048 + Ed25519); their records: 'hato dns records'
    config = load_config(config_path)
    keys = DkimKeys(config.server.data_dir / "dkim")
    if not keys.has_keys(canonical):
        for record in keys.generate(canonical):
            click.echo(f"DKIM key {record.selector} ({record.algorithm}): publish {record.name}")


@domain.command("list")
@config_option
def domain_list(config_path: Path) -> None:
    """List local domains with their numbers of accounts and aliases."""

    async def work(store: MailStore) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = [("DOMAIN", "ACCOUNTS", "ALIASES")]
        for d in await store.list_domains():
            accounts = await store.list_accounts(d.name)
            aliases = await store.list_aliases(d.name)
            rows.append((d.name, str(len(accounts)), str(len(aliases))))
        return rows

    rows = run_with_store(config_path, work)
    if len(rows) > 1:
        click.echo(table(rows))


@domain.command("remove")
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Also remove its accounts (with their mail) and aliases."
)
@config_option
def domain_remove(name: str, force: bool, config_path: Path) -> None:
    """Remove the local domain NAME (refused while it has accounts or aliases, unless --force)."""
    canonical = domain_name(name)

    async def work(store: MailStore) -> None:
        if not await store.has_domain(canonical):
            raise NotFound(f"no domain {canonical}")
        accounts = await store.list_accounts(canonical)
        aliases = await store.list_aliases(canonical)
        if (accounts or aliases) and not force:
            parts = []
            if accounts:
                parts.append(f"{len(accounts)} account{'s' if len(accounts) != 1 else ''}")
            if aliases:
                parts.append(f"{len(aliases)} alias{'es' if len(aliases) != 1 else ''}")
            raise UsageError(f"domain {canonical} has {' and '.join(parts)}; use --force")
        await store.remove_domain(canonical, force=force)

    run_with_store(config_path, work)
    click.echo(f"removed domain {canonical}")


# -- accounts ------------------------------------------------------------------------------


async def _require_domain(store: MailStore, name: str) -> None:
    if not await store.has_domain(name):
        raise NotFound(f"no domain {name}; add it first with 'hato domain add {name}'")


async def _require_account(store: MailStore, key: str) -> None:
    if await store.get_account(key) is None:
        raise NotFound(f"no account {key}")


@click.group()
def account() -> None:
    """Manage mail accounts."""


@account.command("add")
@click.argument("address")
@password_stdin_option
@click.option("--quota", metavar="SIZE", help='Storage quota, e.g. "2G" (default: none).')
@config_option
def account_add(address: str, password_stdin: bool, quota: str | None, config_path: Path) -> None:
    """Add the account ADDRESS; its domain must exist."""
    key = account_key(address)
    quota_bytes = parse_quota(quota) if quota is not None else None
    password = read_password(from_stdin=password_stdin)
    credentials = make_credentials(password)

    async def work(store: MailStore) -> None:
        await _require_domain(store, key.rsplit("@", 1)[1])
        await store.add_account(key, credentials, quota_bytes=quota_bytes)

    run_with_store(config_path, work)
    click.echo(f"added account {key}")


@account.command("list")
@click.argument("domain_filter", metavar="[DOMAIN]", required=False)
@config_option
def account_list(domain_filter: str | None, config_path: Path) -> None:
    """List accounts (of DOMAIN only, when given): address, quota, usage, enabled."""
    wanted = domain_name(domain_filter) if domain_filter is not None else None

    async def work(store: MailStore) -> list[tuple[str, ...]]:
        if wanted is not None:
            await _require_domain(store, wanted)
        rows: list[tuple[str, ...]] = [("ADDRESS", "QUOTA", "USED", "MESSAGES", "ENABLED")]
        for a in await store.list_accounts(wanted):
            usage = await store.quota_usage(a.id)
            rows.append(
                (
                    a.address,
                    human_size(a.quota_bytes),
                    human_size(usage.used_bytes),
                    str(usage.message_count),
                    "yes" if a.enabled else "no",
                )
            )
        return rows

    rows = run_with_store(config_path, work)
    if len(rows) > 1:
        click.echo(table(rows))


@account.command("passwd")
@click.argument("address")
@password_stdin_option
@config_option
def account_passwd(address: str, password_stdin: bool, config_path: Path) -> None:
    """Set a new password for ADDRESS."""
    key = account_key(address)
    password = read_password(from_stdin=password_stdin)
    credentials = make_credentials(password)

    async def work(store: MailStore) -> None:
        await _require_account(store, key)
        await store.set_credentials(key, credentials)

    run_with_store(config_path, work)
    click.echo(f"password changed for {key}")


@account.command("quota")
@click.argument("address")
@click.argument("size", metavar="SIZE|none")
@config_option
def account_quota(address: str, size: str, config_path: Path) -> None:
    """Set the storage quota of ADDRESS, e.g. "2G", or "none" for unlimited."""
    key = account_key(address)
    quota_bytes = parse_quota(size)

    async def work(store: MailStore) -> None:
        await _require_account(store, key)
        await store.set_quota(key, quota_bytes)

    run_with_store(config_path, work)
    click.echo(f"quota of {key}: {human_size(quota_bytes)}")


def _set_enabled(address: str, config_path: Path, *, enabled: bool) -> None:
    key = account_key(address)

    async def work(store: MailStore) -> None:
        await _require_account(store, key)
        await store.set_enabled(key, enabled)

    run_with_store(config_path, work)
    click.echo(f"{'enabled' if enabled else 'disabled'} account {key}")


@account.command("disable")
@click.argument("address")
@config_option
def account_disable(address: str, config_path: Path) -> None:
    """Refuse logins to ADDRESS and mail for it, keeping its mail."""
    _set_enabled(address, config_path, enabled=False)


@account.command("enable")
@click.argument("address")
@config_option
def account_enable(address: str, config_path: Path) -> None:
    """Allow logins to ADDRESS and mail for it again."""
    _set_enabled(address, config_path, enabled=True)


@account.command("remove")
@click.argument("address")
@config_option
def account_remove(address: str, config_path: Path) -> None:
    """Remove the account ADDRESS and all of its mail."""
    key = account_key(address)

    async def work(store: MailStore) -> None:
        await _require_account(store, key)
        await store.remove_account(key)

    run_with_store(config_path, work)
    click.echo(f"removed account {key}")


# -- aliases -------------------------------------------------------------------------------


def _alias_source(text: str) -> str:
    """``@domain`` (catch-all) or an address, canonical."""
    text = text.strip()
    if text.startswith("@"):
        return "@" + domain_name(text[1:])
    return account_key(text)


@click.group()
def alias() -> None:
    """Manage aliases: addresses that forward to accounts or remote addresses."""


@alias.command("add")
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@config_option
def alias_add(source: str, targets: tuple[str, ...], config_path: Path) -> None:
    """Add the alias SOURCE (an address, or @domain for a catch-all) for TARGETS."""
    src = _alias_source(source)
    parsed = [Address.parse(t.strip()) for t in targets]

    async def work(store: MailStore) -> list[str]:
        await _require_domain(store, src.rsplit("@", 1)[1])
        resolved: list[str] = []
        for target in parsed:
            if await store.has_domain(target.domain):
                key = target.key
                if await store.get_account(key) is None and await store.get_alias(key) is None:
                    raise NotFound(f"alias target {key} is neither an account nor an alias")
                resolved.append(key)
            else:
                # RFC 5321 §2.4: the local part is case-sensitive for the remote host.
                resolved.append(str(target))
        await store.add_alias(src, resolved)
        return resolved

    resolved = run_with_store(config_path, work)
    click.echo(f"added alias {src} -> {', '.join(resolved)}")


@alias.command("list")
@click.argument("domain_filter", metavar="[DOMAIN]", required=False)
@config_option
def alias_list(domain_filter: str | None, config_path: Path) -> None:
    """List aliases (of DOMAIN only, when given)."""
    wanted = domain_name(domain_filter) if domain_filter is not None else None

    async def work(store: MailStore) -> list[str]:
        if wanted is not None:
            await _require_domain(store, wanted)
        return [f"{a.source} -> {', '.join(a.targets)}" for a in await store.list_aliases(wanted)]

    for line in run_with_store(config_path, work):
        click.echo(line)


@alias.command("remove")
@click.argument("source")
@config_option
def alias_remove(source: str, config_path: Path) -> None:
    """Remove the alias SOURCE."""
    src = _alias_source(source)

    async def work(store: MailStore) -> None:
        if await store.get_alias(src) is None:
            raise NotFound(f"no alias {src}")
        await store.remove_alias(src)

    run_with_store(config_path, work)
    click.echo(f"removed alias {src}")
