"""Running a compiled Sieve script: control flow, the core commands and tests, and the result.

Implements RFC 5228 §3 (if/elsif/else, stop), §4 (keep, fileinto, redirect, discard), §5
(address, allof, anyof, envelope, exists, false, header, not, size, true) with §2.7 matching
and §2.10 result rules: the implicit keep (§2.10.2), and on a runtime error the implicit keep
alone (§2.10.6, with the unedited message, RFC 5293 §7). Extension commands and tests come
from the ``ext_*`` modules. Leaves out: nothing of the core language.
Security: the run is bounded by ``SieveLimits`` (instructions, actions, redirects, variable
size) and never performs I/O: mailbox existence and duplicate ids come from callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hato.codec.sieve import (
    ext_body,
    ext_date,
    ext_editheader,
    ext_extlists,
    ext_extprograms,
    ext_flags,
    ext_include,
    ext_metadata,
    ext_mime,
    ext_misc,
    ext_notify,
    ext_replace,
    ext_report,
    ext_vacation,
    ext_variables,
)
from hato.codec.sieve.actions import Discard, Ereject, FileInto, Keep, Redirect, Reject, SieveResult
from hato.codec.sieve.addresses import address_part, parse_mailbox, parse_path
from hato.codec.sieve.ext_extlists import ExternalLists
from hato.codec.sieve.ext_extprograms import Programs
from hato.codec.sieve.language import Cmd, Script
from hato.codec.sieve.runtime import (
    Break,
    CommandFn,
    DuplicateTracker,
    Envelope,
    MetadataLookup,
    Return,
    Runtime,
    SieveLimits,
    Stop,
    TestFn,
    runtime_error,
)
from hato.codec.sieve.strings import has_bad_utf8, shown
from hato.core.clock import Clock
from hato.core.errors import SieveError


def run_script(
    script: Script,
    *,
    message: bytes,
    envelope: Envelope,
    environment: Mapping[str, str],
    mailbox_exists: Callable[[str], bool],
    duplicate_tracker: DuplicateTracker | None,
    clock: Clock,
    limits: SieveLimits,
    special_use_exists: Callable[[str | None, str], bool] | None = None,
    ext_lists: ExternalLists | None = None,
    metadata: MetadataLookup | None = None,
    cpu_clock: Callable[[], float] | None = None,
    programs: Programs | None = None,
) -> SieveResult:
    """Run ``script`` on ``message``; never raises for script errors (they are in
    ``SieveResult.errors`` and leave the implicit keep in force).

    ``special_use_exists(mailbox, flag)`` answers RFC 8579 specialuse_exists (mailbox None:
    any mailbox); without it no special-use mailbox exists. ``ext_lists`` answers RFC 6134
    :list queries (without it only an empty :addrbook:default exists). ``metadata(mailbox,
    entry)`` answers RFC 5490 metadata tests (mailbox None: a server annotation; the value,
    or None when the annotation is NIL); without it no annotation exists. ``cpu_clock``
    measures the CPU time ``limits.max_cpu_time`` bounds (default: this thread's).
    ``programs`` runs the administrator's programs for vnd.dovecot.filter/execute (without
    it every program is unknown); it blocks, so the CPU limit does not count its time."""
    rt = Runtime(
        script,
        message=message,
        envelope=envelope,
        environment=environment,
        mailbox_exists=mailbox_exists,
        duplicate_tracker=duplicate_tracker,
        clock=clock,
        limits=limits,
    )
    if special_use_exists is not None:
        rt.special_use_exists = special_use_exists
    rt.ext_lists = ext_lists
    rt.programs = programs
    if metadata is not None:
        rt.metadata = metadata
    if cpu_clock is not None:
        rt.set_cpu_clock(cpu_clock)
    wire(rt)
    error = execute(rt)
    if error is not None:
        # RFC 5228 §2.10.6: a runtime error falls back to the implicit keep, with the
        # original header (RFC 5293 §7)
        return SieveResult((), implicit_keep=True, errors=error.errors)
    return result_of(rt)


def wire(rt: Runtime) -> None:
    """Give ``rt`` the interpreter's block runner and test evaluator (for extensions)."""
    rt.run_block = lambda cmds: run_block(rt, cmds)
    rt.run_test = lambda cmd: test(rt, cmd)


def result_of(rt: Runtime) -> SieveResult:
    """The result accumulated in ``rt``."""
    keep_flags = tuple(rt.flags) if ("imap4flags" in rt.root.required or rt.flags_used) else None
    return SieveResult(
        tuple(rt.actions),
        implicit_keep=rt.implicit_keep,
        keep_flags=keep_flags,
        keep_message=rt.edited_message(),
        marks=tuple(rt.marks),
        withheld=tuple(rt.withheld),
        warnings=tuple(rt.warnings),
        debug=tuple(rt.debug),
    )


def execute(rt: Runtime) -> SieveError | None:
    """Run the root script in ``rt``; the runtime error, if one ended the run."""
    try:
        run_block(rt, rt.script.commands)
    except (Stop, Return):
        pass
    except SieveError as exc:
        return exc
    except RecursionError:
        return SieveError([(0, "execution exceeded the nesting limit")])
    return None


def run_block(rt: Runtime, cmds: tuple[Cmd, ...]) -> None:
    """Run a command list (RFC 5228 §3.1: if/elsif/else chains)."""
    i = 0
    while i < len(cmds):
        cmd = cmds[i]
        if cmd.name == "if":
            taken = False
            j = i
            while j < len(cmds) and (j == i or cmds[j].name in ("elsif", "else")):
                branch = cmds[j]
                j += 1
                if not taken:
                    rt.step(branch)
                    if branch.name == "else" or test(rt, branch.tests[0]):
                        taken = True
                        run_block(rt, branch.block or ())
                if branch.name == "else":
                    break
            i = j
            continue
        rt.step(cmd)
        command(rt, cmd)
        i += 1


def command(rt: Runtime, cmd: Cmd) -> None:
    fn = COMMANDS.get(cmd.name)
    if fn is not None:
        fn(rt, cmd)
        return
    for ext in rt.custom.values():
        handler = ext.commands.get(cmd.name)
        if handler is not None:
            handler(rt, cmd)
            return
    raise runtime_error(cmd, f"command '{cmd.name}' is not implemented")


def test(rt: Runtime, cmd: Cmd) -> bool:
    rt.step(cmd)
    fn = TESTS.get(cmd.name)
    if fn is not None:
        return fn(rt, cmd)
    for ext in rt.custom.values():
        handler = ext.tests.get(cmd.name)
        if handler is not None:
            return bool(handler(rt, cmd))
    raise runtime_error(cmd, f"test '{cmd.name}' is not implemented")


# -- core tests (RFC 5228 §5) -----------------------------------------------------------


def _address(rt: Runtime, cmd: Cmd) -> bool:
    values: list[str] = []
    parts = ext_mime.parts_for(rt, cmd)
    for name in rt.expand_all(cmd.strings(0)):
        for where in parts:
            addresses: list[str] = []
            fields = ext_mime.select_fields(cmd, rt.raw_header_values(name, where))
            for value in fields:
                addresses.extend(rt.addresses_of(value))
            values.extend(_parts(rt, cmd, addresses=addresses))
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(1)))


def _parts(rt: Runtime, cmd: Cmd, *, addresses: list[str]) -> list[str]:
    which = next((t for t in ("localpart", "domain", "user", "detail") if t in cmd.tags), "all")
    out: list[str] = []
    for address in addresses:
        if address == "":
            if which in ("all", "localpart", "domain", "user"):
                out.append("")
            continue
        value = address_part(address, which, delimiter=rt.limits.subaddress_delimiter)
        if value is not None:
            out.append(value)
    return out


def _envelope(rt: Runtime, cmd: Cmd) -> bool:
    env = rt.envelope
    values: list[str] = []
    for name in rt.expand_all(cmd.strings(0)):
        key = name.lower()
        raw = {"from": env.from_, "to": env.to, "orig_to": env.orig_to, "auth": env.auth}.get(key)
        if raw is None:
            continue
        # RFC 5228 §5.4: the null reverse-path is the empty string; a path that is not
        # RFC 5321 syntax has no address parts to test
        address = raw if key == "auth" else parse_path(raw)
        if address is not None:
            values.extend(_parts(rt, cmd, addresses=[address]))
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(1)))


def _header(rt: Runtime, cmd: Cmd) -> bool:
    values: list[str] = []
    for name in rt.expand_all(cmd.strings(0)):
        for where in ext_mime.parts_for(rt, cmd):
            values.extend(ext_mime.header_values(rt, cmd, name=name, part=where))
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(1)))


def _exists(rt: Runtime, cmd: Cmd) -> bool:
    names = rt.expand_all(cmd.strings(0))
    parts = ext_mime.parts_for(rt, cmd)
    return all(any(where.header(name) is not None for where in parts) for name in names)


def _size(rt: Runtime, cmd: Cmd) -> bool:
    size = len(rt.message)
    limit = cmd.number(0)
    return size > limit if "over" in cmd.tags else size < limit


def _not(rt: Runtime, cmd: Cmd) -> bool:
    return not test(rt, cmd.tests[0])


def _anyof(rt: Runtime, cmd: Cmd) -> bool:
    return any(test(rt, t) for t in cmd.tests)  # RFC 5228 §5.3: short-circuit


def _allof(rt: Runtime, cmd: Cmd) -> bool:
    return all(test(rt, t) for t in cmd.tests)


# -- core commands (RFC 5228 §3-§4) ------------------------------------------------------


def _stop(rt: Runtime, cmd: Cmd) -> None:
    raise Stop()


def _keep(rt: Runtime, cmd: Cmd) -> None:
    flags = rt.current_flags(cmd, cmd.tag_strings("flags"))
    rt.add(cmd, Keep(flags, rt.edited_message()), cancel_keep=True)


def _discard(rt: Runtime, cmd: Cmd) -> None:
    rt.add(cmd, Discard(), cancel_keep=True)


def _redirect(rt: Runtime, cmd: Cmd) -> None:
    text = rt.expand(cmd.string(0))
    copy = "copy" in cmd.tags  # RFC 3894 §3: :copy keeps the implicit keep
    targets = ext_extlists.list_members(rt, cmd, text) if "list" in cmd.tags else [text]
    for target in targets:
        address, reason = parse_mailbox(target)
        if address is None:
            raise runtime_error(cmd, f"specified redirect address '{target}' is invalid: {reason}")
        action = Redirect(address, copy=copy, message=rt.redirect_message())
        rt.add(cmd, action, cancel_keep=not copy)


def _fileinto(rt: Runtime, cmd: Cmd) -> None:
    mailbox = rt.expand(cmd.string(0))
    if has_bad_utf8(mailbox):
        raise runtime_error(
            cmd,
            f"fileinto command: invalid folder name `{shown(mailbox)}' specified: invalid utf-8",
        )
    if not mailbox or "\x00" in mailbox or "\r" in mailbox or "\n" in mailbox:
        raise runtime_error(cmd, f"fileinto command: invalid folder name `{mailbox}' specified")
    flags = rt.current_flags(cmd, cmd.tag_strings("flags"))
    use = cmd.tag_string("specialuse")
    copy = "copy" in cmd.tags
    action = FileInto(
        mailbox,
        flags,
        create="create" in cmd.tags,
        special_use=rt.expand(use) if use is not None else None,
        copy=copy,
        message=rt.edited_message(),
    )
    rt.add(cmd, action, cancel_keep=not copy)


def _reject(rt: Runtime, cmd: Cmd) -> None:
    reason = rt.expand(cmd.string(0))
    action = Reject(reason) if cmd.name == "reject" else Ereject(reason)
    rt.add(cmd, action, cancel_keep=True)  # RFC 5429 §2.4: reject cancels the implicit keep


COMMANDS: dict[str, CommandFn] = {
    "stop": _stop,
    "keep": _keep,
    "discard": _discard,
    "redirect": _redirect,
    "fileinto": _fileinto,
    "reject": _reject,
    "ereject": _reject,
    "require": lambda rt, cmd: None,
}
TESTS: dict[str, TestFn] = {
    "address": _address,
    "envelope": _envelope,
    "header": _header,
    "exists": _exists,
    "size": _size,
    "true": lambda rt, cmd: True,
    "false": lambda rt, cmd: False,
    "not": _not,
    "anyof": _anyof,
    "allof": _allof,
}
for _module in (
    ext_body,
    ext_date,
    ext_editheader,
    ext_extlists,
    ext_extprograms,
    ext_flags,
    ext_include,
    ext_metadata,
    ext_mime,
    ext_misc,
    ext_notify,
    ext_replace,
    ext_report,
    ext_vacation,
    ext_variables,
):
    COMMANDS.update(_module.COMMANDS)
    TESTS.update(_module.TESTS)

__all__ = ["Break", "Envelope", "SieveLimits", "run_block", "run_script", "test"]
