"""Sieve "vnd.dovecot.report" (Pigeonhole's spec-bosch-sieve-report): the report command and
the RFC 5965 abuse feedback report it sends.

Implements the extension's §3: ``report [:headers_only] <feedback-type> <message>
<address>``; the feedback type checked at compile time when it is a literal and at run time
otherwise (a MIME token, RFC 2045 §5.1, that names a registered type, RFC 5965 §7.3 with
RFC 6430 "not-spam" and RFC 6591 "auth-failure"); the address must be one mailbox (RFC 5322
§3.4); the action never cancels the implicit keep; one report per feedback type and
recipient (the first one's text is used); no report to the account running the script (the
§3 MUST: withheld with a warning). The message (``report_message``) is RFC 5965 §2: a
multipart/report (report-type=feedback-report) with the text, a message/feedback-report part
(§3.1 Version, Feedback-Type, User-Agent; §3.2 Original-Mail-From and Reporting-MTA; §3.3
Original-Rcpt-To; Pigeonhole's Dovecot-Reporting-User naming the reporting user) and the
message as received (message/rfc822) or its header only (text/rfc822-headers, RFC 6522),
with "Auto-Submitted: auto-generated (report)" (the extension's MUST, RFC 3834 §5), sent from
the null reverse-path.
Leaves out: Arrival-Date, Source-IP and the other optional RFC 5965 §3.2 fields delivery does
not hand to Sieve.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from typing import TYPE_CHECKING

from hato import __version__
from hato.codec.mime import parse_message
from hato.codec.sieve.actions import Report
from hato.codec.sieve.addresses import parse_mailbox, parse_path
from hato.codec.sieve.compose import Outgoing, policy_sender
from hato.codec.sieve.ext_editheader import encode_value, fold
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Envelope, Runtime, TestFn, runtime_error

if TYPE_CHECKING:
    from hato.codec.sieve.validate import Checker

# RFC 5965 §7.3 "Feedback Report Type Values", with RFC 6430 (not-spam) and RFC 6591
# (auth-failure)
FEEDBACK_TYPES = frozenset({"abuse", "auth-failure", "fraud", "not-spam", "other", "virus"})
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")  # RFC 2045 §5.1 token
USER_AGENT = f"Hato/{__version__}"


def feedback_type(text: str) -> tuple[str | None, str]:
    """The Feedback-Type value ``text`` names (lower case), or (None, why not)."""
    value = text.strip(" \t")  # the extension allows white space around the token
    if not _TOKEN.match(value):
        return None, "not a MIME token (RFC 2045 §5.1)"
    if value.lower() not in FEEDBACK_TYPES:
        known = ", ".join(sorted(FEEDBACK_TYPES))
        return None, f"not a registered feedback type (RFC 5965 §7.3: {known})"
    return value.lower(), ""


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def check_report(ch: Checker, cmd: Cmd) -> None:
    """Compile time: a literal feedback type and a literal address must be valid."""
    literal = cmd.string(0).constant
    if literal is not None:
        value, why = feedback_type(literal)
        if value is None:
            ch.error(cmd.line, f"specified feedback type '{_shown(literal)}' is invalid: {why}")
    address = cmd.string(2).constant
    if address is not None:
        found, reason = parse_mailbox(address)
        if found is None:
            ch.error(cmd.line, f"specified report address '{_shown(address)}' is invalid: {reason}")


def _own_addresses(rt: Runtime) -> set[str]:
    env = rt.envelope
    out = set()
    for text in (env.to, env.orig_to, rt.limits.user_email):
        if text:
            out.add((parse_path(text) or text).lower())
    return out


def _report(rt: Runtime, cmd: Cmd) -> None:
    raw_type = rt.expand(cmd.string(0))
    value, why = feedback_type(raw_type)
    if value is None:
        raise runtime_error(
            cmd, f"specified report feedback type '{_shown(raw_type)}' is invalid: {why}"
        )
    target = rt.expand(cmd.string(2))
    address, reason = parse_mailbox(target)
    if address is None:
        raise runtime_error(
            cmd, f"specified report address '{_shown(target)}' is invalid: {reason}"
        )
    if address.lower() in _own_addresses(rt):
        # the extension's §3: "MUST NOT allow sending report messages to the mail account
        # running this Sieve script"
        rt.warnings.append((cmd.line, f"report action: not sending a report to {address}"))
        return
    text = rt.expand(cmd.string(1))
    action = Report(value, text, address, headers_only="headers_only" in cmd.tags)
    rt.add(cmd, action, cancel_keep=False)  # §3: report MUST NOT cancel the implicit keep


def report_sender(setting: str, *, envelope: Envelope, user: str, user_email: str | None) -> str:
    """The From address of a report: what ``setting`` names (``compose.policy_sender``:
    sender, recipient, orig_recipient, user_email, <address>), else the postmaster of the
    user's domain ("postmaster", the default; "<>" too, as Pigeonhole reads it)."""
    chosen = None
    if setting.strip() not in ("", "postmaster"):
        chosen = policy_sender(setting, envelope=envelope, user_email=user_email)
    if chosen:
        return chosen
    return f"postmaster@{user.rpartition('@')[2] or 'localhost'}"


def report_message(
    action: Report,
    *,
    original: bytes,
    envelope: Envelope,
    user: str,
    now: float,
    setting: str = "",
    user_email: str | None = None,
    hostname: str = "",
) -> Outgoing:
    """The RFC 5965 report ``action`` asks for about ``original`` (the message as received:
    the extension's §3 reports the triggering message), sent from <> to the recipient.
    ``user`` is the account running the script; ``setting`` chooses the From address
    (``report_sender``)."""
    root = parse_message(original)
    subject = root.header("subject")
    title = "Report: " + (subject.text() if subject is not None else "(message without subject)")
    sender = report_sender(setting, envelope=envelope, user=user, user_email=user_email)
    domain = sender.rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(f"{action}{now}{len(original)}".encode()).hexdigest()[:24]
    boundary = "hato-report-" + hashlib.sha256(original + digest.encode()).hexdigest()[:16]
    head = [
        fold("X-Sieve", "Hato Sieve"),
        fold("Message-ID", f"<{digest}.report@{domain}>"),
        fold("Date", email.utils.formatdate(now, localtime=False)),
        fold("From", sender),
        fold("To", f"<{action.recipient}>"),
        fold("Subject", encode_value(title)),
        "Auto-Submitted: auto-generated (report)\r\n",  # the extension's §3 MUST
        "MIME-Version: 1.0\r\n",
        # RFC 5965 §2 (a): multipart/report with report-type feedback-report
        "Content-Type: multipart/report; report-type=feedback-report;\r\n"
        f'\tboundary="{boundary}"\r\n',
    ]
    text = action.text.replace("\r\n", "\n").replace("\n", "\r\n")
    charset, cte = ("us-ascii", "7bit") if text.isascii() else ("utf-8", "8bit")
    # RFC 5965 §3.1 required fields, then §3.2/§3.3 optional ones
    fields = ["Version: 1", f"Feedback-Type: {action.feedback_type}", f"User-Agent: {USER_AGENT}"]
    mail_from = parse_path(envelope.from_) if envelope.from_ is not None else None
    if mail_from is not None:
        fields.append(f"Original-Mail-From: <{mail_from}>")
    if envelope.orig_to:
        fields.append(f"Original-Rcpt-To: <{parse_path(envelope.orig_to) or envelope.orig_to}>")
    if hostname:
        fields.append(f"Reporting-MTA: dns; {hostname}")
    reporting = user_email or (parse_path(envelope.orig_to) if envelope.orig_to else None) or user
    if reporting:
        fields.append(f"Dovecot-Reporting-User: <{reporting}>")  # Pigeonhole's field
    body = [
        "\r\nThis is a MIME-encapsulated message\r\n\r\n",
        # RFC 5965 §2 (b): the human-readable part
        f"--{boundary}\r\nContent-Type: text/plain; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {cte}\r\nContent-Disposition: inline\r\n\r\n"
        f"{text}\r\n\r\n",
        # RFC 5965 §2 (c): the machine-readable part
        f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"
        + "".join(f"{f}\r\n" for f in fields)
        + "\r\n",
    ]
    if action.headers_only:  # RFC 5965 §2 (d): text/rfc822-headers (RFC 6522 §4)
        body.append(
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n"
            "Content-Disposition: attachment\r\n\r\n"
        )
        included = original[: root.header_end]
    else:
        body.append(
            f"--{boundary}\r\nContent-Type: message/rfc822\r\n"
            "Content-Disposition: attachment\r\n\r\n"
        )
        included = original
    if not included.endswith(b"\r\n"):
        included += b"\r\n"
    data = "".join(head + body).encode("utf-8", "surrogateescape") + included
    data += f"\r\n--{boundary}--\r\n".encode()
    return Outgoing("", action.recipient, data)  # from <>: nothing answers a report


COMMANDS: dict[str, CommandFn] = {"report": _report}
TESTS: dict[str, TestFn] = {}
CHECKS = {"report": check_report}
