"""The queue runner stores each MX session's TLS outcome for TLS-RPT (RFC 8460 §4): policy
type, policy strings, MX, addresses and §4.3 result types, counted per UTC day; sessions for
"TLS-Required: No" entries (our own TLS reports, RFC 8460 §3) are left out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from outbound_kit import World, ca_bundle, certificate, open_world, server_tls, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.outbound.tlsrpt_sessions import DAY, TlsSessionLog
from hato.store.reporting import TlsSessionCount

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.5")
POLICY = "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n"
ZONE: dict[str, Any] = {
    "plain.test": {"MX": [(10, "mx.plain.test")]},
    "mx.plain.test": {"A": ["127.0.0.2"]},
    "opportunistic.test": {"MX": [(10, "mx.opportunistic.test")]},
    "mx.opportunistic.test": {"A": ["127.0.0.3"]},
    "secure.test": {"MX": [(10, "mx.secure.test")]},
    "mx.secure.test": {"A": ["127.0.0.5"]},
    "_mta-sts.secure.test": {"TXT": ["v=STSv1; id=20240101T000000;"]},
    "mta-sts.secure.test": {"A": ["127.0.0.1"]},
}


async def policy_server(tmp_path: Path) -> asyncio.Server:
    """HTTPS on 127.0.0.1 serving the MTA-STS policy of secure.test (RFC 8461 §3.3)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = POLICY.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    ctx = server_tls(tmp_path, "mta-sts.secure.test")
    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


def scenario(tmp_path: Path, body: Callable[[World, int], Awaitable[Any]]) -> Any:
    port = shared_port(HOSTS)
    certificate(tmp_path, "mta-sts.secure.test")
    ca = ca_bundle(tmp_path, ["mta-sts.secure.test", "mx.secure.test"])

    async def main() -> Any:
        server = await policy_server(tmp_path)
        https_port = server.sockets[0].getsockname()[1]
        try:
            with DnsServer(ZONE) as dns:
                world = await open_world(
                    tmp_path, dns, port=port, ca_file=ca, mta_sts_port=https_port
                )
                try:
                    return await body(world, port)
                finally:
                    await world.store.close()
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def test_runner_records_tls_outcomes(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> list[TlsSessionCount]:
        sinks = [
            await Sink("127.0.0.2", port).start(),  # no STARTTLS
            await Sink("127.0.0.3", port, tls=server_tls(tmp_path, "other.name")).start(),
            await Sink("127.0.0.5", port, tls=server_tls(tmp_path, "mx.secure.test")).start(),
        ]
        try:
            runner = world.make_runner()
            runner.tls_sink = TlsSessionLog(world.store, clock=world.clock)
            await world.queue(["a@plain.test"])
            await world.queue(["b@opportunistic.test"])
            await world.queue(["c@secure.test"])
            await world.queue(["d@plain.test"], tls_optional=True)  # TLS-Required: No
            await runner.run_once()
            assert sum(len(s.delivered) for s in sinks) == 4
        finally:
            for sink in sinks:
                await sink.stop()
        day = int(world.clock.now()) // DAY * DAY
        return await world.store.tls_sessions(day=day)

    rows = {r.policy_domain: r for r in scenario(tmp_path, body)}
    assert set(rows) == {"plain.test", "opportunistic.test", "secure.test"}
    plain = rows["plain.test"]
    assert (plain.policy_type, plain.result_type, plain.sessions) == (
        "no-policy-found",
        "starttls-not-supported",  # RFC 8460 §4.3.1; the TLS-Required: No session not counted
        1,
    )
    assert (plain.receiving_mx, plain.receiving_ip, plain.receiving_helo) == (
        "mx.plain.test",
        "127.0.0.2",
        "sink.test",
    )
    assert plain.sending_ip.startswith("127.")
    # opportunistic TLS with any certificate: a success without a policy (RFC 7435)
    assert (rows["opportunistic.test"].policy_type, rows["opportunistic.test"].result_type) == (
        "no-policy-found",
        "success",
    )
    secure = rows["secure.test"]
    assert (secure.policy_type, secure.result_type) == ("sts", "success")
    assert secure.policy_strings == (  # RFC 8460 §4.5
        "version: STSv1",
        "mode: enforce",
        "mx: mx.secure.test",
        "max_age: 86400",
    )
    assert secure.mx_hosts == ("mx.secure.test",)
    assert secure.receiving_ip == ""  # successes are only counted


def test_certificate_failure_is_recorded_with_its_reason(tmp_path: Path) -> None:
    async def body(world: World, port: int) -> list[TlsSessionCount]:
        sink = await Sink("127.0.0.5", port, tls=server_tls(tmp_path, "wrong.test")).start()
        try:
            runner = world.make_runner()
            runner.tls_sink = TlsSessionLog(world.store, clock=world.clock)
            await world.queue(["c@secure.test"])
            await runner.run_once()
            assert not sink.delivered  # MTA-STS enforce: never in the clear
        finally:
            await sink.stop()
        day = int(world.clock.now()) // DAY * DAY
        return await world.store.tls_sessions(day=day)

    (row,) = scenario(tmp_path, body)
    assert row.policy_type == "sts"
    assert row.result_type in ("certificate-host-mismatch", "certificate-not-trusted")
    assert (row.receiving_mx, row.receiving_ip) == ("mx.secure.test", "127.0.0.5")
    assert row.reason_code  # RFC 8460 §4.3.1: SHOULD give a failure-reason-code
