"""A real MTA as client: a private Debian Postfix relays to Hato (relayhost = Hato's MX)."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

from postfixkit import PostfixInstance
from smtpkit import Harness


def test_postfix_relays_to_hato(harness: Harness, tmp_path: Path) -> None:
    postfix = PostfixInstance(
        tmp_path / "postfix",
        settings={
            "relayhost": f"[127.0.0.1]:{harness.mx}",
            "smtp_tls_security_level": "none",
            "minimal_backoff_time": "1s",
            "queue_run_delay": "1s",
        },
    )
    postfix.start()
    try:
        message = (
            "From: Sender <sender@relay.test>\r\nTo: alice@example.test\r\n"
            "Subject: via postfix\r\nMessage-ID: <pf-1@relay.test>\r\n\r\nRelayed body.\r\n"
        )
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
            client.sendmail(
                "sender@relay.test", ["alice@example.test", "bob@example.test"], message
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if harness.messages("alice@example.test") and harness.messages("bob@example.test"):
                break
            time.sleep(0.2)
        [alice] = harness.messages("alice@example.test")
        assert alice.startswith(b"Return-Path: <sender@relay.test>\r\nReceived: from relay.test")
        assert b"(Hato) with ESMTP id" in alice
        assert b"by relay.test (Postfix)" in alice  # Postfix's own Received field follows
        assert alice.endswith(b"\r\n\r\nRelayed body.\r\n")
        assert len(harness.messages("bob@example.test")) == 1
        log = postfix.read_log()
        assert "status=sent" in log and "250 2.0.0 Message accepted" in log
    finally:
        postfix.stop()
