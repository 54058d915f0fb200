"""Recipient resolution: an envelope address to the local mailboxes that get a copy.

Order for one address: an account with exactly that address; an alias with that source
(expanded recursively); for ``user+detail@domain`` (RFC 5233 §2 subaddress, "+" separator)
the account ``user@domain`` — into the mailbox named ``detail`` when the account has one,
else INBOX — or the alias ``user@domain``; finally the catch-all alias ``@domain``. Alias
targets in domains that are not local are returned as remote addresses. Expansion stops at a
depth limit (reported as a loop, RFC 5321 §6.3 "mail loops"); a cycle among aliases is
expanded once. Copies are de-duplicated per account: an account reached through several
addresses gets one copy (RFC 5321 §3.9.1: an alias delivers to each real target).

Leaves out: Sieve (hato.delivery.sieve runs it after resolution), sending to remote targets
(the SMTP session queues them, with SRS for remote senders; without an outbound queue the
policy refuses them temporarily), SRS addresses (hato.servers.smtp_hooks), external alias
sources.

Security: the depth limit and the visited set bound the number of store lookups per
recipient; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hato.core.address import Address
from hato.core.clock import Clock, SystemClock
from hato.policy.smtp import RecipientFacts
from hato.store.api import MailStore
from hato.store.model import INBOX, Account, DeliveryTarget

MAX_ALIAS_DEPTH = 10
SUBADDRESS_SEPARATOR = "+"  # RFC 5233 §1 uses "+" in its examples; the common choice


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one address goes."""

    address: str  # the key that was resolved
    local_domain: bool
    targets: tuple[DeliveryTarget, ...] = ()
    remote: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()  # accounts reached that are disabled
    loop: bool = False

    def facts(self) -> RecipientFacts:
        return RecipientFacts(
            local_domain=self.local_domain,
            local_targets=len(self.targets),
            remote_targets=len(self.remote),
            disabled=len(self.disabled),
            loop=self.loop,
        )


@dataclass(slots=True)
class _Walk:
    targets: dict[int, DeliveryTarget] = field(default_factory=dict)
    remote: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    loop: bool = False


def _split_key(key: str) -> tuple[str, str]:
    local, _, domain = key.rpartition("@")
    return local, domain


class RecipientResolver:
    """Resolves addresses against the store's domains, accounts and aliases.

    Whether a domain is local is remembered for ``domain_ttl`` seconds (domains change
    rarely; every RCPT would otherwise wait for the store)."""

    def __init__(
        self,
        store: MailStore,
        *,
        max_depth: int = MAX_ALIAS_DEPTH,
        clock: Clock | None = None,
        domain_ttl: float = 5.0,
    ) -> None:
        self._store = store
        self._max_depth = max_depth
        self._clock = clock or SystemClock()
        self._domain_ttl = domain_ttl
        self._domains: dict[str, tuple[bool, float]] = {}

    async def has_domain(self, domain: str) -> bool:
        now = self._clock.monotonic()
        cached = self._domains.get(domain)
        if cached is not None and cached[1] > now:
            return cached[0]
        local = await self._store.has_domain(domain)
        if len(self._domains) > 10_000:
            self._domains.clear()
        self._domains[domain] = (local, now + self._domain_ttl)
        return local

    async def is_local_domain(self, address: Address) -> bool:
        if address.is_literal:
            return False  # address literals are never local: no mail to user@[ip]
        return await self.has_domain(address.domain)

    async def resolve(self, address: Address) -> Resolution:
        local = await self.is_local_domain(address)
        if not local:
            return Resolution(address.key, local_domain=False, remote=(address.key,))
        walk = _Walk()
        await self._expand(address.key, walk, depth=0)
        return Resolution(
            address.key,
            local_domain=True,
            targets=tuple(walk.targets.values()),
            remote=tuple(dict.fromkeys(walk.remote)),
            disabled=tuple(walk.disabled),
            loop=walk.loop,
        )

    async def _expand(self, key: str, walk: _Walk, *, depth: int) -> None:
        if depth > self._max_depth:
            walk.loop = True
            return
        if key in walk.seen:
            return  # an alias cycle: every address is expanded once
        walk.seen.add(key)
        local, domain = _split_key(key)
        if not domain or domain.startswith("[") or not await self.has_domain(domain):
            walk.remote.append(key)
            return
        store = self._store
        account = await store.get_account(key)
        if account is not None:
            self._add(account, INBOX, walk)
            return
        alias = await store.get_alias(key)
        if alias is not None:
            await self._expand_all(alias.targets, walk, depth=depth + 1)
            return
        user, sep, detail = local.partition(SUBADDRESS_SEPARATOR)
        if sep and user and detail:
            base = f"{user}@{domain}"
            account = await store.get_account(base)
            if account is not None:
                mailbox = await store.get_mailbox(account.id, detail)
                self._add(account, mailbox.name if mailbox is not None else INBOX, walk)
                return
            alias = await store.get_alias(base)
            if alias is not None:
                await self._expand_all(alias.targets, walk, depth=depth + 1)
                return
        catch_all = await store.get_alias(f"@{domain}")
        if catch_all is not None:
            await self._expand_all(catch_all.targets, walk, depth=depth + 1)

    async def _expand_all(self, keys: Iterable[str], walk: _Walk, *, depth: int) -> None:
        for target in keys:
            await self._expand(target, walk, depth=depth)

    @staticmethod
    def _add(account: Account, mailbox: str, walk: _Walk) -> None:
        if not account.enabled:
            walk.disabled.append(account.address)
            return
        walk.targets.setdefault(account.id, DeliveryTarget(account.id, mailbox))


def merge_targets(resolutions: Iterable[Resolution]) -> list[DeliveryTarget]:
    """All targets of a transaction, one per account (the first address that reached it wins)."""
    merged: dict[int, DeliveryTarget] = {}
    for resolution in resolutions:
        for target in resolution.targets:
            merged.setdefault(target.account_id, target)
    return list(merged.values())
