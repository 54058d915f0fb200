"""Delivery Status Notifications: the multipart/report message of RFC 3464, and who gets one.

Implements RFC 3464 §2 (a multipart/report of RFC 6522 with report-type=delivery-status: a
human-readable part quoting the remote reply, the message/delivery-status part with the
per-message fields Original-Envelope-Id §2.2.1, Reporting-MTA §2.2.2, Arrival-Date §2.2.5
and per-recipient fields Original-Recipient §2.3.1, Final-Recipient §2.3.2, Action §2.3.3,
Status §2.3.4, Remote-MTA §2.3.5, Diagnostic-Code §2.3.6, Last-Attempt-Date §2.3.7,
Will-Retry-Until §2.3.9, then the returned message or its header), RFC 3461 §4.1 NOTIFY
(FAILURE/DELAY/SUCCESS/NEVER; no NOTIFY means FAILURE, and DELAY at the MTA's discretion),
§4.3 RET (HDRS: header only as text/rfc822-headers; FULL: the whole message), §4.4 ENVID
echoed, §5.2.3 "relayed" for SUCCESS when the next hop lacks DSN, RFC 5321 §6.1/§4.5.5
(never a notice to the null reverse-path: a DSN is sent from the null path, so no DSN ever
answers one), RFC 3834 §5 (Auto-Submitted: auto-replied), and RFC 6533 §6 (message/global-
delivery-status and message/global for SMTPUTF8 messages). Notices are DKIM-signed by their
From domain (RFC 6376 §1.2: any domain may sign; the null reverse-path has no domain to sign
for, and DMARC aligns on the From domain, RFC 7489 §3.1.1) when a key for it exists, and a
notice about mail we forwarded with an SRS reverse-path of ours goes back to the original
sender (the reversal RFC 7208 Appendix D.2 expects of a mediator; ``hato.outbound.srs``).

Leaves out: DSNs for several destinations merged into one (one notice per queue entry),
localisation of the human-readable text.

Security: quoted remote replies are reduced to printable one-line text before they go into
header-like fields; the returned message is limited to ``MAX_RETURNED`` octets.
"""

from __future__ import annotations

import email.utils
import enum
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hato.core.address import Address
from hato.core.errors import AddressError
from hato.outbound.srs import Srs, is_srs
from hato.store.queue import QueueEntry, QueueRecipient

MAX_RETURNED = 10 * 1024 * 1024  # bigger originals are returned as header only
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_CODE = re.compile(r"^\s*([245]\d\d)\b")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


class Action(enum.Enum):
    FAILED = "failed"  # RFC 3464 §2.3.3
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


@dataclass(frozen=True, slots=True)
class RecipientReport:
    recipient: QueueRecipient
    action: Action
    status: str  # "5.1.1"
    diagnostic: str | None  # the remote reply, "550 5.1.1 no such user"
    remote_mta: str | None


def wants(recipient: QueueRecipient, action: Action) -> bool:
    """RFC 3461 §4.1: does this recipient's NOTIFY ask for a notice of ``action``?"""
    notify = recipient.notify
    if notify is None:
        # RFC 3461 §4.1: absent NOTIFY: FAILURE (and DELAY at the MTA's discretion: yes)
        return action in (Action.FAILED, Action.DELAYED)
    if action is Action.FAILED:
        return "FAILURE" in notify
    if action is Action.DELAYED:
        return "DELAY" in notify
    return "SUCCESS" in notify


def status_of(reply: str | None, *, default: str) -> str:
    """The RFC 3463 status in a reply text, else one derived from its code, else default."""
    if reply:
        match = _STATUS.search(reply)
        code = _CODE.match(reply)
        if match is not None and (code is None or code.group(1)[0] == match.group(1)):
            return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        if code is not None:
            return f"{code.group(1)[0]}.0.0"
    return default


def _clean(text: str) -> str:
    return _UNPRINTABLE.sub(" ", text).strip()


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, localtime=False)  # RFC 5322 §3.3 date-time


def _xtext_free(text: str) -> str:
    return _clean(text).replace(";", ",")


def _header_end(original: bytes) -> int:
    end = original.find(b"\r\n\r\n")
    return len(original) if end < 0 else end + 2


def build_dsn(
    entry: QueueEntry,
    reports: Sequence[RecipientReport],
    original: bytes,
    *,
    hostname: str,
    now: float,
    retry_until: float | None = None,
    to: str | None = None,
) -> bytes:
    """The DSN message for ``reports`` (all of one kind: failures or delays) about ``entry``.
    ``original`` is the message as queued (for the returned part); ``to`` the address the
    notice goes to (default: the reverse-path, see ``notice_recipient``)."""
    utf8 = entry.smtputf8 or not all(r.recipient.address.isascii() for r in reports)
    boundary = f"=_hato_{secrets.token_hex(12)}"
    failed = any(r.action is Action.FAILED for r in reports)
    delayed = all(r.action is Action.DELAYED for r in reports)
    if failed:
        subject = "Undelivered Mail Returned to Sender"
    elif delayed:
        subject = "Delayed Mail (still being retried)"
    else:
        subject = "Successful Mail Delivery Report"
    sender = to if to is not None else entry.sender
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{secrets.token_hex(16)}@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    human = [
        f"This is the mail system at host {hostname}.",
        "",
    ]
    if failed:
        human += [
            "Your message could not be delivered to one or more recipients.",
            "It is attached below.",
        ]
    elif delayed:
        until = _date(retry_until) if retry_until is not None else "its expiry"
        human += [
            "Your message has not been delivered yet to the recipients below.",
            f"The mail system will keep trying until {until}; you need not send it again.",
        ]
    else:
        human += ["Your message was delivered or relayed to the recipients below."]
    human.append("")
    for report in reports:
        line = f"<{report.recipient.address}>"
        if report.remote_mta:
            line += f": host {report.remote_mta} said:"
        human.append(line)
        if report.diagnostic:
            human.append(f"    {_clean(report.diagnostic)}")  # the remote reply, quoted
        human.append("")
    # RFC 3464 §2.2: per-message fields, then one block per recipient
    status_lines = [f"Reporting-MTA: dns; {hostname}"]
    if entry.envid:
        status_lines.append(f"Original-Envelope-Id: {_xtext_free(entry.envid)}")  # §2.2.1
    status_lines.append(f"Arrival-Date: {_date(entry.created)}")  # §2.2.5
    addr_type = "utf-8" if utf8 else "rfc822"
    for report in reports:
        rcpt = report.recipient
        status_lines.append("")
        if rcpt.orcpt:
            status_lines.append(f"Original-Recipient: {_clean(rcpt.orcpt)}")  # §2.3.1
        status_lines.append(f"Final-Recipient: {addr_type}; {rcpt.address}")  # §2.3.2
        status_lines.append(f"Action: {report.action.value}")  # §2.3.3
        status_lines.append(f"Status: {report.status}")  # §2.3.4
        if report.remote_mta:
            status_lines.append(f"Remote-MTA: dns; {_clean(report.remote_mta)}")  # §2.3.5
        if report.diagnostic:
            status_lines.append(f"Diagnostic-Code: smtp; {_clean(report.diagnostic)}")  # §2.3.6
        status_lines.append(f"Last-Attempt-Date: {_date(now)}")  # §2.3.7
        if report.action is Action.DELAYED and retry_until is not None:
            status_lines.append(f"Will-Retry-Until: {_date(retry_until)}")  # §2.3.9
    # RFC 3461 §4.3: RET=HDRS returns the header only; RFC 6533 §6 for SMTPUTF8 messages
    headers_only = entry.ret == "HDRS" or len(original) > MAX_RETURNED or delayed
    if headers_only:
        returned_type = "text/rfc822-global-headers" if utf8 else "text/rfc822-headers"
        returned = original[: _header_end(original)]
    else:
        returned_type = "message/global" if utf8 else "message/rfc822"
        returned = original
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    crlf = "\r\n"
    out = crlf.join(head) + crlf + crlf
    out += "This is a MIME-encapsulated message." + crlf + crlf
    out += f"--{boundary}{crlf}Content-Type: text/plain; charset=utf-8{crlf}"
    out += f"Content-Transfer-Encoding: 8bit{crlf}{crlf}"
    out += crlf.join(human) + crlf
    out += f"--{boundary}{crlf}Content-Type: {status_type}{crlf}{crlf}"
    out += crlf.join(status_lines) + crlf + crlf
    out += f"--{boundary}{crlf}Content-Type: {returned_type}{crlf}{crlf}"
    body = out.encode("utf-8") + returned
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + f"--{boundary}--{crlf}".encode("ascii")


def should_notify(entry: QueueEntry) -> bool:
    """RFC 3461 §6.2 / RFC 5321 §4.5.5: never a notice to the null reverse-path (which is
    also what every bounce carries, so no bounce answers a bounce)."""
    return entry.sender != ""


def notice_recipient(sender: str, srs: Srs | None, *, now: float) -> str:
    """Where a notice about mail sent with reverse-path ``sender`` goes: the original sender
    when ``sender`` is a valid SRS address of ours (the bounce path SRS exists for), else
    ``sender`` itself (someone else's SRS address is theirs to reverse)."""
    if srs is None or not sender:
        return sender
    try:
        address = Address.parse(sender)
    except AddressError:
        return sender
    if not is_srs(address.unquoted_local):
        return sender
    back = srs.reverse(address, now=now)
    return back.address if back.address is not None else sender


def sign_dsn(data: bytes, domain: str, signer: Callable[[bytes, str], bytes]) -> bytes:
    """``data`` with the DKIM-Signature fields of ``domain`` (the notice's From domain)
    prepended; unchanged when no key is held for it (the signer returns nothing)."""
    return signer(data, domain) + data
