"""DMARC: record parsing, policy discovery, identifier alignment and the verdict.

Rule set: **DMARCbis** (draft-ietf-dmarc-dmarcbis-41) with RFC 7489 compatibility:

* record syntax per DMARCbis §4.7-§4.8 on the RFC 6376 §3.2 tag-list: ``v=DMARC1`` first
  (case-sensitive value), tag names case-insensitive, unknown tags ignored, a known tag with
  an invalid value falls back to its default, duplicate tags or a fragment that is no
  ``tag=value`` make the record malformed (permerror); ``p`` may appear anywhere;
* missing/invalid ``p`` or invalid ``sp``/``np``: ``p=none`` when ``rua`` holds a valid URI,
  else no DMARC processing (DMARCbis §4.10.1, RFC 7489 §6.6.3);
* historic RFC 7489 tags still honoured: ``pct`` (§6.6.4 sampling, with an injected random
  source; a message left out gets the next lower policy, like DMARCbis ``t=y``), ``ri``,
  ``rf``, the RFC 7489 ``fo`` grammar and the ``!size`` URI suffix, whose number must fit in
  64 bits (RFC 7489 §6.4);
* policy discovery and organizational domains by the DMARCbis §4.10 DNS tree walk (at most 8
  queries), with ``psd=y``/``psd=n``, ``sp`` for existing and ``np`` for non-existent
  subdomains (§4.10.1, existence per §A.4: NXDOMAIN on an A query); where the walk finds no
  usable record, the Public Suffix List decides (RFC 7489 §3.2, ``orgdomain.py``), and a
  record at a public suffix without ``psd=y`` never makes it an organizational domain;
* relaxed/strict alignment (§4.4), pass if any aligned identifier passes, temperror when an
  aligned identifier had a temporary error and none passed (§5.3.6);
* several author domains (§5.3.1 "MAY go forward"): each is evaluated and the most severe
  result is kept (fail with the strictest policy, then temperror, permerror, pass, none).

Vectors (tests/mailauth/test_dmarc_vectors.py) follow this set; the few that encode RFC 7489
strictness or OpenDMARC leniency instead are listed there with the reason.

Left out: DKIM/SPF verification (inputs here), aggregate/failure reports (rua/ruf are parsed
for the reporting module), the external-destination verification of DMARCbis §11.6.

Security: DMARC records and names come from untrusted DNS and mail; the tree walk is bounded
to 8 queries per domain (DMARCbis §4.10) and names to 253 octets.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hato.core.dns import DnsError, DnsTemporaryError, Resolver
from hato.core.errors import HatoError
from hato.mailauth.orgdomain import PublicSuffixList, is_public_suffix, registrable_domain, to_ascii

__all__ = [
    "DmarcRecord",
    "DmarcRecordError",
    "DmarcResult",
    "DmarcStatus",
    "Identifier",
    "Policy",
    "aligned",
    "author_domains",
    "is_dmarc_record",
    "parse_record",
    "verify",
    "verify_authors",
]

MAX_WALK_QUERIES = 8  # DMARCbis §4.10
MAX_SIZE = 2**64 - 1  # RFC 7489 §6.4: the size number MUST fit in an unsigned 64-bit integer
MAX_RI = 2**32 - 1


class DmarcStatus(StrEnum):
    """RFC 8601 §2.7.x / RFC 7489 §11.2 dmarc result tokens."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Policy(StrEnum):
    """DMARCbis §4.7 dmarc-request values."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


_LOWER = {  # RFC 7489 §6.6.4, DMARCbis §4.7 "t": one level below the requested policy
    Policy.REJECT: Policy.QUARANTINE,
    Policy.QUARANTINE: Policy.NONE,
    Policy.NONE: Policy.NONE,
}


class DmarcRecordError(HatoError):
    """A TXT record is not a usable DMARC record; ``kind`` says how.

    ``not-dmarc``: does not start with v=DMARC1 (discarded during discovery);
    ``syntax``: malformed tag-list (permerror); ``no-policy``: no valid p (or bad sp/np) and
    no valid rua, so no DMARC processing (DMARCbis §4.10.1).
    """

    reply = "policy check failed"

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed DMARC policy record with defaults applied."""

    policy: Policy
    subdomain_policy: Policy | None = None  # sp
    nonexistent_policy: Policy | None = None  # np
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    testing: bool = False  # t=y
    psd: str = "u"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = 86400
    text: str = ""


_VERSION = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(?:;|$)")  # DMARCbis §4.8 dmarc-version
_TAG = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*?)[ \t]*", re.DOTALL)
_POLICIES = {p.value: p for p in Policy}
_FO = re.compile(r"[01ds](?:[ \t]*:[ \t]*[01ds])*")  # RFC 7489 §6.4 dmarc-fo
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")  # RFC 5321 Keyword
_URI = re.compile(  # RFC 3986 URI; "!" and "," must be percent-encoded (DMARCbis §4.8)
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:@/?#\[\]$&'()*+;=]|%[0-9A-Fa-f]{2})+"
)
_SIZE = re.compile(r"([0-9]+)([kmgtKMGT]?)")  # RFC 7489 §6.4 / DMARCbis obs-dmarc-report-size


def is_dmarc_record(text: str) -> bool:
    """DMARCbis §4.10 step 2: does the TXT record start with the v=DMARC1 tag?"""
    return _VERSION.match(text) is not None


def _uri_list(value: str) -> tuple[str, ...]:
    """The syntactically valid URIs of a dmarc-urilist; invalid ones are dropped (§4.8)."""
    valid: list[str] = []
    for item in value.split(","):
        item = item.strip(" \t")
        uri, bang, size = item.partition("!")
        if not _URI.fullmatch(uri):
            continue
        if bang:
            match = _SIZE.fullmatch(size)
            if match is None or int(match.group(1)) > MAX_SIZE:
                continue
            uri = f"{uri}!{match.group(1)}{match.group(2).lower()}"
        valid.append(uri)
    return tuple(valid)


def parse_record(text: str) -> DmarcRecord:
    """Parse one TXT record; raises DmarcRecordError (never anything else)."""
    if not is_dmarc_record(text):
        raise DmarcRecordError("not-dmarc", "record does not start with v=DMARC1")
    pieces = text.split(";")
    if pieces and pieces[-1].strip(" \t") == "":
        pieces.pop()  # RFC 6376 §3.2 / DMARCbis §4.8: one trailing separator is allowed
    tags: dict[str, str] = {}
    for piece in pieces:
        match = _TAG.fullmatch(piece)
        if match is None:
            raise DmarcRecordError("syntax", f"malformed tag {piece.strip()!r}")  # RFC 6376 §3.2
        name, value = match.group(1).lower(), match.group(2)
        if name in tags:
            raise DmarcRecordError("syntax", f"duplicate tag {name!r}")  # RFC 6376 §3.2
        tags[name] = value
    policy = _POLICIES.get(tags.get("p", "").lower())
    sp_text, np_text = tags.get("sp"), tags.get("np")
    sp = _POLICIES.get(sp_text.lower()) if sp_text is not None else None
    np = _POLICIES.get(np_text.lower()) if np_text is not None else None
    rua = _uri_list(tags["rua"]) if "rua" in tags else ()
    bad_sub = (sp_text is not None and sp is None) or (np_text is not None and np is None)
    if policy is None or bad_sub:
        # DMARCbis §4.10.1 / RFC 7489 §6.6.3: act as p=none if rua has a valid URI, else ignore.
        if not rua:
            raise DmarcRecordError("no-policy", "no valid p (or invalid sp/np) and no valid rua")
        policy, sp, np = Policy.NONE, None, None
    record = DmarcRecord(policy, sp, np, rua=rua, text=text)
    return _optional_tags(record, tags)


def _optional_tags(record: DmarcRecord, tags: dict[str, str]) -> DmarcRecord:
    """Tags whose invalid values fall back to the defaults (DMARCbis §4.8)."""
    changes: dict[str, object] = {}
    for name in ("adkim", "aspf"):
        value = tags.get(name, "").lower()
        if value in ("r", "s"):
            changes[name] = value
    if tags.get("t", "").lower() in ("y", "n"):
        changes["testing"] = tags["t"].lower() == "y"
    if tags.get("psd", "").lower() in ("y", "n", "u"):
        changes["psd"] = tags["psd"].lower()
    pct = tags.get("pct", "")
    if re.fullmatch(r"[0-9]{1,3}", pct) and int(pct) <= 100:  # RFC 7489 §6.3: 0-100
        changes["pct"] = int(pct)
    if "ruf" in tags:
        changes["ruf"] = _uri_list(tags["ruf"])
    fo = tags.get("fo", "")
    if _FO.fullmatch(fo):
        changes["fo"] = tuple(part.strip(" \t") for part in fo.split(":"))
    rf = [part.strip(" \t") for part in tags.get("rf", "").split(":")]
    if all(_KEYWORD.fullmatch(part) for part in rf):
        changes["rf"] = tuple(part.lower() for part in rf)
    ri = tags.get("ri", "")
    if ri.isascii() and ri.isdigit() and int(ri) <= MAX_RI:  # RFC 7489 §6.4 1*DIGIT, 32 bits
        changes["ri"] = int(ri)
    return replace(record, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Identifier:
    """An already-evaluated authenticated identifier: an SPF or a DKIM result and its domain."""

    result: str  # RFC 8601 token: pass, fail, temperror, ...
    domain: str  # SPF: the MAIL FROM (or HELO) domain; DKIM: the d= domain


@dataclass(frozen=True)
class DmarcResult:
    """The DMARC verdict for one author domain."""

    status: DmarcStatus
    author_domain: str  # RFC 8601 header.from
    policy_domain: str  # where the applied record was found (author domain when none)
    record: DmarcRecord | None = None
    policy: Policy | None = None  # the requested policy: p, sp or np (DMARCbis §4.10.1)
    applied: bool = False  # False under t=y or when pct sampling left this message out
    spf_alignment: str = "none"  # "pass", "fail" (passing but unaligned), "none"
    dkim_alignment: str = "none"
    aligned_dkim_domain: str | None = None
    organizational_domain: str | None = None
    error: str | None = None  # no-record, multiple-records, syntax, no-policy, dns, ...
    detail: str = ""

    @property
    def reject(self) -> bool:
        """A fail under p/sp/np=reject (whether or not sampling applies it)."""
        return self.status is DmarcStatus.FAIL and self.policy is Policy.REJECT

    @property
    def disposition(self) -> Policy:
        """What to do: the policy on fail, one level lower when not applied (RFC 7489 §6.6.4,
        DMARCbis §4.7 t=y), otherwise none."""
        if self.status is not DmarcStatus.FAIL or self.policy is None:
            return Policy.NONE
        return self.policy if self.applied else _LOWER[self.policy]


@dataclass
class _Entry:
    """What ``_dmarc.<domain>`` held: one record, a malformed one, or nothing usable."""

    record: DmarcRecord | None = None
    error: str | None = None  # "syntax", "no-policy", "multiple-records", "no-record"


class _Temporary(Exception):
    pass


@dataclass
class _Walker:
    resolver: Resolver
    psl: PublicSuffixList | None
    cache: dict[str, _Entry] = field(default_factory=dict)
    queries: int = 0

    async def entry(self, domain: str) -> _Entry:
        if domain in self.cache:
            return self.cache[domain]
        self.queries += 1
        try:
            answer = await self.resolver.query(f"_dmarc.{domain}", "TXT")
        except DnsTemporaryError as exc:
            raise _Temporary(str(exc)) from None
        except DnsError:
            answer = None
        texts = [t for t in answer.texts() if is_dmarc_record(t)] if answer else []
        if not texts:
            entry = _Entry(error="no-record")
        elif len(texts) > 1:  # DMARCbis §4.10 step 2: several records are all discarded
            entry = _Entry(error="multiple-records")
        else:
            try:
                entry = _Entry(parse_record(texts[0]))
            except DmarcRecordError as exc:
                entry = _Entry(error=exc.kind)
        self.cache[domain] = entry
        return entry

    async def walk(self, start: str) -> list[tuple[str, _Entry]]:
        """DMARCbis §4.10: start, then parents (shortcut to 7 labels), stop at psd=y/n."""
        found: list[tuple[str, _Entry]] = []
        for domain in _walk_targets(start):
            entry = await self.entry(domain)
            found.append((domain, entry))
            if entry.record is not None and entry.record.psd in ("y", "n"):
                break
        return found

    async def organizational_domain(self, start: str) -> str:
        """DMARCbis §4.10.2 selection, with the PSL (RFC 7489 §3.2) where the walk is silent."""
        found = await self.walk(start)
        for domain, entry in found:  # longest to shortest
            if entry.record is None:
                continue
            if entry.record.psd == "n":
                return domain  # DMARCbis §4.10.2 step 1
            if entry.record.psd == "y" and domain != start:
                return _one_below(start, domain)  # DMARCbis §4.10.2 step 2
        holders = [
            domain
            for domain, entry in found
            if entry.record is not None and not is_public_suffix(domain, psl=self.psl)
        ]
        if holders:
            return holders[-1]  # DMARCbis §4.10.2 step 3: the fewest labels
        return registrable_domain(start, psl=self.psl) or start  # RFC 7489 §3.2

    async def exists(self, domain: str) -> bool:
        """DMARCbis §A.4: a name exists unless the DNS says NXDOMAIN."""
        try:
            answer = await self.resolver.query(domain, "A")
        except DnsTemporaryError as exc:
            raise _Temporary(str(exc)) from None
        except DnsError:
            return False
        return not answer.nxdomain


def _walk_targets(start: str) -> list[str]:
    labels = start.split(".")
    targets = [start]
    count = len(labels)
    if count >= MAX_WALK_QUERIES:
        count = MAX_WALK_QUERIES - 1  # DMARCbis §4.10 step 4: shortcut to 7 labels
    else:
        count -= 1
    while count >= 1:
        targets.append(".".join(labels[-count:]))
        count -= 1
    return targets


def _one_below(start: str, suffix: str) -> str:
    labels = start.split(".")
    return ".".join(labels[-(len(suffix.split(".")) + 1) :])


def _normalize(domain: str) -> str:
    return to_ascii(domain.strip().strip("."))


def aligned(
    author: str,
    identifier: str,
    *,
    strict: bool,
    author_org: str | None = None,
    identifier_org: str | None = None,
    psl: PublicSuffixList | None = None,
) -> bool:
    """DMARCbis §4.4 / RFC 7489 §3.1: strict = same name; relaxed = same organizational domain.

    Organizational domains default to the PSL ones (RFC 7489 §3.2) when not given.
    """
    a, b = _normalize(author), _normalize(identifier)
    if not a or not b:
        return False
    if strict or a == b:
        return a == b
    org_a = author_org or registrable_domain(a, psl=psl)
    org_b = identifier_org or registrable_domain(b, psl=psl)
    return org_a is not None and org_a == org_b


async def verify(
    resolver: Resolver,
    author_domain: str,
    *,
    spf: Identifier | None = None,
    dkim: Sequence[Identifier] = (),
    psl: PublicSuffixList | None = None,
    rng: random.Random | None = None,
) -> DmarcResult:
    """Evaluate DMARC for one author domain over given SPF and DKIM results."""
    author = _normalize(author_domain)
    if not re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", author) or len(author) > 253:
        return DmarcResult(DmarcStatus.PERMERROR, author, author, error="bad-author-domain")
    walker = _Walker(resolver, psl)
    try:
        return await _verify(walker, author, spf, dkim, rng or random.Random())
    except _Temporary as exc:
        return DmarcResult(
            DmarcStatus.TEMPERROR, author, author, error="dns", detail=f"DNS error: {exc}"
        )


async def _discover(walker: _Walker, author: str) -> tuple[str, _Entry, str]:
    """DMARCbis §4.10.1: the record to apply, its domain, and the org domain."""
    own = await walker.entry(author)
    org = await walker.organizational_domain(author)
    if own.error != "no-record" and own.error != "multiple-records":
        return author, own, org  # a record (even a bad one) at the author domain applies
    if org != author:
        org_entry = await walker.entry(org)
        if org_entry.error not in ("no-record", "multiple-records"):
            return org, org_entry, org
    for domain, entry in await walker.walk(author):
        if entry.record is not None and entry.record.psd == "y" and domain != author:
            return domain, entry, org  # the PSD's record (DMARCbis §4.10.1, RFC 9091)
    return author, own, org


async def _verify(
    walker: _Walker,
    author: str,
    spf: Identifier | None,
    dkim: Sequence[Identifier],
    rng: random.Random,
) -> DmarcResult:
    policy_domain, entry, org = await _discover(walker, author)
    base = DmarcResult(DmarcStatus.NONE, author, policy_domain, organizational_domain=org)
    if entry.record is None:
        error = entry.error or "no-record"
        if error == "syntax":  # a malformed record: permerror, nothing applied
            return replace(base, status=DmarcStatus.PERMERROR, error=error)
        return replace(base, error=error)  # no record / no policy: DMARC does not apply
    record = entry.record
    policy = record.policy
    if policy_domain != author:  # DMARCbis §4.10.1: sp for existing, np for absent subdomains
        policy = record.subdomain_policy or record.policy
        np = record.nonexistent_policy
        if np is not None and np != policy and not await walker.exists(author):
            policy = np
    applied = not record.testing and (record.pct >= 100 or rng.random() * 100 < record.pct)
    result = replace(base, record=record, policy=policy, applied=applied)

    async def is_aligned(domain: str, mode: str) -> bool:
        domain = _normalize(domain)
        if not domain:
            return False
        if mode == "s" or domain == author:
            return domain == author
        return await walker.organizational_domain(domain) == org

    temporary = False
    spf_alignment = "none"
    if spf is not None and spf.domain:
        if spf.result == "pass":
            spf_alignment = "pass" if await is_aligned(spf.domain, record.aspf) else "fail"
        elif spf.result == "temperror" and await is_aligned(spf.domain, record.aspf):
            temporary = True
    dkim_alignment = "none"
    aligned_dkim: str | None = None
    for signature in dkim:
        if signature.result == "pass":
            if await is_aligned(signature.domain, record.adkim):
                dkim_alignment, aligned_dkim = "pass", _normalize(signature.domain)
                break
            dkim_alignment = "fail"
        elif signature.result == "temperror" and await is_aligned(signature.domain, record.adkim):
            temporary = True
    result = replace(
        result,
        spf_alignment=spf_alignment,
        dkim_alignment=dkim_alignment,
        aligned_dkim_domain=aligned_dkim,
    )
    if "pass" in (spf_alignment, dkim_alignment):  # DMARCbis §5.3.5
        return replace(result, status=DmarcStatus.PASS)
    if temporary:  # DMARCbis §5.3.6: cannot pass or fail
        return replace(result, status=DmarcStatus.TEMPERROR, detail="aligned identifier temperror")
    return replace(result, status=DmarcStatus.FAIL)


_SEVERITY = {
    DmarcStatus.FAIL: 0,
    DmarcStatus.TEMPERROR: 1,
    DmarcStatus.PERMERROR: 2,
    DmarcStatus.PASS: 3,
    DmarcStatus.NONE: 4,
}
_STRICTNESS = {Policy.REJECT: 0, Policy.QUARANTINE: 1, Policy.NONE: 2, None: 3}


async def verify_authors(
    resolver: Resolver,
    domains: Sequence[str],
    *,
    spf: Identifier | None = None,
    dkim: Sequence[Identifier] = (),
    psl: PublicSuffixList | None = None,
    rng: random.Random | None = None,
) -> DmarcResult:
    """DMARCbis §5.3.1: evaluate every author domain; keep the most severe result."""
    unique = list(dict.fromkeys(_normalize(d) for d in domains if _normalize(d)))
    if not unique:  # DMARCbis §5.3.1: no author domain, validation not possible
        return DmarcResult(DmarcStatus.PERMERROR, "", "", error="no-author-domain")
    results = [
        await verify(resolver, domain, spf=spf, dkim=dkim, psl=psl, rng=rng) for domain in unique
    ]
    return min(results, key=lambda r: (_SEVERITY[r.status], _STRICTNESS[r.policy]))


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_ANGLE = re.compile(r"<([^<>]*)>")


def _strip_comments(text: str) -> str:
    out: list[str] = []
    depth = 0
    escaped = False
    for char in text:
        if escaped:
            escaped = False
            if depth:
                continue
        elif char == "\\":
            escaped = True
            if depth:
                continue
        elif char == "(":
            depth += 1
            continue
        elif char == ")" and depth:
            depth -= 1
            continue
        if not depth:
            out.append(char)
    return "".join(out)


def author_domains(from_value: str) -> list[str]:
    """The domains of every address in an RFC 5322 From field value (DMARCbis §5.3.1).

    Tolerant by design (RFC 5322 §3.4 with obsolete and broken forms): quoted strings and
    comments are skipped, each comma-separated mailbox gives the domain of its angle-addr or
    bare addr-spec. U-labels are converted to A-labels. An empty list means no author domain.
    """
    text = _QUOTED.sub(" ", from_value.replace("\r\n", " ").replace("\n", " "))
    text = _strip_comments(text)
    domains: list[str] = []
    for piece in text.split(","):
        candidates = [c for c in _ANGLE.findall(piece) if "@" in c]
        if not candidates:
            candidates = [word for word in re.split(r"[\s<>]+", piece) if "@" in word]
        if not candidates:
            continue
        domain = candidates[-1].rpartition("@")[2].strip().strip(".>").strip()
        domain = _normalize(domain)
        if domain and re.fullmatch(r"[A-Za-z0-9._-]+", domain):
            domains.append(domain)
    return domains
