"""TLS-RPT session counts and the sent-report log in the SQLite store (``TlsReportStore``).

Two tables, created by ``migrate_reporting`` (appended to ``schema.MIGRATIONS``):
``tls_sessions`` keeps RFC 8460 §4 outcomes aggregated per UTC day and key (an upsert adds
to the count, so a busy day stays a few rows per destination), ``sent_reports`` logs each
report we generated, unique per (kind, domain, day): ``queue_report`` inserts that row and
the report's queue entries in one transaction, so a report is queued at most once however
often the reporting job runs or restarts.

Left out: per-session rows (the counts are what RFC 8460 §4.4 reports).

Security: no SQL is built from input (placeholders only).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hato.core.errors import UsageError
from hato.store.queue import NewQueueEntry
from hato.store.reporting import SENT_KINDS, SentReport, TlsSessionCount
from hato.store.sqlite.db import Unit
from hato.store.sqlite.queue import insert as insert_queue_entry

if TYPE_CHECKING:
    from hato.store.reporting import TlsReportStore
    from hato.store.sqlite.blobs import FileBlobStore
    from hato.store.sqlite.store import SqliteStore

T = TypeVar("T")

_V_REPORTING = """
CREATE TABLE tls_sessions (
    day INTEGER NOT NULL,
    policy_domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy_strings TEXT NOT NULL,
    mx_hosts TEXT NOT NULL,
    result_type TEXT NOT NULL,
    sending_ip TEXT NOT NULL,
    receiving_mx TEXT NOT NULL,
    receiving_helo TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    sessions INTEGER NOT NULL,
    PRIMARY KEY (day, policy_domain, policy_type, policy_strings, mx_hosts, result_type,
                 sending_ip, receiving_mx, receiving_helo, receiving_ip, reason_code)
);

CREATE TABLE sent_reports (
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    day INTEGER NOT NULL,
    report_id TEXT NOT NULL,
    recipients INTEGER NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (kind, domain, day)
) WITHOUT ROWID;
"""

_KEY = (
    "day, policy_domain, policy_type, policy_strings, mx_hosts, result_type, sending_ip, "
    "receiving_mx, receiving_helo, receiving_ip, reason_code"
)


def migrate_reporting(conn: sqlite3.Connection) -> None:
    """Schema step: the outgoing-reporting tables."""
    for statement in _V_REPORTING.split(";"):
        if statement.strip():
            conn.execute(statement)


def _row(count: TlsSessionCount) -> tuple[Any, ...]:
    return (
        count.day,
        count.policy_domain,
        count.policy_type,
        json.dumps(list(count.policy_strings)),
        json.dumps(list(count.mx_hosts)),
        count.result_type,
        count.sending_ip,
        count.receiving_mx,
        count.receiving_helo,
        count.receiving_ip,
        count.reason_code,
        count.sessions,
    )


def _count(row: Sequence[Any]) -> TlsSessionCount:
    return TlsSessionCount(
        day=int(row[0]),
        policy_domain=str(row[1]),
        policy_type=str(row[2]),
        policy_strings=tuple(str(s) for s in json.loads(row[3])),
        mx_hosts=tuple(str(s) for s in json.loads(row[4])),
        result_type=str(row[5]),
        sending_ip=str(row[6]),
        receiving_mx=str(row[7]),
        receiving_helo=str(row[8]),
        receiving_ip=str(row[9]),
        reason_code=str(row[10]),
        sessions=int(row[11]),
    )


def record_sessions(u: Unit, counts: Sequence[TlsSessionCount]) -> None:
    for count in counts:
        if count.sessions < 1:
            raise UsageError("a session count must be positive")
    u.conn.executemany(
        f"INSERT INTO tls_sessions ({_KEY}, sessions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        f" ON CONFLICT ({_KEY}) DO UPDATE SET sessions = sessions + excluded.sessions",
        [_row(c) for c in counts],
    )


def sessions(u: Unit, day: int, policy_domain: str | None) -> list[TlsSessionCount]:
    sql = f"SELECT {_KEY}, sessions FROM tls_sessions WHERE day = ?"
    args: list[Any] = [day]
    if policy_domain is not None:
        sql += " AND policy_domain = ?"
        args.append(policy_domain)
    rows = u.conn.execute(sql + f" ORDER BY {_KEY}", args).fetchall()
    return [_count(r) for r in rows]


def policy_domains(u: Unit, day: int) -> list[str]:
    rows = u.conn.execute(
        "SELECT DISTINCT policy_domain FROM tls_sessions WHERE day = ? ORDER BY policy_domain",
        (day,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def purge_sessions(u: Unit, before: float) -> int:
    return int(u.conn.execute("DELETE FROM tls_sessions WHERE day < ?", (before,)).rowcount)


def _sent(row: Sequence[Any]) -> SentReport:
    return SentReport(
        kind=str(row[0]),
        domain=str(row[1]),
        day=int(row[2]),
        report_id=str(row[3]),
        recipients=int(row[4]),
        sent_at=float(row[5]),
    )


def sent_report(u: Unit, kind: str, domain: str, day: int) -> SentReport | None:
    row = u.conn.execute(
        "SELECT kind, domain, day, report_id, recipients, sent_at FROM sent_reports"
        " WHERE kind = ? AND domain = ? AND day = ?",
        (kind, domain, day),
    ).fetchone()
    return _sent(row) if row else None


def queue_report(
    u: Unit,
    *,
    kind: str,
    domain: str,
    day: int,
    report_id: str,
    entries: Sequence[NewQueueEntry],
    blob_exists: Callable[[str], bool],
) -> list[int] | None:
    if kind not in SENT_KINDS:
        raise UsageError(f"unknown report kind {kind!r}")
    recipients = sum(len(e.recipients) for e in entries)
    cursor = u.conn.execute(
        "INSERT OR IGNORE INTO sent_reports (kind, domain, day, report_id, recipients, sent_at)"
        " VALUES (?,?,?,?,?,?)",
        (kind, domain, day, report_id, recipients, u.now),
    )
    if cursor.rowcount == 0:
        return None  # already generated: a report per domain and day goes out once
    return [insert_queue_entry(u, e, blob_exists=blob_exists) for e in entries]


def purge_sent(u: Unit, before: float) -> int:
    return int(u.conn.execute("DELETE FROM sent_reports WHERE day < ?", (before,)).rowcount)


class ReportingMethods:
    """The outgoing-reporting part of ``SqliteStore`` (``hato.store.reporting.TlsReportStore``)."""

    if TYPE_CHECKING:
        _blobs: FileBlobStore

        async def _read(self, fn: Callable[[Unit], T]) -> T: ...

        async def _write(self, fn: Callable[[Unit], T]) -> T: ...

    async def record_tls_sessions(self, counts: Sequence[TlsSessionCount]) -> None:
        if counts:
            await self._write(lambda u: record_sessions(u, counts))

    async def tls_sessions(
        self, *, day: int, policy_domain: str | None = None
    ) -> list[TlsSessionCount]:
        return await self._read(lambda u: sessions(u, day, policy_domain))

    async def tls_policy_domains(self, *, day: int) -> list[str]:
        return await self._read(lambda u: policy_domains(u, day))

    async def purge_tls_sessions(self, *, before: float) -> int:
        return await self._write(lambda u: purge_sessions(u, before))

    async def sent_report(self, kind: str, domain: str, day: int) -> SentReport | None:
        return await self._read(lambda u: sent_report(u, kind, domain, day))

    async def queue_report(
        self,
        *,
        kind: str,
        domain: str,
        day: int,
        report_id: str,
        entries: Sequence[NewQueueEntry] = (),
    ) -> list[int] | None:
        exists = self._blobs.exists
        return await self._write(
            lambda u: queue_report(
                u,
                kind=kind,
                domain=domain,
                day=day,
                report_id=report_id,
                entries=entries,
                blob_exists=exists,
            )
        )

    async def purge_sent_reports(self, *, before: float) -> int:
        return await self._write(lambda u: purge_sent(u, before))


if TYPE_CHECKING:  # mypy proves the backend implements the protocol

    def _implements_tls_report_store(store: SqliteStore) -> TlsReportStore:
        return store
