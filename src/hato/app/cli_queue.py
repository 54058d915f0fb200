"""``hato queue list|show|retry|hold|release|delete|bounce``: the outbound queue by hand.

Each command is one store call, so it is atomic and safe while ``hato serve`` runs: a change
the running queue runner would conflict with (the entry is being delivered right now) is
refused with "try again" (Conflict), never applied halfway. State changes follow
``hato.store.queue.TRANSITIONS``.

Left out: editing recipients or bodies of queued messages.

Security: ``show`` prints envelope data and the last replies, never the message body.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from hato.app.cli_base import config_option, human_size, run_with_store, table
from hato.app.config import load_config
from hato.app.config_outbound import outbound_settings
from hato.core.dns import StaticResolver
from hato.core.errors import NotFound
from hato.outbound.dkim_sign import DkimKeys
from hato.outbound.queue import QueueRunner
from hato.outbound.srs import Srs
from hato.store.api import MailStore
from hato.store.queue import QueueEntry, QueueState, QueueUpdate


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _entry(store: MailStore, entry_id: int) -> QueueEntry:
    entry = await store.get_queue_entry(entry_id)
    if entry is None:
        raise NotFound(f"no queue entry {entry_id}")
    return entry


@click.group()
def queue() -> None:
    """Inspect and act on the outbound queue."""


@queue.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include delivered and bounced entries.")
@config_option
def queue_list(show_all: bool, config_path: Path) -> None:
    """List queue entries: id, state, size, sender, recipients, next attempt, last error."""

    async def work(store: MailStore) -> list[QueueEntry]:
        states = None if show_all else [s for s in QueueState if not s.final]
        return await store.list_queue(states)

    entries = run_with_store(config_path, work)
    rows: list[tuple[str, ...]] = [("ID", "STATE", "SIZE", "SENDER", "RCPTS", "NEXT", "ERROR")]
    for e in entries:
        rows.append(
            (
                str(e.id),
                e.state.value,
                human_size(e.size),
                e.sender or "<>",
                ",".join(r.address for r in e.recipients),
                "-" if e.state.final else _when(e.next_attempt),
                (e.last_error or "")[:60],
            )
        )
    if len(rows) > 1:
        click.echo(table(rows))


@queue.command("show")
@click.argument("entry_id", type=int)
@config_option
def queue_show(entry_id: int, config_path: Path) -> None:
    """Show one entry with each recipient's status and last reply."""
    e = run_with_store(config_path, lambda s: _entry(s, entry_id))
    click.echo(f"id: {e.id}\nstate: {e.state.value}\nsender: {e.sender or '<>'}")
    click.echo(f"size: {e.size}\nattempts: {e.attempts}\ncreated: {_when(e.created)}")
    click.echo(f"next attempt: {_when(e.next_attempt)}\nexpires: {_when(e.expires)}")
    flags = [n for n, on in (("smtputf8", e.smtputf8), ("requiretls", e.requiretls)) if on]
    click.echo(f"body: {e.body}{''.join(' ' + f for f in flags)}")
    if e.envid:
        click.echo(f"envid: {e.envid}")
    for r in e.recipients:
        line = f"rcpt: {r.address} {r.status.value}"
        if r.reply:
            line += f" ({r.remote_mta or '-'}: {r.reply})"
        click.echo(line)


def _change(config_path: Path, entry_id: int, change: QueueUpdate, verb: str) -> None:
    run_with_store(config_path, lambda s: s.update_queue(entry_id, change))
    click.echo(f"{verb} {entry_id}")


@queue.command("retry")
@click.argument("entry_id", type=int)
@config_option
def queue_retry(entry_id: int, config_path: Path) -> None:
    """Try a deferred entry now."""
    _change(
        config_path,
        entry_id,
        QueueUpdate(QueueState.QUEUED, next_attempt=0.0, expected=frozenset({QueueState.DEFERRED})),
        "queued",
    )


@queue.command("hold")
@click.argument("entry_id", type=int)
@config_option
def queue_hold(entry_id: int, config_path: Path) -> None:
    """Stop delivery attempts for an entry until it is released."""
    waiting = frozenset({QueueState.QUEUED, QueueState.DEFERRED})
    _change(config_path, entry_id, QueueUpdate(QueueState.HELD, expected=waiting), "held")


@queue.command("release")
@click.argument("entry_id", type=int)
@config_option
def queue_release(entry_id: int, config_path: Path) -> None:
    """Release a held entry (it is tried at once)."""
    change = QueueUpdate(QueueState.QUEUED, next_attempt=0.0, expected=frozenset({QueueState.HELD}))
    _change(config_path, entry_id, change, "released")


@queue.command("delete")
@click.argument("entry_id", type=int)
@config_option
def queue_delete(entry_id: int, config_path: Path) -> None:
    """Delete an entry without notifying the sender."""
    run_with_store(config_path, lambda s: s.delete_queue_entry(entry_id))
    click.echo(f"deleted {entry_id}")


@queue.command("bounce")
@click.argument("entry_id", type=int)
@config_option
def queue_bounce(entry_id: int, config_path: Path) -> None:
    """Give up on an entry now and send the sender a delivery status notification."""
    config = load_config(config_path)
    settings = outbound_settings(config.server.hostname, config.outbound)

    async def work(store: MailStore) -> QueueEntry:
        data_dir = config.server.data_dir  # the notice is signed and SRS-reversed as a run's
        runner = QueueRunner(
            settings,
            store=store,
            resolver=StaticResolver(),
            signer=DkimKeys(data_dir / "dkim").signer() if config.outbound.dkim else None,
            srs=Srs.from_data_dir(data_dir) if config.inbound.srs else None,
        )
        return await runner.bounce(entry_id, "554 5.0.0 Returned to sender by the administrator")

    run_with_store(config_path, work)
    click.echo(f"bounced {entry_id}")
