"""Sieve "vnd.dovecot.pipe", "vnd.dovecot.filter" and "vnd.dovecot.execute" (Pigeonhole's
spec-bosch-sieve-extprograms): hand the message or a string to an administrator's program.

Implements the spec's §3 (program names: constant strings, 1 to 128 characters, Net-Unicode
(RFC 5198 §2: NFC, no controls) without "/", U+007F-U+009F, U+2028/U+2029), §4 (arguments: a
string list, at most ``MAX_ARGUMENTS`` of ``MAX_ARGUMENT_SIZE`` octets, no CR, LF or NUL),
§5 (pipe: an action carried out with the result, cancelling the implicit keep unless
:copy, §5.2; once per program, §5.1; incompatible with reject), §6 (filter: the program's
output replaces the message for the rest of the run; a failure leaves it unchanged and is no
error), §7 (execute: :input string or :pipe message, :output into a variable, which needs
"variables" and stays unchanged on failure), §8 (filter and execute as tests: true when the
program succeeded; an unknown program is false rather than an error, the §8 MAY).
The interpreter does no I/O: filter and execute call the host's ``Programs`` (delivery's
``hato.delivery.sieve_programs`` runs them in an administrator's directory); pipe becomes a
``Pipe`` action that delivery carries out.
Leaves out: Dovecot's socket services (sieve_*_socket_dir).
Security: a program name never reaches a path with "/" or "..": the host also checks that it
names a file directly inside its directory; arguments are passed as an argv list, no shell.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hato.codec.sieve.actions import Pipe
from hato.codec.sieve.addresses import parse_path
from hato.codec.sieve.ext_misc import environment_item
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error
from hato.codec.sieve.strings import Ref, has_bad_utf8, shown

if TYPE_CHECKING:
    from hato.codec.sieve.validate import Checker

MAX_PROGRAM_NAME = 128  # §3: "MUST allow names of up to 128 Unicode characters"
MAX_ARGUMENTS = 64  # §4: at least 16 ...
MAX_ARGUMENT_SIZE = 4096  # ... of at least 1024 octets
_BAD_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029/]")  # §3 prohibited characters
_BAD_ARGUMENT = re.compile("[\x00\r\n]")  # §4: MAY restrict CR and LF


class Outcome(enum.Enum):
    """How a program run ended."""

    OK = "ok"  # exit status 0
    FALSE = "false"  # ran, exit status other than 0 (§8: a "false" result)
    UNKNOWN = "unknown"  # no such program in the administrator's directory
    FAILED = "failed"  # could not run, timed out, too much output


@dataclass(frozen=True, slots=True)
class ProgramCall:
    """One program run: ``kind`` is "pipe", "filter" or "execute" (each has its own
    directory); ``data`` is the input (None: none); ``environment`` the values the program
    gets (USER, HOST, SENDER, RECIPIENT, ORIG_RECIPIENT)."""

    kind: str
    program: str
    args: tuple[str, ...] = ()
    data: bytes | None = None
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    outcome: Outcome
    output: bytes = b""
    detail: str = ""  # why it failed, for errors and the log


class Programs(Protocol):
    """The host's runner of administrator programs (blocking; called from the run)."""

    def run(self, call: ProgramCall) -> ProgramResult: ...


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid program name (§3), or None."""
    if not name:
        return "empty name"
    if has_bad_utf8(name):
        return "invalid UTF-8"
    if len(name) > MAX_PROGRAM_NAME:  # §3: MUST reject, never truncate
        return f"longer than {MAX_PROGRAM_NAME} characters"
    if _BAD_NAME.search(name):
        return "contains a forbidden character"
    if name in (".", ".."):
        return "names a directory"
    if unicodedata.normalize("NFC", name) != name:  # RFC 5198 §2: normalization form C
        return "not in Unicode normalization form C"
    return None


def printable(text: str) -> str:
    """``text`` for an error message: controls and separators as \\uXXXX escapes."""
    text = shown(text)[:MAX_PROGRAM_NAME]
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def argument_problem(args: list[str]) -> str | None:
    if len(args) > MAX_ARGUMENTS:
        return f"more than {MAX_ARGUMENTS} arguments"
    for arg in args:
        if len(arg.encode("utf-8", "surrogateescape")) > MAX_ARGUMENT_SIZE:
            return f"an argument is longer than {MAX_ARGUMENT_SIZE} octets"
        if _BAD_ARGUMENT.search(arg):
            return f"argument '{printable(arg)[:40]}' contains CR, LF or NUL"
    return None


# -- compile time ---------------------------------------------------------------------------


def check_program(ch: Checker, cmd: Cmd) -> None:
    """§3: a constant, valid program name; §4: literal arguments; §7: :output."""
    from hato.codec.sieve.checks import variable_target

    name = cmd.string(0).constant
    if name is None:
        ch.error(
            cmd.line,
            f"the {cmd.name} command requires a constant string as program name "
            "(variables are not allowed in program names)",
        )
    else:
        problem = name_problem(name)
        if problem is not None:
            ch.error(
                cmd.line, f"{cmd.name} action: invalid program name '{printable(name)}': {problem}"
            )
    args = cmd.args[1]
    if isinstance(args, tuple) and all(t.constant is not None for t in args):
        problem = argument_problem([t.constant or "" for t in args])
        if problem is not None:
            ch.error(cmd.line, f"{cmd.name} action: invalid program arguments: {problem}")
    output = cmd.tag_string("output")
    if output is not None:
        if "variables" not in ch.required:
            ch.error(
                cmd.line,
                "the :output tag of the execute command requires the variables extension",
            )
            return
        target = variable_target(ch, cmd, output)
        if target is not None:
            cmd.extra["output"] = target


# -- run time -------------------------------------------------------------------------------


def _path(text: str | None) -> str:
    return (parse_path(text) or text.strip(" <>")) if text else ""


def program_environment(rt: Runtime) -> dict[str, str]:
    """What Pigeonhole gives its programs besides HOME (the host adds that and PATH)."""
    env = rt.envelope
    return {
        "USER": rt.limits.user_email or _path(env.to),
        "HOST": environment_item(rt, "host") or "",
        "SENDER": _path(env.from_),
        "RECIPIENT": _path(env.to),
        "ORIG_RECIPIENT": _path(env.orig_to or env.to),
    }


def _arguments(rt: Runtime, cmd: Cmd) -> tuple[str, ...]:
    value = cmd.args[1]
    args = rt.expand_all(value) if isinstance(value, tuple) else []
    problem = argument_problem(args)
    if problem is not None:
        raise runtime_error(cmd, f"{cmd.name} action: invalid program arguments: {problem}")
    return tuple(args)


def _call(rt: Runtime, cmd: Cmd, data: bytes | None) -> tuple[str, ProgramResult]:
    name = rt.expand(cmd.string(0))
    args = _arguments(rt, cmd)
    if rt.programs is None:
        return name, ProgramResult(Outcome.UNKNOWN, detail="no programs are configured")
    runs = rt.state.get("program_runs", 0)
    assert isinstance(runs, int)
    if runs >= rt.limits.max_program_runs:  # §11: resources "SHOULD be limited"
        raise runtime_error(
            cmd,
            f"number of program runs exceeds policy limit ({rt.limits.max_program_runs})",
        )
    rt.state["program_runs"] = runs + 1
    call = ProgramCall(cmd.name, name, args, data, program_environment(rt))
    return name, rt.programs.run(call)


def _crlf(data: bytes) -> bytes:
    """RFC 5322 §2.1: a message's lines end in CRLF (shell programs write LF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def _filter(rt: Runtime, cmd: Cmd, *, test: bool) -> bool:
    name, result = _call(rt, cmd, rt.message)
    if result.outcome is Outcome.UNKNOWN:
        if test:
            return False  # §8: an unknown program MAY make the test false
        raise runtime_error(cmd, f"filter action: program '{name}' not found: {result.detail}")
    if result.outcome is Outcome.OK and result.output:
        rt.set_message(_crlf(result.output))  # §6.1: the rest of the run sees the new message
        return True
    # §6: a failure leaves the message unchanged and raises no error
    if result.outcome is Outcome.FAILED:
        rt.warnings.append((cmd.line, f"filter action: program '{name}' failed: {result.detail}"))
    return False


def _execute(rt: Runtime, cmd: Cmd, *, test: bool) -> bool:
    data: bytes | None = None
    given = cmd.tag_string("input")
    if given is not None:
        data = rt.expand(given).encode("utf-8", "surrogateescape")
    elif "pipe" in cmd.tags:
        data = rt.message  # §7: the current version of the message
    name, result = _call(rt, cmd, data)
    if result.outcome in (Outcome.UNKNOWN, Outcome.FAILED):
        if test:
            return False
        what = "not found" if result.outcome is Outcome.UNKNOWN else "failed"
        raise runtime_error(cmd, f"execute action: program '{name}' {what}: {result.detail}")
    if result.outcome is not Outcome.OK:
        return False  # §8: a "false" result; the output is discarded
    target = cmd.extra.get("output")
    if isinstance(target, Ref):
        # §7: the value MAY be truncated to the variable size limit (``assign`` does)
        rt.assign(target, result.output.decode("utf-8", "surrogateescape"))
    return True


def _pipe(rt: Runtime, cmd: Cmd) -> None:
    name = rt.expand(cmd.string(0))
    args = _arguments(rt, cmd)
    if any(isinstance(a, Pipe) and a.program == name for a in rt.actions):
        # §5.1: "MUST fail with an appropriate error" when piping to one program twice
        raise runtime_error(cmd, f"pipe action: the message is already piped to program '{name}'")
    copy = "copy" in cmd.tags
    action = Pipe(
        name,
        args,
        try_="try" in cmd.tags,
        copy=copy,
        message=rt.edited_message(),  # §6.1: the message as it stands now is locked in
        environment=tuple(program_environment(rt).items()),
    )
    rt.add(cmd, action, cancel_keep=not copy)  # §5: pipe cancels the implicit keep


def _filter_command(rt: Runtime, cmd: Cmd) -> None:
    _filter(rt, cmd, test=False)


def _execute_command(rt: Runtime, cmd: Cmd) -> None:
    _execute(rt, cmd, test=False)


COMMANDS: dict[str, CommandFn] = {
    "pipe": _pipe,
    "filter": _filter_command,
    "execute": _execute_command,
}
TESTS: dict[str, TestFn] = {
    "filter": lambda rt, cmd: _filter(rt, cmd, test=True),
    "execute": lambda rt, cmd: _execute(rt, cmd, test=True),
}
CHECKS = {"pipe": check_program, "filter": check_program, "execute": check_program}
