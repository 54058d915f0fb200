"""Sieve at local delivery: each recipient's active script decides where its copy goes.

Implements RFC 5228 §2.10 (the actions of a run; implicit keep when nothing cancels it, and
on any compile or runtime error, §2.10.6), §4.1 fileinto / §4.2 redirect / §4.3 keep /
§4.4 discard, RFC 5232 flags on stored copies, RFC 5490 §3.2 ``fileinto :create``, RFC 8579
``:specialuse``, RFC 5429 reject/ereject, RFC 7352 §3 duplicate marks (recorded only after
the copies are committed, so a failed delivery never makes a later one a "duplicate") and
RFC 5230 §4.2 "once per :days" (the interpreter asks the store's tracking list; the key is
recorded when the reply is handed on), RFC 6609 ``include :personal`` from the account's
own scripts, and the check ManageSieve and the CLI use (RFC 5804 §2.6: the same validation as
when compiling for execution).

Outgoing mail: with ``sending`` (an outbound queue exists; the SMTP path), redirect, vacation,
notify and reject/ereject leave this module as decisions that ``hato.delivery.sieve_send``
turns into queue entries (RFC 5228 §4.2: a redirect cancels the implicit keep; RFC 5429: a
rejected message gets no copy), and a vacation reply is recorded as answered (RFC 5230 §4.2)
only once it was queued. Without ``sending`` (no outbound queue) they are logged as
``sieve.redirect.pending`` / ``sieve.vacation.pending`` / ``sieve.notify.pending`` and a copy
is kept whenever a redirect or reject would have removed it: mail is never lost.

Left out: header edits (RFC 5293) on the stored copy (the original is stored), ``envelope
:auth`` (delivery does not know the submitting account), the exact recipient when several
recipients reach one account (the one whose address matches the account is used).

Security: scripts run with bounded resources (``LIMITS``) in a worker thread; messages larger
than ``MAX_SIEVE_MESSAGE`` skip Sieve (implicit keep); script text and message content are
never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hato.codec.sieve import parse_script, run_script
from hato.codec.sieve.actions import (
    Action,
    Discard,
    DuplicateMark,
    Ereject,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from hato.codec.sieve.language import ALL_EXTENSIONS
from hato.codec.sieve.runtime import Envelope as SieveEnvelope
from hato.codec.sieve.runtime import SieveLimits
from hato.codec.smtp_events import Envelope
from hato.core import log
from hato.core.clock import FixedClock
from hato.core.errors import AlreadyExists, SieveError, StoreError, UsageError
from hato.store.api import MailStore
from hato.store.model import INBOX, BlobRef, DeliveryTarget, Mailbox, canonical_flags

LIMITS = SieveLimits()
SIEVE_EXTENSIONS: tuple[str, ...] = tuple(sorted(ALL_EXTENSIONS))
MAX_REDIRECTS = LIMITS.max_redirects  # RFC 5804 §1.7 MAXREDIRECTS
NOTIFY_METHODS: tuple[str, ...] = ("mailto",) if "enotify" in ALL_EXTENSIONS else ()
MAX_SIEVE_MESSAGE = 64 * 1024 * 1024  # larger messages are kept without running Sieve
PERSONAL = "personal"  # RFC 6609 §3.1: the user's own scripts
_SUMMARIES = ((0, "parse failed"), (0, "validation failed"))
ENVIRONMENT = {"name": "Hato", "location": "MDA", "phase": "during"}  # RFC 5183 §4


@dataclass(frozen=True, slots=True)
class _Loader:
    scripts: dict[str, str]

    def __call__(self, location: str, name: str) -> str | None:
        # RFC 6609 §3.1: ":personal" names the user's own scripts; there are no global ones.
        return self.scripts.get(name) if location == PERSONAL else None


def check_script(text: str, *, scripts: Mapping[str, str]) -> list[tuple[int, str]]:
    """Compile ``text`` as a script of an account whose scripts are ``scripts``; the errors
    as (line, message) in line order, empty when valid."""
    try:
        parse_script(text, extensions=ALL_EXTENSIONS, include_loader=_Loader(dict(scripts)))
    except SieveError as exc:
        # The compiler ends its list with a summary at line 0 ("parse failed"); errors with
        # a line come first, in line order (RFC 5804 §2.6: the first error's line number).
        found = [e for e in exc.errors if e not in _SUMMARIES] or list(exc.errors)
        return sorted(found, key=lambda error: (error[0] == 0, error[0]))
    return []


# -- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What one account's run decided, as delivery carries it out (a value: CONVENTIONS §5)."""

    targets: tuple[DeliveryTarget, ...]
    pending: tuple[Redirect | Vacation | Notify, ...] = ()  # for the outbound queue
    rejected: str | None = None  # reject/ereject reason
    marks: tuple[DuplicateMark, ...] = ()
    ereject: bool = False  # the refusal came from ereject (RFC 5429 §2.1), else reject (§2.2)


def decide(result: SieveResult, *, target: DeliveryTarget, sending: bool = False) -> Decision:
    """Turn a run's actions into copies for ``target``'s account (RFC 5228 §2.10).

    ``sending``: redirects and refusals can be carried out (an outbound queue exists), so
    they cancel the implicit keep as the script says; otherwise a copy is kept."""
    copies: dict[str, DeliveryTarget] = {}
    pending: list[Redirect | Vacation | Notify] = []
    rejected: str | None = None
    ereject = False
    keep_copy = False
    for action in result.deliveries():
        if isinstance(action, Keep | FileInto):
            mailbox = target.mailbox if isinstance(action, Keep) else action.mailbox
            if action.flags is not None:
                flags = canonical_flags(action.flags)
            else:
                flags = target.flags if isinstance(action, Keep) else frozenset()
            key = INBOX if mailbox.upper() == INBOX else mailbox  # RFC 9051 §5.1
            # RFC 5228 §2.10.3: a second keep/fileinto to the same mailbox is one copy.
            copies.setdefault(key, DeliveryTarget(target.account_id, mailbox, flags))
        elif isinstance(action, Redirect | Vacation | Notify):
            pending.append(action)
            if isinstance(action, Redirect) and not action.copy and not sending:
                keep_copy = True  # the redirect cannot be sent: never lose the message
        elif isinstance(action, Reject | Ereject):
            rejected = action.reason
            ereject = isinstance(action, Ereject)
            # RFC 5429 §2.2/§2.1: a refusal cancels the implicit keep; without a queue no
            # DSN/MDN can be sent, so keep the message rather than lose it
            keep_copy = keep_copy or not sending
        elif isinstance(action, Discard):
            continue
    if keep_copy and not copies:
        copies[target.mailbox] = target
    marks = result.marks if not result.errors else ()
    return Decision(tuple(copies.values()), tuple(pending), rejected, marks, ereject)


def _sieve_envelope(envelope: Envelope, account_address: str) -> SieveEnvelope:
    """RFC 5228 §5.4: the reverse-path ("" for <>) and the recipient that reached this
    account (by its address or subaddress; the only recipient; else the account)."""
    sender = envelope.sender.address
    chosen = None
    for rcpt in envelope.recipients:
        address = rcpt.path.address
        if address is None:
            continue
        key = address.key
        local, _, domain = key.rpartition("@")
        base = f"{local.split(LIMITS.subaddress_delimiter, 1)[0]}@{domain}"
        if account_address in (key, base):
            chosen = rcpt
            break
    if chosen is None and len(envelope.recipients) == 1:
        chosen = envelope.recipients[0]
    to = str(chosen.path.address) if chosen and chosen.path.address else account_address
    orcpt = chosen.params.orcpt if chosen is not None else None
    return SieveEnvelope(
        from_=str(sender) if sender is not None else "",
        to=to,
        orig_to=orcpt.address if orcpt is not None else None,
    )


# -- running ----------------------------------------------------------------------------------


class _StoreTracker:
    """RFC 7352 / RFC 5230 §4.2 tracking lookups from the worker thread the script runs in
    (expiry is judged by the store's clock, which is the delivery's clock in practice)."""

    def __init__(self, store: MailStore, account_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._account_id = account_id
        self._loop = loop

    def seen(self, key: str, *, now: float) -> bool:
        future = asyncio.run_coroutine_threadsafe(
            self._store.sieve_tracked(self._account_id, key), self._loop
        )
        return future.result(timeout=60)


@dataclass
class SievePlan:
    """The copies of one message after Sieve, and what to record once they are committed."""

    targets: list[DeliveryTarget] = field(default_factory=list)
    decisions: list[tuple[int, Decision]] = field(default_factory=list)


def _special_use(boxes: Sequence[Mailbox], attribute: str | None) -> str | None:
    for box in boxes:
        if attribute is not None and box.special_use == attribute:
            return box.name
    return None


async def _prepare_mailboxes(
    store: MailStore, account_id: int, result: SieveResult, boxes: Sequence[Mailbox]
) -> SieveResult:
    """RFC 8579 :specialuse picks the mailbox with that attribute; RFC 5490 §3.2 :create
    makes a missing mailbox (else the store falls back to INBOX)."""
    names = {b.name for b in boxes}
    actions: list[Action] = []
    for action in result.actions:
        if isinstance(action, FileInto):
            special = _special_use(boxes, action.special_use)
            if special is not None and special != action.mailbox:
                action = FileInto(special, action.flags, action.create, None, action.copy)
            elif action.create and action.mailbox not in names:
                try:
                    await store.create_mailbox(account_id, action.mailbox)
                except (AlreadyExists, UsageError, StoreError) as exc:
                    log.event("sieve.create_failed", account=account_id, error=exc.detail)
        actions.append(action)
    return SieveResult(
        tuple(actions),
        result.implicit_keep,
        result.errors,
        result.keep_flags,
        result.keep_message,
        result.marks,
    )


async def _run(
    store: MailStore,
    target: DeliveryTarget,
    *,
    content: str,
    message: bytes,
    envelope: Envelope,
    now: float,
    sending: bool,
) -> Decision:
    account = await store.get_account_by_id(target.account_id)
    if account is None:
        return Decision((target,))
    scripts = {s.name: s.content for s in await store.list_scripts(account.id)}
    boxes = await store.list_mailboxes(account.id)
    exists = {b.name for b in boxes}
    tracker = _StoreTracker(store, account.id, asyncio.get_running_loop())

    def compile_and_run() -> SieveResult:  # CPU work: in a worker thread, off the loop
        script = parse_script(content, extensions=ALL_EXTENSIONS, include_loader=_Loader(scripts))
        return run_script(
            script,
            message=message,
            envelope=_sieve_envelope(envelope, account.address),
            environment=ENVIRONMENT,
            mailbox_exists=lambda name: name in exists or name.upper() == INBOX,
            duplicate_tracker=tracker,
            clock=FixedClock(now),
            limits=LIMITS,
        )

    try:
        result = await asyncio.to_thread(compile_and_run)
    except SieveError as exc:
        # RFC 5228 §2.10.6: an error means implicit keep (and the user should learn why).
        log.event("sieve.script_error", user=account.address, errors=len(exc.errors))
        return Decision((target,))
    if result.errors:
        log.event("sieve.runtime_error", user=account.address, errors=len(result.errors))
    result = await _prepare_mailboxes(store, account.id, result, boxes)
    return decide(result, target=target, sending=sending)


async def sieve_plan(
    store: MailStore,
    *,
    blob: BlobRef,
    envelope: Envelope,
    targets: Sequence[DeliveryTarget],
    now: float,
    sending: bool = False,
) -> SievePlan:
    """Run each target account's active script; targets without one are kept as they are.
    ``sending``: outgoing actions will be carried out (see ``decide``)."""
    plan = SievePlan()
    message: bytes | None = None
    for target in targets:
        script = await store.get_active_script(target.account_id)
        if script is None:
            plan.targets.append(target)
            continue
        if blob.size > MAX_SIEVE_MESSAGE:
            log.event("sieve.skipped", account=target.account_id, reason="message too large")
            plan.targets.append(target)
            continue
        if message is None:
            message = await asyncio.to_thread(store.blobs.read, blob.id)
        try:
            decision = await _run(
                store,
                target,
                content=script.content,
                message=message,
                envelope=envelope,
                now=now,
                sending=sending,
            )
        except Exception as exc:  # a bug in a script run must not lose the message
            log.event("sieve.internal_error", account=target.account_id, error=repr(exc))
            decision = Decision((target,))
        plan.targets.extend(decision.targets)
        plan.decisions.append((target.account_id, decision))
    return plan


async def sieve_committed(
    store: MailStore, plan: SievePlan, *, now: float, sent: Sequence[Action] | None = None
) -> None:
    """After the copies are committed: record duplicate marks and vacation replies.

    ``sent``: the outgoing actions that were queued (the SMTP path with an outbound queue);
    only their vacation replies are recorded as answered (RFC 5230 §4.2). Without it
    (no outbound queue), every outgoing action is logged as pending."""
    for account_id, decision in plan.decisions:
        for mark in decision.marks:  # RFC 7352 §3: only after a successful run and delivery
            await store.sieve_track(account_id, mark.key, expires=mark.expires)
        if sent is not None:
            for action in decision.pending:
                if isinstance(action, Vacation) and any(a is action for a in sent):
                    # RFC 5230 §4.2: not answered again within the period - once it was queued
                    await store.sieve_track(account_id, action.key, expires=now + action.period)
            continue
        if decision.rejected is not None:
            log.event("sieve.reject", account=account_id, kept=True)
        for action in decision.pending:
            if isinstance(action, Redirect):
                log.event(
                    "sieve.redirect.pending",
                    account=account_id,
                    to=action.address,
                    copy=action.copy,
                )
            elif isinstance(action, Vacation):
                # RFC 5230 §4.2: this sender is not answered again within the period.
                await store.sieve_track(account_id, action.key, expires=now + action.period)
                log.event("sieve.vacation.pending", account=account_id, to=action.recipient)
            else:
                log.event("sieve.notify.pending", account=account_id, method=action.method)
