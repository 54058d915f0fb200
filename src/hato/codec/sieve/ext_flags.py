"""Sieve "imap4flags" (RFC 5232): setflag, addflag, removeflag, hasflag and the internal
flags variable that keep and fileinto store with.

Implements RFC 5232 §3 (flag lists are space-separated, case-insensitive, no duplicates;
the internal variable when no variable name is given), §4 (hasflag over the flags in the
named variables or the internal one) and §5 (:flags on keep/fileinto, via ``runtime``).
Leaves out: nothing.
"""

from __future__ import annotations

from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, split_flags
from hato.codec.sieve.strings import Ref


def _get(rt: Runtime, cmd: Cmd) -> list[str]:
    target = cmd.extra.get("target")
    if isinstance(target, Ref):
        return split_flags([rt.lookup(target)])
    return list(rt.flags)


def _put(rt: Runtime, cmd: Cmd, *, flags: list[str]) -> None:
    target = cmd.extra.get("target")
    if isinstance(target, Ref):
        rt.assign(target, " ".join(flags))
    else:
        rt.flags = flags
        rt.flags_used = True


def _given(rt: Runtime, cmd: Cmd) -> list[str]:
    flags = cmd.args[1]
    assert isinstance(flags, tuple)
    return split_flags(rt.expand_all(flags))


def _setflag(rt: Runtime, cmd: Cmd) -> None:
    _put(rt, cmd, flags=_given(rt, cmd))


def _addflag(rt: Runtime, cmd: Cmd) -> None:
    _put(rt, cmd, flags=split_flags([" ".join(_get(rt, cmd) + _given(rt, cmd))]))


def _removeflag(rt: Runtime, cmd: Cmd) -> None:
    gone = {f.lower() for f in _given(rt, cmd)}
    _put(rt, cmd, flags=[f for f in _get(rt, cmd) if f.lower() not in gone])


def _hasflag(rt: Runtime, cmd: Cmd) -> bool:
    targets = cmd.extra.get("targets")
    if isinstance(targets, tuple) and isinstance(cmd.args[0], tuple):
        flags = split_flags([rt.lookup(t) for t in targets if isinstance(t, Ref)])
    else:
        flags = list(rt.flags)
    keys = cmd.args[1]
    assert isinstance(keys, tuple)
    # RFC 5232 §4: each key may itself hold several space-separated flags
    wanted = [k for key in rt.expand_all(keys) for k in (key.split() or [key])]
    return rt.matches(cmd, flags, keys=wanted)


COMMANDS: dict[str, CommandFn] = {
    "setflag": _setflag,
    "addflag": _addflag,
    "removeflag": _removeflag,
}
TESTS: dict[str, TestFn] = {"hasflag": _hasflag}
