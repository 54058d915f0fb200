"""Sieve through a real SMTP delivery: editheader changes reach the stored and the redirected
copies (RFC 5293 §7), redirect loop control by X-Sieve-Redirected-From (RFC 5228 §4.2), and
a CPU-bound script falling back to the implicit keep (RFC 5228 §2.10.6)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sieve_smtp_world import mail, sieve_world, smtp_send

from hato.codec.sieve import SieveLimits
from hato.delivery.sieve import SieveSettings

REMOTE = "someone@remote.example"
BOB = "bob@example.test"

EDIT = """require ["editheader", "fileinto", "mailbox"];
deleteheader "X-Spam-Score";
addheader "X-Filed-By" "bob's filter";
addheader :last "X-Note" "caf\u00e9";
if header :contains "subject" "file" { fileinto :create "Filed"; }
"""


def _header(message: bytes) -> bytes:
    return message[: message.index(b"\r\n\r\n") + 2]


def test_editheader_changes_are_in_the_stored_copies(tmp_path: Path) -> None:
    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.script(BOB, EDIT)
            await smtp_send(w.port, REMOTE, [BOB], mail("plain"))
            await smtp_send(w.port, REMOTE, [BOB], mail("please file"))
            (kept,) = await w.mailbox(BOB)  # the implicit keep of the first
            (filed,) = await w.mailbox(BOB, "Filed")  # fileinto of the second
            for stored in (kept, filed):
                head = _header(stored)
                # RFC 5293 §4/§5: added first (and :last at the end), the deleted one gone;
                # RFC 5321 §4.4: the Return-Path of final delivery stays the first line
                assert b"X-Spam-Score" not in head
                assert head.startswith(
                    b"Return-Path: <someone@remote.example>\r\nX-Filed-By: bob's filter\r\n"
                )
                assert head.endswith(b"X-Note: =?UTF-8?B?Y2Fmw6k=?=\r\n")
                assert head.count(b"Return-Path") == 1
                assert stored.endswith(b"\r\n\r\nHello there.\r\n")  # the body untouched
            assert b"Subject: plain" in kept and b"Subject: please file" in filed
            # alice has no script: her copy of a message to both is the one received
            await smtp_send(w.port, REMOTE, [BOB, "alice@example.test"], mail("both"))
            (alice,) = await w.mailbox("alice@example.test")
            assert b"X-Spam-Score: 7" in alice and b"X-Filed-By" not in alice
            assert len(await w.mailbox(BOB)) == 2

    asyncio.run(main())


def test_a_failed_run_keeps_the_message_as_received(tmp_path: Path) -> None:
    script = 'require ["editheader", "include"];\naddheader "X-Edit" "1";\ninclude "missing";\n'

    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.script(BOB, script)  # include of a script that does not exist: an error
            await smtp_send(w.port, REMOTE, [BOB], mail("oops"))
            (kept,) = await w.mailbox(BOB)
            assert b"X-Edit" not in kept  # RFC 5293 §7 / RFC 5228 §2.10.6: as received

    asyncio.run(main())


def test_redirect_sends_the_edited_message_marked_with_the_user(tmp_path: Path) -> None:
    script = 'require "editheader";\naddheader "X-Edited" "yes";\nredirect "far@remote.example";\n'

    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.script(BOB, script)
            await smtp_send(w.port, REMOTE, [BOB], mail("fwd"))
            assert await w.mailbox(BOB) == []  # RFC 5228 §4.2: the redirect cancels keep
            (entry,) = await w.queue()
            assert entry.sender == REMOTE  # RFC 5228 §4.2: the original sender by default
            body = w.body(entry)
            # the field naming the user above the first field that is not trace, and the
            # edit at the top (RFC 5293 §4)
            assert body.startswith(
                b"X-Sieve-Redirected-From: bob@example.test\r\nX-Edited: yes\r\nReceived: "
            )
            assert b"Return-Path" not in body  # RFC 5321 §4.4: only at final delivery

    asyncio.run(main())


def test_redirect_loop_by_the_redirected_from_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.script(BOB, 'redirect "far@remote.example";\n')
            back = mail("came back", extra="X-Sieve-Redirected-From: bob@example.test\r\n")
            with caplog.at_level(logging.INFO):
                await smtp_send(w.port, REMOTE, [BOB], back)
            # RFC 5228 §4.2: a detected loop is an error, so the implicit keep applies
            assert await w.queue() == []
            assert len(await w.mailbox(BOB)) == 1
            assert "sieve.redirect.loop" in caplog.text
            other = mail("other", extra="X-Sieve-Redirected-From: carol@example.net\r\n")
            await smtp_send(w.port, REMOTE, [BOB], other)
            assert len(await w.queue()) == 1  # another user's mark is no loop here

    asyncio.run(main())


def test_the_empty_sender_stays_empty_whatever_the_policy(tmp_path: Path) -> None:
    limits = SieveLimits(redirect_envelope_from="recipient")

    async def main() -> None:
        async with sieve_world(tmp_path, sieve=SieveSettings(limits=limits)) as w:
            await w.script(BOB, 'redirect "far@remote.example";\n')
            await smtp_send(w.port, "", [BOB], mail("bounce"))
            await smtp_send(w.port, REMOTE, [BOB], mail("normal"))
            senders = sorted(e.sender for e in await w.queue())
            # RFC 5228 §4.2: <> MUST stay <>; otherwise the policy names the recipient
            assert senders == ["", BOB]

    asyncio.run(main())


def test_a_script_over_its_cpu_time_is_stopped_and_the_message_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a tiny limit (one millisecond of CPU) and a script that loops over a long value
    settings = SieveSettings(limits=SieveLimits(max_cpu_time=0.001))
    tests = "\n".join(
        f'if string :regex "${{v}}" "^(a|aa)+$" {{ fileinto "Never{i}"; }}' for i in range(400)
    )
    script = (
        'require ["variables", "regex", "fileinto"];\nset "v" "' + "a" * 22 + 'b";\n' + tests + "\n"
    )

    async def main() -> None:
        async with sieve_world(tmp_path, sieve=settings) as w:
            await w.script(BOB, script)
            with caplog.at_level(logging.INFO):
                await smtp_send(w.port, REMOTE, [BOB], mail("slow"))
            assert len(await w.mailbox(BOB)) == 1  # RFC 5228 §2.10.6: implicit keep
            assert "sieve.runtime_error" in caplog.text

    asyncio.run(main())


LISTS = """require ["extlists", "fileinto", "mailbox"];
if address :list "from" ":addrbook:default" { discard; stop; }
if address :list "from" "mailto:team@example.test" { fileinto :create "Team"; stop; }
if header :contains "subject" "spread" { redirect :list "mailto:team@example.test"; }
"""


def test_extlists_from_the_domain_aliases(tmp_path: Path) -> None:
    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.store.add_alias("team@example.test", [REMOTE, "alice@example.test"])
            await w.script(BOB, LISTS)
            # RFC 6134 §2.2: the sender is a member of the alias list; the default address
            # book exists (§2.5) and is empty, so it matches nothing
            await smtp_send(w.port, REMOTE, [BOB], mail("hello team"))
            assert len(await w.mailbox(BOB, "Team")) == 1
            # RFC 6134 §2.3: redirect :list sends to every member (a list from elsewhere)
            await w.store.add_alias("other@example.test", ["alice@example.test"])
            await w.script(BOB, LISTS.replace('"mailto:team', '"mailto:other', 1))
            await smtp_send(w.port, REMOTE, [BOB], mail("spread it"))
            (entry,) = await w.queue()
            assert [r.address for r in entry.recipients] == [REMOTE]
            assert len(await w.mailbox("alice@example.test")) == 1
            assert await w.mailbox(BOB) == []  # redirect cancels the implicit keep

    asyncio.run(main())
