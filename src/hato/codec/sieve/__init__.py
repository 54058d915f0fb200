"""Sieve mail filtering (RFC 5228 and extensions): compile a script, run it on a message.

Sans-IO: ``parse_script`` turns text into a checked ``Script`` (or raises ``SieveError``
listing every error with its line); ``run_script`` decides what to do with one message and
returns a ``SieveResult`` of frozen action values that delivery carries out. Mailbox
existence, duplicate tracking, time, the environment, external lists (RFC 6134) and IMAP
METADATA (RFC 5490) are injected. The supported
capabilities are ``ALL_EXTENSIONS`` (see ``language`` for the standards); Pigeonhole's
vendor extensions (``DOVECOT_EXTENSIONS``: report, pipe/filter/execute, debug) are compiled
only when the host lists them in ``extensions``, and filter/execute call the host's
``Programs`` (``run_script(programs=...)``).
Leaves out: notification methods other than mailto.
Security: scripts are user input: size, instruction, CPU time, action, redirect, include and
variable limits (``SieveLimits``) bound every run; the interpreter performs no I/O. The CPU
limit is checked between instructions, so one slow instruction (a :regex on a long value) can
overrun it by its own duration.
"""

from __future__ import annotations

from collections.abc import Callable

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
    action_name,
)
from hato.codec.sieve.interpreter import run_script
from hato.codec.sieve.language import (
    ALL_EXTENSIONS,
    DOVECOT_EXTENSIONS,
    PROGRAM_EXTENSIONS,
    Cmd,
    Extension,
    Script,
    Spec,
)
from hato.codec.sieve.parser import parse
from hato.codec.sieve.runtime import DuplicateTracker, Envelope, Runtime, SieveLimits
from hato.codec.sieve.validate import Checker, Library, Settings
from hato.core.errors import SieveError


def parse_script(
    text: str,
    *,
    extensions: frozenset[str] = ALL_EXTENSIONS,
    include_loader: Callable[[str, str], str | None] | None = None,
    custom: tuple[Extension, ...] = (),
    limits: SieveLimits | None = None,
    name: str = "",
) -> Script:
    """Compile ``text``. ``extensions`` are the capabilities a script may require;
    ``include_loader(location, name)`` returns an included script's text ("personal" or
    "global" location) or None when it does not exist; ``custom`` adds host extensions.

    Raises SieveError whose ``errors`` list every (line, message), ending with
    ``(0, "parse failed")`` or ``(0, "validation failed")``.
    """
    limits = limits or SieveLimits()
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > limits.max_script_size:
        raise SieveError([(0, f"script is too large (max {limits.max_script_size} bytes)")])
    nodes, errors = parse(text)
    if errors:
        raise SieveError([*errors, (0, "parse failed")])
    library = Library(
        include_loader,
        Settings(
            max_include_depth=limits.max_include_depth,
            max_includes=limits.max_includes,
            notify_allowed=limits.max_notifications > 0,
            max_header_size=limits.max_header_size,
        ),
    )
    found: list[tuple[int, str]] = []
    checker = Checker(
        allowed=extensions, custom=custom, library=library, errors=found, script_name=name
    )
    commands = checker.script(nodes)
    if found:
        raise SieveError([*found, (0, "validation failed")])
    includes = {
        key: Script(cmds, required, name=key[1])
        for key, (cmds, required) in library.scripts.items()
    }
    return Script(commands, frozenset(checker.required), includes, custom, name)


__all__ = [
    "ALL_EXTENSIONS",
    "DOVECOT_EXTENSIONS",
    "PROGRAM_EXTENSIONS",
    "Action",
    "Cmd",
    "Discard",
    "DuplicateMark",
    "DuplicateTracker",
    "Envelope",
    "Ereject",
    "Extension",
    "FileInto",
    "Keep",
    "Notify",
    "Pipe",
    "Redirect",
    "Reject",
    "Report",
    "Runtime",
    "Script",
    "SieveError",
    "SieveLimits",
    "SieveResult",
    "Spec",
    "Vacation",
    "action_name",
    "parse_script",
    "run_script",
]
