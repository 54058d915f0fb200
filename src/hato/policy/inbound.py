"""The inbound verification pipeline: SPF, DKIM, ARC, iprev, then DMARC → one InboundVerdict.

Given the facts of an SMTP transaction (client IP, HELO, MAIL FROM, the received message),
runs SPF for MAIL FROM and HELO (RFC 7208 §2.3/§2.4), DKIM (RFC 6376), ARC (RFC 8617) and
iprev (RFC 8601 §3) concurrently, each under its own timeout, then DMARC (RFC 7489 §6.6 /
DMARCbis §5.3) over the author domains of the From field(s), and decides:

* DMARC fail under p=reject → reject ``550 5.7.1`` (RFC 7489 §10.3 wording);
  under p=quarantine (or reject sampled out, §6.6.4) → quarantine (deliver to Junk);
* DMARC temperror (a DNS failure on the record or on an aligned identifier) → tempfail
  ``451 4.4.3`` (RFC 7489 §6.6.3 "fail closed", §10.3 4xy; RFC 7208 §8.6 / RFC 3463 §3.5
  X.4.3 for DNS failures), unless the domain's policy is known to be none;
* overrides (RFC 7489 Appendix C reasons): a passing ARC chain sealed by a trusted ADMD
  (RFC 8617 §7.2.1, ``local_policy``), or a known forwarder or list from the local
  override list (``trusted_forwarder``): matched against the client network, or an
  authenticated identity (iprev-confirmed host name, SPF-pass domain, DKIM-pass d=).

A check that times out or fails with a DNS error gives temperror (never an exception).
DKIM signatures from keys in testing mode (t=y, RFC 6376 §3.6.1) and, unless configured,
signatures whose ``l=`` leaves body octets unsigned (RFC 6376 §8.2) do not count for DMARC.
The verdict carries our Authentication-Results field (RFC 8601) and the DMARC evaluation
for aggregate reports (RFC 7489 §6.6.5, stored through ``ReportStore`` when one is given).

Left out: spam and virus scoring (filters), DNSBL, failure reports (ruf). The message is
read into memory once for DKIM and ARC (dkimpy needs it whole); the SMTP size limit bounds it.

Security: everything in the message is untrusted; incoming Authentication-Results fields
claiming our authserv-id are removed by ``prepare_header`` (RFC 8601 §5).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from hato.core.clock import Clock, SystemClock
from hato.core.dns import Resolver
from hato.core.log import event
from hato.core.reply import Reply
from hato.mailauth import arc as arc_mod
from hato.mailauth import dkim as dkim_mod
from hato.mailauth import dmarc as dmarc_mod
from hato.mailauth import iprev as iprev_mod
from hato.mailauth import spf as spf_mod
from hato.mailauth.authresults import AuthResults, MethodResult, field_bytes, remove_own
from hato.mailauth.authresults import split_fields as split_header_fields
from hato.mailauth.authresults_build import (
    arc_result,
    dkim_result,
    dmarc_result,
    iprev_result,
    spf_result,
)
from hato.mailauth.orgdomain import PublicSuffixList
from hato.store.api import ReportStore
from hato.store.reports import DmarcEvaluation

__all__ = [
    "InboundAction",
    "InboundChecks",
    "InboundFacts",
    "InboundReason",
    "InboundSettings",
    "InboundVerdict",
    "InboundVerifier",
    "prepare_header",
]

T = TypeVar("T")

JUNK = "Junk"  # RFC 6154 \Junk: where quarantined mail goes
DMARC_REJECT = "Email rejected per DMARC policy for {domain}"  # RFC 7489 §10.3 example
TEMPFAIL = Reply(451, "4.4.3", "Temporary authentication failure, try again later")


class InboundAction(StrEnum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


class InboundReason(StrEnum):
    """Why the verdict is what it is (closed set; CONVENTIONS.md §5)."""

    DMARC_PASS = "dmarc_pass"
    DMARC_NO_POLICY = "dmarc_no_policy"  # no record (or p=none with nothing to apply)
    DMARC_FAIL_NONE = "dmarc_fail_none"  # failed, policy none
    DMARC_FAIL_QUARANTINE = "dmarc_fail_quarantine"
    DMARC_FAIL_REJECT = "dmarc_fail_reject"
    DMARC_TEMPERROR = "dmarc_temperror"
    DMARC_PERMERROR = "dmarc_permerror"
    NO_AUTHOR_DOMAIN = "no_author_domain"
    ARC_TRUSTED_SEALER = "arc_trusted_sealer"
    LOCAL_OVERRIDE = "local_override"
    DKIM_PARTIAL_BODY = "dkim_partial_body"
    CHECK_TIMEOUT = "check_timeout"


@dataclass(frozen=True)
class InboundSettings:
    """Configuration of the pipeline (wired from the [smtp]/[mailauth] config by app)."""

    authserv_id: str
    trusted_arc_sealers: tuple[str, ...] = ()  # RFC 8617 §7.2.1 trusted ADMDs (domains)
    local_overrides: tuple[str, ...] = ()  # known forwarders/lists: domains or IP networks
    timeout: float = 15.0  # per check, seconds
    tempfail_on_temperror: bool = True  # RFC 7489 §6.6.3: fail closed (4xy) or open
    count_partial_body_signatures: bool = False  # RFC 6376 §8.2 (l= shorter than the body)
    receiver: str = "unknown"  # our host name for SPF %{r} (RFC 7208 §7.3)


@dataclass(frozen=True)
class InboundFacts:
    """The session facts at the end of DATA. The message (header and body as the client sent
    them) comes either as ``message`` or as a file, read from ``offset`` (to skip trace fields
    we wrote ourselves)."""

    client_ip: str
    helo: str
    mail_from: str  # "" for the null reverse-path
    message: bytes | None = None
    message_path: Path | None = None
    offset: int = 0
    recipient_domain: str | None = None  # for the report's envelope_to


@dataclass(frozen=True)
class InboundChecks:
    """Every individual result, for logs, reports and the A-R field."""

    spf_mailfrom: spf_mod.SpfResult
    spf_helo: spf_mod.SpfResult
    dkim: dkim_mod.DkimVerification
    arc: arc_mod.ArcResult
    iprev: iprev_mod.IprevResult
    dmarc: dmarc_mod.DmarcResult
    override: arc_mod.ArcOverride


@dataclass(frozen=True)
class InboundVerdict:
    """The decision as a value: the SMTP server renders ``reply`` and delivers per ``action``."""

    action: InboundAction
    reply: Reply | None  # None on accept/quarantine: the server sends its usual 250
    reasons: tuple[InboundReason, ...]
    auth_results_header: bytes  # our "Authentication-Results: ...\r\n" field
    checks: InboundChecks
    evaluation: DmarcEvaluation | None = None  # what goes into the aggregate report
    mailbox: str | None = None  # JUNK on quarantine


def prepare_header(header: bytes, verdict: InboundVerdict, authserv_id: str) -> bytes:
    """RFC 8601 §5 then §4.1: drop fields claiming our id, prepend ours (a trace field)."""
    return verdict.auth_results_header + remove_own(header, authserv_id)


def _from_values(header: bytes) -> list[str]:
    """The From field values of a header block (RFC 5322 §3.6.2), unfolding left in."""
    fields, _ = split_header_fields(header)
    values = []
    for raw in fields:
        name, colon, value = raw.partition(b":")
        if colon and name.strip().lower() == b"from":
            values.append(value.decode("utf-8", errors="replace"))
    return values


def _header_block(message: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = message.find(sep)
        if end >= 0:
            return message[: end + len(sep)]
    return message


def _matches_domain(name: str | None, entry: str) -> bool:
    if not name:
        return False
    name = name.rstrip(".").lower()
    return name == entry or name.endswith("." + entry)


@dataclass
class InboundVerifier:
    """Runs the checks; one instance per server, shared by every session."""

    resolver: Resolver
    settings: InboundSettings
    clock: Clock = field(default_factory=SystemClock)
    reports: ReportStore | None = None
    psl: PublicSuffixList | None = None
    rng: random.Random = field(default_factory=random.Random)

    async def _timed(self, what: str, work: Awaitable[T], fallback: Callable[[], T]) -> T:
        try:
            return await asyncio.wait_for(work, self.settings.timeout)
        except TimeoutError:
            event("inbound.check.timeout", check=what)
            return fallback()

    async def _load(self, facts: InboundFacts) -> bytes:
        if facts.message is not None:
            return facts.message[facts.offset :]
        if facts.message_path is None:
            return b""
        path, offset = facts.message_path, facts.offset

        def read() -> bytes:
            with path.open("rb") as handle:
                handle.seek(offset)
                return handle.read()

        return await asyncio.to_thread(read)

    async def evaluate(self, facts: InboundFacts) -> InboundVerdict:
        """All checks and the decision; never raises for DNS or message problems."""
        message = await self._load(facts)
        timeouts: list[str] = []
        resolver, now = self.resolver, self.clock
        receiver = self.settings.receiver

        def temp_spf(identity: str, domain: str) -> Callable[[], spf_mod.SpfResult]:
            def make() -> spf_mod.SpfResult:
                timeouts.append(f"spf-{identity}")
                status = spf_mod.SpfStatus.TEMPERROR
                return spf_mod.SpfResult(status, domain, identity, "", detail="timeout")

            return make

        def temp_dkim() -> dkim_mod.DkimVerification:
            timeouts.append("dkim")
            result = dkim_mod.DkimResult(dkim_mod.DkimStatus.TEMPERROR, detail="timeout")
            return dkim_mod.DkimVerification((result,))

        def temp_arc() -> arc_mod.ArcResult:
            timeouts.append("arc")  # RFC 8617 §5.2.1: all failures are permanent
            return arc_mod.ArcResult(arc_mod.ArcStatus.FAIL, detail="timeout")

        def temp_iprev() -> iprev_mod.IprevResult:
            timeouts.append("iprev")
            return iprev_mod.IprevResult(iprev_mod.IprevStatus.TEMPERROR, facts.client_ip)

        helo_domain = facts.helo.strip("[]")
        mailfrom_domain = facts.mail_from.rpartition("@")[2] or helo_domain
        spf_from, spf_helo, dkim, arc, iprev = await asyncio.gather(
            self._timed(
                "spf",
                spf_mod.verify_mailfrom(
                    resolver,
                    facts.client_ip,
                    mailfrom=facts.mail_from,
                    helo=facts.helo,
                    receiver=receiver,
                    clock=now,
                ),
                temp_spf("mailfrom", mailfrom_domain),
            ),
            self._timed(
                "spf-helo",
                spf_mod.verify_helo(
                    resolver, facts.client_ip, helo=facts.helo, receiver=receiver, clock=now
                ),
                temp_spf("helo", helo_domain),
            ),
            self._timed("dkim", dkim_mod.verify(message, resolver=resolver, clock=now), temp_dkim),
            self._timed("arc", arc_mod.verify(message, resolver=resolver), temp_arc),
            self._timed("iprev", iprev_mod.verify(resolver, facts.client_ip), temp_iprev),
        )
        reasons: list[InboundReason] = []
        counted = []
        for result in dkim.results:
            if result.testing:
                continue  # RFC 6376 §3.6.1 t=y: treat as unsigned
            if result.partial_body:
                reasons.append(InboundReason.DKIM_PARTIAL_BODY)
                if not self.settings.count_partial_body_signatures:
                    continue  # RFC 6376 §8.2: unsigned trailing content
            counted.append(dmarc_mod.Identifier(result.status.value, result.domain))
        authors = [
            d for v in _from_values(_header_block(message)) for d in dmarc_mod.author_domains(v)
        ]

        def temp_dmarc() -> dmarc_mod.DmarcResult:
            timeouts.append("dmarc")
            first = authors[0] if authors else ""
            return dmarc_mod.DmarcResult(
                dmarc_mod.DmarcStatus.TEMPERROR, first, first, error="timeout"
            )

        dmarc = await self._timed(
            "dmarc",
            dmarc_mod.verify_authors(
                resolver,
                authors,
                spf=dmarc_mod.Identifier(spf_from.status.value, spf_from.domain),
                dkim=counted,
                psl=self.psl,
                rng=self.rng,
            ),
            temp_dmarc,
        )
        if timeouts:
            reasons.append(InboundReason.CHECK_TIMEOUT)
        override = arc_mod.apply_override(dmarc, arc, self.settings.trusted_arc_sealers)
        local = self._local_override(facts, dmarc, spf_from, spf_helo, dkim, iprev)
        if local:
            override = arc_mod.ArcOverride(
                dmarc_mod.Policy.NONE,
                overridden=True,
                reason="trusted_forwarder",
                comment="local override list",
            )
        checks = InboundChecks(spf_from, spf_helo, dkim, arc, iprev, dmarc, override)
        action, reply, mailbox = self._decide(checks, reasons, local=local)
        header = self._header(checks, facts)
        evaluation = self._evaluation(checks, facts)
        # a tempfailed message comes back later: count it then, not twice (RFC 7489 §7.2)
        if (
            evaluation is not None
            and self.reports is not None
            and action is not InboundAction.TEMPFAIL
        ):
            try:
                await self.reports.record_dmarc_evaluation(evaluation)
            except Exception as exc:  # a report row is never worth losing the message
                event("inbound.report.failed", error=type(exc).__name__)
        event(
            "inbound.verdict",
            action=action.value,
            dmarc=dmarc.status.value,
            domain=dmarc.author_domain,
            spf=spf_from.status.value,
            dkim=dkim.status.value,
            arc=arc.status.value,
            iprev=iprev.status.value,
        )
        return InboundVerdict(
            action, reply, tuple(dict.fromkeys(reasons)), header, checks, evaluation, mailbox
        )

    def _local_override(
        self,
        facts: InboundFacts,
        dmarc: dmarc_mod.DmarcResult,
        spf_from: spf_mod.SpfResult,
        spf_helo: spf_mod.SpfResult,
        dkim: dkim_mod.DkimVerification,
        iprev: iprev_mod.IprevResult,
    ) -> bool:
        """A known forwarder or list: its network, or one of its authenticated names."""
        if dmarc.status is not dmarc_mod.DmarcStatus.FAIL or not self.settings.local_overrides:
            return False
        try:
            client = ipaddress.ip_address(facts.client_ip)
        except ValueError:
            client = None
        names = [r.domain for r in dkim.passing()]
        names += [s.domain for s in (spf_from, spf_helo) if s.status is spf_mod.SpfStatus.PASS]
        if iprev.status is iprev_mod.IprevStatus.PASS and iprev.name:
            names.append(iprev.name)
        for entry in self.settings.local_overrides:
            entry = entry.strip().rstrip(".").lower()
            if "/" in entry or entry.replace(".", "").isdigit() or ":" in entry:
                try:
                    if client is not None and client in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
            elif any(_matches_domain(name, entry) for name in names):
                return True
        return False

    def _decide(
        self, checks: InboundChecks, reasons: list[InboundReason], *, local: bool
    ) -> tuple[InboundAction, Reply | None, str | None]:
        dmarc = checks.dmarc
        status = dmarc.status
        if status is dmarc_mod.DmarcStatus.PASS:
            reasons.append(InboundReason.DMARC_PASS)
            return InboundAction.ACCEPT, None, None
        if status is dmarc_mod.DmarcStatus.NONE:
            reasons.append(InboundReason.DMARC_NO_POLICY)
            return InboundAction.ACCEPT, None, None
        if status is dmarc_mod.DmarcStatus.PERMERROR:
            if dmarc.error == "no-author-domain":
                reasons.append(InboundReason.NO_AUTHOR_DOMAIN)
            reasons.append(InboundReason.DMARC_PERMERROR)  # RFC 7489 §6.6.3: no policy applied
            return InboundAction.ACCEPT, None, None
        if status is dmarc_mod.DmarcStatus.TEMPERROR:
            reasons.append(InboundReason.DMARC_TEMPERROR)
            harmless = dmarc.policy is dmarc_mod.Policy.NONE
            if self.settings.tempfail_on_temperror and not harmless:
                return InboundAction.TEMPFAIL, TEMPFAIL, None  # RFC 7489 §6.6.3, §10.3
            return InboundAction.ACCEPT, None, None
        disposition = dmarc.disposition
        if disposition is dmarc_mod.Policy.NONE:
            reasons.append(InboundReason.DMARC_FAIL_NONE)
            return InboundAction.ACCEPT, None, None
        if checks.override.overridden:
            reasons.append(
                InboundReason.LOCAL_OVERRIDE if local else InboundReason.ARC_TRUSTED_SEALER
            )
            return InboundAction.ACCEPT, None, None
        if disposition is dmarc_mod.Policy.REJECT:
            reasons.append(InboundReason.DMARC_FAIL_REJECT)
            text = DMARC_REJECT.format(domain=dmarc.author_domain)
            return InboundAction.REJECT, Reply(550, "5.7.1", text), None  # RFC 7489 §10.3
        reasons.append(InboundReason.DMARC_FAIL_QUARANTINE)
        return InboundAction.QUARANTINE, None, JUNK  # RFC 7489 §6.6.4: quarantine

    def _header(self, checks: InboundChecks, facts: InboundFacts) -> bytes:
        results: list[MethodResult] = [
            spf_result(checks.spf_mailfrom),
            spf_result(checks.spf_helo),
        ]
        if checks.dkim.results:
            results += [dkim_result(r) for r in checks.dkim.results]
        else:
            results.append(MethodResult("dkim", "none"))
        results.append(arc_result(checks.arc, remote_ip=facts.client_ip))
        results.append(dmarc_result(checks.dmarc))
        results.append(iprev_result(checks.iprev))
        return field_bytes(AuthResults(self.settings.authserv_id, tuple(results)))

    def _evaluation(self, checks: InboundChecks, facts: InboundFacts) -> DmarcEvaluation | None:
        """RFC 7489 §6.6.5 / §7.2: one row per message for which a DMARC record applied."""
        dmarc = checks.dmarc
        if dmarc.record is None:
            return None
        reasons: list[tuple[str, str]] = []
        if checks.override.overridden and checks.override.reason:
            reasons.append((checks.override.reason, checks.override.comment))
        elif dmarc.status is dmarc_mod.DmarcStatus.FAIL and not dmarc.applied:
            reasons.append(("sampled_out", ""))  # RFC 7489 Appendix C PolicyOverrideType
        disposition = (
            checks.override.disposition
            if dmarc.status is dmarc_mod.DmarcStatus.FAIL
            else dmarc_mod.Policy.NONE
        )
        spf_rows = [
            (checks.spf_mailfrom.domain, "mfrom", checks.spf_mailfrom.status.value),
        ]
        dkim_rows = [
            (r.domain, r.selector, r.status.value) for r in checks.dkim.results if r.domain
        ]
        return DmarcEvaluation(
            policy_domain=dmarc.policy_domain,
            header_from=dmarc.author_domain,
            source_ip=facts.client_ip,
            envelope_from=checks.spf_mailfrom.domain,
            envelope_to=facts.recipient_domain,
            disposition=disposition.value,
            dkim_aligned="pass" if dmarc.dkim_alignment == "pass" else "fail",
            spf_aligned="pass" if dmarc.spf_alignment == "pass" else "fail",
            reasons=tuple(reasons),
            dkim=tuple(dkim_rows),
            spf=tuple(spf_rows),
            record=dmarc.record.text,
            evaluated_at=self.clock.now(),
        )
