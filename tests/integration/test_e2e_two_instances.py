"""End to end: two Hato instances (``hato serve`` subprocesses) for a.test on 127.0.0.2 and
b.test on 127.0.0.3, with DNS (MX, A, SPF, DKIM, DMARC p=reject) from a loopback server.

* a message from alice@a.test (submitted at A) arrives at bob@b.test DKIM-signed by A, with
  B's Authentication-Results saying spf=pass dkim=pass dmarc=pass;
* a forged From: alice@a.test injected at B's MX without A's signature is refused with
  550 5.7.1 (RFC 7489 §10.3);
* forwarding with SRS and a Sieve vacation reply make a round trip: dave@a.test writes to
  fwd@b.test (an alias of carol@a.test); B forwards with an SRS0 reverse-path of b.test (SPF
  passes at A); carol's vacation reply goes from <> to that SRS address, B checks it and
  routes it back to dave.

Both instances listen for MX traffic on one shared ephemeral port (the ``[outbound] port``
they deliver to) rather than 25, so parallel runs never collide. Outgoing connections leave
from 127.0.0.1 (the client does not bind a source address), so the SPF records authorise it.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e_kit import Instance, shared_port

from dnsserver import DnsServer
from hato.core.address import Address
from hato.mailauth import authresults
from hato.store.sqlite import open_store

pytestmark = pytest.mark.slow

# :from carol@a.test: a reply From fwd@b.test would fail b.test's DMARC at B (A cannot
# sign for b.test), as it would anywhere: RFC 5230 §4.4 leaves :from to the user.
VACATION = """require "vacation";
vacation :days 1 :addresses ["fwd@b.test"] :from "carol@a.test" :subject "Away"
  "Carol is away.";
"""


@dataclass
class Pair:
    a: Instance
    b: Instance
    dns: DnsServer


def _zone() -> dict[str, object]:
    zone: dict[str, object] = {}
    for domain, ip in (("a.test", "127.0.0.2"), ("b.test", "127.0.0.3")):
        zone[domain] = {"MX": [(10, f"mx.{domain}")], "TXT": ["v=spf1 ip4:127.0.0.1 -all"]}
        # RFC 7208 §2.3: the HELO identity (used for the null reverse-path, §2.4)
        zone[f"mx.{domain}"] = {"A": [ip], "TXT": ["v=spf1 ip4:127.0.0.1 -all"]}
        zone[f"_dmarc.{domain}"] = {"TXT": ["v=DMARC1; p=reject"]}
    zone["evil.test"] = {"TXT": ["v=spf1 -all"]}
    return zone


async def _vacation(instance: Instance, user: str) -> None:
    store = await open_store(instance.data_dir)
    try:
        account = await store.get_account(Address.parse(user).key)
        assert account is not None
        await store.put_script(account.id, "away", VACATION, activate=True)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("e2e")
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    with DnsServer(_zone()) as dns:
        a = Instance(
            root / "a",
            "a.test",
            "127.0.0.2",
            port,
            dns.port,
            users=("alice@a.test", "carol@a.test", "dave@a.test"),
        )
        b = Instance(
            root / "b",
            "b.test",
            "127.0.0.3",
            port,
            dns.port,
            users=("bob@b.test",),
            aliases={"fwd@b.test": ["carol@a.test"]},
        )
        for instance in (a, b):
            for name, values in asyncio.run(instance.seed()).items():
                dns.set(name, "TXT", values)  # RFC 6376 §3.6.2.1: selector._domainkey
        asyncio.run(_vacation(a, "carol@a.test"))
        try:
            a.start()
            b.start()
            yield Pair(a, b, dns)
        finally:
            logs = [instance.stop() for instance in (a, b)]
            for log in logs:
                assert "Traceback" not in log, log


def _results(message: bytes, authserv_id: str) -> dict[str, str]:
    header = message.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ")
    for line in unfolded.split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "authentication-results":
            parsed = authresults.parse(value)
            if parsed.authserv_id == authserv_id:
                return {r.method: r.result for r in parsed.results if r.method != "spf"} | {
                    "spf": next(r.result for r in parsed.results if r.method == "spf")
                }
    raise AssertionError(f"no Authentication-Results of {authserv_id}")


def test_signed_mail_from_a_passes_at_b(pair: Pair) -> None:
    data = (
        b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: across\r\n"
        b"Message-ID: <across@a.test>\r\n\r\nHello B.\r\n"
    )
    pair.a.submit("alice@a.test", ["bob@b.test"], data)
    (received,) = pair.b.fetch("bob@b.test")
    results = _results(received, "mx.b.test")
    assert results["spf"] == "pass"
    assert results["dkim"] == "pass"
    assert results["dmarc"] == "pass"
    header = received.split(b"\r\n\r\n", 1)[0]
    assert b"DKIM-Signature:" in header and b"d=a.test" in header  # signed by A
    assert b"by mx.b.test (Hato)" in header and b"by mx.a.test (Hato)" in header
    assert received.endswith(b"Hello B.\r\n")


def test_forged_from_is_rejected_at_b(pair: Pair) -> None:
    forged = (
        b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: pay this\r\n"
        b"Message-ID: <forged@evil.test>\r\n\r\nSend money.\r\n"
    )
    with (
        smtplib.SMTP(pair.b.ip, pair.b.mx_port, local_hostname="evil.test", timeout=20) as client,
        pytest.raises(smtplib.SMTPDataError) as failure,
    ):
        client.sendmail("attacker@evil.test", ["bob@b.test"], forged)
    assert failure.value.smtp_code == 550
    assert failure.value.smtp_error.startswith(b"5.7.1 Email rejected per DMARC policy for a.test")


def test_forward_with_srs_and_vacation_reply_round_trip(pair: Pair) -> None:
    data = (
        b"From: Dave <dave@a.test>\r\nTo: fwd@b.test\r\nSubject: question\r\n"
        b"Message-ID: <question@a.test>\r\n\r\nAre you there?\r\n"
    )
    pair.a.submit("dave@a.test", ["fwd@b.test"], data)
    (forwarded,) = pair.a.fetch("carol@a.test")
    return_path = forwarded.split(b"\r\n", 1)[0].decode()
    # B forwarded for b.test with SRS (dave is remote there), and A's SPF check passed
    assert return_path.startswith("Return-Path: <SRS0=") and return_path.endswith("@b.test>")
    assert "=a.test=dave@b.test" in return_path
    results = _results(forwarded, "mx.a.test")
    assert results["spf"] == "pass" and results["dmarc"] == "pass"
    # carol's vacation reply went from <> to the SRS address; B routed it back to dave
    (reply,) = pair.a.fetch("dave@a.test")
    assert reply.startswith(b"Return-Path: <>\r\n")
    assert b"Auto-Submitted: auto-replied" in reply and b"Carol is away." in reply
    # sent from <>, so signed by A for its From domain when Sieve made it (DMARC passes at
    # B, and again at A after B forwarded it: the signature survives forwarding)
    assert b"DKIM-Signature:" in reply and b"d=a.test" in reply
    assert b"In-Reply-To: <question@a.test>" in reply
    assert b"by mx.b.test (Hato)" in reply  # it did pass through B
