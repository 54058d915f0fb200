"""What every ``hato`` command shares: the error-to-one-line group, ``--config``, store access,
password input and size/address arguments.

Left out: shell completion scripts, coloured output.

Security: passwords are read only from stdin (``--password-stdin``) or a hidden terminal
prompt, never from the command line or the environment, and are never echoed or logged.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from hato.app.config import Config, load_config
from hato.app.confkinds import format_size, parse_size, show
from hato.core.address import Address, normalize_domain
from hato.core.errors import HatoError, UsageError
from hato.store.api import MailStore
from hato.store.sqlite import open_store

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

MIN_PASSWORD_LENGTH = 8
EXIT_ERROR = 1
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE


def fail_line(message: str) -> None:
    """Print one ``error: ...`` line on stderr."""
    one_line = " ".join(message.splitlines()) or "failed"
    click.echo(f"error: {one_line}", err=True)


class HatoGroup(click.Group):
    """A click group that turns every failure into one ``error:`` line and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())  # a bare group: its help, not an error
            code = 0
        except click.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            fail_line(message)
            code = exc.exit_code
        except click.Abort:
            fail_line("aborted")
            code = EXIT_ERROR
        except HatoError as exc:
            fail_line(exc.detail)
            code = EXIT_ERROR
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail_line(f"{where}{exc.strerror or exc}")
            code = EXIT_ERROR
        except Exception as exc:
            if os.environ.get("HATO_TRACEBACK"):
                raise
            fail_line(f"internal error: {type(exc).__name__}: {exc} (HATO_TRACEBACK=1 shows more)")
            code = EXIT_INTERNAL
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def config_option(fn: F) -> F:
    """``--config PATH``: default ``$HATO_CONFIG``, then ``./hato.toml``."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="HATO_CONFIG",
        default="hato.toml",
        show_default="$HATO_CONFIG, else ./hato.toml",
        help="Configuration file.",
    )(fn)


def password_stdin_option(fn: F) -> F:
    return click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from standard input (one line) instead of prompting.",
    )(fn)


async def open_mail_store(config: Config) -> MailStore:
    """The store backend named by the configuration (SQLite under ``server.data_dir``)."""
    store: MailStore = await open_store(config.server.data_dir)
    return store


def run_with_store(config_path: Path, work: Callable[[MailStore], Awaitable[T]]) -> T:
    """Load the configuration, open the store, run ``work`` and close the store."""
    config = load_config(config_path)

    async def runner() -> T:
        store = await open_mail_store(config)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(runner())


def check_password(password: str) -> str:
    if not password:
        raise UsageError("the password is empty")
    if any(ch in password for ch in "\r\n\x00"):
        raise UsageError("the password must be one line without NUL characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"the password is too short (at least {MIN_PASSWORD_LENGTH} characters)")
    return password


def read_password(*, from_stdin: bool) -> str:
    """One password from stdin (trailing newline removed) or from a hidden, confirmed prompt."""
    if from_stdin:
        text = sys.stdin.read()
        return check_password(text.removesuffix("\n").removesuffix("\r"))
    if not sys.stdin.isatty():
        raise UsageError("no password given: use --password-stdin, or run in a terminal")
    password: str = click.prompt(
        "Password", hide_input=True, confirmation_prompt="Repeat password"
    )
    return check_password(password)


def account_key(text: str) -> str:
    """The store key of an address typed by the user."""
    return Address.parse(text.strip()).key


def domain_name(text: str) -> str:
    return normalize_domain(text.strip())


def parse_quota(text: str) -> int | None:
    """``"1G"`` -> bytes; ``none``/``unlimited`` -> None."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        return parse_size(text)
    except ValueError:
        raise UsageError(f'expected a size like "1G" or none, got {show(text)}') from None


def human_size(value: int | None) -> str:
    """Short sizes for tables: exact units when they fit, else one decimal."""
    if value is None:
        return "none"
    exact = format_size(value)
    if exact[-1:].isalpha() or value < 1024:
        return exact
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return str(value)


def table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns separated by two spaces."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
