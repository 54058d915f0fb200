"""SMTP envelope decisions as values: who may send, which recipients are accepted, no relay.

Implements the relay rules of RFC 5321 §3.6.2 and §7.1 (an MX accepts only recipients in its
own domains: "550 relaying denied"), the submission rules of RFC 6409 §4.3 and §6.1
(authentication required, RFC 4954 §6 "530 5.7.0"; the sender must be an address the account
owns, "553 5.7.1"), recipient checks (RFC 5321 §3.3 "550 5.1.1" for an unknown local user) and
the status codes of RFC 3463. Each check returns a frozen ``Verdict(action, reply, reasons)``
with reasons from the closed ``Reason`` enum; the SMTP server only renders it.

Leaves out: SPF/DKIM/DMARC (``hato.policy.inbound`` at the end of DATA), per-account
submission limits (``hato.policy.ratelimit``), DNSBL and greylisting;
remote delivery when no outbound queue runs (``outbound=False``): every remote recipient
a local user submits is then refused temporarily in ``OUTBOUND_UNAVAILABLE`` below — never
accepted and lost.

Security: the relay decision depends only on the local-domain lookup and authentication, so
address tricks (``user%remote@local``, ``remote!user@local``, quoted local parts holding
"@", source routes, IP literals) can at worst name an unknown local user (550 5.1.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hato.core.address import Address
from hato.core.errors import AddressError
from hato.core.reply import Reply
from hato.store.api import MailStore
from hato.store.model import Account


class Role(enum.Enum):
    """What a listener is for."""

    MX = "mx"  # mail from the internet for local domains (RFC 5321)
    SUBMISSION = "submission"  # mail from local users (RFC 6409; 465 per RFC 8314)


class Action(enum.Enum):
    ACCEPT = "accept"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


class Reason(enum.Enum):
    SENDER_ACCEPTED = "sender_accepted"
    SENDER_OWNED = "sender_owned"
    SENDER_NOT_OWNED = "sender_not_owned"
    AUTH_REQUIRED = "auth_required"
    LOCAL_RECIPIENT = "local_recipient"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    DISABLED_RECIPIENT = "disabled_recipient"
    RELAY_DENIED = "relay_denied"
    OUTBOUND_UNAVAILABLE = "outbound_unavailable"
    ALIAS_LOOP = "alias_loop"
    REMOTE_RECIPIENT = "remote_recipient"  # queued for outbound delivery
    FORWARDED = "forwarded"  # a local alias with remote targets, queued for outbound delivery
    SRS_BOUNCE = "srs_bounce"  # a valid SRS address of ours: routed back to the original sender
    SRS_INVALID = "srs_invalid"  # SRS syntax with a bad hash or an expired timestamp
    RATE_LIMITED = "rate_limited"  # per-account submission limit (hato.policy.ratelimit)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reply: Reply
    reasons: tuple[Reason, ...]

    @property
    def accepted(self) -> bool:
        return self.action is Action.ACCEPT


# The outbound queue comes later: until then a remote recipient from an authenticated user
# is refused temporarily, so the client keeps the message and tells its user (RFC 5321
# §4.2.1: 4yz means "try again later"); nothing is accepted that cannot be delivered.
OUTBOUND_UNAVAILABLE = Reply(451, "4.3.0", "Outbound delivery not available, try again later")

SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")  # RFC 3463 X.7.1, RFC 5321 §3.6.2
UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")  # RFC 3463 X.1.1
DISABLED_USER = Reply(550, "5.2.1", "Mailbox disabled")  # RFC 3463 X.2.1
ALIAS_LOOP = Reply(554, "5.4.6", "Alias expansion loop")  # RFC 3463 X.4.6 routing loop


def _verdict(action: Action, reply: Reply, *reasons: Reason) -> Verdict:
    return Verdict(action, reply, reasons)


@dataclass(frozen=True, slots=True)
class RecipientFacts:
    """What recipient resolution found for one RCPT (see hato.delivery.recipients)."""

    local_domain: bool
    local_targets: int = 0
    remote_targets: int = 0
    disabled: int = 0
    loop: bool = False


async def owns_sender(store: MailStore, account: Account, sender: Address) -> bool:
    """True when ``sender`` is the account's address, a ``+detail`` of it (RFC 5233), or an
    alias whose targets include the account."""
    key = sender.key
    if key == account.address:
        return True
    user, detail = sender.split_detail()
    if detail is not None:
        try:
            base = Address.parse(f"{user}@{sender.domain}").key
        except AddressError:
            return False
        if base == account.address:
            return True
        key_alternatives = [key, base]
    else:
        key_alternatives = [key]
    for candidate in key_alternatives:
        alias = await store.get_alias(candidate)
        if alias is not None and account.address in alias.targets:
            return True
    return False


def check_sender(
    *, role: Role, sender: Address | None, account: Account | None, owned: bool
) -> Verdict:
    """MAIL FROM. The MX takes any well-formed reverse-path (content checks come later);
    submission needs an authenticated account that owns the sender (RFC 6409 §6.1)."""
    if role is Role.MX:
        return _verdict(Action.ACCEPT, SENDER_OK, Reason.SENDER_ACCEPTED)
    if account is None:
        return _verdict(Action.REJECT, AUTH_REQUIRED, Reason.AUTH_REQUIRED)
    if sender is None or not owned:
        # RFC 6409 §6.1: the submission server may refuse a sender the user may not use;
        # a null reverse-path is for bounces, which users do not submit.
        return _verdict(Action.REJECT, SENDER_NOT_OWNED, Reason.SENDER_NOT_OWNED)
    return _verdict(Action.ACCEPT, SENDER_OK, Reason.SENDER_OWNED)


def check_recipient(
    *, role: Role, authenticated: bool, facts: RecipientFacts, outbound: bool = False
) -> Verdict:
    """RCPT TO: local recipients are resolved; anything else is relaying. ``outbound``: an
    outbound queue runs, so remote recipients of authenticated users (and local aliases
    forwarding elsewhere) are accepted and queued in the same commit as local copies."""
    if role is Role.SUBMISSION and not authenticated:
        return _verdict(Action.REJECT, AUTH_REQUIRED, Reason.AUTH_REQUIRED)
    if not facts.local_domain:
        if role is Role.MX:
            return _verdict(Action.REJECT, RELAY_DENIED, Reason.RELAY_DENIED)
        if outbound:  # RFC 6409 §4.3: an authenticated submission may go anywhere
            return _verdict(Action.ACCEPT, RECIPIENT_OK, Reason.REMOTE_RECIPIENT)
        return _verdict(Action.TEMPFAIL, OUTBOUND_UNAVAILABLE, Reason.OUTBOUND_UNAVAILABLE)
    if facts.loop:
        return _verdict(Action.REJECT, ALIAS_LOOP, Reason.ALIAS_LOOP)
    if facts.remote_targets:
        if outbound:  # RFC 5321 §3.9.1: an alias delivers to each of its real targets
            return _verdict(Action.ACCEPT, RECIPIENT_OK, Reason.FORWARDED)
        # A local alias forwarding elsewhere needs the outbound queue too.
        return _verdict(Action.TEMPFAIL, OUTBOUND_UNAVAILABLE, Reason.OUTBOUND_UNAVAILABLE)
    if facts.local_targets:
        return _verdict(Action.ACCEPT, RECIPIENT_OK, Reason.LOCAL_RECIPIENT)
    if facts.disabled:
        return _verdict(Action.REJECT, DISABLED_USER, Reason.DISABLED_RECIPIENT)
    return _verdict(Action.REJECT, UNKNOWN_USER, Reason.UNKNOWN_RECIPIENT)


SRS_INVALID = Reply(550, "5.1.1", "Invalid or expired SRS address")  # RFC 3463 X.1.1


def check_srs_recipient(*, valid: bool, outbound: bool) -> Verdict:
    """RCPT TO one of our SRS addresses (hato.outbound.srs): a valid one is routed back to
    the original sender through the outbound queue; a forged or expired one is unknown."""
    if not valid:
        return _verdict(Action.REJECT, SRS_INVALID, Reason.SRS_INVALID)
    if outbound:
        return _verdict(Action.ACCEPT, RECIPIENT_OK, Reason.SRS_BOUNCE)
    return _verdict(Action.TEMPFAIL, OUTBOUND_UNAVAILABLE, Reason.OUTBOUND_UNAVAILABLE)
