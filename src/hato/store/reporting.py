"""Outgoing reporting data at the store boundary: TLS session outcomes and the sent-report log.

``TlsSessionCount`` is the RFC 8460 §4 data of outbound SMTP sessions, aggregated per UTC day
(§4.1: reports cover 00:00-24:00 UTC): the policy applied (§4.4 policy-type ``sts``,
``tlsa`` or ``no-policy-found``, policy-string, policy-domain, mx-host), the result (``success``
or a §4.3 result type) and, for failures, the failure-details fields (sending MTA IP,
receiving MX name, HELO and IP, failure reason code) with a session count.
``TlsReportStore`` is the Protocol a backend implements for it, together with the log of the
reports we sent (one per kind, domain and day: the reporting service's idempotency record)
and the atomic "queue this report once" write.

Leaves out: the report formats (``hato.outbound.tlsrpt_report``, ``hato.mailauth``), DMARC
evaluations (``hato.store.reports``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hato.store.queue import NewQueueEntry

SENT_KINDS = ("dmarc", "tls")
SUCCESS = "success"  # result_type of a session that negotiated policy-compliant TLS (§4.2.1)
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")  # RFC 8460 §4.4 policy-type


@dataclass(frozen=True, slots=True)
class TlsSessionCount:
    """Sessions of one UTC day with the same policy and outcome (RFC 8460 §4.4 fields)."""

    day: int  # POSIX time of the day's 00:00 UTC
    policy_domain: str  # A-labels (RFC 8460 §4.4 "domain")
    policy_type: str  # one of POLICY_TYPES
    result_type: str  # SUCCESS or an RFC 8460 §4.3 result type
    policy_strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    sending_ip: str = ""
    receiving_mx: str = ""
    receiving_helo: str = ""
    receiving_ip: str = ""
    reason_code: str = ""
    sessions: int = 1

    @property
    def successful(self) -> bool:
        return self.result_type == SUCCESS


@dataclass(frozen=True, slots=True)
class SentReport:
    """One report we generated (kind "dmarc" or "tls") for a domain and UTC day."""

    kind: str
    domain: str
    day: int
    report_id: str
    recipients: int  # mail recipients queued (0: nothing deliverable, or https only)
    sent_at: float


class TlsReportStore(Protocol):
    """TLS-RPT session data and the sent-report log; each call one atomic unit of work."""

    async def record_tls_sessions(self, counts: Sequence[TlsSessionCount]) -> None:
        """Add the ``sessions`` of each row to the stored count of the same key."""
        ...

    async def tls_sessions(
        self, *, day: int, policy_domain: str | None = None
    ) -> list[TlsSessionCount]:
        """The rows of one day (optionally one policy domain), in a stable order."""
        ...

    async def tls_policy_domains(self, *, day: int) -> list[str]:
        """Policy domains with sessions on ``day``, sorted."""
        ...

    async def purge_tls_sessions(self, *, before: float) -> int:
        """Forget rows of days starting before ``before``; returns how many."""
        ...

    async def sent_report(self, kind: str, domain: str, day: int) -> SentReport | None: ...

    async def queue_report(
        self,
        *,
        kind: str,
        domain: str,
        day: int,
        report_id: str,
        entries: Sequence[NewQueueEntry] = (),
    ) -> list[int] | None:
        """Log the report as sent and queue ``entries`` in ONE unit of work; None (and
        nothing queued) when a report of this kind, domain and day is already logged."""
        ...

    async def purge_sent_reports(self, *, before: float) -> int:
        """Forget log rows of days starting before ``before``."""
        ...
