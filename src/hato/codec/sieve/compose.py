"""Messages Sieve actions send: vacation replies, mailto notifications, reject MDNs.

Pure functions from action values (and the triggering message) to RFC 5322 message bytes
with their SMTP envelope, for delivery to queue. Implements RFC 5230 §5 and RFC 3834 §3-§5
(reply headers: In-Reply-To, References, Auto-Submitted: auto-replied, the subject as given,
non-ASCII header text RFC 2047-encoded, the reply sent with the null reverse-path), RFC 5436
§2 (one message per mailto recipient, Auto-Submitted: auto-notified, X-Priority/Importance
from :importance, the URI's subject/body and safe header fields, To/Cc with the display
names the URI gave and each address once, the Subject cut to 256 characters as RFC 5435
§3.8 allows, envelope sender as given), RFC 5228 §4.2 for redirect (the envelope sender:
the original one, or one the host's policy chooses, but empty stays empty; loop control by
an ``X-Sieve-Redirected-From`` field naming the user, the de-facto field Pigeonhole writes),
RFC 5429 §2.2 with RFC 3798 (the reject MDN: multipart/report with a
disposition-notification part and the original header, sent to the envelope sender from the
null reverse-path; never to a null sender). Leaves out: DSNs for ereject (RFC 3464), which
are the delivery layer's bounce format.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass

from hato.codec.mime import Mailbox, parse_address_list, parse_message
from hato.codec.sieve.actions import Notify, Reject, Vacation
from hato.codec.sieve.addresses import parse_path
from hato.codec.sieve.enotify import MailtoUri, parse_mailto
from hato.codec.sieve.ext_editheader import encode_value, fold
from hato.codec.sieve.ext_vacation import truncate_subject
from hato.codec.sieve.runtime import Envelope

REDIRECTED_FROM = "X-Sieve-Redirected-From"
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+\Z")  # RFC 5322 §3.2.3 atext


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


def policy_sender(setting: str, *, envelope: Envelope, user_email: str | None) -> str | None:
    """The MAIL FROM a host policy names for mail Sieve sends for the user (the names are
    Dovecot's ``sieve_*_envelope_from`` values): "sender" (the triggering message's reverse
    path), "recipient" (the final recipient), "orig_recipient" (the original recipient, else
    the final), "user_email" (the user's configured address, else the final recipient),
    "<address>" or "<>". None: the setting names none of these (the action's default)."""
    choice = setting.strip()

    def path(text: str | None) -> str:
        return (parse_path(text) or text.strip(" <>")) if text else ""

    if choice == "sender":
        return path(envelope.from_)
    if choice == "recipient":
        return path(envelope.to)
    if choice == "orig_recipient":
        return path(envelope.orig_to or envelope.to)
    if choice == "user_email":
        return user_email or path(envelope.to)
    if choice.startswith("<") and choice.endswith(">"):
        return choice[1:-1].strip()
    return None


def redirect_sender(setting: str, *, envelope: Envelope, user_email: str | None) -> str:
    """RFC 5228 §4.2: the redirected message's envelope sender "is chosen by the sieve
    implementation" (the original one unless ``setting`` names another), but a message with
    an empty envelope sender "MUST also have an empty envelope sender address"."""
    original = envelope.from_ or ""
    if not original.strip(" <>"):
        return ""
    chosen = policy_sender(setting, envelope=envelope, user_email=user_email)
    return (parse_path(original) or original) if chosen is None else chosen


def redirect_loop(message: bytes, *, users: tuple[str, ...]) -> bool:
    """RFC 5228 §4.2 loop control: the message already carries an X-Sieve-Redirected-From
    field naming one of the user's addresses, so this user redirected it before."""
    mine = {u.lower() for u in users if u}
    root = parse_message(message)
    for field_ in root.header_all(REDIRECTED_FROM):
        for item in parse_address_list(field_.text()):
            if isinstance(item, Mailbox) and (item.address or "").lower() in mine:
                return True
    return False


_TRACE = (b"received:", b"return-path:")


def mark_redirected(message: bytes, *, user: str) -> bytes:
    """The message as redirect sends it: an X-Sieve-Redirected-From field naming the user
    (RFC 5228 §4.2: a redirect "may add new headers"; the loop check above reads it), put
    below the leading trace fields, which stay on top (RFC 5322 §3.6.7)."""
    at = 0
    while at < len(message):
        end = message.find(b"\n", at)
        end = len(message) if end < 0 else end + 1
        line = message[at:end]
        if line[:1] in (b" ", b"\t") and at:  # a continuation of the trace field above
            at = end
            continue
        if not line.lower().startswith(_TRACE):
            break
        at = end
    return message[:at] + fold(REDIRECTED_FROM, user).encode("utf-8") + message[at:]


def _phrase(name: str) -> str:
    """A display name as an RFC 5322 phrase: atoms, a quoted string, or RFC 2047 words."""
    if not name.isascii():
        return encode_value(name)  # RFC 2047 §5(3): encoded words in a phrase
    if _ATOM_PHRASE.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_field(address: str, written: str | None) -> str:
    """One address of a To/Cc field, with the display name the mailto URI gave it."""
    name = None
    if written:
        items = parse_address_list(written)
        if len(items) == 1 and isinstance(items[0], Mailbox):
            name = items[0].name
    return f"{_phrase(name)} <{address}>" if name else address


def _unique(addresses: tuple[str, ...], seen: set[str]) -> list[str]:
    out = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out


def _address_field(name: str, addresses: list[str], uri: MailtoUri) -> str:
    written = dict(uri.mailboxes)
    value = ", ".join(_mailbox_field(a, written.get(a.lower())) for a in addresses)
    return fold(name, value)


_PRIORITY = {1: ("1 (Highest)", "High"), 2: ("3 (Normal)", "Normal"), 3: ("5 (Lowest)", "Low")}


def notifications(
    action: Notify,
    *,
    user: str,
    envelope_sender: str | None,
    now: float,
    setting: str = "",
    envelope: Envelope | None = None,
    user_email: str | None = None,
) -> list[Outgoing]:
    """The mailto notification for ``action`` (RFC 5436 §2), one message per recipient.

    ``user`` is the script owner's address; the envelope sender is the null reverse-path
    when the triggering message had one, else what the host policy ``setting`` names (see
    ``policy_sender``; ``envelope`` is the triggering message's), else :from, else
    postmaster of the user's domain."""
    uri, _ = parse_mailto(action.method)
    if uri is None:
        return []
    sender = action.sender or user or "postmaster@localhost"
    chosen = None
    if setting and envelope is not None:
        chosen = policy_sender(setting, envelope=envelope, user_email=user_email)
    if envelope_sender == "":
        env_from = ""  # RFC 5436 §2.7: never send a notification with a sender for <>
    elif chosen is not None:
        env_from = chosen
    elif action.sender:
        env_from = action.sender
    else:
        env_from = f"postmaster@{_domain(user) or 'localhost'}"
    subject = uri.subject if uri.subject is not None else action.message
    subject = truncate_subject(subject)  # RFC 5435 §3.8: a method MAY truncate the text
    x_priority, importance = _PRIORITY.get(action.importance, _PRIORITY[2])
    lines = [
        _header("X-Sieve", "Hato Sieve"),
        _header("Message-ID", _message_id(f"{action.method}{now}", _domain(sender))),
        _header("Date", _date(now)),
        _header("From", sender),
    ]
    # each address once: a Cc already among the To addresses is left out (RFC 5435 §3.8
    # leaves duplicate suppression to the method)
    seen: set[str] = set()
    to, cc = _unique(uri.to, seen), _unique(uri.cc, seen)
    if to:
        lines.append(_address_field("To", to, uri))
    if cc:
        lines.append(_address_field("Cc", cc, uri))
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
    recipients = [*to, *cc, *_unique(uri.bcc, seen)]
    return [Outgoing(env_from, rcpt, data) for rcpt in recipients]


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
