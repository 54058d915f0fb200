"""Structured log events: key=value fields, secrets redacted, connection id carried."""

from __future__ import annotations

import contextvars

from hato.core.log import format_event, new_connection_id


def test_secrets_are_redacted() -> None:
    line = format_event("auth.failed", {"user": "demo@example.test", "password": "hunter2"})
    assert "hunter2" not in line
    assert "password=***" in line


def test_values_with_spaces_are_quoted() -> None:
    line = format_event("smtp.rcpt.rejected", {"reason": 'no such "user"', "code": 550})
    assert line == 'event=smtp.rcpt.rejected reason="no such \\"user\\"" code=550'


def test_connection_id_is_included() -> None:
    def run() -> tuple[str, str]:
        cid = new_connection_id()
        return cid, format_event("smtp.connect", {})

    cid, line = contextvars.copy_context().run(run)
    assert f"conn={cid}" in line
