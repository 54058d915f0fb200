"""ASGI middleware around every response: security headers, a body size limit, accounting.

Implements RFC 6797 §7.2 (``Strict-Transport-Security`` only over secure transport, never on
plaintext HTTP), RFC 9111 §5.2.2.5 (``Cache-Control: no-store`` unless a handler chose
otherwise: autoconfig answers, metrics and the MTA-STS policy must not be cached, RFC 8461
§3.3), RFC 9110 §15.5.14 (413 Content Too Large for bodies over the limit, checked against
``Content-Length`` first, then while reading a chunked body) and RFC 9110 §8.6 (a
``Content-Length`` that is not a number is a 400).

Left out: CORS (no endpoint is meant for browsers' cross-origin scripts), compression.

Security: ``X-Content-Type-Options: nosniff``, ``Content-Security-Policy: default-src
'none'`` and ``X-Frame-Options: DENY`` (nothing here is HTML); no ``Server`` header. Request
bodies are bounded before any handler runs; request paths, never query strings (they may
hold addresses), are logged.
"""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hato.core import log
from hato.core.metrics import Counters

_ALWAYS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("referrer-policy", "no-referrer"),
)


class SecurityHeaders:
    """Adds the security headers to every HTTP response, HSTS on HTTPS only."""

    def __init__(self, app: ASGIApp, *, hsts_max_age: int) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_max_age}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS:
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")  # RFC 9111 §5.2.2.5
                if secure:
                    # RFC 6797 §7.2: HSTS is sent over secure transport only.
                    headers["strict-transport-security"] = self.hsts
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Reads the whole request body (at most ``limit`` octets) before the app sees it."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():  # RFC 9110 §8.6: Content-Length = 1*DIGIT
                    await _reply(400, "bad Content-Length", scope, receive, send)
                    return
                if int(value) > self.limit:  # RFC 9110 §15.5.14: 413 Content Too Large
                    await _reply(413, "request body too large", scope, receive, send)
                    return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.limit:  # a chunked body over the limit
                await _reply(413, "request body too large", scope, receive, send)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(status: int, text: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = PlainTextResponse(text + "\n", status_code=status, headers={"connection": "close"})
    await response(scope, receive, send)


class Accounting:
    """Logs each request (``http.request``, debug level) and counts it by endpoint and code."""

    def __init__(self, app: ASGIApp, *, counters: Counters, endpoints: frozenset[str]) -> None:
        self.app = app
        self.counters = counters
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = str(scope.get("path", ""))
            endpoint = path if path in self.endpoints else "other"  # bounded label values
            self.counters.inc("hato_http_requests", endpoint=endpoint, code=str(status))
            client = scope.get("client")
            log.event(
                "http.request",
                level=logging.DEBUG,
                method=scope.get("method"),
                path=path[:200],
                status=status,
                remote_ip=client[0] if client else "",
                tls=scope.get("scheme") == "https",
            )
