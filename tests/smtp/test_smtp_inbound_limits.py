"""Per-account submission limits (hato.policy.ratelimit): messages and recipients per hour and
per day; over a limit 451 4.7.1 at MAIL or RCPT with a clear text and a log alert."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from smtp_inbound_kit import SmtpFailure, message, run, send, world

from hato.policy.ratelimit import DAY, HOUR, SubmissionLimiter, SubmissionLimits
from hato.policy.smtp import Action, Reason
from hato.servers.smtp_hooks import SessionHooks

NOW = 1_700_000_000.0


def test_limiter_windows_slide() -> None:
    limiter = SubmissionLimiter(SubmissionLimits(messages_per_hour=2, recipients_per_day=5))
    for offset in (0, 10):
        assert limiter.check(1, now=NOW + offset, recipients=1).accepted
        limiter.record(1, now=NOW + offset, recipients=2)
    over = limiter.check(1, now=NOW + 20, recipients=1)
    assert over.action is Action.TEMPFAIL and over.reasons == (Reason.RATE_LIMITED,)
    assert (over.reply.code, over.reply.enhanced) == (451, "4.7.1")  # RFC 3463 X.7.1
    assert "2 messages per hour" in over.reply.text
    assert limiter.check(2, now=NOW + 20, recipients=1).accepted  # per account
    later = NOW + HOUR + 1  # the hour has passed; the day still counts 4 recipients
    assert limiter.check(1, now=later, recipients=1).accepted
    day = limiter.check(1, now=later, recipients=2)
    assert not day.accepted and "5 recipients per day" in day.reply.text
    assert limiter.check(1, now=NOW + DAY + 11, recipients=5).accepted
    assert limiter.usage(1, now=NOW + DAY + 11) == (0, 0, 0, 0)


def test_no_limits_means_no_counting() -> None:
    limiter = SubmissionLimiter(SubmissionLimits())
    limiter.record(1, now=NOW, recipients=10_000)
    assert limiter.check(1, now=NOW, recipients=10_000).accepted
    assert limiter.usage(1, now=NOW) == (0, 0, 0, 0)


def test_submission_over_the_limits_gets_451(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = SubmissionLimits(messages_per_hour=2, recipients_per_hour=3)
    hooks = SessionHooks(limiter=SubmissionLimiter(limits))
    alice = "alice@example.test"

    async def main() -> None:
        async with world(tmp_path, hooks=hooks) as w:
            with caplog.at_level(logging.INFO):
                await send(w.submission, alice, ["bob@example.test"], message(alice), login=alice)
                # the second message: its second recipient would be the fourth this hour
                rcpts = ["bob@example.test", "carol@remote.example", "dave@remote.example"]
                await send(w.submission, alice, rcpts, message(alice), login=alice)
                assert len(await w.mailbox("bob@example.test")) == 2
                (entry,) = await w.queue()
                assert [r.address for r in entry.recipients] == ["carol@remote.example"]
                with pytest.raises(SmtpFailure) as failure:
                    await send(
                        w.submission, alice, ["bob@example.test"], message(alice), login=alice
                    )
            assert failure.value.code == 451
            assert (
                failure.value.text == "4.7.1 Sending limit reached (2 messages per hour), "
                "try again later"
            )
            assert "smtp.ratelimit.exceeded" in caplog.text
            assert any(
                r.levelno == logging.WARNING
                for r in caplog.records
                if "ratelimit" in r.getMessage()
            )
            # mail from the internet to the same users is not limited
            await send(w.mx, "x@elsewhere.example", ["alice@example.test"], message("x@e.example"))
            assert len(await w.mailbox("alice@example.test")) == 1

    run(main())
