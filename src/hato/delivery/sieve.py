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
notify, report (vnd.dovecot.report) and reject/ereject leave this module as decisions that
``hato.delivery.sieve_send`` turns into queue entries (RFC 5228 §4.2: a redirect cancels the
implicit keep; RFC 5429: a rejected message gets no copy), and a vacation reply is recorded
as answered (RFC 5230 §4.2) only once it was queued. Without ``sending`` (no outbound queue)
they are logged as ``sieve.redirect.pending`` / ``sieve.vacation.pending`` /
``sieve.notify.pending`` / ``sieve.report.pending`` and a copy is kept whenever a redirect or
reject would have removed it: mail is never lost.

Programs (Pigeonhole's vnd.dovecot.pipe/filter/execute, ``hato.delivery.sieve_programs``):
offered only for the kinds whose directory ``SieveSettings.programs`` names; filter and
execute run while the script runs, pipe actions right after it, before anything is committed:
a pipe that fails cancels nothing (the implicit keep applies again), and without :try it
fails the run (§5: only the implicit keep, with the message as received).

Settings (``SieveSettings``: limits, program directories, report, hostname) come from the
``[sieve]`` configuration section through ``hato.app.wiring``; ``DEFAULT_SETTINGS`` is the
configuration's defaults.

Header edits (RFC 5293 §7): a keep/fileinto made after addheader/deleteheader stores the
message as edited, as a body of its own (``store_edited``, committed before the received
body's copies); a run that fails keeps the message as received.

External lists (RFC 6134): ``ext_lists`` (the empty default address book, and the aliases
of the account's domain as ``mailto:`` lists). IMAP METADATA (RFC 5490 mboxmetadata /
servermetadata): the store keeps no annotations (RFC 5464 is not implemented), so every
annotation is absent: ``metadata`` and ``metadataexists`` are false.

Left out: ``envelope :auth`` (delivery does not know the submitting account), the exact
recipient when several recipients reach one account (the one whose address matches the
account is used).

Security: scripts run with bounded resources (``SieveSettings.limits``) in a worker thread;
messages larger than ``MAX_SIEVE_MESSAGE`` skip Sieve (implicit keep); script text and
message content are never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    Pipe,
    Redirect,
    Reject,
    Report,
    SieveResult,
    Vacation,
)
from hato.codec.sieve.ext_extlists import ADDRBOOK_DEFAULT, StaticLists, normalize_list_name
from hato.codec.sieve.ext_extprograms import Outcome, ProgramCall
from hato.codec.sieve.language import ALL_EXTENSIONS
from hato.codec.sieve.runtime import Envelope as SieveEnvelope
from hato.codec.sieve.runtime import SieveLimits
from hato.codec.smtp_events import Envelope
from hato.core import log
from hato.core.clock import FixedClock
from hato.core.errors import AlreadyExists, SieveError, StoreError, UsageError
from hato.delivery.sieve_programs import ProgramRunner, ProgramSettings
from hato.store.api import MailStore
from hato.store.model import INBOX, Appended, BlobRef, DeliveryTarget, Mailbox, canonical_flags


@dataclass(frozen=True, slots=True)
class SieveSettings:
    """How scripts run here (the ``[sieve]`` section, see ``hato.app.config_sieve``):
    ``limits`` bound every run and hold the sending policy (envelope senders, vacation);
    ``programs`` the administrator's program directories; ``report`` offers
    vnd.dovecot.report; ``debug_log`` offers vnd.dovecot.debug; ``hostname`` is the RFC
    5183 "host" environment item (and HOST of programs)."""

    limits: SieveLimits = field(default_factory=SieveLimits)
    programs: ProgramSettings = field(default_factory=ProgramSettings)
    report: bool = True
    debug_log: bool = False
    hostname: str = ""

    @property
    def extensions(self) -> frozenset[str]:
        """The capabilities scripts may require (RFC 5228 §3.2; ManageSieve SIEVE, RFC 5804
        §1.7)."""
        found = set(ALL_EXTENSIONS) | self.programs.extensions
        if self.report:
            found.add("vnd.dovecot.report")
        if self.debug_log:
            found.add("vnd.dovecot.debug")
        return frozenset(found)

    @property
    def environment(self) -> dict[str, str]:
        """RFC 5183 §4 items delivery answers."""
        items = dict(ENVIRONMENT)
        if self.hostname:
            items["host"] = self.hostname
        return items


DEFAULT_SETTINGS = SieveSettings()
SIEVE_EXTENSIONS: tuple[str, ...] = tuple(sorted(DEFAULT_SETTINGS.extensions))
MAX_REDIRECTS = DEFAULT_SETTINGS.limits.max_redirects  # RFC 5804 §1.7 MAXREDIRECTS
NOTIFY_METHODS: tuple[str, ...] = ("mailto",) if "enotify" in ALL_EXTENSIONS else ()
# RFC 6134 §2.8 (ManageSieve EXTLISTS): the URI schemes of the lists scripts can query
EXT_LIST_SCHEMES: tuple[str, ...] = ("mailto", "urn") if "extlists" in ALL_EXTENSIONS else ()
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


def check_script(
    text: str, *, scripts: Mapping[str, str], settings: SieveSettings = DEFAULT_SETTINGS
) -> list[tuple[int, str]]:
    """Compile ``text`` as a script of an account whose scripts are ``scripts``; the errors
    as (line, message) in line order, empty when valid."""
    try:
        parse_script(
            text,
            extensions=settings.extensions,
            include_loader=_Loader(dict(scripts)),
            limits=settings.limits,
        )
    except SieveError as exc:
        # The compiler ends its list with a summary at line 0 ("parse failed"); errors with
        # a line come first, in line order (RFC 5804 §2.6: the first error's line number).
        found = [e for e in exc.errors if e not in _SUMMARIES] or list(exc.errors)
        return sorted(found, key=lambda error: (error[0] == 0, error[0]))
    return []


# -- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What one account's run decided, as delivery carries it out (a value: CONVENTIONS §5).
    ``edited``: copies to store with the header as editheader left it (RFC 5293 §7)."""

    targets: tuple[DeliveryTarget, ...]
    pending: tuple[Redirect | Vacation | Notify | Report, ...] = ()  # for the outbound queue
    rejected: str | None = None  # reject/ereject reason
    marks: tuple[DuplicateMark, ...] = ()
    ereject: bool = False  # the refusal came from ereject (RFC 5429 §2.1), else reject (§2.2)
    edited: tuple[tuple[bytes, DeliveryTarget], ...] = ()


def decide(result: SieveResult, *, target: DeliveryTarget, sending: bool = False) -> Decision:
    """Turn a run's actions into copies for ``target``'s account (RFC 5228 §2.10).

    ``sending``: redirects and refusals can be carried out (an outbound queue exists), so
    they cancel the implicit keep as the script says; otherwise a copy is kept."""
    copies: dict[str, DeliveryTarget] = {}
    edited: dict[str, tuple[bytes, DeliveryTarget]] = {}
    pending: list[Redirect | Vacation | Notify | Report] = []
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
            copy = DeliveryTarget(target.account_id, mailbox, flags)
            # RFC 5228 §2.10.3: a second keep/fileinto to the same mailbox is one copy.
            if key in copies or key in edited:
                continue
            if action.message is not None:  # RFC 5293 §7: the header as edited so far
                edited[key] = (action.message, copy)
            else:
                copies[key] = copy
        elif isinstance(action, Redirect | Vacation | Notify | Report):
            pending.append(action)
            if isinstance(action, Redirect) and not action.copy and not sending:
                keep_copy = True  # the redirect cannot be sent: never lose the message
        elif isinstance(action, Reject | Ereject):
            rejected = action.reason
            ereject = isinstance(action, Ereject)
            # RFC 5429 §2.2/§2.1: a refusal cancels the implicit keep; without a queue no
            # DSN/MDN can be sent, so keep the message rather than lose it
            keep_copy = keep_copy or not sending
        elif isinstance(action, Discard | Pipe):
            continue  # a pipe was carried out already (``run_pipes``)
    if keep_copy and not copies and not edited:
        copies[target.mailbox] = target
    marks = result.marks if not result.errors else ()
    return Decision(
        tuple(copies.values()), tuple(pending), rejected, marks, ereject, tuple(edited.values())
    )


def sieve_envelope(
    envelope: Envelope, account_address: str, *, delimiter: str = "+"
) -> SieveEnvelope:
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
        base = f"{local.split(delimiter, 1)[0]}@{domain}"  # RFC 5233 §4
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


async def ext_lists(store: MailStore, address: str) -> StaticLists:
    """The RFC 6134 lists a script of the account ``address`` can query:

    * ``:addrbook:default``: Hato keeps no address book, so it is empty (RFC 6134 §2.5
      requires it to exist and allows an empty one as the last resort);
    * ``mailto:<alias>`` for each alias of the account's own domain (a catch-all excluded):
      a distribution list whose members are the alias's targets, so that
      ``address :list "from" "mailto:team@example.org"`` asks "is the sender on the team"
      and ``redirect :list`` reaches each member (§2.3, under the redirect limit).
    """
    lists: dict[str, tuple[str, ...]] = {ADDRBOOK_DEFAULT: ()}
    domain = address.rpartition("@")[2]
    for alias in await store.list_aliases(domain):
        name = "mailto:" + alias.source
        if not alias.source.startswith("@") and normalize_list_name(name) == name:
            lists[name] = alias.targets
    return StaticLists(lists)


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
    """The copies of one message after Sieve, and what to record once they are committed.
    ``edited``: copies whose header editheader changed, each body with its targets."""

    targets: list[DeliveryTarget] = field(default_factory=list)
    decisions: list[tuple[int, Decision]] = field(default_factory=list)
    edited: list[tuple[bytes, list[DeliveryTarget]]] = field(default_factory=list)

    def add_edited(self, data: bytes, target: DeliveryTarget) -> None:
        for body, targets in self.edited:
            if body == data:
                targets.append(target)
                return
        self.edited.append((data, [target]))


async def write_body(store: MailStore, data: bytes) -> BlobRef:
    """A new message body, fsynced and installed (blocking work in a worker thread)."""

    def work() -> BlobRef:
        writer = store.blobs.writer()
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    return await asyncio.to_thread(work)


async def store_edited(store: MailStore, plan: SievePlan, *, now: float) -> list[Appended]:
    """Store the copies editheader changed (RFC 5293 §7), each edited body once. Called
    before the received body's copies are committed, so an error (QuotaExceeded, a full
    disk) leaves no copy stored at all; a later failure can only mean a duplicate when the
    client retries, never a lost copy (RFC 5321 §6.1 prefers duplicates to loss)."""
    appended: list[Appended] = []
    for data, targets in plan.edited:
        blob = await write_body(store, data)
        appended += await store.deliver(blob, targets, internal_date=now)
    return appended


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
                action = FileInto(
                    special, action.flags, action.create, None, action.copy, action.message
                )
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
    strip_prefix: int,
    settings: SieveSettings,
) -> Decision:
    account = await store.get_account_by_id(target.account_id)
    if account is None:
        return Decision((target,))
    scripts = {s.name: s.content for s in await store.list_scripts(account.id)}
    boxes = await store.list_mailboxes(account.id)
    exists = {b.name for b in boxes}
    lists = await ext_lists(store, account.address)
    tracker = _StoreTracker(store, account.id, asyncio.get_running_loop())
    limits = settings.limits
    runner = ProgramRunner(settings.programs)
    delimiter = limits.subaddress_delimiter

    def compile_and_run() -> SieveResult:  # CPU work: in a worker thread, off the loop
        script = parse_script(
            content, extensions=settings.extensions, include_loader=_Loader(scripts), limits=limits
        )
        return run_script(
            script,
            message=message,
            envelope=sieve_envelope(envelope, account.address, delimiter=delimiter),
            environment=settings.environment,
            mailbox_exists=lambda name: name in exists or name.upper() == INBOX,
            duplicate_tracker=tracker,
            clock=FixedClock(now),
            limits=limits,
            ext_lists=lists,
            programs=runner,
        )

    try:
        result = await asyncio.to_thread(compile_and_run)
    except SieveError as exc:
        # RFC 5228 §2.10.6: an error means implicit keep (and the user should learn why).
        log.event("sieve.script_error", user=account.address, errors=len(exc.errors))
        return Decision((target,))
    if result.errors:
        log.event("sieve.runtime_error", user=account.address, errors=len(result.errors))
    for line in result.debug:  # vnd.dovecot.debug: the script author's own log lines
        log.event("sieve.debug_log", level=10, user=account.address, message=line)
    result = await run_pipes(result, runner, message=message, account=account.id)
    result = _return_path_first(result, message[:strip_prefix])
    result = await _prepare_mailboxes(store, account.id, result, boxes)
    return decide(result, target=target, sending=sending)


def _cancels_keep(action: Action) -> bool:
    """RFC 5228 §2.10.2: the actions that cancel the implicit keep (a :copy one does not,
    RFC 3894 §3; report and notify never do)."""
    if isinstance(action, FileInto | Redirect | Pipe):
        return not action.copy
    return isinstance(action, Keep | Discard | Reject | Ereject)


async def run_pipes(
    result: SieveResult, runner: ProgramRunner, *, message: bytes, account: int
) -> SieveResult:
    """Carry out the run's pipe actions (vnd.dovecot.pipe §5), in order, before anything is
    committed. A pipe that fails never cancels the implicit keep (§5); with :try the run
    goes on as if it had not been there, without it the run fails: only the implicit keep,
    with the message as received (RFC 5228 §2.10.6)."""
    if not any(isinstance(a, Pipe) for a in result.actions):
        return result
    failed: list[Pipe] = []
    for action in result.actions:
        if not isinstance(action, Pipe):
            continue
        call = ProgramCall(
            "pipe",
            action.program,
            action.args,
            action.message if action.message is not None else message,
            dict(action.environment),
        )
        outcome = await asyncio.to_thread(runner.run, call)
        if outcome.outcome is Outcome.OK:
            log.event("sieve.pipe.done", account=account, program=action.program)
            continue
        log.event(
            "sieve.pipe.failed",
            account=account,
            program=action.program,
            detail=outcome.detail or outcome.outcome.value,
            try_=action.try_,
        )
        if not action.try_:
            error = (0, f"failed to pipe message to program '{action.program}'")
            return SieveResult((), implicit_keep=True, errors=(error,), debug=result.debug)
        failed.append(action)
    if not failed:
        return result
    remaining = tuple(a for a in result.actions if not any(a is f for f in failed))
    keep = result.implicit_keep or not any(_cancels_keep(a) for a in remaining)
    return dataclasses.replace(result, actions=remaining, implicit_keep=keep)


def _return_path_first(result: SieveResult, prefix: bytes) -> SieveResult:
    """RFC 5321 §4.4: the Return-Path field final delivery wrote (``prefix``) stays the first
    line: a message editheader changed (RFC 5293 §4 adds at the top) gets it moved back, or
    put back if the script deleted it; a redirect strips it again (``Received.strip_prefix``)."""
    if not prefix:
        return result

    def fix(data: bytes | None) -> bytes | None:
        if data is None or data.startswith(prefix):
            return data
        end = data.find(b"\r\n\r\n")
        at = data.find(b"\n" + prefix)
        if 0 <= at < end:
            data = data[: at + 1] + data[at + 1 + len(prefix) :]
        return prefix + data

    actions: list[Action] = []
    for action in result.actions:
        if isinstance(action, Keep | FileInto | Redirect) and action.message is not None:
            action = dataclasses.replace(action, message=fix(action.message))
        actions.append(action)
    return dataclasses.replace(
        result, actions=tuple(actions), keep_message=fix(result.keep_message)
    )


async def sieve_plan(
    store: MailStore,
    *,
    blob: BlobRef,
    envelope: Envelope,
    targets: Sequence[DeliveryTarget],
    now: float,
    sending: bool = False,
    strip_prefix: int = 0,
    settings: SieveSettings | None = None,
) -> SievePlan:
    """Run each target account's active script; targets without one are kept as they are.
    ``sending``: outgoing actions will be carried out (see ``decide``); ``strip_prefix``:
    octets of the Return-Path field final delivery put at the start of the body;
    ``settings``: the ``[sieve]`` configuration (None: its defaults)."""
    settings = settings or DEFAULT_SETTINGS
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
                strip_prefix=strip_prefix,
                settings=settings,
            )
        except Exception as exc:  # a bug in a script run must not lose the message
            log.event("sieve.internal_error", account=target.account_id, error=repr(exc))
            decision = Decision((target,))
        plan.targets.extend(decision.targets)
        for data, copy in decision.edited:
            plan.add_edited(data, copy)
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
            elif isinstance(action, Report):
                log.event("sieve.report.pending", account=account_id, type=action.feedback_type)
            else:
                log.event("sieve.notify.pending", account=account_id, method=action.method)
