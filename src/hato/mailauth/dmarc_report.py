"""DMARC aggregate reports (RFC 7489 §7.2, Appendix C): build, send-ready message, parse.

* ``AggregateReport`` and its rows are frozen values; ``aggregate`` merges identical rows
  (summing ``count``); ``render_xml`` writes the Appendix C document (version 1.0);
  ``build_aggregate_report`` produces the complete RFC 5322 message of §7.2.1.1: a
  text/plain part, the report as ``application/gzip`` named
  ``receiver!policy-domain!begin!end[!unique].xml.gz`` and the Subject
  ``Report Domain: ... Submitter: ... Report-ID: <...>``.
* ``authorized_uris`` is the external-destination verification of §7.1 (the
  ``<domain>._report._dmarc.<host>`` TXT check, with its override rule) and drops URIs that
  are not ``mailto:`` (§7.2.1.2: no other method is defined).
* ``parse_xml`` reads aggregate reports others send us (namespaced or not, unknown elements
  ignored); ``report_attachments`` finds the report files in a report email (gzip, zip, plain
  XML, and the TLS-RPT media types of RFC 8460 §5.3), bounded in size.

Left out: error reports (§7.2.2) and failure reports (§7.3); sending (the outbound queue).

Security: reports come from strangers. XML with a DOCTYPE (entity tricks) is refused,
decompression stops at ``MAX_REPORT_SIZE``, zip members are read with the same bound, and
nothing in a report is trusted beyond being displayed.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime
from urllib.parse import unquote

from hato.core.dns import DnsError, Resolver
from hato.core.errors import HatoError
from hato.mailauth.dmarc import is_dmarc_record
from hato.mailauth.orgdomain import PublicSuffixList, registrable_domain

__all__ = [
    "MAX_REPORT_SIZE",
    "AggregateReport",
    "DkimAuth",
    "PolicyPublished",
    "ReportFormatError",
    "ReportReason",
    "ReportRecord",
    "SpfAuth",
    "aggregate",
    "authorized_uris",
    "build_aggregate_report",
    "mailto_address",
    "parse_xml",
    "render_xml",
    "report_attachments",
    "report_filename",
    "uri_size_limit",
]

MAX_REPORT_SIZE = 32 * 1024 * 1024  # decompressed octets of one report file
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class ReportFormatError(HatoError):
    """A report file or message we cannot read."""

    reply = "malformed report"


@dataclass(frozen=True)
class ReportReason:
    """Appendix C PolicyOverrideReason."""

    type: str  # forwarded, sampled_out, trusted_forwarder, mailing_list, local_policy, other
    comment: str = ""


@dataclass(frozen=True)
class DkimAuth:
    """Appendix C DKIMAuthResultType."""

    domain: str
    result: str
    selector: str = ""
    human_result: str = ""


@dataclass(frozen=True)
class SpfAuth:
    """Appendix C SPFAuthResultType."""

    domain: str
    result: str
    scope: str = "mfrom"


@dataclass(frozen=True)
class ReportRecord:
    """Appendix C RecordType: one row with its identifiers and raw auth results."""

    source_ip: str
    count: int
    disposition: str
    dkim: str  # DMARC-aligned DKIM: pass / fail
    spf: str  # DMARC-aligned SPF: pass / fail
    header_from: str
    envelope_from: str = ""
    envelope_to: str = ""
    reasons: tuple[ReportReason, ...] = ()
    dkim_results: tuple[DkimAuth, ...] = ()
    spf_results: tuple[SpfAuth, ...] = ()

    def key(self) -> ReportRecord:
        return replace(self, count=0)


@dataclass(frozen=True)
class PolicyPublished:
    """Appendix C PolicyPublishedType (plus DMARCbis np when given)."""

    domain: str
    p: str
    sp: str = ""
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    fo: str = "0"
    np: str = ""


@dataclass(frozen=True)
class AggregateReport:
    """One aggregate report (Appendix C feedback)."""

    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    policy: PolicyPublished
    records: tuple[ReportRecord, ...] = ()
    extra_contact_info: str = ""
    errors: tuple[str, ...] = ()
    version: str = "1.0"  # RFC 7489 Appendix C: MUST be 1.0 for reports we generate

    @property
    def message_count(self) -> int:
        return sum(r.count for r in self.records)


def aggregate(records: Iterable[ReportRecord]) -> tuple[ReportRecord, ...]:
    """Merge rows equal in everything but ``count`` (order of first appearance)."""
    counts: dict[ReportRecord, int] = {}
    for record in records:
        key = record.key()
        counts[key] = counts.get(key, 0) + record.count
    return tuple(replace(key, count=n) for key, n in counts.items())


# -- rendering ---------------------------------------------------------------------------------


def _add(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


def render_xml(report: AggregateReport) -> bytes:
    """The RFC 7489 Appendix C document, UTF-8 with an XML declaration."""
    root = ET.Element("feedback")
    _add(root, "version", report.version)
    meta = _add(root, "report_metadata")
    _add(meta, "org_name", report.org_name)
    _add(meta, "email", report.email)
    if report.extra_contact_info:
        _add(meta, "extra_contact_info", report.extra_contact_info)
    _add(meta, "report_id", report.report_id)
    dates = _add(meta, "date_range")
    _add(dates, "begin", report.begin)
    _add(dates, "end", report.end)
    for error in report.errors:
        _add(meta, "error", error)
    policy = report.policy
    published = _add(root, "policy_published")
    _add(published, "domain", policy.domain)
    _add(published, "adkim", policy.adkim)
    _add(published, "aspf", policy.aspf)
    _add(published, "p", policy.p)
    _add(published, "sp", policy.sp or policy.p)  # Appendix C: sp is required
    if policy.np:
        _add(published, "np", policy.np)
    _add(published, "pct", policy.pct)
    _add(published, "fo", policy.fo)
    for record in report.records:
        element = _add(root, "record")
        row = _add(element, "row")
        _add(row, "source_ip", record.source_ip)
        _add(row, "count", record.count)
        evaluated = _add(row, "policy_evaluated")
        _add(evaluated, "disposition", record.disposition)
        _add(evaluated, "dkim", record.dkim)
        _add(evaluated, "spf", record.spf)
        for reason in record.reasons:
            why = _add(evaluated, "reason")
            _add(why, "type", reason.type)
            if reason.comment:
                _add(why, "comment", reason.comment)
        ids = _add(element, "identifiers")
        if record.envelope_to:
            _add(ids, "envelope_to", record.envelope_to)
        _add(ids, "envelope_from", record.envelope_from)
        _add(ids, "header_from", record.header_from)
        auth = _add(element, "auth_results")
        for dkim in record.dkim_results:
            entry = _add(auth, "dkim")
            _add(entry, "domain", dkim.domain)
            if dkim.selector:
                _add(entry, "selector", dkim.selector)
            _add(entry, "result", dkim.result)
            if dkim.human_result:
                _add(entry, "human_result", dkim.human_result)
        for spf in record.spf_results:
            entry = _add(auth, "spf")
            _add(entry, "domain", spf.domain)
            _add(entry, "scope", spf.scope)
            _add(entry, "result", spf.result)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def report_filename(
    receiver: str, policy_domain: str, begin: int, end: int, *, unique_id: str = ""
) -> str:
    """RFC 7489 §7.2.1.1 filename with the ``xml.gz`` extension."""
    unique = f"!{unique_id}" if unique_id else ""
    if unique_id and not unique_id.isalnum():
        raise ReportFormatError("unique-id must be letters and digits")  # §7.2.1.1 unique-id
    return f"{receiver}!{policy_domain}!{begin}!{end}{unique}.xml.gz"


def build_aggregate_report(
    report: AggregateReport,
    *,
    receiver: str,
    from_address: str,
    to_addresses: Sequence[str],
    message_id: str,
    date: float,
    unique_id: str = "",
) -> bytes:
    """The report email of RFC 7489 §7.2.1.1 as bytes with CRLF line ends."""
    xml = render_xml(report)
    compressed = gzip.compress(xml, mtime=0)  # §7.2.1.1: SHOULD be GZIP compressed
    filename = report_filename(
        receiver, report.policy.domain, report.begin, report.end, unique_id=unique_id
    )
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = from_address
    message["To"] = ", ".join(to_addresses)
    message["Date"] = format_datetime(datetime.fromtimestamp(date, UTC))
    message["Message-ID"] = message_id
    # RFC 7489 §7.2.1.1 dmarc-subject
    message["Subject"] = (
        f"Report Domain: {report.policy.domain} Submitter: {receiver} "
        f"Report-ID: <{report.report_id}>"
    )
    message.set_content(
        f"DMARC aggregate report for {report.policy.domain} from {receiver}, "
        f"covering {report.message_count} messages.\n"
    )
    message.add_attachment(compressed, maintype="application", subtype="gzip", filename=filename)
    return message.as_bytes()


# -- destinations (RFC 7489 §7.1) ---------------------------------------------------------------


def uri_size_limit(uri: str) -> int | None:
    """The ``!size`` suffix of a DMARC URI in octets (RFC 7489 §6.4), or None."""
    _, bang, size = uri.partition("!")
    match = re.fullmatch(r"([0-9]+)([kmgtKMGT]?)", size) if bang else None
    if match is None:
        return None
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _mailto_host(uri: str) -> str | None:
    base = uri.partition("!")[0]
    if not base.lower().startswith("mailto:"):
        return None  # RFC 7489 §7.2.1.2: only mailto is defined
    address = unquote(base[7:].partition("?")[0])
    _, at, host = address.rpartition("@")
    return host.strip().rstrip(".").lower() if at and host.strip() else None


def mailto_address(uri: str) -> str | None:
    """The address of a ``mailto:`` report URI (RFC 6068), without the size suffix."""
    base = uri.partition("!")[0]
    if _mailto_host(uri) is None:
        return None
    return unquote(base[7:].partition("?")[0]).strip()


async def authorized_uris(
    resolver: Resolver,
    policy_domain: str,
    uris: Sequence[str],
    *,
    psl: PublicSuffixList | None = None,
) -> list[str]:
    """RFC 7489 §7.1: the report URIs we may use for ``policy_domain`` (in order)."""
    own_org = registrable_domain(policy_domain, psl=psl) or policy_domain
    allowed: list[str] = []
    for uri in uris:
        host = _mailto_host(uri)
        if host is None:
            continue
        if (registrable_domain(host, psl=psl) or host) == own_org:
            allowed.append(uri)  # same Organizational Domain: no verification needed
            continue
        name = f"{policy_domain}._report._dmarc.{host}"  # §7.1 steps 1-3
        try:
            answer = await resolver.query(name, "TXT")
        except DnsError:
            continue  # §7.1 step 4: cannot verify now; this report skips the URI
        records = [t for t in answer.texts() if is_dmarc_record(t)]  # §7.1 step 5
        if not records:
            continue  # §7.1 step 6: no authorization
        override = re.search(r"(?:^|;)\s*rua\s*=\s*([^;]*)", records[0], re.IGNORECASE)
        if override is None:
            allowed.append(uri)  # §7.1 step 7
            continue
        replacements = [u.strip() for u in override.group(1).split(",") if u.strip()]
        if all(_mailto_host(u) == host for u in replacements):
            allowed.extend(replacements)  # §7.1 step 8: same destination host only
        # else: §7.1 "MUST NOT generate a report to either the original or the override URI"
    return list(dict.fromkeys(allowed))


# -- parsing -----------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].lower()


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    if element is None:
        return []
    return [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element | None, name: str, default: str = "") -> str:
    child = _child(element, name)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def _int(element: ET.Element | None, name: str, default: int = 0) -> int:
    text = _text(element, name)
    try:
        return int(float(text)) if text else default
    except ValueError:
        raise ReportFormatError(f"{name} is not a number: {text[:40]!r}") from None


def parse_xml(data: bytes) -> AggregateReport:
    """Parse an aggregate report document; raises ReportFormatError."""
    if len(data) > MAX_REPORT_SIZE:
        raise ReportFormatError("report too large")
    if re.search(rb"<!(?:DOCTYPE|ENTITY)", data, re.IGNORECASE):
        raise ReportFormatError("DTDs are not allowed in reports")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ReportFormatError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "feedback":
        raise ReportFormatError("not a DMARC aggregate report (no feedback element)")
    meta = _child(root, "report_metadata")
    dates = _child(meta, "date_range")
    published = _child(root, "policy_published")
    if meta is None or published is None:
        raise ReportFormatError("report_metadata or policy_published missing")
    policy = PolicyPublished(
        domain=_text(published, "domain").lower(),
        p=_text(published, "p").lower(),
        sp=_text(published, "sp").lower(),
        adkim=_text(published, "adkim", "r").lower(),
        aspf=_text(published, "aspf", "r").lower(),
        pct=_int(published, "pct", 100),
        fo=_text(published, "fo", "0"),
        np=_text(published, "np").lower(),
    )
    records = tuple(_record(r) for r in _children(root, "record"))
    return AggregateReport(
        org_name=_text(meta, "org_name"),
        email=_text(meta, "email"),
        report_id=_text(meta, "report_id"),
        begin=_int(dates, "begin"),
        end=_int(dates, "end"),
        policy=policy,
        records=records,
        extra_contact_info=_text(meta, "extra_contact_info"),
        errors=tuple((e.text or "").strip() for e in _children(meta, "error")),
        version=_text(root, "version"),
    )


def _record(element: ET.Element) -> ReportRecord:
    row = _child(element, "row")
    evaluated = _child(row, "policy_evaluated")
    ids = _child(element, "identifiers")
    auth = _child(element, "auth_results")
    reasons = tuple(
        ReportReason(_text(r, "type").lower(), _text(r, "comment"))
        for r in _children(evaluated, "reason")
    )
    dkim = tuple(
        DkimAuth(
            _text(d, "domain").lower(),
            _text(d, "result").lower(),
            _text(d, "selector"),
            _text(d, "human_result"),
        )
        for d in _children(auth, "dkim")
    )
    spf = tuple(
        SpfAuth(_text(s, "domain").lower(), _text(s, "result").lower(), _text(s, "scope"))
        for s in _children(auth, "spf")
    )
    return ReportRecord(
        source_ip=_text(row, "source_ip"),
        count=_int(row, "count"),
        disposition=_text(evaluated, "disposition").lower(),
        dkim=_text(evaluated, "dkim").lower(),
        spf=_text(evaluated, "spf").lower(),
        header_from=_text(ids, "header_from").lower(),
        envelope_from=_text(ids, "envelope_from").lower(),
        envelope_to=_text(ids, "envelope_to").lower(),
        reasons=reasons,
        dkim_results=dkim,
        spf_results=spf,
    )


# -- report emails ------------------------------------------------------------------------------


def _bounded_gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper (RFC 1952)
    try:
        out = inflater.decompress(data, MAX_REPORT_SIZE + 1)
    except zlib.error as exc:
        raise ReportFormatError(f"bad gzip data: {exc}") from None
    if len(out) > MAX_REPORT_SIZE:
        raise ReportFormatError("report too large after decompression")
    return out


def _unzip(data: bytes) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ReportFormatError(f"bad zip data: {exc}") from None
    files = []
    with archive:
        for info in archive.infolist()[:8]:
            if info.is_dir():
                continue
            with archive.open(info) as member:
                content = member.read(MAX_REPORT_SIZE + 1)
            if len(content) > MAX_REPORT_SIZE:
                raise ReportFormatError("report too large after decompression")
            files.append((info.filename, content))
    return files


def _kind(name: str, content: bytes) -> str | None:
    head = content.lstrip()[:200]
    if head.startswith(b"<"):
        return "dmarc"
    if head.startswith(b"{"):
        return "tls"
    lower = name.lower()
    return "tls" if lower.endswith((".json", ".json.gz")) else None


def _part_files(part: Message) -> list[tuple[str, bytes]]:
    ctype = part.get_content_type()
    name = part.get_filename() or ""
    lower = name.lower()
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return []
    if ctype in ("application/zip", "application/x-zip-compressed") or lower.endswith(".zip"):
        return _unzip(payload)
    gz = ctype in ("application/gzip", "application/x-gzip", "application/tlsrpt+gzip")
    if gz or lower.endswith(".gz") or payload[:2] == b"\x1f\x8b":
        return [(name, _bounded_gunzip(payload))]
    if ctype in ("text/xml", "application/xml", "application/tlsrpt+json") or lower.endswith(
        (".xml", ".json")
    ):
        return [(name, payload)]
    return []


def report_attachments(message: bytes) -> list[tuple[str, bytes]]:
    """The report files of a report email as (kind, content): kind "dmarc" (aggregate XML,
    RFC 7489 §7.2.1.1) or "tls" (RFC 8460 §5.3 JSON), decompressed."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    found: list[tuple[str, bytes]] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        for name, content in _part_files(part):
            kind = _kind(name, content)
            if kind is not None:
                found.append((kind, content))
    return found
