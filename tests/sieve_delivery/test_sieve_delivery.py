"""Sieve at local delivery (hato.delivery.sieve through deliver_local) on a real SQLite store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hato.codec.sieve.actions import FileInto, Keep, Redirect, SieveResult
from hato.codec.smtp_events import Envelope, Recipient
from hato.codec.smtp_params import MailParams, RcptParams
from hato.codec.smtp_params import Path as SmtpPath
from hato.core.address import Address
from hato.core.clock import FixedClock
from hato.delivery.local import ReceivedMessage, deliver_local
from hato.delivery.sieve import check_script, decide
from hato.store.api import MailStore
from hato.store.model import INBOX, Account, DeliveryTarget
from hato.store.sqlite import open_store

CREDS_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"
NOW = 1_700_000_000.0


def message(subject: str = "hello", *, message_id: str = "<m1@example.net>") -> bytes:
    return (
        f"From: Sender <sender@example.net>\r\nTo: alice@example.org\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nBody text.\r\n"
    ).encode()


def envelope(*recipients: str, sender: str | None = "sender@example.net") -> Envelope:
    return Envelope(
        sender=SmtpPath(Address.parse(sender) if sender else None),
        params=MailParams(),
        recipients=[Recipient(SmtpPath(Address.parse(r)), RcptParams()) for r in recipients],
    )


Body = Callable[[MailStore, Account, Account], Awaitable[Any]]


def run(tmp_path: Path, body: Body) -> Any:
    async def main() -> Any:
        from hato.store.model import Credentials

        store = await open_store(tmp_path / "data", clock=FixedClock(NOW))
        try:
            await store.add_domain("example.org")
            alice = await store.add_account("alice@example.org", Credentials(CREDS_HASH))
            bob = await store.add_account("bob@example.org", Credentials(CREDS_HASH))
            return await body(store, alice, bob)
        finally:
            await store.close()

    return asyncio.run(main())


async def receive(
    store: MailStore, data: bytes, targets: list[DeliveryTarget], env: Envelope
) -> None:
    writer = store.blobs.writer()
    writer.write(data)
    blob = await asyncio.to_thread(writer.commit)
    await deliver_local(store, ReceivedMessage(env, blob, tuple(targets), NOW))


async def where(store: MailStore, account: Account) -> dict[str, list[frozenset[str]]]:
    """Mailbox name -> flags of each message in it (mailboxes with messages only)."""
    out: dict[str, list[frozenset[str]]] = {}
    for box in await store.list_mailboxes(account.id):
        messages = await store.list_messages(box.id)
        if messages:
            out[box.name] = [m.flags for m in messages]
    return out


FILTER = """require ["fileinto", "imap4flags", "mailbox"];
if header :contains "subject" "spam" { fileinto "Junk"; stop; }
if header :contains "subject" "flag" { addflag "\\\\Flagged"; keep; stop; }
if header :contains "subject" "new box" { fileinto :create "Lists/new"; stop; }
if header :contains "subject" "drop" { discard; stop; }
"""


def test_scripts_choose_mailboxes_flags_and_discard(tmp_path: Path) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        await store.put_script(alice.id, "filter", FILTER, activate=True)
        env = envelope("alice@example.org", "bob@example.org")
        both = [DeliveryTarget(alice.id), DeliveryTarget(bob.id)]
        await receive(store, message("buy spam now"), both, env)
        await receive(store, message("please flag me"), both, env)
        await receive(store, message("a new box"), both, env)
        await receive(store, message("drop it"), both, env)
        await receive(store, message("plain"), both, env)
        got = await where(store, alice)
        assert got == {
            INBOX: [
                frozenset({"\\Flagged"}),
                frozenset(),
            ],  # RFC 5232 addflag + keep; implicit keep
            "Junk": [frozenset()],  # RFC 5228 §4.1 fileinto
            "Lists/new": [frozenset()],  # RFC 5490 §3.2 :create
        }  # and RFC 5228 §4.4: the discarded one is nowhere
        # bob has no script: every message in his INBOX
        assert {k: len(v) for k, v in (await where(store, bob)).items()} == {INBOX: 5}

    run(tmp_path, body)


def test_errors_mean_implicit_keep(tmp_path: Path) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        # A script that fails at run time (fileinto to a mailbox name that is invalid UTF-8
        # is hard to write; use an include of a script that does not exist).
        await store.put_script(alice.id, "helper", "discard;")
        await store.put_script(
            alice.id, "main", 'require "include";\ninclude :personal "helper";\n', activate=True
        )
        await store.delete_script(alice.id, "helper")  # now the include fails at run time
        await receive(store, message(), [DeliveryTarget(alice.id)], envelope("alice@example.org"))
        assert await where(store, alice) == {INBOX: [frozenset()]}  # RFC 5228 §2.10.6

    run(tmp_path, body)


def test_redirect_keeps_a_copy_until_outbound_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        await store.put_script(
            alice.id, "fwd", 'redirect "elsewhere@example.net";\n', activate=True
        )
        with caplog.at_level(logging.INFO):
            await receive(
                store, message(), [DeliveryTarget(alice.id)], envelope("alice@example.org")
            )
        assert await where(store, alice) == {INBOX: [frozenset()]}  # never lose mail
        assert "sieve.redirect.pending" in caplog.text and "elsewhere@example.net" in caplog.text

    run(tmp_path, body)


def test_reject_is_logged_and_the_message_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        await store.put_script(
            alice.id, "r", 'require "reject";\nreject "no thanks";\n', activate=True
        )
        with caplog.at_level(logging.INFO):
            await receive(
                store, message(), [DeliveryTarget(alice.id)], envelope("alice@example.org")
            )
        assert await where(store, alice) == {INBOX: [frozenset()]}
        assert "sieve.reject" in caplog.text

    run(tmp_path, body)


VACATION = """require "vacation";
vacation :days 3 :subject "Away" "I am away.";
"""


def test_vacation_once_per_days(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        await store.put_script(alice.id, "away", VACATION, activate=True)
        env = envelope("alice@example.org")
        with caplog.at_level(logging.INFO):
            await receive(store, message(message_id="<a@x>"), [DeliveryTarget(alice.id)], env)
            await receive(store, message(message_id="<b@x>"), [DeliveryTarget(alice.id)], env)
        # RFC 5230 §4.2: the second message from the same sender within :days gets no reply.
        assert caplog.text.count("sieve.vacation.pending") == 1
        assert await where(store, alice) == {INBOX: [frozenset(), frozenset()]}  # both kept
        # RFC 5230 §4.5/RFC 3834: no reply to the null sender.
        caplog.clear()
        with caplog.at_level(logging.INFO):
            await receive(
                store,
                message(message_id="<c@x>"),
                [DeliveryTarget(alice.id)],
                envelope("alice@example.org", sender=None),
            )
        assert "sieve.vacation.pending" not in caplog.text

    run(tmp_path, body)


DUPLICATE = """require ["duplicate", "fileinto"];
if duplicate { fileinto "Trash"; }
"""


def test_duplicate_tracking_marks_after_delivery(tmp_path: Path) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        await store.put_script(alice.id, "dup", DUPLICATE, activate=True)
        env = envelope("alice@example.org")
        for _ in range(2):
            await receive(store, message(message_id="<same@x>"), [DeliveryTarget(alice.id)], env)
        await receive(store, message(message_id="<other@x>"), [DeliveryTarget(alice.id)], env)
        got = await where(store, alice)
        # RFC 7352 §3: the first is new, the repeat is a duplicate, another id is new.
        assert {k: len(v) for k, v in got.items()} == {INBOX: 2, "Trash": 1}

    run(tmp_path, body)


def test_envelope_test_sees_the_subaddress(tmp_path: Path) -> None:
    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        script = (
            'require ["envelope", "subaddress", "fileinto"];\n'
            'if envelope :detail "to" "lists" { fileinto "Lists"; }\n'
        )
        await store.put_script(alice.id, "s", script, activate=True)
        await store.create_mailbox(alice.id, "Lists")
        await receive(
            store, message(), [DeliveryTarget(alice.id)], envelope("alice+lists@example.org")
        )
        # RFC 5233 §4: :detail of the envelope recipient that reached this account
        assert list(await where(store, alice)) == ["Lists"]
        # A missing mailbox without :create: the copy falls back to INBOX (never lost).
        await store.put_script(alice.id, "s", 'require "fileinto";\nfileinto "Nope";\n')
        await receive(store, message(), [DeliveryTarget(alice.id)], envelope("alice@example.org"))
        assert {k: len(v) for k, v in (await where(store, alice)).items()} == {
            "Lists": 1,
            INBOX: 1,
        }

    run(tmp_path, body)


def test_decide_is_a_pure_value() -> None:
    target = DeliveryTarget(7, INBOX, frozenset({"\\Seen"}))
    result = SieveResult(
        (FileInto("Work"), FileInto("Work"), Redirect("x@example.net", copy=True)),
        implicit_keep=True,
    )
    decision = decide(result, target=target)
    assert decision.targets == (DeliveryTarget(7, "Work"), target)  # §2.10.3: one Work copy
    assert decision.pending == (Redirect("x@example.net", copy=True),)
    kept = decide(SieveResult((Keep(("\\Answered",)),), implicit_keep=False), target=target)
    assert kept.targets == (DeliveryTarget(7, INBOX, frozenset({"\\Answered"})),)
    redirected = decide(
        SieveResult((Redirect("x@example.net"),), implicit_keep=False), target=target
    )
    assert redirected.targets == (target,)  # kept while outbound cannot take it


def test_check_script_reports_lines_and_includes() -> None:
    assert check_script("keep;\n", scripts={}) == []
    errors = check_script("#comment\nInvalidSieveCommand;\n", scripts={})
    assert errors and errors[0][0] == 2
    included = 'require "include";\ninclude :personal "other";\n'
    assert check_script(included, scripts={"other": "keep;"}) == []


def test_generated_forward_and_vacation_script_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hato.app.cli_sieve import Generated, render

    text = render(
        Generated(
            forward=("friend@example.net",),
            keep=True,
            vacation={"subject": "Away", "body": "Back soon.\n", "days": 7, "until": "2999-12-31"},
        )
    )

    async def body(store: MailStore, alice: Account, bob: Account) -> None:
        await store.put_script(alice.id, "hato-generated", text, activate=True)
        with caplog.at_level(logging.INFO):
            await receive(
                store, message(), [DeliveryTarget(alice.id)], envelope("alice@example.org")
            )
        assert await where(store, alice) == {INBOX: [frozenset()]}  # --keep: a copy stays
        assert "sieve.redirect.pending" in caplog.text and "friend@example.net" in caplog.text
        assert "sieve.vacation.pending" in caplog.text  # until 2999: still on vacation

    run(tmp_path, body)
