"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record, the HTTPS policy, MX matching, a cache.

Implements RFC 8461 §3.1 (TXT record grammar: ``v=STSv1``, ``id`` of 1-32 alphanumerics,
extensions), §3.2 (policy file: version, mode, max_age of at most 10 digits, mx patterns,
extensions; CRLF or LF line ends), §3.3 (the policy is fetched from
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with a PKIX-valid certificate, HTTP 200
only, no redirects, a size limit and a timeout; after a failed fetch no new attempt for the
same record id within five minutes), §4.1 (MX host matching: exact, or a ``*.`` wildcard
matching one left-most label), §5.1 (policy discovery and refresh: a cached policy is used
until max_age expires, also when the TXT record is gone; a new record id triggers a fetch; a
failed fetch keeps the cached policy; a policy in use is fetched again once a day, so an
enforce policy in steady use does not lapse), max_age capped at 31557600 seconds (§3.2),
with a ``StsPolicyStore`` the cache persisted in the store (a restart keeps enforcing: a
forgotten policy would let an attacker who blocks the fetch downgrade delivery), and the
proactive refresh of §3.3 / §10.2 (``refresh_due``, started by the queue runner's hourly
housekeeping: every cached, unexpired policy fetched a day ago or more is fetched again,
whatever its TXT record says, mail to its domain or not; a failure keeps the cached policy
and logs a warning, ``outbound.mtasts.refresh_failed``, unless the mode is "none").

Leaves out: HTTP/2; a refresh round is bounded (``REFRESH_BATCH`` policies, the oldest
first), so a cache larger than that per hour is refreshed over several rounds.

Security: the fetch only follows no redirect, reads at most ``MAX_POLICY`` octets, trusts
only the configured CA store, and connects to the address DNS gives for the policy host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hato.core import log
from hato.core.address import domain_to_ascii
from hato.core.clock import Clock
from hato.core.dns import DnsError, Resolver
from hato.core.errors import HatoError
from hato.store.api import CachedStsPolicy, StsPolicyStore

MAX_POLICY = 64 * 1024  # RFC 8461 §3.3: senders may limit the policy size (64 KB suggested)
MAX_AGE_CAP = 31_557_600  # RFC 8461 §3.2: max_age up to 31557600 (about one year)
FETCH_TIMEOUT = 60.0  # RFC 8461 §3.3: "a timeout of 60 seconds" is suggested
RETRY_FETCH = 300.0  # RFC 8461 §3.3: after a failed fetch, 5 minutes or more per version id
REFRESH_AFTER = 86400.0  # a cached policy is fetched again after a day (§3.3: "once per day")
REFRESH_BATCH = 200  # policies refreshed per housekeeping round, at most
REFRESH_PARALLEL = 4  # policy fetches of one refresh round at once

# RFC 8461 §3.1: sts-id = "id=" 1*32(ALPHA / DIGIT)
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
# RFC 8461 §3.1: sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# RFC 8461 §3.1: sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_FIELD_DELIM = re.compile(r"[ \t]*;[ \t]*")
# RFC 8461 §3.2: sts-policy-ext-value = sts-policy-vchar *(*WSP sts-policy-vchar)
_POLICY_VALUE = re.compile(r"[\x21-\x7e](?:[ \t]*[\x21-\x7e])*")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})+")
_MAX_AGE = re.compile(r"[0-9]{1,10}")


class MtaStsError(HatoError):
    """A record or policy is invalid, or the policy could not be fetched."""

    temporary = True
    reply = "MTA-STS policy unavailable"


@dataclass(frozen=True, slots=True)
class StsRecord:
    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StsPolicy:
    mode: str  # "enforce", "testing" or "none"
    max_age: int
    mx: tuple[str, ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()

    def matches(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_record(text: str) -> StsRecord:
    """RFC 8461 §3.1; MtaStsError when invalid."""
    if not text.startswith("v=STSv1"):
        raise MtaStsError("record does not start with v=STSv1")
    rest = text[len("v=STSv1") :]
    fields = _FIELD_DELIM.split(rest)
    if fields[0] != "":
        raise MtaStsError("garbage after v=STSv1")
    fields = fields[1:]
    if fields and fields[-1] == "":
        fields = fields[:-1]  # one trailing delimiter is allowed
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for item in fields:
        name, eq, value = item.partition("=")
        if not eq:
            raise MtaStsError(f"field without value: {item!r}")
        if name == "id":
            if record_id is not None or not _ID.fullmatch(value):
                raise MtaStsError("invalid id")
            record_id = value
        elif _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value):
            extensions.append((name, value))
        else:
            raise MtaStsError(f"invalid field {item!r}")
    if record_id is None:
        raise MtaStsError("record has no id")
    return StsRecord(record_id, tuple(extensions))


def parse_policy(text: str) -> StsPolicy:
    """RFC 8461 §3.2; MtaStsError when invalid."""
    version = mode = None
    max_age: int | None = None
    mx: list[str] = []
    extensions: list[tuple[str, str]] = []
    for raw in re.split(r"\r?\n", text):
        if raw == "":
            continue
        name, colon, value = raw.partition(":")
        if not colon:
            raise MtaStsError(f"line without colon: {raw!r}")
        value = value.strip(" \t")
        # RFC 8461 §3.2: a duplicated non-repeated field: all entries but the first ignored
        if name == "version":
            version = value if version is None else version
        elif name == "mode":
            mode = value if mode is None else mode
        elif name == "max_age":
            if max_age is not None:
                continue
            if not _MAX_AGE.fullmatch(value):
                raise MtaStsError("max_age must be 1 to 10 digits")
            max_age = min(int(value), MAX_AGE_CAP)
        elif name == "mx":
            if not _MX_PATTERN.fullmatch(value):
                raise MtaStsError(f"invalid mx pattern {value!r}")
            mx.append(value.lower())
        elif _EXT_NAME.fullmatch(name) and _POLICY_VALUE.fullmatch(value):
            extensions.append((name, value))
        else:
            raise MtaStsError(f"invalid field {raw!r}")
    if version != "STSv1":
        raise MtaStsError("version must be STSv1")
    if mode not in ("enforce", "testing", "none"):
        raise MtaStsError("mode must be enforce, testing or none")
    if max_age is None:
        raise MtaStsError("max_age is missing")
    if mode != "none" and not mx:
        raise MtaStsError("a policy in enforce or testing mode needs mx")  # RFC 8461 §3.2
    return StsPolicy(mode, max_age, tuple(mx), tuple(extensions))


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: ``*.example.com`` matches exactly one extra left-most label."""
    pattern, host = pattern.lower(), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, parent = host.partition(".")
        return bool(label) and bool(dot) and parent == pattern[2:]
    return pattern == host


Fetch = Callable[[str], Awaitable[str]]


@dataclass(slots=True)
class _Cached:
    record_id: str
    policy: StsPolicy
    text: str
    fetched: float
    expires: float


@dataclass
class PolicyCache:
    """Looks up and caches the MTA-STS policy of recipient domains (RFC 8461 §5.1); with
    ``store`` the cache is written through to it and read back after a restart."""

    resolver: Resolver
    fetch: Fetch
    clock: Clock
    store: StsPolicyStore | None = None
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _loaded: set[str] = field(default_factory=set)  # domains already read from the store
    _failed: dict[tuple[str, str], float] = field(default_factory=dict)  # (domain, id) -> when
    _refresher: asyncio.Task[None] | None = None  # the background refresh, when running

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy to apply to ``domain`` now, or None when it has none."""
        now = self.clock.now()
        cached = await self._cached(domain, now)
        record = await self._record(domain)
        if record is None:
            # RFC 8461 §5.1: no live record: a valid cached policy still applies
            return cached.policy if cached is not None else None
        if (
            cached is not None
            and cached.record_id == record.id
            and now - cached.fetched < REFRESH_AFTER
        ):
            return cached.policy
        failed = self._failed.get((domain, record.id))
        if failed is not None and now - failed < RETRY_FETCH:
            return cached.policy if cached is not None else None  # RFC 8461 §3.3
        try:
            text = await self.fetch(domain)
            policy = parse_policy(text)
        except (MtaStsError, OSError, TimeoutError, ssl.SSLError, HatoError, UnicodeError):
            self._failed[(domain, record.id)] = now
            # RFC 8461 §5.1: keep using a cached, unexpired policy when a refresh fails
            return cached.policy if cached is not None else None
        await self._save(domain, record.id, policy, text, now)
        return policy

    async def _save(
        self, domain: str, record_id: str, policy: StsPolicy, text: str, now: float
    ) -> None:
        """Cache a policy just fetched (memory and store): it expires max_age from now."""
        self._failed.pop((domain, record_id), None)
        entry = _Cached(record_id, policy, text, now, now + policy.max_age)
        self._cache[domain] = entry
        if self.store is not None:
            await self.store.put_sts_policy(
                CachedStsPolicy(domain, record_id, text, entry.fetched, entry.expires)
            )

    # -- RFC 8461 §3.3, §10.2: the proactive refresh ---------------------------------------
    def refresh_in_background(self) -> bool:
        """Start ``refresh_due`` as a task unless one is still running; True if started.
        The caller (the queue runner's housekeeping) never waits for the fetches."""
        if self._refresher is not None and not self._refresher.done():
            return False
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_logged())
        return True

    async def aclose(self) -> None:
        """Stop a background refresh still running (at shutdown)."""
        task, self._refresher = self._refresher, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh_due()
        except Exception as exc:  # a background task: report, never lose the error
            log.event("outbound.mtasts.refresh_error", level=logging.ERROR, error=repr(exc)[:300])

    async def refresh_due(self, *, limit: int = REFRESH_BATCH) -> int:
        """RFC 8461 §3.3: "MTAs SHOULD proactively refresh cached policies before they
        expire; a suggested refresh frequency is once per day": fetch again every cached,
        unexpired policy last fetched ``REFRESH_AFTER`` ago or more (at most ``limit``, the
        oldest first, ``REFRESH_PARALLEL`` at once), whether mail goes to its domain or
        not. Returns how many were refreshed."""
        now = self.clock.now()
        due: dict[str, _Cached] = {
            domain: c
            for domain, c in self._cache.items()
            if c.fetched < now - REFRESH_AFTER and c.expires > now
        }
        if self.store is not None:
            rows = await self.store.due_sts_policies(
                fetched_before=now - REFRESH_AFTER, now=now, limit=limit
            )
            for row in rows:
                known = self._cache.get(row.domain)
                if known is not None and known.fetched > row.fetched:
                    continue  # fetched since: the memory copy is the newer one
                try:
                    policy = parse_policy(row.policy)
                except MtaStsError:
                    continue  # unreadable: the use path treats it as never fetched
                due.setdefault(
                    row.domain,
                    _Cached(row.record_id, policy, row.policy, row.fetched, row.expires),
                )
        chosen = sorted(due.items(), key=lambda item: (item[1].fetched, item[0]))[:limit]
        slots = asyncio.Semaphore(REFRESH_PARALLEL)

        async def one(domain: str, cached: _Cached) -> bool:
            async with slots:
                return await self._refresh(domain, cached)

        results = await asyncio.gather(*(one(d, c) for d, c in chosen))
        return sum(results)

    async def _refresh(self, domain: str, cached: _Cached) -> bool:
        """Fetch the live policy of ``domain`` (RFC 8461 §10.2: "regardless of the state of
        the _mta-sts TXT record"); on failure keep the cached one and warn the operator."""
        now = self.clock.now()
        record = await self._record(domain)
        record_id = record.id if record is not None else cached.record_id
        failed = self._failed.get((domain, record_id))
        if failed is not None and now - failed < RETRY_FETCH:
            return False  # RFC 8461 §3.3: not again within five minutes for this id
        try:
            text = await self.fetch(domain)
            policy = parse_policy(text)
        except (MtaStsError, OSError, TimeoutError, ssl.SSLError, HatoError, UnicodeError) as exc:
            self._failed[(domain, record_id)] = now
            if cached.policy.mode != "none":
                # RFC 8461 §3.3, §10.2: alert administrators, unless the mode is "none"
                log.event(
                    "outbound.mtasts.refresh_failed",
                    level=logging.WARNING,
                    domain=domain,
                    mode=cached.policy.mode,
                    expires_in=int(cached.expires - now),
                    error=_reason(exc),
                )
            return False
        await self._save(domain, record_id, policy, text, now)
        log.event("outbound.mtasts.refreshed", domain=domain, mode=policy.mode)
        return True

    async def _cached(self, domain: str, now: float) -> _Cached | None:
        """The unexpired cached entry of ``domain`` (read from the store on first use)."""
        cached = self._cache.get(domain)
        if cached is None and self.store is not None and domain not in self._loaded:
            self._loaded.add(domain)
            row = await self.store.get_sts_policy(domain)
            if row is not None:
                try:
                    policy = parse_policy(row.policy)
                except MtaStsError:
                    policy = None  # unreadable: as if never fetched
                if policy is not None:
                    cached = _Cached(row.record_id, policy, row.policy, row.fetched, row.expires)
                    self._cache[domain] = cached
        if cached is not None and cached.expires <= now:
            # RFC 8461 §3.2 max_age: an expired policy no longer applies
            del self._cache[domain]
            if self.store is not None:
                await self.store.delete_sts_policy(domain)
            return None
        return cached

    async def purge(self) -> int:
        """Forget expired policies (memory and store); returns how many stored ones went."""
        now = self.clock.now()
        for domain in [d for d, c in self._cache.items() if c.expires <= now]:
            del self._cache[domain]
        self._failed = {k: t for k, t in self._failed.items() if now - t < RETRY_FETCH}
        if self.store is None:
            return 0
        return await self.store.purge_sts_policies(before=now)

    async def _record(self, domain: str) -> StsRecord | None:
        try:
            answer = await self.resolver.query(f"_mta-sts.{domain_to_ascii(domain)}", "TXT")
        except DnsError:
            return None
        # RFC 8461 §3.1: records not starting with v=STSv1 are ignored; more than one: none
        candidates = [t for t in answer.texts() if t.startswith("v=STSv1")]
        if len(candidates) != 1:
            return None
        try:
            return parse_record(candidates[0])
        except MtaStsError:
            return None


class HttpsFetcher:
    """Fetches ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461 §3.3).

    ``port`` and ``context`` are injectable for tests (a loopback server and a test CA)."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        context: ssl.SSLContext,
        port: int = 443,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self._resolver = resolver
        self._context = context
        self._port = port
        self._timeout = timeout

    async def __call__(self, domain: str) -> str:
        host = f"mta-sts.{domain_to_ascii(domain)}"
        return await asyncio.wait_for(self._get(host), self._timeout)

    async def _get(self, host: str) -> str:
        addresses: list[str] = []
        for kind in ("AAAA", "A"):
            try:
                addresses += (await self._resolver.query(host, kind)).texts()
            except DnsError:
                continue
        if not addresses:
            raise MtaStsError(f"no address for {host}")
        reader, writer = await asyncio.open_connection(
            addresses[0], self._port, ssl=self._context, server_hostname=host
        )
        try:
            request = (
                f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                "Connection: close\r\nUser-Agent: Hato\r\n\r\n"
            )
            writer.write(request.encode("ascii"))
            await writer.drain()
            data = await reader.read(MAX_POLICY + 8192)
            while len(data) <= MAX_POLICY + 8192:
                more = await reader.read(8192)
                if not more:
                    break
                data += more
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
        return _http_body(data)


def _reason(exc: BaseException) -> str:
    """A short log text for a failed fetch."""
    if isinstance(exc, HatoError):
        return exc.detail[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def _http_body(data: bytes) -> str:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise MtaStsError("malformed HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    # RFC 8461 §3.3: only 200 counts; redirects MUST NOT be followed
    if len(status) < 2 or status[1] != "200":
        raise MtaStsError(f"policy fetch answered {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not headers.get("content-type", "").lower().startswith("text/plain"):
        raise MtaStsError("policy is not text/plain")  # RFC 8461 §3.2
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    if len(body) > MAX_POLICY:
        raise MtaStsError("policy too large")
    return body.decode("utf-8")


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
        if len(out) > MAX_POLICY:
            raise MtaStsError("policy too large")
    return out
