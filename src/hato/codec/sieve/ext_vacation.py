"""Sieve "vacation" and "vacation-seconds" (RFC 5230, RFC 6131): deciding an auto-reply.

Implements RFC 5230 §4.1 (:days, default and bounds from SieveLimits; RFC 6131 §2 :seconds),
§4.2 (the handle: :handle, else one derived from reason, :subject, :from and :mime), §4.3-§4.4
(:from, :subject, default "Auto: " + the original subject), §4.5 (reply only when one of the
user's addresses - the envelope recipient and :addresses - is in To/Cc/Bcc/Resent-*, and
never to one's own address), §4.6 and RFC 3834 §2 (no reply to the null sender, to
Auto-Submitted mail, Precedence bulk/list/junk, List-* mail, or mailer-daemon/-request/owner-
senders), §4.7 (once per sender per period, via the duplicate tracker; the Vacation action
carries the key to record), §5.1 (MAIL FROM <>, or the user when the host asks), §5.3
(the subject: "Auto: " + the original, or a host template; a fixed one when there is none).
The user's addresses are the final recipient, ``SieveLimits.user_email`` and, if the host
says so, the original recipient. Composing the reply is ``compose``. Leaves out: nothing.
"""

from __future__ import annotations

import hashlib
import re

from hato.codec.sieve.actions import Vacation
from hato.codec.sieve.addresses import parse_mailbox, parse_path
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn

_LIST_HEADERS = (
    "list-id",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
# RFC 3834 §2 / RFC 5230 §4.6: senders that are robots
_ROBOT = re.compile(
    r"^(owner-.*|.*-request|.*-owner|mailer-daemon|mailer|listserv|majordomo|postmaster)$",
    re.IGNORECASE,
)
_RECIPIENT_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
MAX_SUBJECT = 256


def _norm(address: str) -> str:
    # user addresses are compared case-insensitively (mail systems fold local parts too)
    return address.strip().strip("<>").lower()


def suppressed(rt: Runtime, sender: str, *, mine: set[str]) -> str | None:
    """Why no auto-reply may be sent (RFC 3834 §2, RFC 5230 §4.5-§4.6), or None."""
    if not sender:
        return "null sender"
    if _norm(sender) in mine:
        return "own address"
    local = sender.rpartition("@")[0]
    if _ROBOT.match(local):
        return "robot sender"
    for value in rt.header_values("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return "auto-submitted"
    for value in rt.header_values("x-auto-response-suppress"):
        # Microsoft's equivalent of RFC 3834: no out-of-office replies wanted
        if {v.strip().lower() for v in value.split(",")} & {"all", "oof"}:
            return "auto-response suppressed"
    for value in rt.header_values("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return "bulk precedence"
    if any(rt.part.header(h) is not None for h in _LIST_HEADERS):
        return "mailing list"
    if rt.limits.vacation_check_recipient and addressed_to(rt, mine) is None:
        return "not addressed to the user"  # RFC 5230 §4.5 (see SieveLimits)
    return None


def addressed_to(rt: Runtime, mine: set[str]) -> str | None:
    """The first of the user's addresses found in the recipient fields (RFC 5230 §4.5)."""
    for name in _RECIPIENT_HEADERS:
        for value in rt.raw_header_values(name):
            for address in rt.addresses_of(value):
                if _norm(address) in mine:
                    return address
    return None


def _reply_to(rt: Runtime, sender: str) -> str:
    """The To of the reply: the sender's own header field form when it names them."""
    for name in ("reply-to", "sender", "resent-from", "from"):
        for value in rt.raw_header_values(name):
            for address in rt.addresses_of(value):
                if _norm(address) == _norm(sender):
                    return _display(value, address)
    return f"<{sender}>"


def _first_author(rt: Runtime) -> str | None:
    """The first address of Reply-To, Sender, Resent-From or From, in its field's form."""
    for name in ("reply-to", "sender", "resent-from", "from"):
        for value in rt.raw_header_values(name):
            for address in rt.addresses_of(value):
                if "@" in address:
                    return _display(value, address)
    return None


def _display(value: str, address: str) -> str:
    m = re.match(r'\s*("(?:[^"\\]|\\.)*"|[^<,]*?)\s*<', value)
    if m and m.group(1).strip():
        return f"{m.group(1).strip()} <{address}>"
    return f"<{address}>"


def truncate_subject(subject: str) -> str:
    if len(subject) <= MAX_SUBJECT:
        return subject
    return subject[: MAX_SUBJECT - 1].rstrip() + "\u2026"


def _vacation(rt: Runtime, cmd: Cmd) -> None:
    reason = rt.expand(cmd.string(0))
    subject_arg = cmd.tag_string("subject")
    from_arg = cmd.tag_string("from")
    sender = rt.envelope.from_
    user = rt.envelope.to
    limits = rt.limits
    # RFC 5230 §4.5: the final recipient, addresses known to be the user's, :addresses
    known = [user, limits.user_email]
    if limits.vacation_use_original_recipient:
        known.append(rt.envelope.orig_to)
    mine = {_norm(a) for a in known if a}
    for item in rt.expand_all(cmd.tag_strings("addresses") or ()):
        address, _ = parse_mailbox(item)
        if address is not None:
            mine.add(_norm(address))
    from_text = rt.expand(from_arg) if from_arg is not None else None
    if from_text:
        address, _ = parse_mailbox(from_text)
        if address is not None:
            mine.add(_norm(address))
    if "seconds" in cmd.tags:
        period = cmd.tag_number("seconds") or 0
    elif "days" in cmd.tags:
        period = (cmd.tag_number("days") or 0) * 86400
    else:
        period = rt.limits.vacation_default_period
    period = max(period, rt.limits.vacation_min_period)
    if rt.limits.vacation_max_period:
        period = min(period, rt.limits.vacation_max_period)
    handle_arg = cmd.tag_string("handle")
    if handle_arg is not None:
        handle = rt.expand(handle_arg)
    else:  # RFC 5230 §4.2: the same reason, subject, from and mime make the same handle
        handle = "\x00".join(
            (
                reason,
                rt.expand(subject_arg) if subject_arg else "",
                from_text or "",
                str("mime" in cmd.tags),
            )
        )
    recipient = parse_path(sender or "") or ""  # RFC 5230 §4: reply to the reverse-path
    why = suppressed(rt, recipient, mine=mine)
    key = (
        "vacation:"
        + hashlib.sha256(
            f"{handle}\x00{_norm(recipient)}".encode("utf-8", "surrogateescape")
        ).hexdigest()
    )
    if why is None and rt.tracker is not None and rt.tracker.seen(key, now=rt.clock.now()):
        why = "already replied"  # RFC 5230 §4.1: once per period
    if subject_arg is not None:
        subject = rt.expand(subject_arg)
    else:
        original = rt.header_values("subject")
        template = limits.vacation_subject_template
        if original and template:
            subject = template.replace("%{subject}", original[0])
        elif original:
            subject = f"Auto: {original[0]}"  # RFC 5230 §5.3
        else:  # RFC 5230 §5.3: "An appropriate fixed Subject"
            subject = limits.vacation_default_subject or "Automated reply"
    # RFC 5230 §4.3 (and 4.5): without :from, reply from the address the mail was sent to
    reply_from = from_text or addressed_to(rt, mine) or limits.user_email or user
    if limits.vacation_to_header_ignore_envelope:
        to_header = _first_author(rt) or (f"<{recipient}>" if recipient else "")
    else:
        to_header = _reply_to(rt, recipient) if recipient else ""
    message_id = rt.raw_header_values("message-id")
    references = rt.raw_header_values("references")
    in_reply_to = message_id[0] if message_id else None
    refs = " ".join([*references[:1], *message_id[:1]]) or None
    action = Vacation(
        recipient=recipient,
        sender=reply_from,
        subject=truncate_subject(subject),
        reason=reason,
        mime="mime" in cmd.tags,
        handle=handle,
        period=period,
        key=key,
        in_reply_to=in_reply_to,
        references=refs,
        to_header=to_header,
        return_path=user if limits.vacation_send_from_recipient else "",
    )
    rt.add(cmd, action, cancel_keep=False, send=why is None)


COMMANDS: dict[str, CommandFn] = {"vacation": _vacation}
TESTS: dict[str, TestFn] = {}
