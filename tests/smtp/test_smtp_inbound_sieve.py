"""Sieve in every local delivery of the SMTP path, and the actions that send mail through the
outbound queue: redirect (with SRS, loop control), vacation (RFC 5230 §5.1 null sender,
NOTIFY=NEVER; answered only once queued), notify (RFC 5436), reject/ereject (RFC 5429 §2.5
at the SMTP level for a single recipient, else an MDN / a DSN)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from smtp_inbound_kit import HOSTNAME, SmtpFailure, World, message, run, send, srs, world

from hato.servers.smtp_hooks import SessionHooks

REMOTE = "someone@elsewhere.example"


async def _script(w: World, user: str, text: str) -> None:
    await w.store.put_script(w.ids[user], "s", text, activate=True)


def test_sieve_runs_when_the_transaction_also_has_remote_recipients(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", 'require "fileinto";\nfileinto "Archive";\n')
            await send(
                w.submission,
                "alice@example.test",
                ["bob@example.test", "far@remote.example"],
                message("alice@example.test"),
                login="alice@example.test",
            )
            assert await w.mailbox("bob@example.test") == []
            assert len(await w.mailbox("bob@example.test", "Archive")) == 1
            (entry,) = await w.queue()
            assert [r.address for r in entry.recipients] == ["far@remote.example"]

    run(main())


def test_redirect_is_queued_with_srs_for_a_remote_sender(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, hooks=SessionHooks(srs=srs())) as w:
            await _script(w, "bob@example.test", 'redirect "Friend@Remote.example";\n')
            await send(w.mx, REMOTE, ["bob@example.test"], message(REMOTE, subject="fwd"))
            assert await w.mailbox("bob@example.test") == []  # RFC 5228 §4.2: no keep
            (entry,) = await w.queue()
            assert [r.address for r in entry.recipients] == ["Friend@remote.example"]
            assert entry.sender.startswith("SRS0=") and entry.sender.endswith("@example.test")
            assert "=elsewhere.example=someone@" in entry.sender
            body = w.body(entry)
            # RFC 5228 §4.2: Received fields kept, ours added: the count grows
            assert body.startswith(b"Received: from client.example.net")
            assert f"by {HOSTNAME} (Hato)".encode() in body
            # a local sender keeps its address (its domain's SPF already covers us)
            await send(
                w.submission,
                "alice@example.test",
                ["bob@example.test"],
                message("alice@example.test"),
                login="alice@example.test",
            )
            senders = {e.sender for e in await w.queue()}
            assert len(senders) == 2 and "alice@example.test" in senders

    run(main())


def test_redirect_loop_is_detected_and_the_message_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stamp = f"Received: from a (a [192.0.2.1])\r\n\tby {HOSTNAME} (Hato) with ESMTP; x\r\n"

    async def main() -> None:
        async with world(tmp_path, hooks=SessionHooks(srs=srs())) as w:
            await _script(w, "bob@example.test", 'redirect "friend@remote.example";\n')
            looped = (stamp * 2).encode() + message(REMOTE)
            with caplog.at_level(logging.INFO):
                await send(w.mx, REMOTE, ["bob@example.test"], looped)
            # with ours, three of our Received fields: RFC 5228 §4.2 loop → implicit keep
            assert len(await w.mailbox("bob@example.test")) == 1
            assert await w.queue() == []
            assert "sieve.redirect.loop" in caplog.text
            await send(w.mx, REMOTE, ["bob@example.test"], stamp.encode() + message(REMOTE))
            assert len(await w.queue()) == 1  # two of ours: still redirected

    run(main())


VACATION = 'require "vacation";\nvacation :days 7 :subject "Away" "I am away.";\n'


def test_vacation_reply_is_queued_from_the_null_sender_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", VACATION)
            for subject in ("one", "two"):
                await send(w.mx, REMOTE, ["bob@example.test"], message(REMOTE, subject=subject))
            (entry,) = await w.queue()  # RFC 5230 §4.2: once per :days
            assert entry.sender == ""  # RFC 5230 §5.1: MAIL FROM <>
            (rcpt,) = entry.recipients
            assert rcpt.address == REMOTE and rcpt.notify == frozenset()  # NOTIFY=NEVER
            reply = w.body(entry)
            assert b"Auto-Submitted: auto-replied\r\n" in reply  # RFC 3834 §5
            assert b"Subject: Away\r\n" in reply and b"I am away." in reply
            assert b"In-Reply-To: <one@example.net>" in reply
            assert len(await w.mailbox("bob@example.test")) == 2  # both kept

    run(main())


def test_vacation_is_only_marked_answered_when_queued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", VACATION)
            ghost = "ghost@example.test"  # a local address nobody has: the reply cannot go
            with caplog.at_level(logging.INFO):
                for subject in ("one", "two"):
                    await send(w.mx, ghost, ["bob@example.test"], message(ghost, subject=subject))
            assert caplog.text.count("sieve.vacation.undeliverable") == 2  # tried again
            assert await w.queue() == []
            # a local sender gets the reply stored directly in its mailbox
            await send(
                w.submission,
                "alice@example.test",
                ["bob@example.test"],
                message("alice@example.test"),
                login="alice@example.test",
            )
            (reply,) = await w.mailbox("alice@example.test")
            assert reply.startswith(b"Return-Path: <>\r\n")
            assert b"Auto-Submitted: auto-replied" in reply

    run(main())


def test_notify_mailto_is_queued(tmp_path: Path) -> None:
    script = 'require ["enotify"];\nnotify :message "New mail" "mailto:pager@remote.example";\n'

    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", script)
            await send(w.mx, REMOTE, ["bob@example.test"], message(REMOTE))
            (entry,) = await w.queue()
            assert [r.address for r in entry.recipients] == ["pager@remote.example"]
            assert b"Auto-Submitted: auto-notified" in w.body(entry)  # RFC 5436 §2.7
            assert len(await w.mailbox("bob@example.test")) == 1  # implicit keep

    run(main())


def test_reject_single_recipient_is_refused_over_smtp(tmp_path: Path) -> None:
    script = 'require "reject";\nreject text:\nNot from you.\nGo away.\n.\n;\n'

    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", script)
            with pytest.raises(SmtpFailure) as failure:
                await send(w.mx, REMOTE, ["bob@example.test"], message(REMOTE))
            # RFC 5429 §2.5: the reason as a multi-line 550 with 5.7.1 on every line
            assert failure.value.code == 550
            assert failure.value.text == "5.7.1 Not from you.\n5.7.1 Go away."
            assert await w.mailbox("bob@example.test") == []
            assert await w.queue() == []

    run(main())


def test_reject_among_several_recipients_sends_an_mdn(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", 'require "reject";\nreject "No thanks.";\n')
            rcpts = ["bob@example.test", "alice@example.test"]
            await send(w.mx, REMOTE, rcpts, message(REMOTE))
            assert await w.mailbox("bob@example.test") == []
            assert len(await w.mailbox("alice@example.test")) == 1
            (entry,) = await w.queue()
            assert entry.sender == "" and entry.recipients[0].address == REMOTE
            mdn = w.body(entry)  # RFC 5429 §2.2.1: a failure MDN, disposition "deleted"
            assert b"report-type=disposition-notification" in mdn
            assert b"automatic-action/MDN-sent-automatically; deleted" in mdn
            assert b"No thanks." in mdn

    run(main())


def test_ereject_among_several_recipients_sends_a_dsn(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await _script(w, "bob@example.test", 'require "ereject";\nereject "Spam.";\n')
            await send(w.mx, REMOTE, ["bob@example.test", "alice@example.test"], message(REMOTE))
            (entry,) = await w.queue()
            dsn = w.body(entry)  # RFC 5429 §2.1.2 / RFC 3464
            assert entry.sender == ""
            assert b"report-type=delivery-status" in dsn
            assert b"Action: failed\r\n" in dsn and b"Status: 5.7.1\r\n" in dsn
            assert b"Final-Recipient: rfc822; bob@example.test" in dsn
            assert b"Spam." in dsn and b"Subject: hello" in dsn
            # never to the null reverse-path (RFC 3461 §6.2)
            await send(w.mx, "", ["bob@example.test", "alice@example.test"], message(REMOTE))
            assert len(await w.queue()) == 1

    run(main())
