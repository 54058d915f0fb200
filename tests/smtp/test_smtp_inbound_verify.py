"""Inbound verification at the end of DATA/BDAT (hato.policy.inbound in the SMTP session):
DMARC p=reject → 550 5.7.1, p=quarantine → Junk, temperror → 451, our Authentication-Results
field on top (RFC 8601 §4.1) and forged ones claiming our authserv-id removed (§5); the
submission role is not verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smtp_inbound_kit import (
    HOSTNAME,
    SmtpFailure,
    dkim_keys,
    message,
    run,
    send,
    verifier,
    world,
)

from hato.core.dns import TIMEOUT
from hato.mailauth import authresults
from hato.servers.smtp_hooks import SessionHooks


def _zone(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "sender.example": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "_dmarc.sender.example": {"TXT": ["v=DMARC1; p=reject"]},
        "_dmarc.quarantine.example": {"TXT": ["v=DMARC1; p=quarantine"]},
        "_dmarc.slow.example": {"TXT": TIMEOUT},
        "client.example.net": {"A": ["127.0.0.1"], "TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "1.0.0.127.in-addr.arpa": {"PTR": ["client.example.net"]},
        **extra,
    }


def _fields(stored: bytes) -> list[tuple[str, str]]:
    header = stored.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ")
    return [tuple(line.split(":", 1)) for line in unfolded.split("\r\n")]  # type: ignore[misc]


def test_aligned_message_passes_and_gets_our_results_on_top(tmp_path: Path) -> None:
    keys, key_zone = dkim_keys(tmp_path, "sender.example")
    forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.example\r\n"
    foreign = "Authentication-Results: other.example; spf=fail\r\n"
    original = (forged + foreign).encode() + message("alice@sender.example")
    signed = keys.sign(original, "sender.example") + original

    async def main() -> None:
        hooks = SessionHooks(verifier=verifier(_zone(key_zone)), spool_dir=tmp_path / "spool")
        (tmp_path / "spool").mkdir()
        async with world(tmp_path, hooks=hooks) as w:
            await send(w.mx, "bounce@sender.example", ["bob@example.test"], signed)
            await send(w.mx, "bounce@sender.example", ["bob@example.test"], signed, bdat=True)
            stored = await w.mailbox("bob@example.test")
            assert len(stored) == 2
            for raw in stored:
                fields = _fields(raw)
                names = [name for name, _ in fields[:3]]
                # RFC 5321 §4.4 Return-Path first; RFC 8601 §7.1 ours above our Received
                assert names == ["Return-Path", "Authentication-Results", "Received"]
                parsed = authresults.parse(fields[1][1])
                assert parsed.authserv_id == HOSTNAME
                got = {r.method: r.result for r in parsed.results}
                assert got["spf"] == "pass" and got["dkim"] == "pass"
                assert got["dmarc"] == "pass" and got["iprev"] == "pass"
                results = [v for n, v in fields if n == "Authentication-Results"]
                # RFC 8601 §5: the field claiming our authserv-id is gone, others stay
                assert len(results) == 2
                assert "bank.example" not in raw.decode()
                assert "other.example; spf=fail" in raw.decode()
                assert raw.endswith(b"\r\n\r\nHello there.\r\n")
            assert list((tmp_path / "spool").iterdir()) == []  # anonymous spool files

    run(main())


def test_dmarc_reject_is_refused_at_end_of_data(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, hooks=SessionHooks(verifier=verifier(_zone({})))) as w:
            forged = message("ceo@sender.example")
            with pytest.raises(SmtpFailure) as failure:
                await send(w.mx, "someone@elsewhere.example", ["bob@example.test"], forged)
            # RFC 7489 §10.3: 550 5.7.1 naming the policy domain
            assert failure.value.code == 550
            assert failure.value.text.startswith("5.7.1 Email rejected per DMARC policy")
            assert "sender.example" in failure.value.text
            assert await w.mailbox("bob@example.test") == []
            assert await w.queue() == []

    run(main())


def test_quarantine_goes_to_junk_and_temperror_is_451(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, hooks=SessionHooks(verifier=verifier(_zone({})))) as w:
            rcpts = ["bob@example.test"]
            await send(w.mx, "x@elsewhere.example", rcpts, message("a@quarantine.example"))
            assert await w.mailbox("bob@example.test") == []
            junk = await w.mailbox("bob@example.test", "Junk")
            assert len(junk) == 1 and b"dmarc=fail" in junk[0]
            # RFC 7489 §6.6.3: a DNS failure on the DMARC record: try again later
            with pytest.raises(SmtpFailure) as failure:
                await send(w.mx, "x@elsewhere.example", rcpts, message("a@slow.example"))
            assert failure.value.code == 451 and failure.value.text.startswith("4.4.3")
            assert len(await w.mailbox("bob@example.test", "Junk")) == 1

    run(main())


def test_submission_is_not_verified(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, hooks=SessionHooks(verifier=verifier(_zone({})))) as w:
            data = message("alice@example.test")
            await send(
                w.submission,
                "alice@example.test",
                ["bob@example.test"],
                data,
                login="alice@example.test",
            )
            (stored,) = await w.mailbox("bob@example.test")
            assert b"Authentication-Results" not in stored
            assert stored.startswith(b"Return-Path: <alice@example.test>\r\nReceived: ")

    run(main())
