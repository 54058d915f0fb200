"""DKIM signing of outgoing mail: two signatures (RSA-2048 and Ed25519) verified by dkimpy
and by Debian's OpenDKIM (test mode with the published records), key rotation."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest
from outbound_kit import World, open_world, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.outbound.dkim_sign import DkimKeys, KeyRecord

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"


def dnsfunc(records: list[KeyRecord]):  # type: ignore[no-untyped-def]
    table = {r.name.encode() + b".": r.value.encode() for r in records}
    table.update({r.name.encode(): r.value.encode() for r in records})

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return table.get(name)

    return lookup


def opendkim_verify(tmp_path: Path, records: list[KeyRecord], message: bytes) -> str:
    keys = tmp_path / "testkeys.txt"
    keys.write_text("".join(f"{r.name} {r.value}\n" for r in records))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {keys}\nSyslog no\nUserID root\n")
    msg = tmp_path / "message.eml"
    msg.write_bytes(message)
    result = subprocess.run(
        [OPENDKIM, "-x", str(conf), "-t", str(msg), "-vv"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout + result.stderr


def test_outgoing_mail_carries_two_verifiable_signatures(tmp_path: Path) -> None:
    keys = DkimKeys(tmp_path / "dkim")
    records = keys.generate("example.test")
    assert {r.algorithm for r in records} == {"rsa", "ed25519"}
    port = shared_port(["127.0.0.2"])

    async def body(world: World) -> bytes:
        sink = await Sink("127.0.0.2", port).start()
        try:
            await world.queue(["x@remote.test"])
            runner = world.make_runner()
            runner.signer = keys.signer()
            await runner.run_once()
            return sink.delivered[0].data
        finally:
            await sink.stop()

    async def main() -> bytes:
        zone = {
            "remote.test": {"MX": [(10, "mx.remote.test")]},
            "mx.remote.test": {"A": ["127.0.0.2"]},
        }
        with DnsServer(zone) as dns:
            world = await open_world(tmp_path, dns, port=port, mta_sts=False)
            try:
                return await body(world)
            finally:
                await world.store.close()

    sent = asyncio.run(main())
    assert sent.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert b"DKIM-Signature: v=1; a=ed25519-sha256;" in sent
    verifier = dkim.DKIM(sent)
    lookup = dnsfunc(records)
    assert verifier.verify(idx=0, dnsfunc=lookup)  # RFC 8301: RSA-SHA256, 2048 bits
    assert verifier.verify(idx=1, dnsfunc=lookup)  # RFC 8463: Ed25519-SHA256
    if not Path(OPENDKIM).exists():
        pytest.fail("opendkim is not installed (scripts/test.sh installs it)")
    out = opendkim_verify(tmp_path, records, sent)
    assert "verification (s=" in out and "succeeded" in out, out
    # a modified body fails both
    tampered = sent.replace(b"Body line one.", b"Body line 0ne.")
    try:
        tampered_ok = dkim.DKIM(tampered).verify(idx=0, dnsfunc=lookup)
    except dkim.DKIMException:
        tampered_ok = False
    assert not tampered_ok
    assert "succeeded" not in opendkim_verify(tmp_path, records, tampered)


def test_rotation_adds_selectors_and_keeps_old_keys(tmp_path: Path) -> None:
    keys = DkimKeys(tmp_path / "dkim")
    first = keys.generate("example.test", now=1_700_000_000)
    second = keys.generate("example.test", now=1_700_000_000)
    assert {r.selector for r in first} == {"hato20231114r", "hato20231114e"}
    assert {r.selector for r in second} == {"hato20231114x1r", "hato20231114x1e"}
    assert keys.active("example.test") == {"rsa": "hato20231114x1r", "ed25519": "hato20231114x1e"}
    assert len(keys.records("example.test", all_selectors=True)) == 4
    signed = keys.sign(b"From: a@example.test\r\n\r\nx\r\n", "example.test")
    assert b"s=hato20231114x1r" in signed and b"s=hato20231114x1e" in signed
    assert keys.sign(b"From: a@other.test\r\n\r\nx\r\n", "other.test") == b""
    pem = tmp_path / "dkim" / "example.test" / "hato20231114r.rsa.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
