"""Every response carries the security headers (HSTS on HTTPS only, RFC 6797 §7.2); bodies
are bounded (RFC 9110 §15.5.14); unknown paths are 404; store failures are a bare 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from web_harness import ALICE, DOMAIN, settings, web_env

from hato.core.errors import TemporaryStoreError
from hato.store.api import MailStore

AUTODISCOVER = "/autodiscover/autodiscover.xml"


def _assert_security_headers(headers: httpx.Headers, *, https: bool) -> None:
    get = headers.get
    assert get("x-content-type-options") == "nosniff"
    assert get("x-frame-options") == "DENY"
    assert get("content-security-policy") == "default-src 'none'; frame-ancestors 'none'"
    assert get("referrer-policy") == "no-referrer"
    assert get("cache-control") == "no-store"
    assert get("server") is None
    if https:
        assert get("strict-transport-security") == "max-age=31536000"
    else:  # RFC 6797 §7.2: MUST NOT send HSTS over non-secure transport
        assert get("strict-transport-security") is None


@pytest.mark.parametrize("https", [False, True])
def test_security_headers_on_every_response(tmp_path: Path, https: bool) -> None:
    base = f"{'https' if https else 'http'}://{DOMAIN}"

    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client(base=base) as c:
            responses = [
                await c.get("/healthz"),
                await c.get("/metrics"),
                await c.get("/mail/config-v1.1.xml", params={"emailaddress": ALICE}),
                await c.get("/.well-known/mta-sts.txt", headers={"host": f"mta-sts.{DOMAIN}"}),
                await c.get("/no/such/path"),
                await c.post("/healthz"),
                await c.post(AUTODISCOVER, content=b"x" * 100_000),
            ]
            assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 405, 413]
            for r in responses:
                _assert_security_headers(r.headers, https=https)

    asyncio.run(scenario())


def test_unknown_paths_are_404_without_listing_or_redirects(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client() as c:
            for path in ("/", "/.well-known/", "/mail/", "/metrics/", "/healthz/",
                         "/.well-known/mta-sts.txt/", "/../etc/passwd", "/mail/..%2f..%2f"):
                r = await c.get(path, headers={"host": f"mta-sts.{DOMAIN}"})
                assert r.status_code == 404, path
                assert "location" not in r.headers

    asyncio.run(scenario())


def test_health(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client(ip="192.0.2.1") as c:
            r = await c.get("/healthz")
            assert (r.status_code, r.text) == (200, "ok\n")

    asyncio.run(scenario())


class _BrokenStore:
    """A store whose every query fails the way a full disk or a locked database does."""

    async def list_domains(self) -> list[object]:
        raise TemporaryStoreError("database is locked (secret detail)")

    async def has_domain(self, name: str) -> bool:
        raise TemporaryStoreError("database is locked (secret detail)")


def test_store_failures_are_503_without_detail(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = cast(MailStore, _BrokenStore())
        async with web_env(tmp_path, store=store) as env, env.client() as c:
            r = await c.get("/healthz")
            assert (r.status_code, r.text) == (503, "store unavailable\n")
            r = await c.get("/mail/config-v1.1.xml", params={"emailaddress": ALICE})
            assert r.status_code == 503
            assert r.headers["retry-after"] == "60"
            assert "secret" not in r.text
            _assert_security_headers(r.headers, https=False)
            r = await c.get("/metrics")  # metrics still answer, saying the store is down
            assert r.status_code == 200
            assert "hato_store_up 0.0" in r.text
            assert "hato_accounts" not in r.text

    asyncio.run(scenario())


def test_request_bodies_are_bounded(tmp_path: Path) -> None:
    async def chunks(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 1000):
            yield b"x" * 1000

    async def scenario() -> None:
        async with web_env(tmp_path, settings(max_body=4000)) as env, env.client() as c:
            # RFC 9110 §15.5.14: too large by Content-Length, refused before reading.
            r = await c.post(AUTODISCOVER, content=b"x" * 4001)
            assert r.status_code == 413
            # Chunked: no Content-Length, refused once the limit is passed.
            r = await c.post(AUTODISCOVER, content=chunks(10_000))
            assert r.status_code == 413
            # Under the limit, the handler gets the whole body (here: not XML, a 400).
            r = await c.post(AUTODISCOVER, content=chunks(3000))
            assert r.status_code == 400
            # RFC 9110 §8.6: Content-Length is 1*DIGIT.
            r = await c.post(AUTODISCOVER, content=b"abc", headers={"content-length": "-3"})
            assert r.status_code == 400
            assert r.text == "bad Content-Length\n"

    asyncio.run(scenario())
