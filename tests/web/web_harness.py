"""The HTTP app over a real SQLite store, driven in-process by httpx (no sockets).

Tests are plain functions that ``asyncio.run`` a scenario: the store and the app live on the
scenario's event loop, and ``WebEnv.client`` talks ASGI to the app with any client address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from hato.app.config import Config, parse_config
from hato.core.metrics import Counters
from hato.ops.tls import make_self_signed
from hato.servers.base import Listener, TlsMode
from hato.store.api import MailStore
from hato.store.model import Credentials
from hato.store.sqlite import open_store
from hato.web.app import build_app
from hato.web.autoconfig import MailPorts
from hato.web.metrics import MetricsExporter
from hato.web.mtasts import MtaStsPolicy
from hato.web.settings import WebSettings

DOMAIN = "example.test"
HOSTNAME = "mail.example.test"
ALICE = f"alice@{DOMAIN}"
CREDS = Credentials(password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
PORTS = MailPorts(
    imap_tls=(993,), imap_starttls=(143,), pop3_tls=(995,), pop3_starttls=(110,),
    submissions=(465,), submission=(587,),
)
POLICY = MtaStsPolicy(mode="enforce", max_age=604800, mx=(HOSTNAME,))


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """A demo configuration with a self-signed certificate, plus ``sections``' keys."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if not cert.exists():
        make_self_signed(cert, key, hostnames=[HOSTNAME], loopback=True)
    data: dict[str, Any] = {
        "server": {"hostname": HOSTNAME, "data_dir": str(tmp_path / "data"), "demo": True},
        "tls": {"cert": str(cert), "key": str(key)},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data, base_dir=tmp_path)


def settings(**changes: object) -> WebSettings:
    base = WebSettings(
        hostname=HOSTNAME,
        listeners=(Listener("127.0.0.1", 0, TlsMode.NONE),),
        mta_sts=POLICY,
        ports=PORTS,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@dataclass
class WebEnv:
    store: MailStore
    app: ASGIApp
    counters: Counters
    registry: CollectorRegistry

    def client(
        self, *, ip: str = "127.0.0.1", base: str = f"http://{HOSTNAME}"
    ) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url=base)


@asynccontextmanager
async def web_env(
    tmp_path: Path, web: WebSettings | None = None, *, store: MailStore | None = None
) -> AsyncIterator[WebEnv]:
    """The app with ``example.test`` and alice in a fresh store (or the ``store`` given)."""
    opened = None
    if store is None:
        opened = store = await open_store(tmp_path / "data")
        await store.add_domain(DOMAIN)
        await store.add_account(ALICE, CREDS)
    counters = Counters()
    registry = CollectorRegistry()
    app = build_app(
        web or settings(),
        store=store,
        counters=counters,
        exporter=MetricsExporter(registry, counters),
    )
    try:
        yield WebEnv(store, app, counters, registry)
    finally:
        if opened is not None:
            await opened.close()
