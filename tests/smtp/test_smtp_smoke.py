"""Smoke: one message through smtplib to the MX lands in the INBOX."""

from __future__ import annotations

import smtplib

from smtpkit import HOST, Harness


def test_mx_delivers_to_inbox(harness: Harness) -> None:
    with smtplib.SMTP(HOST, harness.mx, timeout=10) as client:
        client.ehlo("client.test")
        client.sendmail(
            "sender@remote.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n"
        )
    [body] = harness.messages("alice@example.test")
    assert body.endswith(b"Subject: hi\r\n\r\nhello\r\n")
    assert body.startswith(b"Return-Path: <sender@remote.test>\r\nReceived: from client.test")
    assert harness.temp_files() == []
