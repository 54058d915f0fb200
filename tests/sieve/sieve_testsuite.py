"""Test-side implementation of Pigeonhole's ``vnd.dovecot.testsuite`` Sieve extension.

Runs one ``.svtest`` file through Hato's interpreter: the testsuite commands and tests are a
host ``Extension`` whose handlers keep the harness state (current message and envelope,
compiled test script and its errors, the result, a fake mail store and an SMTP queue,
settings). See ``/work/shared/vectors/sieve/TESTSUITE-EXTENSION.md`` for the command list.
Each ``test "name" { ... }`` block is one case: it fails on ``test_fail`` or an unexpected
runtime error. Pigeonhole's testsuite enables its vendor extensions (report, extprograms,
debug), so scripts here may require them; the programs run through Hato's own runner
(``hato.delivery.sieve_programs``) from the directories the settings name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sieve_dovecot_config import (
    ext_lists_from_config,
    limits_from_config,
    programs_from_config,
    scanner_score,
)

from hato.codec.mime import parse_message
from hato.codec.mime.headers import header_bytes_to_str, unfold
from hato.codec.sieve import (
    ALL_EXTENSIONS,
    DOVECOT_EXTENSIONS,
    Discard,
    Ereject,
    Extension,
    FileInto,
    Keep,
    Notify,
    Pipe,
    Redirect,
    Reject,
    Report,
    Runtime,
    Script,
    SieveError,
    SieveLimits,
    Vacation,
    action_name,
    compose,
    parse_script,
    run_script,
)
from hato.codec.sieve.actions import Action
from hato.codec.sieve.addresses import parse_mailbox
from hato.codec.sieve.ext_extlists import StaticLists
from hato.codec.sieve.ext_extprograms import Outcome, ProgramCall, ProgramResult
from hato.codec.sieve.ext_report import report_message
from hato.codec.sieve.interpreter import execute, wire
from hato.codec.sieve.language import MATCH_TAGS, Cmd, Param, Spec, TagDef
from hato.codec.sieve.language import ArgKind as K
from hato.codec.sieve.runtime import Envelope, Stop
from hato.codec.sieve.strings import Ref
from hato.core.clock import FixedClock
from hato.delivery.sieve_programs import ProgramRunner

DEFAULT_MESSAGE = (
    b"From: sender@example.com\r\nTo: recipient@example.org\r\nSubject: Frop!\r\n\r\nFriep!\r\n"
)
# What the reference testsuite host reports for RFC 5183 environment items.
HOST_ENVIRONMENT = {
    "name": "Pigeonhole Sieve",
    "version": "0.5",
    "location": "MS",
    "phase": "post",
    "domain": "example.com",
    "host": "mail.example.com",
}


class Failed(Exception):
    """test_fail inside a test block."""


@dataclass
class CaseResult:
    name: str
    passed: bool
    reason: str = ""


@dataclass
class Sent:
    sender: str
    recipient: str
    message: bytes


@dataclass
class Stored:
    """A message in the test mail store with the flags it was stored with."""

    message: bytes
    flags: tuple[str, ...]


def mailbox_key(name: str) -> str:
    """Dovecot's test store: INBOX, and the INBOX prefix of its "." children, ignore case
    (RFC 3501 §5.1)."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX.":
        return "INBOX" + name[5:]
    return name


def store_flags(message: bytes, flags: tuple[str, ...] | None) -> tuple[str, ...]:
    """The flags a message is stored with: the action's, plus the keyword Dovecot's
    attachment detection (mail_attachment_detection_options=add-flags, enabled by the
    Pigeonhole testsuite) sets on every message it stores."""
    root = parse_message(message)
    stack = list(root.children)
    attached = False
    while stack:
        part = stack.pop()
        stack.extend(part.children)
        if part.disposition == "attachment" or part.param("name") is not None:
            attached = True
    keyword = "$HasAttachment" if attached else "$HasNoAttachment"
    return (*(flags or ()), keyword)


@dataclass
class Harness:
    path: Path
    message: bytes = DEFAULT_MESSAGE
    envelope: Envelope = field(default_factory=lambda: Envelope(None, ""))
    script: Script | None = None
    errors: list[str] = field(default_factory=list)
    mailboxes: dict[str, list[Stored]] = field(default_factory=lambda: {"INBOX": []})
    smtp: list[Sent] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    failure: str | None = None
    clock: FixedClock = field(default_factory=FixedClock)
    tracked: dict[str, float] = field(default_factory=dict)
    metadata: dict[tuple[str | None, str], str] = field(default_factory=dict)

    # -- settings ------------------------------------------------------------------------

    def limits(self) -> SieveLimits:
        return limits_from_config(self.config)

    def outer_limits(self) -> SieveLimits:
        """The .svtest file's own run: the CPU and program-run limits are for the scripts
        it runs."""
        return dataclasses.replace(self.limits(), max_cpu_time=0, max_program_runs=1000)

    def ext_lists(self) -> StaticLists:
        return ext_lists_from_config(self.config)

    def extensions(self) -> frozenset[str]:
        return ALL_EXTENSIONS | DOVECOT_EXTENSIONS

    def run(self, call: ProgramCall) -> ProgramResult:
        """extprograms with the directories the current settings name."""
        return ProgramRunner(programs_from_config(self.config)).run(call)

    def metadata_lookup(self, mailbox: str | None, entry: str) -> str | None:
        return self.metadata.get((mailbox, entry.lower()))

    # -- loading -------------------------------------------------------------------------

    def loader(self, location: str, name: str) -> str | None:
        folder = "included-global" if location == "global" else "included"
        target = self.path.parent / folder / f"{name}.sieve"
        if not target.is_file():
            return None
        return target.read_text("utf-8", "surrogateescape")

    def set_message(self, rt: Runtime, data: bytes) -> None:
        """Pigeonhole's testsuite: a new message also resets the envelope from its header."""
        self.message = data
        root = parse_message(data)
        recipient = _first_address(root, ("envelope-to", "to")) or "recipient@example.com"
        sender = _first_address(root, ("return-path", "sender", "from")) or "sender@example.com"
        self.envelope = Envelope(sender, recipient, None, self.envelope.auth)
        rt.set_message(data, edited=False)
        rt.envelope = self.envelope

    def environment(self, current: Callable[[], bytes] | None = None) -> Mapping[str, str]:
        """``current``: the message the scores are read from (default: the harness's; the
        .svtest file's own run passes its current one, which filter may have replaced)."""
        return _Environment(self, current)


def _first_address(root: object, names: tuple[str, ...]) -> str | None:
    from hato.codec.mime import Part

    assert isinstance(root, Part)
    for name in names:
        field_ = root.header(name)
        if field_ is None:
            continue
        text = header_bytes_to_str(unfold(field_.raw)).strip()
        address, _ = parse_mailbox(text)
        if address is not None:
            return address
        if text in ("<>", ""):
            return ""
    return None


class _Environment(Mapping[str, str]):
    """Host environment items: fixed testsuite values plus spam/virus scores from config."""

    def __init__(self, harness: Harness, current: Callable[[], bytes] | None) -> None:
        self.harness = harness
        self.current = current

    def _items(self) -> dict[str, str]:
        items = dict(HOST_ENVIRONMENT)
        h = self.harness
        message = self.current() if self.current is not None else h.message
        spam = scanner_score(h.config, message, "spamtest", levels=10)
        if spam is not None:
            items["vnd.hato.spamtest"] = str(spam[0])
            items["vnd.hato.spamtest-percent"] = str(spam[1])
        virus = scanner_score(h.config, message, "virustest", levels=5)
        if virus is not None:
            items["vnd.hato.virustest"] = str(virus[0])
        return items

    def __getitem__(self, key: str) -> str:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


# -- the extension's commands and tests ------------------------------------------------


def _h(rt: Runtime) -> Harness:
    harness = rt.state["harness"]
    assert isinstance(harness, Harness)
    return harness


def cmd_test(rt: Runtime, cmd: Cmd) -> None:
    h = _h(rt)
    name = rt.expand(cmd.string(0))
    h.failure = None
    try:
        rt.run_block(cmd.block or ())
    except Failed:
        pass
    except Stop:
        pass  # "stop" ends the test block, as in Pigeonhole's testsuite
    except SieveError as exc:
        h.failure = h.failure or f"runtime error: {exc.errors}"
    h.cases.append(CaseResult(name, h.failure is None, h.failure or ""))
    h.failure = None


def cmd_test_fail(rt: Runtime, cmd: Cmd) -> None:
    h = _h(rt)
    h.failure = h.failure or rt.expand(cmd.string(0))  # the first failure is the reason
    raise Failed()


def cmd_test_set(rt: Runtime, cmd: Cmd) -> None:
    h = _h(rt)
    what = rt.expand(cmd.string(0)).lower()
    value = rt.expand(cmd.string(1))
    if what == "message":
        h.set_message(rt, value.encode("utf-8", "surrogateescape"))
        rt.flags = []  # a new message has no flags yet
        return
    env = h.envelope
    # kept as given (the envelope test parses the RFC 5321 path); <> is the null path ""
    address = "" if value.strip() == "<>" else value
    if what == "envelope.from":
        env = dataclasses.replace(env, from_=address)
    elif what == "envelope.to":
        env = dataclasses.replace(env, to=address)
    elif what == "envelope.orig_to":
        env = dataclasses.replace(env, orig_to=address)
    elif what == "envelope.auth":
        env = dataclasses.replace(env, auth=value)
    h.envelope = env
    rt.envelope = env


def cmd_config_set(rt: Runtime, cmd: Cmd) -> None:
    _h(rt).config[rt.expand(cmd.string(0))] = rt.expand(cmd.string(1))


def cmd_config_unset(rt: Runtime, cmd: Cmd) -> None:
    _h(rt).config.pop(rt.expand(cmd.string(0)), None)


def cmd_config_reload(rt: Runtime, cmd: Cmd) -> None:
    h = _h(rt)
    rt.limits = h.outer_limits()
    rt.ext_lists = h.ext_lists()


def cmd_imap_metadata_set(rt: Runtime, cmd: Cmd) -> None:
    h = _h(rt)
    box = cmd.tag_string("mailbox")
    key = (rt.expand(box) if box is not None else None, rt.expand(cmd.string(0)).lower())
    value = rt.expand(cmd.string(1))
    if value:
        h.metadata[key] = value
    else:
        h.metadata.pop(key, None)  # RFC 5464 §4.3: an empty value removes the entry


def tst_namespace(rt: Runtime, ref: Ref) -> str | None:
    """``${tst.path}``: the folder of the running .svtest file."""
    return str(_h(rt).path.parent) if ref.name == "path" else None


def cmd_result_reset(rt: Runtime, cmd: Cmd) -> None:
    if rt.edited:  # the result holds the message's edits (filter, editheader): gone too
        rt.set_message(_h(rt).message, edited=False)
    rt.actions.clear()
    rt.withheld.clear()
    rt.implicit_keep = True
    rt.marks.clear()


def cmd_noop(rt: Runtime, cmd: Cmd) -> None:
    del rt, cmd


def cmd_mailbox_create(rt: Runtime, cmd: Cmd) -> None:
    _h(rt).mailboxes.setdefault(mailbox_key(rt.expand(cmd.string(0))), [])


def cmd_mailbox_delete(rt: Runtime, cmd: Cmd) -> None:
    _h(rt).mailboxes.pop(mailbox_key(rt.expand(cmd.string(0))), None)


def test_message(rt: Runtime, cmd: Cmd) -> bool:
    h = _h(rt)
    index = cmd.number(0)
    if "smtp" in cmd.tags:
        if index >= len(h.smtp):
            return False
        sent = h.smtp[index]
        rt.set_message(sent.message, edited=False)
        h.message = sent.message
        h.envelope = Envelope(sent.sender, sent.recipient)
        rt.envelope = h.envelope
        return True
    folder = cmd.tag_string("folder")
    box = mailbox_key(rt.expand(folder) if folder is not None else "INBOX")
    stored = h.mailboxes.get(box, [])
    if index >= len(stored):
        return False
    rt.set_message(stored[index].message, edited=False)
    h.message = stored[index].message
    rt.flags = list(stored[index].flags)  # hasflag then sees the stored message's flags
    return True


def cmd_test_message(rt: Runtime, cmd: Cmd) -> None:
    """As a command, a missing message fails the running test (the reference testsuite's
    outcome) and leaves the current message in place; the test block goes on."""
    if test_message(rt, cmd):
        return
    h = _h(rt)
    index = cmd.number(0)
    if "smtp" in cmd.tags:
        reason = f"no outgoing SMTP message with index {index}"
    else:
        folder = cmd.tag_string("folder")
        name = rt.expand(folder) if folder is not None else "INBOX"
        reason = f"no message in folder '{name}' with index {index}"
    h.failure = h.failure or reason


def test_script_compile(rt: Runtime, cmd: Cmd) -> bool:
    h = _h(rt)
    target = h.path.parent / rt.expand(cmd.string(0))
    h.script = None
    h.errors = []
    try:
        text = target.read_text("utf-8", "surrogateescape")
    except OSError as exc:
        h.errors = [f"cannot read script: {exc}"]
        return False
    try:
        h.script = parse_script(
            text, extensions=h.extensions(), include_loader=h.loader, limits=rt.limits
        )
    except SieveError as exc:
        h.errors = [msg for _, msg in exc.errors]
        return False
    return True


def test_script_run(rt: Runtime, cmd: Cmd) -> bool:
    h = _h(rt)
    if h.script is None:
        return False
    h.errors = []
    result = run_script(
        h.script,
        message=rt.message,
        envelope=rt.envelope,
        environment=h.environment(),
        mailbox_exists=lambda name: mailbox_key(name) in h.mailboxes,
        duplicate_tracker=_Tracker(h),
        clock=h.clock,
        limits=h.limits(),
        ext_lists=h.ext_lists(),
        metadata=h.metadata_lookup,
        programs=h,
    )
    if "append_result" not in cmd.tags:
        cmd_result_reset(rt, cmd)
    if result.errors:
        h.errors = [msg for _, msg in result.errors]
        return False
    h.errors = [msg for _, msg in result.warnings]  # Pigeonhole logs these as warnings
    for action in result.actions:
        if "append_result" in cmd.tags:
            _append(rt, action)
        else:
            rt.actions.append(action)
    rt.implicit_keep = rt.implicit_keep and result.implicit_keep
    rt.state["keep_flags"] = result.keep_flags
    rt.state["keep_message"] = result.keep_message
    rt.marks.extend(result.marks)
    return True


def _store_box(action: Keep | FileInto) -> str:
    return "INBOX" if isinstance(action, Keep) else mailbox_key(action.mailbox)


def _append(rt: Runtime, action: Action) -> None:
    """Pigeonhole's merging of a later script's result into the earlier one (multiscript,
    as sieve_before/sieve_after scripts): the first reject stays and later ones are
    dropped; stores into the same mailbox collapse, keep winning; equal redirects collapse.
    Conflicts across scripts are not errors."""
    for i, old in enumerate(rt.actions):
        if isinstance(action, Reject | Ereject) and isinstance(old, Reject | Ereject):
            return
        if (
            isinstance(action, Keep | FileInto)
            and isinstance(old, Keep | FileInto)
            and _store_box(old) == _store_box(action)
        ):
            if isinstance(action, Keep):
                rt.actions[i] = action
            return
        if (
            isinstance(action, Redirect)
            and isinstance(old, Redirect)
            and old.address.lower() == action.address.lower()
        ):
            return
    rt.actions.append(action)


def _match_strings(rt: Runtime, cmd: Cmd, values: list[str]) -> bool:
    index = cmd.tag_number("index")
    if index is not None:
        values = [values[index - 1]] if 0 < index <= len(values) else []
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(0)))


def test_error(rt: Runtime, cmd: Cmd) -> bool:
    return _match_strings(rt, cmd, list(_h(rt).errors))


def test_result_action(rt: Runtime, cmd: Cmd) -> bool:
    names = [action_name(a) for a in rt.actions if not isinstance(a, Discard)]
    return _match_strings(rt, cmd, names)


class _Tracker:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def seen(self, key: str, *, now: float) -> bool:
        # Pigeonhole's testsuite host keeps no duplicate database: nothing was seen before
        del key, now
        return False


def test_result_execute(rt: Runtime, cmd: Cmd) -> bool:
    h = _h(rt)
    actions: list[Action] = list(rt.actions)
    if rt.implicit_keep:
        flags = rt.state.get("keep_flags")
        actions.append(Keep(flags if isinstance(flags, tuple) else None, rt.edited_message()))
    now = h.clock.now()
    h.errors = []  # test_error now reports what executing the result met
    h.smtp.clear()  # the outbox holds what this execution sent
    user = h.envelope.to or "recipient@example.com"
    ok = True
    for action in actions:
        if isinstance(action, Keep):
            data = action.message or h.message
            h.mailboxes["INBOX"].append(Stored(data, store_flags(data, action.flags)))
        elif isinstance(action, FileInto):
            box = mailbox_key(action.mailbox)
            failed = f"failed to store into mailbox '{action.mailbox}'"
            if box not in h.mailboxes:
                if not action.create:
                    h.errors.append(f"{failed}: Mailbox doesn't exist: {action.mailbox}")
                    ok = False
                    continue
                if not _mailbox_name_ok(box):
                    h.errors.append(f"{failed}: Invalid mailbox name")
                    ok = False
                    continue
                h.mailboxes[box] = []
            data = action.message or h.message
            h.mailboxes[box].append(Stored(data, store_flags(data, action.flags)))
        elif isinstance(action, Redirect):
            data = action.message or h.message
            final = compose.policy_sender("recipient", envelope=h.envelope, user_email=None)
            me = rt.limits.user_email or final
            if compose.redirect_loop(data, users=(me or "", final or "")):
                # RFC 5228 §4.2: a detected loop is an error; the message is kept instead
                h.errors.append(f"not redirected to {action.address}: mail loop")
                if not any(isinstance(a, Keep) for a in actions):
                    h.mailboxes["INBOX"].append(Stored(h.message, store_flags(h.message, None)))
                continue
            sender = compose.redirect_sender(
                rt.limits.redirect_envelope_from,
                envelope=h.envelope,
                user_email=rt.limits.user_email,
            )
            if me:
                data = compose.mark_redirected(data, user=me)
            h.smtp.append(Sent(sender, action.address, data))
        elif isinstance(action, Vacation):
            reply = compose.vacation_reply(action, now=now)
            if reply is not None:
                h.smtp.append(Sent(reply.sender, reply.recipient, reply.message))
                h.tracked[action.key] = now + action.period
        elif isinstance(action, Notify):
            for out in compose.notifications(
                action,
                user=user,
                envelope_sender=h.envelope.from_,
                now=now,
                setting=rt.limits.notify_envelope_from,
                envelope=h.envelope,
                user_email=rt.limits.user_email,
            ):
                h.smtp.append(Sent(out.sender, out.recipient, out.message))
        elif isinstance(action, Report):
            out = report_message(
                action,
                original=h.message,
                envelope=h.envelope,
                user=user,
                now=now,
                setting=rt.limits.report_from,
                user_email=rt.limits.user_email,
            )
            h.smtp.append(Sent(out.sender, out.recipient, out.message))
        elif isinstance(action, Pipe):
            if not _pipe(h, action):
                ok = ok and action.try_
        elif isinstance(action, Reject | Ereject):
            mdn = compose.reject_mdn(
                Reject(action.reason),
                original=h.message,
                user=user,
                envelope_sender=h.envelope.from_,
                now=now,
            )
            if mdn is not None:
                h.smtp.append(Sent(mdn.sender, mdn.recipient, mdn.message))
    if not ok and not any(isinstance(a, Keep) for a in actions):
        # a failed store falls back to keeping the message as received (RFC 5228 §2.10.6;
        # RFC 5293 §7: without the editheader changes)
        h.mailboxes["INBOX"].append(Stored(h.message, store_flags(h.message, None)))
    for mark in rt.marks:
        h.tracked[mark.key] = mark.expires
    return ok


def _pipe(h: Harness, action: Pipe) -> bool:
    """Run a pipe action; its errors as Pigeonhole reports them."""
    data = action.message or h.message
    call = ProgramCall("pipe", action.program, action.args, data, dict(action.environment))
    result = h.run(call)
    if result.outcome is Outcome.OK:
        return True
    if result.outcome is not Outcome.UNKNOWN:
        h.errors.append(f"pipe action: program '{action.program}' {result.detail}")
    h.errors.append(f"failed to pipe message to program '{action.program}': {result.detail}")
    return False


def _mailbox_name_ok(name: str) -> bool:
    # the test store's hierarchy separator is "/": no empty levels (as Dovecot refuses)
    return bool(name) and "" not in name.split("/")


def test_unsupported(rt: Runtime, cmd: Cmd) -> bool:
    raise SieveError([(cmd.line, f"{cmd.name} is specific to Pigeonhole")])


def cmd_unsupported(rt: Runtime, cmd: Cmd) -> None:
    raise SieveError([(cmd.line, f"{cmd.name} is specific to Pigeonhole")])


S, SL, N = K.STRING, K.STRING_LIST, K.NUMBER
TESTSUITE = Extension(
    "vnd.dovecot.testsuite",
    specs=(
        Spec("test", False, positional=(Param(S, "test-name"),), block=True),
        Spec("test_fail", False, positional=(Param(S, "reason"),)),
        Spec("test_set", False, positional=(Param(S, "object"), Param(S, "value"))),
        Spec("test_config_set", False, positional=(Param(S, "setting"), Param(S, "value"))),
        Spec("test_config_unset", False, positional=(Param(S, "setting"),)),
        Spec("test_config_reload", False, tags=(TagDef("extension", S),)),
        Spec("test_result_reset", False),
        Spec("test_result_print", False),
        Spec("test_message_print", False),
        Spec(
            "test_message",
            False,
            positional=(Param(N, "index"),),
            tags=(TagDef("smtp", group="source"), TagDef("folder", S, group="source")),
            both=True,
        ),
        Spec("test_mailbox_create", False, positional=(Param(S, "mailbox"),)),
        Spec("test_mailbox_delete", False, positional=(Param(S, "mailbox"),)),
        Spec("test_binary_load", False, positional=(Param(S, "name"),)),
        Spec("test_binary_save", False, positional=(Param(S, "name"),)),
        Spec(
            "test_imap_metadata_set",
            False,
            positional=(Param(S, "annotation"), Param(S, "value")),
            tags=(TagDef("mailbox", S),),
        ),
        Spec("test_script_compile", True, positional=(Param(S, "path"),)),
        Spec("test_script_run", True, tags=(TagDef("append_result"),)),
        Spec("test_multiscript", True, positional=(Param(SL, "scripts"),)),
        Spec(
            "test_error",
            True,
            positional=(Param(SL, "key-list"),),
            tags=(*MATCH_TAGS, TagDef("index", N)),
        ),
        Spec(
            "test_result_action",
            True,
            positional=(Param(SL, "key-list"),),
            tags=(*MATCH_TAGS, TagDef("index", N)),
        ),
        Spec("test_result_execute", True),
    ),
    commands={
        "test": cmd_test,
        "test_fail": cmd_test_fail,
        "test_set": cmd_test_set,
        "test_config_set": cmd_config_set,
        "test_config_unset": cmd_config_unset,
        "test_config_reload": cmd_config_reload,
        "test_result_reset": cmd_result_reset,
        "test_result_print": cmd_noop,
        "test_message_print": cmd_noop,
        "test_message": cmd_test_message,
        "test_mailbox_create": cmd_mailbox_create,
        "test_mailbox_delete": cmd_mailbox_delete,
        "test_binary_load": cmd_unsupported,
        "test_binary_save": cmd_unsupported,
        "test_imap_metadata_set": cmd_imap_metadata_set,
    },
    tests={
        "test_message": test_message,
        "test_script_compile": test_script_compile,
        "test_script_run": test_script_run,
        "test_multiscript": test_unsupported,
        "test_error": test_error,
        "test_result_action": test_result_action,
        "test_result_execute": test_result_execute,
    },
    namespaces={"tst": tst_namespace},
)


@dataclass
class FileResult:
    path: Path
    cases: list[CaseResult]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.cases) and all(c.passed for c in self.cases)


def run_file(path: Path) -> FileResult:
    """Compile and run one .svtest file; every test block becomes a CaseResult."""
    harness = Harness(path)
    text = path.read_text("utf-8", "surrogateescape")
    try:
        script = parse_script(
            text,
            extensions=harness.extensions(),
            include_loader=harness.loader,
            custom=(TESTSUITE,),
            limits=harness.limits(),
        )
    except SieveError as exc:
        return FileResult(path, [], f"compile: {exc.errors[:3]}")
    rt = Runtime(
        script,
        message=harness.message,
        envelope=harness.envelope,
        environment=harness.environment(),
        mailbox_exists=lambda name: mailbox_key(name) in harness.mailboxes,
        duplicate_tracker=_Tracker(harness),
        clock=harness.clock,
        limits=harness.outer_limits(),
    )
    rt.state["harness"] = harness
    rt.environment = harness.environment(lambda: rt.message)
    rt.programs = harness  # filter/execute in the .svtest file itself
    rt.ext_lists = harness.ext_lists()
    rt.metadata = harness.metadata_lookup
    harness.set_message(rt, DEFAULT_MESSAGE)
    wire(rt)
    error = execute(rt)
    if error is not None:
        return FileResult(path, harness.cases, f"runtime: {error.errors}")
    return FileResult(path, harness.cases)
