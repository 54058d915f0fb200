"""Pigeonhole's vendor extensions through a real SMTP delivery: report (an RFC 5965 report
queued from <>), pipe (the program gets the message; a failure keeps it, §5), filter (the
stored copy is the program's output, §6) and execute (its output steers the script, §7),
with the [sieve] settings handed to the SMTP hooks as wiring does."""

from __future__ import annotations

import asyncio
import email
from pathlib import Path

from sieve_smtp_world import mail, sieve_world, smtp_send

from hato.delivery.sieve import SieveSettings
from hato.delivery.sieve_programs import ProgramDirectory, ProgramSettings

REMOTE = "someone@remote.example"
BOB = "bob@example.test"


def programs(directory: Path) -> SieveSettings:
    """Every kind from one directory, with a short timeout."""
    kind = ProgramDirectory(directory, timeout=5.0)
    return SieveSettings(programs=ProgramSettings(pipe=kind, filter=kind, execute=kind))


def program(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def test_report_queues_an_abuse_report_from_the_null_sender(tmp_path: Path) -> None:
    script = (
        'require "vnd.dovecot.report";\n'
        'report "abuse" "This spam slipped through." "abuse@remote.example";\n'
        'report "abuse" "To myself." "bob@example.test";\n'  # the extension's §3 MUST NOT
    )

    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.script(BOB, script)
            await smtp_send(w.port, REMOTE, [BOB], mail("buy now"))
            assert len(await w.mailbox(BOB)) == 1  # report keeps the implicit keep
            (entry,) = await w.queue()
            assert entry.sender == ""
            assert [r.address for r in entry.recipients] == ["abuse@remote.example"]
            report = email.message_from_bytes(w.body(entry))
            assert report.get_content_type() == "multipart/report"
            assert report["From"] == "postmaster@example.test"
            assert report["Auto-Submitted"] == "auto-generated (report)"
            body = w.body(entry)
            assert b"Feedback-Type: abuse\r\n" in body
            assert b"Original-Mail-From: <someone@remote.example>" in body
            assert b"Subject: buy now" in body and b"Hello there." in body

    asyncio.run(main())


def test_pipe_hands_the_message_over_and_a_failure_keeps_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    program(bin_dir, "deliver", f'cat > {seen}\nprintf "%s" "$1 $RECIPIENT" > {seen}.args')
    program(bin_dir, "broken", "cat > /dev/null\nexit 1")
    script = (
        'require ["vnd.dovecot.pipe", "variables"];\n'
        'if header :contains "subject" "hand" { pipe "deliver" ["--to"]; }\n'
        'if header :contains "subject" "fail" { pipe "broken"; }\n'
        'if header :contains "subject" "try" { pipe :try "broken"; }\n'
    )

    async def main() -> None:
        async with sieve_world(tmp_path, sieve=programs(bin_dir)) as w:
            await w.script(BOB, script)
            await smtp_send(w.port, REMOTE, [BOB], mail("hand over"))
            assert await w.mailbox(BOB) == []  # §5: pipe cancelled the implicit keep
            assert b"Subject: hand over" in seen.read_bytes()
            assert seen.read_bytes().startswith(b"Return-Path: <someone@remote.example>\r\n")
            assert Path(f"{seen}.args").read_text() == "--to bob@example.test"
            await smtp_send(w.port, REMOTE, [BOB], mail("fail"))
            await smtp_send(w.port, REMOTE, [BOB], mail("try"))
            kept = await w.mailbox(BOB)  # §5: a failed pipe never cancels the keep
            assert [b"Subject: fail" in m for m in kept] == [True, False]
            assert [b"Subject: try" in m for m in kept] == [False, True]

    asyncio.run(main())


def test_filter_and_execute_change_what_is_stored(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program(bin_dir, "tag", 'printf "X-Tagged: %s\\n" "$1"\ncat')
    program(bin_dir, "folder", 'printf "%s" "Sorted"')
    script = (
        'require ["vnd.dovecot.filter", "vnd.dovecot.execute", "variables", "fileinto",'
        ' "mailbox"];\n'
        'filter "tag" ["yes"];\n'
        'if execute :output "box" "folder" { fileinto :create "${box}"; }\n'
    )

    async def main() -> None:
        async with sieve_world(tmp_path, sieve=programs(bin_dir)) as w:
            await w.script(BOB, script)
            await smtp_send(w.port, REMOTE, [BOB], mail("sort me"))
            assert await w.mailbox(BOB) == []
            (stored,) = await w.mailbox(BOB, "Sorted")
            assert b"X-Tagged: yes\r\n" in stored and b"Subject: sort me" in stored
            # RFC 5321 §4.4: the Return-Path stays the first line
            assert stored.startswith(b"Return-Path: <someone@remote.example>\r\n")

    asyncio.run(main())


def test_without_a_directory_the_extension_is_not_there(tmp_path: Path) -> None:
    async def main() -> None:
        async with sieve_world(tmp_path) as w:
            await w.script(BOB, 'require "vnd.dovecot.pipe";\npipe "anything";\n')
            await smtp_send(w.port, REMOTE, [BOB], mail("kept"))
            assert len(await w.mailbox(BOB)) == 1  # a compile error: implicit keep

    asyncio.run(main())
