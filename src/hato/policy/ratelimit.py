"""Per-account submission limits: messages and recipients per hour and per day.

A compromised password must not turn an account into a spam cannon: each authenticated
account may submit at most ``messages_per_hour`` / ``messages_per_day`` messages and
``recipients_per_hour`` / ``recipients_per_day`` recipients in sliding windows. Over a limit
the SMTP server answers ``451 4.7.1`` (RFC 3463 X.7.1 "delivery not authorized", temporary,
RFC 5321 §4.2.1 4yz: the client keeps the message and may retry later) and logs an alert.
The check is a value (``Verdict`` of ``hato.policy.smtp``), like every other envelope check.

Counters live in memory, per process: a restart forgets them, so after a restart an account
may send up to its limits again (at most one extra window's worth; documented in the
configuration reference). Usage is recorded when a message is accepted (after the 250), so
transactions that fail do not count; concurrent sessions of one account may together
overshoot a limit by the messages they have in flight.

Leaves out: shared counters for several nodes (a store or Redis backend), per-IP limits
(connection limits live in the SMTP service), per-domain limits.

Security: memory is bounded: an account keeps one entry per accepted message for at most a
day, and never more than its daily message limit (plus one) entries.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from hato.core import log
from hato.core.reply import Reply
from hato.policy.smtp import Action, Reason, Verdict

HOUR = 3600.0
DAY = 86400.0
LIMITED_TEXT = "Sending limit reached ({what}), try again later"


@dataclass(frozen=True, slots=True)
class SubmissionLimits:
    """Limits per account; 0 means no limit."""

    messages_per_hour: int = 0
    messages_per_day: int = 0
    recipients_per_hour: int = 0
    recipients_per_day: int = 0

    @property
    def active(self) -> bool:
        return any(
            (
                self.messages_per_hour,
                self.messages_per_day,
                self.recipients_per_hour,
                self.recipients_per_day,
            )
        )


ALLOWED = Verdict(Action.ACCEPT, Reply(250, "2.1.5", "Recipient OK"), ())


def limited(what: str) -> Verdict:
    # RFC 3463 X.7.1: not authorized (now); 451: the client retries later (RFC 5321 §4.2.1)
    return Verdict(
        Action.TEMPFAIL,
        Reply(451, "4.7.1", LIMITED_TEXT.format(what=what)),
        (Reason.RATE_LIMITED,),
    )


class SubmissionLimiter:
    """Sliding-window counters per account (in memory; see the module docstring)."""

    def __init__(self, limits: SubmissionLimits) -> None:
        self.limits = limits
        self._sent: dict[int, deque[tuple[float, int]]] = {}  # account -> (time, recipients)

    def _window(self, account_id: int, now: float) -> deque[tuple[float, int]]:
        sent = self._sent.get(account_id)
        if sent is None:
            return deque()
        while sent and sent[0][0] <= now - DAY:
            sent.popleft()
        if not sent:
            del self._sent[account_id]
        return sent

    def usage(self, account_id: int, *, now: float) -> tuple[int, int, int, int]:
        """(messages last hour, messages last day, recipients last hour, recipients last day)."""
        sent = self._window(account_id, now)
        hour = [n for t, n in sent if t > now - HOUR]
        return len(hour), len(sent), sum(hour), sum(n for _t, n in sent)

    def check(self, account_id: int, *, now: float, recipients: int, user: str = "") -> Verdict:
        """May the account add a recipient so that its transaction has ``recipients``
        recipients (and one more message)? 451 4.7.1 when that would exceed a limit."""
        limits = self.limits
        if not limits.active:
            return ALLOWED
        msg_hour, msg_day, rcpt_hour, rcpt_day = self.usage(account_id, now=now)
        over = None
        if limits.messages_per_hour and msg_hour + 1 > limits.messages_per_hour:
            over = f"{limits.messages_per_hour} messages per hour"
        elif limits.messages_per_day and msg_day + 1 > limits.messages_per_day:
            over = f"{limits.messages_per_day} messages per day"
        elif limits.recipients_per_hour and rcpt_hour + recipients > limits.recipients_per_hour:
            over = f"{limits.recipients_per_hour} recipients per hour"
        elif limits.recipients_per_day and rcpt_day + recipients > limits.recipients_per_day:
            over = f"{limits.recipients_per_day} recipients per day"
        if over is None:
            return ALLOWED
        log.event(
            "smtp.ratelimit.exceeded",
            level=logging.WARNING,
            account=account_id,
            user=user,
            limit=over,
            messages_hour=msg_hour,
            messages_day=msg_day,
            recipients_hour=rcpt_hour,
            recipients_day=rcpt_day,
        )
        return limited(over)

    def record(self, account_id: int, *, now: float, recipients: int) -> None:
        """An accepted message of the account with ``recipients`` recipients."""
        if not self.limits.active:
            return
        sent = self._window(account_id, now)
        if account_id not in self._sent:
            self._sent[account_id] = sent
        sent.append((now, recipients))
        cap = self.limits.messages_per_day
        while cap and len(sent) > cap + 1:
            sent.popleft()  # bounded memory: older entries cannot change a decision
