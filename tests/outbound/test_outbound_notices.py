"""Notices Hato generates (RFC 3464 DSNs from the null path): DKIM-signed by their From
domain (MAILER-DAEMON@<hostname>) and verified by dkimpy against the test DNS server; and a
notice about mail forwarded under SRS goes back to the original sender, not to the SRS
address (RFC 7208 Appendix D.2)."""

from __future__ import annotations

import asyncio
import email
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
from outbound_kit import World, open_world, shared_port
from outbound_sink import Sink

from dnsserver import DnsServer
from hato.core.address import Address
from hato.outbound.dkim_sign import DkimKeys
from hato.outbound.dsn import notice_recipient
from hato.outbound.srs import Srs
from hato.store.queue import QueueState

HOST = "127.0.0.2"
HOSTNAME = "out.example.test"  # the From domain of our notices (outbound_kit settings)


def zone() -> dict[str, Any]:
    return {
        "remote.test": {"MX": [(10, "mx.remote.test")]},
        "origin.test": {"MX": [(10, "mx.remote.test")]},
        "mx.remote.test": {"A": [HOST]},
    }


def dns_lookup(server: DnsServer):  # type: ignore[no-untyped-def]
    """dkimpy's ``dnsfunc``, asking the loopback DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def verified_domains(message: bytes, server: DnsServer) -> list[str]:
    """The d= of every DKIM-Signature of ``message`` that dkimpy verifies."""
    checker = dkim.DKIM(message)
    count = len(email.message_from_bytes(message).get_all("DKIM-Signature") or [])
    assert count >= 1, "the notice carries no DKIM-Signature"
    out = []
    for index in range(count):
        try:
            ok = checker.verify(idx=index, dnsfunc=dns_lookup(server))
        except dkim.ValidationError:  # e.g. "body hash mismatch"
            ok = False
        if ok:
            out.append(checker.domain.decode())
    return out


def run(tmp_path: Path, body: Any) -> Any:
    port = shared_port([HOST])

    async def main() -> Any:
        with DnsServer(zone()) as server:
            world = await open_world(tmp_path, server, port=port, mta_sts=False)
            try:
                return await body(world, port)
            finally:
                await world.store.close()

    return asyncio.run(main())


def publish(world: World, keys: DkimKeys, domain: str) -> None:
    for record in keys.generate(domain):
        world.dns.set(record.name, "TXT", [record.value])


def test_bounce_is_dkim_signed_by_its_from_domain(tmp_path: Path) -> None:
    keys = DkimKeys(tmp_path / "dkim")

    async def body(world: World, port: int) -> None:
        publish(world, keys, HOSTNAME)
        sink = Sink(HOST, port, rcpt_replies={"x@remote.test": "550 5.1.1 no such user"})
        await sink.start()
        try:
            await world.queue(["x@remote.test"])
            runner = world.make_runner()
            runner.signer = keys.signer()
            await runner.run_once()
        finally:
            await sink.stop()
        (entry,) = await world.store.list_queue()
        assert entry.state is QueueState.BOUNCED
        (dsn,) = await world.inbox()  # alice is local: the notice lands in her INBOX
        assert f"From: Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>".encode() in dsn
        assert verified_domains(dsn, world.dns) == [HOSTNAME, HOSTNAME]  # RSA and Ed25519
        # a changed notice no longer verifies: the signatures cover what was sent
        assert verified_domains(dsn.replace(b"no such user", b"no such usr"), world.dns) == []

    run(tmp_path, body)


def test_no_key_for_the_from_domain_leaves_the_notice_unsigned(tmp_path: Path) -> None:
    keys = DkimKeys(tmp_path / "dkim")

    async def body(world: World, port: int) -> None:
        publish(world, keys, "example.test")  # a key, but not for out.example.test
        sink = Sink(HOST, port, rcpt_replies={"x@remote.test": "550 5.1.1 no such user"})
        await sink.start()
        try:
            await world.queue(["x@remote.test"])
            runner = world.make_runner()
            runner.signer = keys.signer()
            await runner.run_once()
        finally:
            await sink.stop()
        (dsn,) = await world.inbox()
        assert b"DKIM-Signature" not in dsn.split(b"\r\n\r\n", 1)[0]

    run(tmp_path, body)


def test_bounce_of_forwarded_mail_goes_back_to_the_original_sender(tmp_path: Path) -> None:
    keys = DkimKeys(tmp_path / "dkim")
    srs = Srs([b"secret one"])

    async def body(world: World, port: int) -> None:
        publish(world, keys, HOSTNAME)
        now = world.clock.now()
        forwarded = srs.forward("bob@origin.test", domain="example.test", now=now)
        assert forwarded.startswith("SRS0=") and forwarded.endswith("@example.test")
        sink = Sink(HOST, port, rcpt_replies={"x@remote.test": "550 5.1.1 no such user"})
        await sink.start()
        try:
            await world.queue(["x@remote.test"], sender=forwarded)
            runner = world.make_runner()
            runner.signer = keys.signer()
            runner.srs = srs
            await runner.run_once()  # the forward fails; the notice is queued
            bounced, notice = await world.store.list_queue()
            assert bounced.state is QueueState.BOUNCED
            assert notice.sender == "" and [r.address for r in notice.recipients] == [
                "bob@origin.test"
            ]
            await runner.run_once()  # the notice goes out to origin.test's MX
        finally:
            await sink.stop()
        sent = [t for t in sink.delivered if t.sender == ""]
        assert len(sent) == 1 and [r for r, _ in sent[0].rcpts] == ["bob@origin.test"]
        assert b"To: <bob@origin.test>" in sent[0].data
        assert forwarded.encode() not in sent[0].data.split(b"\r\n\r\n", 1)[0]
        assert verified_domains(sent[0].data, world.dns) == [HOSTNAME, HOSTNAME]

    run(tmp_path, body)


def test_notice_recipient_reverses_only_our_valid_srs_addresses() -> None:
    ours, theirs = Srs([b"ours"]), Srs([b"theirs"])
    now = 1_700_000_000.0
    mine = ours.forward("bob@origin.test", domain="example.test", now=now)
    assert notice_recipient(mine, ours, now=now) == "bob@origin.test"
    # SRS1 (we forwarded another forwarder's SRS0 address): back to that forwarder
    hop = theirs.forward("carol@first.test", domain="forwarder.test", now=now)
    srs1 = ours.forward(hop, domain="example.test", now=now)
    assert notice_recipient(srs1, ours, now=now) == hop
    # someone else's SRS address, a forged hash, a plain address, the null path: unchanged
    assert notice_recipient(hop, ours, now=now) == hop
    local, _, domain = mine.partition("@")
    forged = f"SRS0=AAAA{local[9:]}@{domain}"
    assert Address.parse(forged) and notice_recipient(forged, ours, now=now) == forged
    assert notice_recipient("bob@origin.test", ours, now=now) == "bob@origin.test"
    assert notice_recipient("", ours, now=now) == ""
    assert notice_recipient(mine, None, now=now) == mine
    # expired (older than 21 days, Mail::SRS MaxAge): left for the MX to refuse
    assert notice_recipient(mine, ours, now=now + 30 * 86400) == mine
