"""TLS policy in delivery: MTA-STS enforce (wrong certificate, no STARTTLS, MX not in policy:
deferred and never sent in the clear; valid certificate: delivered), DANE-EE TLSA matching,
REQUIRETLS, opportunistic fallback, and a smarthost with STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from outbound_kit import World, ca_bundle, certificate, open_world, server_tls, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.outbound.routing import Relay
from hato.store.queue import QueueState

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.5")
POLICY = "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n"


def zone() -> dict[str, Any]:
    return {
        "secure.test": {"MX": [(10, "mx.secure.test")]},
        "mx.secure.test": {"A": ["127.0.0.5"]},
        "_mta-sts.secure.test": {"TXT": ["v=STSv1; id=20240101T000000;"]},
        "mta-sts.secure.test": {"A": ["127.0.0.1"]},
        "rogue.test": {"MX": [(10, "mx.rogue.test")]},
        "mx.rogue.test": {"A": ["127.0.0.5"]},
        "_mta-sts.rogue.test": {"TXT": ["v=STSv1; id=1;"]},
        "mta-sts.rogue.test": {"A": ["127.0.0.1"]},
        "dane.test": {"MX": [(10, "mx.dane.test")]},
        "mx.dane.test": {"A": ["127.0.0.3"]},
        "plain.test": {"MX": [(10, "mx.plain.test")]},
        "mx.plain.test": {"A": ["127.0.0.2"]},
        "relay.test": {"A": ["127.0.0.2"]},
    }


async def policy_server(tmp_path: Path, policies: dict[str, str]) -> asyncio.Server:
    """HTTPS on 127.0.0.1 serving /.well-known/mta-sts.txt by Host header."""
    ctx = server_tls(tmp_path, "mta-sts.secure.test", "mta-sts.rogue.test")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        host = ""
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("host:"):
                host = line.split(":", 1)[1].strip()
        body = policies.get(host, "").encode()
        status = "200 OK" if body else "404 Not Found"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


def scenario(
    tmp_path: Path,
    body: Callable[[World, int], Awaitable[Any]],
    *,
    authenticated: bool = False,
    extra_zone: dict[str, Any] | None = None,
    **settings: Any,
) -> Any:
    port = shared_port(HOSTS)
    certificate(tmp_path, "mta-sts.secure.test", "mta-sts.rogue.test")
    ca = ca_bundle(tmp_path, ["mta-sts.secure.test", "mx.secure.test", "relay.test"])

    async def main() -> Any:
        server = await policy_server(
            tmp_path,
            {"mta-sts.secure.test": POLICY, "mta-sts.rogue.test": POLICY},
        )
        https_port = server.sockets[0].getsockname()[1]
        try:
            with DnsServer({**zone(), **(extra_zone or {})}, authenticated=authenticated) as dns:
                world = await open_world(
                    tmp_path, dns, port=port, ca_file=ca, mta_sts_port=https_port, **settings
                )
                try:
                    return await body(world, port)
                finally:
                    await world.store.close()
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def test_mta_sts_enforce_valid_certificate_delivers(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.5", port, tls=server_tls(tmp_path, "mx.secure.test")).start()
        try:
            await world.queue(["x@secure.test"])
            runner = world.make_runner()
            await runner.run_once()
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.DELIVERED
            assert sink.delivered[0].tls
            assert runner.tls_results[("secure.test", "success")] == 1
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_mta_sts_enforce_wrong_certificate_is_deferred_never_plaintext(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.5", port, tls=server_tls(tmp_path, "wrong.test")).start()
        try:
            await world.queue(["x@secure.test"])
            runner = world.make_runner()
            await runner.run_once()
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.DEFERRED
            assert entry.recipients[0].reply is not None and "4.7.10" in entry.recipients[0].reply
            assert not sink.transactions  # no MAIL command: not even in the clear
            assert all("MAIL" not in " ".join(s.commands) for s in sink.sessions)
            failures = {k: v for k, v in runner.tls_results.items() if k[1] != "success"}
            assert failures and all(k[0] == "secure.test" for k in failures)
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_mta_sts_enforce_without_starttls_is_deferred(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.5", port).start()  # offers no STARTTLS
        try:
            await world.queue(["x@secure.test"])
            await world.make_runner().run_once()
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.DEFERRED and not sink.transactions
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_mta_sts_mx_not_in_policy_is_not_used(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        # rogue.test's MX is mx.rogue.test, but its policy only lists mx.secure.test
        sink = await Sink("127.0.0.5", port, tls=server_tls(tmp_path, "mx.secure.test")).start()
        try:
            await world.queue(["x@rogue.test"])
            await world.make_runner().run_once()
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.DEFERRED and not sink.sessions
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def tlsa_for(tmp_path: Path, name: str) -> bytes:
    cert = x509.load_pem_x509_certificate(certificate(tmp_path, name)[0].read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def test_dane_ee_match_delivers_and_mismatch_defers(tmp_path: Path) -> None:
    good = tlsa_for(tmp_path, "mx.dane.test")

    async def body(world: World, port: int) -> None:
        world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [(3, 1, 1, good)])
        # a certificate no CA vouches for: only the TLSA record makes it acceptable
        sink = await Sink("127.0.0.3", port, tls=server_tls(tmp_path, "mx.dane.test")).start()
        try:
            await world.queue(["x@dane.test"])
            await world.make_runner().run_once()
            assert sink.delivered and sink.delivered[0].tls
            world.dns.set(f"_{port}._tcp.mx.dane.test", "TLSA", [(3, 1, 1, b"\x00" * 32)])
            (eid,) = await world.queue(["y@dane.test"])
            await world.make_runner().run_once()
            entry = await world.store.get_queue_entry(eid)
            assert entry is not None and entry.state is QueueState.DEFERRED
            assert len(sink.delivered) == 1
        finally:
            await sink.stop()

    scenario(tmp_path, body, authenticated=True, mta_sts=False)


def test_opportunistic_tls_falls_back_to_plaintext(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink("127.0.0.2", port).start()
        try:
            await world.queue(["x@plain.test"])
            await world.make_runner().run_once()
            assert sink.delivered and not sink.delivered[0].tls
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_requiretls_needs_validated_mx_and_bounces_otherwise(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        plain = await Sink("127.0.0.2", port, tls=server_tls(tmp_path, "mx.plain.test")).start()
        caps = ("PIPELINING", "8BITMIME", "REQUIRETLS")
        secure = await Sink(
            "127.0.0.5", port, tls=server_tls(tmp_path, "mx.secure.test"), capabilities=caps
        ).start()
        try:
            await world.queue(["x@plain.test"], requiretls=True)
            await world.queue(["x@secure.test"], requiretls=True)
            await world.make_runner().run_once()
            first, second = await world.store.list_queue()
            # RFC 8689 §4.2.1: no DNSSEC and no MTA-STS for plain.test: never transmitted
            assert first.state is QueueState.BOUNCED and not plain.sessions
            assert second.state is QueueState.DELIVERED
            assert "REQUIRETLS" in secure.delivered[0].mail_params
            (dsn,) = await world.inbox()
            assert b"5.7.10" in dsn
        finally:
            await plain.stop()
            await secure.stop()

    scenario(tmp_path, body)


def test_smarthost_with_starttls_and_auth(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> None:
        sink = await Sink(
            "127.0.0.2", port, tls=server_tls(tmp_path, "relay.test"), auth=("hato", "s3cret!!")
        ).start()
        try:
            smarthost = Relay("relay.test", port, auth=("hato", "s3cret!!"))
            await world.queue(["x@anywhere.test"])
            await world.make_runner(smarthost=smarthost).run_once()
            assert sink.authenticated == ["hato"]
            assert sink.delivered and sink.delivered[0].tls
        finally:
            await sink.stop()

    scenario(tmp_path, body)


def test_smarthost_certificate_is_verified_before_auth(tmp_path: Path) -> None:
    """RFC 8314 §5.1 / RFC 4954 §4: the relay's credentials go only over TLS whose certificate
    names the relay; an untrusted one defers the message and no AUTH is sent."""

    async def body(world: World, port: int) -> None:
        # A certificate for another name than relay.test (and not in the CA bundle for it).
        sink = await Sink(
            "127.0.0.2", port, tls=server_tls(tmp_path, "impostor.test"), auth=("hato", "s3cret!!")
        ).start()
        try:
            smarthost = Relay("relay.test", port, auth=("hato", "s3cret!!"))
            await world.queue(["x@anywhere.test"])
            await world.make_runner(smarthost=smarthost).run_once()
            assert sink.authenticated == [] and sink.delivered == []
            (entry,) = await world.store.list_queue()
            assert entry.state is QueueState.DEFERRED
        finally:
            await sink.stop()

    scenario(tmp_path, body)
