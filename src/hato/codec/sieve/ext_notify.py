"""Sieve "enotify" (RFC 5435) at run time: notify, valid_notify_method,
notify_method_capability; the mailto method (RFC 5436).

Implements RFC 5435 §3 (notify: :importance default 2, :message default "<from>: <subject>",
§3.9 a second notify with the same method is a duplicate and dropped), §4
(valid_notify_method), §5 (notify_method_capability), §6 (the :encodeurl modifier lives in
``ext_variables``) and RFC 5436 §2.7 (no notification about an auto-submitted message).
Notifications beyond ``SieveLimits.max_notifications`` are a runtime error.
Leaves out: methods other than mailto.
"""

from __future__ import annotations

from hato.codec.sieve import enotify
from hato.codec.sieve.actions import Notify
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error


def _notify(rt: Runtime, cmd: Cmd) -> None:
    method = rt.expand(cmd.string(0))
    errors = enotify.uri_errors(method)
    sender_arg = cmd.tag_string("from")
    sender = rt.expand(sender_arg) if sender_arg is not None else None
    if sender is not None:
        errors.extend(enotify.from_errors(sender))
    options = rt.expand_all(cmd.tag_strings("options") or ())
    for option in options:
        errors.extend(enotify.option_errors(option))
    importance_arg = cmd.tag_string("importance")
    importance = rt.expand(importance_arg) if importance_arg is not None else "2"
    if importance not in ("1", "2", "3"):
        importance = "2"
    if errors:
        raise runtime_error(cmd, f"notify action: {errors[0]}")
    message_arg = cmd.tag_string("message")
    if message_arg is not None:
        text = rt.expand(message_arg)
    else:
        senders = rt.header_values("from")
        subjects = rt.header_values("subject")
        text = f"{senders[0] if senders else ''}: {subjects[0] if subjects else ''}"
    action = Notify(method, sender, int(importance), tuple(options), text)
    everything = rt.actions + rt.withheld
    if any(isinstance(a, Notify) and a.method == method for a in everything):
        return  # RFC 5435 §3.9: duplicate notification
    if rt.limits.max_notifications == 0:  # a script compiled before the policy changed
        raise runtime_error(cmd, "notify action: local policy prohibits the use of a notify action")
    count = sum(1 for a in everything if isinstance(a, Notify))
    if count >= rt.limits.max_notifications:
        raise runtime_error(
            cmd,
            f"number of notify actions exceeds policy limit ({rt.limits.max_notifications})",
        )
    automated = any(
        v.split(";")[0].strip().lower() != "no" for v in rt.header_values("auto-submitted")
    )
    rt.add(cmd, action, cancel_keep=False, send=not automated)


def _valid(rt: Runtime, cmd: Cmd) -> bool:
    return all(not enotify.uri_errors(u) for u in rt.expand_all(cmd.strings(0)))


def _capability(rt: Runtime, cmd: Cmd) -> bool:
    value = enotify.capability(rt.expand(cmd.string(0)), rt.expand(cmd.string(1)))
    if value is None:
        return False
    return rt.matches(cmd, [value], keys=rt.expand_all(cmd.strings(2)))


COMMANDS: dict[str, CommandFn] = {"notify": _notify}
TESTS: dict[str, TestFn] = {"valid_notify_method": _valid, "notify_method_capability": _capability}
