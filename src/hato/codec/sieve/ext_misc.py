"""Smaller Sieve extensions: environment (RFC 5183), spamtest/spamtestplus/virustest
(RFC 5235), mailbox (RFC 5490 §3.1 mailboxexists), special-use (RFC 8579 specialuse_exists),
duplicate (RFC 7352), ihave and error (RFC 5463), and Pigeonhole's vnd.dovecot.debug
(``debug_log``: the message goes to ``SieveResult.debug``, for the host's log).

Implements RFC 5183 §4 (an unknown environment item makes the test false; "name",
"version", "location" and "phase" have defaults, the rest come from the host), RFC 5235 §3
(scores read from the host environment items "vnd.hato.spamtest" (0-10),
"vnd.hato.spamtest-percent" (0-100) and "vnd.hato.virustest" (0-5); "0" when absent, meaning
"not tested"), RFC 7352 §3 (the id is :uniqueid, the :header value or Message-ID; tracked per
:handle; a test is true when the tracker saw the id within :seconds; the id is recorded in
``SieveResult.marks`` only if the script completes, §3.3), RFC 5463 §4-§5 (ihave; error
ends the run with an error). Leaves out: nothing.
"""

from __future__ import annotations

import hashlib

from hato import __version__ as _version
from hato.codec.sieve.actions import DuplicateMark
from hato.codec.sieve.language import ALL_EXTENSIONS, Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error
from hato.codec.sieve.strings import Template, has_bad_utf8

# RFC 5183 §4: items every implementation knows; the host may answer more
ENVIRONMENT_DEFAULTS = {
    "name": "Hato",
    "version": _version,
    "location": "MDA",
    "phase": "during",
}
KNOWN_ITEMS = frozenset(
    {"domain", "host", "location", "name", "phase", "remote-host", "remote-ip", "version"}
)
# RFC 5463 §4: capabilities ihave may not load at run time (they change compilation)
IHAVE_RESTRICTED = frozenset({"variables", "encoded-character"})


def environment_item(rt: Runtime, name: str) -> str | None:
    key = name.lower()
    if key in rt.environment:
        return rt.environment[key]
    if key in ENVIRONMENT_DEFAULTS:
        return ENVIRONMENT_DEFAULTS[key]
    return None


def _environment(rt: Runtime, cmd: Cmd) -> bool:
    value = environment_item(rt, rt.expand(cmd.string(0)))
    if value is None:
        return False  # RFC 5183 §4: unknown item
    return rt.matches(cmd, [value], keys=rt.expand_all(cmd.strings(1)))


def _spamtest(rt: Runtime, cmd: Cmd) -> bool:
    key = "vnd.hato.spamtest-percent" if "percent" in cmd.tags else "vnd.hato.spamtest"
    value = rt.environment.get(key, "0")
    return rt.matches(cmd, [value], keys=[rt.expand(cmd.string(0))])


def _virustest(rt: Runtime, cmd: Cmd) -> bool:
    value = rt.environment.get("vnd.hato.virustest", "0")
    return rt.matches(cmd, [value], keys=[rt.expand(cmd.string(0))])


def _mailboxexists(rt: Runtime, cmd: Cmd) -> bool:
    for name in rt.expand_all(cmd.strings(0)):
        if has_bad_utf8(name) or not rt.mailbox_exists(name):
            return False
    return True


def _specialuse_exists(rt: Runtime, cmd: Cmd) -> bool:
    mailbox = cmd.args[0]
    box = rt.expand(mailbox) if isinstance(mailbox, Template) else None
    flags = cmd.args[1]
    assert isinstance(flags, tuple)
    lookup = rt.special_use_exists
    if box is not None and (has_bad_utf8(box) or not rt.mailbox_exists(box)):
        return False
    return all(lookup(box, flag) for flag in rt.expand_all(flags))


def _duplicate(rt: Runtime, cmd: Cmd) -> bool:
    unique = cmd.tag_string("uniqueid")
    header = cmd.tag_string("header")
    if unique is not None:
        ident: str | None = rt.expand(unique)
    elif header is not None:
        values = rt.header_values(rt.expand(header))
        ident = values[0] if values else None
    else:
        values = rt.header_values("message-id")
        ident = values[0] if values else None
    if ident is None:
        return False  # RFC 7352 §3.1: nothing to track
    handle_arg = cmd.tag_string("handle")
    handle = rt.expand(handle_arg) if handle_arg is not None else ""
    digest = hashlib.sha256(f"{handle}\x00{ident}".encode("utf-8", "surrogateescape"))
    key = "duplicate:" + digest.hexdigest()
    period = cmd.tag_number("seconds")
    if period is None:
        period = rt.limits.duplicate_default_period
    if rt.limits.duplicate_max_period:
        period = min(period, rt.limits.duplicate_max_period)
    now = rt.clock.now()
    # within one run nothing is a duplicate yet: marks are recorded after delivery
    seen = rt.tracker is not None and rt.tracker.seen(key, now=now)
    if not seen or "last" in cmd.tags:
        # RFC 7352 §3.3: :last restarts the period at every occurrence
        rt.marks = [m for m in rt.marks if m.key != key]
        rt.marks.append(DuplicateMark(key, now + period))
    return seen


def _ihave(rt: Runtime, cmd: Cmd) -> bool:
    for name in rt.expand_all(cmd.strings(0)):
        if name not in ALL_EXTENSIONS or name in IHAVE_RESTRICTED:
            return False
    return True


def _error(rt: Runtime, cmd: Cmd) -> None:
    raise runtime_error(cmd, rt.expand(cmd.string(0)))  # RFC 5463 §5


MAX_DEBUG_MESSAGES = 32  # debug_log lines kept per run
MAX_DEBUG_SIZE = 1024  # characters of one


def _debug_log(rt: Runtime, cmd: Cmd) -> None:
    if len(rt.debug) < MAX_DEBUG_MESSAGES:
        rt.debug.append(rt.expand(cmd.string(0))[:MAX_DEBUG_SIZE])


COMMANDS: dict[str, CommandFn] = {"error": _error, "debug_log": _debug_log}
TESTS: dict[str, TestFn] = {
    "environment": _environment,
    "spamtest": _spamtest,
    "virustest": _virustest,
    "mailboxexists": _mailboxexists,
    "specialuse_exists": _specialuse_exists,
    "duplicate": _duplicate,
    "ihave": _ihave,
}
