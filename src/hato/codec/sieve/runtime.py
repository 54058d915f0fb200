"""The state of one Sieve run: message, envelope, variables, match values, actions, limits.

Implements the run-time model of RFC 5228 §2.10 (actions accumulate; implicit keep until
cancelled, §2.10.2; duplicate keep/fileinto/redirect collapse, §2.10.3; limits on actions and
redirects, §2.10.4), variable storage and expansion (RFC 5229 §3-§4, values capped), match
variables (RFC 5229 §3.2), the imap4flags internal variable (RFC 5232 §3) and the message
as edited by editheader (RFC 5293 §7). Commands and tests live in ``interpreter`` and the
``ext_*`` modules; they read and change this state.
Security: everything here is bounded: instruction count, variable size, actions, redirects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hato.codec.mime import Group, Part, parse_address_list, parse_message
from hato.codec.mime.headers import header_bytes_to_str, unfold
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
    Vacation,
)
from hato.codec.sieve.addresses import parse_mailbox
from hato.codec.sieve.language import Cmd, Extension, Script
from hato.codec.sieve.matchtypes import Matcher, RegexError
from hato.codec.sieve.strings import Ref, Template
from hato.core.clock import Clock
from hato.core.errors import SieveError

if TYPE_CHECKING:
    from hato.codec.sieve.ext_extlists import ExternalLists
    from hato.codec.sieve.ext_extprograms import Programs

CommandFn = Callable[["Runtime", Cmd], None]
# RFC 5490 §3.3/§4.1: (mailbox, or None for a server annotation; entry name) -> value or None
MetadataLookup = Callable[[str | None, str], str | None]
TestFn = Callable[["Runtime", Cmd], bool]


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope the script sees (RFC 5228 §5.4): ``from_`` is the reverse-path
    ("" for the null sender <>, None when unknown), ``to`` the recipient, ``orig_to`` the
    original recipient (RFC 3461 ORCPT) and ``auth`` the authenticated submitter."""

    from_: str | None
    to: str
    orig_to: str | None = None
    auth: str | None = None


@dataclass(frozen=True)
class SieveLimits:
    """Resource limits of one run (RFC 5228 §2.10.4 lets implementations limit actions)."""

    max_script_size: int = 1024 * 1024
    max_instructions: int = 1_000_000
    # CPU seconds one run may use (0: no limit), measured on the running thread's CPU clock
    # besides the instruction bound: a few instructions can be slow (a :regex on a long
    # value, foreverypart over many parts), so the count alone does not bound the time
    max_cpu_time: float = 30.0
    max_actions: int = 32
    max_redirects: int = 4
    max_include_depth: int = 10
    max_includes: int = 255
    max_variable_size: int = 4096
    max_header_size: int = 2048  # editheader (RFC 5293 §6 leaves it to the implementation)
    max_notifications: int = 12
    # filter/execute program runs per script run: each may take the host's program timeout,
    # so the count bounds the wall-clock time a script can spend in programs
    max_program_runs: int = 16
    max_foreverypart_depth: int = 4  # RFC 5703 §3 leaves the limit to the implementation
    vacation_default_period: int = 7 * 86400  # RFC 5230 §4.1: default 7 days
    vacation_min_period: int = 86400  # RFC 5230 §4.1: at least 1 day (RFC 6131 §2: may be less)
    vacation_max_period: int = 0  # 0 = no maximum
    duplicate_default_period: int = 7 * 86400  # RFC 7352 §3.2: implementation default
    duplicate_max_period: int = 0
    subaddress_delimiter: str = "+"  # RFC 5233 §4
    # RFC 5230 §4.5 item 1: an address "known by the implementation" to be the user's
    user_email: str | None = None
    vacation_use_original_recipient: bool = False  # count the ORCPT among the user's addresses
    vacation_to_header_ignore_envelope: bool = False  # reply To: from the fields, not the envelope
    vacation_send_from_recipient: bool = False  # reply MAIL FROM the user (RFC 5230 §5.1: <>)
    # False departs from RFC 5230 §4.5 ("MUST NOT respond" unless the user's address is in
    # To/Cc/Bcc/Resent-*): an administrator's choice for addresses that reach the user
    # hidden (Dovecot's sieve_vacation_check_recipient=no); never the default
    vacation_check_recipient: bool = True
    # MAIL FROM of what Sieve sends for the user (compose.envelope_sender): "sender" (the
    # triggering message's), "recipient", "orig_recipient", "user_email", "<addr>" or "<>";
    # "" is the action's default (redirect: the sender, RFC 5228 §4.2; notify: postmaster)
    redirect_envelope_from: str = ""
    notify_envelope_from: str = ""
    # From of vnd.dovecot.report reports: the same names ("sender", "recipient", ...);
    # "" or "postmaster" is the postmaster of the user's domain
    report_from: str = ""
    vacation_default_subject: str = "Automated reply"  # RFC 5230 §5.3: no Subject to quote
    vacation_subject_template: str = ""  # "%{subject}" = the original; "" = RFC 5230 §5.3 "Auto: "
    # RFC 5293 §6: fields a script may not add / delete
    editheader_forbid_add: frozenset[str] = frozenset({"received", "auto-submitted"})
    editheader_forbid_delete: frozenset[str] = frozenset({"received", "auto-submitted"})


class DuplicateTracker(Protocol):
    """Remembers ids for the duplicate test (RFC 7352) and vacation (RFC 5230 §4.2).
    ``seen`` answers whether ``key`` was recorded and has not expired at ``now``; entries
    are recorded by delivery from ``SieveResult.marks`` and ``Vacation.key``."""

    def seen(self, key: str, *, now: float) -> bool: ...


class Stop(Exception):
    """``stop`` (RFC 5228 §3.3): end the whole run."""


class Return(Exception):
    """``return`` (RFC 6609 §3.3): end the current (included) script."""


class Break(Exception):
    """``break`` (RFC 5703 §3.2): leave foreverypart loops down to ``depth``."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


def _unset_block(cmds: tuple[Cmd, ...]) -> None:
    raise RuntimeError("run_block not wired")


def _unset_test(cmd: Cmd) -> bool:
    raise RuntimeError("run_test not wired")


def runtime_error(cmd: Cmd, message: str) -> SieveError:
    return SieveError([(cmd.line, message)])


class Runtime:
    """Mutable state of one run of a compiled script."""

    def __init__(
        self,
        script: Script,
        *,
        message: bytes,
        envelope: Envelope,
        environment: Mapping[str, str],
        mailbox_exists: Callable[[str], bool],
        duplicate_tracker: DuplicateTracker | None,
        clock: Clock,
        limits: SieveLimits,
    ) -> None:
        self.root = script
        self.script = script
        self.original = message
        self.envelope = envelope
        self.environment = environment
        self.mailbox_exists = mailbox_exists
        self.tracker = duplicate_tracker
        self.clock = clock
        self.limits = limits
        self._message = message
        self._part: Part | None = None
        self.edited = False
        self.globals: dict[str, str] = {}
        self.locals: dict[str, str] = {}
        self.match: list[str] = []
        self.actions: list[Action] = []
        self.warnings: list[tuple[int, str]] = []  # problems that did not stop the run
        self.withheld: list[Action] = []  # decided not to be sent (RFC 3834 rules, limits)
        self.implicit_keep = True
        self.flags: list[str] = []
        self.flags_used = False
        self.steps = 0
        # CPU seconds of the running thread (injected by tests: CONVENTIONS §6)
        self.cpu_clock: Callable[[], float] = time.thread_time
        self.cpu_started = self.cpu_clock()
        self.included: set[tuple[str, str]] = set()
        self.include_depth = 0
        # foreverypart: paths (child indexes from the message) of the current parts, innermost
        # last; paths survive edits of the message, Part offsets do not
        self.parts: list[tuple[int, ...]] = []
        self.replaced: list[tuple[int, ...]] = []  # parts replace rewrote (RFC 5703 §5)
        self.marks: list[DuplicateMark] = []
        self.special_use_exists: Callable[[str | None, str], bool] = lambda box, flag: False
        self.ext_lists: ExternalLists | None = None  # RFC 6134 lists (None: default only)
        self.metadata: MetadataLookup = lambda box, entry: None  # RFC 5490 §3.3
        # vnd.dovecot.filter/execute: the administrator's programs (None: none configured)
        self.programs: Programs | None = None
        self.debug: list[str] = []  # vnd.dovecot.debug messages
        self.unenclosed: bytes | None = None  # the message before enclose (RFC 5703 §6)
        self.custom: dict[str, Extension] = {}
        for ext in script.custom:
            self.custom[ext.name] = ext
        self.state: dict[str, object] = {}  # room for host extensions (test harnesses)
        # wired by the interpreter: run a command list / evaluate a test in this run
        self.run_block: Callable[[tuple[Cmd, ...]], None] = _unset_block
        self.run_test: Callable[[Cmd], bool] = _unset_test

    # -- the message -------------------------------------------------------------------

    @property
    def message(self) -> bytes:
        return self._message

    def set_message(self, data: bytes, *, edited: bool = True) -> None:
        """Replace the current message (editheader edits; host extensions)."""
        self._message = data
        self._part = None
        self.edited = edited

    @property
    def part(self) -> Part:
        if self._part is None:
            self._part = parse_message(self._message)
        return self._part

    def current_part(self) -> Part:
        """The part foreverypart is at, else the whole message (RFC 5703 §3)."""
        found = self.part_at(self.parts[-1]) if self.parts else None
        return found if found is not None else self.part

    def children(self, part: Part) -> tuple[Part, ...]:
        """The parts directly below ``part``: a multipart's body parts, or the message an
        unencoded message/rfc822 part encapsulates (RFC 2046 §5)."""
        if part.children:
            return part.children
        return (part.message,) if part.message is not None else ()

    def part_at(self, path: tuple[int, ...]) -> Part | None:
        """The part reached from the message by child indexes ``path`` (None: gone)."""
        part = self.part
        for index in path:
            below = self.children(part)
            if index >= len(below):
                return None
            part = below[index]
        return part

    def header_values(self, name: str, part: Part | None = None) -> list[str]:
        """Decoded values of every ``name`` field (RFC 5228 §5.7: RFC 2047 decoded, unfolded)."""
        target = self.part if part is None else part
        fallback = target.param("charset")
        return [h.text(fallback_charset=fallback) for h in target.header_all(name)]

    def raw_header_values(self, name: str, part: Part | None = None) -> list[str]:
        """Values as text without RFC 2047 decoding (for address parsing), unfolded."""
        target = self.part if part is None else part
        out = []
        for field in target.header_all(name):
            out.append(header_bytes_to_str(unfold(field.raw)).strip(" \t\r\n"))
        return out

    def addresses_of(self, value: str) -> list[str]:
        """The addresses in one address field value (RFC 5228 §2.7.4); a value that holds no
        parsable address is returned as it is (so :all still sees it)."""
        found = _addresses_in(value)
        return found if found is not None else [value]

    # -- variables -----------------------------------------------------------------------

    def expand(self, template: Template) -> str:
        """The string value of a template (RFC 5229 §3: substitution of references)."""
        out: list[str] = []
        for piece in template.parts:
            if isinstance(piece, str):
                out.append(piece)
            else:
                out.append(self.lookup(piece))
        return "".join(out)

    def expand_all(self, templates: tuple[Template, ...]) -> list[str]:
        return [self.expand(t) for t in templates]

    def lookup(self, ref: Ref) -> str:
        if ref.index is not None:
            return self.match[ref.index] if ref.index < len(self.match) else ""
        if ref.scope == "local":
            return self.locals.get(ref.name, "")
        if ref.scope == "global":
            return self.globals.get(ref.name, "")
        for ext in self.custom.values():
            handler = ext.namespaces.get(ref.scope)
            if handler is not None:
                return handler(self, ref) or ""
        return ""

    def assign(self, ref: Ref, value: str, *, escapes: str = "") -> None:
        """Store ``value`` cut to the size limit (RFC 5229 §6 allows limits); ``escapes``
        "\\" or "%" says the value holds escapes the cut must not split (RFC 5229 §4.1.2
        :quotewildcard, RFC 5435 §6 :encodeurl), so a cut value still means a prefix."""
        value = _cut(value, self.limits.max_variable_size, escapes=escapes)
        if ref.scope == "global":
            self.globals[ref.name] = value
        elif ref.scope == "local":
            self.locals[ref.name] = value

    # -- matching ------------------------------------------------------------------------

    def matches(
        self, cmd: Cmd, values: list[str], *, keys: list[str], capture: bool = True
    ) -> bool:
        """RFC 5228 §2.7: true when any value matches any key; sets match variables."""
        assert cmd.match is not None and cmd.comparator is not None
        if cmd.match.kind == "list":
            from hato.codec.sieve.ext_extlists import list_match

            found = list_match(self, cmd, values, keys)
            if found is None:
                return False
            if capture and "variables" in self.script.required:
                self.match = [found]  # RFC 6134 §2.2: ${0} is the matching list value
            return True
        matcher = Matcher(cmd.match, cmd.comparator)
        if cmd.match.kind == "regex":
            # a key that is no valid expression (known only at run time) matches nothing
            usable = []
            for key in keys:
                try:
                    matcher.regex(key)
                except RegexError as exc:
                    self.warnings.append(
                        (cmd.line, f"invalid regular expression '{key}' for regex match: {exc}")
                    )
                    continue
                usable.append(key)
            keys = usable
        captures = matcher.any(values, keys)
        if captures is None:
            return False
        # RFC 5229 §3.2: a successful :matches (or :regex) sets the match variables
        if (
            capture
            and cmd.match.kind in ("matches", "regex")
            and "variables" in self.script.required
        ):
            self.match = captures
        return True

    def step(self, cmd: Cmd) -> None:
        self.steps += 1
        if self.steps > self.limits.max_instructions:
            raise runtime_error(cmd, "execution exceeded the instruction limit")
        limit = self.limits.max_cpu_time
        if limit > 0 and self.cpu_clock() - self.cpu_started > limit:
            raise runtime_error(cmd, f"execution exceeded the CPU time limit ({limit:g}s)")

    def set_cpu_clock(self, clock: Callable[[], float]) -> None:
        """Measure the run's CPU time with ``clock`` from now on."""
        self.cpu_clock = clock
        self.cpu_started = clock()

    # -- actions -------------------------------------------------------------------------

    def current_flags(
        self, cmd: Cmd, explicit: tuple[Template, ...] | None
    ) -> tuple[str, ...] | None:
        """The flags a keep/fileinto stores with (RFC 5232 §5)."""
        if explicit is not None:
            return tuple(split_flags(self.expand_all(explicit)))
        if "imap4flags" not in self.script.required and not self.flags_used:
            return None
        del cmd
        return tuple(self.flags)

    def edited_message(self) -> bytes | None:
        return self._message if self.edited else None

    def redirect_message(self) -> bytes | None:
        """What redirect sends: the edited message, but never its enclosure (RFC 5703 §6)."""
        if self.unenclosed is not None:
            return None if self.unenclosed == self.original else self.unenclosed
        return self.edited_message()

    def add(self, cmd: Cmd, action: Action, *, cancel_keep: bool, send: bool = True) -> None:
        """Add an action, collapsing duplicates (RFC 5228 §2.10.3) and checking conflicts.
        ``send`` False: a vacation/notify that was decided not to go out still counts for
        the conflict rules but is not in the result."""
        if not send:
            self._conflicts(cmd, action)
            self.withheld.append(action)
            return
        merged = self._merge(action)
        if merged is None:
            self._conflicts(cmd, action)
            count = sum(1 for a in self.actions if not isinstance(a, Discard))
            if count >= self.limits.max_actions:
                raise runtime_error(
                    cmd,
                    f"total number of actions exceeds policy limit ({self.limits.max_actions})",
                )
            if isinstance(action, Redirect):
                redirects = sum(1 for a in self.actions if isinstance(a, Redirect))
                if redirects >= self.limits.max_redirects:
                    raise runtime_error(
                        cmd,
                        "number of redirect actions exceeds policy limit "
                        f"({self.limits.max_redirects})",
                    )
            self.actions.append(action)
        if cancel_keep:
            self.implicit_keep = False

    def _merge(self, action: Action) -> Action | None:
        """Fold ``action`` into an equal earlier one; the earlier one, or None."""
        for i, old in enumerate(self.actions):
            if isinstance(action, Keep | FileInto) and isinstance(old, Keep | FileInto):
                if _store_target(old) == _store_target(action):
                    self.actions[i] = _merge_store(old, action)
                    return old
            elif isinstance(action, Redirect) and isinstance(old, Redirect):
                if old.address.lower() == action.address.lower():
                    if old.copy and not action.copy:
                        self.actions[i] = Redirect(old.address, copy=False, message=old.message)
                    return old
            elif isinstance(action, Discard) and isinstance(old, Discard):
                return old
            elif (
                isinstance(action, Report)
                and isinstance(old, Report)
                and (old.feedback_type, old.recipient.lower())
                == (action.feedback_type, action.recipient.lower())
            ):
                # vnd.dovecot.report §3: one report per feedback type and recipient; the
                # first one's text is used
                return old
        return None

    def _conflicts(self, cmd: Cmd, action: Action) -> None:
        everything = self.actions + self.withheld
        rejecting = any(isinstance(a, Reject | Ereject) for a in self.actions)
        if isinstance(action, Reject | Ereject):
            if rejecting:  # RFC 5429 §2.4: at most one reject
                raise runtime_error(cmd, "duplicate reject/ereject action not allowed")
            for old in everything:
                if isinstance(old, Vacation):  # RFC 5429 §2.4: incompatible with vacation
                    raise runtime_error(cmd, "reject action conflicts with earlier vacation action")
                # vnd.dovecot.pipe §5.1: pipe (even :copy) is incompatible with reject
                if isinstance(old, Pipe) or (
                    isinstance(old, Keep | FileInto | Redirect) and not _is_copy(old)
                ):
                    raise runtime_error(
                        cmd, f"reject action conflicts with earlier {_name(old)} action"
                    )
        elif rejecting:
            if isinstance(action, Vacation):
                raise runtime_error(cmd, "vacation action conflicts with earlier reject action")
            if isinstance(action, Keep | FileInto | Redirect | Pipe):
                raise runtime_error(
                    cmd, f"{_name(action)} action conflicts with earlier reject action"
                )
        if isinstance(action, Vacation) and any(isinstance(a, Vacation) for a in everything):
            raise runtime_error(cmd, "duplicate vacation action not allowed")  # RFC 5230 §4.7


def _is_copy(action: Action) -> bool:
    return isinstance(action, FileInto | Redirect | Pipe) and action.copy


def _name(action: Action) -> str:
    from hato.codec.sieve.actions import action_name

    return {"store": "fileinto"}.get(action_name(action), action_name(action))


def _store_target(action: Keep | FileInto) -> str:
    if isinstance(action, Keep):
        return "INBOX"
    box = action.mailbox
    return "INBOX" if box.upper() == "INBOX" else box


def _merge_store(old: Keep | FileInto, new: Keep | FileInto) -> Keep | FileInto:
    # RFC 5232 §3: when duplicates are eliminated "the last flag list value MUST win"
    flags = old.flags if new.flags is None else new.flags
    if isinstance(old, Keep):
        return Keep(flags, old.message)
    create = old.create or (isinstance(new, FileInto) and new.create)
    copy = old.copy and (isinstance(new, FileInto) and new.copy)
    return FileInto(
        old.mailbox,
        flags,
        create=create,
        special_use=old.special_use,
        copy=copy,
        message=old.message,
    )


def split_flags(values: list[str]) -> list[str]:
    """RFC 5232 §3: flags are space-separated; duplicates removed, order kept, case-insensitive
    duplicates folded."""
    seen: dict[str, str] = {}
    for value in values:
        for flag in value.split():
            seen.setdefault(flag.lower(), flag)
    return list(seen.values())


_UNITS = {
    "\\": re.compile(r"\\.|.", re.S),
    # one character's percent-encoded UTF-8 sequence is one unit
    "%": re.compile(r"%[C-Fc-f][0-9A-Fa-f](?:%[89ABab][0-9A-Fa-f])+|%[0-9A-Fa-f]{2}|.", re.S),
}


def _cut(value: str, limit: int, *, escapes: str = "") -> str:
    data = value.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return value
    if escapes not in _UNITS:
        return data[:limit].decode("utf-8", "ignore")
    size = 0
    end = 0
    for unit in _UNITS[escapes].finditer(value):
        size += len(unit.group(0).encode("utf-8", "surrogateescape"))
        if size > limit:
            break
        end = unit.end()
    return value[:end]


def _addresses_in(value: str) -> list[str] | None:
    out: list[str] = []
    items = parse_address_list(value)
    for item in items:
        members = item.members if isinstance(item, Group) else (item,)
        for mailbox in members:
            if mailbox.address:
                out.append(mailbox.address)
            elif mailbox.local:
                out.append(mailbox.local)
    if not out:
        if any(isinstance(item, Group) for item in items):
            return []  # RFC 5228 §2.7.4: a group name is not an address
        single, _ = parse_mailbox(value)
        return [single] if single else None
    return out


__all__ = [
    "Break",
    "DuplicateTracker",
    "Envelope",
    "Notify",
    "Return",
    "Runtime",
    "SieveLimits",
    "Stop",
    "Vacation",
]
