"""SMTP TLS Reporting (RFC 8460) for mail we send: the policy record, the report, its delivery.

Implements §3 (the ``_smtp._tls`` TXT record: ``v=TLSRPTv1``, ``rua`` with ``mailto:`` and
``https:`` URIs, extensions ignored; records not starting with ``v=TLSRPTv1;`` discarded and
anything but exactly one record meaning "no TLSRPT"), §4.4 (the JSON report: organization,
date-range of a full UTC day, contact-info, report-id, one ``policies`` entry per applied
policy with its summary counts and failure-details), §5.1 (filename
``sender!policy-domain!begin!end.json.gz``), §5.2 (gzip), §5.3 (the report email:
``multipart/report; report-type="tlsrpt"`` with a text/plain part and the report as
``application/tlsrpt+gzip``, the ``TLS-Report-Domain`` / ``TLS-Report-Submitter`` header
fields and the Report-ID subject) and §5.4 (HTTPS POST, success on a 2xx answer).

Leaves out: the optional "additional-information" URI, HTTP redirects (not followed) and
chunked request bodies.

Security: report content is our own data; the HTTPS POST resolves through the injected
resolver, verifies the server certificate with the given context (§3 allows skipping that;
we do not) and reads only the status line of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import gzip
import json
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from hato.core.address import domain_to_ascii
from hato.core.dns import DnsError, Resolver
from hato.store.reporting import TlsSessionCount

DAY = 86400
POST_TIMEOUT = 60.0
MEDIA_GZIP = "application/tlsrpt+gzip"  # RFC 8460 §6.2

_RECORD_START = re.compile(r"v=TLSRPTv1[ \t]*;")  # RFC 8460 §3
_FIELD_DELIM = re.compile(r"[ \t]*;[ \t]*")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # RFC 8460 §3 tlsrpt-ext-name
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # RFC 8460 §3 tlsrpt-ext-value
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """A parsed ``_smtp._tls`` record (RFC 8460 §3)."""

    rua: tuple[str, ...]

    @property
    def mailto(self) -> tuple[str, ...]:
        """The addresses of the ``mailto:`` URIs (RFC 6068), decoded."""
        out = []
        for uri in self.rua:
            if uri[:7].lower() == "mailto:":
                address = unquote(uri[7:].partition("?")[0]).strip()
                if "@" in address:
                    out.append(address)
        return tuple(out)

    @property
    def https(self) -> tuple[str, ...]:
        return tuple(u for u in self.rua if u[:8].lower() == "https://")


def parse_record(text: str) -> TlsRptRecord | None:
    """RFC 8460 §3 grammar; None when the record is not valid."""
    match = _RECORD_START.match(text)
    if match is None:
        return None
    fields = _FIELD_DELIM.split(text[match.end() :].strip(" \t"))
    if fields and fields[-1] == "":
        fields = fields[:-1]  # RFC 8460 §3: an optional trailing field-delim
    rua: tuple[str, ...] | None = None
    for item in fields:
        name, eq, value = item.partition("=")
        if name == "rua" and eq:
            uris = tuple(u.strip(" \t") for u in value.split(","))
            if rua is not None or not all(_URI.fullmatch(u) for u in uris):
                return None
            rua = uris
        elif not (eq and _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            return None  # not a valid key/value pair
        # RFC 8460 §3: unknown fields SHALL be ignored
    return TlsRptRecord(rua) if rua else None  # the rua field is required


async def lookup_record(resolver: Resolver, domain: str) -> TlsRptRecord | None:
    """The policy domain's TLSRPT record, or None (RFC 8460 §3: none unless exactly one)."""
    try:
        answer = await resolver.query(f"_smtp._tls.{domain_to_ascii(domain)}", "TXT")
    except DnsError:
        return None
    candidates = [t for t in answer.texts() if _RECORD_START.match(t)]
    if len(candidates) != 1:
        return None  # RFC 8460 §3: MUST assume the domain does not implement TLSRPT
    return parse_record(candidates[0])


# -- the report (RFC 8460 §4.4) -------------------------------------------------------------


def _stamp(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # RFC 3339


def _details(rows: Iterable[TlsSessionCount]) -> list[dict[str, Any]]:
    merged: dict[tuple[str, ...], int] = {}
    for r in rows:
        key = (
            r.result_type,
            r.sending_ip,
            r.receiving_mx,
            r.receiving_helo,
            r.receiving_ip,
            r.reason_code,
        )
        merged[key] = merged.get(key, 0) + r.sessions
    details = []
    for (result, sending, mx, helo, receiving, reason), count in merged.items():
        detail: dict[str, Any] = {"result-type": result}
        optional = (
            ("sending-mta-ip", sending),
            ("receiving-mx-hostname", mx),
            ("receiving-mx-helo", helo),
            ("receiving-ip", receiving),
        )
        detail.update((k, v) for k, v in optional if v)
        detail["failed-session-count"] = count
        if reason:
            detail["failure-reason-code"] = reason
        details.append(detail)
    return details


def build_report(
    rows: Sequence[TlsSessionCount],
    *,
    organization: str,
    contact: str,
    report_id: str,
    day: int,
) -> dict[str, Any]:
    """The §4.4 JSON document for one policy domain's rows of one day."""
    groups: dict[tuple[Any, ...], list[TlsSessionCount]] = {}
    for row in rows:
        key = (row.policy_type, row.policy_domain, row.policy_strings, row.mx_hosts)
        groups.setdefault(key, []).append(row)
    policies = []
    for (ptype, domain, strings, hosts), members in groups.items():
        policy: dict[str, Any] = {"policy-type": ptype}
        if strings:
            policy["policy-string"] = list(strings)
        policy["policy-domain"] = domain
        if hosts:
            policy["mx-host"] = list(hosts)
        failures = [r for r in members if not r.successful]
        entry: dict[str, Any] = {
            "policy": policy,
            "summary": {
                "total-successful-session-count": sum(r.sessions for r in members if r.successful),
                "total-failure-session-count": sum(r.sessions for r in failures),
            },
        }
        if failures:
            entry["failure-details"] = _details(failures)
        policies.append(entry)  # §4: "policies" MUST be an array
    return {
        "organization-name": organization,
        "date-range": {  # §4.1: a full UTC day
            "start-datetime": _stamp(day),
            "end-datetime": _stamp(day + DAY - 1),
        },
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }


def render(report: dict[str, Any]) -> bytes:
    """I-JSON (RFC 7493) text of the report, gzip-compressed (RFC 8460 §5.2)."""
    text = json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8")
    return gzip.compress(text, mtime=0)


def filename(sender: str, policy_domain: str, begin: int, end: int) -> str:
    """RFC 8460 §5.1 with the ``json.gz`` extension (A-labels)."""
    return f"{domain_to_ascii(sender)}!{domain_to_ascii(policy_domain)}!{begin}!{end}.json.gz"


def build_message(
    report: dict[str, Any],
    compressed: bytes,
    *,
    submitter: str,
    from_address: str,
    to_addresses: Sequence[str],
    day: int,
    date: float,
) -> bytes:
    """The RFC 8460 §5.3 report email for the report of ``day``, CRLF line ends."""
    domain = str(report["policies"][0]["policy"]["policy-domain"]) if report["policies"] else ""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = from_address
    message["To"] = ", ".join(to_addresses)
    message["Date"] = format_datetime(datetime.fromtimestamp(date, UTC))
    message["Message-ID"] = f"<{report['report-id']}>"
    # RFC 8460 §5.3 tlsrpt-subject
    message["Subject"] = (
        f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    )
    message["TLS-Report-Domain"] = domain  # RFC 8460 §5.3: MUST be included
    message["TLS-Report-Submitter"] = submitter
    message.set_content(
        f"This is an aggregate TLS report from {submitter} about mail sent to {domain}.\n"
    )
    message.add_attachment(
        compressed,
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=filename(submitter, domain, day, day + DAY - 1),
    )
    message.set_type("multipart/report")  # RFC 8460 §5.3: multipart/report
    message.set_param("report-type", "tlsrpt")
    return message.as_bytes()


# -- HTTPS transport (RFC 8460 §5.4) ----------------------------------------------------------


async def post_report(
    url: str,
    body: bytes,
    *,
    resolver: Resolver,
    context: ssl.SSLContext,
    timeout: float = POST_TIMEOUT,
) -> bool:
    """POST the gzipped report to an ``https:`` rua; True on a 2xx answer (§5.4)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme.lower() != "https" or not host:
        return False
    try:
        port = parts.port or 443
    except ValueError:
        return False
    addresses: list[str] = []
    for kind in ("AAAA", "A"):
        with contextlib.suppress(DnsError):
            addresses += (await resolver.query(host, kind)).texts()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = host if parts.port is None else f"{host}:{port}"
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {MEDIA_GZIP}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nUser-Agent: Hato\r\n\r\n"
    )
    for address in addresses:
        try:
            status = await asyncio.wait_for(
                _exchange(address, port, host, head.encode("ascii") + body, context), timeout
            )
        except (OSError, TimeoutError, ssl.SSLError, UnicodeError):
            continue
        return 200 <= status < 300  # §5.4: the receiver MUST answer "successful"
    return False


async def _exchange(
    address: str, port: int, host: str, request: bytes, context: ssl.SSLContext
) -> int:
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=host)
    try:
        writer.write(request)
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    fields = line.decode("latin-1").split()
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        return 0
    return int(fields[1])
