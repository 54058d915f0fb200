"""What a Sieve run decided: actions as frozen values, and the result of one run.

Delivery carries these out; nothing here performs I/O. Actions that store or send the message
carry ``message``: the message bytes as edited by editheader when the action ran (RFC 5293
§7: "the current set of header fields"), or None for the message as received. Keep and
FileInto carry ``flags``: the IMAP flags to set (RFC 5232 §5: the internal flags variable or
:flags), None when imap4flags was not used (the store's defaults apply).
Standards: RFC 5228 §4 (keep, fileinto, redirect, discard, §2.10.2 implicit keep), RFC 5429
(reject, ereject), RFC 5230/6131 (vacation), RFC 5435 (notify), RFC 3894 (:copy), RFC 5490
(:create), RFC 8579 (:specialuse), RFC 7352 (duplicate marks to record), Pigeonhole's
vnd.dovecot.report (report: an RFC 5965 feedback report) and vnd.dovecot.pipe (pipe the
message to an administrator's program).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Keep:
    """Store into the user's main mailbox (INBOX)."""

    flags: tuple[str, ...] | None = None
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class FileInto:
    """Store into ``mailbox`` (a UTF-8 name; ``create``: make it if missing, RFC 5490 §3.2;
    ``special_use``: prefer the mailbox with that attribute, RFC 8579 §4)."""

    mailbox: str
    flags: tuple[str, ...] | None = None
    create: bool = False
    special_use: str | None = None
    copy: bool = False
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the message on to ``address`` (RFC 5228 §4.2), keeping the envelope sender."""

    address: str
    copy: bool = False
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the message with an MDN (RFC 5429 §2.2) or at the protocol level."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ereject:
    """Refuse the message at the protocol level if possible, else a DSN (RFC 5429 §2.1)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop the message silently (RFC 5228 §4.4)."""


@dataclass(frozen=True, slots=True)
class Vacation:
    """Send an auto-reply (RFC 5230 §4): already decided to be due (RFC 3834 rules and the
    once-per-period check passed). ``recipient`` is the envelope sender being answered,
    ``sender`` the From of the reply, ``period`` the :days/:seconds window in seconds,
    ``key`` the tracking key to record once sent (with ``period``)."""

    recipient: str
    sender: str
    subject: str
    reason: str
    mime: bool
    handle: str
    period: int
    key: str
    in_reply_to: str | None = None
    references: str | None = None
    to_header: str = ""  # the To of the reply, as the sender's own field named them
    return_path: str = ""  # MAIL FROM of the reply: "" is <> (RFC 5230 §5.1)


@dataclass(frozen=True, slots=True)
class Notify:
    """Send a notification (RFC 5435 §3) by ``method`` (a mailto: URI, RFC 5436)."""

    method: str
    sender: str | None
    importance: int
    options: tuple[str, ...]
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    """Send an RFC 5965 abuse feedback report about the message (vnd.dovecot.report):
    ``feedback_type`` (RFC 5965 §7.3), the human-readable ``text``, the report's
    ``recipient``; ``headers_only``: include only the header (text/rfc822-headers)."""

    feedback_type: str
    text: str
    recipient: str
    headers_only: bool = False


@dataclass(frozen=True, slots=True)
class Pipe:
    """Hand the message to the administrator's program ``program`` with ``args`` on its
    command line (vnd.dovecot.pipe §5); ``try_``: a failure is no error; ``copy``: the
    implicit keep stays (§5.2). ``message`` as in Keep (the message "locked in", §6.1)."""

    program: str
    args: tuple[str, ...] = ()
    try_: bool = False
    copy: bool = False
    message: bytes | None = None
    # what the program's environment holds (USER, HOST, SENDER, RECIPIENT, ORIG_RECIPIENT)
    environment: tuple[tuple[str, str], ...] = ()


Action = (
    Keep | FileInto | Redirect | Reject | Ereject | Discard | Vacation | Notify | Report | Pipe
)


@dataclass(frozen=True, slots=True)
class DuplicateMark:
    """A duplicate-tracking entry to record once the message is delivered (RFC 7352 §3: the
    id is marked only when the script completes successfully)."""

    key: str
    expires: float


@dataclass(frozen=True)
class SieveResult:
    """The outcome of one run: ``actions`` in order, whether the implicit keep applies (RFC
    5228 §2.10.2) with the flags and message it uses, errors (a runtime error leaves the
    implicit keep in force, RFC 5228 §2.10.6), and tracking entries to record."""

    actions: tuple[Action, ...]
    implicit_keep: bool
    errors: tuple[tuple[int, str], ...] = ()
    keep_flags: tuple[str, ...] | None = None
    keep_message: bytes | None = None
    marks: tuple[DuplicateMark, ...] = field(default=())
    withheld: tuple[Action, ...] = ()  # vacation/notify decided not to be sent (RFC 3834)
    warnings: tuple[tuple[int, str], ...] = ()  # e.g. a run-time :regex key that is invalid
    debug: tuple[str, ...] = ()  # vnd.dovecot.debug debug_log messages, for the log

    def deliveries(self) -> tuple[Action, ...]:
        """The actions with the implicit keep made explicit (as a final Keep)."""
        if not self.implicit_keep:
            return self.actions
        return (*self.actions, Keep(self.keep_flags, self.keep_message))


def action_name(action: Action) -> str:
    """The action's name as Pigeonhole reports it (keep, store, redirect, ...)."""
    return {
        Keep: "keep",
        FileInto: "store",
        Redirect: "redirect",
        Reject: "reject",
        Ereject: "reject",
        Discard: "discard",
        Vacation: "vacation",
        Notify: "notify",
        Report: "report",
        Pipe: "pipe",
    }[type(action)]
