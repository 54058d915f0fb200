"""Structured event logging: stable event names, key=value fields, a connection id.

``event("smtp.rcpt.rejected", rcpt=..., code=550)`` writes one line
``event=smtp.rcpt.rejected conn=3f2a... rcpt=... code=550``. The connection id lives in a
contextvar set by each server per connection (CONVENTIONS.md §12).

Security: fields named like secrets (password, pass, secret, token, auth_data) are always
written as ``***``; message bodies are never passed to this module.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from typing import Any

_conn_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("hato_conn_id", default=None)
_NEEDS_QUOTES = re.compile(r'[ ="\n\r\t]')
_REDACTED = frozenset({"password", "pass", "passwd", "secret", "token", "auth_data", "response"})

logger = logging.getLogger("hato")


def new_connection_id() -> str:
    """A short random id for one connection, set into the logging context."""
    cid = secrets.token_hex(6)
    _conn_id.set(cid)
    return cid


def current_connection_id() -> str | None:
    return _conn_id.get()


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text) is not None:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    return text


def format_event(name: str, fields: dict[str, Any]) -> str:
    """Render an event line; secrets redacted."""
    parts = [f"event={name}"]
    cid = _conn_id.get()
    if cid is not None and "conn" not in fields:
        parts.append(f"conn={cid}")
    for key, value in fields.items():
        shown = "***" if key.lower() in _REDACTED else _quote(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    if logger.isEnabledFor(level):
        logger.log(level, format_event(name, fields))


def configure(level: str = "info") -> None:
    """Send Hato's events to stderr with a timestamp; called once by the app layer."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("hato")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
