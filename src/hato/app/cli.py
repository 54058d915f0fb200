"""The ``hato`` command line: serve, configuration, quickstart, administration, export/import.

Every command takes ``--config PATH`` (default ``$HATO_CONFIG``, then ``./hato.toml``) and
``--help``. Bad input ends with a non-zero exit code and one ``error: ...`` line on stderr,
never a traceback (``hato.app.cli_base.HatoGroup``).

Left out: daemonising (run under systemd or a container instead).

Security: passwords are never accepted as arguments (``--password-stdin`` or a hidden
prompt); ``hato serve`` checks the TLS files are readable before anything listens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from hato.app import confdoc
from hato.app.cli_accounts import account, alias, domain
from hato.app.cli_base import (
    HatoGroup,
    config_option,
    open_mail_store,
    password_stdin_option,
    read_password,
)
from hato.app.cli_dns import dkim_group, dns_group
from hato.app.cli_queue import queue
from hato.app.cli_reports import report
from hato.app.cli_sieve import add_sieve_commands
from hato.app.cli_transfer import export_command, import_command
from hato.app.config import Config, load_config
from hato.app.quickstart import create_demo, instructions
from hato.app.runtime import check_tls_files, run_services
from hato.core import log


@click.group(cls=HatoGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Hato: a complete mail server for your own domains."""


cli.add_command(domain)
cli.add_command(account)
cli.add_command(alias)
cli.add_command(export_command)
cli.add_command(import_command)
add_sieve_commands(cli, account)
cli.add_command(report)
cli.add_command(queue)
cli.add_command(dns_group)
cli.add_command(dkim_group)


# -- serve ---------------------------------------------------------------------------------


async def _serve(config: Config) -> None:
    from hato.app.wiring import build_services

    store = await open_mail_store(config)
    try:
        services = build_services(config, store)
        await run_services(services, shutdown_timeout=config.server.shutdown_timeout)
    finally:
        await store.close()


@cli.command()
@config_option
def serve(config_path: Path) -> None:
    """Run every configured service until SIGTERM or SIGINT."""
    config = load_config(config_path)
    log.configure(config.server.log_level)
    check_tls_files(config.tls)
    log.event("serve.starting", config=str(config_path), hostname=config.server.hostname)
    asyncio.run(_serve(config))


# -- config --------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Check the configuration file and generate its reference."""


@config_group.command("check")
@config_option
def config_check(config_path: Path) -> None:
    """Validate the configuration file (and that its TLS files are readable); print "ok"."""
    config = load_config(config_path)
    check_tls_files(config.tls)
    click.echo("ok")


@config_group.command("doc")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the reference to this file (e.g. docs/configuration.md) instead of stdout.",
)
def config_doc(output: Path | None) -> None:
    """Print (or write) the reference of every configuration key, generated from the schema."""
    if output is None:
        click.echo(confdoc.render(), nl=False)
        return
    changed = confdoc.write(output)
    click.echo(f"{output}: {'updated' if changed else 'up to date'}")


# -- quickstart ----------------------------------------------------------------------------


@cli.command()
@click.option(
    "--demo",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the demo installation (created if missing).",
)
@password_stdin_option
def quickstart(directory: Path, password_stdin: bool) -> None:
    """Create a demo installation in DIR: config, certificate, domain and demo account."""
    password = read_password(from_stdin=True) if password_stdin else None
    result = asyncio.run(create_demo(directory, password=password))
    click.echo(instructions(result), nl=False)


def main() -> None:
    """Console-script entry point (``hato``)."""
    cli.main(prog_name="hato")


if __name__ == "__main__":
    main()
