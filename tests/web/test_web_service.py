"""The real HTTP Service on loopback ephemeral ports, fetched with urllib.request: plaintext
and HTTPS listeners, a taken port, graceful stop; and its wiring from the configuration."""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from web_harness import ALICE, CREDS, DOMAIN, HOSTNAME, make_config, settings

from hato.app.wiring import build_services, web_settings
from hato.core.errors import ConfigError, ListenError
from hato.ops.tls import make_self_signed
from hato.servers.base import Listener, TlsMode
from hato.servers.tls import server_context
from hato.store.sqlite import open_store
from hato.web.autoconfig import MailPorts
from hato.web.service import WebService


def _fetch(
    url: str, *, host: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


def _huge_header_request(port: int) -> bytes:
    """A request whose header block never ends within the limit: refused with 400."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
        return conn.recv(100)


def _port(service: WebService, tls: TlsMode) -> int:
    return next(addr[1] for lst, addr in service.addresses if lst.tls is tls)


def test_service_serves_http_and_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hostnames=[HOSTNAME], loopback=True)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        store = await open_store(tmp_path / "data")
        await store.add_domain(DOMAIN)
        await store.add_account(ALICE, CREDS)
        web = settings(listeners=(
            Listener("127.0.0.1", 0, TlsMode.NONE),
            Listener("::1", 0, TlsMode.NONE),
            Listener("127.0.0.1", 0, TlsMode.IMPLICIT),
        ))
        service = WebService(web, store=store, tls_context=server_context(cert, key))
        await service.start()
        try:
            plain = _port(service, TlsMode.NONE)
            secure = _port(service, TlsMode.IMPLICIT)
            status, headers, body = await asyncio.to_thread(
                _fetch, f"http://127.0.0.1:{plain}/healthz"
            )
            assert (status, body) == (200, b"ok\n")
            assert "strict-transport-security" not in headers  # RFC 6797 §7.2
            assert headers["x-content-type-options"] == "nosniff"
            assert "server" not in headers
            v6 = service.addresses[1][1][1]
            status, _h, _b = await asyncio.to_thread(_fetch, f"http://[::1]:{v6}/healthz")
            assert status == 200
            status, headers, body = await asyncio.to_thread(
                _fetch, f"https://127.0.0.1:{secure}/.well-known/mta-sts.txt",
                host=f"mta-sts.{DOMAIN}", context=client_tls,
            )
            assert status == 200
            assert body.startswith(b"version: STSv1\r\nmode: enforce\r\n")
            assert headers["strict-transport-security"] == "max-age=31536000"
            status, _h, body = await asyncio.to_thread(
                _fetch, f"http://127.0.0.1:{plain}/mail/config-v1.1.xml?emailaddress={ALICE}"
            )
            assert status == 200 and b"<clientConfig" in body
            status, _h, _b = await asyncio.to_thread(_fetch, f"http://127.0.0.1:{plain}/x")
            assert status == 404
            answer = await asyncio.to_thread(_huge_header_request, plain)
            assert answer.startswith(b"HTTP/1.1 400 ")
        finally:
            await service.stop(timeout=1)
            await store.close()
        # Stopped: the port is closed.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", plain), timeout=2).close()

    asyncio.run(scenario())


def test_taken_port_raises_listen_error_naming_the_address(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(tmp_path / "data")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            free = Listener("127.0.0.1", 0, TlsMode.NONE)
            web = settings(listeners=(free, Listener("127.0.0.1", port, TlsMode.NONE)))
            service = WebService(web, store=store, tls_context=None)
            with pytest.raises(ListenError, match=f"127.0.0.1:{port}"):
                await service.start()
            assert service.addresses == []
            https = settings(listeners=(Listener("127.0.0.1", 0, TlsMode.IMPLICIT),))
            with pytest.raises(ListenError, match="needs a TLS certificate"):
                await WebService(https, store=store, tls_context=None).start()
        await store.close()

    asyncio.run(scenario())


def test_stop_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    class SlowStore:
        async def list_domains(self) -> list[object]:
            await asyncio.sleep(0.5)
            return []

    async def scenario() -> None:
        service = WebService(settings(), store=SlowStore(), tls_context=None)  # type: ignore[arg-type]
        await service.start()
        port = service.addresses[0][1][1]
        fetch = asyncio.create_task(
            asyncio.to_thread(_fetch, f"http://127.0.0.1:{port}/healthz")
        )
        await asyncio.sleep(0.2)  # the request is waiting for the store
        await service.stop(timeout=5)
        status, _h, body = await fetch
        assert (status, body) == (200, b"ok\n")

    asyncio.run(scenario())


def test_wiring_builds_the_http_service(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("tok-123\n")
    config = make_config(
        tmp_path,
        http={"listeners": ["127.0.0.1:0"], "metrics_token_file": str(token_file)},
        imap={"listeners": ["127.0.0.1:2143", "127.0.0.2:2143"], "tls_listeners": []},
        pop3={"listeners": [], "tls_listeners": ["127.0.0.1:2995"]},
        smtp={"submission_listeners": ["127.0.0.1:0"]},
    )
    web = web_settings(config)
    assert web.hostname == HOSTNAME
    assert web.metrics_token == "tok-123"
    assert web.listeners == (Listener("127.0.0.1", 0, TlsMode.NONE),)
    # Only ports clients can use: deduplicated, port 0 (not known yet) left out.
    assert web.ports == MailPorts(
        imap_starttls=(2143,), pop3_tls=(2995,), submissions=(2465,)
    )
    assert web.mta_sts.mode == "testing" and web.mta_sts.mx == (HOSTNAME,)

    async def scenario() -> None:
        store = await open_store(tmp_path / "data")
        try:
            names = [s.name for s in build_services(config, store)]
            assert names[-1] == "http"
        finally:
            await store.close()

    asyncio.run(scenario())
    (tmp_path / "empty.token").write_text("\n")
    empty = make_config(tmp_path, http={"metrics_token_file": str(tmp_path / "empty.token")})
    with pytest.raises(ConfigError, match="metrics_token_file"):
        web_settings(empty)


def test_no_client_ports_without_a_certificate(tmp_path: Path) -> None:
    from hato.app.config import parse_config

    config = parse_config(
        {"server": {"hostname": HOSTNAME, "data_dir": str(tmp_path), "demo": True},
         "smtp": {"submissions_listeners": []}, "imap": {"tls_listeners": []},
         "pop3": {"tls_listeners": []}},
        base_dir=tmp_path,
    )
    assert web_settings(config).ports == MailPorts()
