"""TLS-RPT data collection: one outbound SMTP session's TLS outcome as RFC 8460 §4 fields.

``session_outcome`` maps what the queue runner knows about a session (the host policy of
``hato.outbound.tlspolicy``, the recipient domain's MTA-STS policy, the ``SmtpClient`` after
its connect) to a ``TlsSessionCount``: policy-type ``tlsa`` (DANE, policy strings the TLSA
RRs in presentation form, RFC 8460 §4.5), ``sts`` (the policy as "key: value" lines, mx
patterns as mx-host, §4.5) or ``no-policy-found``; result ``success`` or a §4.3 result type
with the failure-details fields (sending and receiving IP, MX name, its greeting name,
failure reason code). ``TlsSessionLog`` stores each outcome (``TlsReportStore``), counted per
UTC day (§4.1).

Leaves out: sessions to relays and smarthosts (no recipient-domain policy applies), the
plaintext retry after a failed opportunistic handshake (the failure is what counts),
sessions opened for "TLS-Required: No" messages, which include our own TLS reports (RFC 8460
§3: the session delivering a report SHOULD NOT be in the next report; the runner skips them),
and transient connection failures (§4.3.4: not required).

Security: records host names and addresses only, never message data.
"""

from __future__ import annotations

import logging
import socket

from hato.core.address import domain_to_ascii
from hato.core.clock import Clock
from hato.core.errors import HatoError
from hato.core.log import event
from hato.outbound.client import SmtpClient
from hato.outbound.mtasts import StsPolicy
from hato.outbound.tlspolicy import HostPolicy
from hato.store.reporting import SUCCESS, TlsReportStore, TlsSessionCount

DAY = 86400  # RFC 8460 §4.1: a report covers one UTC day

__all__ = ["DAY", "TlsSessionLog", "session_outcome", "sts_policy_strings", "tlsa_strings"]


def sts_policy_strings(policy: StsPolicy) -> tuple[str, ...]:
    """RFC 8460 §4.5: the MTA-STS policy as strings, one "mx" element per pattern."""
    lines = ["version: STSv1", f"mode: {policy.mode}"]
    lines += [f"mx: {mx}" for mx in policy.mx]
    lines.append(f"max_age: {policy.max_age}")
    lines += [f"{name}: {value}" for name, value in policy.extensions]
    return tuple(lines)


def tlsa_strings(policy: HostPolicy) -> tuple[str, ...]:
    """RFC 8460 §4.5: each TLSA RR as its four fields in presentation form (RFC 6698 §2.2)."""
    return tuple(f"{r.usage} {r.selector} {r.mtype} {r.data.hex().upper()}" for r in policy.tlsa)


def source_address(receiving_ip: str) -> str:
    """The local address the system routes to ``receiving_ip`` from (RFC 8460 §4.4
    sending-mta-ip). A connected UDP socket sends nothing; it only picks the route."""
    if not receiving_ip:
        return ""
    family = socket.AF_INET6 if ":" in receiving_ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((receiving_ip, 25))
            return str(probe.getsockname()[0])
    except OSError:
        return ""


def _helo(client: SmtpClient) -> str:
    greeting = client.greeting
    if greeting is None or not greeting.lines:
        return ""
    words = greeting.lines[0].split()
    return words[0][:255] if words else ""  # RFC 5321 §4.2: "220 " Domain [ SP text ]


def _reason(detail: str) -> str:
    # the client's detail reads "<host>: TLS required (<source>): <reason>"
    _head, sep, tail = detail.partition("): ")
    return (tail if sep else detail).strip()[:200]


def session_outcome(
    *,
    day: int,
    domain: str,
    mx_host: str,
    policy: HostPolicy,
    sts: StsPolicy | None,
    client: SmtpClient | None,
    tried_tls: bool = True,
    detail: str = "",
) -> TlsSessionCount | None:
    """The RFC 8460 row for one session, or None when it is not reported."""
    mx = mx_host.rstrip(".").lower()
    hosts: tuple[str, ...]
    if policy.source == "dane":
        policy_type, strings, hosts = "tlsa", tlsa_strings(policy), (mx,)
    elif sts is not None and sts.mode != "none":
        policy_type, strings, hosts = "sts", sts_policy_strings(sts), sts.mx
    else:
        policy_type, strings, hosts = "no-policy-found", (), ()
    if client is None:
        if not policy.usable and policy.source == "mta-sts":
            # RFC 8461 §4.2: an MX host not matching the policy is not used at all
            result, reason = "validation-failure", "MX host not in the MTA-STS policy"
        elif not policy.usable and policy.source == "dane":
            result, reason = "dnssec-invalid", _reason(policy.error or "")  # RFC 8460 §4.3.2.1
        else:
            return None
        receiving_ip = helo = ""
    elif client.tls.used:
        result, reason, receiving_ip, helo = SUCCESS, "", client.address, _helo(client)
    elif client.tls.failure:
        result, reason = client.tls.failure, _reason(detail)
        receiving_ip, helo = client.address, _helo(client)
    elif not tried_tls:
        return None  # the plaintext retry after a failed handshake: the failure counted
    else:
        result, reason = "starttls-not-supported", detail or "STARTTLS not offered"
        receiving_ip, helo = client.address, _helo(client)
    successful = result == SUCCESS
    return TlsSessionCount(
        day=day,
        policy_domain=domain_to_ascii(domain).lower(),  # RFC 8460 §4.4: A-labels
        policy_type=policy_type,
        result_type=result,
        policy_strings=strings,
        mx_hosts=tuple(hosts),
        # RFC 8460 §4.4: failure-details carry the session's addresses; successes only count
        sending_ip="" if successful else source_address(receiving_ip),
        receiving_mx="" if successful else mx,
        receiving_helo="" if successful else helo,
        receiving_ip="" if successful else receiving_ip,
        reason_code=reason,
    )


class TlsSessionLog:
    """Stores session outcomes for the daily TLS reports (the queue runner's ``tls_sink``)."""

    def __init__(self, store: TlsReportStore, *, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def record(
        self,
        *,
        domain: str,
        mx_host: str,
        policy: HostPolicy,
        sts: StsPolicy | None,
        client: SmtpClient | None,
        tried_tls: bool = True,
        detail: str = "",
    ) -> TlsSessionCount | None:
        """Store the session's outcome; a store failure is logged, never raised (delivery
        must not depend on reporting)."""
        now = self.clock.now()
        outcome = session_outcome(
            day=int(now) - int(now) % DAY,
            domain=domain,
            mx_host=mx_host,
            policy=policy,
            sts=sts,
            client=client,
            tried_tls=tried_tls,
            detail=detail,
        )
        if outcome is None:
            return None
        try:
            await self.store.record_tls_sessions([outcome])
        except HatoError as exc:
            event("tlsrpt.record.failed", level=logging.WARNING, error=exc.detail)
            return None
        return outcome
