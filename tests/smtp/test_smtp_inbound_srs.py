"""SRS (hato.outbound.srs, Shevek's scheme as in Mail::SRS): forwarded mail from remote
senders leaves with an SRS0 reverse-path of the forwarding domain; a bounce to it comes back
through our MX, is checked (hash, age ≤ 21 days) and routed to the original sender."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from smtp_inbound_kit import SECRET, SmtpFailure, message, run, send, srs, world

from hato.core.address import Address
from hato.outbound.srs import DAY, Srs, day_stamp, is_srs, load_or_create_secrets
from hato.servers.smtp_hooks import SessionHooks

NOW = 1_700_000_000.0


def test_srs0_format_and_round_trip() -> None:
    rewriter = srs()
    forwarded = rewriter.forward("Someone@Elsewhere.example", domain="example.test", now=NOW)
    local, _, domain = forwarded.rpartition("@")
    assert domain == "example.test"
    tag, digest, stamp, host, user = local.split("=")
    assert (tag, stamp, host, user) == ("SRS0", day_stamp(NOW), "elsewhere.example", "Someone")
    # the hash: base64(HMAC-SHA1(secret, lower(timestamp + domain + local)))[:4]
    mac = hmac.new(SECRET, f"{stamp}elsewhere.examplesomeone".lower().encode(), hashlib.sha1)
    assert digest == base64.b64encode(mac.digest()).decode()[:4]
    back = rewriter.reverse(Address.parse(forwarded), now=NOW + 3 * DAY)
    assert back.address == "Someone@elsewhere.example"
    # some MTAs fold local parts: Mail::SRS accepts the case-folded hash too
    assert rewriter.reverse(Address.parse(forwarded.lower()), now=NOW).address is not None
    assert is_srs(local) and not is_srs("someone")


def test_day_stamp_is_two_base32_characters() -> None:
    assert day_stamp(0) == "AA"
    assert day_stamp(33 * DAY) == "BB"
    assert day_stamp(1024 * DAY) == "AA"  # the 10-bit day number wraps


def test_forged_and_expired_addresses_are_refused() -> None:
    rewriter = srs()
    forwarded = Address.parse(rewriter.forward("a@b.example", domain="example.test", now=NOW))
    assert rewriter.reverse(forwarded, now=NOW + 21 * DAY).address == "a@b.example"
    assert rewriter.reverse(forwarded, now=NOW + 22 * DAY).reason == "expired"
    other = Srs([b"another secret"])
    assert other.reverse(forwarded, now=NOW).reason == "bad hash"
    tampered = Address.parse(str(forwarded).replace("=a@", "=victim@"))
    assert rewriter.reverse(tampered, now=NOW).reason == "bad hash"
    # key rotation: a new first secret signs, the old one still verifies
    rotated = Srs([b"new secret", SECRET])
    assert rotated.reverse(forwarded, now=NOW).address == "a@b.example"


def test_srs1_for_an_address_another_forwarder_rewrote() -> None:
    first = Srs([b"first forwarder secret"])
    srs0 = first.forward("user@origin.example", domain="first.example", now=NOW)
    ours = srs()
    srs1 = ours.forward(srs0, domain="example.test", now=NOW)
    assert srs1.startswith("SRS1=") and "=first.example==" in srs1
    back = ours.reverse(Address.parse(srs1), now=NOW)
    assert back.address == srs0  # a bounce goes back through the first forwarder only
    again = Srs([b"third"]).forward(srs1, domain="third.example", now=NOW)
    assert "=first.example==" in again and again.endswith("@third.example")
    assert first.reverse(Address.parse(srs0), now=NOW).address == "user@origin.example"


def test_unrewritable_senders_are_kept() -> None:
    rewriter = srs()
    assert rewriter.forward("", domain="example.test", now=NOW) == ""  # null stays null
    long_local = "x" * 60
    sender = f"{long_local}@elsewhere.example"
    # RFC 5321 §4.5.3.1.1: an SRS local part over 64 octets could not come back to us
    assert rewriter.forward(sender, domain="example.test", now=NOW) == sender


def test_secret_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "srs.key"
    first = load_or_create_secrets(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secrets(path) == first and len(base64.b64decode(first[0])) == 32
    a = Srs.from_data_dir(tmp_path).forward("a@b.example", domain="example.test", now=NOW)
    b = Srs.from_data_dir(tmp_path).forward("a@b.example", domain="example.test", now=NOW)
    assert a == b


def test_alias_forward_and_bounce_round_trip_through_the_mx(tmp_path: Path) -> None:
    aliases = {"fwd@example.test": ["Far@remote.example"]}

    async def main() -> None:
        async with world(tmp_path, hooks=SessionHooks(srs=srs()), aliases=aliases) as w:
            sender = "Someone@elsewhere.example"
            await send(w.mx, sender, ["fwd@example.test"], message(sender))
            (forward,) = await w.queue()
            assert forward.recipients[0].address == "Far@remote.example"
            srs_sender = forward.sender
            assert srs_sender.startswith("SRS0=") and srs_sender.endswith("@example.test")
            # the destination bounces to the SRS address: accepted, sent to the original
            await send(w.mx, "", [srs_sender], b"Subject: bounce\r\n\r\nfailed\r\n")
            bounce = next(e for e in await w.queue() if e.id != forward.id)
            assert [r.address for r in bounce.recipients] == [sender]
            assert bounce.sender == ""
            forged = srs_sender.replace("SRS0=", "SRS0=x", 1)
            with pytest.raises(SmtpFailure) as failure:
                await send(w.mx, "", [forged], b"Subject: x\r\n\r\nx\r\n")
            assert failure.value.code == 550 and failure.value.text.startswith("5.1.1")
            # a local sender's forwarded mail keeps its address (our SPF covers it)
            await send(
                w.submission,
                "alice@example.test",
                ["fwd@example.test"],
                message("alice@example.test"),
                login="alice@example.test",
            )
            assert "alice@example.test" in {e.sender for e in await w.queue()}

    run(main())
