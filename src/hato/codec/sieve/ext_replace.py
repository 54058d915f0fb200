"""Sieve "replace" and "enclose" (RFC 5703 §5-§6): rewriting the message being processed.

Implements RFC 5703 §5 (replace [:mime] [:subject] [:from] <replacement>: inside foreverypart
the current part is replaced - a multipart with all its children, and the running loops do
not descend into what was removed; outside, the whole message body is replaced, keeping every
header field except the MIME ones; without :mime the replacement is a text/plain part in
UTF-8, with :mime it is a MIME entity; :subject and :from apply to a whole-message
replacement, the old fields kept as Original-Subject / Original-From, non-ASCII text
RFC 2047-encoded; an invalid :from is an error) and §6 (enclose [:subject] [:headers]
<reason>: the message becomes multipart/mixed with a text/plain part holding the reason and
a message/rfc822 part holding the message; Subject from :subject or the enclosed message;
the fields named by :headers copied; Date and From synthesized otherwise - From is the
envelope recipient, the user; repeated encloses nest; redirect still sends the message as it
was before the first enclose). The edited message is what keep/fileinto store and what later
tests see (RFC 5293 §7 rules, as for editheader).
Leaves out: nothing.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re

from hato.codec.mime import Part
from hato.codec.sieve.checks import mailbox_list_ok
from hato.codec.sieve.ext_editheader import encode_value, fold
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn, runtime_error

_DELIMITER = re.compile(rb"^--", re.M)


def _crlf(text: str) -> bytes:
    return re.sub(r"\r?\n|\r", "\r\n", text).encode("utf-8", "surrogateescape")


def text_entity(text: str) -> bytes:
    """A text/plain entity in UTF-8 (RFC 5703 §5) with a transfer encoding that keeps it
    intact in any multipart: 7bit for plain short-lined ASCII, else base64 (RFC 2045 §6)."""
    body = _crlf(text)
    head = b"Content-Type: text/plain; charset=utf-8\r\n"
    lines = body.split(b"\r\n")
    if body.isascii() and not _DELIMITER.search(body) and max(map(len, lines)) <= 998:
        return head + b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body
    encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return head + b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded.rstrip(b"\r\n")


def _is_mime_field(key: str) -> bool:
    # RFC 2045 §3, §9: MIME-Version and the Content-* fields describe the MIME structure
    return key == "mime-version" or key.startswith("content-")


def _replace(rt: Runtime, cmd: Cmd) -> None:
    replacement = rt.expand(cmd.string(0))
    mime = "mime" in cmd.tags
    entity = _crlf(replacement) if mime else text_entity(replacement)
    path = rt.parts[-1] if rt.parts else ()
    if path:
        part = rt.part_at(path)
        if part is None:
            raise runtime_error(cmd, "replace: the current MIME part no longer exists")
        data = rt.message
        rt.set_message(data[: part.header_start] + entity + data[part.body_end :])
        rt.replaced.append(path)
        return
    _replace_message(rt, cmd, entity)
    rt.replaced.append(())


def _replace_message(rt: Runtime, cmd: Cmd, entity: bytes) -> None:
    """RFC 5703 §5, outside foreverypart: the new body under the old non-MIME fields."""
    data = rt.message
    root = rt.part
    subject_arg = cmd.tag_string("subject")
    from_arg = cmd.tag_string("from")
    subject = rt.expand(subject_arg) if subject_arg is not None else None
    sender = rt.expand(from_arg) if from_arg is not None else None
    if sender is not None and not mailbox_list_ok(sender):
        # RFC 5703 §5: :from "must specify a valid [RFC5322] mailbox-list"
        raise runtime_error(cmd, f"replace action: invalid :from mailbox-list '{sender}'")
    out: list[bytes] = []
    for field in root.headers:
        if _is_mime_field(field.key):
            continue
        raw = data[field.start : field.end]
        if field.key == "subject" and subject is not None:
            # RFC 5703 §5: "MUST preserve any previous Subject header as an Original-Subject"
            out.append(b"Original-Subject:" + raw[len(field.name) + 1 :])
        elif field.key == "from" and sender is not None:
            out.append(b"Original-From:" + raw[len(field.name) + 1 :])  # RFC 5703 §5
        else:
            out.append(raw if raw.endswith(b"\n") else raw + b"\r\n")
    if subject is not None:
        out.append(fold("Subject", encode_value(subject)).encode("utf-8"))  # RFC 2047 if needed
    if sender is not None:
        out.append(fold("From", sender).encode("utf-8", "surrogateescape"))  # RFC 6532
    out.append(b"MIME-Version: 1.0\r\n")
    rt.set_message(b"".join(out) + entity)


def _boundary(seed: bytes) -> str:
    """A multipart boundary that occurs nowhere in ``seed`` (RFC 2046 §5.1.1)."""
    counter = 0
    while True:
        digest = hashlib.sha256(seed + str(counter).encode()).hexdigest()[:32]
        boundary = f"=_hato-enclose-{digest}"
        if boundary.encode() not in seed:
            return boundary
        counter += 1


def _enclose(rt: Runtime, cmd: Cmd) -> None:
    data = rt.message
    root: Part = rt.part
    reason = rt.expand(cmd.string(0))
    subject_arg = cmd.tag_string("subject")
    copied = {n.lower() for n in rt.expand_all(cmd.tag_strings("headers") or ())}
    if subject_arg is not None:
        copied.discard("subject")
    out: list[bytes] = []
    for field in root.headers:
        # RFC 5703 §6: "Any headers specified by :headers are copied"; the enclosed message's
        # Subject is the default subject
        wanted = field.key in copied or (field.key == "subject" and subject_arg is None)
        if wanted and not _is_mime_field(field.key):
            raw = data[field.start : field.end]
            out.append(raw if raw.endswith(b"\n") else raw + b"\r\n")
    if subject_arg is not None:
        out.append(fold("Subject", encode_value(rt.expand(subject_arg))).encode("utf-8"))
    # RFC 5703 §6: "Date: and From: headers should be synthesized"
    if "date" not in copied:
        out.append(f"Date: {email.utils.formatdate(rt.clock.now())}\r\n".encode())
    if "from" not in copied and rt.envelope.to:
        out.append(fold("From", f"<{rt.envelope.to}>").encode("utf-8", "surrogateescape"))
    boundary = _boundary(data + reason.encode("utf-8", "surrogateescape"))
    out.append(b"MIME-Version: 1.0\r\n")
    out.append(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode())
    delimiter = f"--{boundary}\r\n".encode()
    out.append(delimiter + text_entity(reason) + b"\r\n")
    enclosed = data if data.endswith(b"\n") else data + b"\r\n"
    out.append(delimiter + b"Content-Type: message/rfc822\r\n\r\n" + enclosed)
    out.append(f"--{boundary}--\r\n".encode())
    if rt.unenclosed is None:
        rt.unenclosed = data  # RFC 5703 §6: "does not affect messages ... via redirect"
    rt.set_message(b"".join(out))
    rt.replaced.append(())


COMMANDS: dict[str, CommandFn] = {"replace": _replace, "enclose": _enclose}
TESTS: dict[str, TestFn] = {}
