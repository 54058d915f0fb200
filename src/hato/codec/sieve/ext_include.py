"""Sieve "include" (RFC 6609): include, return and global at run time.

Implements RFC 6609 §3.2 (include runs the named script, compiled with the including one; its
local variables are its own; :once skips a script already included in this run; a missing
:optional script is skipped), §3.3 (return ends the current script) and §3.4-§3.5 (global
variables, resolved at compile time by ``validate``). Nesting is bounded by
``SieveLimits.max_include_depth``. Leaves out: nothing.
"""

from __future__ import annotations

from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Return, Runtime, TestFn, runtime_error


def _include(rt: Runtime, cmd: Cmd) -> None:
    key = cmd.extra.get("script")
    if not isinstance(key, tuple):
        return  # a missing :optional script (RFC 6609 §3.2)
    included = rt.root.includes.get(key)
    if included is None:
        raise runtime_error(cmd, f"include: script '{key[1]}' is not available")
    if "once" in cmd.tags and key in rt.included:
        return
    rt.included.add(key)
    if rt.include_depth >= rt.limits.max_include_depth:
        raise runtime_error(cmd, "include: nesting of included scripts exceeds the limit")
    saved = (rt.script, rt.locals)
    rt.script = included
    rt.locals = {}  # RFC 6609 §3.2: an included script has its own local variables
    rt.include_depth += 1
    try:
        rt.run_block(included.commands)
    except Return:
        pass
    finally:
        rt.include_depth -= 1
        rt.script, rt.locals = saved


def _return(rt: Runtime, cmd: Cmd) -> None:
    raise Return()


def _global(rt: Runtime, cmd: Cmd) -> None:
    del rt, cmd  # declarations take effect at compile time


COMMANDS: dict[str, CommandFn] = {"include": _include, "return": _return, "global": _global}
TESTS: dict[str, TestFn] = {}
