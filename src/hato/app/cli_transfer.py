"""``hato export`` and ``hato import``: an account's mail to and from Maildir or mbox.

The work is done by ``hato.ops.transfer``; this module picks the format, opens the store, and
shows a progress bar when standard output is a terminal.

Left out: whole-server backup (``hato backup``), incremental export.

Security: reads and writes only the directory or file the operator names.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from hato.app.cli_base import account_key, config_option, run_with_store
from hato.core.errors import NotFound, UsageError
from hato.ops import transfer
from hato.store.api import MailStore
from hato.store.model import INBOX


class ProgressReporter:
    """The ``progress(done, total)`` callback: drives a click progress bar when enabled."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self._label = label
        self._enabled = enabled
        self._stack = contextlib.ExitStack()
        self._bar: Any = None
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = self._stack.enter_context(
                click.progressbar(length=max(total, 1), label=self._label)
            )
        self._bar.length = max(total, 1)
        self._bar.update(done - self._bar.pos)

    def close(self) -> None:
        self._stack.close()


def _options(fn: Any) -> Any:
    fn = click.option(
        "--mailbox",
        metavar="NAME",
        help="Mailbox for --mbox (default INBOX).",
    )(fn)
    fn = click.option("--mbox", type=click.Path(dir_okay=False, path_type=Path), help="mbox file.")(
        fn
    )
    fn = click.option(
        "--maildir", type=click.Path(file_okay=False, path_type=Path), help="Maildir++ directory."
    )(fn)
    return config_option(click.argument("address")(fn))


def _pick(maildir: Path | None, mbox: Path | None, mailbox: str | None) -> None:
    if (maildir is None) == (mbox is None):
        raise UsageError("give exactly one of --maildir DIR or --mbox FILE")
    if mailbox is not None and mbox is None:
        raise UsageError("--mailbox applies to --mbox only (Maildir holds every mailbox)")


def _transfer(
    address: str,
    config_path: Path,
    *,
    verb: str,
    maildir: Path | None,
    mbox: Path | None,
    mailbox: str | None,
) -> None:
    _pick(maildir, mbox, mailbox)
    key = account_key(address)
    progress = ProgressReporter(
        f"{verb} {key}", enabled=sys.stdout.isatty()
    )

    async def work(store: MailStore) -> int:
        account = await store.get_account(key)
        if account is None:
            raise NotFound(f"no account {key}")
        if verb == "exporting":
            if maildir is not None:
                return await transfer.export_maildir(store, account, maildir, progress=progress)
            assert mbox is not None
            return await transfer.export_mbox(
                store, account, mbox, mailbox=mailbox or INBOX, progress=progress
            )
        if maildir is not None:
            return await transfer.import_maildir(store, account, maildir, progress=progress)
        assert mbox is not None
        return await transfer.import_mbox(
            store, account, mbox, mailbox=mailbox or INBOX, progress=progress
        )

    try:
        count = run_with_store(config_path, work)
    finally:
        progress.close()
    where = maildir if maildir is not None else mbox
    if verb == "exporting":
        click.echo(f"exported {count} message{'s' if count != 1 else ''} of {key} to {where}")
    else:
        click.echo(f"imported {count} message{'s' if count != 1 else ''} into {key} from {where}")


@click.command("export")
@_options
def export_command(
    address: str, maildir: Path | None, mbox: Path | None, mailbox: str | None, config_path: Path
) -> None:
    """Export the mail of ADDRESS to a Maildir++ directory or an mbox file."""
    _transfer(address, config_path, verb="exporting", maildir=maildir, mbox=mbox, mailbox=mailbox)


@click.command("import")
@_options
def import_command(
    address: str, maildir: Path | None, mbox: Path | None, mailbox: str | None, config_path: Path
) -> None:
    """Import mail into ADDRESS from a Maildir++ directory or an mbox file."""
    _transfer(address, config_path, verb="importing", maildir=maildir, mbox=mbox, mailbox=mailbox)
