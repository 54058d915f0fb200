"""Messages Sieve actions send: vacation replies, mailto notifications, reject MDNs.

Pure functions from action values (and the triggering message) to RFC 5322 message bytes
with their SMTP envelope, for delivery to queue. Implements RFC 5230 §5 and RFC 3834 §3-§5
(reply headers: In-Reply-To, References, Auto-Submitted: auto-replied, the subject as given,
non-ASCII header text RFC 2047-encoded, the reply sent with the null reverse-path), RFC 5436
§2 (one message per mailto recipient, Auto-Submitted: auto-notified, X-Priority/Importance
from :importance, the URI's subject/body and safe header fields, envelope sender as given),
RFC 5429 §2.2 with RFC 3798 (the reject MDN: multipart/report with a
disposition-notification part and the original header, sent to the envelope sender from the
null reverse-path; never to a null sender). Leaves out: DSNs for ereject (RFC 3464), which
are the delivery layer's bounce format.
"""

from __future__ import annotations

import email.utils
import hashlib
from dataclasses import dataclass

from hato.codec.mime import parse_message
from hato.codec.sieve.actions import Notify, Reject, Vacation
from hato.codec.sieve.enotify import parse_mailto
from hato.codec.sieve.ext_editheader import encode_value, fold


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send: envelope sender ("" = null reverse-path), recipient, bytes."""

    sender: str
    recipient: str
    message: bytes


def _date(now: float) -> str:
    return email.utils.formatdate(now, localtime=False)


def _message_id(seed: str, domain: str) -> str:
    digest = hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"<{digest}.sieve@{domain or 'localhost'}>"


def _header(name: str, value: str) -> str:
    return fold(name, encode_value(value))


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def vacation_reply(action: Vacation, *, now: float) -> Outgoing | None:
    """The auto-reply for ``action`` (RFC 5230 §5), sent from the null reverse-path."""
    if not action.recipient:
        return None
    lines = [
        _header("X-Sieve", "Hato Sieve"),
        _header("Message-ID", _message_id(f"{action.key}{now}", _domain(action.sender))),
        _header("Date", _date(now)),
        _header("From", action.sender),
        _header("To", action.to_header or f"<{action.recipient}>"),
    ]
    if action.subject:
        lines.append(_header("Subject", action.subject))
    if action.in_reply_to:
        lines.append(_header("In-Reply-To", action.in_reply_to))
    if action.references:
        lines.append(fold("References", action.references))
    lines.append("Auto-Submitted: auto-replied\r\n")  # RFC 3834 §5
    lines.append("Precedence: bulk\r\n")
    lines.append("MIME-Version: 1.0\r\n")
    reason = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if action.mime:
        text = "".join(lines) + reason  # RFC 5230 §4.8: the reason is a MIME entity
    else:
        lines.append("Content-Type: text/plain; charset=utf-8\r\n")
        lines.append("Content-Transfer-Encoding: 8bit\r\n")
        text = "".join(lines) + "\r\n" + reason
    if not text.endswith("\r\n"):
        text += "\r\n"
    return Outgoing(action.return_path, action.recipient, text.encode("utf-8", "surrogateescape"))


_PRIORITY = {1: ("1 (Highest)", "High"), 2: ("3 (Normal)", "Normal"), 3: ("5 (Lowest)", "Low")}


def notifications(
    action: Notify, *, user: str, envelope_sender: str | None, now: float
) -> list[Outgoing]:
    """The mailto notification for ``action`` (RFC 5436 §2), one message per recipient.

    ``user`` is the script owner's address; the envelope sender is :from, or the null
    reverse-path when the triggering message had one, else postmaster of the user's domain."""
    uri, _ = parse_mailto(action.method)
    if uri is None:
        return []
    sender = action.sender or user or "postmaster@localhost"
    if envelope_sender == "":
        env_from = ""  # RFC 5436 §2.7: never send a notification with a sender for <>
    elif action.sender:
        env_from = action.sender
    else:
        env_from = f"postmaster@{_domain(user) or 'localhost'}"
    subject = uri.subject if uri.subject is not None else action.message
    x_priority, importance = _PRIORITY.get(action.importance, _PRIORITY[2])
    lines = [
        _header("X-Sieve", "Hato Sieve"),
        _header("Message-ID", _message_id(f"{action.method}{now}", _domain(sender))),
        _header("Date", _date(now)),
        _header("From", sender),
    ]
    if uri.to:
        lines.append(_header("To", ", ".join(uri.to)))
    if uri.cc:
        lines.append(_header("Cc", ", ".join(uri.cc)))
    lines.append(_header("Subject", subject))
    for name, value in uri.headers:
        lines.append(_header(name, value))
    lines.append(f'Auto-Submitted: auto-notified; owner-email="{user}"\r\n')
    lines.append(f"X-Priority: {x_priority}\r\n")
    lines.append(f"Importance: {importance}\r\n")
    lines.append("MIME-Version: 1.0\r\n")
    lines.append("Content-Type: text/plain; charset=utf-8\r\n")
    lines.append("Content-Transfer-Encoding: 8bit\r\n")
    body = uri.body if uri.body is not None else action.message
    text = "".join(lines) + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"
    data = text.encode("utf-8", "surrogateescape")
    out: list[Outgoing] = []
    seen: set[str] = set()
    for rcpt in (*uri.to, *uri.cc, *uri.bcc):
        if rcpt.lower() in seen:
            continue
        seen.add(rcpt.lower())
        out.append(Outgoing(env_from, rcpt, data))
    return out


def reject_mdn(
    action: Reject, *, original: bytes, user: str, envelope_sender: str | None, now: float
) -> Outgoing | None:
    """The MDN refusing the message (RFC 5429 §2.2, RFC 3798), or None for a null sender."""
    if not envelope_sender:
        return None  # RFC 5429 §2.2 (via RFC 3798 §2.1): never to the null reverse-path
    root = parse_message(original)
    header = original[root.header_start : root.header_end]
    subject = root.header("subject")
    message_id = root.header("message-id")
    boundary = "hato-mdn-" + hashlib.sha256(original).hexdigest()[:16]
    domain = _domain(user) or "localhost"
    lines = [
        _header("X-Sieve", "Hato Sieve"),
        _header("Message-ID", _message_id(f"mdn{now}{user}", domain)),
        _header("Date", _date(now)),
        _header("From", f"Postmaster <postmaster@{domain}>"),
        _header("To", f"<{envelope_sender}>"),
        _header(
            "Subject",
            "Automatically rejected mail" + (f": {subject.text()}" if subject is not None else ""),
        ),
        "Auto-Submitted: auto-replied (rejected)\r\n",
        "Precedence: bulk\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/report; report-type=disposition-notification;\r\n"
        f'\tboundary="{boundary}"\r\n',
    ]
    reason = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    parts = [
        "".join(lines),
        "\r\nThis is a MIME-encapsulated message\r\n\r\n",
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"Your message to <{user}> was automatically rejected:\r\n{reason}\r\n",
        f"--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Reporting-UA: Hato Sieve\r\n"
        f"Final-Recipient: rfc822; {user}\r\n"
        + (f"Original-Message-ID: {message_id.text()}\r\n" if message_id is not None else "")
        + "Disposition: automatic-action/MDN-sent-automatically; deleted\r\n\r\n",
        f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n",
    ]
    text = "".join(parts).encode("utf-8", "surrogateescape") + header
    text += f"\r\n--{boundary}--\r\n".encode()
    return Outgoing("", envelope_sender, text)
