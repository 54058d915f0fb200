"""DMARC evaluations and received feedback reports in the SQLite store (``ReportStore``).

Two tables, created by ``migrate_reports`` (appended to ``schema.MIGRATIONS``):
``dmarc_evaluations`` keeps one row per evaluated message for the aggregate reports of
RFC 7489 §7.2 (list-valued fields as JSON text), ``feedback_reports`` keeps reports received
for our domains (DMARC aggregate XML, RFC 8460 TLS reports), unique per (kind, organisation,
report id) so a resent report is stored once (RFC 7489 §7.2.1.1 Report-ID).

Left out: per-domain retention settings (the reporting job purges after sending).

Security: no SQL is built from input (placeholders only); report content is stored as the
parser produced it, never executed or rendered here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hato.core.errors import UsageError
from hato.store.reports import REPORT_KINDS, DmarcEvaluation, FeedbackReport
from hato.store.sqlite.db import Unit

T = TypeVar("T")

_V_REPORTS = """
CREATE TABLE dmarc_evaluations (
    id INTEGER PRIMARY KEY,
    policy_domain TEXT NOT NULL,
    header_from TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_to TEXT,
    disposition TEXT NOT NULL,
    dkim_aligned TEXT NOT NULL,
    spf_aligned TEXT NOT NULL,
    reasons TEXT NOT NULL,
    dkim TEXT NOT NULL,
    spf TEXT NOT NULL,
    record TEXT NOT NULL,
    evaluated_at REAL NOT NULL
);
CREATE INDEX dmarc_evaluations_time ON dmarc_evaluations(evaluated_at, policy_domain);

CREATE TABLE feedback_reports (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    begin_time REAL NOT NULL,
    end_time REAL NOT NULL,
    received_at REAL NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (kind, org_name, report_id)
);
CREATE INDEX feedback_reports_domain ON feedback_reports(domain, begin_time);
"""

_EVAL_COLUMNS = (
    "policy_domain, header_from, source_ip, envelope_from, envelope_to, disposition, "
    "dkim_aligned, spf_aligned, reasons, dkim, spf, record, evaluated_at"
)
_REPORT_COLUMNS = "id, kind, org_name, report_id, domain, begin_time, end_time, received_at, data"


def migrate_reports(conn: sqlite3.Connection) -> None:
    """Schema step: the reporting tables."""
    for statement in _V_REPORTS.split(";"):
        if statement.strip():
            conn.execute(statement)


def _tuples(text: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(v) for v in item) for item in json.loads(text))


def _evaluation(row: Sequence[Any]) -> DmarcEvaluation:
    reasons = tuple((r[0], r[1]) for r in _tuples(row[8]))
    dkim = tuple((d[0], d[1], d[2]) for d in _tuples(row[9]))
    spf = tuple((s[0], s[1], s[2]) for s in _tuples(row[10]))
    return DmarcEvaluation(
        policy_domain=row[0],
        header_from=row[1],
        source_ip=row[2],
        envelope_from=row[3],
        envelope_to=row[4],
        disposition=row[5],
        dkim_aligned=row[6],
        spf_aligned=row[7],
        reasons=reasons,
        dkim=dkim,
        spf=spf,
        record=row[11],
        evaluated_at=float(row[12]),
    )


def _report(row: Sequence[Any]) -> FeedbackReport:
    return FeedbackReport(
        id=int(row[0]),
        kind=row[1],
        org_name=row[2],
        report_id=row[3],
        domain=row[4],
        begin=float(row[5]),
        end=float(row[6]),
        received_at=float(row[7]),
        data=row[8],
    )


def record_evaluation(u: Unit, e: DmarcEvaluation) -> None:
    u.conn.execute(
        f"INSERT INTO dmarc_evaluations ({_EVAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            e.policy_domain,
            e.header_from,
            e.source_ip,
            e.envelope_from,
            e.envelope_to,
            e.disposition,
            e.dkim_aligned,
            e.spf_aligned,
            json.dumps(e.reasons),
            json.dumps(e.dkim),
            json.dumps(e.spf),
            e.record,
            e.evaluated_at or u.now,
        ),
    )


def evaluations(
    u: Unit, since: float, until: float, policy_domain: str | None
) -> list[DmarcEvaluation]:
    sql = (
        f"SELECT {_EVAL_COLUMNS} FROM dmarc_evaluations"
        " WHERE evaluated_at >= ? AND evaluated_at < ?"
    )
    args: list[Any] = [since, until]
    if policy_domain is not None:
        sql += " AND policy_domain = ?"
        args.append(policy_domain)
    rows = u.conn.execute(sql + " ORDER BY evaluated_at, id", args).fetchall()
    return [_evaluation(r) for r in rows]


def policy_domains(u: Unit, since: float, until: float) -> list[str]:
    rows = u.conn.execute(
        "SELECT DISTINCT policy_domain FROM dmarc_evaluations"
        " WHERE evaluated_at >= ? AND evaluated_at < ? ORDER BY policy_domain",
        (since, until),
    ).fetchall()
    return [str(r[0]) for r in rows]


def purge_evaluations(u: Unit, before: float) -> int:
    cursor = u.conn.execute("DELETE FROM dmarc_evaluations WHERE evaluated_at < ?", (before,))
    return int(cursor.rowcount)


def add_report(
    u: Unit,
    *,
    kind: str,
    org_name: str,
    report_id: str,
    domain: str,
    begin: float,
    end: float,
    data: str,
) -> FeedbackReport | None:
    if kind not in REPORT_KINDS:
        raise UsageError(f"unknown report kind {kind!r}")
    cursor = u.conn.execute(
        "INSERT OR IGNORE INTO feedback_reports"
        " (kind, org_name, report_id, domain, begin_time, end_time, received_at, data)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (kind, org_name, report_id, domain, begin, end, u.now, data),
    )
    if cursor.rowcount == 0:
        return None  # RFC 7489 §7.2.1.1: a duplicate of a report already stored
    return get_report(u, int(cursor.lastrowid or 0))


def get_report(u: Unit, report_id: int) -> FeedbackReport | None:
    row = u.conn.execute(
        f"SELECT {_REPORT_COLUMNS} FROM feedback_reports WHERE id = ?", (report_id,)
    ).fetchone()
    return _report(row) if row else None


def list_reports(u: Unit, kind: str | None, domain: str | None) -> list[FeedbackReport]:
    sql = f"SELECT {_REPORT_COLUMNS} FROM feedback_reports WHERE 1 = 1"
    args: list[Any] = []
    if kind is not None:
        sql += " AND kind = ?"
        args.append(kind)
    if domain is not None:
        sql += " AND domain = ?"
        args.append(domain)
    rows = u.conn.execute(sql + " ORDER BY begin_time DESC, id DESC", args).fetchall()
    return [_report(r) for r in rows]


class ReportMethods:
    """The reporting half of ``SqliteStore`` (mixed into it; see ``hato.store.api.ReportStore``)."""

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[Unit], T]) -> T: ...

        async def _write(self, fn: Callable[[Unit], T]) -> T: ...

    async def record_dmarc_evaluation(self, evaluation: DmarcEvaluation) -> None:
        await self._write(lambda u: record_evaluation(u, evaluation))

    async def dmarc_evaluations(
        self, *, since: float, until: float, policy_domain: str | None = None
    ) -> list[DmarcEvaluation]:
        return await self._read(lambda u: evaluations(u, since, until, policy_domain))

    async def dmarc_policy_domains(self, *, since: float, until: float) -> list[str]:
        return await self._read(lambda u: policy_domains(u, since, until))

    async def purge_dmarc_evaluations(self, *, before: float) -> int:
        return await self._write(lambda u: purge_evaluations(u, before))

    async def add_feedback_report(
        self,
        *,
        kind: str,
        org_name: str,
        report_id: str,
        domain: str,
        begin: float,
        end: float,
        data: str,
    ) -> FeedbackReport | None:
        return await self._write(
            lambda u: add_report(
                u,
                kind=kind,
                org_name=org_name,
                report_id=report_id,
                domain=domain,
                begin=begin,
                end=end,
                data=data,
            )
        )

    async def list_feedback_reports(
        self, *, kind: str | None = None, domain: str | None = None
    ) -> list[FeedbackReport]:
        return await self._read(lambda u: list_reports(u, kind, domain))

    async def get_feedback_report(self, report_id: int) -> FeedbackReport | None:
        return await self._read(lambda u: get_report(u, report_id))
