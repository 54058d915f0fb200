"""``hato report dmarc|tls``: the DMARC aggregate (RFC 7489 §7.2) and TLS (RFC 8460) reports
received about our domains: import report emails, list them, show one.

Left out: sending our own aggregate reports (the outbound queue does that from
``hato.policy.dmarc_reporting.daily_reports``), web views (the admin UI).

Security: report files are untrusted input, parsed by the bounded parsers of
``hato.mailauth``; only reports about the server's own domains are stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from hato.app.cli_base import config_option, table
from hato.app.config import load_config
from hato.core.errors import NotFound
from hato.policy.dmarc_reporting import ingest_report
from hato.store.sqlite import SqliteStore, open_store

T = TypeVar("T")


def _with_store(config_path: Path, work: Callable[[SqliteStore], Awaitable[T]]) -> T:
    config = load_config(config_path)

    async def runner() -> T:
        store = await open_store(config.server.data_dir)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(runner())


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@click.group()
def report() -> None:
    """Reports other mail servers sent about our domains."""


def _kind_group(kind: str, title: str) -> click.Group:
    group = click.Group(kind, help=f"{title} received about our domains.")

    @group.command("import")
    @click.argument(
        "files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
    )
    @config_option
    def import_command(files: tuple[Path, ...], config_path: Path) -> None:
        """Store the reports in report email FILES (RFC 5322 messages)."""

        async def work(store: SqliteStore) -> list[tuple[str, int]]:
            ours = [d.name for d in await store.list_domains()]
            done = []
            for path in files:
                message = await asyncio.to_thread(path.read_bytes)
                stored = await ingest_report(store, message, our_domains=ours)
                done.append((str(path), len([r for r in stored if r.kind == kind])))
            return done

        for name, count in _with_store(config_path, work):
            click.echo(f"{name}: {count} new {kind} report{'s' if count != 1 else ''}")

    @group.command("list")
    @click.option("--domain", help="Only reports about this domain.")
    @config_option
    def list_command(domain: str | None, config_path: Path) -> None:
        """List received reports, newest first."""

        async def work(store: SqliteStore) -> list[tuple[str, ...]]:
            rows: list[tuple[str, ...]] = [("ID", "DOMAIN", "FROM", "BEGIN", "END", "REPORT-ID")]
            for r in await store.list_feedback_reports(kind=kind, domain=domain):
                rows.append(
                    (str(r.id), r.domain, r.org_name, _day(r.begin), _day(r.end), r.report_id)
                )
            return rows

        rows = _with_store(config_path, work)
        if len(rows) > 1:
            click.echo(table(rows))

    @group.command("show")
    @click.argument("report_id", type=int)
    @click.option("--json", "as_json", is_flag=True, help="Print the parsed report as JSON.")
    @config_option
    def show_command(report_id: int, as_json: bool, config_path: Path) -> None:
        """Show report REPORT_ID (the ID column of list)."""

        async def work(store: SqliteStore) -> Any:
            found = await store.get_feedback_report(report_id)
            if found is None or found.kind != kind:
                raise NotFound(f"no {kind} report with id {report_id}")
            return found

        found = _with_store(config_path, work)
        data = json.loads(found.data)
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
            return
        click.echo(f"{title} {found.report_id} from {found.org_name} about {found.domain}")
        click.echo(f"period: {_day(found.begin)} .. {_day(found.end)} UTC")
        click.echo(table(_dmarc_rows(data) if kind == "dmarc" else _tls_rows(data)))

    return group


def _dmarc_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("SOURCE", "COUNT", "DISPOSITION", "DKIM", "SPF", "FROM")]
    for r in data.get("records", []):
        rows.append(
            (
                str(r["source_ip"]),
                str(r["count"]),
                str(r["disposition"]),
                str(r["dkim"]),
                str(r["spf"]),
                str(r["header_from"]),
            )
        )
    return rows


def _tls_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("POLICY", "DOMAIN", "OK", "FAILED", "FAILURES")]
    for p in data.get("policies", []):
        failures = ", ".join(
            f"{f['result_type']}×{f['failed_session_count']}" for f in p.get("failures", [])
        )
        rows.append(
            (
                str(p["policy_type"]),
                str(p["policy_domain"]),
                str(p["successful"]),
                str(p["failed"]),
                failures or "-",
            )
        )
    return rows


report.add_command(_kind_group("dmarc", "DMARC aggregate reports"))
report.add_command(_kind_group("tls", "TLS reports"))
